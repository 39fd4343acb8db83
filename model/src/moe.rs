//! The feed-forward half of a decoder layer: SwiGLU experts, the router (softmax, top-k, optional
//! renormalisation), the routed mixture with an optional sigmoid-gated shared expert, and the dense
//! MLP of non-MoE layers. Experts may be stored in any kernel format; the router and shared expert
//! stay in their stored precision.

use moe_kernels::{Format, Matrix, Pool};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::layout::{ExpertMatrix, Layout, TensorSpec};
use crate::ops::{sigmoid, silu};
use crate::router::Routing;

/// A SwiGLU MLP: `down(silu(gate x) * up x)`, with gate and up stacked into one matrix so one
/// product computes both.
#[derive(Debug, Clone)]
pub struct Expert {
    gate_up: Matrix,
    down: Matrix,
}

impl Expert {
    /// Reads the gate, up and down matrices (in `ExpertMatrix::ALL` order), converted to `format`
    /// if given.
    pub fn load(
        ckpt: &Checkpoint,
        specs: [TensorSpec; 3],
        format: Option<Format>,
    ) -> Result<Expert> {
        let [gate, up, down] = specs;
        Expert::from_matrices(
            &ckpt.matrix(&gate, format)?,
            &ckpt.matrix(&up, format)?,
            ckpt.matrix(&down, format)?,
        )
    }

    pub fn from_matrices(gate: &Matrix, up: &Matrix, down: Matrix) -> Result<Expert> {
        if gate.rows() != up.rows() {
            return Err(ModelError::InvalidArgument(format!(
                "expert gate has {} rows but up has {}",
                gate.rows(),
                up.rows()
            )));
        }
        Expert::from_parts(Matrix::stack_rows(&[gate, up])?, down)
    }

    /// An expert from its stacked `[2 * intermediate, hidden]` gate/up matrix and its
    /// `[hidden, intermediate]` down matrix. The two may differ in format when one width does
    /// not fit the format asked for (see `fallback`).
    pub fn from_parts(gate_up: Matrix, down: Matrix) -> Result<Expert> {
        let consistent = gate_up.rows() == 2 * down.cols() && gate_up.cols() == down.rows();
        if !consistent {
            return Err(ModelError::InvalidArgument(format!(
                "expert gate/up is {}x{} {} but down is {}x{} {}",
                gate_up.rows(),
                gate_up.cols(),
                gate_up.format(),
                down.rows(),
                down.cols(),
                down.format()
            )));
        }
        Ok(Expert { gate_up, down })
    }

    /// The stacked gate/up matrix and the down matrix.
    pub fn parts(&self) -> (&Matrix, &Matrix) {
        (&self.gate_up, &self.down)
    }

    /// The precision the expert runs at: the least precise of its two matrices' formats (both
    /// the same unless one width fell back to a wider format).
    pub fn precision(&self) -> Format {
        let (a, b) = (self.gate_up.format(), self.down.format());
        if b.bits_per_weight() < a.bits_per_weight() {
            b
        } else {
            a
        }
    }

    /// Whether both matrices are in one format.
    pub fn is_uniform(&self) -> bool {
        self.gate_up.format() == self.down.format()
    }

    pub fn weight_bytes(&self) -> usize {
        self.gate_up.nbytes() + self.down.nbytes()
    }

    /// The formats an expert asked to be stored as `format` has, gate/up then down: `format`, or
    /// the nearest wider one where a width does not fit it.
    pub fn formats_at(format: Format, hidden: usize, intermediate: usize) -> [Format; 2] {
        [
            format.fitting(hidden).format,
            format.fitting(intermediate).format,
        ]
    }

    /// The bytes of an expert's weights asked to be stored as `format` (see
    /// [`Expert::formats_at`]), without building one: its stacked `[2 * intermediate, hidden]`
    /// gate/up and `[hidden, intermediate]` down matrices.
    pub fn bytes_at(format: Format, hidden: usize, intermediate: usize) -> usize {
        let [gate_up, down] = Expert::formats_at(format, hidden, intermediate);
        2 * intermediate * gate_up.row_bytes(hidden) + hidden * down.row_bytes(intermediate)
    }

    /// `x` is `[n, hidden]`; returns `[n, hidden]`.
    pub fn forward(&self, pool: &Pool, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let inter = self.down.cols();
        let mut gate_up = vec![0.0; n * 2 * inter];
        pool.matmul(&self.gate_up, x, n, &mut gate_up)?;
        let mut h = Vec::with_capacity(n * inter);
        for row in gate_up.chunks_exact(2 * inter) {
            let (g, u) = row.split_at(inter);
            h.extend(g.iter().zip(u).map(|(g, u)| silu(*g) * u));
        }
        let mut y = vec![0.0; n * self.down.rows()];
        pool.matmul(&self.down, &h, n, &mut y)?;
        Ok(y)
    }
}

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
            return Err(ModelError::RoutedExperts(format!(
                "layer {layer}: this model was loaded without its routed experts"
            )));
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
                Expert::load(
                    ckpt,
                    ExpertMatrix::ALL.map(|m| layout.expert(layer, e, m)),
                    format(e),
                )
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
        let bias = match layout.router_bias(layer) {
            Some(spec) => Some(ckpt.vector(&spec)?),
            None => None,
        };
        Ok(MoeBlock {
            router: ckpt.matrix(&layout.router(layer), None)?,
            bias,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_at_matches_a_built_expert() {
        let (hidden, inter) = (64, 96);
        for format in [Format::F16, Format::Q8, Format::Q4, Format::Q2] {
            let gate_up =
                Matrix::from_f32(2 * inter, hidden, &vec![0.5; 2 * inter * hidden], format);
            let down = Matrix::from_f32(hidden, inter, &vec![0.25; hidden * inter], format);
            let expert = Expert::from_parts(gate_up.unwrap(), down.unwrap()).unwrap();
            assert_eq!(
                Expert::bytes_at(format, hidden, inter),
                expert.weight_bytes(),
                "{format}"
            );
        }
    }

    #[test]
    fn an_expert_whose_width_does_not_fit_keeps_the_format_where_it_does() {
        let (hidden, inter) = (64, 40);
        let [gate_up, down] = Expert::formats_at(Format::Q4, hidden, inter);
        assert_eq!((gate_up, down), (Format::Q4, Format::F16));
        let gate_up = Matrix::from_f32(2 * inter, hidden, &vec![0.5; 2 * inter * hidden], gate_up);
        let down = Matrix::from_f32(hidden, inter, &vec![0.25; hidden * inter], down);
        let expert = Expert::from_parts(gate_up.unwrap(), down.unwrap()).unwrap();
        assert!(!expert.is_uniform());
        assert_eq!(expert.precision(), Format::Q4);
        assert_eq!(
            Expert::bytes_at(Format::Q4, hidden, inter),
            expert.weight_bytes()
        );
        let pool = Pool::new(1).unwrap();
        let y = expert.forward(&pool, &vec![0.1; hidden], 1).unwrap();
        assert!(y.iter().all(|v| v.is_finite() && *v != 0.0));
    }
}
