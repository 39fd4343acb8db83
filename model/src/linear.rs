//! A linear layer of the attention blocks: one or more projections stacked row-wise (so q, k and v
//! run as one product), in the format asked for, with their biases.

use moe_kernels::{Format, Matrix, Pool};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::layout::TensorSpec;
use crate::ops::add_bias;

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Matrix,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// The projections `weights` stacked in order, each with its bias when it has one (the
    /// architectures bias all of the stacked projections or none), converted to `format` if
    /// given.
    pub(crate) fn load(
        ckpt: &Checkpoint,
        weights: &[TensorSpec],
        biases: &[TensorSpec],
        format: Option<Format>,
    ) -> Result<Linear> {
        let mut matrices = weights
            .iter()
            .map(|spec| ckpt.matrix(spec, format))
            .collect::<Result<Vec<_>>>()?;
        let weight = match matrices.len() {
            // A single projection is used as loaded, not copied.
            1 => matrices.remove(0),
            _ => Matrix::stack_rows(&matrices.iter().collect::<Vec<_>>())?,
        };
        let biases = biases
            .iter()
            .map(|spec| ckpt.vector(spec))
            .collect::<Result<Vec<_>>>()?;
        let bias = (!biases.is_empty()).then(|| biases.concat());
        Ok(Linear { weight, bias })
    }

    /// `x` is `[n, cols]`; returns `[n, rows]`.
    pub(crate) fn forward(&self, pool: &Pool, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut y = vec![0.0; n * self.weight.rows()];
        pool.matmul(&self.weight, x, n, &mut y)?;
        if let Some(b) = &self.bias {
            add_bias(&mut y, b);
        }
        Ok(y)
    }

    pub(crate) fn weight(&self) -> &Matrix {
        &self.weight
    }
}
