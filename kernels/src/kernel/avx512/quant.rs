//! The AVX-512 quantized tile: integer block dots over groups of four blocks, scaled and
//! accumulated in f32, with software prefetch and a zero-padded path for the last groups.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::groups::{GROUP, QFormat, WGroup, XGroup};
use crate::kernel::{prefetch, prefetch_ahead};

/// `init` plus the integer dot products of weight codes `w[h]` with activation codes `x[h]`,
/// four int32 sums per block (lanes `4k..4k+4`).
///
/// # Safety
/// AVX-512 F/BW (and VNNI when `ICL`) must be available.
#[inline(always)]
unsafe fn dot<const ICL: bool>(
    init: __m512i,
    w: [__m512i; 2],
    x: [__m512i; 2],
    signed: bool,
) -> __m512i {
    // SAFETY: the caller guarantees the features.
    unsafe {
        if ICL {
            return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, w[0], x[0]), w[1], x[1]);
        }
        let ones = _mm512_set1_epi16(1);
        let mut acc = init;
        for h in 0..2 {
            let p = if signed {
                let neg = _mm512_movepi8_mask(w[h]);
                let xs = _mm512_mask_sub_epi8(x[h], neg, _mm512_setzero_si512(), x[h]);
                _mm512_maddubs_epi16(_mm512_abs_epi8(w[h]), xs)
            } else {
                _mm512_maddubs_epi16(w[h], x[h])
            };
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, ones));
        }
        acc
    }
}

/// 64-byte aligned scratch for a zero-padded group.
#[repr(C, align(64))]
struct Pad([u8; 192]);

/// Running sums of an `R x T` quantized tile.
struct QAcc<const R: usize, const T: usize> {
    acc: [[__m512; R]; T],
    offsets: [[__m256; R]; T],
}

/// Adds one group of four blocks of each of the `R` rows (starting at `ptrs[r]`) times group `g`
/// of each of the `T` activation vectors.
///
/// # Safety
/// As [`quant_tile`]; each `ptrs[r]` has `WINDOW` readable bytes.
#[inline(always)]
unsafe fn quant_group<F: QFormat, const ICL: bool, const R: usize, const T: usize>(
    sums: &mut QAcc<R, T>,
    ptrs: [*const u8; R],
    x: &[XGroup],
    groups: usize,
    g: usize,
) {
    // SAFETY: features and readable memory by the caller; `x` indexing is bounds-checked.
    unsafe {
        let expand = if F::OFFSET {
            _mm512_set_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0)
        } else {
            _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
        };
        let mut wg = [WGroup {
            q: [_mm512_setzero_si512(); 2],
            s: _mm256_setzero_ps(),
        }; R];
        for r in 0..R {
            wg[r] = if ICL {
                F::load_icl(ptrs[r])
            } else {
                F::load_bw(ptrs[r])
            };
        }
        for t in 0..T {
            let xg = &x[t * groups + g];
            let dx = _mm256_loadu_ps(xg.dx.as_ptr());
            let mut xq = [_mm512_setzero_si512(); 2];
            for h in 0..2 {
                xq[h] = _mm512_loadu_si512(xg.q[h].as_ptr().cast());
            }
            let init = _mm512_loadu_si512(xg.init.as_ptr().cast());
            for r in 0..R {
                let sc = _mm512_castps256_ps512(_mm256_mul_ps(wg[r].s, dx));
                let se = _mm512_permutexvar_ps(expand, sc);
                let d = dot::<ICL>(init, wg[r].q, xq, F::SIGNED);
                sums.acc[t][r] = _mm512_fmadd_ps(se, _mm512_cvtepi32_ps(d), sums.acc[t][r]);
                if F::OFFSET {
                    let m = _mm256_loadu_ps(xg.m.as_ptr());
                    sums.offsets[t][r] = _mm256_fmadd_ps(wg[r].s, m, sums.offsets[t][r]);
                }
            }
        }
    }
}

/// Groups at the end of the rows: read through a zero-padded copy when a group is partial or
/// its window would pass the end of `w`.
///
/// # Safety
/// As [`quant_tile`].
#[inline(always)]
unsafe fn quant_tail<
    F: QFormat,
    B: bytemuck::Pod,
    const ICL: bool,
    const R: usize,
    const T: usize,
>(
    sums: &mut QAcc<R, T>,
    w: &[B],
    x: &[XGroup],
    len: usize,
    first: usize,
) {
    let groups = len.div_ceil(GROUP);
    let wbytes: &[u8] = bytemuck::cast_slice(w);
    let mut pads = [const { Pad([0; 192]) }; R];
    for g in first..groups {
        let blocks = GROUP.min(len - g * GROUP);
        let mut ptrs = [std::ptr::null(); R];
        for r in 0..R {
            let start = r * len + g * GROUP;
            ptrs[r] = if blocks == GROUP && start * F::BYTES + F::WINDOW <= wbytes.len() {
                // SAFETY: `WINDOW` bytes from the group start are inside `w` (checked).
                unsafe { wbytes.as_ptr().add(start * F::BYTES) }
            } else {
                let pad = &mut pads[r].0;
                *pad = [0; 192];
                let dst: &mut [B] = bytemuck::cast_slice_mut(&mut pad[..GROUP * F::BYTES]);
                dst[..blocks].copy_from_slice(&w[start..start + blocks]);
                pad.as_ptr()
            };
        }
        // SAFETY: every pointer has `WINDOW` readable bytes (in `w` or a 192-byte pad).
        unsafe { quant_group::<F, ICL, R, T>(sums, ptrs, x, groups, g) };
    }
}

/// `R x T` quantized dot products over groups of four blocks.
///
/// # Safety
/// AVX-512 F/BW/VL and F16C must be available, plus VNNI/VBMI/GFNI when `ICL`;
/// `w.len() >= R * len`, `x.len() >= T * ceil(len / 4)`.
#[inline(always)]
pub(super) unsafe fn quant_tile<
    F: QFormat,
    B: bytemuck::Pod,
    const ICL: bool,
    const R: usize,
    const T: usize,
>(
    w: &[B],
    x: &[XGroup],
    len: usize,
) -> [[f32; R]; T] {
    let groups = len.div_ceil(GROUP);
    assert!(w.len() >= R * len && x.len() >= T * groups && F::BYTES == size_of::<B>());
    let wbytes: &[u8] = bytemuck::cast_slice(w);
    // Groups 0..fast are whole and, in every row, have `WINDOW` bytes inside `w`.
    let last_row = (R - 1) * len * F::BYTES;
    let room = wbytes.len().saturating_sub(last_row + F::WINDOW);
    let fast = (len / GROUP)
        .min((room / (GROUP * F::BYTES)) + usize::from(wbytes.len() >= last_row + F::WINDOW));
    // SAFETY: features by the caller; for g < fast every row's group start plus `WINDOW` lies
    // inside `wbytes` (checked above), the rest goes through `quant_tail`.
    unsafe {
        let mut sums = QAcc::<R, T> {
            acc: [[_mm512_setzero_ps(); R]; T],
            offsets: [[_mm256_setzero_ps(); R]; T],
        };
        let base = wbytes.as_ptr();
        let ahead = if R == 1 {
            F::LEAD
        } else {
            prefetch_ahead(len * F::BYTES, R)
        };
        for g in 0..fast {
            let mut ptrs = [base; R];
            for r in 0..R {
                ptrs[r] = base.add((r * len + g * GROUP) * F::BYTES);
                prefetch(ptrs[r], ahead, GROUP * F::BYTES);
            }
            quant_group::<F, ICL, R, T>(&mut sums, ptrs, x, groups, g);
        }
        if fast < groups {
            quant_tail::<F, B, ICL, R, T>(&mut sums, w, x, len, fast);
        }
        let mut out = [[0.0; R]; T];
        for t in 0..T {
            for r in 0..R {
                let mut s = _mm512_reduce_add_ps(sums.acc[t][r]);
                if F::OFFSET {
                    s += _mm512_reduce_add_ps(_mm512_castps256_ps512(sums.offsets[t][r]))
                }
                out[t][r] = s;
            }
        }
        out
    }
}
