//! Sliding-window attention as transformers derives it from `use_sliding_window`,
//! `max_window_layers` and `sliding_window`: positions inside the window see everything, later
//! positions lose the oldest keys.

mod common;

use std::fs;

use common::{assert_close, copy_fixture, goldens, pool};
use moe_model::{LoadOptions, Logits, Model};

#[test]
fn window_changes_only_positions_past_it() {
    let dir = copy_fixture("qwen2-moe");
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    let window = 3;
    config["use_sliding_window"] = true.into();
    config["sliding_window"] = window.into();
    config["max_window_layers"] = 0.into();
    config.as_object_mut().unwrap().remove("layer_types");
    fs::write(&config_path, config.to_string()).unwrap();

    let windowed = Model::load(dir.path(), &LoadOptions::default(), pool()).unwrap();
    assert_eq!(windowed.config().sliding_window, vec![Some(window); 3]);
    let full = common::load("qwen2-moe", None);
    let ids = goldens("qwen2-moe").all_positions.ids;
    let vocab = full.config().vocab_size;
    let run = |m: &Model| m.forward(&ids, &mut m.new_cache(), Logits::All).unwrap();
    let (a, b) = (run(&windowed), run(&full));
    for t in 0..ids.len() {
        let (x, y) = (
            &a[t * vocab..(t + 1) * vocab],
            &b[t * vocab..(t + 1) * vocab],
        );
        if t < window {
            assert_close(x, y, 1e-6, &format!("position {t} inside the window"));
        } else {
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(
                diff > 1e-3,
                "position {t} past the window is unchanged ({diff})"
            );
        }
    }
}

/// gpt-oss alternates sliding (a 4-token window in the fixture) and full layers: a sequence far
/// past the window follows transformers' greedy continuation token by token, while its sliding
/// layers keep only the cache blocks their window reaches.
#[test]
fn a_sequence_past_the_window_matches_and_its_sliding_layers_stay_bounded() {
    let model = common::load("gpt-oss", None);
    let cfg = model.config();
    assert_eq!(cfg.sliding_window, vec![Some(4), None, Some(4)]);
    let prompt = &goldens("gpt-oss").prompts[2];
    let mut cache = model.new_cache();
    let mut logits = model
        .forward(&prompt.ids, &mut cache, Logits::Last)
        .unwrap();
    for (step, &want) in prompt.greedy.iter().enumerate() {
        let next = moe_model::ops::argmax(&logits).unwrap() as u32;
        assert_eq!(next, want, "step {step}");
        logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
    }
    let positions = cache.len();
    assert!(positions > 6 * 4, "{positions} positions");
    // One full layer keeps every position; the two sliding ones at most a block past the
    // window's, whatever the length.
    let (per_token, _) = cfg.kv_bytes_per_token();
    let kv_dim = cfg.num_kv_heads * cfg.head_dim;
    assert_eq!(per_token, 2 * kv_dim * 4);
    assert_eq!(cfg.kv_window_bytes(), 2 * 2 * 16 * 2 * kv_dim * 4);
    let full_blocks = positions.div_ceil(16);
    assert!(
        cache.blocks() <= full_blocks + 2,
        "{} blocks",
        cache.blocks()
    );
}
