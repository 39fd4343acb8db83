//! Single-threaded reference kernels.
//!
//! [`matvec`] and [`matmul`] compute exactly what [`Pool`](crate::Pool) computes, with the
//! portable dot products (for the integer formats: activations quantized to int8 blocks, integer
//! block dots, f32 scale products; fp8 and mxfp4 take the activations as f32). [`matvec_dequantized`] and [`matmul_dequantized`] instead
//! dequantize the weights and use the activations unquantized, accumulating in f64: the yardstick
//! for the error the activation quantization adds. The per-block dot products are public so other
//! backends can be checked against them.

use crate::activation;
use crate::error::KernelError;
use crate::isa::Isa;
use crate::kernel::{self, Act, Out};
use crate::matrix::Matrix;
use crate::quant::QK;

pub use crate::kernel::scalar::{
    block_dot_fp8, block_dot_mxfp4, block_dot_q2, block_dot_q4, block_dot_q8, dot_bf16, dot_f16,
    dot_f32, dot_fp8, dot_mxfp4, dot_q2, dot_q4, dot_q8,
};

/// Checks `xs.len() == n * cols` and `ys.len() == n * rows`.
pub(crate) fn check_shapes(
    w: &Matrix,
    xs: &[f32],
    n: usize,
    ys: &[f32],
) -> Result<(), KernelError> {
    let too_large = KernelError::TooLarge {
        rows: w.rows(),
        cols: w.cols(),
    };
    let x_len = n.checked_mul(w.cols()).ok_or(too_large.clone())?;
    let y_len = n.checked_mul(w.rows()).ok_or(too_large)?;
    if xs.len() != x_len {
        return Err(KernelError::ShapeMismatch {
            what: "input vectors (n * cols)",
            expected: x_len,
            got: xs.len(),
        });
    }
    if ys.len() != y_len {
        return Err(KernelError::ShapeMismatch {
            what: "output vectors (n * rows)",
            expected: y_len,
            got: ys.len(),
        });
    }
    Ok(())
}

/// `y[r] = Σ_c W[r, c] x[c]`, single-threaded, portable code.
pub fn matvec(w: &Matrix, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    matmul(w, x, 1, y)
}

/// `ys[i*rows + r] = Σ_c W[r, c] xs[i*cols + c]` for `i` in `0..n`, single-threaded, portable code.
pub fn matmul(w: &Matrix, xs: &[f32], n: usize, ys: &mut [f32]) -> Result<(), KernelError> {
    check_shapes(w, xs, n, ys)?;
    let rows = w.rows();
    let out = Out::new(ys, rows);
    let all = |job: &(dyn Fn(std::ops::Range<usize>) + Sync)| job(0..rows);
    if w.format().takes_int8_activations() {
        let mut act = vec![activation::ActBlock::default(); xs.len() / QK];
        activation::quantize_scalar(xs, &mut act);
        kernel::run(Isa::Scalar, w, Act::Q(&act), n, &out, &all);
    } else {
        kernel::run(Isa::Scalar, w, Act::F32(xs), n, &out, &all);
    }
    Ok(())
}

/// `y = W x` with `W` dequantized to f32 and `x` used as is, accumulated in f64.
pub fn matvec_dequantized(w: &Matrix, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    matmul_dequantized(w, x, 1, y)
}

/// `ys = W xs` for `n` vectors with `W` dequantized to f32 and `xs` used as is, accumulated in f64.
pub fn matmul_dequantized(
    w: &Matrix,
    xs: &[f32],
    n: usize,
    ys: &mut [f32],
) -> Result<(), KernelError> {
    check_shapes(w, xs, n, ys)?;
    let (rows, cols) = (w.rows(), w.cols());
    let mut row = vec![0.0f32; cols];
    for r in 0..rows {
        w.dequantize_row(r, &mut row)?;
        for i in 0..n {
            let x = &xs[i * cols..(i + 1) * cols];
            let dot: f64 = row
                .iter()
                .zip(x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            ys[i * rows + r] = dot as f32;
        }
    }
    Ok(())
}
