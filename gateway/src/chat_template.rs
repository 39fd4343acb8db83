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
//!   `ensure_ascii=False`: nothing is HTML-escaped, and the `indent`, `separators`, `sort_keys`
//!   and `ensure_ascii` keyword arguments are honoured. Dicts built inside a template serialize
//!   with their keys in sorted order rather than in insertion order.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// The name the compiled template is stored under in its environment.
const TEMPLATE_NAME: &str = "chat_template";
/// The tokenizer configuration file of a HuggingFace checkpoint.
const CONFIG_FILE: &str = "tokenizer_config.json";
/// The file newer `transformers` versions save the chat template to.
const TEMPLATE_FILE: &str = "chat_template.jinja";

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
    /// Rendering failed for another reason, such as an attribute looked up on an undefined value.
    #[error("rendering the chat template failed: {0}")]
    Render(String),
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
        let config_path = dir.join(CONFIG_FILE);
        let config: TokenizerConfig = match read_if_present(&config_path)? {
            Some(text) => serde_json::from_str(&text).map_err(|err| TemplateError::Unreadable {
                path: config_path,
                reason: err.to_string(),
            })?,
            None => TokenizerConfig::default(),
        };
        let source = match read_if_present(&dir.join(TEMPLATE_FILE))? {
            Some(source) => source,
            None => config
                .chat_template
                .and_then(ConfigTemplate::into_default)
                .ok_or_else(|| TemplateError::Missing {
                    dir: dir.to_path_buf(),
                })?,
        };
        ChatTemplate::from_source(
            &source,
            config.bos_token.map(SpecialToken::into_content),
            config.eos_token.map(SpecialToken::into_content),
        )
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
        self.env
            .get_template(TEMPLATE_NAME)
            .and_then(|template| template.render(Value::from(context)))
            .map_err(|err| match raised_message(&err) {
                Some(message) => TemplateError::Raised(message),
                None => TemplateError::Render(describe(&err)),
            })
    }
}

/// The parts of `tokenizer_config.json` a chat template needs.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<ConfigTemplate>,
    #[serde(default)]
    bos_token: Option<SpecialToken>,
    #[serde(default)]
    eos_token: Option<SpecialToken>,
}

/// `chat_template` in `tokenizer_config.json`: one template, or several by name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ConfigTemplate {
    Single(String),
    Named(Vec<NamedTemplate>),
}

impl ConfigTemplate {
    /// The template used for chat: the only one, or the one named `default`.
    fn into_default(self) -> Option<String> {
        match self {
            ConfigTemplate::Single(source) => Some(source),
            ConfigTemplate::Named(templates) => templates
                .into_iter()
                .find(|named| named.name == "default")
                .map(|named| named.template),
        }
    }
}

#[derive(Debug, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// A special token, written as a string or as an added-token object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn into_content(self) -> String {
        match self {
            SpecialToken::Text(content) | SpecialToken::Added { content } => content,
        }
    }
}

/// The file's text, or `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>, TemplateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(TemplateError::Unreadable {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }),
    }
}

/// A minijinja environment that behaves like the one `transformers` renders chat templates in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .expect("the default delimiters are a valid syntax"),
    );
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

/// Marks an error as raised by the template's `raise_exception`, so that rendering can tell it
/// apart from the engine's own errors.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

/// `raise_exception(message)`: aborts rendering with the template's message.
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedByTemplate(message)),
    )
}

/// The message of a `raise_exception` anywhere in the error's chain of causes.
fn raised_message(err: &minijinja::Error) -> Option<String> {
    let mut cause = std::error::Error::source(err);
    while let Some(err) = cause {
        if let Some(raised) = err.downcast_ref::<RaisedByTemplate>() {
            return Some(raised.0.clone());
        }
        cause = err.source();
    }
    None
}

/// `strftime_now(format)`: the current UTC time in a `strftime` format.
fn strftime_now(state: &State, format: &str) -> Result<String, minijinja::Error> {
    minijinja_contrib::filters::datetimeformat(
        state,
        minijinja_contrib::globals::now(),
        Kwargs::from_iter([("format", Value::from(format))]),
    )
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

/// `value|tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)`, the
/// output of Python's `json.dumps` with the same arguments.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(indent) if indent.is_integer() => {
            let width = i64::try_from(indent)?;
            Some(" ".repeat(usize::try_from(width).unwrap_or(0)))
        }
        Some(indent) => match indent.as_str() {
            Some(text) => Some(text.to_owned()),
            None => {
                return Err(invalid_json_argument(
                    "indent must be an integer or a string",
                ));
            }
        },
    };
    let (item_separator, key_separator) = match kwargs.get::<Option<Value>>("separators")? {
        Some(separators) => {
            let parts: Vec<Value> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                    (item.to_string(), key.to_string())
                }
                _ => return Err(invalid_json_argument("separators must be two strings")),
            }
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let json = PythonJson {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    json.write(&mut out, value, 0)?;
    Ok(out)
}

fn invalid_json_argument(message: &str) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {message}"))
}

/// The settings of one `json.dumps` call.
struct PythonJson {
    /// The indentation of one nesting level; `None` writes everything on one line.
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PythonJson {
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> Result<(), minijinja::Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&python_number(value)?),
            ValueKind::String => self.write_string(out, value.as_str().unwrap_or_default()),
            ValueKind::Seq => {
                let items: Vec<Value> = value.try_iter()?.collect();
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    self.write_separator(out, index, depth);
                    self.write(out, item, depth + 1)?;
                }
                self.write_close(out, items.is_empty(), depth, ']');
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    entries.push((python_key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|(a, _), (b, _)| a.cmp(b));
                }
                out.push('{');
                for (index, (key, item)) in entries.iter().enumerate() {
                    self.write_separator(out, index, depth);
                    self.write_string(out, key);
                    out.push_str(&self.key_separator);
                    self.write(out, item, depth + 1)?;
                }
                self.write_close(out, entries.is_empty(), depth, '}');
            }
            kind => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of kind {kind} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    /// What goes before the item at `index` of a list or dict that is `depth` levels deep.
    fn write_separator(&self, out: &mut String, index: usize, depth: usize) {
        if index > 0 {
            out.push_str(&self.item_separator);
        }
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
    }

    fn write_close(&self, out: &mut String, empty: bool, depth: usize, bracket: char) {
        if let (Some(indent), false) = (&self.indent, empty) {
            out.push('\n');
            out.push_str(&indent.repeat(depth));
        }
        out.push(bracket);
    }

    fn write_string(&self, out: &mut String, text: &str) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if c < ' ' || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A number as Python's `json.dumps` writes it (`1.0`, `1e-05`, `1e+16`, `NaN`).
fn python_number(value: &Value) -> Result<String, minijinja::Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    let number = f64::try_from(value.clone())?;
    Ok(python_float(number))
}

/// Python's `repr` of a float: the shortest digits that read back the same number, in
/// scientific notation below 1e-4 and from 1e16 on.
fn python_float(number: f64) -> String {
    if number.is_nan() {
        return "NaN".to_owned();
    }
    if number.is_infinite() {
        return if number > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .to_owned();
    }
    let magnitude = number.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        // Rust's `Debug` uses the same shortest digits and keeps the `.0` of whole numbers.
        return format!("{number:?}");
    }
    let scientific = format!("{number:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent
        .parse()
        .expect("`{:e}` writes the exponent as an integer");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and `None`
/// as their JSON text.
fn python_key(key: &Value) -> Result<String, minijinja::Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => python_number(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        kind => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be strings, numbers, booleans or none, not {kind}"),
        )),
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
    fn python_float_matches_repr() {
        for (number, repr) in [
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(python_float(number), repr);
        }
    }
}
