//! The CUDA expert kernels (`cuda/experts.cu`) compiled as C++ against the thread-model
//! emulation in `cuda/emu/cuda_emu.h`, run on the CPU and compared with the scalar reference.
//!
//! Needs a C++17 compiler (`c++`; `scripts/test.sh` installs g++). The harness is built once per
//! test run into the test's temporary directory.
//!
//! The budget is the one `common::experts` states; the largest ratio measured over the cases
//! below is printed by each test (about 1e-7).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Rng;
use common::experts::{Case, TestExpert, assert_within_budget, make_case};
use moe_kernels::{ExpertBatch, ExpertPairs, Format};

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

fn format_code(format: Format) -> u32 {
    match format {
        Format::F16 => 0,
        Format::Q8 => 1,
        Format::Q4 => 2,
        Format::Q2 => 3,
        Format::Fp8 => 4,
        Format::Mxfp4 => 5,
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
    let pairs: Vec<ExpertPairs> = experts.iter().map(TestExpert::pairs).collect();
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

/// Checks one random batch against the reference; returns the largest error relative to `S`.
fn check_case(case: Case, seed: u64) -> f32 {
    let mut rng = Rng::new(seed);
    let (x, experts) = make_case(&mut rng, case);
    let dir = tempfile::tempdir().unwrap();
    let got = run_emulated(
        case.format,
        case.hidden,
        case.inter,
        &x,
        &experts,
        dir.path(),
    );
    assert_within_budget(
        &got,
        case.hidden,
        case.inter,
        &x,
        &experts,
        &format!("{case:?}"),
    )
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
    for format in Format::GPU {
        let mut worst = 0.0f32;
        for (i, case) in Case::small(format).into_iter().enumerate() {
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
