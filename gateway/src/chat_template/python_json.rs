//! The `tojson` filter of chat templates: Python's `json.dumps` as `transformers` calls it
//! (`ensure_ascii=False`, nothing HTML-escaped), with the `indent`, `separators`, `sort_keys`
//! and `ensure_ascii` keyword arguments honoured.
//!
//! Unlike Python it is bounded: an indent wider than [`MAX_INDENT`] characters is refused, and
//! the text may not grow past what the render's remaining fuel pays for (serialized text costs
//! [`BYTES_PER_FUEL`] bytes per fuel, as minijinja's own `tojson` charges), so a template cannot
//! make it allocate without limit. Dicts built inside a template serialize with their keys in
//! sorted order rather than in insertion order.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{ErrorKind, State};

/// The widest indent `tojson` accepts, in characters. Templates indent by 2 or 4.
pub const MAX_INDENT: usize = 64;

/// How many bytes of serialized text one fuel pays for.
pub const BYTES_PER_FUEL: u64 = 4;

/// The most text one `tojson` call may write when the render tracks no fuel.
const UNTRACKED_LIMIT: usize = 16 << 20;

/// `value|tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)`, the
/// output of Python's `json.dumps` with the same arguments.
pub fn tojson(state: &State, value: &Value, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    let indent = indent(kwargs.get::<Option<Value>>("indent")?)?;
    let (item_separator, key_separator) = match kwargs.get::<Option<Value>>("separators")? {
        Some(separators) => {
            let parts: Vec<Value> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                    (item.to_string(), key.to_string())
                }
                _ => return Err(invalid_argument("separators must be two strings")),
            }
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let limit = match state.fuel_levels() {
        Some((_, remaining)) => {
            usize::try_from(remaining.saturating_mul(BYTES_PER_FUEL)).unwrap_or(usize::MAX)
        }
        None => UNTRACKED_LIMIT,
    };
    let json = PythonJson {
        indent,
        item_separator,
        key_separator,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        limit,
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    json.write(&mut out, value, 0)?;
    state.consume_fuel(out.len() as u64 / BYTES_PER_FUEL)?;
    Ok(out)
}

/// The text of one indent level: `indent` spaces for a number (none for a negative one, as in
/// Python), the string itself for a string; refused past [`MAX_INDENT`] characters.
fn indent(indent: Option<Value>) -> Result<Option<String>, minijinja::Error> {
    let Some(indent) = indent else {
        return Ok(None);
    };
    if indent.is_integer() {
        let width = i128::try_from(indent)?;
        if width > MAX_INDENT as i128 {
            return Err(invalid_argument(&format!(
                "indent {width} is wider than the {MAX_INDENT} characters allowed"
            )));
        }
        return Ok(Some(" ".repeat(usize::try_from(width).unwrap_or(0))));
    }
    match indent.as_str() {
        Some(text) if text.chars().count() > MAX_INDENT => Err(invalid_argument(&format!(
            "an indent of {} characters is wider than the {MAX_INDENT} allowed",
            text.chars().count()
        ))),
        Some(text) => Ok(Some(text.to_owned())),
        None => Err(invalid_argument("indent must be an integer or a string")),
    }
}

fn invalid_argument(message: &str) -> minijinja::Error {
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
    /// The most bytes the text may have.
    limit: usize,
}

impl PythonJson {
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> Result<(), minijinja::Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&python_number(value)?),
            ValueKind::String => self.write_string(out, value.as_str().unwrap_or_default())?,
            ValueKind::Seq => {
                let items: Vec<Value> = value.try_iter()?.collect();
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    self.write_separator(out, index, depth)?;
                    self.write(out, item, depth + 1)?;
                }
                self.write_close(out, items.is_empty(), depth, ']')?;
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
                    self.write_separator(out, index, depth)?;
                    self.write_string(out, key)?;
                    out.push_str(&self.key_separator);
                    self.write(out, item, depth + 1)?;
                }
                self.write_close(out, entries.is_empty(), depth, '}')?;
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

    /// Refuses to write `more` bytes past the limit.
    fn reserve(&self, out: &str, more: usize) -> Result<(), minijinja::Error> {
        if out.len().saturating_add(more) > self.limit {
            return Err(minijinja::Error::new(
                ErrorKind::OutOfFuel,
                format!(
                    "tojson: the JSON text would be longer than the {} bytes the render's \
                     budget has left",
                    self.limit
                ),
            ));
        }
        Ok(())
    }

    /// What goes before the item at `index` of a list or dict that is `depth` levels deep.
    fn write_separator(
        &self,
        out: &mut String,
        index: usize,
        depth: usize,
    ) -> Result<(), minijinja::Error> {
        if index > 0 {
            out.push_str(&self.item_separator);
        }
        self.write_indent(out, depth + 1)
    }

    fn write_close(
        &self,
        out: &mut String,
        empty: bool,
        depth: usize,
        bracket: char,
    ) -> Result<(), minijinja::Error> {
        if !empty {
            self.write_indent(out, depth)?;
        }
        out.push(bracket);
        Ok(())
    }

    /// A line break and `depth` indents, when indenting.
    fn write_indent(&self, out: &mut String, depth: usize) -> Result<(), minijinja::Error> {
        if let Some(indent) = &self.indent {
            self.reserve(out, 1 + indent.len().saturating_mul(depth))?;
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
        Ok(())
    }

    /// A quoted and escaped string. Escaping at most sextuples a string that is already in
    /// memory, so the limit is checked once it is written.
    fn write_string(&self, out: &mut String, text: &str) -> Result<(), minijinja::Error> {
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
        self.reserve(out, 0)
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
