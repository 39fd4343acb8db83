//! The CUDA expert kernels run on a real GPU through [`CudaExperts`] and compared with the scalar
//! reference, under the budget `common::experts` states.
//!
//! Needs a CUDA driver, NVRTC and a GPU. Without them each test says why and passes, unless
//! `MOE_REQUIRE_GPU=1`, where it fails: set it where a GPU is meant to be present.
#![cfg(feature = "cuda")]

mod common;

use std::sync::OnceLock;

use common::Rng;
use common::experts::{Case, TestExpert, assert_within_budget, make_case};
use moe_kernels::cuda::{Availability, CudaError, CudaExperts, DeviceExpert, ExpertInput};
use moe_kernels::{Format, Matrix};

/// The GPU, opened once per test binary; `None` (after saying why) where there is none.
fn gpu() -> Option<&'static CudaExperts> {
    static GPU: OnceLock<Option<CudaExperts>> = OnceLock::new();
    GPU.get_or_init(|| {
        let required = std::env::var("MOE_REQUIRE_GPU").is_ok_and(|v| v == "1");
        if let Availability::Unavailable(reason) = Availability::probe() {
            assert!(!required, "MOE_REQUIRE_GPU=1 but {reason}");
            eprintln!("not run: {reason}");
            return None;
        }
        let cache = std::env::temp_dir().join(format!("moe-cuda-test-{}", std::process::id()));
        let gpu = CudaExperts::open(0, &cache).unwrap_or_else(|e| panic!("opening GPU 0: {e}"));
        println!("GPU 0: {} ({})", gpu.name(), gpu.arch());
        Some(gpu)
    })
    .as_ref()
}

/// Uploads the experts and runs the batch on the GPU.
fn run_on(gpu: &CudaExperts, hidden: usize, x: &[f32], experts: &[TestExpert]) -> Vec<f32> {
    let uploaded: Vec<DeviceExpert> = experts
        .iter()
        .map(|e| gpu.upload(&e.gate_up, &e.down).unwrap())
        .collect();
    let inputs: Vec<ExpertInput> = uploaded
        .iter()
        .zip(experts)
        .map(|(expert, e)| ExpertInput {
            expert,
            pairs: e.pairs(),
        })
        .collect();
    gpu.run(x, hidden, &inputs).unwrap()
}

#[test]
fn every_format_matches_the_scalar_reference_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    for format in Format::GPU {
        // The small cases, and a layer of a real model's shape: Qwen-MoE-sized experts (2048 x
        // 1408), 64 tokens routed top-4 among 16 experts, so most experts take several passes.
        let mut cases = Case::small(format);
        cases.push(Case {
            format,
            hidden: 2048,
            inter: 1408,
            n_experts: 16,
            n_tokens: 64,
            top_k: 4,
        });
        let mut worst = 0.0f32;
        for (i, case) in cases.into_iter().enumerate() {
            let (x, experts) = make_case(&mut Rng::new(300 + i as u64), case);
            let got = run_on(gpu, case.hidden, &x, &experts);
            let what = format!("{case:?}");
            worst = worst.max(assert_within_budget(
                &got,
                case.hidden,
                case.inter,
                &x,
                &experts,
                &what,
            ));
        }
        println!("{format}: largest |gpu - reference| / S = {worst:.2e}");
    }
}

#[test]
fn a_batch_mixing_formats_matches_and_repeats_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let (hidden, inter) = (544, 96);
    let mut experts = Vec::new();
    let mut x = Vec::new();
    for (i, format) in [Format::Q4, Format::F16, Format::Q2, Format::Q8]
        .into_iter()
        .enumerate()
    {
        let case = Case {
            format,
            hidden,
            inter,
            n_experts: 2,
            n_tokens: 9,
            top_k: 1,
        };
        let (case_x, case_experts) = make_case(&mut Rng::new(400 + i as u64), case);
        x = case_x;
        experts.extend(case_experts);
    }
    let got = run_on(gpu, hidden, &x, &experts);
    let worst = assert_within_budget(&got, hidden, inter, &x, &experts, "mixed formats");
    println!("mixed formats: largest |gpu - reference| / S = {worst:.2e}");
    let again = run_on(gpu, hidden, &x, &experts);
    assert!(
        got.iter()
            .zip(&again)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "two runs of the same batch differ"
    );
}

#[test]
fn tokens_without_pairs_get_zeros_and_bad_shapes_are_refused() {
    let Some(gpu) = gpu() else { return };
    let case = Case {
        format: Format::Q8,
        hidden: 64,
        inter: 32,
        n_experts: 2,
        n_tokens: 3,
        top_k: 1,
    };
    let (x, mut experts) = make_case(&mut Rng::new(7), case);
    for e in &mut experts {
        let keep: Vec<usize> = (0..e.rows.len()).filter(|&i| e.rows[i] != 1).collect();
        e.weights = keep.iter().map(|&i| e.weights[i]).collect();
        e.rows = keep.iter().map(|&i| e.rows[i]).collect();
    }
    let got = run_on(gpu, 64, &x, &experts);
    assert!(got[64..128].iter().all(|&v| v == 0.0));
    assert!(got[..64].iter().any(|&v| v != 0.0));
    assert_eq!(gpu.run(&x, 64, &[]).unwrap(), vec![0.0; x.len()]);

    let e = &experts[0];
    let ragged = gpu.run(&x[..100], 64, &[]);
    assert!(matches!(ragged, Err(CudaError::Shape(_))), "{ragged:?}");
    let short = Matrix::from_f32(32, 32, &[0.0; 32 * 32], Format::Q8).unwrap();
    let refused = gpu.upload(&e.gate_up, &short);
    assert!(matches!(refused, Err(CudaError::Shape(_))));
    let other = gpu.upload(&e.gate_up, &e.down.convert(Format::F16).unwrap());
    assert!(matches!(other, Err(CudaError::Shape(_))));
}
