//! A batched step over several sequences (attention per sequence, feed-forward blocks on all
//! rows together) gives each sequence exactly what its own forward pass gives, on every fixture;
//! a bad sequence fails the step and leaves every cache as it was.

mod common;

use common::{ARCHS, load};
use moe_model::{Logits, SequenceStep};

#[test]
fn a_batched_step_equals_each_sequence_alone() {
    for arch in ARCHS {
        let model = load(arch, None);
        let prompts: [&[u32]; 3] = [&[1, 5, 9, 2, 7], &[3], &[8, 8, 4]];
        // Alone: prefill, then one decode step each.
        let mut alone = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let mut cache = model.new_cache();
            let prefill = model.forward(p, &mut cache, Logits::All).unwrap();
            let decode = model
                .forward(&[10 + i as u32], &mut cache, Logits::Last)
                .unwrap();
            alone.push((prefill, decode));
        }
        // Together: the same two steps for all three sequences at once.
        let mut caches: Vec<_> = prompts.iter().map(|_| model.new_cache()).collect();
        let mut steps: Vec<SequenceStep> = prompts
            .iter()
            .zip(&mut caches)
            .map(|(p, cache)| SequenceStep {
                tokens: p,
                cache,
                want: Logits::All,
            })
            .collect();
        let prefill = model.forward_batch(&mut steps, None).unwrap();
        let next: Vec<[u32; 1]> = (0..3).map(|i| [10 + i as u32]).collect();
        let mut steps: Vec<SequenceStep> = next
            .iter()
            .zip(&mut caches)
            .map(|(t, cache)| SequenceStep {
                tokens: t,
                cache,
                want: Logits::Last,
            })
            .collect();
        let decode = model.forward_batch(&mut steps, None).unwrap();
        for (i, (p, d)) in alone.iter().enumerate() {
            assert_eq!(&prefill[i], p, "{arch} sequence {i} prefill");
            assert_eq!(&decode[i], d, "{arch} sequence {i} decode");
        }
    }
}

#[test]
fn a_bad_sequence_fails_the_step_and_leaves_every_cache_as_it_was() {
    let model = load("mixtral", None);
    let vocab = model.config().vocab_size as u32;
    let (mut a, mut b) = (model.new_cache(), model.new_cache());
    model.forward(&[1, 2], &mut a, Logits::Last).unwrap();
    let mut steps = [
        SequenceStep {
            tokens: &[3],
            cache: &mut a,
            want: Logits::Last,
        },
        SequenceStep {
            tokens: &[vocab],
            cache: &mut b,
            want: Logits::Last,
        },
    ];
    assert!(model.forward_batch(&mut steps, None).is_err());
    assert_eq!((a.len(), b.len()), (2, 0));
}

/// A long prompt prefilled at once, whose attention heads are shared among the pool's threads,
/// ends where the same tokens fed one at a time (attention on the calling thread) end: the same
/// last logits on every fixture, up to the summation order of the batched matrix products.
#[test]
fn a_long_prefill_shared_among_threads_equals_feeding_token_by_token() {
    for arch in ARCHS {
        let model = load(arch, None);
        let vocab = model.config().vocab_size as u32;
        let tokens: Vec<u32> = (0..200u32).map(|i| (i * 7 + 3) % vocab).collect();
        let mut cache = model.new_cache();
        let at_once = model.forward(&tokens, &mut cache, Logits::Last).unwrap();
        let mut cache = model.new_cache();
        let mut one_by_one = Vec::new();
        for t in &tokens {
            one_by_one = model.forward(&[*t], &mut cache, Logits::Last).unwrap();
        }
        assert_eq!(at_once.len(), one_by_one.len(), "{arch}");
        for (i, (a, b)) in at_once.iter().zip(&one_by_one).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{arch} logit {i}: {a} at once, {b} token by token"
            );
        }
    }
}
