//! The single-process model against goldens recorded from HuggingFace transformers (float32) by
//! `tests/fixtures/make_fixtures.py`: last-position logits, every position's logits, a 16-token
//! greedy continuation and tokenization, for each supported architecture.

mod common;

use common::{ARCHS, assert_close, fixture_dir, goldens, load};
use moe_kernels::Format;
use moe_model::{GenerateParams, Logits, Tokenizer, generate};

const TOLERANCE: f32 = 1e-4;

#[test]
fn last_position_logits_match_transformers() {
    for arch in ARCHS {
        let model = load(arch, None);
        for (i, p) in goldens(arch).prompts.iter().enumerate() {
            let mut cache = model.new_cache();
            let logits = model.forward(&p.ids, &mut cache, Logits::Last).unwrap();
            assert_close(
                &logits,
                &p.last_logits,
                TOLERANCE,
                &format!("{arch} prompt {i}"),
            );
        }
    }
}

#[test]
fn every_position_matches_and_prefill_equals_decode() {
    for arch in ARCHS {
        let model = load(arch, None);
        let g = goldens(arch).all_positions;
        let vocab = model.config().vocab_size;
        let mut cache = model.new_cache();
        let all = model.forward(&g.ids, &mut cache, Logits::All).unwrap();
        let mut step_cache = model.new_cache();
        for (t, want) in g.logits.iter().enumerate() {
            assert_close(
                &all[t * vocab..(t + 1) * vocab],
                want,
                TOLERANCE,
                &format!("{arch} position {t}"),
            );
            let one = model
                .forward(&g.ids[t..t + 1], &mut step_cache, Logits::Last)
                .unwrap();
            assert_close(
                &one,
                want,
                TOLERANCE,
                &format!("{arch} position {t}, one token at a time"),
            );
        }
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for arch in ARCHS {
        let model = load(arch, None);
        let params = GenerateParams {
            max_tokens: 16,
            ignore_eos: true,
            ..GenerateParams::default()
        };
        for (i, p) in goldens(arch).prompts.iter().enumerate() {
            let out = generate(&model, None, &p.ids, &params).unwrap();
            assert_eq!(out.token_ids, p.greedy, "{arch} prompt {i}");
        }
    }
}

/// The MXFP4 fixture's experts are held as stored, so the goldens above (computed on their
/// exactly decoded weights) check the MXFP4 kernels themselves.
#[test]
fn mxfp4_experts_are_served_as_stored() {
    let model = load("gpt-oss-mxfp4", None);
    for layer in 0..model.config().num_layers {
        let experts = model.moe_block(layer).unwrap().experts();
        assert!(experts.iter().all(|e| e.precision() == Format::Mxfp4));
    }
}

#[test]
fn tokenizer_matches_huggingface_tokenizers() {
    for arch in ARCHS {
        let tok = Tokenizer::from_dir(&fixture_dir(arch)).unwrap();
        for case in goldens(arch).tokenizer {
            assert_eq!(
                tok.encode(&case.text).unwrap(),
                case.ids,
                "{arch}: {:?}",
                case.text
            );
            // Decoding leaves special tokens out, so only plain text round-trips exactly.
            if !case.text.contains("<s>") && !case.text.contains("</s>") {
                assert_eq!(tok.decode(&case.ids).unwrap(), case.text, "{arch}: decode");
            }
        }
    }
}
