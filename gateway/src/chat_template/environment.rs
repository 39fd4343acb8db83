//! The minijinja environment chat templates are compiled in, configured like the sandboxed
//! Jinja2 environment of `transformers`, and the helpers it adds: `raise_exception`,
//! `strftime_now` and a Python-compatible `tojson`. It does not render or budget anything
//! (that is the parent module's and [`super::budget`]'s).

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};

use super::python_json::tojson;

/// A minijinja environment that behaves like the one `transformers` renders chat templates in.
pub fn environment() -> Environment<'static> {
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
pub fn raised_message(err: &minijinja::Error) -> Option<String> {
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
