//! The feed-forward half of a decoder layer: the router (a linear layer, with a bias in gpt-oss;
//! softmax or grouped sigmoid, top-k), the routed mixture of [`Expert`]s with an optional
//! sigmoid-gated shared expert. Experts may be stored in any kernel format; the router and shared
//! expert stay in their stored precision.

use moe_kernels::{Format, Matrix, Pool};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result, RoutedError};
use crate::layout::{ExpertMatrix, Layout};
use crate::ops::{add_bias, sigmoid};
use crate::router::Routing;

pub use crate::expert::{Activation, Expert, ExpertBias, ExpertShape};

pub use crate::router::Route;

/// Runs a layer's routed experts: per token, the gate-weighted sum of its experts' outputs.
/// The single-process model runs them here ([`LocalExperts`]); a cluster gateway sends them to
/// the expert nodes that hold them.
pub trait RoutedExperts {
    /// `h` is `[n, hidden]`, `routes` one per token; returns `[n, hidden]`.
    fn run(&mut self, layer: usize, h: &[f32], routes: &[Route]) -> Result<Vec<f32>>;
}

/// The routed experts of the [`MoeBlock`]s themselves, on a kernel pool.
pub struct LocalExperts<'a> {
    pub experts: &'a [Expert],
    pub pool: &'a Pool,
}

impl RoutedExperts for LocalExperts<'_> {
    fn run(&mut self, layer: usize, h: &[f32], routes: &[Route]) -> Result<Vec<f32>> {
        if self.experts.is_empty() {
            return Err(ModelError::RoutedExperts(RoutedError::Internal(format!(
                "layer {layer}: this model was loaded without its routed experts"
            ))));
        }
        let n = routes.len();
        let hidden = h.len() / n.max(1);
        let mut out = vec![0.0; n * hidden];
        // Group tokens by expert so each expert runs once on all of its rows.
        let mut rows: Vec<Vec<(usize, f32)>> = vec![Vec::new(); self.experts.len()];
        for (t, r) in routes.iter().enumerate() {
            for (&e, &w) in r.experts.iter().zip(&r.weights) {
                rows[e].push((t, w));
            }
        }
        let mut x = Vec::new();
        for (expert, picked) in self.experts.iter().zip(&rows) {
            if picked.is_empty() {
                continue;
            }
            x.clear();
            for &(t, _) in picked {
                x.extend_from_slice(&h[t * hidden..(t + 1) * hidden]);
            }
            let y = expert.forward(self.pool, &x, picked.len())?;
            for (&(t, w), yr) in picked.iter().zip(y.chunks_exact(hidden)) {
                for (o, v) in out[t * hidden..(t + 1) * hidden].iter_mut().zip(yr) {
                    *o += w * v;
                }
            }
        }
        Ok(out)
    }
}

/// The experts every token runs beside its routed ones: Qwen2-MoE's shared expert scaled by
/// the sigmoid of a one-row gate, or DeepSeek-V3's and GLM-4.5's shared experts (one expert of
/// their summed width), added as they are.
#[derive(Debug, Clone)]
struct Shared {
    expert: Expert,
    gate: Option<Matrix>,
}

/// A routed mixture of experts with an optional shared expert.
#[derive(Debug, Clone)]
pub struct MoeBlock {
    router: Matrix,
    /// The router's own bias, added to its logits (gpt-oss).
    logit_bias: Option<Vec<f32>>,
    /// The router's `e_score_correction_bias` (sigmoid routing).
    bias: Option<Vec<f32>>,
    routing: Routing,
    experts: Vec<Expert>,
    shared: Option<Shared>,
    top_k: usize,
}

impl MoeBlock {
    /// Loads layer `layer`'s router and experts: routed expert `e` converted to `format(e)` if
    /// given, the shared expert to `shared_format`; the router stays as stored. Without
    /// `routed_experts` the routed experts are not read (they run elsewhere).
    pub fn load(
        ckpt: &Checkpoint,
        cfg: &ModelConfig,
        layer: usize,
        format: impl Fn(usize) -> Option<Format>,
        shared_format: Option<Format>,
        routed_experts: bool,
    ) -> Result<MoeBlock> {
        let layout = Layout::new(cfg);
        let count = if routed_experts { cfg.num_experts } else { 0 };
        let experts = (0..count)
            .map(|e| {
                let tensors = layout.routed_expert(layer, e);
                Expert::load_routed(ckpt, &tensors, cfg.expert_shape, format(e))
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = match ExpertMatrix::ALL.map(|m| layout.shared_expert(layer, m)) {
            [Some(g), Some(u), Some(d)] => Some(Shared {
                expert: Expert::load(ckpt, [g, u, d], shared_format)?,
                gate: match layout.shared_expert_gate(layer) {
                    Some(gate) => Some(ckpt.matrix(&gate, None)?),
                    None => None,
                },
            }),
            _ => None,
        };
        let vector = |spec| ckpt.vector(&spec);
        Ok(MoeBlock {
            router: ckpt.matrix(&layout.router(layer), None)?,
            logit_bias: layout.router_logit_bias(layer).map(vector).transpose()?,
            bias: layout.router_bias(layer).map(vector).transpose()?,
            routing: cfg.routing,
            experts,
            shared,
            top_k: cfg.top_k,
        })
    }

    pub fn experts(&self) -> &[Expert] {
        &self.experts
    }

    /// Bytes of weights a token reads: the router, `top_k` experts (average size) and the shared expert.
    pub fn active_weight_bytes(&self) -> usize {
        let experts: usize = self.experts.iter().map(Expert::weight_bytes).sum();
        let shared = self.shared.as_ref().map_or(0, |s| {
            s.expert.weight_bytes() + s.gate.as_ref().map_or(0, Matrix::nbytes)
        });
        self.router.nbytes() + experts * self.top_k / self.experts.len().max(1) + shared
    }

    /// Routing decisions for `n` tokens (`h` is `[n, hidden]`).
    pub fn route(&self, pool: &Pool, h: &[f32], n: usize) -> Result<Vec<Route>> {
        let e = self.router.rows();
        let mut logits = vec![0.0; n * e];
        pool.matmul(&self.router, h, n, &mut logits)?;
        if let Some(b) = &self.logit_bias {
            add_bias(&mut logits, b);
        }
        let bias = self.bias.as_deref();
        Ok(logits
            .chunks_exact(e)
            .map(|l| self.routing.route(l, bias, self.top_k))
            .collect())
    }

    /// `h` is `[n, hidden]`; returns the mixture output `[n, hidden]`, running the routed
    /// experts of this block.
    pub fn forward(&self, pool: &Pool, h: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut local = LocalExperts {
            experts: &self.experts,
            pool,
        };
        self.forward_with(pool, h, n, 0, &mut local)
    }

    /// As [`MoeBlock::forward`], with the routed experts of layer `layer` run by `routed`; the
    /// router and the shared expert run here, on `pool`.
    pub fn forward_with(
        &self,
        pool: &Pool,
        h: &[f32],
        n: usize,
        layer: usize,
        routed: &mut dyn RoutedExperts,
    ) -> Result<Vec<f32>> {
        let hidden = self.router.cols();
        let routes = self.route(pool, h, n)?;
        let mut out = routed.run(layer, h, &routes)?;
        if out.len() != n * hidden {
            return Err(ModelError::InvalidArgument(format!(
                "layer {layer}: routed experts returned {} values for {n} x {hidden}",
                out.len()
            )));
        }
        if let Some(shared) = &self.shared {
            let y = shared.expert.forward(pool, h, n)?;
            let mut g = vec![0.0; n];
            if let Some(gate) = &shared.gate {
                pool.matmul(gate, h, n, &mut g)?;
                g.iter_mut().for_each(|x| *x = sigmoid(*x));
            } else {
                g.fill(1.0);
            }
            for ((o, yr), s) in out
                .chunks_exact_mut(hidden)
                .zip(y.chunks_exact(hidden))
                .zip(&g)
            {
                for (a, b) in o.iter_mut().zip(yr) {
                    *a += s * b;
                }
            }
        }
        Ok(out)
    }
}
