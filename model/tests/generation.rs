//! Generation on a fixture: end-of-sequence tokens and stop strings end it (unless told to
//! ignore them), `max_tokens` bounds it, and a seed reproduces sampled text.

mod common;

use std::fs;

use common::{copy_fixture, fixture_dir, goldens, load, pool};
use moe_model::{
    FinishReason, GenerateParams, LoadOptions, Model, SamplingParams, Tokenizer, generate,
};

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    }
}

#[test]
fn an_eos_token_ends_generation_unless_ignored() {
    let golden = &goldens("mixtral").prompts[1];
    let eos = golden.greedy[3];
    let dir = copy_fixture("mixtral");
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    config["eos_token_id"] = serde_json::json!([2, eos]);
    fs::write(&config_path, config.to_string()).unwrap();
    let model = Model::load(dir.path(), &LoadOptions::default(), pool()).unwrap();

    let out = generate(&model, None, &golden.ids, &greedy(16)).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(
        out.token_ids,
        golden.greedy[..3],
        "the EOS token itself is not returned"
    );

    let params = GenerateParams {
        ignore_eos: true,
        ..greedy(16)
    };
    let out = generate(&model, None, &golden.ids, &params).unwrap();
    assert_eq!(
        (out.finish_reason, out.token_ids.len()),
        (FinishReason::Length, 16)
    );
}

#[test]
fn a_stop_string_cuts_the_text_before_it() {
    let model = load("mixtral", None);
    let tok = Tokenizer::from_dir(&fixture_dir("mixtral")).unwrap();
    let golden = &goldens("mixtral").prompts[2];
    let full = tok.decode(&golden.greedy).unwrap();
    let stop: String = full
        .chars()
        .skip(full.chars().count() / 2)
        .take(3)
        .collect();
    let cut = full.find(&stop).unwrap();
    let params = GenerateParams {
        stop: vec![stop.clone()],
        ignore_eos: true,
        ..greedy(16)
    };
    let out = generate(&model, Some(&tok), &golden.ids, &params).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text.as_deref(), Some(&full[..cut]), "stop {stop:?}");
    assert!(out.token_ids.len() < 16);
    assert_eq!(out.token_ids, golden.greedy[..out.token_ids.len()]);
}

#[test]
fn sampling_is_reproducible_by_seed_and_bounded() {
    let model = load("olmoe", None);
    let prompt = &goldens("olmoe").prompts[0].ids;
    let sampled = |seed| GenerateParams {
        max_tokens: 12,
        ignore_eos: true,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            seed,
            shaping: moe_model::sampling::Shaping {
                top_k: 50,
                ..Default::default()
            },
        },
        ..GenerateParams::default()
    };
    let a = generate(&model, None, prompt, &sampled(1))
        .unwrap()
        .token_ids;
    let b = generate(&model, None, prompt, &sampled(1))
        .unwrap()
        .token_ids;
    let c = generate(&model, None, prompt, &sampled(2))
        .unwrap()
        .token_ids;
    assert_eq!(a, b);
    assert_ne!(a, c, "another seed should sample another continuation");
    assert!(a.iter().all(|&t| (t as usize) < model.config().vocab_size));
}

#[test]
fn bad_requests_are_refused() {
    let model = load("qwen2-moe", None);
    assert!(generate(&model, None, &[], &greedy(4)).is_err());
    assert!(generate(&model, None, &[1], &greedy(0)).is_err());
    let too_long = greedy(model.max_context());
    assert!(generate(&model, None, &[1], &too_long).is_err());
    let stop_without_tokenizer = GenerateParams {
        stop: vec!["x".into()],
        ..greedy(4)
    };
    assert!(generate(&model, None, &[1], &stop_without_tokenizer).is_err());
}
