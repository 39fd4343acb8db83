//! One expert — a gated MLP `down(act(gate x, up x))` — and what sets experts apart between
//! architectures: the activation between the two products and whether each product has a bias.
//! Experts are read from a checkpoint one matrix per projection, or as one slice of a layer's
//! fused expert tensors (gpt-oss), in any kernel format.

use moe_kernels::{Format, Matrix, Pool};

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::layout::{ExpertTensors, FusedExpert, TensorSpec};
use crate::ops::{add_bias, sigmoid, silu};

/// What an expert computes from its gate and up projections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `silu(gate) * up` (SwiGLU).
    Swiglu,
    /// gpt-oss: the gate clamped above at `limit`, up clamped to `[-limit, limit]`, then
    /// `(up + 1) * gate * sigmoid(alpha * gate)`.
    ClampedSwiglu { alpha: f32, limit: f32 },
}

impl Activation {
    /// Appends the activation of one row's `gate` and `up` to `out`.
    pub fn apply(&self, gate: &[f32], up: &[f32], out: &mut Vec<f32>) {
        match *self {
            Activation::Swiglu => out.extend(gate.iter().zip(up).map(|(g, u)| silu(*g) * u)),
            Activation::ClampedSwiglu { alpha, limit } => {
                out.extend(gate.iter().zip(up).map(|(&g, &u)| {
                    let g = g.min(limit);
                    let u = u.clamp(-limit, limit);
                    (u + 1.0) * (g * sigmoid(g * alpha))
                }))
            }
        }
    }

    /// A short name for logs, node information and errors.
    pub fn name(&self) -> String {
        match self {
            Activation::Swiglu => "swiglu".into(),
            Activation::ClampedSwiglu { alpha, limit } => {
                format!("clamped-swiglu(alpha={alpha}, limit={limit})")
            }
        }
    }
}

/// What every routed expert of a model is, beyond its matrices: read from the config, so that a
/// node computes what the single-process model computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertShape {
    pub activation: Activation,
    /// The gate/up and down products have biases (gpt-oss).
    pub biased: bool,
}

impl ExpertShape {
    /// SwiGLU without biases (every architecture but gpt-oss).
    pub const SWIGLU: ExpertShape = ExpertShape {
        activation: Activation::Swiglu,
        biased: false,
    };
}

/// An expert's biases: the gate/up one stacked as the matrix is (gate rows, then up rows), and
/// the down one.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertBias {
    pub gate_up: Vec<f32>,
    pub down: Vec<f32>,
}

/// A gated MLP with gate and up stacked into one matrix so one product computes both.
#[derive(Debug, Clone)]
pub struct Expert {
    gate_up: Matrix,
    down: Matrix,
    activation: Activation,
    bias: Option<ExpertBias>,
}

impl Expert {
    /// Reads the gate, up and down matrices (in `ExpertMatrix::ALL` order) of a SwiGLU MLP,
    /// converted to `format` if given.
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

    /// Reads a routed expert wherever its checkpoint keeps it, converted to `format` if given.
    pub fn load_routed(
        ckpt: &Checkpoint,
        tensors: &ExpertTensors,
        shape: ExpertShape,
        format: Option<Format>,
    ) -> Result<Expert> {
        let expert = match tensors {
            ExpertTensors::Separate(specs) => Expert::load(ckpt, specs.clone(), format)?,
            ExpertTensors::Fused(fused) => Expert::load_fused(ckpt, fused, format)?,
        };
        expert.with_activation(shape.activation).checked(shape)
    }

    /// One expert of a layer's fused tensors: gate and up interleaved by output row (even rows
    /// gate, odd rows up) in one tensor, down in another, with their biases.
    fn load_fused(
        ckpt: &Checkpoint,
        fused: &FusedExpert,
        format: Option<Format>,
    ) -> Result<Expert> {
        let inter = fused.down.shape[1];
        // The expert stacks its gate rows, then its up rows: the checkpoint's even rows, then
        // its odd ones, read as one matrix.
        let stacked: Vec<usize> = (0..inter)
            .map(|i| 2 * i)
            .chain((0..inter).map(|i| 2 * i + 1))
            .collect();
        let e = fused.expert;
        let gate_up = ckpt.expert_rows(&fused.gate_up, e, &stacked, format)?;
        let all_down: Vec<usize> = (0..fused.down.shape[2]).collect();
        let down = ckpt.expert_rows(&fused.down, e, &all_down, format)?;
        let gate_up_bias = ckpt.expert_vector(&fused.gate_up_bias, e)?;
        let bias = ExpertBias {
            gate_up: stacked.iter().map(|&r| gate_up_bias[r]).collect(),
            down: ckpt.expert_vector(&fused.down_bias, e)?,
        };
        Expert::from_parts(gate_up, down)?.with_bias(bias)
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

    /// A SwiGLU expert without biases from its stacked `[2 * intermediate, hidden]` gate/up
    /// matrix and its `[hidden, intermediate]` down matrix. The two may differ in format when
    /// one width does not fit the format asked for (see `fallback`).
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
        Ok(Expert {
            gate_up,
            down,
            activation: Activation::Swiglu,
            bias: None,
        })
    }

    /// This expert computing `activation` between its products.
    pub fn with_activation(mut self, activation: Activation) -> Expert {
        self.activation = activation;
        self
    }

    /// This expert with biases on its products, checked against its widths.
    pub fn with_bias(mut self, bias: ExpertBias) -> Result<Expert> {
        let want = (self.gate_up.rows(), self.down.rows());
        if (bias.gate_up.len(), bias.down.len()) != want {
            return Err(ModelError::InvalidArgument(format!(
                "expert biases of {} and {} values for products of {} and {} rows",
                bias.gate_up.len(),
                bias.down.len(),
                want.0,
                want.1
            )));
        }
        self.bias = Some(bias);
        Ok(self)
    }

    /// This expert, refused unless it is of `shape` (its biases present exactly when the shape
    /// has them).
    pub fn checked(self, shape: ExpertShape) -> Result<Expert> {
        if self.shape() != shape {
            return Err(ModelError::InvalidArgument(format!(
                "expert is {:?}, the model's experts are {shape:?}",
                self.shape()
            )));
        }
        Ok(self)
    }

    /// The stacked gate/up matrix and the down matrix.
    pub fn parts(&self) -> (&Matrix, &Matrix) {
        (&self.gate_up, &self.down)
    }

    pub fn bias(&self) -> Option<&ExpertBias> {
        self.bias.as_ref()
    }

    pub fn shape(&self) -> ExpertShape {
        ExpertShape {
            activation: self.activation,
            biased: self.bias.is_some(),
        }
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

    /// Bytes of the weights (biases not counted).
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
        if let Some(b) = &self.bias {
            add_bias(&mut gate_up, &b.gate_up);
        }
        let mut h = Vec::with_capacity(n * inter);
        for row in gate_up.chunks_exact(2 * inter) {
            let (g, u) = row.split_at(inter);
            self.activation.apply(g, u, &mut h);
        }
        let mut y = vec![0.0; n * self.down.rows()];
        pool.matmul(&self.down, &h, n, &mut y)?;
        if let Some(b) = &self.bias {
            add_bias(&mut y, &b.down);
        }
        Ok(y)
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

    #[test]
    fn the_clamped_swiglu_clamps_gates_above_and_ups_on_both_sides() {
        let act = Activation::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        };
        let mut out = Vec::new();
        act.apply(&[10.0, -10.0, 0.5], &[-9.0, 9.0, 0.25], &mut out);
        let glu = |g: f32| g * sigmoid(1.702 * g);
        let want = [
            (-7.0 + 1.0) * glu(7.0),
            (7.0 + 1.0) * glu(-10.0),
            1.25 * glu(0.5),
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn biases_join_both_products_and_are_checked_against_the_widths() {
        let (hidden, inter) = (32, 32);
        let gate_up = Matrix::from_f32(
            2 * inter,
            hidden,
            &vec![0.0; 2 * inter * hidden],
            Format::F32,
        );
        let down = Matrix::from_f32(hidden, inter, &vec![0.5; hidden * inter], Format::F32);
        let plain = Expert::from_parts(gate_up.unwrap(), down.unwrap()).unwrap();
        let wrong = ExpertBias {
            gate_up: vec![0.0; inter],
            down: vec![0.0; hidden],
        };
        assert!(plain.clone().with_bias(wrong).is_err());
        // A zero gate/up product plus its bias: gate 1, up 2, so each activation is
        // silu(1) * 2; down adds its own bias 3 to 0.5 * inter of them.
        let bias = ExpertBias {
            gate_up: [vec![1.0; inter], vec![2.0; inter]].concat(),
            down: vec![3.0; hidden],
        };
        let biased = plain.with_bias(bias).unwrap();
        assert!(biased.shape().biased);
        let pool = Pool::new(1).unwrap();
        let y = biased.forward(&pool, &vec![1.0; hidden], 1).unwrap();
        let want = 0.5 * inter as f32 * silu(1.0) * 2.0 + 3.0;
        assert!(y.iter().all(|v| (v - want).abs() < 1e-4), "{y:?} vs {want}");
        assert!(biased.checked(ExpertShape::SWIGLU).is_err());
    }
}
