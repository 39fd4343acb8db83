//! The CUDA expert kernels (`cuda/experts.cu`) compiled as C++ against the thread-model
//! emulation in `cuda/emu/cuda_emu.h`, run on the CPU and compared with the scalar reference.
//!
//! Needs a C++17 compiler (`c++`; `scripts/test.sh` installs g++). The harness is built once per
//! test run into the test's temporary directory.
//!
//! Budget: the kernels and the reference read the same weight bytes, so they differ only by f32
//! rounding (the reference accumulates in f64) and `__expf` vs `exp`. With
//! `S = Σ_p |w_p| Σ_c |down[r, c] h_p[c]|` per output element, the difference must stay below
//! `1e-5 * S + 1e-6`; the largest ratio measured over the cases below is printed by each test
//! (about 1e-7), and a wrong block decode or a lost pair gives errors of order `S`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Rng;
use moe_kernels::{ExpertBatch, ExpertPairs, Format, Matrix, scalar};

fn harness() -> &'static Path {
    static HARNESS: OnceLock<PathBuf> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda/emu/harness.cpp");
        let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-emulation-harness");
        let status = Command::new("c++")
            .args([
                "-std=c++17",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-unknown-pragmas",
                "-o",
            ])
            .arg(&exe)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the C++ compiler `c++` ({e}); install one: apt-get install -y g++"
                )
            });
        assert!(status.success(), "compiling {} failed", src.display());
        exe
    })
}

struct TestExpert {
    gate_up: Matrix,
    down: Matrix,
    rows: Vec<u32>,
    weights: Vec<f32>,
}

fn format_code(format: Format) -> u32 {
    match format {
        Format::F16 => 0,
        Format::Q8 => 1,
        Format::Q4 => 2,
        Format::Q2 => 3,
        other => panic!("no GPU kernel for {other}"),
    }
}

/// Runs the batch through the emulated kernels; returns `[n_tokens, hidden]`.
fn run_emulated(
    format: Format,
    hidden: usize,
    inter: usize,
    x: &[f32],
    experts: &[TestExpert],
    dir: &Path,
) -> Vec<f32> {
    let n_tokens = x.len() / hidden;
    let pairs: Vec<ExpertPairs> = experts
        .iter()
        .map(|e| ExpertPairs {
            rows: &e.rows,
            weights: &e.weights,
        })
        .collect();
    let batch = ExpertBatch::new(n_tokens, &pairs).unwrap();
    let mut file = b"MOEBATCH".to_vec();
    for v in [
        format_code(format),
        hidden as u32,
        inter as u32,
        n_tokens as u32,
        experts.len() as u32,
        batch.n_pairs() as u32,
    ] {
        file.extend(v.to_le_bytes());
    }
    let ints = |file: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|i| file.extend(i.to_le_bytes()));
    let floats =
        |file: &mut Vec<u8>, v: &[f32]| v.iter().for_each(|f| file.extend(f.to_le_bytes()));
    ints(&mut file, &batch.pair_offsets);
    ints(&mut file, &batch.pair_rows);
    floats(&mut file, &batch.pair_weights);
    ints(&mut file, &batch.token_offsets);
    ints(&mut file, &batch.token_pairs);
    floats(&mut file, x);
    for e in experts {
        for m in [&e.gate_up, &e.down] {
            file.extend((m.nbytes() as u64).to_le_bytes());
            file.extend(m.as_bytes());
        }
    }
    let input = dir.join("batch.bin");
    let output = dir.join("out.bin");
    std::fs::write(&input, file).unwrap();
    let run = Command::new(harness())
        .arg("batch")
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "harness failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The reference: dequantized weights, f64 accumulation. Returns the outputs and the per-element
/// magnitude `S` of the budget.
fn reference(
    hidden: usize,
    inter: usize,
    x: &[f32],
    experts: &[TestExpert],
) -> (Vec<f32>, Vec<f32>) {
    let n_tokens = x.len() / hidden;
    let mut out = vec![0.0f64; n_tokens * hidden];
    let mut mag = vec![0.0f64; n_tokens * hidden];
    let down = |e: &TestExpert| e.down.to_f32();
    for e in experts {
        let wd = down(e);
        for (&row, &w) in e.rows.iter().zip(&e.weights) {
            let xr = &x[row as usize * hidden..(row as usize + 1) * hidden];
            let mut gu = vec![0.0f32; 2 * inter];
            scalar::matvec_dequantized(&e.gate_up, xr, &mut gu).unwrap();
            let h: Vec<f64> = (0..inter)
                .map(|c| {
                    let g = f64::from(gu[c]);
                    g / (1.0 + (-g).exp()) * f64::from(gu[inter + c])
                })
                .collect();
            for r in 0..hidden {
                let wr = &wd[r * inter..(r + 1) * inter];
                let dot: f64 = wr.iter().zip(&h).map(|(&a, &b)| f64::from(a) * b).sum();
                let abs: f64 = wr
                    .iter()
                    .zip(&h)
                    .map(|(&a, &b)| (f64::from(a) * b).abs())
                    .sum();
                out[row as usize * hidden + r] += f64::from(w) * dot;
                mag[row as usize * hidden + r] += f64::from(w.abs()) * abs;
            }
        }
    }
    (
        out.into_iter().map(|v| v as f32).collect(),
        mag.into_iter().map(|v| v as f32).collect(),
    )
}

/// The shape of one test batch.
#[derive(Debug, Clone, Copy)]
struct Case {
    format: Format,
    hidden: usize,
    inter: usize,
    n_experts: usize,
    n_tokens: usize,
    top_k: usize,
}

/// Random experts and routing: every token gets `top_k` distinct experts with weights summing
/// to one; an expert may get no rows.
fn make_case(rng: &mut Rng, case: Case) -> (Vec<f32>, Vec<TestExpert>) {
    let Case {
        format,
        hidden,
        inter,
        n_experts,
        n_tokens,
        top_k,
    } = case;
    let mut experts: Vec<TestExpert> = (0..n_experts)
        .map(|_| TestExpert {
            gate_up: Matrix::from_f32(
                2 * inter,
                hidden,
                &rng.normals(2 * inter * hidden, 0.05),
                format,
            )
            .unwrap(),
            down: Matrix::from_f32(hidden, inter, &rng.normals(hidden * inter, 0.05), format)
                .unwrap(),
            rows: Vec::new(),
            weights: Vec::new(),
        })
        .collect();
    for t in 0..n_tokens {
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < top_k {
            let e = (rng.next_u64() % n_experts as u64) as usize;
            if !chosen.contains(&e) {
                chosen.push(e);
            }
        }
        let raw: Vec<f32> = chosen.iter().map(|_| 0.1 + rng.uniform()).collect();
        let sum: f32 = raw.iter().sum();
        for (&e, &w) in chosen.iter().zip(&raw) {
            experts[e].rows.push(t as u32);
            experts[e].weights.push(w / sum);
        }
    }
    let x = rng.normals(n_tokens * hidden, 1.0);
    (x, experts)
}

/// Checks one random batch against the reference; returns the largest error relative to `S`.
fn check_case(case: Case, seed: u64) -> f32 {
    let Case {
        format,
        hidden,
        inter,
        ..
    } = case;
    let mut rng = Rng::new(seed);
    let (x, experts) = make_case(&mut rng, case);
    let dir = tempfile::tempdir().unwrap();
    let got = run_emulated(format, hidden, inter, &x, &experts, dir.path());
    let (want, mag) = reference(hidden, inter, &x, &experts);
    assert_eq!(got.len(), want.len());
    let mut worst = 0.0f32;
    for (i, ((&g, &w), &s)) in got.iter().zip(&want).zip(&mag).enumerate() {
        let budget = 1e-5 * s + 1e-6;
        assert!(
            (g - w).abs() <= budget,
            "{format} hidden {hidden} inter {inter}: output {i} is {g}, reference {w} (budget {budget})"
        );
        if s > 0.0 {
            worst = worst.max((g - w).abs() / s);
        }
    }
    worst
}

#[test]
fn emulation_selftest_passes() {
    let run = Command::new(harness()).arg("selftest").output().unwrap();
    assert!(
        run.status.success(),
        "selftest failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn emulation_refuses_a_shuffle_across_a_barrier() {
    let run = Command::new(harness()).arg("misuse").output().unwrap();
    assert_eq!(run.status.code(), Some(70));
    assert!(String::from_utf8_lossy(&run.stderr).contains("waiting at __syncthreads"));
}

#[test]
fn expert_kernels_match_the_scalar_reference_for_every_format() {
    // (hidden, inter, experts, tokens, top-k): a tile tail (544 = 512 + 32), more pairs per
    // expert than one pass holds (MAX_PAIRS = 8), experts without rows, tokens with one pair.
    let cases = [(64, 32, 4, 3, 2), (544, 96, 3, 20, 2), (128, 160, 8, 5, 1)];
    for format in [Format::F16, Format::Q8, Format::Q4, Format::Q2] {
        let mut worst = 0.0f32;
        for (i, &(hidden, inter, n_experts, n_tokens, top_k)) in cases.iter().enumerate() {
            let case = Case {
                format,
                hidden,
                inter,
                n_experts,
                n_tokens,
                top_k,
            };
            worst = worst.max(check_case(case, 100 + i as u64));
        }
        println!("{format}: largest |kernel - reference| / S = {worst:.2e}");
    }
}

#[test]
fn a_token_with_no_pairs_gets_zeros() {
    let mut rng = Rng::new(7);
    let case = Case {
        format: Format::Q4,
        hidden: 64,
        inter: 32,
        n_experts: 2,
        n_tokens: 3,
        top_k: 1,
    };
    let (x, mut experts) = make_case(&mut rng, case);
    for e in &mut experts {
        let keep: Vec<usize> = (0..e.rows.len()).filter(|&i| e.rows[i] != 1).collect();
        e.weights = keep.iter().map(|&i| e.weights[i]).collect();
        e.rows = keep.iter().map(|&i| e.rows[i]).collect();
    }
    let dir = tempfile::tempdir().unwrap();
    let got = run_emulated(Format::Q4, 64, 32, &x, &experts, dir.path());
    assert!(got[64..128].iter().all(|&v| v == 0.0));
    assert!(got[..64].iter().any(|&v| v != 0.0));
}
