//! Renders the chat templates of the served model families (see
//! `tests/data/chat_templates/README.md`) and compares the prompts with the exact text
//! `transformers`' `apply_chat_template(..., tokenize=False)` produces; also loads templates
//! from checkpoint directories the way `transformers` does, and refuses hostile templates.
//!
//! Where the DeepSeek-V3 and GLM-4.5 templates come from:
//!
//! * `deepseek-v3.jinja`: repository huggingface/huggingface.js, path
//!   `packages/ollama-utils/src/chat-template-automap.ts`, the `gguf` template of the entry
//!   `library/deepseek-v3:671b` (the template of deepseek-ai/DeepSeek-V3's
//!   `tokenizer_config.json` as its GGUF conversion carries it), copied character for character.
//! * `glm-4.5.jinja`: the GGUF template of ubergarm/GLM-4.5-GGUF as llama-server printed it in
//!   the log of issue #809 of repository ikawrakow/ik_llama.cpp, with the one replacement that
//!   repository ggml-org/llama.cpp's `convert_hf_to_gguf.py` made in GLM-4.5's template
//!   (`# Patch broken chat template`, added in commit ef0144c08, removed in 662192e1d) undone.
//!   The result equals ggml-org/llama.cpp's `models/templates/GLM-4.6.jinja` but for the lines
//!   on tool-call arguments that GLM-4.6 changed.
//!
//! The expected prompts of both were rendered with Python's jinja2 3.1 configured as
//! `transformers` configures it (sandboxed, `trim_blocks`, `lstrip_blocks`, `loopcontrols`,
//! `raise_exception`, `strftime_now` and `json.dumps` as `tojson`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moe_gateway::chat_template::{ChatTemplate, Message, RenderBudget, TemplateError};

const MIXTRAL: &str = include_str!("data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja");
const QWEN2: &str = include_str!("data/chat_templates/qwen2-57b-a14b-instruct.jinja");
const QWEN3: &str = include_str!("data/chat_templates/qwen3-30b-a3b.jinja");
const OLMOE: &str = include_str!("data/chat_templates/olmoe-1b-7b-0924-instruct.jinja");
const DEEPSEEK_V3: &str = include_str!("data/chat_templates/deepseek-v3.jinja");
const GLM_4_5: &str = include_str!("data/chat_templates/glm-4.5.jinja");
const GPT_OSS: &str = include_str!("data/chat_templates/gpt-oss.jinja");

const DEEPSEEK_BOS: &str = "<｜begin▁of▁sentence｜>";
const DEEPSEEK_EOS: &str = "<｜end▁of▁sentence｜>";

const MIXTRAL_ALTERNATION: &str = "After the optional system message, conversation roles must \
                                   alternate user/assistant/user/assistant/...";

fn template(source: &str, bos: Option<&str>, eos: Option<&str>) -> ChatTemplate {
    ChatTemplate::from_source(source, bos.map(str::to_owned), eos.map(str::to_owned))
        .expect("the template compiles")
}

fn mixtral() -> ChatTemplate {
    template(MIXTRAL, Some("<s>"), Some("</s>"))
}

/// A user question, the answer, and a follow-up question.
fn follow_up() -> Vec<Message> {
    vec![
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4."),
        Message::new("user", "And 3+3?"),
    ]
}

/// Both renderings, with and without the generation prompt.
fn both(template: &ChatTemplate, messages: &[Message]) -> (String, String) {
    (
        template.render(messages, true).expect("renders"),
        template.render(messages, false).expect("renders"),
    )
}

#[test]
fn mixtral_wraps_user_turns_in_inst_and_closes_answers_with_eos() {
    // Every tag strips the whitespace before it (`{%-`, `{{-`) and trim_blocks drops the
    // newline after it, so only the spaces inside the string literals remain: each turn opens
    // with ' [INST] ' (a space after the BOS) and each answer starts with a space. The template
    // has no generation prompt: the prompt already ends with ' [/INST]'.
    let expected = "<s> [INST] What is 2+2? [/INST] 4.</s> [INST] And 3+3? [/INST]";
    let (with_prompt, without_prompt) = both(&mixtral(), &follow_up());
    assert_eq!(with_prompt, expected);
    assert_eq!(without_prompt, expected);
}

#[test]
fn mixtral_puts_the_system_message_into_the_first_turn() {
    let messages = [
        Message::new("system", "Answer briefly."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4."),
    ];
    let (with_prompt, without_prompt) = both(&mixtral(), &messages);
    assert_eq!(
        with_prompt,
        "<s> [INST] Answer briefly.\n\nWhat is 2+2? [/INST] 4.</s>"
    );
    assert_eq!(without_prompt, with_prompt);
}

#[test]
fn mixtral_rejects_two_user_messages_in_a_row_with_its_own_message() {
    let messages = [
        Message::new("user", "What is 2+2?"),
        Message::new("user", "And 3+3?"),
    ];
    let err = mixtral().render(&messages, true).unwrap_err();
    assert!(
        matches!(&err, TemplateError::Raised(message) if message == MIXTRAL_ALTERNATION),
        "{err:?}"
    );
}

#[test]
fn mixtral_rejects_roles_it_does_not_know() {
    let messages = [
        Message::new("user", "What is 2+2?"),
        Message::new("tool", "4"),
    ];
    let err = mixtral().render(&messages, true).unwrap_err();
    assert!(
        matches!(err, TemplateError::Raised(message) if message.starts_with("Only user and assistant roles are supported"))
    );
}

#[test]
fn qwen2_adds_a_default_system_prompt_and_opens_the_assistant_turn() {
    let qwen2 = template(QWEN2, None, Some("<|im_end|>"));
    let conversation = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
                        <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                        <|im_start|>assistant\n4.<|im_end|>\n\
                        <|im_start|>user\nAnd 3+3?<|im_end|>\n";
    let (with_prompt, without_prompt) = both(&qwen2, &follow_up());
    assert_eq!(
        with_prompt,
        format!("{conversation}<|im_start|>assistant\n")
    );
    assert_eq!(without_prompt, conversation);
}

#[test]
fn qwen2_keeps_a_given_system_message() {
    let qwen2 = template(QWEN2, None, Some("<|im_end|>"));
    let messages = [
        Message::new("system", "Answer briefly."),
        Message::new("user", "What is 2+2?"),
    ];
    assert_eq!(
        qwen2.render(&messages, true).unwrap(),
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn qwen3_keeps_the_reasoning_of_the_answer_to_the_last_question() {
    let qwen3 = template(QWEN3, None, Some("<|im_end|>"));
    let messages = [
        Message::new("system", "Answer briefly."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "<think>\nSimple arithmetic.\n</think>\n\n4."),
    ];
    // The system message is written before the loop (the loop skips it as `loop.first`). The
    // answer comes after the last user message (index 2 > last_query_index 1), so it is
    // rebuilt as '<think>\n' + reasoning + '\n</think>\n\n' + answer, where the reasoning is the
    // text between the tags stripped of newlines and the answer is stripped of leading ones.
    let conversation = "<|im_start|>system\nAnswer briefly.<|im_end|>\n\
                        <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                        <|im_start|>assistant\n<think>\nSimple arithmetic.\n</think>\n\n4.<|im_end|>\n";
    let (with_prompt, without_prompt) = both(&qwen3, &messages);
    // `enable_thinking` is undefined, so no empty think block follows the generation prompt.
    assert_eq!(
        with_prompt,
        format!("{conversation}<|im_start|>assistant\n")
    );
    assert_eq!(without_prompt, conversation);
}

#[test]
fn qwen3_drops_the_reasoning_of_earlier_answers() {
    let qwen3 = template(QWEN3, None, Some("<|im_end|>"));
    let messages = [
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "<think>\nSimple arithmetic.\n</think>\n\n4."),
        Message::new("user", "And 3+3?"),
    ];
    // Walking the messages backwards (`messages[::-1]`) finds the last user message at index 2;
    // the answer at index 1 comes before it and keeps only the text after '</think>'.
    let conversation = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                        <|im_start|>assistant\n4.<|im_end|>\n\
                        <|im_start|>user\nAnd 3+3?<|im_end|>\n";
    let (with_prompt, without_prompt) = both(&qwen3, &messages);
    assert_eq!(
        with_prompt,
        format!("{conversation}<|im_start|>assistant\n")
    );
    assert_eq!(without_prompt, conversation);
}

#[test]
fn qwen3_gives_a_final_answer_without_reasoning_an_empty_think_block() {
    let qwen3 = template(QWEN3, None, Some("<|im_end|>"));
    let messages = [
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4."),
    ];
    // The last answer is always written with a think block; with no reasoning it is
    // '<think>\n' + '' + '\n</think>\n\n'.
    assert_eq!(
        qwen3.render(&messages, false).unwrap(),
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n<think>\n\n</think>\n\n4.<|im_end|>\n"
    );
}

#[test]
fn olmoe_writes_tulu_turns() {
    // The tags are on lines of their own without `-`: trim_blocks drops the newline after each
    // `{% ... %}`, but the newline after each `{{ ... }}` is template text and stays. So every
    // turn ends with a newline (after the EOS for answers) and the generation prompt is
    // '<|assistant|>' plus that newline. `bos_token` is undefined here and prints nothing.
    let olmoe = template(OLMOE, None, Some("<|endoftext|>"));
    let conversation = "<|user|>\nWhat is 2+2?\n\
                        <|assistant|>\n4.<|endoftext|>\n\
                        <|user|>\nAnd 3+3?\n";
    let (with_prompt, without_prompt) = both(&olmoe, &follow_up());
    assert_eq!(with_prompt, format!("{conversation}<|assistant|>\n"));
    assert_eq!(without_prompt, conversation);
}

#[test]
fn olmoe_writes_the_bos_token_and_a_system_turn() {
    let olmoe = template(OLMOE, Some("<|endoftext|>"), Some("<|endoftext|>"));
    let messages = [
        Message::new("system", "Answer briefly."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4."),
    ];
    let (with_prompt, without_prompt) = both(&olmoe, &messages);
    let conversation = "<|endoftext|><|system|>\nAnswer briefly.\n\
                        <|user|>\nWhat is 2+2?\n\
                        <|assistant|>\n4.<|endoftext|>\n";
    assert_eq!(with_prompt, format!("{conversation}<|assistant|>\n"));
    assert_eq!(without_prompt, conversation);
}

fn deepseek_v3() -> ChatTemplate {
    template(DEEPSEEK_V3, Some(DEEPSEEK_BOS), Some(DEEPSEEK_EOS))
}

#[test]
fn deepseek_v3_puts_the_system_prompt_after_the_bos_and_opens_the_assistant_turn() {
    // The system messages are gathered first and written right after the BOS, with no role
    // tag; every answer ends with the EOS; the generation prompt is the bare assistant tag.
    let conversation = "<｜begin▁of▁sentence｜>Answer briefly.\
                        <｜User｜>What is 2+2?<｜Assistant｜>4.<｜end▁of▁sentence｜>\
                        <｜User｜>And 3+3?";
    let (with_prompt, without_prompt) = both(&deepseek_v3(), &four_messages());
    assert_eq!(with_prompt, format!("{conversation}<｜Assistant｜>"));
    assert_eq!(without_prompt, conversation);
}

#[test]
fn deepseek_v3_joins_system_messages_with_a_blank_line() {
    // The template's '\n\n' between system messages is a line break inside a string literal.
    let messages = [
        Message::new("system", "A."),
        Message::new("system", "B."),
        Message::new("user", "Hi"),
    ];
    assert_eq!(
        deepseek_v3().render(&messages, true).unwrap(),
        "<｜begin▁of▁sentence｜>A.\n\nB.<｜User｜>Hi<｜Assistant｜>"
    );
}

fn glm_4_5() -> ChatTemplate {
    // GLM-4.5's tokenizer has no BOS; the template writes its own `[gMASK]<sop>` prefix.
    template(GLM_4_5, None, Some("<|endoftext|>"))
}

#[test]
fn glm_4_5_gives_every_earlier_answer_an_empty_think_block() {
    // Each role tag is followed by a newline (template text after `-%}` on the tag's line is
    // kept up to the next `{{`), answers before the last user message get '\n<think></think>',
    // and with `enable_thinking` undefined the generation prompt is the bare assistant tag.
    let conversation = "[gMASK]<sop><|system|>\nAnswer briefly.\
                        <|user|>\nWhat is 2+2?\
                        <|assistant|>\n<think></think>\n4.\
                        <|user|>\nAnd 3+3?";
    let (with_prompt, without_prompt) = both(&glm_4_5(), &four_messages());
    assert_eq!(with_prompt, format!("{conversation}<|assistant|>"));
    assert_eq!(without_prompt, conversation);
}

#[test]
fn glm_4_5_keeps_the_reasoning_of_answers_after_the_last_question() {
    let messages = [
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "<think>\nSimple arithmetic.\n</think>\n\n4."),
        Message::new("user", "And 3+3?"),
        Message::new("assistant", "<think>\nAlso simple.\n</think>\n\n6."),
    ];
    // The first answer comes before the last user message (index 2) and loses its reasoning;
    // the second keeps it, stripped, inside '<think>...</think>' with no newlines around it.
    assert_eq!(
        glm_4_5().render(&messages, false).unwrap(),
        "[gMASK]<sop><|user|>\nWhat is 2+2?<|assistant|>\n<think></think>\n4.\
         <|user|>\nAnd 3+3?<|assistant|>\n<think>Also simple.</think>\n6."
    );
}

fn gpt_oss() -> ChatTemplate {
    template(GPT_OSS, Some("<|startoftext|>"), Some("<|return|>"))
}

/// `rendered` with the date the template wrote (`Current date: YYYY-MM-DD`, today's) replaced by
/// `DATE`.
fn undated(rendered: &str) -> String {
    let (head, rest) = rendered
        .split_once("Current date: ")
        .expect("the system message has the date");
    let (date, tail) = rest.split_at(10);
    let digits = date.bytes().filter(u8::is_ascii_digit).count();
    assert!(digits == 8 && date.as_bytes()[4] == b'-', "{date}");
    format!("{head}Current date: DATE{tail}")
}

#[test]
fn gpt_oss_writes_harmony_messages_with_the_system_prompt_as_developer_instructions() {
    // The harmony format: a system message naming the channels, the given system prompt as the
    // developer's instructions, earlier answers on the final channel, every message closed by
    // <|end|>, and the generation prompt the bare assistant start.
    let conversation = "<|start|>system<|message|>You are ChatGPT, a large language model \
        trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: DATE\n\nReasoning: \
        medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for \
        every message.<|end|><|start|>developer<|message|># Instructions\n\nAnswer briefly.\n\n\
        <|end|><|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>final\
        <|message|>4.<|end|><|start|>user<|message|>And 3+3?<|end|>";
    let (with_prompt, without_prompt) = both(&gpt_oss(), &four_messages());
    assert_eq!(
        undated(&with_prompt),
        format!("{conversation}<|start|>assistant")
    );
    assert_eq!(undated(&without_prompt), conversation);
}

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let source = "{% for message in messages %}\n{{ message.content }}\n{% if %}\n{% endfor %}";
    match ChatTemplate::from_source(source, None, None) {
        Err(TemplateError::Invalid { line, message }) => {
            assert_eq!(line, 3, "{message}");
            assert!(message.starts_with("syntax error"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "moe-gateway-chat-template-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, file: &str, contents: &str) {
        fs::write(self.0.join(file), contents).expect("write into the temporary directory");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn added_token(content: &str) -> serde_json::Value {
    serde_json::json!({
        "__type": "AddedToken",
        "content": content,
        "lstrip": false,
        "normalized": true,
        "rstrip": false,
        "single_word": false,
    })
}

#[test]
fn a_checkpoint_template_is_rendered_with_its_added_token_objects() {
    let dir = TempDir::new("added-tokens");
    let config = serde_json::json!({
        "add_bos_token": true,
        "bos_token": added_token("<s>"),
        "eos_token": added_token("</s>"),
        "chat_template": MIXTRAL,
        "tokenizer_class": "LlamaTokenizer",
    });
    dir.write("tokenizer_config.json", &config.to_string());
    let loaded = ChatTemplate::from_checkpoint(dir.path()).unwrap();
    assert_eq!(
        loaded.render(&follow_up(), true).unwrap(),
        "<s> [INST] What is 2+2? [/INST] 4.</s> [INST] And 3+3? [/INST]"
    );
}

#[test]
fn a_list_of_named_templates_uses_the_default_one() {
    let dir = TempDir::new("named");
    let config = serde_json::json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "tools: {{ tools }}"},
            {"name": "default", "template": MIXTRAL},
        ],
    });
    dir.write("tokenizer_config.json", &config.to_string());
    let loaded = ChatTemplate::from_checkpoint(dir.path()).unwrap();
    assert_eq!(
        loaded.render(&follow_up()[..1], true).unwrap(),
        "<s> [INST] What is 2+2? [/INST]"
    );
}

#[test]
fn a_chat_template_jinja_file_is_used_with_the_tokens_of_the_config() {
    let dir = TempDir::new("jinja-file");
    dir.write(
        "tokenizer_config.json",
        r#"{"bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}"#,
    );
    dir.write("chat_template.jinja", QWEN3);
    let loaded = ChatTemplate::from_checkpoint(dir.path()).unwrap();
    assert_eq!(
        loaded.render(&follow_up()[..1], true).unwrap(),
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn a_chat_template_jinja_file_wins_over_the_config_template() {
    // `transformers` gives a separate template file priority over the config entry.
    let dir = TempDir::new("both");
    let config = serde_json::json!({"eos_token": "<|im_end|>", "chat_template": MIXTRAL});
    dir.write("tokenizer_config.json", &config.to_string());
    dir.write("chat_template.jinja", QWEN2);
    let loaded = ChatTemplate::from_checkpoint(dir.path()).unwrap();
    assert!(
        loaded
            .render(&follow_up(), true)
            .unwrap()
            .starts_with("<|im_start|>system\n")
    );
}

#[test]
fn a_checkpoint_without_a_template_is_missing_one() {
    let dir = TempDir::new("missing");
    dir.write(
        "tokenizer_config.json",
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    );
    let err = ChatTemplate::from_checkpoint(dir.path()).unwrap_err();
    assert!(matches!(&err, TemplateError::Missing { dir: missing } if missing == dir.path()));
    assert!(err.to_string().contains("has no chat template"), "{err}");

    let named_without_default = serde_json::json!({
        "chat_template": [{"name": "tool_use", "template": "{{ tools }}"}],
    });
    dir.write("tokenizer_config.json", &named_without_default.to_string());
    let err = ChatTemplate::from_checkpoint(dir.path()).unwrap_err();
    assert!(matches!(err, TemplateError::Missing { .. }), "{err:?}");

    let empty = TempDir::new("empty");
    let err = ChatTemplate::from_checkpoint(empty.path()).unwrap_err();
    assert!(matches!(err, TemplateError::Missing { .. }), "{err:?}");
}

#[test]
fn a_config_that_is_not_json_is_unreadable() {
    let dir = TempDir::new("broken");
    dir.write("tokenizer_config.json", "{\"chat_template\": ");
    let err = ChatTemplate::from_checkpoint(dir.path()).unwrap_err();
    assert!(
        matches!(&err, TemplateError::Unreadable { path, .. } if path.ends_with("tokenizer_config.json")),
        "{err:?}"
    );
}

// --- Hostile templates and the render budget ------------------------------------------------

/// How long refusing a hostile template may take, in a debug build on a slow machine.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Renders `source` for a short conversation, checking that it ends within [`REFUSAL_TIME`].
fn render_hostile(source: &str) -> TemplateError {
    let template = template(source, Some("<s>"), Some("</s>"));
    let started = Instant::now();
    let err = template
        .render(&follow_up(), true)
        .expect_err("a hostile template is refused");
    let took = started.elapsed();
    assert!(took < REFUSAL_TIME, "refusing took {took:?}: {err}");
    err
}

#[test]
fn a_huge_tojson_indent_is_refused_with_the_indent_named() {
    let err = render_hostile("{{ messages|tojson(indent=1099511627776) }}");
    assert!(
        err.to_string()
            .contains("tojson: indent 1099511627776 is wider than the 64 characters allowed"),
        "{err}"
    );
}

#[test]
fn nested_hundred_thousand_loops_run_out_of_fuel() {
    let err = render_hostile(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    );
    let budget = RenderBudget::for_conversation(&follow_up());
    assert!(
        matches!(&err, TemplateError::OutOfFuel { fuel, .. } if *fuel == budget.fuel),
        "{err:?}"
    );
    assert!(err.to_string().contains("budget"), "{err}");
}

#[test]
fn unbounded_output_is_stopped() {
    let err = render_hostile("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
    assert!(
        matches!(
            err,
            TemplateError::OutOfFuel { .. } | TemplateError::PromptTooLong { .. }
        ),
        "{err:?}"
    );
}

/// The four-message conversation of the budget figures: system, user, assistant, user.
fn four_messages() -> Vec<Message> {
    vec![
        Message::new("system", "Answer briefly."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4."),
        Message::new("user", "And 3+3?"),
    ]
}

/// A long conversation: a system message, then 200 questions and answers of 2 KB each.
fn long_conversation() -> Vec<Message> {
    let mut messages = vec![Message::new("system", "Answer briefly.")];
    for turn in 0..200 {
        let text = format!("{turn} {}", "lorem ipsum ".repeat(170));
        messages.push(Message::new("user", text.clone()));
        messages.push(Message::new("assistant", text));
    }
    messages
}

#[test]
fn real_templates_use_a_small_part_of_their_budget() {
    let real = [
        ("mixtral", template(MIXTRAL, Some("<s>"), Some("</s>"))),
        ("qwen2", template(QWEN2, None, Some("<|im_end|>"))),
        ("qwen3", template(QWEN3, None, Some("<|im_end|>"))),
        ("olmoe", template(OLMOE, None, Some("<|endoftext|>"))),
        ("deepseek-v3", deepseek_v3()),
        ("glm-4.5", glm_4_5()),
    ];
    for (name, template) in &real {
        for (conversation, messages) in [
            ("4 messages", four_messages()),
            ("401 messages", long_conversation()),
        ] {
            // Mixtral accepts a system message only first and then strict alternation, which
            // both conversations keep to.
            let rendered = template
                .render_measured(&messages, true)
                .unwrap_or_else(|err| panic!("{name}, {conversation}: {err}"));
            let budget = RenderBudget::for_conversation(&messages);
            eprintln!(
                "{name}, {conversation}: {} fuel of {} ({:.2}%), {} prompt bytes of {}",
                rendered.fuel_used,
                budget.fuel,
                100.0 * rendered.fuel_used as f64 / budget.fuel as f64,
                rendered.prompt.len(),
                budget.prompt_bytes,
            );
            // Fuel: a tenth at most. Prompt bytes: a template writes each message about once,
            // and the bound allows four times the conversation's bytes.
            assert!(
                rendered.fuel_used * 10 < budget.fuel,
                "{name}, {conversation}"
            );
            assert!(
                rendered.prompt.len() * 3 < budget.prompt_bytes,
                "{name}, {conversation}"
            );
        }
    }
}
