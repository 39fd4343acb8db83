//! Shared helpers of the model crate's integration tests: the committed fixtures and their goldens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use moe_kernels::{Format, Pool};
use moe_model::{LoadOptions, Model};
use serde::Deserialize;

pub const ARCHS: [&str; 10] = [
    "mixtral",
    "qwen2-moe",
    "qwen3-moe",
    "olmoe",
    "mixtral-window",
    "deepseek-v3",
    "deepseek-v3-fp8",
    "glm4-moe",
    "gpt-oss",
    "gpt-oss-mxfp4",
];

pub fn fixture_dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(arch)
}

/// A writable copy of a fixture, to break or edit.
pub fn copy_fixture(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for entry in std::fs::read_dir(fixture_dir(arch)).expect("fixture directory") {
        let entry = entry.expect("fixture entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy fixture file");
    }
    dir
}

#[derive(Deserialize)]
pub struct Prompt {
    pub ids: Vec<u32>,
    pub last_logits: Vec<f32>,
    pub greedy: Vec<u32>,
}

#[derive(Deserialize)]
pub struct AllPositions {
    pub ids: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
pub struct TokenizerCase {
    pub text: String,
    pub ids: Vec<u32>,
}

#[derive(Deserialize)]
pub struct Goldens {
    pub arch: String,
    pub prompts: Vec<Prompt>,
    pub all_positions: AllPositions,
    pub tokenizer: Vec<TokenizerCase>,
}

pub fn goldens(arch: &str) -> Goldens {
    let path = fixture_dir(arch).join("goldens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn pool() -> Arc<Pool> {
    Arc::new(Pool::new(2).expect("thread pool"))
}

pub fn load(arch: &str, expert_format: Option<Format>) -> Model {
    Model::load(
        &fixture_dir(arch),
        &LoadOptions::with_expert_format(expert_format),
        pool(),
    )
    .unwrap_or_else(|e| panic!("loading {arch}: {e}"))
}

/// Asserts `|got - want| <= tol * (1 + |want|)` element-wise, naming the worst index.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() / (1.0 + w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: index {} got {} want {} (relative error {:.3e} > {tol:.0e})",
        worst.0,
        got[worst.0],
        want[worst.0],
        worst.1
    );
}
