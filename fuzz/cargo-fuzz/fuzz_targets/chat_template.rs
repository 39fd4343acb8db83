//! Chat templates rendered as the gateway renders them, within the render budget.
//!
//! The input is split at NUL bytes. When the first part is a single byte below the number of
//! committed real templates, that template is rendered; otherwise the first part is the
//! template's own source. The parts after it are the messages, as role and content in turn.
//! Every render must end (the fuel budget sees to loops) with a prompt or an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moe_gateway::chat_template::{ChatTemplate, Message};

const REAL: [&str; 6] = [
    include_str!("../../../gateway/tests/data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja"),
    include_str!("../../../gateway/tests/data/chat_templates/qwen2-57b-a14b-instruct.jinja"),
    include_str!("../../../gateway/tests/data/chat_templates/qwen3-30b-a3b.jinja"),
    include_str!("../../../gateway/tests/data/chat_templates/olmoe-1b-7b-0924-instruct.jinja"),
    include_str!("../../../gateway/tests/data/chat_templates/deepseek-v3.jinja"),
    include_str!("../../../gateway/tests/data/chat_templates/glm-4.5.jinja"),
];

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split('\0');
    let first = parts.next().unwrap_or_default();
    let source = match first.as_bytes() {
        [index] if usize::from(*index) < REAL.len() => REAL[usize::from(*index)],
        _ => first,
    };
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<Message> = rest
        .chunks(2)
        .map(|pair| Message::new(pair[0], pair.get(1).copied().unwrap_or_default()))
        .collect();
    let Ok(template) = ChatTemplate::from_source(source, Some("<s>".into()), Some("</s>".into()))
    else {
        return;
    };
    let _ = template.render(&messages, bytes.len().is_multiple_of(2));
});
