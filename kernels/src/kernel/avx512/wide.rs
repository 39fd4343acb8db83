//! The AVX-512 tile of the block formats that take f32 activations: a block's 32 codes widened
//! to f32 — `Fp8`'s E4M3 codes through f16 (integer shifts place a code's bits where an f16 keeps
//! them, then `vcvtph2ps`), `Mxfp4`'s E2M1 codes looked up as their doubled values in an f32
//! table with `vpermps` —, multiplied with the activations, and each block's sum scaled by its scale.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::kernel::{prefetch, prefetch_ahead};
use crate::quant::{BlockFp8, BlockMxfp4, E2M1_DOUBLED, QK};

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
unsafe fn widen_e4m3(p: *const u8) -> (__m512, __m512) {
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

/// A block of 32 weights that the tile widens to f32 (divided by `FACTOR`, which the tile
/// multiplies back at the end), with its scale.
pub(super) trait WideBlock {
    /// The codes' values are the widened values times this.
    const FACTOR: f32;
    /// How far ahead a single row's stream is prefetched, in bytes, if at all (as the
    /// quantized formats' `QFormat::LEAD`: `Fp8` matvecs of 1024x3584 went from 23 to 24-26
    /// GB/s with 512 bytes).
    const LEAD: Option<usize>;

    /// The 32 values as two vectors of 16, elements in order.
    ///
    /// # Safety
    /// AVX-512 F/BW and F16C must be available.
    unsafe fn widen(&self) -> (__m512, __m512);

    /// The factor of the block's codes.
    fn scale(&self) -> f32;
}

impl WideBlock for BlockFp8 {
    const FACTOR: f32 = F16_CODE_SCALE;
    const LEAD: Option<usize> = Some(512);

    #[inline(always)]
    unsafe fn widen(&self) -> (__m512, __m512) {
        // SAFETY: features by the caller; `qs` is 32 readable bytes.
        unsafe { widen_e4m3(self.qs.as_ptr()) }
    }

    fn scale(&self) -> f32 {
        self.d
    }
}

/// [`E2M1_DOUBLED`] as f32, the table `vpermps` looks codes up in.
static E2M1_DOUBLED_F32: [f32; 16] = {
    let mut table = [0.0; 16];
    let mut i = 0;
    while i < 16 {
        table[i] = E2M1_DOUBLED[i] as f32;
        i += 1;
    }
    table
};

impl WideBlock for BlockMxfp4 {
    const FACTOR: f32 = 1.0;
    const LEAD: Option<usize> = None;

    /// Each code byte widened to an int32 lane; `vpermps` reads only an index's low four bits,
    /// so the low nibbles index the f32 table as they are and the high ones after a shift.
    #[inline(always)]
    unsafe fn widen(&self) -> (__m512, __m512) {
        // SAFETY: features by the caller; `qs` is 16 readable bytes, the table 16 f32 values.
        unsafe {
            let table = _mm512_loadu_ps(E2M1_DOUBLED_F32.as_ptr());
            let codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(self.qs.as_ptr().cast()));
            (
                _mm512_permutexvar_ps(codes, table),
                _mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), table),
            )
        }
    }

    fn scale(&self) -> f32 {
        self.half_scale()
    }
}

/// `R x T` dot products of rows of widened blocks (`len` blocks) with f32 vectors of `len * 32`
/// values; each block's sum is scaled by its scale, and the result by `B::FACTOR`.
///
/// # Safety
/// AVX-512 F/BW and F16C must be available; `w.len() >= R * len`, `x.len() >= T * len * 32`.
#[inline(always)]
pub(super) unsafe fn wide_tile<B: WideBlock, const R: usize, const T: usize>(
    w: &[B],
    x: &[f32],
    len: usize,
) -> [[f32; R]; T] {
    let plen = len * QK;
    assert!(w.len() >= R * len && x.len() >= T * plen);
    // SAFETY: features by the caller; block `r * len + b < R * len` and activations
    // `t * plen + b * 32 + 32 <= T * plen` are in bounds (asserted above).
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let ahead = if R == 1 {
            B::LEAD
        } else {
            prefetch_ahead(len * size_of::<B>(), R)
        };
        let mut acc = [[_mm512_setzero_ps(); R]; T];
        for b in 0..len {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            let mut d = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let block = wp.add(r * len + b);
                prefetch(block, ahead, size_of::<B>());
                (lo[r], hi[r]) = (*block).widen();
                d[r] = _mm512_set1_ps((*block).scale());
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
                out[t][r] = _mm512_reduce_add_ps(acc[t][r]) * B::FACTOR;
            }
        }
        out
    }
}
