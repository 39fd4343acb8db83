//! Request bodies and their validation into typed sampling parameters.

use std::collections::BTreeMap;

use moe_model::sampling::Shaping;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use super::*;

/// The server's bounds that validation checks requests against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most tokens one request may generate.
    pub max_tokens_limit: usize,
    /// The model's context length: prompt and completion tokens together.
    pub context_length: usize,
    /// Token ids run from 0 to this.
    pub vocab_size: usize,
}

/// A completion prompt: one text, or one sequence of token ids.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Value")]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl TryFrom<Value> for Prompt {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        const FORMS: &str = "prompt must be a string, an array of token ids, \
                             or an array holding exactly one of those";
        match value {
            Value::String(text) => Ok(Prompt::Text(text)),
            Value::Array(mut items) if items.len() == 1 && !items[0].is_number() => {
                match items.pop() {
                    Some(Value::String(text)) => Ok(Prompt::Text(text)),
                    Some(Value::Array(ids)) => token_ids(ids),
                    _ => Err(FORMS.to_owned()),
                }
            }
            Value::Array(items) => token_ids(items),
            _ => Err(FORMS.to_owned()),
        }
    }
}

/// The most choices one request asks for: prompts times `n`.
pub const MAX_CHOICES: usize = 64;

/// A completion request's prompts: one (as [`Prompt`] reads it), or a batch (an array of
/// strings or of token-id arrays, at most [`MAX_CHOICES`]), each completed on its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Value")]
pub struct Prompts(pub Vec<Prompt>);

impl TryFrom<Value> for Prompts {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::Array(items)
                if items.len() > 1 && items.iter().all(|i| i.is_string() || i.is_array()) =>
            {
                if items.len() > MAX_CHOICES {
                    let n = items.len();
                    return Err(format!(
                        "a batch holds at most {MAX_CHOICES} prompts, got {n}"
                    ));
                }
                let one = |item: Value| match item {
                    Value::Array(ids) => token_ids(ids),
                    other => Prompt::try_from(other),
                };
                items
                    .into_iter()
                    .map(one)
                    .collect::<Result<_, _>>()
                    .map(Prompts)
            }
            other => Prompt::try_from(other).map(|p| Prompts(vec![p])),
        }
    }
}

fn token_ids(items: Vec<Value>) -> Result<Prompt, String> {
    if items.is_empty() {
        return Err("prompt must not be empty".to_owned());
    }
    items
        .iter()
        .map(|item| item.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<Vec<u32>>>()
        .map(Prompt::Tokens)
        .ok_or_else(|| format!("token ids must be integers between 0 and {}", u32::MAX))
}

/// The author of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[serde(alias = "developer")]
    System,
    User,
    Assistant,
    Tool,
}

/// One chat message, its content reduced to text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    /// The content string, or the text parts joined with `\n`; absent or null content is empty.
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

fn content_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| D::Error::custom("a text content part needs a string `text`")),
                Some(other) => Err(D::Error::custom(format!(
                    "only text content is supported, not `{other}` parts"
                ))),
                None => Err(D::Error::custom("a content part needs a `type`")),
            })
            .collect::<Result<Vec<&str>, _>>()
            .map(|texts| texts.join("\n")),
        _ => Err(D::Error::custom(
            "message content must be a string or an array of content parts",
        )),
    }
}

/// `stop`: null, one string, or an array of strings.
fn stop_strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(Vec::new()),
        Value::String(stop) => Ok(vec![stop]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(stop) => Ok(stop),
                _ => Err(D::Error::custom("stop sequences must be strings")),
            })
            .collect(),
        _ => Err(D::Error::custom(
            "stop must be a string or an array of strings",
        )),
    }
}

/// How exactly the experts are computed for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every expert at full precision: no link-aware downgrades, for determinism.
    Exact,
    /// The gateway may run unimportant expert pairs at low precision when a link is saturated.
    #[default]
    Auto,
}

/// `stream_options` of a streaming request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage and no choices before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// The body of `POST /v1/completions`, as sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompts,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    #[serde(flatten)]
    pub filters: Filters,
    pub seed: Option<u64>,
    #[serde(default, deserialize_with = "stop_strings")]
    pub stop: Vec<String>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub precision: Option<Precision>,
    /// Fields this server does not read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of `POST /v1/chat/completions`, as sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    #[serde(flatten)]
    pub filters: Filters,
    pub seed: Option<u64>,
    #[serde(default, deserialize_with = "stop_strings")]
    pub stop: Vec<String>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub precision: Option<Precision>,
    /// Fields this server does not read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// vLLM's sampling parameters beyond OpenAI's, as sent (both endpoints).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Filters {
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub include_stop_str_in_output: Option<bool>,
    /// OpenAI's: token ids (as strings) to a bias added to their logits.
    pub logit_bias: Option<BTreeMap<String, f64>>,
}

/// When generation may end, beyond `max_tokens` and the stop strings (vLLM's rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// Neither an end-of-sequence token, a stop token nor a stop string ends generation before
    /// this many tokens: those tokens cannot be sampled until then.
    pub min_tokens: usize,
    /// End-of-sequence tokens do not end generation (they are generated like any other).
    pub ignore_eos: bool,
    /// More tokens that end generation as an end-of-sequence token does.
    pub stop_token_ids: Vec<u32>,
    /// A stop string that ends generation stays in the text.
    pub include_stop_str: bool,
}

impl Filters {
    /// The ending rules, checked against vLLM's ranges and `max_tokens` where it is known,
    /// with vLLM's messages.
    fn ending(&self, max_tokens: Option<usize>) -> Result<Ending, ApiError> {
        let min_tokens = match self.min_tokens {
            None => 0,
            Some(n) if n < 0 => {
                return Err(ApiError::bad_request(
                    "min_tokens",
                    format!("min_tokens must be greater than or equal to 0, got {n}."),
                ));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        if let Some(max) = max_tokens
            && min_tokens > max
        {
            return Err(ApiError::bad_request(
                "min_tokens",
                format!(
                    "min_tokens must be less than or equal to max_tokens={max}, got {min_tokens}."
                ),
            ));
        }
        Ok(Ending {
            min_tokens,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            include_stop_str: self.include_stop_str_in_output.unwrap_or(false),
        })
    }

    /// `logit_bias` as token ids and biases: ids within `vocab_size`, biases within OpenAI's
    /// [-100, 100].
    fn logit_bias(&self, vocab_size: usize) -> Result<Vec<(u32, f32)>, ApiError> {
        let bad = |message: String| ApiError::bad_request("logit_bias", message);
        let mut bias = Vec::new();
        let mut outside = Vec::new();
        for (key, &value) in self.logit_bias.iter().flatten() {
            let id: u32 = key
                .parse()
                .map_err(|_| bad(format!("logit_bias keys must be token ids, got {key:?}.")))?;
            if !(-100.0..=100.0).contains(&value) {
                return Err(bad(format!(
                    "logit_bias values must be between -100 and 100, got {value} for token {id}."
                )));
            }
            if id as usize >= vocab_size {
                outside.push(id);
            }
            bias.push((id, value as f32));
        }
        bias.sort_by_key(|&(id, _)| id);
        outside.sort_unstable();
        if !outside.is_empty() {
            return Err(bad(format!(
                "token_id(s) {outside:?} in logit_bias contain out-of-vocab token ids. \
                 Vocabulary size: {vocab_size}"
            )));
        }
        Ok(bias)
    }

    /// Checks each against vLLM's range, with vLLM's messages.
    fn validate(&self, vocab_size: usize) -> Result<Shaping, ApiError> {
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k >= 1 => usize::try_from(k).unwrap_or(usize::MAX),
            Some(k) => {
                return Err(ApiError::bad_request(
                    "top_k",
                    format!("top_k must be -1 (disable), 0 (disable) or at least 1, got {k}."),
                ));
            }
        };
        let min_p = self.min_p.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(ApiError::bad_request(
                "min_p",
                format!("min_p must be in [0, 1], got {min_p}."),
            ));
        }
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty.is_finite()) {
            return Err(ApiError::bad_request(
                "repetition_penalty",
                format!("repetition_penalty must be greater than zero, got {repetition_penalty}."),
            ));
        }
        let penalty = |field: &str, value: Option<f64>| {
            let value = value.unwrap_or(0.0);
            if (-2.0..=2.0).contains(&value) {
                Ok(value as f32)
            } else {
                Err(ApiError::bad_request(
                    field,
                    format!("{field} must be in [-2, 2], got {value}."),
                ))
            }
        };
        Ok(Shaping {
            top_k,
            min_p: min_p as f32,
            repetition_penalty: repetition_penalty as f32,
            presence_penalty: penalty("presence_penalty", self.presence_penalty)?,
            frequency_penalty: penalty("frequency_penalty", self.frequency_penalty)?,
            logit_bias: self.logit_bias(vocab_size)?,
        })
    }
}

/// How a validated request is to be sampled and delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// The most tokens to generate; `None` (chat only) means as many as the context leaves,
    /// resolved by [`check_context`] once the prompt is tokenized.
    pub max_tokens: Option<usize>,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// vLLM's filters and penalties.
    pub shaping: Shaping,
    /// vLLM's ending rules.
    pub ending: Ending,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// Report each sampled token's log-probability with this many alternatives; `None` reports
    /// none.
    pub logprobs: Option<usize>,
    /// Return the prompt before the completion (completions only).
    pub echo: bool,
    pub precision: Precision,
    pub stream: bool,
    /// Streaming only: end the stream with a usage chunk.
    pub include_usage: bool,
    /// Choices per prompt, each sampled on its own.
    pub n: usize,
}

/// A request that passed validation: its model name, its input (a [`Prompt`] or the chat
/// messages) and its sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated<I> {
    pub model: String,
    pub input: I,
    pub params: SamplingParams,
}

impl CompletionRequest {
    /// Parses a request body; every failure is a 400 naming the field at fault where there is one.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        parse_body(body, || {
            Map::from_iter([("model".into(), json!("")), ("prompt".into(), json!(""))])
        })
    }

    /// Checks every field against OpenAI's ranges and `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<Validated<Vec<Prompt>>, ApiError> {
        let max_tokens = match self.max_tokens {
            None => DEFAULT_COMPLETION_MAX_TOKENS.min(limits.max_tokens_limit),
            // Prompt scoring, as vLLM allows it: the echoed prompt (with its log-probabilities
            // when asked) and nothing generated.
            Some(0) if self.echo == Some(true) => 0,
            Some(n) => check_max_tokens("max_tokens", n, limits)?,
        };
        let logprobs = self
            .logprobs
            .map(|k| check_top_logprobs("logprobs", k))
            .transpose()?;
        let params = Knobs {
            max_tokens: Some(max_tokens),
            vocab_size: limits.vocab_size,
            temperature: self.temperature,
            top_p: self.top_p,
            filters: &self.filters,
            seed: self.seed,
            stop: &self.stop,
            n: self.n,
            stream: self.stream,
            stream_options: self.stream_options,
            logprobs,
            echo: self.echo.unwrap_or(false),
            precision: self.precision,
            extra: &self.extra,
        }
        .validate()?;
        let prompts = self.prompt.0.len();
        if prompts * params.n > MAX_CHOICES {
            let why = format!(
                "prompts times n must be at most {MAX_CHOICES}, got {prompts} x {}.",
                params.n
            );
            return Err(ApiError::bad_request("n", why));
        }
        if prompts > 1 && params.stream {
            let why = "A batch of prompts is served without stream only.";
            return Err(ApiError::bad_request("prompt", why));
        }
        Ok(Validated {
            model: self.model.clone(),
            input: self.prompt.0.clone(),
            params,
        })
    }
}

impl ChatCompletionRequest {
    /// Parses a request body; every failure is a 400 naming the field at fault where there is one.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        parse_body(body, || {
            Map::from_iter([("model".into(), json!("")), ("messages".into(), json!([]))])
        })
    }

    /// Checks every field against OpenAI's ranges and `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<Validated<Vec<ChatMessage>>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request(
                "messages",
                "messages must hold at least one message.",
            ));
        }
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(n), _) => Some(check_max_tokens("max_completion_tokens", n, limits)?),
            (None, Some(n)) => Some(check_max_tokens("max_tokens", n, limits)?),
            (None, None) => None,
        };
        let top_logprobs = self
            .top_logprobs
            .map(|k| check_top_logprobs("top_logprobs", k))
            .transpose()?;
        let logprobs = match (self.logprobs.unwrap_or(false), top_logprobs) {
            (true, top) => Some(top.unwrap_or(0)),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ApiError::bad_request(
                    "top_logprobs",
                    "top_logprobs requires logprobs to be true.",
                ));
            }
        };
        let params = Knobs {
            max_tokens,
            vocab_size: limits.vocab_size,
            temperature: self.temperature,
            top_p: self.top_p,
            filters: &self.filters,
            seed: self.seed,
            stop: &self.stop,
            n: self.n,
            stream: self.stream,
            stream_options: self.stream_options,
            logprobs,
            echo: false,
            precision: self.precision,
            extra: &self.extra,
        }
        .validate()?;
        Ok(Validated {
            model: self.model.clone(),
            input: self.messages.clone(),
            params,
        })
    }
}

/// The fields both endpoints share, gathered for one validation.
struct Knobs<'a> {
    max_tokens: Option<usize>,
    vocab_size: usize,
    temperature: Option<f64>,
    top_p: Option<f64>,
    filters: &'a Filters,
    seed: Option<u64>,
    stop: &'a [String],
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    logprobs: Option<usize>,
    echo: bool,
    precision: Option<Precision>,
    extra: &'a Map<String, Value>,
}

impl Knobs<'_> {
    fn validate(self) -> Result<SamplingParams, ApiError> {
        for (field, leaves_unused) in UNIMPLEMENTED {
            if let Some(value) = self.extra.get(field)
                && !value.is_null()
                && !leaves_unused(value)
            {
                return Err(ApiError::bad_request(
                    field,
                    format!("`{field}` is not supported by this server."),
                ));
            }
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(
                "temperature",
                format!("temperature must be between 0 and 2, got {temperature}."),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(
                "top_p",
                format!("top_p must be greater than 0 and at most 1, got {top_p}."),
            ));
        }
        let shaping = self.filters.validate(self.vocab_size)?;
        let ending = self.filters.ending(self.max_tokens)?;
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_CHOICES as i64).contains(&n) {
            return Err(ApiError::bad_request(
                "n",
                format!("n must be between 1 and {MAX_CHOICES}, got {n}."),
            ));
        }
        if n > 1 && self.stream == Some(true) {
            let why = "n above 1 is served without stream only.";
            return Err(ApiError::bad_request("n", why));
        }
        if self.stop.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::bad_request(
                "stop",
                format!(
                    "stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {}.",
                    self.stop.len()
                ),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_request(
                "stop",
                "stop sequences must not be empty.",
            ));
        }
        let stream = self.stream.unwrap_or(false);
        let include_usage = match self.stream_options {
            None => false,
            Some(_) if !stream => {
                return Err(ApiError::bad_request(
                    "stream_options",
                    "stream_options is only allowed when stream is true.",
                ));
            }
            Some(options) => options.include_usage.unwrap_or(false),
        };
        Ok(SamplingParams {
            max_tokens: self.max_tokens,
            temperature: temperature as f32,
            top_p: top_p as f32,
            shaping,
            ending,
            seed: self.seed,
            stop: self.stop.to_vec(),
            logprobs: self.logprobs,
            echo: self.echo,
            precision: self.precision.unwrap_or_default(),
            stream,
            include_usage,
            n: n as usize,
        })
    }
}

fn check_max_tokens(param: &str, n: i64, limits: &Limits) -> Result<usize, ApiError> {
    match usize::try_from(n) {
        Ok(n) if n >= 1 && n <= limits.max_tokens_limit => Ok(n),
        _ if n < 1 => Err(ApiError::bad_request(
            param,
            format!("{param} must be at least 1, got {n}."),
        )),
        _ => Err(ApiError::bad_request(
            param,
            format!(
                "{param} must be at most {}, got {n}.",
                limits.max_tokens_limit
            ),
        )),
    }
}

fn check_top_logprobs(param: &str, k: i64) -> Result<usize, ApiError> {
    usize::try_from(k)
        .ok()
        .filter(|&k| k <= MAX_TOP_LOGPROBS)
        .ok_or_else(|| {
            ApiError::bad_request(
                param,
                format!("{param} must be between 0 and {MAX_TOP_LOGPROBS}, got {k}."),
            )
        })
}

/// Parses a JSON request body into `T`, answering every failure with a 400:
///
/// * not JSON: the parser's message, with its line and column, and no `param`;
/// * not an object: says so;
/// * a required field missing: names it;
/// * a field of the wrong type or form: names the field and gives serde's reason. serde reports
///   only the reason, so each field is tried alone within `skeleton`, a valid body made of the
///   required fields, to find which one it is.
pub(super) fn parse_body<T: DeserializeOwned>(
    body: &[u8],
    skeleton: fn() -> Map<String, Value>,
) -> Result<T, ApiError> {
    let error = match serde_json::from_slice(body) {
        Ok(request) => return Ok(request),
        Err(error) => error,
    };
    if !error.is_data() {
        return Err(ApiError::malformed_body(format!(
            "The request body is not valid JSON: {error}"
        )));
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::malformed_body(
            "The request body must be a JSON object.",
        ));
    };
    let required = skeleton();
    if let Some(missing) = required.keys().find(|name| !fields.contains_key(*name)) {
        return Err(ApiError::bad_request(
            missing,
            format!("Missing required field `{missing}`."),
        ));
    }
    for (name, value) in fields {
        let mut alone = required.clone();
        alone.insert(name.clone(), value);
        if let Err(reason) = serde_json::from_value::<T>(Value::Object(alone)) {
            return Err(ApiError::bad_request(
                &name,
                format!("Invalid `{name}`: {reason}."),
            ));
        }
    }
    Err(ApiError::malformed_body(format!(
        "Invalid request body: {error}"
    )))
}

/// Which request field holds the input; context-length errors name it as their `param`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputField {
    Prompt,
    Messages,
}

/// Checks that a prompt of `prompt_tokens` tokens and the completion fit the context, and
/// returns how many tokens may be generated: `max_tokens` itself, or when the request set none,
/// what the context leaves, capped at `limits.max_tokens_limit`.
///
/// The refusal is vLLM's (`OpenAIServing._validate_input` in
/// `vllm/entrypoints/openai/serving_engine.py`), word for word, so that clients which recognise
/// it keep working: "This model's maximum context length is {context} tokens. However, you
/// requested {prompt + max} tokens ({prompt} in the messages, {max} in the completion). Please
/// reduce the length of the messages or completion." When no `max_tokens` was set and the prompt
/// alone fills the context, vLLM's shorter message is used, with its stray comma made a period.
pub fn check_context(
    input: InputField,
    prompt_tokens: usize,
    max_tokens: Option<usize>,
    limits: &Limits,
) -> Result<usize, ApiError> {
    let context = limits.context_length;
    let param = match input {
        InputField::Prompt => "prompt",
        InputField::Messages => "messages",
    };
    match max_tokens {
        Some(max) if prompt_tokens.saturating_add(max) <= context => Ok(max),
        Some(max) => Err(ApiError::bad_request(
            param,
            format!(
                "This model's maximum context length is {context} tokens. However, you \
                 requested {} tokens ({prompt_tokens} in the messages, {max} in the \
                 completion). Please reduce the length of the messages or completion.",
                prompt_tokens.saturating_add(max)
            ),
        )),
        None if prompt_tokens < context => {
            Ok((context - prompt_tokens).min(limits.max_tokens_limit))
        }
        None => Err(ApiError::bad_request(
            param,
            format!(
                "This model's maximum context length is {context} tokens. However, you \
                 requested {prompt_tokens} tokens in the messages. Please reduce the length \
                 of the messages."
            ),
        )),
    }
}
