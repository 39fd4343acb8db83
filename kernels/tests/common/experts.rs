//! Random MoE layer batches for the expert kernels' tests, and the scalar reference the GPU
//! kernels (emulated or real) are checked against.
//!
//! Budget: the kernels and the reference read the same weight bytes, so they differ only by f32
//! rounding (the reference accumulates in f64) and `__expf` vs `exp`. With
//! `S = Σ_p |w_p| Σ_c |down[r, c] h_p[c]|` per output element, the difference must stay below
//! `1e-5 * S + 1e-6`; a wrong block decode or a lost pair gives errors of order `S`.

use moe_kernels::{ExpertPairs, Format, Matrix, scalar};

use super::Rng;

/// One expert's weights and the (row, gate weight) pairs routed to it.
pub struct TestExpert {
    pub gate_up: Matrix,
    pub down: Matrix,
    pub rows: Vec<u32>,
    pub weights: Vec<f32>,
}

impl TestExpert {
    pub fn pairs(&self) -> ExpertPairs<'_> {
        ExpertPairs {
            rows: &self.rows,
            weights: &self.weights,
        }
    }
}

/// The shape of one test batch.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub format: Format,
    pub hidden: usize,
    pub inter: usize,
    pub n_experts: usize,
    pub n_tokens: usize,
    pub top_k: usize,
}

impl Case {
    /// (hidden, inter, experts, tokens, top-k) cases covering a tile tail (544 = 512 + 32), more
    /// pairs per expert than one pass holds (MAX_PAIRS = 8), experts without rows, and tokens
    /// with one pair.
    pub fn small(format: Format) -> Vec<Case> {
        [(64, 32, 4, 3, 2), (544, 96, 3, 20, 2), (128, 160, 8, 5, 1)]
            .into_iter()
            .map(|(hidden, inter, n_experts, n_tokens, top_k)| Case {
                format,
                hidden,
                inter,
                n_experts,
                n_tokens,
                top_k,
            })
            .collect()
    }
}

/// Random experts and routing: every token gets `top_k` distinct experts with weights summing
/// to one; an expert may get no rows.
pub fn make_case(rng: &mut Rng, case: Case) -> (Vec<f32>, Vec<TestExpert>) {
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

/// The reference: dequantized weights, f64 accumulation. Returns the outputs and the per-element
/// magnitude `S` of the budget.
pub fn reference(
    hidden: usize,
    inter: usize,
    x: &[f32],
    experts: &[TestExpert],
) -> (Vec<f32>, Vec<f32>) {
    let n_tokens = x.len() / hidden;
    let mut out = vec![0.0f64; n_tokens * hidden];
    let mut mag = vec![0.0f64; n_tokens * hidden];
    for e in experts {
        let wd = e.down.to_f32();
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

/// Asserts `got` is within the budget of the reference for `x` and `experts`; returns the largest
/// error relative to `S`. `what` names the case in a failure.
pub fn assert_within_budget(
    got: &[f32],
    hidden: usize,
    inter: usize,
    x: &[f32],
    experts: &[TestExpert],
    what: &str,
) -> f32 {
    let (want, mag) = reference(hidden, inter, x, experts);
    assert_eq!(got.len(), want.len(), "{what}: output length");
    let mut worst = 0.0f32;
    for (i, ((&g, &w), &s)) in got.iter().zip(&want).zip(&mag).enumerate() {
        let budget = 1e-5 * s + 1e-6;
        assert!(
            (g - w).abs() <= budget,
            "{what}: output {i} is {g}, reference {w} (budget {budget})"
        );
        if s > 0.0 {
            worst = worst.max((g - w).abs() / s);
        }
    }
    worst
}
