//! `moe up` as the README runs it: a local cluster on a generated model answers a completion
//! over HTTP, `moe eval-quality --gateway` scores text through it, and SIGTERM stops every
//! process it started.
//!
//! Needs `etcd` on the PATH (`scripts/test.sh` installs Debian's `etcd-server`) and the
//! `coordinator`, `expert-node` and `gateway` binaries next to `moe` (`cargo test --workspace`
//! builds them all).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn post(address: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn moe_up_serves_a_completion_and_stops_everything_it_started() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("demo");
    let generated = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args([
            "gen-model",
            "--arch",
            "mixtral",
            "--preset",
            "tiny",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let dir = work.path().join("run");
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
        .arg("--model")
        .arg(&model)
        .arg("--dir")
        .arg(&dir)
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
    let mut gateway = None;
    let start = Instant::now();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(150).saturating_sub(start.elapsed()))
            .expect("moe up reports ready");
        if let Some(rest) = line.strip_prefix("gateway") {
            gateway = rest
                .split_whitespace()
                .next()
                .map(|u| u.trim_start_matches("http://").to_string());
        }
        if line.starts_with("ready") {
            break;
        }
    }
    let gateway = gateway.expect("moe up prints the gateway's address");
    let response = post(
        &gateway,
        r#"{"model": "demo", "prompt": "Hello", "max_tokens": 8, "temperature": 0}"#,
    );
    if !response.starts_with("HTTP/1.1 200") {
        for log in std::fs::read_dir(dir.join("logs")).unwrap() {
            let log = log.unwrap().path();
            eprintln!(
                "--- {}\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap()
            );
        }
        panic!("{response}");
    }
    assert!(response.contains("\"completion_tokens\":8"), "{response}");

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

    let pid = up.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "moe up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    // Nothing it started is left: the gateway's port is closed.
    assert!(
        TcpStream::connect(&gateway).is_err(),
        "the gateway still answers"
    );
}
