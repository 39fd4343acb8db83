//! Activation vectors quantized to int8 blocks, the right-hand side of every quantized dot product.
//!
//! For a weight matrix in `Q8`/`Q4`/`Q2`, `matvec` first turns `x` into [`ActBlock`]s (once per
//! call, shared by all rows and threads) and then multiplies integer codes with integer codes,
//! which is what makes the kernels fast. The scalar reference and every SIMD path use the same
//! quantized blocks, so they differ only in the order of the float additions.
//!
//! Quantization of one 32-element block: `d = amax / 127` (f32), `q_j = round_ties_even(x_j / d)`
//! computed as `x_j * (1 / d)`, `sum = Σ q_j`. Because `|q_j| <= 127`, `|x_j - d q_j| <= d / 2`,
//! which bounds the error this step adds to a dot product (see `scalar::matvec_dequantized`).
//! A block whose `d` would be below the smallest normal f32 (every `|x_j| < 1.5e-36`) has no
//! finite `1 / d` and is quantized to zero (`d = 0`), an error below what an f32 sum resolves.
//! Non-finite activations give unspecified (but memory-safe) results.

use bytemuck::{Pod, Zeroable};

use crate::quant::QK;

/// 32 activations as int8 codes with an f32 scale and the sum of the codes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ActBlock {
    /// Codes in `-127..=127`.
    pub qs: [i8; QK],
    /// Scale: element `j` is `d * qs[j]`.
    pub d: f32,
    /// `Σ qs[j]`, used for the offset terms of `Q4` and `Q2`.
    pub sum: i32,
}

const _: () = assert!(size_of::<ActBlock>() == 40);

/// The scale `d` of a block with largest magnitude `amax`, and `1 / d`; `(0, 0)` where `1 / d`
/// would not be finite.
fn scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    if d >= f32::MIN_POSITIVE {
        (d, 1.0 / d)
    } else {
        (0.0, 0.0)
    }
}

impl ActBlock {
    /// Quantizes 32 activations.
    pub fn quantize(x: &[f32]) -> ActBlock {
        debug_assert_eq!(x.len(), QK);
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = scale(amax);
        let mut qs = [0i8; QK];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
            sum += i32::from(*q);
        }
        ActBlock { qs, d, sum }
    }
}

/// Quantizes `x` (a whole number of blocks) into `out`, one block per 32 elements.
///
/// Uses AVX2 when available; the result is bit-identical to [`ActBlock::quantize`] (same
/// operations, round-to-nearest-even conversion, order-independent max and integer sum).
pub fn quantize_into(x: &[f32], out: &mut [ActBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if crate::isa::Isa::detect() >= crate::isa::Isa::Avx2 {
        // SAFETY: AVX2 is available (checked on the line above).
        unsafe { quantize_avx2(x, out) };
        return;
    }
    quantize_scalar(x, out);
}

/// [`quantize_into`] without SIMD: the reference the SIMD path is tested against.
pub(crate) fn quantize_scalar(x: &[f32], out: &mut [ActBlock]) {
    for (o, chunk) in out.iter_mut().zip(x.chunks_exact(QK)) {
        *o = ActBlock::quantize(chunk);
    }
}

/// [`quantize_into`] with AVX2.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(x: &[f32], out: &mut [ActBlock]) {
    use std::arch::x86_64::*;

    for (o, chunk) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `chunk` has 32 elements, so the four 8-lane loads are in bounds; `o.qs` is 32
        // writable bytes.
        unsafe {
            let p = chunk.as_ptr();
            let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
            let abs = _mm256_set1_ps(f32::from_bits(0x7fff_ffff));
            let m01 = _mm256_max_ps(_mm256_and_ps(v[0], abs), _mm256_and_ps(v[1], abs));
            let m23 = _mm256_max_ps(_mm256_and_ps(v[2], abs), _mm256_and_ps(v[3], abs));
            let m = _mm256_max_ps(m01, m23);
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let amax = _mm_cvtss_f32(m);
            let (d, id) = scale(amax);
            let id = _mm256_set1_ps(id);
            let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
            let q = v.map(|v| {
                let scaled = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, id), lo), hi);
                _mm256_cvtps_epi32(scaled)
            });
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            let packed = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let ordered =
                _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), ordered);
            o.d = d;
            o.sum = _mm_cvtsi128_si32(s);
        }
    }
}

/// Quantizes `x` into a new vector of blocks.
pub fn quantize(x: &[f32]) -> Vec<ActBlock> {
    let mut out = vec![ActBlock::default(); x.len() / QK];
    quantize_into(x, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_at_most_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37)
            .collect();
        for (b, chunk) in quantize(&x).iter().zip(x.chunks_exact(QK)) {
            assert_eq!(b.sum, b.qs.iter().map(|&q| i32::from(q)).sum::<i32>());
            for (q, v) in b.qs.iter().zip(chunk) {
                assert!((b.d * f32::from(*q) - v).abs() <= b.d * 0.5 * 1.0001);
            }
        }
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let mut x: Vec<f32> = (0..32 * 40)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 0.013)
            .collect();
        x[..32].fill(0.0);
        x[32..64].fill(-2.5);
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.5 / 127.0 * 3.0; // exact halves of a step
        }
        x[100] = 1e30;
        x[200] = -1e-30;
        x[224] = 1e-38; // a block too small for a finite 1 / d
        x[225] = -0.5e-38;
        let mut fast = vec![ActBlock::default(); 40];
        let mut slow = vec![ActBlock::default(); 40];
        quantize_into(&x, &mut fast);
        quantize_scalar(&x, &mut slow);
        assert_eq!(fast, slow);
    }

    #[test]
    fn blocks_below_the_normal_range_quantize_to_zero() {
        let mut x = [0.0f32; QK];
        x[0] = 1e-38;
        x[1] = -3e-39;
        let b = ActBlock::quantize(&x);
        assert_eq!((b.d, b.sum), (0.0, 0));
        assert!(b.qs.iter().all(|&q| q == 0));
    }

    #[test]
    fn zeros_give_zero_scale() {
        let b = ActBlock::quantize(&[0.0; QK]);
        assert_eq!(b.d, 0.0);
        assert_eq!(b.sum, 0);
        assert!(b.qs.iter().all(|&q| q == 0));
    }
}
