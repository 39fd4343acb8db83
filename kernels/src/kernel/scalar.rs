//! Portable dot products, the reference the SIMD paths are tested against.
//!
//! Float formats accumulate `w * x` in f32 in element order. The formats checkpoints store
//! (`Fp8`, `Mxfp4`) take f32 activations too: each block's codes (`Mxfp4`: doubled, so integers)
//! times the activations, summed in f32, times the block's scale (`Mxfp4`: `2^(e-128)`), in block
//! order. The integer formats compute each block's integer dot product with int8 activations
//! exactly and accumulate `(d_w * d_x) * dot` (plus `(m_w * d_x) * Σq_x` for `Q2`) in f32 in
//! block order; the SIMD paths do the same integer work and the same scale products, differing
//! only in the order of the float additions.

use half::{bf16, f16};

use super::{Tile, padded_prepared, unprepared};
use crate::activation::ActBlock;
use crate::quant::{
    BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8, E2M1_DOUBLED, E4M3_VALUES, QK,
};

/// `Σ w_j x_j` over f32 weights.
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).fold(0.0, |acc, (w, x)| acc + w * x)
}

/// `Σ w_j x_j` over f16 weights.
pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    w.iter()
        .zip(x)
        .fold(0.0, |acc, (w, x)| acc + w.to_f32() * x)
}

/// `Σ w_j x_j` over bf16 weights.
pub fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    w.iter()
        .zip(x)
        .fold(0.0, |acc, (w, x)| acc + w.to_f32() * x)
}

/// `Σ e4m3(q_j) x_j` over one `Fp8` block's codes and 32 activations (the scale not applied).
pub fn block_dot_fp8(w: &BlockFp8, x: &[f32]) -> f32 {
    w.qs.iter()
        .zip(x)
        .fold(0.0, |acc, (&q, x)| acc + E4M3_VALUES[usize::from(q)] * x)
}

/// Dot product of an `Fp8` row with f32 activations padded to whole blocks.
pub fn dot_fp8(w: &[BlockFp8], x: &[f32]) -> f32 {
    w.iter()
        .zip(x.chunks_exact(QK))
        .fold(0.0, |acc, (b, x)| acc + b.d * block_dot_fp8(b, x))
}

/// Integer dot product of one `Q8` block with one activation block.
pub fn block_dot_q8(w: &BlockQ8, x: &ActBlock) -> i32 {
    w.qs.iter()
        .zip(&x.qs)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

/// Integer dot product `Σ (q_j - 8) x_j` of one `Q4` block with one activation block.
pub fn block_dot_q4(w: &BlockQ4, x: &ActBlock) -> i32 {
    let mut s = 0i32;
    for (j, &b) in w.qs.iter().enumerate() {
        s += (i32::from(b & 0x0f) - 8) * i32::from(x.qs[j]);
        s += (i32::from(b >> 4) - 8) * i32::from(x.qs[j + QK / 2]);
    }
    s
}

/// `Σ 2 e2m1(q_j) x_j` over one `Mxfp4` block's codes, doubled (which makes them integers), and
/// 32 activations (the scale not applied).
pub fn block_dot_mxfp4(w: &BlockMxfp4, x: &[f32]) -> f32 {
    x.iter().take(QK).enumerate().fold(0.0, |acc, (j, x)| {
        acc + f32::from(E2M1_DOUBLED[usize::from(w.code(j))]) * x
    })
}

/// Integer dot product `Σ q_j x_j` of one `Q2` block's codes with one activation block.
pub fn block_dot_q2(w: &BlockQ2, x: &ActBlock) -> i32 {
    (0..QK)
        .map(|j| i32::from((w.qs[j % 8] >> (2 * (j / 8))) & 3) * i32::from(x.qs[j]))
        .sum()
}

/// Dot product of a `Q8` row with a quantized activation vector.
pub fn dot_q8(w: &[BlockQ8], x: &[ActBlock]) -> f32 {
    w.iter().zip(x).fold(0.0, |acc, (b, a)| {
        acc + (b.d.to_f32() * a.d) * block_dot_q8(b, a) as f32
    })
}

/// Dot product of a `Q4` row with a quantized activation vector.
pub fn dot_q4(w: &[BlockQ4], x: &[ActBlock]) -> f32 {
    w.iter().zip(x).fold(0.0, |acc, (b, a)| {
        acc + (b.d.to_f32() * a.d) * block_dot_q4(b, a) as f32
    })
}

/// Dot product of an `Mxfp4` row with f32 activations.
pub fn dot_mxfp4(w: &[BlockMxfp4], x: &[f32]) -> f32 {
    w.iter().zip(x.chunks_exact(QK)).fold(0.0, |acc, (b, x)| {
        acc + b.half_scale() * block_dot_mxfp4(b, x)
    })
}

/// Dot product of a `Q2` row with a quantized activation vector.
pub fn dot_q2(w: &[BlockQ2], x: &[ActBlock]) -> f32 {
    w.iter().zip(x).fold(0.0, |acc, (b, a)| {
        acc + (b.d.to_f32() * a.d) * block_dot_q2(b, a) as f32 + (b.m.to_f32() * a.d) * a.sum as f32
    })
}

/// A tile of weight units `$w` and activation units `$x` (readied by `$prepared`), each of its
/// dot products by `$dot`.
macro_rules! scalar_tile {
    ($name:ident, $w:ty, $x:ty, $prepared:ident, $dot:ident) => {
        pub(crate) struct $name;

        impl Tile for $name {
            type W = $w;
            type X = $x;
            $prepared!();

            unsafe fn tile<const R: usize, const T: usize>(
                w: &[$w],
                x: &[Self::P],
                len: usize,
            ) -> [[f32; R]; T] {
                let plen = Self::prepared_len(len);
                let mut out = [[0.0; R]; T];
                for (t, o) in out.iter_mut().enumerate() {
                    for (r, v) in o.iter_mut().enumerate() {
                        *v = $dot(&w[r * len..(r + 1) * len], &x[t * plen..(t + 1) * plen]);
                    }
                }
                out
            }
        }
    };
}

scalar_tile!(F32, f32, f32, unprepared, dot_f32);
scalar_tile!(F16, f16, f32, unprepared, dot_f16);
scalar_tile!(Bf16, bf16, f32, unprepared, dot_bf16);
scalar_tile!(Fp8, BlockFp8, f32, padded_prepared, dot_fp8);
scalar_tile!(Mxfp4, BlockMxfp4, f32, padded_prepared, dot_mxfp4);
scalar_tile!(Q8, BlockQ8, ActBlock, unprepared, dot_q8);
scalar_tile!(Q4, BlockQ4, ActBlock, unprepared, dot_q4);
scalar_tile!(Q2, BlockQ2, ActBlock, unprepared, dot_q2);
