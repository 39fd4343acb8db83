//! The gateway's generation engine: continuous batching over the cluster. Requests are admitted
//! by the scheduler (bounded: a full queue is refused at once with 503 and a retry-after); one
//! thread runs model steps back to back, each feeding the scheduled chunks of every running
//! sequence to `Model::forward_batch` — attention here, each MoE layer's routed experts on the
//! expert nodes in one message per node — then samples, streams the tokens to their requests and
//! tells the scheduler what finished. A request whose client went away (its event receiver
//! dropped) is cancelled at the next token.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use moe_model::kv_cache::KvCache;
use moe_model::{Logits, Model, SequenceStep, Tokenizer};
use tokio::sync::mpsc;

use crate::chat_template::{ChatTemplate, Message};
use crate::dispatch::{Dispatcher, Precision, RemoteExperts};
use crate::engine::{Engine, Event, Job};
use crate::metrics::{Gauges, Metrics};
use crate::openai::{ApiError, ErrorKind, Precision as OpenAiPrecision, Usage};
use crate::scheduler::{AdmitError, Scheduler, SchedulerConfig, SeqId, Step};
use crate::sequence::Decoding;

/// What the engine thread and the API handlers share.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    scheduler: Scheduler,
    /// Admitted jobs the engine thread has not picked up yet.
    arrived: Vec<(SeqId, Job, mpsc::Sender<Event>)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running request on the engine thread.
struct Active {
    /// Prompt, then generated tokens: what the model is fed, in order.
    tokens: Vec<u32>,
    prompt_tokens: usize,
    decoding: Decoding,
    cache: KvCache,
    events: mpsc::Sender<Event>,
    /// The request wants the single-process model's result bit for bit.
    exact: bool,
    arrived: Instant,
    /// When its last token was sent, `None` before the first.
    last_token: Option<Instant>,
}

/// The engine's settings.
pub struct GeneratorConfig {
    /// The model's name in the API.
    pub name: String,
    pub max_tokens_limit: usize,
    pub scheduler: SchedulerConfig,
}

/// The engine: the API side ([`Engine`]) of one generation thread.
pub struct Generator {
    metrics: Arc<Metrics>,
    name: String,
    context: usize,
    max_tokens_limit: usize,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    dispatcher: Arc<Dispatcher>,
    shared: Arc<Shared>,
}

impl Generator {
    /// Starts the generation thread for `model` (loaded without its routed experts) with its
    /// experts on the nodes `dispatcher` reaches; `runtime` is where the expert calls run.
    pub fn start(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        template: Option<ChatTemplate>,
        dispatcher: Arc<Dispatcher>,
        runtime: tokio::runtime::Handle,
        config: GeneratorConfig,
    ) -> std::io::Result<Generator> {
        let scheduler = Scheduler::new(config.scheduler)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                scheduler,
                arrived: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let context = model.max_context();
        let metrics = Arc::new(Metrics::default());
        let thread = Thread {
            metrics: Arc::clone(&metrics),
            model,
            tokenizer: Arc::clone(&tokenizer),
            dispatcher: Arc::clone(&dispatcher),
            runtime,
            shared: Arc::clone(&shared),
            active: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || thread.run())?;
        Ok(Generator {
            metrics,
            name: config.name,
            context,
            max_tokens_limit: config.max_tokens_limit,
            tokenizer,
            template,
            dispatcher,
            shared,
        })
    }
}

impl Engine for Generator {
    fn model(&self) -> &str {
        &self.name
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn max_tokens_limit(&self) -> usize {
        self.max_tokens_limit
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| ApiError::malformed_body(format!("Cannot tokenize the input: {e}")))
    }

    fn chat_prompt(&self, messages: &[Message]) -> Result<String, ApiError> {
        let template = self.template.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "messages",
                format!(
                    "The model `{}` has no chat template; use /v1/completions.",
                    self.name
                ),
            )
        })?;
        template
            .render(messages, true)
            .map_err(|e| ApiError::bad_request("messages", e.to_string()))
    }

    fn submit(&self, job: Job) -> Result<mpsc::Receiver<Event>, ApiError> {
        let vocab = self.tokenizer.vocab_size();
        if let Some(bad) = job.prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::bad_request(
                "prompt",
                format!("Token id {bad} is out of range for a vocabulary of {vocab}."),
            ));
        }
        let (events, receiver) = mpsc::channel(job.max_tokens + 4);
        let mut state = self.shared.lock();
        let id = match state.scheduler.try_admit(job.prompt.len(), job.max_tokens) {
            Ok(id) => id,
            Err(AdmitError::QueueFull { retry_after_secs }) => {
                return Err(ApiError::overloaded(retry_after_secs));
            }
            Err(e) => return Err(ApiError::bad_request("prompt", e.to_string())),
        };
        state.arrived.push((id, job, events));
        drop(state);
        self.shared.wake.notify_one();
        Ok(receiver)
    }

    fn ready(&self) -> bool {
        self.dispatcher.ready()
    }

    fn metrics(&self) -> String {
        let stats = self.shared.lock().scheduler.stats();
        let traffic = self.dispatcher.traffic();
        let mut text = self.metrics.render(Gauges {
            running: stats.running,
            waiting: stats.waiting,
            kv_usage: stats.kv_usage(),
            preemptions: stats.preemptions,
            expert_retries: self.dispatcher.retries(),
            expert_bytes_sent: traffic.sent_bytes,
            expert_bytes_received: traffic.received_bytes,
            expert_seconds: traffic.seconds,
        });
        self.dispatcher.links().render(&mut text);
        self.dispatcher.accuracy().render(&mut text);
        crate::metrics::header(
            &mut text,
            "moe:expert_prefetch_hints_total",
            "Prefetch hints sent to expert nodes.",
            "counter",
        );
        text.push_str(&format!(
            "moe:expert_prefetch_hints_total {}\n",
            self.dispatcher.hints()
        ));
        text
    }
}

/// The generation thread's own state.
struct Thread {
    metrics: Arc<Metrics>,
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    dispatcher: Arc<Dispatcher>,
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    active: HashMap<SeqId, Active>,
}

impl Thread {
    fn run(mut self) {
        loop {
            let (step, arrived) = {
                let mut state = self.shared.lock();
                loop {
                    let stats = state.scheduler.stats();
                    if stats.running + stats.waiting > 0 || !state.arrived.is_empty() {
                        break;
                    }
                    state = self
                        .shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                let arrived = std::mem::take(&mut state.arrived);
                (state.scheduler.schedule(), arrived)
            };
            for (id, job, events) in arrived {
                self.arrive(id, job, events);
            }
            for id in &step.preempted {
                if let Some(a) = self.active.get_mut(id) {
                    a.cache = self.model.new_cache();
                }
            }
            if !step.is_empty() {
                self.step(&step);
            }
        }
    }

    fn arrive(&mut self, id: SeqId, job: Job, events: mpsc::Sender<Event>) {
        let eos = self.model.config().eos_token_ids.clone();
        match Decoding::new(&job.params, job.max_tokens, job.prompt.len(), eos) {
            Ok(decoding) => {
                self.metrics.prompt(job.prompt.len());
                let active = Active {
                    exact: job.params.precision == OpenAiPrecision::Exact,
                    arrived: Instant::now(),
                    last_token: None,
                    prompt_tokens: job.prompt.len(),
                    tokens: job.prompt,
                    decoding,
                    cache: self.model.new_cache(),
                    events,
                };
                self.active.insert(id, active);
            }
            Err(e) => {
                let _ = events.try_send(Event::Failed(ApiError::malformed_body(e.to_string())));
                self.shared.lock().scheduler.cancel(id);
            }
        }
    }

    /// Runs one model step over the scheduled chunks, streams the sampled tokens and tells the
    /// scheduler what finished.
    fn step(&mut self, step: &Step) {
        let chunks: Vec<_> = step
            .chunks
            .iter()
            .filter(|c| self.active.contains_key(&c.id))
            .copied()
            .collect();
        // One exact request makes the whole step exact: its sums must be taken in order.
        let exact = chunks.iter().any(|c| self.active[&c.id].exact);
        let precision = if exact {
            Precision::Exact
        } else {
            Precision::Auto
        };
        let result = {
            let mut by_id: HashMap<SeqId, &mut Active> =
                self.active.iter_mut().map(|(id, a)| (*id, a)).collect();
            let mut seqs: Vec<SequenceStep> = chunks
                .iter()
                .map(|c| {
                    let a = by_id.remove(&c.id).expect("one chunk per sequence");
                    SequenceStep {
                        tokens: &a.tokens[c.start..c.start + c.tokens],
                        cache: &mut a.cache,
                        want: Logits::Last,
                    }
                })
                .collect();
            let mut remote = RemoteExperts::new(
                &self.dispatcher,
                self.runtime.clone(),
                precision,
                &self.model,
            );
            let started = Instant::now();
            let result = self.model.forward_batch(&mut seqs, Some(&mut remote));
            self.metrics.step(started.elapsed().as_secs_f64());
            result
        };
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                tracing::error!(error = %e, "a model step failed; its requests fail");
                for c in &chunks {
                    let error = ApiError {
                        kind: ErrorKind::ServiceUnavailable,
                        message: format!("The expert nodes could not run this step: {e}"),
                        param: None,
                        code: None,
                        retry_after_secs: Some(1),
                    };
                    self.fail(c.id, error);
                }
                return;
            }
        };
        let mut stopped = Vec::new();
        let mut gone = Vec::new();
        for (c, logits) in chunks.iter().zip(logits) {
            if !c.samples {
                continue;
            }
            let a = self.active.get_mut(&c.id).expect("filtered above");
            let before = a.decoding.generated().len();
            let events = match a.decoding.advance(&logits, &self.tokenizer) {
                Ok(events) => events,
                Err(e) => vec![Event::Failed(ApiError::internal(e.to_string()))],
            };
            if a.decoding.generated().len() > before
                && let Some(&id) = a.decoding.generated().last()
            {
                a.tokens.push(id);
                let now = Instant::now();
                let since = a.last_token.unwrap_or(a.arrived);
                self.metrics
                    .token(a.last_token.is_none(), (now - since).as_secs_f64());
                a.last_token = Some(now);
            }
            for event in events {
                let took = a.arrived.elapsed().as_secs_f64();
                match &event {
                    Event::Token(_) => {}
                    Event::Finished { reason, .. } => self.metrics.finished(Some(*reason), took),
                    Event::Failed(_) => self.metrics.finished(None, took),
                }
                let done = !matches!(event, Event::Token(_));
                if a.events.try_send(event).is_err() {
                    gone.push(c.id);
                    break;
                }
                if done {
                    stopped.push(c.id);
                }
            }
        }
        let finished = {
            let mut state = self.shared.lock();
            for id in &gone {
                state.scheduler.cancel(*id);
            }
            state.scheduler.complete(step, &stopped)
        };
        for id in gone {
            self.active.remove(&id);
        }
        for f in finished {
            if let Some(a) = self.active.remove(&f.id)
                && !stopped.contains(&f.id)
            {
                self.metrics
                    .finished(Some(f.reason), a.arrived.elapsed().as_secs_f64());
                let usage = Usage::new(a.prompt_tokens, a.decoding.generated().len());
                let _ = a.events.try_send(Event::Finished {
                    reason: f.reason,
                    usage,
                });
            }
        }
    }

    fn fail(&mut self, id: SeqId, error: ApiError) {
        if let Some(a) = self.active.remove(&id) {
            self.metrics
                .finished(None, a.arrived.elapsed().as_secs_f64());
            let _ = a.events.try_send(Event::Failed(error));
        }
        self.shared.lock().scheduler.cancel(id);
    }
}
