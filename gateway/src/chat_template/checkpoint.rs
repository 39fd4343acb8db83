//! Where a checkpoint keeps its chat template and special tokens, read the way `transformers`
//! reads them: `chat_template.jinja` first, then `tokenizer_config.json`'s `chat_template` (a
//! string, or the entry named `default` of a list of named templates); `bos_token` and
//! `eos_token` as strings or as `{"content": ...}` objects. Compiling the template is not done
//! here.

use std::path::Path;

use serde::Deserialize;

use super::TemplateError;

/// The tokenizer configuration file of a HuggingFace checkpoint.
const CONFIG_FILE: &str = "tokenizer_config.json";
/// The file newer `transformers` versions save the chat template to.
const TEMPLATE_FILE: &str = "chat_template.jinja";

/// A checkpoint's chat template source and the special tokens it is rendered with.
#[derive(Debug)]
pub struct CheckpointTemplate {
    /// The Jinja source.
    pub source: String,
    /// `bos_token`, if the tokenizer has one.
    pub bos_token: Option<String>,
    /// `eos_token`, if the tokenizer has one.
    pub eos_token: Option<String>,
}

/// Reads the chat template of the checkpoint in `dir`.
pub fn read(dir: &Path) -> Result<CheckpointTemplate, TemplateError> {
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
    Ok(CheckpointTemplate {
        source,
        bos_token: config.bos_token.map(SpecialToken::into_content),
        eos_token: config.eos_token.map(SpecialToken::into_content),
    })
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
