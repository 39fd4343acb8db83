//! A layer's work run by the node's core against the single-process model's MoE block on the
//! Mixtral fixture: the same weighted sums at high and at low precision, and precise refusals.

mod common;

use common::{fixture, max_difference};
use std::sync::Arc;

use moe_expert_node::shard::ShardKey;
use moe_expert_node::work::ExpertRows;
use moe_expert_node::{ExpertSet, LayerWork, Precision, PrecisionPair, WorkError};
use moe_kernels::{Format, Pool};
use moe_model::moe::Route;
use moe_model::{LoadOptions, Model};

const PAIR: PrecisionPair = PrecisionPair {
    high: Format::Bf16,
    low: Format::Q4,
};

fn model(format: Format, pool: &Arc<Pool>) -> Model {
    Model::load(
        &fixture(),
        &LoadOptions::with_expert_format(Some(format)),
        Arc::clone(pool),
    )
    .unwrap()
}

/// Deterministic hidden states for `n` tokens.
fn hidden_states(n: usize, hidden: usize) -> Vec<f32> {
    (0..n * hidden)
        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 300.0)
        .collect()
}

/// The work a gateway would send for `routes`, every pair at `precision`.
fn work_for(layer: u32, tokens: Vec<f32>, routes: &[Route], precision: Precision) -> LayerWork {
    let pairs = routes.iter().enumerate().flat_map(|(t, r)| {
        r.experts
            .iter()
            .zip(&r.weights)
            .map(move |(&e, &w)| (t as u32, e as u32, w))
    });
    LayerWork::from_pairs(layer, routes.len(), tokens, pairs, precision)
}

#[test]
fn weighted_sums_match_the_single_process_model_per_precision() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let high = model(PAIR.high, &pool);
    let low = model(PAIR.low, &pool);
    let cfg = high.config().clone();
    let mut set = ExpertSet::new(cfg.hidden_size);
    for layer in cfg.moe_layers() {
        for m in [&high, &low] {
            for (e, weights) in m.moe_block(layer).unwrap().experts().iter().enumerate() {
                let key = ShardKey {
                    layer: layer as u32,
                    expert: e as u32,
                    format: weights.precision(),
                };
                set.insert(key, weights.clone());
            }
        }
    }
    assert_eq!(set.len(), 2 * cfg.num_layers * cfg.num_experts);

    let n = 9;
    let h = hidden_states(n, cfg.hidden_size);
    for layer in cfg.moe_layers() {
        for (precision, reference) in [(Precision::High, &high), (Precision::Low, &low)] {
            let block = reference.moe_block(layer).unwrap();
            let routes = block.route(&pool, &h, n).unwrap();
            let work = work_for(layer as u32, h.clone(), &routes, precision);
            let got = set.execute(&work, PAIR, &pool).unwrap();
            let want = block.forward(&pool, &h, n).unwrap();
            let worst = max_difference(&got, &want);
            assert!(
                worst <= 1e-6,
                "layer {layer} {precision:?}: max difference {worst}"
            );
        }
    }
}

#[test]
fn bad_work_is_refused_before_any_compute() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let m = model(PAIR.high, &pool);
    let hidden = m.config().hidden_size;
    let mut set = ExpertSet::new(hidden);
    let key = ShardKey {
        layer: 0,
        expert: 1,
        format: PAIR.high,
    };
    set.insert(key, m.moe_block(0).unwrap().experts()[1].clone());
    let rows = |expert, rows: Vec<u32>, weights: Vec<f32>, precision| ExpertRows {
        expert,
        rows,
        weights,
        precision,
        unimportance: 0.0,
    };
    let work = |experts| LayerWork {
        layer: 0,
        n_tokens: 2,
        tokens: vec![0.5; 2 * hidden],
        experts,
    };
    let ok = work(vec![rows(1, vec![0, 1], vec![0.5, 0.25], Precision::High)]);
    assert!(set.execute(&ok, PAIR, &pool).is_ok());

    let cases = [
        (
            work(vec![rows(2, vec![0], vec![1.0], Precision::High)]),
            WorkError::NotHeld {
                layer: 0,
                expert: 2,
                format: Format::Bf16,
            },
        ),
        (
            work(vec![rows(1, vec![0], vec![1.0], Precision::Low)]),
            WorkError::NotHeld {
                layer: 0,
                expert: 1,
                format: Format::Q4,
            },
        ),
        (
            work(vec![rows(1, vec![2], vec![1.0], Precision::High)]),
            WorkError::RowOutOfRange {
                expert: 1,
                row: 2,
                n_tokens: 2,
            },
        ),
        (
            work(vec![rows(1, vec![0, 1], vec![1.0], Precision::High)]),
            WorkError::WeightCount {
                expert: 1,
                rows: 2,
                weights: 1,
            },
        ),
        (
            work(vec![
                rows(1, vec![0], vec![1.0], Precision::High),
                rows(1, vec![1], vec![1.0], Precision::Exact(Format::Bf16)),
            ]),
            WorkError::Duplicate {
                expert: 1,
                format: Format::Bf16,
            },
        ),
    ];
    for (bad, want) in cases {
        assert_eq!(set.execute(&bad, PAIR, &pool).unwrap_err(), want);
    }
    let mut short = ok.clone();
    short.tokens.pop();
    assert!(matches!(
        set.execute(&short, PAIR, &pool),
        Err(WorkError::TokenShape { .. })
    ));
}

#[test]
fn a_backed_up_queue_downgrades_only_groups_all_above_t1() {
    let group = |expert, precision, unimportance| ExpertRows {
        expert,
        rows: vec![0],
        weights: vec![1.0],
        precision,
        unimportance,
    };
    let mut work = LayerWork {
        layer: 0,
        n_tokens: 1,
        tokens: vec![0.0; 4],
        experts: vec![
            group(0, Precision::High, 0.0),
            group(1, Precision::High, 0.7),
            group(2, Precision::High, 0.6),
            group(3, Precision::Low, 0.9),
        ],
    };
    assert_eq!(work.downgrade_unimportant(0.6), 1);
    let precisions: Vec<Precision> = work.experts.iter().map(|g| g.precision).collect();
    assert_eq!(
        precisions,
        [
            Precision::High,
            Precision::Low,
            Precision::High,
            Precision::Low
        ]
    );
}
