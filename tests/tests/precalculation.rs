//! DAOP's pre-calculation through a real cluster: a gateway with `--pre-calculate alternate` in
//! front of two expert nodes serving the Mixtral fixture (2 MoE layers x 8 experts). For `auto`
//! requests layer 0's messages also carry layer 1's experts as layer 1's router predicts them
//! from layer 0's input, run on that input, and layer 1 uses those outputs without a round trip
//! of its own. The test computes the same thing in this process with the model's own experts
//! and checks the cluster agrees with it: prompt scoring (echo with logprobs) within float
//! noise, and greedy decoding token for token. `exact` requests are never pre-calculated: they
//! still equal the single-process model. The gateway's metrics count the layers answered from
//! a pre-calculation (one per `auto` forward pass here), the routed pairs they covered and the
//! pairs each node pre-calculated.

use std::process::Command;

use moe_model::moe::{LocalExperts, Route, RoutedExperts};
use moe_model::{LoadOptions, Logits, Model};
use moe_tests::EtcdServer;
use moe_tests::http::{get_text, post, wait_ready};
use moe_tests::servers::{self, fixture};

const CLUSTER: &str = "precalc";

/// The fixture's routed experts with layer 1 computed at layer 0, as `alternate` defines it:
/// layer 1's router applied to layer 0's routed-expert input, layer 1's experts run on it.
struct Alternate<'a> {
    model: &'a Model,
    early: Option<Vec<f32>>,
}

impl Alternate<'_> {
    fn local(&self, layer: usize, h: &[f32], routes: &[Route]) -> moe_model::Result<Vec<f32>> {
        let block = self.model.moe_block(layer).expect("an MoE layer");
        let mut experts = LocalExperts {
            experts: block.experts(),
            pool: self.model.pool(),
        };
        experts.run(layer, h, routes)
    }
}

impl RoutedExperts for Alternate<'_> {
    fn run(&mut self, layer: usize, h: &[f32], routes: &[Route]) -> moe_model::Result<Vec<f32>> {
        if layer == 1 {
            return Ok(self.early.take().expect("layer 0 computed layer 1"));
        }
        let next = self.model.moe_block(1).expect("layer 1 is an MoE layer");
        let predicted = next.route(self.model.pool(), h, routes.len())?;
        self.early = Some(self.local(1, h, &predicted)?);
        self.local(layer, h, routes)
    }
}

/// Log-probabilities of `tokens[1..]` under `logits` (`[tokens.len(), vocab]`).
fn logprobs(logits: &[f32], tokens: &[u32], vocab: usize) -> Vec<f64> {
    logits
        .chunks_exact(vocab)
        .zip(&tokens[1..])
        .map(|(row, &next)| moe_model::ops::log_softmax(row)[next as usize])
        .collect()
}

/// `n` greedy tokens after `prompt`, with the routed experts run by `routed`.
fn greedy(model: &Model, prompt: &[u32], n: usize, routed: &mut dyn RoutedExperts) -> Vec<u32> {
    let mut cache = model.new_cache();
    let (mut out, mut feed) = (Vec::new(), prompt.to_vec());
    while out.len() < n {
        let logits = model
            .forward_with(&feed, &mut cache, Logits::Last, routed)
            .unwrap();
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32;
        out.push(best);
        feed = vec![best];
    }
    out
}

/// The sum of every series of `name` in `metrics`.
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The log-probabilities of the prompt's `tokens` after its first, as the gateway scores them
/// at `precision`.
async fn scored(gateway: &str, prompt: &str, tokens: usize, precision: &str) -> Vec<f64> {
    let body = serde_json::json!({
        "model": "mixtral", "prompt": prompt, "echo": true, "logprobs": 1, "max_tokens": 0,
        "temperature": 0, "precision": precision,
    });
    let (status, body) = post(gateway, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{body}");
    // Prompt scoring: nothing generated, the prompt echoed.
    assert_eq!(body["usage"]["completion_tokens"], 0, "{body}");
    assert_eq!(body["choices"][0]["text"], prompt, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    let values = body["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap_or_else(|| panic!("token_logprobs in {body}"))
        .clone();
    assert_eq!(values.len(), tokens, "{body}");
    // The first prompt token is not scored.
    values[1..tokens]
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_answers_every_other_moe_layer_from_the_layer_before_it() {
    let etcd = EtcdServer::start().await;
    let shards = tempfile::tempdir().unwrap();
    let endpoint = etcd.endpoint();
    let _coordinator = servers::coordinator(&endpoint, CLUSTER, &[]);
    let _nodes: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| {
            let command = Command::new(servers::node_binary());
            let dir = shards.path().join(id);
            servers::node(command, &endpoint, CLUSTER, id, "127.0.0.1:0", &dir)
        })
        .collect();
    let flags = [
        "--pre-calculate",
        "alternate",
        // The links stay at full precision, so `auto` differs from `exact` only by the
        // pre-calculation.
        "--precision-ladder",
        "off",
        "--prefetch-layers",
        "0",
    ];
    let gateway = servers::gateway(&endpoint, CLUSTER, &flags);
    wait_ready(&gateway.address).await;

    let options = LoadOptions::with_expert_format(Some(moe_kernels::Format::F16));
    let pool = std::sync::Arc::new(moe_kernels::Pool::new(1).unwrap());
    let model = Model::load(&fixture(), &options, pool).unwrap();
    let vocab = model.config().vocab_size;
    let tokenizer = moe_model::Tokenizer::from_dir(&fixture()).unwrap();
    let text = "The quick brown fox jumps over the lazy dog";
    let prompt = tokenizer.encode(text).unwrap();

    let mut alternate = Alternate {
        model: &model,
        early: None,
    };
    let logits = model
        .forward_with(&prompt, &mut model.new_cache(), Logits::All, &mut alternate)
        .unwrap();
    let want = logprobs(&logits, &prompt, vocab);
    let plain = model
        .forward(&prompt, &mut model.new_cache(), Logits::All)
        .unwrap();
    let plain = logprobs(&plain, &prompt, vocab);
    let moved = want.iter().zip(&plain).map(|(a, b)| (a - b).abs());
    assert!(
        moved.fold(0.0, f64::max) > 1e-3,
        "pre-calculation changes the scores"
    );

    let got = scored(&gateway.address, text, prompt.len(), "auto").await;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-4, "auto, token {i}: {g} vs {w}");
    }
    let exact = scored(&gateway.address, text, prompt.len(), "exact").await;
    for (i, (g, w)) in exact.iter().zip(&plain).enumerate() {
        assert!((g - w).abs() < 1e-4, "exact, token {i}: {g} vs {w}");
    }

    let n = 8;
    let expected = greedy(&model, &prompt, n, &mut alternate);
    let body = serde_json::json!({
        "model": "mixtral", "prompt": prompt, "max_tokens": n, "temperature": 0,
        "ignore_eos": true,
    });
    let (status, body) = post(&gateway.address, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["text"],
        tokenizer.decode(&expected).unwrap().as_str(),
        "greedy auto decoding equals the pre-calculating reference: {body}"
    );

    let metrics = get_text(&gateway.address, "/metrics").await.unwrap();
    // One forward pass scoring the prompt, then one for the completion's prompt and one per
    // token after its first: each saves layer 1's round trip. Exact passes save none.
    let passes = 1 + n;
    assert_eq!(
        total(&metrics, "moe:precalculated_layers_total"),
        passes as f64,
        "{metrics}"
    );
    let routed = total(&metrics, "moe:precalculated_routed_pairs_total");
    let hits = total(&metrics, "moe:precalculated_hits_total");
    let top_k = model.config().top_k;
    let positions = prompt.len() + (prompt.len() + n - 1);
    assert_eq!(routed, (positions * top_k) as f64, "{metrics}");
    assert!(hits <= routed, "{metrics}");
    let precalculated = total(&metrics, "moe:expert_pairs_precalculated_total");
    assert_eq!(precalculated, routed, "every predicted pair ran: {metrics}");
    println!("pre-calculated pairs chosen by the router: {hits} of {routed}");
}
