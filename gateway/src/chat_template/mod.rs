//! HuggingFace chat templates: turns a conversation into the prompt text a model was trained on,
//! the way `transformers` does with
//! `tokenizer.apply_chat_template(messages, add_generation_prompt=..., tokenize=False)`.
//!
//! # Where the template comes from
//!
//! [`ChatTemplate::from_checkpoint`] reads a checkpoint directory like `transformers` does:
//! a `chat_template.jinja` file wins when there is one (newer `transformers` saves the template
//! there); otherwise `tokenizer_config.json`'s `chat_template` is used, either a string or a list
//! of `{"name", "template"}` entries of which the one named `default` is taken (named variants
//! such as `tool_use` are not used). `bos_token` and `eos_token` come from `tokenizer_config.json`,
//! written either as strings or as `{"content": ...}` objects. A checkpoint without a template is
//! [`TemplateError::Missing`].
//!
//! # The Jinja dialect
//!
//! Templates are compiled once with minijinja, configured like the sandboxed Jinja2 environment of
//! `transformers`:
//!
//! * `trim_blocks` and `lstrip_blocks` on; a single trailing newline of the source is dropped;
//!   no auto-escaping.
//! * Undefined values are lenient like Jinja2's default: they print as nothing, iterate as an
//!   empty list and are false, while looking up an attribute *of* an undefined value is an error.
//! * Statements: `if`/`elif`/`else`, `for` with `loop.*` (including `loop.previtem` and
//!   `loop.nextitem`), `break`/`continue`, `set` (also on a `namespace()`), `macro`, filters and
//!   tests from minijinja's builtins, slices such as `messages[1:]` and `messages[::-1]`.
//! * Python methods on values, through minijinja-contrib's `pycompat`: strings (`strip`,
//!   `lstrip`, `rstrip` with or without characters, `split`, `startswith`, `endswith`, `replace`,
//!   `upper`, `lower`, `title`, `find`, `count`, `format`, ...), dicts (`items`, `keys`,
//!   `values`, `get`) and lists (`count`).
//! * Values print as Python prints them: `None`, `True`, `['a', None]`, `{'k': 1}`.
//! * `raise_exception(message)` stops rendering with [`TemplateError::Raised`] carrying the
//!   template's own message.
//! * `strftime_now(format)` formats the current time in UTC (not the local zone, which
//!   `transformers` uses) with minijinja-contrib's `datetimeformat`, whose `strftime` directives
//!   are those of the jiff crate.
//! * `tojson` behaves like `transformers`' override of it, that is Python's `json.dumps` with
//!   `ensure_ascii=False` (see [`python_json`]), except that an indent wider than
//!   [`python_json::MAX_INDENT`] characters is refused.
//!
//! # Bounds
//!
//! A template is code from the checkpoint, and a conversation is data from a user; neither may
//! make the gateway loop or allocate without end. Every render gets a [`RenderBudget`] in
//! proportion to the conversation: minijinja fuel (which bounds both the work and the memory of
//! the render) and a bound on the prompt's bytes. A render that runs out of either ends with
//! [`TemplateError::OutOfFuel`] or [`TemplateError::PromptTooLong`]; the real templates use a
//! small part of their budget (see [`budget`]). minijinja also limits recursion, `range` (to
//! 100,000 items) and repeated strings and lists by itself.
//!
//! # The variables a template sees
//!
//! `messages` (a list of `{role, content}`), `add_generation_prompt`, `bos_token` and
//! `eos_token` (left undefined when the checkpoint has none, so they print as nothing),
//! and `tools` and `documents`, both `none`. Anything else a template reads, such as
//! `enable_thinking` or `message.reasoning_content`, is undefined.
//!
//! # Not supported
//!
//! Tool definitions and tool calls, documents, message content made of parts (images), the
//! `{% generation %}` tag of assistant-mask templates (such a template fails to compile),
//! `continue_final_message`, and Jinja2's `include`/`extends`/`import`.

pub mod budget;
mod checkpoint;
mod environment;
pub mod python_json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::value::{Serde, Value};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

pub use budget::RenderBudget;

use budget::PromptBuffer;
use environment::{environment, raised_message};

/// The name the compiled template is stored under in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, or whatever else the template understands.
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl Message {
    /// A message with this role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The checkpoint has no chat template, so chat requests cannot be served for it.
    #[error(
        "the model at {} has no chat template (no chat_template.jinja and no `chat_template` \
         in tokenizer_config.json)",
        dir.display()
    )]
    Missing {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// A checkpoint file could not be read or is not valid JSON.
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The template does not compile.
    #[error("the chat template does not compile: {message} (line {line})")]
    Invalid {
        /// The line of the template the error was found on, counted from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The template rejected the conversation with `raise_exception`; the message is the
    /// template's own.
    #[error("{0}")]
    Raised(String),
    /// The render used up its fuel: the template did far more work than real templates do for
    /// a conversation of this size, as one that loops without end does.
    #[error(
        "rendering the chat template was stopped after using up its budget of {fuel} fuel for \
         this conversation ({detail})"
    )]
    OutOfFuel {
        /// The budget that was used up.
        fuel: u64,
        /// What ran out, and where in the template.
        detail: String,
    },
    /// The rendered prompt grew past its bound.
    #[error(
        "rendering the chat template was stopped: the prompt grew past the {limit} bytes \
         allowed for this conversation"
    )]
    PromptTooLong {
        /// The bound, in bytes.
        limit: usize,
    },
    /// Rendering failed for another reason, such as an attribute looked up on an undefined value.
    #[error("rendering the chat template failed: {0}")]
    Render(String),
}

/// A prompt together with the fuel rendering it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The prompt text.
    pub prompt: String,
    /// The minijinja fuel the render used.
    pub fuel_used: u64,
}

/// A compiled chat template together with the special tokens it is rendered with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// Loads and compiles the chat template of the checkpoint in `dir` (see the module
    /// documentation for which files are read).
    pub fn from_checkpoint(dir: &Path) -> Result<ChatTemplate, TemplateError> {
        let found = checkpoint::read(dir)?;
        ChatTemplate::from_source(&found.source, found.bos_token, found.eos_token)
    }

    /// Compiles a template given as Jinja source, rendered with these special tokens (`None`
    /// leaves the variable undefined, as `transformers` does for a token the tokenizer lacks).
    pub fn from_source(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, TemplateError> {
        let mut env = environment();
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|err| TemplateError::Invalid {
                line: err.line().unwrap_or(1),
                message: cause(&err),
            })?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders the prompt for `messages`; with `add_generation_prompt` the text that opens the
    /// assistant's reply is appended (for templates that have one).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_measured(messages, add_generation_prompt)
            .map(|rendered| rendered.prompt)
    }

    /// Like [`ChatTemplate::render`], and says how much fuel the render used.
    pub fn render_measured(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Rendered, TemplateError> {
        let budget = RenderBudget::for_conversation(messages);
        // An environment is a handful of shared pointers; the copy carries this render's fuel.
        let mut env = self.env.clone();
        env.set_fuel(Some(budget.fuel));
        let mut prompt = PromptBuffer::new(budget.prompt_bytes);
        let result = env.get_template(TEMPLATE_NAME).and_then(|template| {
            let captured = template
                .render_captured_to(self.context(messages, add_generation_prompt), &mut prompt)?;
            Ok(captured.state().fuel_levels().map_or(0, |(used, _)| used))
        });
        let fuel_used = match result {
            Ok(fuel_used) => fuel_used,
            Err(_) if prompt.overflowed() => {
                return Err(TemplateError::PromptTooLong {
                    limit: budget.prompt_bytes,
                });
            }
            Err(err) => return Err(render_error(&err, budget)),
        };
        let prompt = String::from_utf8(prompt.into_bytes())
            .map_err(|err| TemplateError::Render(format!("the prompt is not UTF-8: {err}")))?;
        Ok(Rendered { prompt, fuel_used })
    }

    /// The variables the template sees.
    fn context(&self, messages: &[Message], add_generation_prompt: bool) -> Value {
        let mut context = BTreeMap::from([
            ("messages", Value::from(Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ]);
        if let Some(bos) = &self.bos_token {
            context.insert("bos_token", Value::from(bos.as_str()));
        }
        if let Some(eos) = &self.eos_token {
            context.insert("eos_token", Value::from(eos.as_str()));
        }
        Value::from(context)
    }
}

/// The error a failed render is reported as.
fn render_error(err: &minijinja::Error, budget: RenderBudget) -> TemplateError {
    if let Some(message) = raised_message(err) {
        return TemplateError::Raised(message);
    }
    if err.kind() == ErrorKind::OutOfFuel {
        return TemplateError::OutOfFuel {
            fuel: budget.fuel,
            detail: describe(err),
        };
    }
    TemplateError::Render(describe(err))
}

/// What went wrong in the engine, without where.
fn cause(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

/// What went wrong in the engine and on which line of the template.
fn describe(err: &minijinja::Error) -> String {
    match err.line() {
        Some(line) => format!("{} at line {line}", cause(err)),
        None => cause(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str) -> Result<String, TemplateError> {
        ChatTemplate::from_source(source, Some("<s>".into()), None)?
            .render(&[Message::new("user", "  Hi there  ")], true)
    }

    #[test]
    fn blocks_trim_their_line_and_a_trailing_newline_is_dropped() {
        let source = "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(render(source).unwrap(), "  Hi there  \n");
        assert_eq!(render("{{ bos_token }}x\n").unwrap(), "<s>x");
    }

    #[test]
    fn undefined_values_are_lenient_but_their_attributes_are_not() {
        assert_eq!(
            render("[{{ eos_token }}{{ enable_thinking }}]").unwrap(),
            "[]"
        );
        assert_eq!(
            render("{% if enable_thinking is defined %}a{% else %}b{% endif %}").unwrap(),
            "b"
        );
        assert_eq!(
            render("{% for t in messages[0].tool_calls %}x{% endfor %}{{ tools is none }}")
                .unwrap(),
            "True"
        );
        assert!(matches!(
            render("{{ enable_thinking.x }}"),
            Err(TemplateError::Render(_))
        ));
    }

    #[test]
    fn python_methods_namespaces_and_loop_controls_work() {
        let source = "{{ messages[0].content.strip().split(' ')[-1] }}|\
            {{ 'a</think>b'.split('</think>')[0] }}|{{ '\\n\\nx\\n'.strip('\\n') }}|\
            {{ messages[0].get('role') }}|{% for k, v in messages[0].items() %}{{ k }};{% endfor %}|\
            {% set ns = namespace(n=0) %}{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}\
            {% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}|{{ [1, 2, 3][::-1] }}";
        assert_eq!(
            render(source).unwrap(),
            "there|a|x|user|role;content;|3|[3, 2, 1]"
        );
    }

    #[test]
    fn values_print_like_python() {
        assert_eq!(
            render("{{ none }} {{ true }} {{ 1 == 2 }} {{ 3 }} {{ ['a', none] }} {{ {'k': 1.5} }}")
                .unwrap(),
            "None True False 3 ['a', None] {'k': 1.5}"
        );
    }

    #[test]
    fn a_template_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }

    #[test]
    fn render_errors_name_the_line() {
        let err = render("{% if true %}\n{{ enable_thinking.x }}\n{% endif %}").unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render(message) if message.ends_with("at line 2")),
            "{err}"
        );
    }

    #[test]
    fn raise_exception_carries_the_template_message() {
        let err = render("{{ raise_exception('System role not supported') }}").unwrap_err();
        assert!(matches!(&err, TemplateError::Raised(m) if m == "System role not supported"));
        assert_eq!(err.to_string(), "System role not supported");
    }

    #[test]
    fn strftime_now_formats_the_current_date() {
        let date = render("{{ strftime_now('%Y-%m-%d') }}").unwrap();
        let parts: Vec<&str> = date.split('-').collect();
        assert_eq!(parts.len(), 3, "{date}");
        assert!(parts[0].parse::<u32>().unwrap() >= 2025, "{date}");
        assert!(
            (1..=12).contains(&parts[1].parse::<u32>().unwrap()),
            "{date}"
        );
        assert!(
            (1..=31).contains(&parts[2].parse::<u32>().unwrap()),
            "{date}"
        );
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        // json.dumps({"a": "<é \"x\">\n", "b": [1, 2.5, None, True]}, ensure_ascii=False)
        let value = "{'a': '<é \"x\">\\n', 'b': [1, 2.5, none, true]}";
        assert_eq!(
            render(&format!("{{{{ {value}|tojson }}}}")).unwrap(),
            r#"{"a": "<é \"x\">\n", "b": [1, 2.5, null, true]}"#
        );
        assert_eq!(
            render(&format!(
                "{{{{ {value}|tojson(indent=2, sort_keys=true) }}}}"
            ))
            .unwrap(),
            "{\n  \"a\": \"<é \\\"x\\\">\\n\",\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ]\n}"
        );
        assert_eq!(
            render("{{ {'k': ['é😀', {}, []]}|tojson(ensure_ascii=true, separators=(',', ':')) }}")
                .unwrap(),
            r#"{"k":["\u00e9\ud83d\ude00",{},[]]}"#
        );
        assert_eq!(
            render("{{ [1.0, 0.0001, 0.00001, 1e16, 123456789012345.6, -2.5e-7]|tojson }}")
                .unwrap(),
            "[1.0, 0.0001, 1e-05, 1e+16, 123456789012345.6, -2.5e-07]"
        );
        assert_eq!(
            render("{{ [{1: 'one'}, {none: 'x'}, {false: 'y'}]|tojson }}").unwrap(),
            r#"[{"1": "one"}, {"null": "x"}, {"false": "y"}]"#
        );
        assert!(matches!(
            render("{{ enable_thinking|tojson }}"),
            Err(TemplateError::Render(_))
        ));
    }

    #[test]
    fn an_absurd_tojson_indent_is_refused_by_name() {
        let err = render("{{ messages|tojson(indent=1099511627776) }}").unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render(m) if m.contains("indent 1099511627776 is wider than the 64 characters allowed")),
            "{err}"
        );
        let wide = format!("{{{{ messages|tojson(indent='{}') }}}}", " ".repeat(65));
        assert!(matches!(render(&wide), Err(TemplateError::Render(_))));
        assert!(render("{{ [1]|tojson(indent=64) }}").is_ok());
        assert_eq!(render("{{ [1]|tojson(indent=-3) }}").unwrap(), "[\n1\n]");
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        let budget = RenderBudget::for_conversation(&[Message::new("user", "  Hi there  ")]);
        assert!(
            matches!(&err, TemplateError::OutOfFuel { fuel, .. } if *fuel == budget.fuel),
            "{err}"
        );
    }

    #[test]
    fn json_text_is_bounded_by_the_remaining_fuel() {
        // Nested lists indented by 64 spaces: each level repeats every indent below it.
        let source = "{% set ns = namespace(v=[1]) %}{% for i in range(60) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ ns.v|tojson(indent=64) }}";
        assert!(matches!(
            render(source),
            Err(TemplateError::OutOfFuel { .. })
        ));
    }

    #[test]
    fn a_prompt_past_its_bound_is_refused() {
        // 2 MB of output costs about 63,000 fuel, within the fuel budget, but passes the
        // prompt's bound of about 1 MiB for a one-message conversation.
        let source = "{% for i in range(20) %}{{ 'x' * 100000 }}{% endfor %}";
        let budget = RenderBudget::for_conversation(&[Message::new("user", "  Hi there  ")]);
        let err = render(source).unwrap_err();
        assert!(
            matches!(&err, TemplateError::PromptTooLong { limit } if *limit == budget.prompt_bytes),
            "{err}"
        );
    }

    #[test]
    fn fuel_used_is_reported() {
        let template = ChatTemplate::from_source(
            "{% for m in messages %}{{ m.content }}{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let rendered = template
            .render_measured(&[Message::new("user", "hi")], true)
            .unwrap();
        assert_eq!(rendered.prompt, "hi");
        assert!(
            rendered.fuel_used > 0 && rendered.fuel_used < 100,
            "{rendered:?}"
        );
    }
}
