//! The trained model in `models/stdlib-moe` (written by `training/train.py`, JAX): its tokenizer
//! encodes the held-out text to the ids training saw, and this crate's forward pass gives the
//! log-probabilities the training code computed for them (`reference.json`), within f32 rounding.

mod common;

use std::path::PathBuf;

use common::pool;
use moe_model::{LoadOptions, Logits, Model, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    ids: Vec<u32>,
    positions: Vec<usize>,
    /// Per position, the five most likely (token, log-probability) pairs.
    top: Vec<Vec<(u32, f32)>>,
    /// Mean negative log-likelihood of `ids[1..]`.
    nll: f64,
}

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/stdlib-moe")
}

fn reference() -> Reference {
    let path = model_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row.iter().map(|&v| v as f64 - max - sum.ln()).collect()
}

#[test]
fn tokenizer_encodes_the_heldout_text_as_training_did() {
    let r = reference();
    let text = std::fs::read_to_string(model_dir().join("heldout.py")).unwrap();
    let tokenizer = Tokenizer::from_dir(&model_dir()).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    assert_eq!(r.ids[0], 1, "the reference window starts with <s>");
    assert_eq!(&ids[..r.ids.len() - 1], &r.ids[1..]);
}

#[test]
fn forward_matches_the_training_code() {
    let r = reference();
    let model = Model::load(&model_dir(), &LoadOptions::default(), pool()).unwrap();
    let mut cache = model.new_cache();
    let logits = model.forward(&r.ids, &mut cache, Logits::All).unwrap();
    let vocab = model.config().vocab_size;
    let rows: Vec<Vec<f64>> = logits.chunks_exact(vocab).map(log_softmax).collect();

    for (&position, top) in r.positions.iter().zip(&r.top) {
        for &(token, expected) in top {
            let got = rows[position][token as usize];
            assert!(
                (got - expected as f64).abs() < 2e-3,
                "position {position} token {token}: log-probability {got} here, {expected} in training"
            );
        }
        let best = (0..vocab)
            .max_by(|&a, &b| rows[position][a].total_cmp(&rows[position][b]))
            .unwrap();
        assert_eq!(
            best as u32, top[0].0,
            "position {position}: most likely token"
        );
    }
    let nll: f64 = (1..r.ids.len())
        .map(|i| -rows[i - 1][r.ids[i] as usize])
        .sum::<f64>()
        / (r.ids.len() - 1) as f64;
    assert!(
        (nll - r.nll).abs() < 1e-3,
        "mean NLL {nll} here, {} in training",
        r.nll
    );
}
