//! The documents of the OpenAI-compatible HTTP API: request bodies and their validation into
//! typed sampling parameters, response bodies and stream chunks, and errors as OpenAI error JSON
//! with their HTTP status. Pure data: no IO, no HTTP framework; the server wraps it.
//!
//! Supported:
//!
//! * `POST /v1/completions` ([`CompletionRequest`]): `model`, `prompt` (a string, an array of
//!   token ids, or a batch: an array of those, [`Prompts`]), `max_tokens` (default 16),
//!   `temperature` (0..=2, default 1), `top_p` (0 < p <= 1, default 1), `seed`, `stop` (a string
//!   or up to four non-empty strings), `n` (prompts times `n` at most [`MAX_CHOICES`]; more
//!   than one choice without `stream` only), `stream`, `stream_options.include_usage`, `logprobs`
//!   (0..=20 alternatives per position), `echo` (text prompts; with `logprobs`, the prompt's
//!   tokens are scored too, the first with `null`; with `max_tokens` 0, only scored), and the
//!   extension `precision` (`"exact"` opts out of the link-aware precision downgrades, `"auto"`
//!   is the default).
//! * `POST /v1/chat/completions` ([`ChatCompletionRequest`]): `model`, `messages` (roles
//!   `system` (or `developer`, read as `system`), `user`, `assistant`, `tool`; content a string
//!   or an array of `{"type": "text", "text": ...}` parts, joined with newlines as vLLM does),
//!   `max_tokens` and `max_completion_tokens` (the latter wins; neither means "as many as
//!   fit"), the sampling fields above, `logprobs` (bool) with `top_logprobs` (0..=20), and
//!   `precision`.
//! * `POST /tokenize` and `POST /detokenize` ([`TokenizeRequest`], [`DetokenizeRequest`]):
//!   vLLM's shapes (see the `tokenize` module).
//! * Responses ([`Completion`], [`CompletionChunk`], [`ChatCompletion`],
//!   [`ChatCompletionChunk`], [`ModelList`]) in OpenAI's shapes, and server-sent-event framing
//!   ([`sse_event`], [`SSE_DONE`]).
//!
//! Refused with a 400 that names the field: streaming more than one choice, content parts other
//! than text, and the OpenAI and vLLM features this server does not implement when a request
//! actually asks for them (`UNIMPLEMENTED`: `tools`, `functions`, `tool_choice` other than
//! `none`/`auto`, `response_format` other than `text`, `best_of` above 1, a non-empty `suffix`,
//! vLLM's `guided_*`, `prompt_logprobs` and the like). Any other unknown field is ignored (kept in
//! `extra`): OpenAI clients send many.
//!
//! Errors use OpenAI's envelope, `{"error": {"message", "type", "param", "code"}}`, without the
//! top-level `"object": "error"` some vLLM versions add. The `"type"` follows vLLM: the name of
//! the OpenAI SDK's exception class for the status (`BadRequestError`, `AuthenticationError`,
//! `NotFoundError`, `InternalServerError`), or the status's reason phrase where the SDK has no
//! class of its own (`PayloadTooLargeError`, `ServiceUnavailableError`); see [`ErrorKind`].

use serde_json::Value;

/// `max_tokens` of a completion request that does not set it (OpenAI's default).
pub const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;
/// The most alternatives per position that `logprobs` / `top_logprobs` may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// The most stop sequences one request may give (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// The event that ends every stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";
/// `owned_by` of every model this server lists.
const OWNED_BY: &str = "moe-cluster";

/// Whether a field's (non-null) value leaves its feature unused.
type LeavesUnused = fn(&Value) -> bool;

/// OpenAI features, and vLLM's extra parameters, that a client may name and this server does not
/// implement, each with a test of the values that leave the feature unused (vLLM's
/// defaults): those (and null) pass, anything else is refused rather than silently ignored.
const UNIMPLEMENTED: [(&str, LeavesUnused); 18] = [
    ("tools", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("functions", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("tool_choice", |v| *v == "none" || *v == "auto"),
    ("response_format", |v| v["type"] == "text"),
    ("best_of", |v| *v == 1),
    ("suffix", |v| *v == ""),
    ("prompt_logprobs", |_| false),
    ("use_beam_search", |v| *v == false),
    ("length_penalty", |v| v.as_f64() == Some(1.0)),
    ("allowed_token_ids", |_| false),
    ("bad_words", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("guided_json", |_| false),
    ("guided_regex", |_| false),
    ("guided_choice", |_| false),
    ("guided_grammar", |_| false),
    ("skip_special_tokens", |v| *v == true),
    ("spaces_between_special_tokens", |v| *v == true),
    ("truncate_prompt_tokens", |_| false),
];

mod error;
mod request;
mod response;
#[cfg(test)]
mod tests;
mod tokenize;

pub use error::*;
pub use request::*;
pub use response::*;
pub use tokenize::*;
