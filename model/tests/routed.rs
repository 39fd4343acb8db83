//! The seam a cluster gateway uses: a model loaded without its routed experts, with every MoE
//! layer's routed experts run by a `RoutedExperts` given to `forward_with`, computes exactly what
//! the whole single-process model computes.

mod common;

use common::{ARCHS, fixture_dir, load, pool};
use moe_model::moe::{LocalExperts, Route, RoutedExperts};
use moe_model::{LoadOptions, Logits, Model};

/// Runs each layer's routed experts with the experts of a fully loaded model, counting calls.
struct Borrowed<'a> {
    model: &'a Model,
    calls: Vec<usize>,
}

impl RoutedExperts for Borrowed<'_> {
    fn run(&mut self, layer: usize, h: &[f32], routes: &[Route]) -> moe_model::Result<Vec<f32>> {
        self.calls.push(layer);
        let block = self.model.moe_block(layer).expect("a MoE layer");
        LocalExperts {
            experts: block.experts(),
            pool: self.model.pool(),
        }
        .run(layer, h, routes)
    }
}

#[test]
fn a_model_without_routed_experts_plus_a_runner_equals_the_whole_model() {
    for arch in ARCHS {
        let whole = load(arch, None);
        let options = LoadOptions {
            skip_routed_experts: true,
            ..LoadOptions::default()
        };
        let dense = Model::load(&fixture_dir(arch), &options, pool()).unwrap();
        let ids = [1, 5, 9, 2, 7];
        let want = whole
            .forward(&ids, &mut whole.new_cache(), Logits::All)
            .unwrap();
        let mut runner = Borrowed {
            model: &whole,
            calls: Vec::new(),
        };
        let got = dense
            .forward_with(&ids, &mut dense.new_cache(), Logits::All, &mut runner)
            .unwrap();
        assert_eq!(got, want, "{arch}");
        let moe_layers: Vec<usize> = whole.config().moe_layers().collect();
        assert_eq!(runner.calls, moe_layers, "{arch}: one call per MoE layer");

        let refused = dense.forward(&ids, &mut dense.new_cache(), Logits::Last);
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("without its routed experts"),
            "{arch}: {message}"
        );
    }
}
