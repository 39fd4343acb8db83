//! vLLM's `/tokenize` and `/detokenize` bodies: a prompt, or chat messages rendered by the
//! model's chat template, to token ids; token ids back to text.
//!
//! `/tokenize` takes `prompt` or `messages` (exactly one), `model` (optional, checked when
//! given) and `add_special_tokens` (default true: what a completion or chat request is fed).
//! With `messages`, `add_generation_prompt` may only be true (the chat completions' rendering)
//! and `return_token_strs` may only be false; other values are refused with a 400 naming them.
//! It answers `{"count", "max_model_len", "tokens", "token_strs": null}`. `/detokenize` takes
//! `tokens` (each within the vocabulary) and `model`, and answers `{"prompt"}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::{ChatMessage, parse_body};

/// What `/tokenize` tokenizes.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizeInput {
    Prompt(String),
    Messages(Vec<ChatMessage>),
}

/// A `/tokenize` body.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    add_special_tokens: Option<bool>,
    #[serde(default)]
    add_generation_prompt: Option<bool>,
    #[serde(default)]
    return_token_strs: Option<bool>,
    /// Fields this server does not read (vLLM's clients send more), ignored.
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

impl TokenizeRequest {
    /// Parses a body; a failure is a 400 naming the field at fault.
    pub fn from_json(body: &[u8]) -> Result<TokenizeRequest, ApiError> {
        parse_body(body, Map::new)
    }

    /// The input and whether the tokenizer adds its special tokens, or a 400 naming the field.
    pub fn validate(self) -> Result<(TokenizeInput, bool), ApiError> {
        let special = self.add_special_tokens.unwrap_or(true);
        if self.return_token_strs == Some(true) {
            let why = "return_token_strs is not supported; only false is accepted.";
            return Err(ApiError::bad_request("return_token_strs", why));
        }
        let input = match (self.prompt, self.messages) {
            (Some(prompt), None) => TokenizeInput::Prompt(prompt),
            (None, Some(_)) if self.add_generation_prompt == Some(false) => {
                let why = "Only add_generation_prompt true is supported: the messages are \
                           rendered as a chat completion renders them.";
                return Err(ApiError::bad_request("add_generation_prompt", why));
            }
            (None, Some(messages)) if messages.is_empty() => {
                let why = "messages must hold at least one message.";
                return Err(ApiError::bad_request("messages", why));
            }
            (None, Some(messages)) => TokenizeInput::Messages(messages),
            (Some(_), Some(_)) => {
                let why = "Give either prompt or messages, not both.";
                return Err(ApiError::bad_request("messages", why));
            }
            (None, None) => {
                let why = "Missing required field `prompt` (or `messages`).";
                return Err(ApiError::bad_request("prompt", why));
            }
        };
        Ok((input, special))
    }
}

/// `/tokenize`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    pub token_strs: Option<Vec<String>>,
}

impl TokenizeResponse {
    pub fn new(tokens: Vec<u32>, max_model_len: usize) -> TokenizeResponse {
        TokenizeResponse {
            count: tokens.len(),
            max_model_len,
            tokens,
            token_strs: None,
        }
    }
}

/// A `/detokenize` body.
#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    tokens: Vec<u32>,
    #[serde(flatten)]
    _extra: Map<String, Value>,
}

impl DetokenizeRequest {
    /// Parses a body; a failure is a 400 naming the field at fault.
    pub fn from_json(body: &[u8]) -> Result<DetokenizeRequest, ApiError> {
        parse_body(body, || {
            Map::from_iter([("tokens".into(), Value::Array(Vec::new()))])
        })
    }

    /// The token ids, each checked against a vocabulary of `vocab_size`.
    pub fn validate(self, vocab_size: usize) -> Result<Vec<u32>, ApiError> {
        if let Some(bad) = self.tokens.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(ApiError::bad_request(
                "tokens",
                format!("Token id {bad} is out of range for a vocabulary of {vocab_size}."),
            ));
        }
        Ok(self.tokens)
    }
}

/// `/detokenize`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenize(body: &str) -> Result<(TokenizeInput, bool), ApiError> {
        TokenizeRequest::from_json(body.as_bytes())?.validate()
    }

    fn param(error: ApiError) -> Option<String> {
        error.to_json()["error"]["param"].as_str().map(String::from)
    }

    #[test]
    fn a_prompt_or_messages_are_tokenized_with_special_tokens_unless_told() {
        let (input, special) = tokenize(r#"{"prompt": "Hello"}"#).unwrap();
        assert_eq!(
            (input, special),
            (TokenizeInput::Prompt("Hello".into()), true)
        );
        let plain = r#"{"model": "m", "prompt": "Hi", "add_special_tokens": false, "x": 1}"#;
        assert!(!tokenize(plain).unwrap().1);
        let chat = r#"{"messages": [{"role": "user", "content": "Hi"}]}"#;
        let (input, _) = tokenize(chat).unwrap();
        assert!(matches!(input, TokenizeInput::Messages(m) if m.len() == 1));
        let response = TokenizeResponse::new(vec![1, 5, 9], 4096);
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"count": 3, "max_model_len": 4096, "tokens": [1, 5, 9],
                               "token_strs": null})
        );
    }

    #[test]
    fn what_is_not_done_is_refused_naming_the_field() {
        let refused = |body: &str| param(tokenize(body).unwrap_err());
        assert_eq!(refused(r#"{}"#).as_deref(), Some("prompt"));
        assert_eq!(refused(r#"{"prompt": 7}"#).as_deref(), Some("prompt"));
        let both = r#"{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}"#;
        assert_eq!(refused(both).as_deref(), Some("messages"));
        assert_eq!(refused(r#"{"messages": []}"#).as_deref(), Some("messages"));
        let no_prompt = r#"{"messages": [{"role": "user", "content": "b"}],
                             "add_generation_prompt": false}"#;
        assert_eq!(refused(no_prompt).as_deref(), Some("add_generation_prompt"));
        let strs = r#"{"prompt": "a", "return_token_strs": true}"#;
        assert_eq!(refused(strs).as_deref(), Some("return_token_strs"));
    }

    #[test]
    fn detokenize_checks_each_id_against_the_vocabulary() {
        let parse = |body: &str| DetokenizeRequest::from_json(body.as_bytes());
        let ids = parse(r#"{"tokens": [1, 2, 3]}"#)
            .unwrap()
            .validate(10)
            .unwrap();
        assert_eq!(ids, [1, 2, 3]);
        let out_of_range = parse(r#"{"tokens": [1, 12]}"#).unwrap().validate(10);
        let error = out_of_range.unwrap_err();
        assert_eq!(param(error.clone()).as_deref(), Some("tokens"));
        assert!(error.to_string().contains("12"), "{error}");
        assert_eq!(param(parse("{}").unwrap_err()).as_deref(), Some("tokens"));
        assert_eq!(
            param(parse(r#"{"tokens": ["a"]}"#).unwrap_err()).as_deref(),
            Some("tokens")
        );
    }
}
