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

use moe_model::kv_cache::{BlockPool, KvCache};
use moe_model::{Logits, Model, SequenceStep, Tokenizer};
use tokio::sync::mpsc;

use crate::chat_template::{ChatTemplate, Message};
use crate::dispatch::{Dispatcher, Precision, RemoteExperts};
use crate::engine::{Engine, Event, Job, Token};
use crate::metrics::{Gauges, Metrics, Timeline, with_label};
use crate::openai::{ApiError, FinishReason, Precision as OpenAiPrecision, Usage};
use crate::precalculation::Tally;
use crate::process::ProcessStats;
use crate::readiness::Readiness;
use crate::scheduler::{AdmitError, Chunk, Scheduler, SchedulerConfig, SeqId, Step};
use crate::sequence::{Decoding, token_logprobs};

/// What the engine thread and the API handlers share.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    scheduler: Scheduler,
    /// Admitted jobs the engine thread has not picked up yet.
    arrived: Vec<Arrival>,
}

/// An admitted job on its way to the engine thread, with the span of the request that
/// submitted it (its lines at the end are logged in it).
struct Arrival {
    id: SeqId,
    job: Job,
    events: mpsc::Sender<Event>,
    span: tracing::Span,
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
    /// When it first ran in a step, and when its first token was sent.
    scheduled: Option<Instant>,
    first_token: Option<Instant>,
    /// When its last token was sent, `None` before the first.
    last_token: Option<Instant>,
    /// The request's span, where its end is logged.
    span: tracing::Span,
    /// Its layers answered from a pre-calculation so far.
    precalculated: Tally,
    /// With `echo` and `logprobs`: the prompt's tokens scored so far (the first unscored), and
    /// the alternatives to report per position; taken when the prefill ends.
    prompt_logprobs: Option<(Vec<Token>, usize)>,
}

impl Active {
    /// Records its end (`reason` none: it failed): the metrics, and in its request's span its
    /// layers answered from a pre-calculation, when there were any.
    fn ended(&self, metrics: &Metrics, reason: Option<FinishReason>) {
        metrics.finished(reason, &self.timeline(), self.token_counts());
        let t = self.precalculated;
        if t.layers > 0 {
            self.span.in_scope(|| {
                tracing::info!(
                    round_trips_saved = t.layers,
                    routed_pairs = t.routed,
                    hits = t.hits,
                    "pre-calculated layers of the request"
                );
            });
        }
    }

    /// Its phases so far, ending now.
    fn timeline(&self) -> Timeline {
        Timeline {
            arrived: self.arrived,
            scheduled: self.scheduled,
            first_token: self.first_token,
            ended: Instant::now(),
        }
    }

    /// Its prompt and completion tokens, as its usage counts them.
    fn token_counts(&self) -> [usize; 2] {
        [self.prompt_tokens, self.decoding.completion_tokens()]
    }

    /// Scores the prompt tokens that `logits` (`[rows, vocab]`, one row per position from
    /// `start` on) predict, skipping positions scored before (a preempted sequence's prefill
    /// runs again).
    fn score_prompt(
        &mut self,
        start: usize,
        rows: usize,
        logits: &[f32],
        tokenizer: &Tokenizer,
    ) -> Result<(), moe_model::ModelError> {
        let Some((scored, k)) = self.prompt_logprobs.as_mut() else {
            return Ok(());
        };
        let vocab = logits.len() / rows.max(1);
        for (j, row) in logits.chunks_exact(vocab).enumerate() {
            let next = start + j + 1;
            if next != scored.len() || next >= self.prompt_tokens {
                continue;
            }
            let id = self.tokens[next];
            let (logprob, top) = token_logprobs(row, id, *k, tokenizer)?;
            let text = tokenizer.decode(&[id])?;
            scored.push(Token {
                id,
                text,
                logprob: Some(logprob),
                top,
            });
        }
        Ok(())
    }
}

/// The engine's settings.
pub struct GeneratorConfig {
    /// The model's name in the API.
    pub name: String,
    pub max_tokens_limit: usize,
    pub scheduler: SchedulerConfig,
    /// Groups a step's sequences are split into, run at once (1 = the whole step together).
    pub micro_batches: usize,
}

/// The engine: the API side ([`Engine`]) of one generation thread.
pub struct Generator {
    metrics: Arc<Metrics>,
    kv: Arc<BlockPool>,
    name: String,
    context: usize,
    max_tokens_limit: usize,
    vocab_size: usize,
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
        let positions = config.scheduler.block_tokens * config.scheduler.total_blocks;
        let kv = model.new_block_pool(positions);
        let vocab_size = model.config().vocab_size;
        let (per_token, expanded) = model.config().kv_bytes_per_token();
        tracing::info!(
            positions,
            kv_bytes_per_token = per_token,
            expanded_bytes_per_token = expanded,
            sliding_window_bytes_per_sequence = model.config().kv_window_bytes(),
            kv_budget_bytes = kv.max_bytes(),
            "KV cache"
        );
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
            micro_batches: config.micro_batches.max(1),
            kv: Arc::clone(&kv),
        };
        std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || thread.run())?;
        Ok(Generator {
            metrics,
            kv,
            name: config.name,
            context,
            max_tokens_limit: config.max_tokens_limit,
            vocab_size,
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

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError> {
        let ids = match add_special_tokens {
            true => self.tokenizer.encode(text),
            false => self.tokenizer.encode_plain(text),
        };
        ids.map_err(|e| ApiError::malformed_body(format!("Cannot tokenize the input: {e}")))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, ApiError> {
        self.tokenizer
            .decode(ids)
            .map_err(|e| ApiError::internal(format!("Cannot detokenize: {e}")))
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
        template.render(messages, true).map_err(ApiError::from)
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
        // A prompt only scored (max_tokens 0) still takes the step that samples, which ends it.
        let sampled = job.max_tokens.max(1);
        let id = match state.scheduler.try_admit(job.prompt.len(), sampled) {
            Ok(id) => id,
            Err(AdmitError::QueueFull { retry_after_secs }) => {
                return Err(ApiError::overloaded(retry_after_secs));
            }
            Err(e) => return Err(ApiError::bad_request("prompt", e.to_string())),
        };
        let span = tracing::Span::current();
        state.arrived.push(Arrival {
            id,
            job,
            events,
            span,
        });
        drop(state);
        self.shared.wake.notify_one();
        Ok(receiver)
    }

    fn readiness(&self) -> Readiness {
        self.dispatcher.readiness()
    }

    fn metrics(&self) -> String {
        let stats = self.shared.lock().scheduler.stats();
        let traffic = self.dispatcher.traffic();
        let mut text = self.metrics.render(Gauges {
            running: stats.running,
            waiting: stats.waiting,
            kv_usage: stats.kv_usage(),
            kv_blocks_in_use: self.kv.blocks_in_use(),
            preemptions: stats.preemptions,
            expert_retries: self.dispatcher.retries(),
            expert_bytes_sent: traffic.sent_bytes,
            expert_bytes_received: traffic.received_bytes,
            expert_seconds: traffic.seconds,
        });
        self.dispatcher.render_metrics(&mut text);
        if let Some(process) = ProcessStats::read() {
            process.render(&mut text);
        }
        with_label(&text, "model_name", &self.name)
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
    micro_batches: usize,
    /// The KV memory every sequence's cache takes its blocks from: the scheduler's budget.
    kv: Arc<BlockPool>,
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
            for arrival in arrived {
                self.arrive(arrival);
            }
            for id in &step.preempted {
                if let Some(a) = self.active.get_mut(id) {
                    a.cache = self.model.new_cache_in(&self.kv);
                }
            }
            if !step.is_empty() {
                self.step(&step);
            }
        }
    }

    fn arrive(
        &mut self,
        Arrival {
            id,
            job,
            events,
            span,
        }: Arrival,
    ) {
        let eos = self.model.config().eos_token_ids.clone();
        match Decoding::new(&job.params, job.max_tokens, &job.prompt, eos) {
            Ok(decoding) => {
                self.metrics.prompt(job.prompt.len());
                // The first prompt token has no log-probability: it is there, unscored, from
                // the start.
                let prompt_logprobs = match (job.params.echo, job.params.logprobs) {
                    (true, Some(k)) => job.prompt.first().map(|&id| {
                        let text = self.tokenizer.decode(&[id]).unwrap_or_default();
                        let first = Token {
                            id,
                            text,
                            logprob: None,
                            top: Vec::new(),
                        };
                        (vec![first], k)
                    }),
                    _ => None,
                };
                let active = Active {
                    prompt_logprobs,
                    exact: job.params.precision == OpenAiPrecision::Exact,
                    arrived: Instant::now(),
                    scheduled: None,
                    first_token: None,
                    last_token: None,
                    span,
                    precalculated: Tally::default(),
                    prompt_tokens: job.prompt.len(),
                    tokens: job.prompt,
                    decoding,
                    cache: self.model.new_cache_in(&self.kv),
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
        let began = Instant::now();
        let chunks: Vec<Chunk> = step
            .chunks
            .iter()
            .filter(|c| self.active.contains_key(&c.id))
            .copied()
            .collect();
        let results = self.forward(&chunks);
        let mut ends = Ends::default();
        for (c, (result, precalculated)) in chunks.iter().zip(results) {
            match result {
                Ok(logits) => self.take(c, &logits, (began, precalculated), &mut ends),
                Err(e) => ends.failed.push((c.id, e)),
            }
        }
        self.settle(step, ends);
    }

    /// The model step over `chunks`: per chunk its logits (or its group's error) and its
    /// layers answered from a pre-calculation.
    fn forward(&mut self, chunks: &[Chunk]) -> Vec<Forwarded> {
        // One exact request makes the whole step exact: its sums must be taken in order.
        let exact = chunks.iter().any(|c| self.active[&c.id].exact);
        let precision = if exact {
            Precision::Exact
        } else {
            Precision::Auto
        };
        let mut by_id: HashMap<SeqId, &mut Active> =
            self.active.iter_mut().map(|(id, a)| (*id, a)).collect();
        let seqs: Vec<SequenceStep> = chunks
            .iter()
            .map(|c| {
                let a = by_id.remove(&c.id).expect("one chunk per sequence");
                let scoring = a.prompt_logprobs.is_some() && c.start < a.prompt_tokens;
                SequenceStep {
                    tokens: &a.tokens[c.start..c.start + c.tokens],
                    cache: &mut a.cache,
                    want: if scoring { Logits::All } else { Logits::Last },
                }
            })
            .collect();
        let started = Instant::now();
        let tokens: usize = chunks.iter().map(|c| c.tokens).sum();
        let span = tracing::info_span!("step", sequences = chunks.len(), tokens);
        let _step = span.enter();
        let results = forward_micro_batches(
            &self.model,
            &self.dispatcher,
            &self.runtime,
            self.micro_batches,
            seqs,
            precision,
        );
        self.metrics.step(started.elapsed().as_secs_f64());
        results
    }

    /// Takes chunk `c`'s `logits` from the step that `began`: scores the prompt positions asked
    /// for, samples when the chunk ends the prompt or is a decode, and sends the events; what
    /// ended goes into `ends`.
    fn take(
        &mut self,
        c: &Chunk,
        logits: &[f32],
        (began, precalculated): (Instant, Tally),
        ends: &mut Ends,
    ) {
        let a = self.active.get_mut(&c.id).expect("filtered above");
        a.precalculated.add(precalculated);
        a.scheduled.get_or_insert(began);
        let mut prompt = Vec::new();
        let mut logits = logits;
        if a.prompt_logprobs.is_some() && c.start < a.prompt_tokens {
            if let Err(e) = a.score_prompt(c.start, c.tokens, logits, &self.tokenizer) {
                ends.failed.push((c.id, ApiError::internal(e.to_string())));
                return;
            }
            logits = &logits[logits.len() - logits.len() / c.tokens..];
            if c.samples
                && let Some((scored, _)) = a.prompt_logprobs.take()
            {
                prompt.push(Event::Prompt(scored));
            }
        }
        if !c.samples {
            return;
        }
        let before = a.decoding.generated().len();
        let events = match a.decoding.advance(logits, &self.tokenizer) {
            Ok(events) => prompt.into_iter().chain(events).collect(),
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
            a.first_token.get_or_insert(now);
            a.last_token = Some(now);
        }
        for event in events {
            let ended = match &event {
                Event::Prompt(_) | Event::Token(_) => None,
                Event::Finished { reason, .. } => Some(Some(*reason)),
                Event::Failed(_) => Some(None),
            };
            if let Some(reason) = ended {
                a.ended(&self.metrics, reason);
            }
            if a.events.try_send(event).is_err() {
                ends.gone.push(c.id);
                break;
            }
            if ended.is_some() {
                ends.stopped.push(c.id);
            }
        }
    }

    /// Fails, cancels and completes what the step ended, and tells the scheduler.
    fn settle(&mut self, step: &Step, ends: Ends) {
        let Ends {
            stopped,
            gone,
            failed,
        } = ends;
        for (id, error) in failed {
            self.fail(id, error);
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
                a.ended(&self.metrics, Some(f.reason));
                let usage = Usage::new(a.prompt_tokens, a.decoding.completion_tokens());
                let _ = a.events.try_send(Event::Finished {
                    reason: f.reason,
                    usage,
                    stop_reason: None,
                });
            }
        }
    }

    fn fail(&mut self, id: SeqId, error: ApiError) {
        if let Some(a) = self.active.remove(&id) {
            a.ended(&self.metrics, None);
            let _ = a.events.try_send(Event::Failed(error));
        }
        self.shared.lock().scheduler.cancel(id);
    }
}

/// The sequences a step ended: stopped (finished or failed, their events sent), gone (their
/// client went away) and failed before sampling (with the error to send).
#[derive(Default)]
struct Ends {
    stopped: Vec<SeqId>,
    gone: Vec<SeqId>,
    failed: Vec<(SeqId, ApiError)>,
}

/// One sequence's result of a forward pass: its logits or its group's error, and its layers
/// answered from a pre-calculation.
type Forwarded = (Result<Vec<f32>, ApiError>, Tally);

/// One forward pass over `seqs` split into up to `micro_batches` groups that run at once,
/// the first on this thread and the others on threads of their own, so that one group's
/// attention overlaps the others' expert round trips. Returns per sequence its last
/// position's logits, or its group's error (a failed group leaves its caches as they were).
fn forward_micro_batches(
    model: &Model,
    dispatcher: &Dispatcher,
    runtime: &tokio::runtime::Handle,
    micro_batches: usize,
    mut seqs: Vec<SequenceStep<'_>>,
    precision: Precision,
) -> Vec<Forwarded> {
    let tokens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
    let sizes = split(&tokens, micro_batches);
    let run = |group: &mut [SequenceStep<'_>]| -> Vec<Forwarded> {
        let sequences: Vec<usize> = group.iter().map(|s| s.tokens.len()).collect();
        let pass = (precision, model);
        let mut remote = RemoteExperts::new(dispatcher, runtime.clone(), pass, &sequences);
        let results: Vec<_> = match model.forward_batch(group, Some(&mut remote)) {
            Ok(logits) => logits.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::error!(error = %e, "a model step failed; its requests fail");
                vec![Err(ApiError::from_step(&e)); group.len()]
            }
        };
        results
            .into_iter()
            .zip(remote.precalculated().to_vec())
            .collect()
    };
    let mut groups: Vec<&mut [SequenceStep<'_>]> = Vec::with_capacity(sizes.len());
    let mut rest = seqs.as_mut_slice();
    for &size in &sizes {
        let (group, tail) = rest.split_at_mut(size);
        groups.push(group);
        rest = tail;
    }
    let mut groups = groups.into_iter();
    let Some(first) = groups.next() else {
        return Vec::new();
    };
    let step = tracing::Span::current();
    std::thread::scope(|scope| {
        let others: Vec<_> = groups
            .map(|g| scope.spawn(|| step.in_scope(|| run(g))))
            .collect();
        let mut results = run(first);
        for other in others {
            results.extend(other.join().expect("a micro-batch does not panic"));
        }
        results
    })
}

/// How many consecutive sequences each of at most `groups` micro-batches takes, given each
/// sequence's tokens this step: every group at least one sequence, the groups' token counts as
/// even as a split in order allows.
fn split(tokens: &[usize], groups: usize) -> Vec<usize> {
    let groups = groups.clamp(1, tokens.len().max(1));
    let total: usize = tokens.iter().sum();
    let mut sizes = Vec::with_capacity(groups);
    let (mut start, mut before) = (0, 0);
    for g in 1..groups {
        // The group ends where the running total first reaches g / groups of all tokens, but
        // leaves one sequence for each group after it.
        let target = total * g / groups;
        let mut end = start + 1;
        let mut sum = before + tokens[start];
        while end < tokens.len() - (groups - g) && sum < target {
            sum += tokens[end];
            end += 1;
        }
        sizes.push(end - start);
        (start, before) = (end, sum);
    }
    if start < tokens.len() {
        sizes.push(tokens.len() - start);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn micro_batches_split_in_order_by_tokens() {
        assert_eq!(split(&[1, 1, 1, 1], 2), [2, 2]);
        assert_eq!(split(&[1, 1, 1], 2), [1, 2]);
        assert_eq!(split(&[100, 1, 1, 1], 2), [1, 3]);
        assert_eq!(split(&[1, 1, 1, 100], 2), [3, 1]);
        assert_eq!(split(&[5], 2), [1]);
        assert_eq!(split(&[5, 5], 1), [2]);
        assert_eq!(split(&[], 2), Vec::<usize>::new());
        assert_eq!(split(&[1, 1, 1, 1, 1, 1], 3), [2, 2, 2]);
        assert_eq!(split(&[9, 1, 1], 3), [1, 1, 1]);
    }
}
