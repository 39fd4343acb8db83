//! AVX-512 float dot products (`F32`, `F16`, `Bf16` weights, f32 activations): 16 weights per
//! step widened to f32 and fused-multiply-added, the last `cols % 16` with masked loads.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use half::{bf16, f16};

use crate::kernel::{prefetch, prefetch_ahead};

/// A float weight type that can be widened 16 at a time.
pub(super) trait Widen: Copy {
    /// Loads 16 weights as f32.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL must be available and `p..p+16` readable.
    unsafe fn load16(p: *const Self) -> __m512;

    /// Loads the weights selected by `k` (others read as zero).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL must be available and the selected elements readable.
    unsafe fn load16_masked(p: *const Self, k: __mmask16) -> __m512;
}

impl Widen for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees the features and readable memory.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load16_masked(p: *const f32, k: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the features; masked-off lanes are not accessed.
        unsafe { _mm512_maskz_loadu_ps(k, p) }
    }
}

impl Widen for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees the features and 32 readable bytes.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load16_masked(p: *const f16, k: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the features; masked-off lanes are not accessed.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p.cast())) }
    }
}

/// bf16 bits to f32: the bf16 is the upper half of the f32.
///
/// # Safety
/// AVX-512 F must be available.
#[inline(always)]
unsafe fn widen_bf16(h: __m256i) -> __m512 {
    // SAFETY: the caller guarantees the features.
    unsafe { _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) }
}

impl Widen for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        // SAFETY: the caller guarantees the features and 32 readable bytes.
        unsafe { widen_bf16(_mm256_loadu_si256(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load16_masked(p: *const bf16, k: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the features; masked-off lanes are not accessed.
        unsafe { widen_bf16(_mm256_maskz_loadu_epi16(k, p.cast())) }
    }
}

/// `R x T` float dot products; the last `len % 16` columns use masked loads.
///
/// # Safety
/// AVX-512 F/BW/VL must be available; `w.len() >= R * len`, `x.len() >= T * len`.
#[inline(always)]
pub(super) unsafe fn float_tile<W: Widen, const R: usize, const T: usize>(
    w: &[W],
    x: &[f32],
    len: usize,
) -> [[f32; R]; T] {
    assert!(w.len() >= R * len && x.len() >= T * len);
    // SAFETY: features by the caller; full loads cover c..c+16 <= main <= len, masked loads
    // only the remaining len - main < 16 elements of each row / vector.
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let main = len - len % 16;
        let ahead = prefetch_ahead(len * size_of::<W>(), R);
        let mut acc = [[_mm512_setzero_ps(); R]; T];
        let mut c = 0;
        while c < main {
            let mut wv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let p = wp.add(r * len + c);
                prefetch(p, ahead, 16 * size_of::<W>());
                wv[r] = W::load16(p);
            }
            for t in 0..T {
                let xv = _mm512_loadu_ps(xp.add(t * len + c));
                for r in 0..R {
                    acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]);
                }
            }
            c += 16;
        }
        if main < len {
            let k: __mmask16 = (1u16 << (len - main)) - 1;
            let mut wv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                wv[r] = W::load16_masked(wp.add(r * len + main), k);
            }
            for t in 0..T {
                let xv = _mm512_maskz_loadu_ps(k, xp.add(t * len + main));
                for r in 0..R {
                    acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]);
                }
            }
        }
        let mut out = [[0.0; R]; T];
        for t in 0..T {
            for r in 0..R {
                out[t][r] = _mm512_reduce_add_ps(acc[t][r]);
            }
        }
        out
    }
}
