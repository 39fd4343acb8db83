//! `moe up` as the README runs it: a local cluster on a generated model answers a completion
//! over HTTP, `moe eval-quality --gateway` scores text through it, and SIGTERM stops every
//! process it started.
//!
//! Needs `etcd` on the PATH (`scripts/test.sh` installs Debian's `etcd-server`) and the
//! `coordinator`, `expert-node` and `gateway` binaries next to `moe` (`cargo test --workspace`
//! builds them all).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use moe_gateway::exposition::Exposition;
use moe_gateway::metric_names as names;
use moe_launch::http::{Request, Response, blocking};

/// `POST /v1/completions` with `body`, answered within a minute.
fn post(address: &str, body: &str) -> Response {
    let request = Request::post("/v1/completions", body);
    blocking::call(address, &request, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("POST /v1/completions: {e}"))
}

/// Writes a `tiny` random checkpoint of `arch` (seed `seed`, `extra` gen-model flags) under
/// `work`.
fn gen_model(work: &Path, arch: &str, seed: &str, extra: &[&str]) -> PathBuf {
    let model = work.join(arch);
    let generated = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args([
            "gen-model",
            "--arch",
            arch,
            "--preset",
            "tiny",
            "--seed",
            seed,
        ])
        .args(extra)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(generated.status.success());
    model
}

/// `moe up` on `model` with two nodes and `extra` flags, its run directory under `work`; once it
/// says it is ready, the process and the gateway's HTTP address.
fn moe_up(work: &Path, model: &Path, extra: &[&str]) -> (Child, String) {
    let (up, [http, _]) = moe_up_endpoints(work, model, extra);
    (up, http)
}

/// As [`moe_up`], with the gateway's HTTP and gRPC addresses.
fn moe_up_endpoints(work: &Path, model: &Path, extra: &[&str]) -> (Child, [String; 2]) {
    let mut up = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args([
            "up",
            "--nodes",
            "2",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--ready-timeout",
            "120",
        ])
        .args(extra)
        .arg("--model")
        .arg(model)
        .arg("--dir")
        .arg(work.join("run"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (send, lines) = std::sync::mpsc::channel();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let (mut http, mut grpc) = (None, None);
    let start = Instant::now();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(150).saturating_sub(start.elapsed()))
            .expect("moe up reports ready");
        let address = line.strip_prefix("gateway").and_then(|rest| {
            let url = rest.split_whitespace().next()?;
            let (scheme, address) = url.split_once("://")?;
            Some((scheme.to_string(), address.to_string()))
        });
        match address {
            Some((scheme, address)) if scheme == "http" => http = Some(address),
            Some((scheme, address)) if scheme == "grpc" => grpc = Some(address),
            _ => {}
        }
        if line.starts_with("ready") {
            break;
        }
    }
    let http = http.expect("moe up prints the gateway's HTTP address");
    (
        up,
        [
            http,
            grpc.expect("moe up prints the gateway's gRPC address"),
        ],
    )
}

/// Sends `moe up` SIGTERM and waits (a minute at most) for it to exit.
fn stop(mut up: Child) -> ExitStatus {
    let pid = up.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = up.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "moe up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `moe generate --json` on `model` for the token ids `prompt` (greedy), with `extra` flags.
fn generate(model: &Path, prompt: &[u64], max_tokens: usize, extra: &[&str]) -> serde_json::Value {
    let ids: Vec<String> = prompt.iter().map(u64::to_string).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args([
            "generate",
            "--json",
            "--max-tokens",
            &max_tokens.to_string(),
        ])
        .args(["--prompt-ids", &ids.join(",")])
        .args(extra)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A greedy `exact` completion of the token ids `prompt` from the gateway at `address`; its body,
/// once the answer is a 200.
fn complete_exact(
    address: &str,
    model: &str,
    prompt: &[u64],
    max_tokens: usize,
) -> serde_json::Value {
    let body = serde_json::json!({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "precision": "exact",
    });
    let response = post(address, &body.to_string());
    assert!(
        response.head.text.starts_with("HTTP/1.1 200"),
        "{model}: {response:?}"
    );
    serde_json::from_str(&response.body).unwrap()
}

#[test]
fn moe_up_serves_a_completion_and_stops_everything_it_started() {
    let work = tempfile::tempdir().unwrap();
    let model = gen_model(work.path(), "mixtral", "3", &[]);
    let dir = work.path().join("run");
    let (up, gateway) = moe_up(work.path(), &model, &[]);
    let response = post(
        &gateway,
        r#"{"model": "mixtral", "prompt": "Hello", "max_tokens": 8, "temperature": 0}"#,
    );
    if !response.head.text.starts_with("HTTP/1.1 200") {
        for log in std::fs::read_dir(dir.join("logs")).unwrap() {
            let log = log.unwrap().path();
            eprintln!(
                "--- {}\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap()
            );
        }
        panic!("{response:?}");
    }
    assert!(
        response.body.contains("\"completion_tokens\":8"),
        "{response:?}"
    );

    // Held-out text scored through the cluster: exact and auto, and how far they agree.
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let scored = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args([
            "eval-quality",
            "--gateway",
            &gateway,
            "--window",
            "48",
            "--tokens",
            "96",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--text")
        .arg(&readme)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&scored.stdout);
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(json["tokens"].as_u64().unwrap() > 48, "{json}");
    let exact = json["exact_perplexity"].as_f64().unwrap();
    assert!(exact.is_finite() && exact > 1.0, "{json}");
    let agreement = json["top1_agreement"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&agreement), "{json}");

    assert!(stop(up).success());
    // Nothing it started is left: the gateway's port is closed.
    assert!(
        TcpStream::connect(&gateway).is_err(),
        "the gateway still answers"
    );
}

/// `moe up` passes an API key and any other gateway or node flag through, and prints the
/// gateway's gRPC address.
#[test]
fn moe_up_passes_keys_and_flags_through_and_prints_the_grpc_address() {
    let work = tempfile::tempdir().unwrap();
    let model = gen_model(work.path(), "mixtral", "3", &[]);
    let flags = [
        "--api-key",
        "sesame",
        "--gateway-arg=--pre-calculate=alternate",
        "--node-arg=--threads=1",
    ];
    let (up, [http, grpc]) = moe_up_endpoints(work.path(), &model, &flags);
    let body = r#"{"model": "mixtral", "prompt": "Hello", "max_tokens": 4}"#;
    let refused = post(&http, body);
    assert!(refused.head.text.starts_with("HTTP/1.1 401"), "{refused:?}");
    let request = Request::post("/v1/completions", body).header("authorization", "Bearer sesame");
    let answered = blocking::call(&http, &request, Duration::from_secs(60)).unwrap();
    assert!(
        answered.head.text.starts_with("HTTP/1.1 200"),
        "{answered:?}"
    );
    let metrics = blocking::call(&http, &Request::get("/metrics"), Duration::from_secs(10));
    let text = metrics.unwrap().body;
    let saved = Exposition::new(&text).value(names::PRECALCULATED_LAYERS_TOTAL);
    assert!(saved > 0.0, "the gateway pre-calculates: {text}");
    assert!(
        TcpStream::connect(&grpc).is_ok(),
        "the gRPC API is at {grpc}"
    );
    assert!(stop(up).success());
}

/// A Qwen3-MoE whose expert width (40) fits no 32-element block, served by `moe up` with nodes at
/// q8+q2: every down matrix is stored at f16 instead, on the nodes as in the single-process model,
/// and an `exact` completion equals the single-process model's greedy text at q8.
#[test]
fn an_expert_width_no_block_fits_serves_greedy_exact_through_moe_up() {
    let work = tempfile::tempdir().unwrap();
    let set = ["--set", "moe_intermediate_size=40"];
    let model = gen_model(work.path(), "qwen3-moe", "5", &set);
    let prompt = [1, 17, 42, 7, 99, 3];
    let want = generate(&model, &prompt, 12, &["--expert-precision", "q8"]);

    let (up, gateway) = moe_up(work.path(), &model, &["--precisions", "q8+q2"]);
    let got = complete_exact(&gateway, "qwen3-moe", &prompt, 12);
    assert_eq!(got["choices"][0]["text"], want["text"], "{got}");
    assert_eq!(got["usage"]["completion_tokens"], want["completion_tokens"]);
    let log = std::fs::read_to_string(work.path().join("run/logs/node-0.log")).unwrap();
    let said = log
        .lines()
        .find(|l| l.contains("does not fit its format"))
        .unwrap_or_else(|| panic!("the node says nothing of the fallback:\n{log}"));
    assert!(
        said.contains("stored=f16") && said.contains("40 columns"),
        "{said}"
    );
    assert!(stop(up).success());
}

/// The fixture `arch` (tests/fixtures), served by `moe up` at the precision pair its checkpoint
/// implies, answers an `exact` completion of a golden prompt with the greedy tokens `transformers`
/// produced, and `moe generate` (the single-process model) with the same.
fn fixture_serves_the_transformers_greedy_tokens(arch: &str) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(arch);
    let goldens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("goldens.json")).unwrap())
            .unwrap();
    let golden = &goldens["prompts"][1];
    let prompt: Vec<u64> = serde_json::from_value(golden["ids"].clone()).unwrap();
    let want: Vec<u64> = serde_json::from_value(golden["greedy"].clone()).unwrap();
    let single = generate(&fixture, &prompt, want.len(), &[]);
    assert_eq!(single["token_ids"], serde_json::json!(want), "{arch}");

    let work = tempfile::tempdir().unwrap();
    let (up, gateway) = moe_up(work.path(), &fixture, &[]);
    let got = complete_exact(&gateway, arch, &prompt, want.len());
    assert_eq!(got["choices"][0]["text"], single["text"], "{arch}: {got}");
    assert_eq!(got["usage"]["completion_tokens"], want.len(), "{arch}");
    assert!(stop(up).success());
}

/// DeepSeek-V3 stored in fp8 (served as fp8+q4: exact requests run the stored fp8 weights).
#[test]
fn the_fp8_deepseek_v3_fixture_serves_the_transformers_greedy_tokens() {
    fixture_serves_the_transformers_greedy_tokens("deepseek-v3-fp8");
}

#[test]
fn the_deepseek_v3_fixture_serves_the_transformers_greedy_tokens() {
    fixture_serves_the_transformers_greedy_tokens("deepseek-v3");
}

#[test]
fn the_glm4_moe_fixture_serves_the_transformers_greedy_tokens() {
    fixture_serves_the_transformers_greedy_tokens("glm4-moe");
}

/// gpt-oss: its nodes run the clamped SwiGLU with the experts' biases, as the gateway's model.
#[test]
fn the_gpt_oss_fixture_serves_the_transformers_greedy_tokens() {
    fixture_serves_the_transformers_greedy_tokens("gpt-oss");
}

/// gpt-oss stored in MXFP4 (served as mxfp4+q2: exact requests run the stored MXFP4 weights).
#[test]
fn the_mxfp4_gpt_oss_fixture_serves_the_transformers_greedy_tokens() {
    fixture_serves_the_transformers_greedy_tokens("gpt-oss-mxfp4");
}
