//! The continuous-batching scheduler: before each model step it decides which sequences run and
//! how many of their tokens, within a token budget per step and a paged KV-cache budget. It is a
//! pure core (no IO, threads or clocks): the engine calls [`Scheduler::schedule`], runs the model
//! on the returned [`Step`], and reports back with [`Scheduler::complete`]; it does not hold
//! tokens, sample or touch the cache itself.
//!
//! # The KV budget
//!
//! The cache is counted in blocks of `block_tokens` tokens (16 by default, so a sequence wastes
//! at most 15 token slots); the budget is `total_blocks` blocks, `capacity = total_blocks *
//! block_tokens` tokens. Admission reserves every block of the prompt plus room for the first
//! generated token, `ceil((prompt + 1) / block_tokens)`, so a chunked prefill never has to grow;
//! after that, a decode takes one more block when the token it feeds crosses a block boundary.
//! Finished and cancelled sequences give their blocks back at once.
//!
//! # Admission
//!
//! [`Scheduler::try_admit`] never queues without bound: it refuses at once when `max_waiting`
//! requests are queued ([`AdmitError::QueueFull`], with a retry-after of [`RETRY_AFTER_SECS`]),
//! and when the prompt could never fit even an empty cache, `prompt >= capacity`
//! ([`AdmitError::TooLong`], a permanent error checked first). A sequence that grows to
//! `capacity` tokens ends with [`FinishReason::Length`]: the KV budget is its context.
//!
//! # One step (vLLM's policy with chunked prefill)
//!
//! With `max_batch_tokens` tokens (512 by default) and `max_running` sequences (64):
//! 1. every decoding sequence gets its one token, oldest admission first;
//! 2. sequences still prefilling continue, oldest first, by chunks of at most `prefill_chunk`
//!    tokens and what is left of the budget;
//! 3. waiting sequences are admitted in FIFO order while a slot, their blocks and budget are
//!    free; the head of the queue is never overtaken, so a long prompt is not starved.
//!
//! `max_batch_tokens >= max_running` is required, so decodes always fit and a long prompt never
//! stalls other sequences' tokens: beside 64 decodes, a 4,096-token prompt goes in by chunks of
//! 448 tokens over 10 steps while each decoding sequence gets a token every step.
//!
//! When a decode needs a block and none is free, the most recently admitted sequence is
//! preempted by recompute: its blocks are freed, it goes back to the head of the queue keeping
//! its generated tokens (even past `max_waiting`: it was admitted already), and when readmitted
//! it prefills prompt and generated tokens again from position 0. The oldest sequence is never preempted while others run, so it always progresses.
//! A step that preempted admits nobody, so a victim is not readmitted only to be evicted again.

use moe_model::kv_cache::BLOCK_POSITIONS;
use std::collections::VecDeque;
use std::fmt;

use crate::openai::FinishReason;

/// Seconds a refused client is told to wait: the queue drains as sequences finish, and a step
/// takes tens of milliseconds, so one second is a fair first retry.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A sequence, as numbered by the scheduler on admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq-{}", self.0)
    }
}

/// The scheduler's limits. [`SchedulerConfig::new`] gives the defaults for a cache size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens per KV block.
    pub block_tokens: usize,
    /// KV blocks in the budget.
    pub total_blocks: usize,
    /// Requests queued at most before admission refuses.
    pub max_waiting: usize,
    /// Sequences holding KV blocks at most.
    pub max_running: usize,
    /// Tokens fed to the model in one step at most.
    pub max_batch_tokens: usize,
    /// Prompt tokens of one sequence fed in one step at most.
    pub prefill_chunk: usize,
}

impl SchedulerConfig {
    /// The defaults for a cache of `total_blocks` blocks: 16-token blocks, 256 queued, 64
    /// running, 512 tokens per step, a prompt chunk as large as the step.
    pub fn new(total_blocks: usize) -> Self {
        Self {
            block_tokens: BLOCK_POSITIONS,
            total_blocks,
            max_waiting: 256,
            max_running: 64,
            max_batch_tokens: 512,
            prefill_chunk: 512,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            ("block_tokens", self.block_tokens),
            ("total_blocks", self.total_blocks),
            ("max_waiting", self.max_waiting),
            ("max_running", self.max_running),
            ("max_batch_tokens", self.max_batch_tokens),
            ("prefill_chunk", self.prefill_chunk),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_batch_tokens < self.max_running {
            return Err(ConfigError::BudgetBelowRunning {
                max_batch_tokens: self.max_batch_tokens,
                max_running: self.max_running,
            });
        }
        Ok(())
    }

    /// Tokens the whole budget holds.
    fn capacity(&self) -> usize {
        self.total_blocks * self.block_tokens
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_tokens)
    }
}

/// A configuration the scheduler cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("scheduler: `{0}` must be at least 1")]
    Zero(&'static str),
    #[error(
        "scheduler: max_batch_tokens ({max_batch_tokens}) is below max_running ({max_running}): \
         every decoding sequence needs its token each step"
    )]
    BudgetBelowRunning {
        max_batch_tokens: usize,
        max_running: usize,
    },
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("the request queue is full; retry after {retry_after_secs} s")]
    QueueFull { retry_after_secs: u64 },
    #[error(
        "the prompt ({prompt_tokens} tokens) is too long for this server's KV budget \
         ({max_prompt_tokens} tokens at most)"
    )]
    TooLong {
        prompt_tokens: usize,
        max_prompt_tokens: usize,
    },
    #[error("a request needs at least one prompt token and one token to generate")]
    Empty,
}

/// Where a known sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqState {
    /// Queued, holding no blocks (new, or preempted and waiting to recompute).
    Waiting,
    /// Running, with more than one token to feed before its next sampled token.
    Prefilling,
    /// Running, feeding one token per step: its last sampled token (or a one-token prompt).
    Decoding,
}

/// A run of one sequence's tokens for the model to feed in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub id: SeqId,
    /// Position of the first token fed; the cache holds the `start` tokens before it.
    pub start: usize,
    pub tokens: usize,
    /// Whether the chunk reaches the end of the sequence, so the step samples its next token.
    pub samples: bool,
}

/// What the engine feeds the model in one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Decodes first, oldest admission first, then prefill chunks; one chunk per sequence.
    pub chunks: Vec<Chunk>,
    /// Sequences preempted by this step, in the order they were: the engine drops their cache
    /// now; they recompute from position 0 when readmitted.
    pub preempted: Vec<SeqId>,
}

impl Step {
    /// Tokens fed in this step.
    pub fn tokens(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.tokens).sum()
    }

    /// Whether the step has nothing for the model to do.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// A sequence that ended in [`Scheduler::complete`]; its blocks are free already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub id: SeqId,
    pub reason: FinishReason,
}

/// Counters for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub running: usize,
    pub waiting: usize,
    pub blocks_used: usize,
    pub blocks_total: usize,
    /// Preemptions since start.
    pub preemptions: u64,
}

impl Stats {
    /// The fraction of the KV budget in use, 0 to 1.
    pub fn kv_usage(&self) -> f64 {
        self.blocks_used as f64 / self.blocks_total as f64
    }
}

#[derive(Debug, Clone)]
struct Sequence {
    id: SeqId,
    prompt: usize,
    generated: usize,
    max_tokens: usize,
    /// Tokens whose keys and values are in the cache.
    computed: usize,
    /// KV blocks held; 0 while waiting.
    blocks: usize,
}

impl Sequence {
    fn len(&self) -> usize {
        self.prompt + self.generated
    }

    /// Tokens to feed before the next sampled token; at least 1.
    fn remaining(&self) -> usize {
        self.len() - self.computed
    }

    fn is_decoding(&self) -> bool {
        self.remaining() == 1
    }

    fn chunk(&self, tokens: usize) -> Chunk {
        Chunk {
            id: self.id,
            start: self.computed,
            tokens,
            samples: tokens == self.remaining(),
        }
    }
}

/// The continuous-batching scheduler (see the module documentation for the policy).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Oldest first; only the front is admitted.
    waiting: VecDeque<Sequence>,
    /// In admission order, oldest first.
    running: Vec<Sequence>,
    free_blocks: usize,
    next_id: u64,
    preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            free_blocks: config.total_blocks,
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            preemptions: 0,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a request of `prompt_tokens` tokens generating `max_tokens` at most, or refuses
    /// it at once.
    pub fn try_admit(
        &mut self,
        prompt_tokens: usize,
        max_tokens: usize,
    ) -> Result<SeqId, AdmitError> {
        if prompt_tokens == 0 || max_tokens == 0 {
            return Err(AdmitError::Empty);
        }
        if prompt_tokens >= self.config.capacity() {
            return Err(AdmitError::TooLong {
                prompt_tokens,
                max_prompt_tokens: self.config.capacity() - 1,
            });
        }
        if self.waiting.len() >= self.config.max_waiting {
            return Err(AdmitError::QueueFull {
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.waiting.push_back(Sequence {
            id,
            prompt: prompt_tokens,
            generated: 0,
            max_tokens,
            computed: 0,
            blocks: 0,
        });
        Ok(id)
    }

    /// Decides the next step: decodes, then prefill chunks, then admissions (see the module
    /// documentation). An empty step means there is nothing to run.
    pub fn schedule(&mut self) -> Step {
        let mut step = Step::default();
        let mut budget = self.config.max_batch_tokens;
        self.schedule_decodes(&mut step, &mut budget);
        self.schedule_prefills(&mut step, &mut budget);
        if step.preempted.is_empty() {
            self.admit_waiting(&mut step, &mut budget);
        }
        step
    }

    /// Advances the sequences after the engine ran `step` (the one [`Scheduler::schedule`]
    /// returned last). `stopped` names the sequences whose token sampled in this step was an
    /// end of sequence or completed a stop string. Returns the sequences that ended (stopped,
    /// or reached `max_tokens` or the KV capacity), already gone and their blocks free. Chunks of sequences cancelled meanwhile, and chunks that do
    /// not continue where their sequence stands (a step completed twice), are ignored.
    pub fn complete(&mut self, step: &Step, stopped: &[SeqId]) -> Vec<Finished> {
        let capacity = self.config.capacity();
        let mut finished = Vec::new();
        for chunk in &step.chunks {
            let Some(index) = self.running.iter().position(|seq| seq.id == chunk.id) else {
                continue;
            };
            let seq = &mut self.running[index];
            if seq.computed != chunk.start || chunk.tokens > seq.remaining() {
                continue;
            }
            seq.computed += chunk.tokens;
            if seq.computed < seq.len() {
                continue;
            }
            seq.generated += 1;
            let reason = if stopped.contains(&seq.id) {
                FinishReason::Stop
            } else if seq.generated >= seq.max_tokens || seq.len() >= capacity {
                FinishReason::Length
            } else {
                continue;
            };
            finished.push(Finished { id: seq.id, reason });
            self.release(index);
        }
        finished
    }

    /// Forgets `id` in any state and frees its blocks at once. Returns whether it was known.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        if let Some(index) = self.running.iter().position(|seq| seq.id == id) {
            self.release(index);
            true
        } else if let Some(index) = self.waiting.iter().position(|seq| seq.id == id) {
            self.waiting.remove(index);
            true
        } else {
            false
        }
    }

    /// Where `id` stands; `None` once it finished or was cancelled.
    pub fn state(&self, id: SeqId) -> Option<SeqState> {
        if let Some(seq) = self.running.iter().find(|seq| seq.id == id) {
            Some(if seq.is_decoding() {
                SeqState::Decoding
            } else {
                SeqState::Prefilling
            })
        } else if self.waiting.iter().any(|seq| seq.id == id) {
            Some(SeqState::Waiting)
        } else {
            None
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            running: self.running.len(),
            waiting: self.waiting.len(),
            blocks_used: self.config.total_blocks - self.free_blocks,
            blocks_total: self.config.total_blocks,
            preemptions: self.preemptions,
        }
    }

    /// One token for every decoding sequence, oldest first, growing its blocks when it crosses
    /// a block boundary, preempting the youngest sequences when no block is free.
    fn schedule_decodes(&mut self, step: &mut Step, budget: &mut usize) {
        let mut index = 0;
        while index < self.running.len() {
            let seq = &self.running[index];
            if !seq.is_decoding() {
                index += 1;
                continue;
            }
            let id = seq.id;
            // Feeding position len - 1 stores len tokens.
            let needed = self.config.blocks_for(seq.len()).saturating_sub(seq.blocks);
            while self.free_blocks < needed {
                let Some(victim) = self.preempt_youngest() else {
                    return;
                };
                step.preempted.push(victim);
                if victim == id {
                    // It was the youngest: no sequence after it.
                    return;
                }
            }
            self.free_blocks -= needed;
            let seq = &mut self.running[index];
            seq.blocks += needed;
            step.chunks.push(seq.chunk(1));
            *budget -= 1;
            index += 1;
        }
    }

    /// The next chunk of every sequence still prefilling, oldest first, while budget is left.
    fn schedule_prefills(&mut self, step: &mut Step, budget: &mut usize) {
        for seq in self.running.iter().filter(|seq| !seq.is_decoding()) {
            if *budget == 0 {
                break;
            }
            let tokens = seq.remaining().min(self.config.prefill_chunk).min(*budget);
            step.chunks.push(seq.chunk(tokens));
            *budget -= tokens;
        }
    }

    /// Admits the head of the queue, again and again, while a slot, its blocks (prompt and
    /// first generated token) and budget are free; schedules its first chunk.
    fn admit_waiting(&mut self, step: &mut Step, budget: &mut usize) {
        while *budget > 0 && self.running.len() < self.config.max_running {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            let needed = self.config.blocks_for(seq.len() + 1);
            if needed > self.free_blocks {
                self.waiting.push_front(seq);
                break;
            }
            self.free_blocks -= needed;
            seq.blocks = needed;
            let tokens = seq.remaining().min(self.config.prefill_chunk).min(*budget);
            step.chunks.push(seq.chunk(tokens));
            *budget -= tokens;
            self.running.push(seq);
        }
    }

    /// Moves the most recently admitted sequence back to the head of the queue to recompute.
    fn preempt_youngest(&mut self) -> Option<SeqId> {
        let mut seq = self.running.pop()?;
        self.free_blocks += seq.blocks;
        seq.blocks = 0;
        seq.computed = 0;
        self.preemptions += 1;
        let id = seq.id;
        self.waiting.push_front(seq);
        Some(id)
    }

    fn release(&mut self, index: usize) {
        let seq = self.running.remove(index);
        self.free_blocks += seq.blocks;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn config(block_tokens: usize, total_blocks: usize) -> SchedulerConfig {
        SchedulerConfig {
            block_tokens,
            total_blocks,
            max_waiting: 8,
            max_running: 4,
            max_batch_tokens: 64,
            prefill_chunk: 64,
        }
    }

    fn scheduler(config: SchedulerConfig) -> Scheduler {
        Scheduler::new(config).expect("a valid configuration")
    }

    /// Runs one step with no stops; returns it and what finished.
    fn run_step(scheduler: &mut Scheduler) -> (Step, Vec<Finished>) {
        let step = scheduler.schedule();
        let finished = scheduler.complete(&step, &[]);
        (step, finished)
    }

    fn ids(step: &Step) -> Vec<SeqId> {
        step.chunks.iter().map(|chunk| chunk.id).collect()
    }

    fn waiting_ids(scheduler: &Scheduler) -> Vec<SeqId> {
        scheduler.waiting.iter().map(|seq| seq.id).collect()
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let mut zero = config(16, 8);
        zero.prefill_chunk = 0;
        assert_eq!(
            Scheduler::new(zero).unwrap_err(),
            ConfigError::Zero("prefill_chunk")
        );
        let mut small_budget = config(16, 8);
        small_budget.max_batch_tokens = 3;
        assert!(matches!(
            Scheduler::new(small_budget),
            Err(ConfigError::BudgetBelowRunning { .. })
        ));
        assert!(SchedulerConfig::new(1024).validate().is_ok());
    }

    #[test]
    fn admission_is_fifo_and_the_head_is_never_overtaken() {
        let mut config = config(4, 16);
        config.max_batch_tokens = 8;
        let mut scheduler = scheduler(config);
        let a = scheduler.try_admit(4, 10).unwrap();
        let b = scheduler.try_admit(4, 10).unwrap();
        let c = scheduler.try_admit(4, 10).unwrap();
        let (step, _) = run_step(&mut scheduler);
        assert_eq!(ids(&step), [a, b]);
        assert_eq!(waiting_ids(&scheduler), [c]);
        let (step, _) = run_step(&mut scheduler);
        assert_eq!(ids(&step), [a, b, c]);
        assert_eq!(step.chunks[2].tokens, 4);

        // 4 blocks: a head that does not fit holds back a smaller request behind it.
        let mut scheduler = self::scheduler(self::config(4, 4));
        let long = scheduler.try_admit(10, 10).unwrap();
        let blocked = scheduler.try_admit(8, 10).unwrap();
        let small = scheduler.try_admit(2, 10).unwrap();
        let (step, _) = run_step(&mut scheduler);
        assert_eq!(ids(&step), [long]);
        assert_eq!(scheduler.stats().blocks_used, 3);
        assert_eq!(waiting_ids(&scheduler), [blocked, small]);
    }

    #[test]
    fn a_full_queue_refuses_at_once_with_a_retry_after() {
        let mut config = config(16, 64);
        config.max_waiting = 2;
        let mut scheduler = scheduler(config);
        scheduler.try_admit(5, 5).unwrap();
        scheduler.try_admit(5, 5).unwrap();
        assert_eq!(
            scheduler.try_admit(5, 5),
            Err(AdmitError::QueueFull {
                retry_after_secs: RETRY_AFTER_SECS
            })
        );
        assert_eq!(scheduler.stats().waiting, 2);
        run_step(&mut scheduler);
        assert!(scheduler.try_admit(5, 5).is_ok());
    }

    #[test]
    fn a_prompt_the_whole_budget_cannot_hold_has_its_own_error() {
        let mut config = config(4, 4);
        config.max_waiting = 1;
        let mut scheduler = scheduler(config);
        let too_long = AdmitError::TooLong {
            prompt_tokens: 16,
            max_prompt_tokens: 15,
        };
        assert_eq!(scheduler.try_admit(16, 1), Err(too_long.clone()));
        assert_eq!(scheduler.try_admit(0, 1), Err(AdmitError::Empty));
        assert!(scheduler.try_admit(15, 1).is_ok());
        // Permanent before transient: the full queue does not hide it.
        assert_eq!(scheduler.try_admit(16, 1), Err(too_long));
        assert!(matches!(
            scheduler.try_admit(15, 1),
            Err(AdmitError::QueueFull { .. })
        ));
    }

    #[test]
    fn a_long_prompt_advances_by_chunks_while_others_decode_every_step() {
        let mut config = config(16, 64);
        config.max_batch_tokens = 16;
        let mut scheduler = scheduler(config);
        let a = scheduler.try_admit(2, 100).unwrap();
        let b = scheduler.try_admit(3, 100).unwrap();
        run_step(&mut scheduler);
        assert_eq!(scheduler.state(a), Some(SeqState::Decoding));
        assert_eq!(scheduler.state(b), Some(SeqState::Decoding));

        let long = scheduler.try_admit(100, 5).unwrap();
        let mut fed = 0;
        for round in 0..8 {
            let (step, _) = run_step(&mut scheduler);
            assert!(step.tokens() <= 16);
            assert_eq!(ids(&step), [a, b, long]);
            assert_eq!(
                step.chunks[0],
                Chunk {
                    id: a,
                    start: 2 + round,
                    tokens: 1,
                    samples: true
                }
            );
            assert_eq!(
                step.chunks[1],
                Chunk {
                    id: b,
                    start: 3 + round,
                    tokens: 1,
                    samples: true
                }
            );
            let chunk = step.chunks[2];
            assert_eq!(chunk.start, fed);
            assert_eq!(chunk.tokens, (100 - fed).min(14));
            fed += chunk.tokens;
            assert_eq!(chunk.samples, fed == 100);
        }
        assert_eq!(fed, 100);
        assert_eq!(scheduler.state(long), Some(SeqState::Decoding));
    }

    #[test]
    fn max_running_caps_admission() {
        let mut scheduler = scheduler(config(16, 64));
        let admitted: Vec<_> = (0..6).map(|_| scheduler.try_admit(3, 9).unwrap()).collect();
        let (step, _) = run_step(&mut scheduler);
        assert_eq!(ids(&step), admitted[..4]);
        assert_eq!(scheduler.stats().running, 4);
        assert_eq!(scheduler.stats().waiting, 2);
    }

    #[test]
    fn cancel_frees_blocks_at_once_in_every_state() {
        let mut config = config(4, 16);
        config.max_batch_tokens = 8;
        config.prefill_chunk = 4;
        let mut scheduler = scheduler(config);
        let decoding = scheduler.try_admit(3, 50).unwrap();
        let prefilling = scheduler.try_admit(20, 50).unwrap();
        let (step, _) = run_step(&mut scheduler);
        assert_eq!(ids(&step), [decoding, prefilling]);
        let waiting = scheduler.try_admit(4, 50).unwrap();
        assert_eq!(scheduler.state(decoding), Some(SeqState::Decoding));
        assert_eq!(scheduler.state(prefilling), Some(SeqState::Prefilling));
        assert_eq!(scheduler.state(waiting), Some(SeqState::Waiting));
        assert_eq!(scheduler.stats().blocks_used, 1 + 6);

        assert!(scheduler.cancel(waiting));
        assert_eq!(scheduler.stats().waiting, 0);

        // Cancelled while its chunk is in flight: the chunk's completion is ignored.
        let step = scheduler.schedule();
        assert!(scheduler.cancel(prefilling));
        assert_eq!(scheduler.stats().blocks_used, 1);
        scheduler.complete(&step, &[]);
        assert_eq!(scheduler.state(prefilling), None);

        assert!(scheduler.cancel(decoding));
        assert!(!scheduler.cancel(decoding));
        let stats = scheduler.stats();
        assert_eq!((stats.running, stats.waiting, stats.blocks_used), (0, 0, 0));
        assert!(scheduler.schedule().is_empty());
    }

    #[test]
    fn a_step_completed_twice_changes_nothing_the_second_time() {
        let mut scheduler = scheduler(config(4, 16));
        let id = scheduler.try_admit(6, 10).unwrap();
        let step = scheduler.schedule();
        scheduler.complete(&step, &[]);
        scheduler.complete(&step, &[]);
        let next = scheduler.schedule();
        assert_eq!(
            next.chunks,
            [Chunk {
                id,
                start: 6,
                tokens: 1,
                samples: true
            }]
        );
    }

    #[test]
    fn preemption_recomputes_the_youngest_from_the_head_of_the_queue() {
        // 4 blocks of 4 tokens; two 4-token prompts hold 2 blocks each (prompt + first token).
        let mut scheduler = scheduler(config(4, 4));
        let old = scheduler.try_admit(4, 6).unwrap();
        let young = scheduler.try_admit(4, 6).unwrap();
        run_step(&mut scheduler);
        let later = scheduler.try_admit(4, 6).unwrap();
        // Lengths 5..8 fit in 2 blocks each.
        for _ in 0..4 {
            let (step, finished) = run_step(&mut scheduler);
            assert_eq!(ids(&step), [old, young]);
            assert!(finished.is_empty() && step.preempted.is_empty());
        }
        assert_eq!(scheduler.stats().blocks_used, 4);

        // Length 9 needs a third block: the youngest gives its blocks and goes to the head.
        let step = scheduler.schedule();
        assert_eq!(step.preempted, [young]);
        assert_eq!(ids(&step), [old]);
        assert_eq!(waiting_ids(&scheduler), [young, later]);
        assert_eq!(scheduler.stats().preemptions, 1);
        assert_eq!(scheduler.stats().blocks_used, 3);
        let finished = scheduler.complete(&step, &[]);
        assert_eq!(
            finished,
            [Finished {
                id: old,
                reason: FinishReason::Length
            }]
        );

        // It recomputes its prompt and its 5 generated tokens, then samples its last token.
        let (step, finished) = run_step(&mut scheduler);
        assert_eq!(
            step.chunks,
            [Chunk {
                id: young,
                start: 0,
                tokens: 9,
                samples: true
            }]
        );
        assert_eq!(
            finished,
            [Finished {
                id: young,
                reason: FinishReason::Length
            }]
        );
        let (step, _) = run_step(&mut scheduler);
        assert_eq!(ids(&step), [later]);
    }

    #[test]
    fn finished_sequences_leave_at_once() {
        let mut scheduler = scheduler(config(4, 16));
        let stops = scheduler.try_admit(5, 100).unwrap();
        let runs_out = scheduler.try_admit(5, 2).unwrap();
        let step = scheduler.schedule();
        assert!(scheduler.complete(&step, &[stops]).contains(&Finished {
            id: stops,
            reason: FinishReason::Stop
        }));
        assert_eq!(scheduler.state(stops), None);
        assert_eq!(scheduler.stats().blocks_used, 2);
        let (_, finished) = run_step(&mut scheduler);
        assert_eq!(
            finished,
            [Finished {
                id: runs_out,
                reason: FinishReason::Length
            }]
        );
        let stats = scheduler.stats();
        assert_eq!((stats.running, stats.blocks_used), (0, 0));
    }

    #[test]
    fn a_sequence_that_fills_the_budget_ends_with_length() {
        // 8 tokens in all: a 5-token prompt generates 3 tokens whatever its max_tokens.
        let mut scheduler = scheduler(config(4, 2));
        let id = scheduler.try_admit(5, 100).unwrap();
        let mut generated = 0;
        loop {
            let (step, finished) = run_step(&mut scheduler);
            generated += step.chunks.iter().filter(|chunk| chunk.samples).count();
            if !finished.is_empty() {
                assert_eq!(
                    finished,
                    [Finished {
                        id,
                        reason: FinishReason::Length
                    }]
                );
                break;
            }
        }
        assert_eq!(generated, 3);
        assert_eq!(scheduler.stats().blocks_used, 0);
    }

    /// xorshift64*: enough randomness for a simulation, the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    fn check_invariants(scheduler: &Scheduler, step: &Step) {
        let config = &scheduler.config;
        assert!(step.tokens() <= config.max_batch_tokens);
        assert!(scheduler.running.len() <= config.max_running);
        let held: usize = scheduler.running.iter().map(|seq| seq.blocks).sum();
        assert_eq!(held, scheduler.stats().blocks_used);
        assert!(held <= config.total_blocks);
        assert!(scheduler.waiting.iter().all(|seq| seq.blocks == 0));

        let mut seen = HashSet::new();
        for seq in scheduler.running.iter().chain(&scheduler.waiting) {
            assert!(seen.insert(seq.id), "{} is listed twice", seq.id);
        }
        let mut in_step = HashSet::new();
        for chunk in &step.chunks {
            assert!(in_step.insert(chunk.id) && chunk.tokens > 0);
            let seq = scheduler
                .running
                .iter()
                .find(|seq| seq.id == chunk.id)
                .unwrap();
            assert_eq!(chunk.start, seq.computed);
            assert!(chunk.start + chunk.tokens <= seq.blocks * config.block_tokens);
        }
    }

    #[test]
    fn a_random_load_keeps_every_invariant_and_every_sequence_ends() {
        let config = SchedulerConfig {
            block_tokens: 4,
            total_blocks: 24,
            max_waiting: 6,
            max_running: 5,
            max_batch_tokens: 12,
            prefill_chunk: 7,
        };
        let mut scheduler = scheduler(config);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Admitted id -> (max_tokens, tokens sampled so far).
        let mut live: HashMap<SeqId, (usize, usize)> = HashMap::new();
        let (mut admitted, mut refused, mut cancelled, mut finished_count) = (0, 0, 0, 0);

        for round in 0.. {
            let arriving = round < 3_000;
            if arriving && rng.chance(40) {
                let prompt = if rng.chance(2) {
                    200
                } else {
                    1 + rng.below(40)
                };
                let max_tokens = 1 + rng.below(30);
                match scheduler.try_admit(prompt, max_tokens) {
                    Ok(id) => {
                        live.insert(id, (max_tokens, 0));
                        admitted += 1;
                    }
                    Err(AdmitError::TooLong { .. }) => assert_eq!(prompt, 200),
                    Err(AdmitError::QueueFull { .. }) => refused += 1,
                    Err(AdmitError::Empty) => unreachable!("prompts and max_tokens are positive"),
                }
            }
            if rng.chance(3) {
                let mut known: Vec<_> = live.keys().copied().collect();
                known.sort();
                if !known.is_empty() {
                    let id = known[rng.below(known.len())];
                    assert!(scheduler.cancel(id));
                    assert_eq!(scheduler.state(id), None);
                    live.remove(&id);
                    cancelled += 1;
                }
            }

            let step = scheduler.schedule();
            check_invariants(&scheduler, &step);
            let mut stopped = Vec::new();
            for chunk in step.chunks.iter().filter(|chunk| chunk.samples) {
                live.get_mut(&chunk.id).unwrap().1 += 1;
                if rng.chance(5) {
                    stopped.push(chunk.id);
                }
            }
            for done in scheduler.complete(&step, &stopped) {
                let (max_tokens, sampled) = live.remove(&done.id).unwrap();
                match done.reason {
                    FinishReason::Length => assert_eq!(sampled, max_tokens),
                    FinishReason::Stop => assert!(stopped.contains(&done.id)),
                }
                assert_eq!(scheduler.state(done.id), None);
                finished_count += 1;
            }
            if !arriving && live.is_empty() {
                break;
            }
            assert!(
                round < 20_000,
                "sequences still live after arrivals stopped"
            );
        }

        let stats = scheduler.stats();
        assert_eq!((stats.running, stats.waiting, stats.blocks_used), (0, 0, 0));
        assert_eq!(admitted, finished_count + cancelled);
        assert!(
            refused > 0 && stats.preemptions > 0,
            "the load is too light"
        );
    }
}
