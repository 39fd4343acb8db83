//! The one error type of the model crate: every variant names the file and, where there is one,
//! the tensor or key at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: config key `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A size or count over its bound in [`crate::config::bounds`].
    #[error(
        "{path}: config key `{key}` is {value}, above the bound of {max} (no real model comes \
         near it; the bounds are listed in moe_model::config::bounds)"
    )]
    ConfigBound {
        path: PathBuf,
        key: String,
        value: u64,
        max: usize,
    },
    /// A total of the whole model (parameters, KV-cache size) over its bound.
    #[error("{path}: the config's shapes give {exceeded}")]
    ConfigTotal {
        path: PathBuf,
        exceeded: crate::config::bounds::TotalExceeded,
    },
    #[error("{path}: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: &'static str,
    },
    #[error("{path}: corrupt safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{dir}: tensor `{tensor}` not found in the checkpoint")]
    MissingTensor { dir: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tensor `{tensor}` has shape {shape:?}, expected a 2-D matrix")]
    NotAMatrix {
        path: PathBuf,
        tensor: String,
        shape: Vec<usize>,
    },
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, expected one of f32, f16, bf16")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("token id {id} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("sequence of {len} tokens exceeds the model context of {max}")]
    ContextOverflow { len: usize, max: usize },
    #[error("the KV cache is full: all {bytes} bytes of its budget are in use")]
    KvCacheFull { bytes: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("kernel: {0}")]
    Kernel(#[from] moe_kernels::KernelError),
    /// The routed experts could not be run (locally: not loaded; in a cluster: no node could).
    #[error("routed experts: {0}")]
    RoutedExperts(RoutedError),
}

/// Why routed experts could not run, by what whoever asked should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutedError {
    /// Nothing can serve them now (no placement yet, no replica left, nodes unreachable):
    /// retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke that a retry does not mend (a malformed reply, a request a node refused
    /// as malformed, experts this process was loaded without): a bug to report.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
