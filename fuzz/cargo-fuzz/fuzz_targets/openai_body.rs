//! OpenAI request bodies: `/v1/completions` and `/v1/chat/completions` JSON, parsed and
//! validated as the gateway's HTTP API does before anything is tokenized.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moe_gateway::openai::{ChatCompletionRequest, CompletionRequest, Limits};

const LIMITS: Limits = Limits {
    max_tokens_limit: 4096,
    context_length: 8192,
};

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = CompletionRequest::from_json(body) {
        let _ = request.validate(&LIMITS);
    }
    if let Ok(request) = ChatCompletionRequest::from_json(body) {
        let _ = request.validate(&LIMITS);
    }
});
