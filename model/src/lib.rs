//! HuggingFace MoE checkpoints (config, safetensors, tokenizer), the supported architectures, and the
//! single-process reference forward pass that the distributed system is checked against.

pub mod arch;
pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod expert;
pub mod fallback;
pub mod generate;
pub mod kv_cache;
pub mod layout;
pub(crate) mod linear;
pub mod mla;
pub mod model;
pub mod moe;
pub mod ops;
pub mod precision;
pub mod quality;
pub mod rng;
pub mod rope;
pub mod router;
pub mod sampling;
mod span;
pub mod tokenizer;

pub use arch::Arch;
pub use config::ModelConfig;
pub use error::{ModelError, Result, RoutedError};
pub use generate::{FinishReason, GenerateParams, Generation, generate};
pub use model::{LoadOptions, Logits, Model, SequenceStep};
pub use sampling::SamplingParams;
pub use tokenizer::Tokenizer;
