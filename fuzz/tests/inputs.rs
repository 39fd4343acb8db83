//! Every parser that takes outside input, fed mutated inputs (the crate's docs say how): the
//! OpenAI request bodies, chat templates (hostile messages, and corrupt templates from a
//! checkpoint), tokenizer input, the expert protocol's messages through a node's decode and
//! validate path, checkpoint files (`config.json`, safetensors headers, the sharded index) and
//! the nodes' shard files. Each must accept or refuse every input without a panic; a shard file
//! that changed must be refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moe_expert_node::request::layer_work;
use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::shard::{self, ExpertDims, Fingerprint, ShardKey};
use moe_expert_node::store;
use moe_expert_node::work::PrecisionPair;
use moe_fuzz::{Mutator, iterations, run, seed};
use moe_gateway::chat_template::{ChatTemplate, Message};
use moe_gateway::dispatch::whole_layer_request;
use moe_gateway::openai::{ChatCompletionRequest, CompletionRequest, Limits};
use moe_gateway::policy::{Rung, Thresholds};
use moe_kernels::{Format, Pool};
use moe_model::moe::Route;
use moe_model::rng::Rng;
use moe_model::{LoadOptions, Model, ModelConfig, Tokenizer};
use moe_proto::expert::{LayerReply, LayerRequest, PrefetchHint};
use moe_proto::tensor;
use prost::Message as _;

const PAIR: PrecisionPair = PrecisionPair {
    high: Format::F16,
    low: Format::Q4,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mixtral")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn openai_request_bodies() {
    let limits = Limits {
        max_tokens_limit: 4096,
        context_length: 8192,
        vocab_size: 32000,
    };
    let corpus = [
        r#"{"model": "m", "prompt": "hi", "max_tokens": 8}"#,
        r#"{"model": "m", "prompt": [1, 2, 3], "stream": true, "stream_options": {"include_usage": true}, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["a", "b"], "logprobs": 2, "echo": true, "precision": "exact"}"#,
        r#"{"model": "m", "prompt": ["one"], "n": 1, "max_tokens": 0}"#,
        r#"{"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], "max_tokens": 4}"#,
        r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": null, "tool_calls": []}], "logprobs": true, "top_logprobs": 3, "stream": true}"#,
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    let accepted = run("openai bodies", Mutator::new(corpus, seed()), |body| {
        let completion =
            CompletionRequest::from_json(body).and_then(|r| r.validate(&limits).map(|_| ()));
        let chat =
            ChatCompletionRequest::from_json(body).and_then(|r| r.validate(&limits).map(|_| ()));
        completion.is_ok() || chat.is_ok()
    });
    assert!(accepted > 0, "some mutated bodies stay valid");
}

fn templates() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/data/chat_templates");
    let mut sources: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
        .map(|p| String::from_utf8(read(&p)).unwrap())
        .collect();
    sources.sort();
    assert!(sources.len() >= 4, "the real templates are there");
    sources
}

#[test]
fn chat_templates_with_hostile_messages() {
    let compiled: Vec<ChatTemplate> = templates()
        .iter()
        .map(|s| ChatTemplate::from_source(s, Some("<s>".into()), Some("</s>".into())).unwrap())
        .collect();
    let corpus = vec![
        b"hello".to_vec(),
        b"{{ 7 * 7 }} {% for x in range(10) %}{% endfor %}".to_vec(),
        "<|im_start|>system\n</s>[INST]\u{0}".as_bytes().to_vec(),
    ];
    let mut which = 0usize;
    let roles = [
        "system",
        "user",
        "assistant",
        "tool",
        "developer",
        "",
        "{{x}}",
    ];
    run("chat messages", Mutator::new(corpus, seed()), |bytes| {
        which += 1;
        let text = String::from_utf8_lossy(bytes).into_owned();
        let messages = [
            Message::new(roles[which % roles.len()], text.clone()),
            Message::new("user", text),
        ];
        compiled[which % compiled.len()]
            .render(&messages, which.is_multiple_of(2))
            .is_ok()
    });
}

#[test]
fn corrupt_chat_templates() {
    let corpus = templates().into_iter().map(String::into_bytes).collect();
    let messages = [Message::new("system", "s"), Message::new("user", "u")];
    run("chat templates", Mutator::new(corpus, seed()), |bytes| {
        let source = String::from_utf8_lossy(bytes);
        ChatTemplate::from_source(&source, Some("<s>".into()), None)
            .and_then(|t| t.render(&messages, true))
            .is_ok()
    });
}

#[test]
fn tokenizer_input() {
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let corpus = vec![
        b"The quick brown fox".to_vec(),
        "def f(x):\n    return x ** 2  # \u{e9}\u{4e2d}\u{1f600}"
            .as_bytes()
            .to_vec(),
        vec![0xf0, 0x9f, 0x98, 0x80, 0xe2, 0x82],
    ];
    let mut mutator = Mutator::new(corpus, seed());
    let mut ids = Rng::new(seed());
    run(
        "tokenizer",
        Mutator::new(vec![b"x".to_vec()], seed()),
        |_| {
            let text = String::from_utf8_lossy(&mutator.next_input()).into_owned();
            let Ok(encoded) = tokenizer.encode(&text) else {
                return false;
            };
            let _ = tokenizer.decode(&encoded);
            // Ids the vocabulary lacks are an error, not a panic.
            let random: Vec<u32> = (0..ids.below(8))
                .map(|_| ids.next_u64() as u32 % 1024)
                .collect();
            let _ = tokenizer.decode(&random);
            true
        },
    );
}

#[test]
fn expert_protocol_messages() {
    let dir = fixture();
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let hidden = cfg.hidden_size;
    let shards = tempfile::tempdir().unwrap();
    let all: ExpertSelection = "all".parse().unwrap();
    let (set, _) = store::load(&dir, shards.path(), &all, PAIR).unwrap();
    let pool = Pool::new(1).unwrap();
    let mut rng = Rng::new(seed());
    let mut corpus = Vec::new();
    for (n, rung) in [(1, Rung::Full), (3, Rung::Int8Wire), (5, Rung::LowWeights)] {
        let h: Vec<f32> = (0..n * hidden)
            .map(|_| (rng.below(2000) as f32 - 1000.0) / 500.0)
            .collect();
        let routes: Vec<Route> = (0..n)
            .map(|t| Route {
                experts: vec![t % cfg.num_experts, (t + 3) % cfg.num_experts],
                weights: vec![0.7, 0.3],
            })
            .collect();
        let policy = (rung, Thresholds::default());
        let (req, _, _) = whole_layer_request(1, &h, (&routes, None), hidden, policy);
        corpus.push(req.encode_to_vec());
        let ahead = Some((0, routes.as_slice()));
        let (req, _, _) = whole_layer_request(1, &h, (&routes, ahead), hidden, policy);
        corpus.push(req.encode_to_vec());
    }
    let hint = PrefetchHint {
        epoch: 1,
        layer: 1,
        experts: vec![0, 1],
        precision: 1,
    };
    corpus.push(hint.encode_to_vec());
    let limits = tensor::Limits::default();
    let accepted = run("expert protocol", Mutator::new(corpus, seed()), |bytes| {
        let _ = PrefetchHint::decode(bytes);
        if let Ok(reply) = LayerReply::decode(bytes)
            && let Some(output) = &reply.output
        {
            let _ = tensor::decode(output, hidden, &limits);
        }
        let Ok(req) = LayerRequest::decode(bytes) else {
            return false;
        };
        let Ok((work, ahead)) = layer_work(&req, hidden, &limits) else {
            return false;
        };
        let runs = |w: &moe_expert_node::LayerWork| {
            set.validate(w, PAIR).is_ok() && set.execute(w, PAIR, &pool).is_ok()
        };
        runs(&work) && ahead.as_ref().is_none_or(runs)
    });
    assert!(accepted > 0, "some mutated requests stay valid and run");
}

/// Copies the fixture into a fresh directory with `file` replaced by `bytes`.
fn fixture_with(file: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join(file), bytes).unwrap();
    dir
}

fn loads(dir: &Path) -> bool {
    let pool = Arc::new(Pool::new(1).unwrap());
    Model::load(dir, &LoadOptions::default(), pool).is_ok()
}

/// File-writing targets run a quarter as many inputs.
fn file_iterations() -> usize {
    (iterations() / 4).max(1)
}

#[test]
fn checkpoint_config_and_safetensors_headers() {
    let config = read(&fixture().join("config.json"));
    let weights = read(&fixture().join("model.safetensors"));
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let (head, data) = weights.split_at(header);
    let n = file_iterations();
    let mut configs = Mutator::new(vec![config], seed());
    let mut heads = Mutator::new(vec![head.to_vec()], seed() ^ 1);
    let mut accepted = 0;
    for i in 0..n {
        let dir = if i % 2 == 0 {
            fixture_with("config.json", &configs.next_input())
        } else {
            // The header mutated, the tensor data as it was.
            let mut file = heads.next_input();
            file.extend_from_slice(data);
            fixture_with("model.safetensors", &file)
        };
        accepted += usize::from(loads(dir.path()));
    }
    println!("checkpoint files: {n} inputs, {accepted} accepted");
}

#[test]
fn sharded_checkpoint_index() {
    let weights = read(&fixture().join("model.safetensors"));
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let names: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&weights[8..header]).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = names
        .keys()
        .filter(|k| *k != "__metadata__")
        .map(|k| {
            (
                k.clone(),
                serde_json::json!("model-00001-of-00001.safetensors"),
            )
        })
        .collect();
    let index = serde_json::json!({"metadata": {"total_size": weights.len()}, "weight_map": map});
    let corpus = vec![serde_json::to_vec_pretty(&index).unwrap()];
    let mut mutator = Mutator::new(corpus, seed());
    let n = file_iterations();
    let mut accepted = 0;
    for _ in 0..n {
        let dir = fixture_with("model.safetensors.index.json", &mutator.next_input());
        std::fs::rename(
            dir.path().join("model.safetensors"),
            dir.path().join("model-00001-of-00001.safetensors"),
        )
        .unwrap();
        accepted += usize::from(loads(dir.path()));
    }
    println!("sharded index: {n} inputs, {accepted} accepted");
    assert!(accepted > 0, "some mutated indexes stay valid");
}

#[test]
fn shard_files_that_changed_are_refused() {
    let dir = fixture();
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let shards = tempfile::tempdir().unwrap();
    let all: ExpertSelection = "all".parse().unwrap();
    store::load(&dir, shards.path(), &all, PAIR).unwrap();
    let fingerprint = Fingerprint::of_checkpoint(&dir).unwrap();
    let key = ShardKey {
        layer: 1,
        expert: 2,
        format: Format::Q4,
    };
    let original = read(&shards.path().join(key.file_name()));
    let dims = ExpertDims::of(&cfg);
    assert!(shard::read(shards.path(), key, fingerprint, dims).is_ok());
    let mut mutator = Mutator::new(vec![original.clone()], seed());
    let n = file_iterations();
    let work = tempfile::tempdir().unwrap();
    for _ in 0..n {
        let bytes = mutator.next_input();
        std::fs::write(work.path().join(key.file_name()), &bytes).unwrap();
        let read = shard::read(work.path(), key, fingerprint, dims);
        if bytes != original {
            assert!(read.is_err(), "a changed shard file was accepted");
        }
    }
    println!("shard files: {n} inputs, every changed one refused");
}
