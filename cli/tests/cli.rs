//! The `moe` binary as users run it: write a random checkpoint, generate from it (text and JSON),
//! print logits, and fail clearly on bad input.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(args)
        .output()
        .expect("run moe")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = moe(args);
    assert!(
        out.status.success(),
        "moe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn gen_model(arch: &str, dir: &Path) {
    ok_stdout(&[
        "gen-model",
        "--arch",
        arch,
        "--preset",
        "tiny",
        "--seed",
        "7",
        "--out",
        dir.to_str().unwrap(),
    ]);
}

#[test]
fn generate_json_from_a_generated_model() {
    for arch in ["mixtral", "qwen2-moe", "qwen3-moe", "olmoe"] {
        let dir = tempfile::tempdir().unwrap();
        gen_model(arch, dir.path());
        let model = dir.path().to_str().unwrap();
        let out = ok_stdout(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "def main():",
            "--max-tokens",
            "8",
            "--ignore-eos",
            "--json",
        ]);
        let v: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{arch}: {e}: {out}"));
        assert_eq!(v["completion_tokens"], 8, "{arch}: {v}");
        assert_eq!(v["token_ids"].as_array().unwrap().len(), 8, "{arch}");
        assert!(v["prompt_tokens"].as_u64().unwrap() > 0, "{arch}");
        assert!(v["text"].is_string(), "{arch}");
        assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0, "{arch}");
        assert_eq!(v["finish_reason"], "length");
    }
    // Loading the checkpoint counts its layers on stderr, ending with a summary line.
    let dir = tempfile::tempdir().unwrap();
    gen_model("mixtral", dir.path());
    let out = moe(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("loading layers: 2/2 in ")),
        "{stderr}"
    );
}

#[test]
fn greedy_is_deterministic_and_precision_changes_the_weights_used() {
    let dir = tempfile::tempdir().unwrap();
    gen_model("mixtral", dir.path());
    let model = dir.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt-ids",
            "5,6,7",
            "--max-tokens",
            "6",
            "--ignore-eos",
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str::<Value>(ok_stdout(&args).trim()).unwrap()["token_ids"].clone()
    };
    assert_eq!(run(&[]), run(&[]));
    assert_eq!(
        run(&["--temperature", "0.8", "--seed", "3"]),
        run(&["--temperature", "0.8", "--seed", "3"])
    );
    for p in ["f16", "q8", "q4", "q2"] {
        assert_eq!(
            run(&["--expert-precision", p]).as_array().unwrap().len(),
            6,
            "{p}"
        );
    }

    let logits: Value = serde_json::from_str(
        ok_stdout(&["logits", "--model", model, "--prompt-ids", "1,2,3"]).trim(),
    )
    .unwrap();
    assert_eq!(logits["logits"].as_array().unwrap().len(), 512);
}

/// Runs `moe generate` with `args` and asserts that it fails naming `needle` on stderr.
fn generate_fails_naming(args: &[&str], needle: &str) {
    let mut all = vec!["generate"];
    all.extend_from_slice(args);
    let out = moe(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "moe {all:?} succeeded");
    assert!(err.contains(needle), "moe {all:?}: {err}");
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().to_str().unwrap();
    generate_fails_naming(&["--model", model, "--prompt", "x"], "config.json");

    gen_model("olmoe", dir.path());
    let ids = ["--model", model, "--prompt-ids"];
    generate_fails_naming(&[&ids[..], &["1,99999"]].concat(), "99999");
    generate_fails_naming(&[&ids[..], &["1,x"]].concat(), "not a token id");
    generate_fails_naming(
        &[&ids[..], &["1", "--expert-precision", "q3"]].concat(),
        "q3",
    );
    generate_fails_naming(
        &[&ids[..], &["1", "--max-tokens", "100000"]].concat(),
        "context",
    );
    generate_fails_naming(
        &[&ids[..], &["1", "--temperature=-1"]].concat(),
        "temperature",
    );
}

/// Writing the weights of the `small` preset (about 100 MB) with a non-terminal stderr reports
/// progress as plain lines (count, rate, time left) at the requested interval, then a summary.
#[test]
fn gen_model_reports_progress_in_plain_lines_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = moe(&[
        "gen-model",
        "--arch",
        "mixtral",
        "--preset",
        "small",
        "--progress-seconds",
        "0.01",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("writing the weights: "))
        .collect();
    let (last, periodic) = lines.split_last().expect("a summary line");
    assert!(last.contains(" in ") && last.ends_with(" MB/s"), "{stderr}");
    assert!(periodic.len() >= 2, "periodic lines:\n{stderr}");
    for line in periodic {
        assert!(line.contains("%), ") && line.contains(" MB/s, "), "{line}");
        assert!(
            line.ends_with(" s left") || line.ends_with("time left unknown"),
            "{line}"
        );
    }
    let percents: Vec<u32> = periodic
        .iter()
        .map(|l| {
            l.split(" (")
                .nth(1)
                .unwrap()
                .split('%')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
}

#[test]
fn eval_quality_measures_each_rung_against_the_exact_path() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mixtral");
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let out = ok_stdout(&[
        "eval-quality",
        "--model",
        fixture.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--window",
        "64",
        "--tokens",
        "256",
        "--threads",
        "1",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(json["tokens"], 4 * 63, "{json}");
    let rung = |name: &str| {
        json["rungs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rung"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json}"))
            .clone()
    };
    let pairs = |r: &serde_json::Value, p: &str| r["pairs"][p].as_u64().unwrap();
    // Per-token sums from one node, in expert order: the exact path's numbers.
    let full = rung("full");
    assert_eq!(full["mean_kl"], 0.0, "{json}");
    assert_eq!(
        (pairs(&full, "low"), pairs(&full, "skip")),
        (0, 0),
        "{json}"
    );
    // int8 rows move every distribution a little and keep every pair high.
    let int8 = rung("int8_wire");
    let kl = int8["mean_kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 0.05, "{json}");
    assert_eq!(pairs(&int8, "low"), 0, "{json}");
    // Low-precision weights for the pairs above T1, then skipping above T2, out of the same
    // number of pairs (tokens x top-k x MoE layers), costing more than int8 rows alone.
    let low = rung("low_weights");
    let skip = rung("skip");
    let total = |r: &serde_json::Value| pairs(r, "high") + pairs(r, "low") + pairs(r, "skip");
    assert_eq!(total(&full), 4 * 64 * 2 * 2, "{json}");
    assert_eq!(
        (total(&low), total(&skip)),
        (total(&full), total(&full)),
        "{json}"
    );
    assert!(pairs(&low, "low") > 0 && pairs(&low, "skip") == 0, "{json}");
    assert!(pairs(&skip, "skip") > 0, "{json}");
    assert!(low["mean_kl"].as_f64().unwrap() > kl, "{json}");
}
