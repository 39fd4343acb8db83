//! Every size and count of `config.json` is refused above its bound with an error naming the key,
//! the value and the bound, before anything is allocated for it; values at a bound's edge are
//! accepted; totals over their bound (parameters, KV cache per position) are refused too.

mod common;

use std::path::Path;

use common::{ARCHS, fixture_dir};
use moe_model::config::bounds::{self, Size};
use moe_model::{ModelConfig, ModelError};
use serde_json::{Value, json};

fn parse(config: &Value) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json(config, Path::new("config.json"))
}

fn fixture_config(arch: &str) -> Value {
    let path = fixture_dir(arch).join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Asserts that `config` is refused for `key` being `value`, over `max`, and says so.
fn assert_over_bound(config: &Value, key: &str, value: u64, max: usize) {
    match parse(config) {
        Err(e @ ModelError::ConfigBound { .. }) => {
            let message = e.to_string();
            for part in [key, &value.to_string(), &max.to_string(), "config.json"] {
                assert!(message.contains(part), "`{part}` missing from: {message}");
            }
            assert!(
                matches!(&e, ModelError::ConfigBound { key: k, value: v, max: m, .. }
                    if k == key && *v == value && *m == max),
                "{e:?}"
            );
        }
        other => panic!("{key} = {value} was not refused for its bound: {other:?}"),
    }
}

#[test]
fn a_hundred_billion_layers_are_refused_for_every_fixture() {
    let mut fixtures: Vec<Value> = ARCHS.iter().map(|arch| fixture_config(arch)).collect();
    let stdlib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/stdlib-moe/config.json");
    fixtures.push(serde_json::from_slice(&std::fs::read(stdlib).unwrap()).unwrap());
    for mut config in fixtures {
        assert!(parse(&config).is_ok(), "the fixture itself loads");
        config["num_hidden_layers"] = json!(100_000_000_000u64);
        assert_over_bound(&config, "num_hidden_layers", 100_000_000_000, 1024);
        config["num_hidden_layers"] = json!(u64::MAX);
        assert_over_bound(&config, "num_hidden_layers", u64::MAX, 1024);
    }
}

fn qwen2() -> Value {
    fixture_config("qwen2-moe")
}

/// One key set to a value, in a config of the architecture that reads it.
fn with(mut config: Value, key: &str, value: Value) -> Value {
    config[key] = value;
    config
}

#[test]
fn every_size_is_refused_one_past_its_bound() {
    let mixtral = fixture_config("mixtral");
    for size in bounds::ALL {
        let Size { key, max } = size;
        let base = match key {
            "num_local_experts" => mixtral.clone(),
            "n_routed_experts"
            | "n_shared_experts"
            | "n_group"
            | "topk_group"
            | "first_k_dense_replace"
            | "num_nextn_predict_layers"
            | "q_lora_rank"
            | "kv_lora_rank"
            | "qk_nope_head_dim"
            | "qk_rope_head_dim"
            | "v_head_dim" => fixture_config("deepseek-v3"),
            _ => qwen2(),
        };
        let past = (max + 1) as u64;
        let config = match key {
            "mlp_only_layers" => with(base, key, json!(vec![0; max + 1])),
            "eos_token_id" => with(base, key, json!(vec![2; max + 1])),
            _ => with(base, key, json!(past)),
        };
        assert_over_bound(&config, key, past, max);
    }
}

#[test]
fn sizes_at_their_bound_are_accepted() {
    let edges = [
        ("num_hidden_layers", bounds::MAX_LAYERS),
        ("num_experts", bounds::MAX_EXPERTS),
        ("vocab_size", bounds::MAX_VOCAB),
        ("max_position_embeddings", bounds::MAX_POSITIONS),
        ("sliding_window", bounds::MAX_POSITIONS),
        ("intermediate_size", bounds::MAX_INTERMEDIATE),
        ("moe_intermediate_size", bounds::MAX_INTERMEDIATE),
        ("max_window_layers", bounds::MAX_LAYERS),
        ("decoder_sparse_step", bounds::MAX_LAYERS),
    ];
    for (key, max) in edges {
        let config = with(qwen2(), key, json!(max));
        let config = match key {
            // layer_types must list every layer.
            "num_hidden_layers" => with(config, "layer_types", json!(vec!["full_attention"; max])),
            _ => config,
        };
        if let Err(e) = parse(&config) {
            panic!("{key} = {max} refused: {e}");
        }
    }
    // The widest model: hidden size and heads at their bounds, head_dim given.
    let wide = json!({"hidden_size": bounds::MAX_HIDDEN, "num_attention_heads": bounds::MAX_HEADS,
        "num_key_value_heads": bounds::MAX_HEADS, "head_dim": 64});
    let mut config = qwen2();
    config
        .as_object_mut()
        .unwrap()
        .extend(wide.as_object().unwrap().clone());
    let c = parse(&config).unwrap();
    assert_eq!((c.hidden_size, c.num_kv_heads), (65_536, 1024));
    let c = parse(&with(qwen2(), "head_dim", json!(bounds::MAX_HEAD_DIM))).unwrap();
    assert_eq!(c.head_dim, 1024);
}

#[test]
fn a_head_dim_derived_past_its_bound_is_refused() {
    // 65536 / 4 heads: 16384 values a head.
    let config = with(qwen2(), "hidden_size", json!(bounds::MAX_HIDDEN));
    assert_over_bound(&config, "head_dim", 16_384, bounds::MAX_HEAD_DIM);
}

#[test]
fn totals_past_their_bound_are_refused_though_each_size_is_within_its_own() {
    let mut config = fixture_config("mixtral");
    for (key, value) in [
        ("num_hidden_layers", bounds::MAX_LAYERS),
        ("num_local_experts", bounds::MAX_EXPERTS),
        ("hidden_size", bounds::MAX_HIDDEN),
        ("intermediate_size", bounds::MAX_INTERMEDIATE),
        ("num_attention_heads", 64),
        ("num_key_value_heads", 8),
    ] {
        config[key] = json!(value);
    }
    config["head_dim"] = json!(128);
    let e = parse(&config).unwrap_err();
    assert!(
        matches!(&e, ModelError::ConfigTotal { exceeded, .. } if exceeded.what == "parameters"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("parameters, above the bound of 35184372088832")
    );

    let mut config = fixture_config("mixtral");
    for (key, value) in [
        ("num_hidden_layers", 1024),
        ("num_attention_heads", 1024),
        ("num_key_value_heads", 1024),
        ("head_dim", 1024),
    ] {
        config[key] = json!(value);
    }
    let e = parse(&config).unwrap_err();
    assert!(
        e.to_string()
            .contains("2147483648 KV-cache values per position, above the bound of 16777216"),
        "{e}"
    );
}

#[test]
fn non_positive_or_infinite_floats_are_refused() {
    for (key, value) in [
        ("rope_theta", json!(-1.0)),
        ("rope_theta", json!(1e300)),
        ("rms_norm_eps", json!(0.0)),
    ] {
        let e = parse(&with(fixture_config("mixtral"), key, value.clone())).unwrap_err();
        assert!(
            e.to_string().contains("positive finite") && e.to_string().contains(key),
            "{key} = {value}: {e}"
        );
    }
}
