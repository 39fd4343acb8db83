//! The contract between the APIs (HTTP, gRPC) and the generation engine: a job in, a stream of
//! events out. Dropping the receiver of a job's events cancels the job (a client that went away
//! frees its sequence at once).

use tokio::sync::mpsc;

use crate::chat_template::Message;
use crate::openai::{ApiError, FinishReason, SamplingParams, StopReason, Usage};
use crate::readiness::Readiness;

/// One generation to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The prompt's token ids (chat requests arrive already templated and tokenized).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most (already checked against the context).
    pub max_tokens: usize,
    pub params: SamplingParams,
}

/// One generated token, with its log-probability and the most likely alternatives when asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: u32,
    /// The text this token adds (possibly empty while a multi-byte character is incomplete).
    pub text: String,
    pub logprob: Option<f32>,
    /// The `logprobs` most likely tokens at this position, most likely first.
    pub top: Vec<(String, f32)>,
}

/// What a job reports, in order: with `echo` and `logprobs` the prompt's tokens, then the
/// generated tokens, then exactly one `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt's tokens, each with its log-probability given the tokens before it (none for
    /// the first) and the most likely alternatives there (`logprobs` of them).
    Prompt(Vec<Token>),
    Token(Token),
    Finished {
        reason: FinishReason,
        usage: Usage,
        /// The stop token or string that ended it, if one did.
        stop_reason: Option<StopReason>,
    },
    Failed(ApiError),
}

/// The generation engine as the APIs see it.
pub trait Engine: Send + Sync + 'static {
    /// The served model's name (`model` in requests and responses).
    fn model(&self) -> &str;
    /// The longest sequence, prompt and completion together.
    fn context_length(&self) -> usize;
    /// The largest `max_tokens` a request may ask for.
    fn max_tokens_limit(&self) -> usize;
    /// Token ids run from 0 to this (the width of a logits row).
    fn vocab_size(&self) -> usize;
    /// Token ids of `text`, with the tokenizer's special tokens (e.g. BOS) when
    /// `add_special_tokens` (what completions and chats are fed).
    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ApiError>;
    /// The text of token ids, special tokens left out.
    fn detokenize(&self, ids: &[u32]) -> Result<String, ApiError>;
    /// The prompt text of a chat conversation, by the model's chat template.
    fn chat_prompt(&self, messages: &[Message]) -> Result<String, ApiError>;
    /// Starts `job`; refuses at once with a 503 carrying a retry-after when the engine is full.
    fn submit(&self, job: Job) -> Result<mpsc::Receiver<Event>, ApiError>;
    /// Whether the engine can serve now (every expert has a serving node), and if not, what is
    /// missing.
    fn readiness(&self) -> Readiness;
    /// Its metrics in the Prometheus text format (`GET /metrics`); none by default.
    fn metrics(&self) -> String {
        String::new()
    }
}
