//! Response bodies, stream chunks and their server-sent-event framing.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::*;

/// What every response and stream chunk of one request repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The request's id, without the prefix (`cmpl-`, `chatcmpl-`) the documents add.
    pub request_id: String,
    /// When the request was accepted, in Unix seconds.
    pub created: u64,
    /// The model as the request named it.
    pub model: String,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
}

/// What ended generation with `finish_reason` `stop`, as vLLM's `stop_reason` says it: the stop
/// token id from `stop_token_ids`, or the stop string; none for an end-of-sequence token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StopReason {
    Token(u32),
    Text(String),
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A position's most likely tokens with their log-probabilities, most likely first; written as
/// the JSON object `{token: logprob}` the completions API uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobs(pub Vec<(String, f32)>);

impl Serialize for TopLogprobs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(token, logprob)?;
        }
        map.end()
    }
}

/// The `logprobs` of a completion choice: one entry per token in every list. With `echo`, the
/// first prompt token has no log-probability and no alternatives (`null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopLogprobs>>,
    /// Each token's offset in characters into the choice's text.
    pub text_offset: Vec<usize>,
}

/// One choice of a completion or of a completion stream chunk; `finish_reason` is null until
/// the last chunk of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<FinishReason>,
    pub stop_reason: Option<StopReason>,
}

/// The answer to a non-streaming `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

impl Completion {
    pub fn new(
        meta: &ResponseMeta,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        finish_reason: FinishReason,
        usage: Usage,
    ) -> Self {
        let choice = CompletionChoice {
            index: 0,
            text,
            logprobs,
            finish_reason: Some(finish_reason),
            stop_reason: None,
        };
        Self::of(meta, vec![choice], usage)
    }

    /// A completion of `choices` (one per prompt and `n`, indexed in that order).
    pub fn of(meta: &ResponseMeta, choices: Vec<CompletionChoice>, usage: Usage) -> Self {
        Self {
            id: format!("cmpl-{}", meta.request_id),
            object: "text_completion",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
        }
    }
}

/// One event of a streaming `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChunk {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl CompletionChunk {
    /// New text; `finish_reason` set on the last one.
    pub fn text(
        meta: &ResponseMeta,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> Self {
        let choice = CompletionChoice {
            index: 0,
            text,
            logprobs,
            finish_reason,
            stop_reason: None,
        };
        Self::with(meta, vec![choice], None)
    }

    /// The chunk with what stopped the completion (its last chunk).
    pub fn stopped_by(mut self, stop_reason: Option<StopReason>) -> Self {
        self.choices
            .iter_mut()
            .for_each(|c| c.stop_reason = stop_reason.clone());
        self
    }

    /// The usage-only chunk (`choices: []`) sent last when `include_usage` is set.
    pub fn usage(meta: &ResponseMeta, usage: Usage) -> Self {
        Self::with(meta, Vec::new(), Some(usage))
    }

    fn with(meta: &ResponseMeta, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Self {
        Self {
            id: format!("cmpl-{}", meta.request_id),
            object: "text_completion",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
        }
    }
}

/// One alternative of a chat token's log-probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
}

/// A sampled chat token's log-probability with its alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// The `logprobs` of a chat choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

/// The assistant's message in a chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssistantMessage {
    role: Role,
    pub content: String,
}

/// The choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
    pub stop_reason: Option<StopReason>,
}

impl ChatChoice {
    /// Choice `index`: the assistant's `content`.
    pub fn new(
        index: u32,
        content: String,
        logprobs: Option<ChatLogprobs>,
        finish_reason: FinishReason,
    ) -> Self {
        let message = AssistantMessage {
            role: Role::Assistant,
            content,
        };
        ChatChoice {
            index,
            message,
            logprobs,
            finish_reason,
            stop_reason: None,
        }
    }

    /// The choice with what stopped it.
    pub fn stopped_by(mut self, stop_reason: Option<StopReason>) -> Self {
        self.stop_reason = stop_reason;
        self
    }
}

/// The answer to a non-streaming `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

impl ChatCompletion {
    pub fn new(
        meta: &ResponseMeta,
        content: String,
        logprobs: Option<ChatLogprobs>,
        finish_reason: FinishReason,
        usage: Usage,
    ) -> Self {
        let choice = ChatChoice::new(0, content, logprobs, finish_reason);
        Self::of(meta, vec![choice], usage)
    }

    /// A chat completion of `choices` (`n` of them, indexed in order).
    pub fn of(meta: &ResponseMeta, choices: Vec<ChatChoice>, usage: Usage) -> Self {
        Self {
            id: format!("chatcmpl-{}", meta.request_id),
            object: "chat.completion",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
        }
    }
}

/// What a chat stream chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl Delta {
    /// The first delta of a stream: the assistant role and empty content, as OpenAI sends it.
    pub fn assistant() -> Self {
        Self {
            role: Some(Role::Assistant),
            content: Some(String::new()),
        }
    }

    /// New text.
    pub fn text(content: String) -> Self {
        Self {
            role: None,
            content: Some(content),
        }
    }
}

/// The choice of a chat stream chunk; `finish_reason` is null until the last one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
    pub stop_reason: Option<StopReason>,
}

/// One event of a streaming `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletionChunk {
    /// A delta; the last one carries an empty delta and the `finish_reason`.
    pub fn delta(
        meta: &ResponseMeta,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> Self {
        let choice = ChatChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason,
            stop_reason: None,
        };
        Self::with(meta, vec![choice], None)
    }

    /// The chunk with what stopped the completion (its last chunk).
    pub fn stopped_by(mut self, stop_reason: Option<StopReason>) -> Self {
        self.choices
            .iter_mut()
            .for_each(|c| c.stop_reason = stop_reason.clone());
        self
    }

    /// The usage-only chunk (`choices: []`) sent last when `include_usage` is set.
    pub fn usage(meta: &ResponseMeta, usage: Usage) -> Self {
        Self::with(meta, Vec::new(), Some(usage))
    }

    fn with(meta: &ResponseMeta, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Self {
        Self {
            id: format!("chatcmpl-{}", meta.request_id),
            object: "chat.completion.chunk",
            created: meta.created,
            model: meta.model.clone(),
            choices,
            usage,
        }
    }
}

/// A served model, as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCard {
    pub id: String,
    object: &'static str,
    pub created: u64,
    owned_by: &'static str,
    /// The context length (vLLM's extension of OpenAI's model object).
    pub max_model_len: usize,
}

impl ModelCard {
    pub fn new(id: String, created: u64, max_model_len: usize) -> Self {
        Self {
            id,
            object: "model",
            created,
            owned_by: OWNED_BY,
            max_model_len,
        }
    }
}

/// The answer to `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelList {
    object: &'static str,
    pub data: Vec<ModelCard>,
}

impl ModelList {
    pub fn new(data: Vec<ModelCard>) -> Self {
        Self {
            object: "list",
            data,
        }
    }
}

/// One server-sent event: `data: {json}` and a blank line. A value that cannot be written as
/// JSON becomes an error event instead, so a stream always stays well-formed.
pub fn sse_event(event: &impl Serialize) -> String {
    match serde_json::to_string(event) {
        Ok(json) => format!("data: {json}\n\n"),
        Err(error) => {
            let error = ApiError::internal(format!("A stream event could not be encoded: {error}"));
            format!("data: {}\n\n", error.to_json())
        }
    }
}

// ---------------------------------------------------------------------------------------------
