//! A checkpoint's `model.safetensors`: the bytes written as the file of a one-layer Mixtral
//! checkpoint (hidden width 32, two experts) and the model loaded from it, which parses and
//! checks the header, then reads and converts every tensor the configuration names.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use moe_kernels::Pool;
use moe_model::{LoadOptions, Model};

/// The configuration the seed corpus's checkpoints were written for.
const CONFIG: &str = r#"{
  "architectures": ["MixtralForCausalLM"],
  "model_type": "mixtral",
  "hidden_act": "silu",
  "hidden_size": 32,
  "intermediate_size": 32,
  "max_position_embeddings": 64,
  "num_attention_heads": 2,
  "num_key_value_heads": 1,
  "num_experts_per_tok": 2,
  "num_hidden_layers": 1,
  "num_local_experts": 2,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "vocab_size": 64
}"#;

/// A directory holding the configuration, and a pool to load with; both live for the process.
fn checkpoint_dir() -> &'static (PathBuf, Arc<Pool>) {
    static DIR: OnceLock<(PathBuf, Arc<Pool>)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        std::fs::write(dir.join("config.json"), CONFIG).expect("the configuration is written");
        (dir, Arc::new(Pool::new(1).expect("a one-thread pool")))
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (dir, pool) = checkpoint_dir();
    std::fs::write(dir.join("model.safetensors"), bytes).expect("the checkpoint is written");
    let _ = Model::load(dir, &LoadOptions::default(), Arc::clone(pool));
});
