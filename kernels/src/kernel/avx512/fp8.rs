//! The AVX-512 `Fp8` tile: 32 E4M3 codes per block widened to f32 through f16 (integer shifts
//! place a code's bits where an f16 keeps them, then `vcvtph2ps`), multiplied with the
//! activations, and each block's sum scaled by its `d`.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::kernel::prefetch_ahead;
use crate::quant::{BlockFp8, QK};

/// 2^8: the f16 a code's bits become is its value times 2^-8.
const F16_CODE_SCALE: f32 = 256.0;

/// The 32 codes at `p` as two vectors of 16 f32 values, each the code's value times 2^-8. The
/// code moves to the high byte of a 16-bit lane, an arithmetic shift right by one copies its
/// sign into bit 14, and clearing bit 14 leaves an f16 with the sign in bit 15 and the exponent
/// and mantissa bits in bits 13..7: exponent bias 15 instead of 7, subnormals included.
///
/// # Safety
/// AVX-512 F/BW and F16C must be available and `p..p+32` readable.
#[inline(always)]
pub(super) unsafe fn widen_e4m3(p: *const u8) -> (__m512, __m512) {
    // SAFETY: the caller guarantees the features and 32 readable bytes.
    unsafe {
        let h = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()));
        let h = _mm512_srai_epi16(_mm512_slli_epi16(h, 8), 1);
        let h = _mm512_and_si512(h, _mm512_set1_epi16(!0x4000));
        (
            _mm512_cvtph_ps(_mm512_castsi512_si256(h)),
            _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(h)),
        )
    }
}

/// `R x T` dot products of fp8 rows (`len` blocks) with f32 vectors of `len * 32` values.
///
/// # Safety
/// AVX-512 F/BW and F16C must be available; `w.len() >= R * len`, `x.len() >= T * len * 32`.
#[inline(always)]
pub(super) unsafe fn fp8_tile<const R: usize, const T: usize>(
    w: &[BlockFp8],
    x: &[f32],
    len: usize,
) -> [[f32; R]; T] {
    let plen = len * QK;
    assert!(w.len() >= R * len && x.len() >= T * plen);
    // SAFETY: features by the caller; block `r * len + b < R * len` and activations
    // `t * plen + b * 32 + 32 <= T * plen` are in bounds (asserted above).
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let ahead = prefetch_ahead(len * size_of::<BlockFp8>(), R);
        let mut acc = [[_mm512_setzero_ps(); R]; T];
        for b in 0..len {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            let mut d = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let block = wp.add(r * len + b);
                _mm_prefetch::<_MM_HINT_T0>(block.cast::<i8>().wrapping_add(ahead));
                (lo[r], hi[r]) = widen_e4m3(std::ptr::addr_of!((*block).qs).cast());
                d[r] = _mm512_set1_ps((*block).d);
            }
            for t in 0..T {
                let xb = xp.add(t * plen + b * QK);
                let (x0, x1) = (_mm512_loadu_ps(xb), _mm512_loadu_ps(xb.add(16)));
                for r in 0..R {
                    let s = _mm512_fmadd_ps(hi[r], x1, _mm512_mul_ps(lo[r], x0));
                    acc[t][r] = _mm512_fmadd_ps(s, d[r], acc[t][r]);
                }
            }
        }
        let mut out = [[0.0; R]; T];
        for t in 0..T {
            for r in 0..R {
                out[t][r] = _mm512_reduce_add_ps(acc[t][r]) * F16_CODE_SCALE;
            }
        }
        out
    }
}
