//! AVX2 + FMA + F16C dot products (8 f32 lanes).
//!
//! Float formats: 8 weights per step converted to f32 and fused-multiply-added per lane, the
//! last `cols % 8` in scalar code. Quantized formats: one block per step; the 32 codes are
//! unpacked to bytes, multiplied with the activation codes by `vpmaddubsw`/`vpmaddwd` into 8
//! int32 partial sums (exact), converted to f32 and accumulated with the scale product
//! `d_w * d_x`, as in the scalar reference. `Fp8` and `Mxfp4` take f32 activations: a block's
//! codes widened to f32 (`Fp8`: 16 at a time through f16; `Mxfp4`: unpacked like `Q4`'s, looked
//! up as their doubled values with `vpshufb` and converted), multiplied with the activations, and
//! each block's sum scaled by its scale.
//!
//! The helpers are `#[inline(always)]` without target features; they are only called from the
//! `Tile` implementations below, which enable the features, so everything inlines into them.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{Tile, padded_prepared, prefetch, prefetch_ahead, unprepared};
use crate::activation::ActBlock;
use crate::quant::{BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8, E2M1_DOUBLED, QK};

/// Sum of the 8 lanes.
///
/// # Safety
/// AVX must be available.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: the caller guarantees AVX.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// f16 to f32 with F16C.
///
/// # Safety
/// F16C must be available.
#[inline(always)]
unsafe fn f16_to_f32(h: f16) -> f32 {
    // SAFETY: the caller guarantees F16C.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits())))) }
}

/// A float weight type that can be widened 8 at a time.
trait Widen: Copy {
    /// Loads 8 consecutive weights as f32.
    ///
    /// # Safety
    /// AVX2 and F16C must be available and `p..p+8` readable.
    unsafe fn load8(p: *const Self) -> __m256;

    /// One weight as f32 (for tails).
    ///
    /// # Safety
    /// F16C must be available.
    unsafe fn widen(self) -> f32;
}

impl Widen for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and 8 readable values.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn widen(self) -> f32 {
        self
    }
}

impl Widen for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees F16C and 16 readable bytes.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[inline(always)]
    unsafe fn widen(self) -> f32 {
        // SAFETY: the caller guarantees F16C.
        unsafe { f16_to_f32(self) }
    }
}

impl Widen for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 16 readable bytes; bf16 is the top half of f32.
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
        }
    }

    #[inline(always)]
    unsafe fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// `R x T` float dot products.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w.len() >= R * len`, `x.len() >= T * len`.
#[inline(always)]
unsafe fn float_tile<W: Widen, const R: usize, const T: usize>(
    w: &[W],
    x: &[f32],
    len: usize,
) -> [[f32; R]; T] {
    assert!(w.len() >= R * len && x.len() >= T * len);
    // SAFETY: features by the caller; every pointer below stays within `w[..R*len]` or
    // `x[..T*len]` (c + 8 <= main <= len).
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let main = len - len % 8;
        let ahead = prefetch_ahead(len * size_of::<W>(), R);
        let mut acc = [[_mm256_setzero_ps(); R]; T];
        let mut c = 0;
        while c < main {
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                let p = wp.add(r * len + c);
                prefetch(p, ahead, 8 * size_of::<W>());
                wv[r] = W::load8(p);
            }
            for t in 0..T {
                let xv = _mm256_loadu_ps(xp.add(t * len + c));
                for r in 0..R {
                    acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]);
                }
            }
            c += 8;
        }
        let mut out = [[0.0; R]; T];
        for t in 0..T {
            for r in 0..R {
                let mut s = hsum(acc[t][r]);
                for c in main..len {
                    s += w[r * len + c].widen() * x[t * len + c];
                }
                out[t][r] = s;
            }
        }
        out
    }
}

/// Which quantized block a tile reads, with its unpacking.
trait QBlock: Copy {
    /// Whether the codes are signed (`Q8`).
    const SIGNED: bool;

    /// The block's codes as 32 bytes in element order, and the scale.
    ///
    /// # Safety
    /// AVX2 and F16C must be available.
    unsafe fn unpack(&self) -> (__m256i, f32);

    /// Added to each of the 8 int32 lanes of the block dot (`Q4`: `-Σq_x`, so `-8 Σq_x` in all).
    fn lane_offset(_x: &ActBlock) -> i32 {
        0
    }

    /// The block's term outside the integer dot (`Q2`: `(m_w d_x) Σq_x`).
    ///
    /// # Safety
    /// F16C must be available.
    unsafe fn offset_term(&self, _x: &ActBlock) -> f32 {
        0.0
    }
}

/// 16 bytes of 4-bit codes as 32 bytes in element order: the low nibbles (elements `j`), then
/// the high ones (elements `j + 16`).
///
/// # Safety
/// AVX2 must be available.
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: the caller guarantees AVX2; `qs` is 16 readable bytes.
    unsafe {
        let raw = _mm_loadu_si128(qs.as_ptr().cast());
        let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
    }
}

impl QBlock for BlockQ8 {
    const SIGNED: bool = true;

    #[inline(always)]
    unsafe fn unpack(&self) -> (__m256i, f32) {
        // SAFETY: features by the caller; `qs` is 32 readable bytes.
        unsafe {
            (
                _mm256_loadu_si256(self.qs.as_ptr().cast()),
                f16_to_f32(self.d),
            )
        }
    }
}

impl QBlock for BlockQ4 {
    const SIGNED: bool = false;

    #[inline(always)]
    fn lane_offset(x: &ActBlock) -> i32 {
        -x.sum
    }

    #[inline(always)]
    unsafe fn unpack(&self) -> (__m256i, f32) {
        // SAFETY: features by the caller; `qs` is 16 readable bytes.
        unsafe { (nibbles(&self.qs), f16_to_f32(self.d)) }
    }
}

impl QBlock for BlockQ2 {
    const SIGNED: bool = false;

    #[inline(always)]
    unsafe fn offset_term(&self, x: &ActBlock) -> f32 {
        // SAFETY: the caller guarantees F16C.
        (unsafe { f16_to_f32(self.m) } * x.d) * x.sum as f32
    }

    #[inline(always)]
    unsafe fn unpack(&self) -> (__m256i, f32) {
        // SAFETY: features by the caller.
        unsafe {
            let bits = i64::from_le_bytes(self.qs);
            let v = _mm256_set1_epi64x(bits);
            let v = _mm256_srlv_epi64(v, _mm256_set_epi64x(6, 4, 2, 0));
            (_mm256_and_si256(v, _mm256_set1_epi8(3)), f16_to_f32(self.d))
        }
    }
}

/// Block-wise quantized dot products; signed weights use the sign trick for `vpmaddubsw`,
/// unsigned ones (`Q4`, `Q2`) feed the codes directly and correct for the offset after.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w.len() >= R * len`, `x.len() >= T * len`.
#[inline(always)]
unsafe fn quant_tile<B: QBlock, const R: usize, const T: usize>(
    w: &[B],
    x: &[ActBlock],
    len: usize,
) -> [[f32; R]; T] {
    assert!(w.len() >= R * len && x.len() >= T * len);
    // SAFETY: features by the caller; all indexing below is bounds-checked or within the
    // lengths asserted above.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let ahead = prefetch_ahead(len * size_of::<B>(), R);
        let mut acc = [[_mm256_setzero_ps(); R]; T];
        let mut extra = [[0.0f32; R]; T];
        for b in 0..len {
            let mut wq = [_mm256_setzero_si256(); R];
            let mut wa = [_mm256_setzero_si256(); R];
            let mut wd = [0.0f32; R];
            for r in 0..R {
                let block = &w[r * len + b];
                prefetch(block as *const B, ahead, size_of::<B>());
                let (q, d) = block.unpack();
                wq[r] = q;
                wa[r] = if B::SIGNED { _mm256_abs_epi8(q) } else { q };
                wd[r] = d;
            }
            for t in 0..T {
                let xb = &x[t * len + b];
                let xq = _mm256_loadu_si256(xb.qs.as_ptr().cast());
                let offset = _mm256_set1_epi32(B::lane_offset(xb));
                for r in 0..R {
                    let xs = if B::SIGNED {
                        _mm256_sign_epi8(xq, wq[r])
                    } else {
                        xq
                    };
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa[r], xs), ones);
                    let p = _mm256_add_epi32(p, offset);
                    let d = _mm256_set1_ps(wd[r] * xb.d);
                    acc[t][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[t][r]);
                    extra[t][r] += w[r * len + b].offset_term(xb);
                }
            }
        }
        let mut out = [[0.0; R]; T];
        for t in 0..T {
            for r in 0..R {
                out[t][r] = hsum(acc[t][r]) + extra[t][r];
            }
        }
        out
    }
}

/// 16 E4M3 codes at `p` as two vectors of 8 f32 values, each the code's value times 2^-8 (the
/// bit moves of the AVX-512 `Fp8` tile, on 16-bit lanes).
///
/// # Safety
/// AVX2 and F16C must be available and `p..p+16` readable.
#[inline(always)]
unsafe fn widen_e4m3(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller guarantees the features and 16 readable bytes.
    unsafe {
        let h = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast()));
        let h = _mm256_srai_epi16(_mm256_slli_epi16(h, 8), 1);
        let h = _mm256_and_si256(h, _mm256_set1_epi16(!0x4000));
        (
            _mm256_cvtph_ps(_mm256_castsi256_si128(h)),
            _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h)),
        )
    }
}

/// A block of 32 weights that the float-activation tile widens to f32 (divided by `FACTOR`, which
/// the tile multiplies back at the end), with its scale.
trait WideBlock {
    /// The codes' values are the widened values times this.
    const FACTOR: f32;

    /// The 32 values as four vectors of 8, elements in order.
    ///
    /// # Safety
    /// AVX2 and F16C must be available.
    unsafe fn widen(&self) -> [__m256; 4];

    /// The factor of the block's codes.
    fn scale(&self) -> f32;
}

impl WideBlock for BlockFp8 {
    const FACTOR: f32 = 256.0;

    #[inline(always)]
    unsafe fn widen(&self) -> [__m256; 4] {
        // SAFETY: features by the caller; `qs` is 32 readable bytes.
        unsafe {
            let qs: *const u8 = self.qs.as_ptr();
            let (a, b) = widen_e4m3(qs);
            let (c, e) = widen_e4m3(qs.add(16));
            [a, b, c, e]
        }
    }

    fn scale(&self) -> f32 {
        self.d
    }
}

impl WideBlock for BlockMxfp4 {
    const FACTOR: f32 = 1.0;

    #[inline(always)]
    unsafe fn widen(&self) -> [__m256; 4] {
        // SAFETY: features by the caller; `qs` and the table are 16 readable bytes.
        unsafe {
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(E2M1_DOUBLED.as_ptr().cast()));
            let values = _mm256_shuffle_epi8(table, nibbles(&self.qs));
            let (lo, hi) = (
                _mm256_castsi256_si128(values),
                _mm256_extracti128_si256::<1>(values),
            );
            let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
            [
                f(lo),
                f(_mm_srli_si128::<8>(lo)),
                f(hi),
                f(_mm_srli_si128::<8>(hi)),
            ]
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
/// AVX2, FMA and F16C must be available; `w.len() >= R * len`, `x.len() >= T * len * 32`.
#[inline(always)]
unsafe fn wide_tile<B: WideBlock, const R: usize, const T: usize>(
    w: &[B],
    x: &[f32],
    len: usize,
) -> [[f32; R]; T] {
    let plen = len * QK;
    assert!(w.len() >= R * len && x.len() >= T * plen);
    // SAFETY: features by the caller; blocks and activations in bounds (asserted above).
    unsafe {
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let ahead = prefetch_ahead(len * size_of::<B>(), R);
        let mut acc = [[_mm256_setzero_ps(); R]; T];
        for b in 0..len {
            let mut wv = [[_mm256_setzero_ps(); 4]; R];
            let mut d = [_mm256_setzero_ps(); R];
            for r in 0..R {
                let block = wp.add(r * len + b);
                prefetch(block, ahead, size_of::<B>());
                wv[r] = (*block).widen();
                d[r] = _mm256_set1_ps((*block).scale());
            }
            for t in 0..T {
                let xb = xp.add(t * plen + b * QK);
                let xv = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(xb.add(o)));
                for r in 0..R {
                    let mut s = _mm256_mul_ps(wv[r][0], xv[0]);
                    for k in 1..4 {
                        s = _mm256_fmadd_ps(wv[r][k], xv[k], s);
                    }
                    acc[t][r] = _mm256_fmadd_ps(s, d[r], acc[t][r]);
                }
            }
        }
        let mut out = [[0.0; R]; T];
        for t in 0..T {
            for r in 0..R {
                out[t][r] = hsum(acc[t][r]) * B::FACTOR;
            }
        }
        out
    }
}

/// A kernel of weight units `$w` and activation units `$x`: `$prepared` readies the activations
/// and `$tile` computes a tile, with the features enabled; matvec tiles have `$matvec_rows` rows.
macro_rules! kernel {
    ($name:ident, $w:ty, $x:ty, $prepared:ident, $tile:ident, $matvec_rows:literal) => {
        pub(crate) struct $name;

        impl Tile for $name {
            type W = $w;
            type X = $x;
            const MATVEC_ROWS: usize = $matvec_rows;
            $prepared!();

            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn tile<const R: usize, const T: usize>(
                w: &[$w],
                x: &[Self::P],
                len: usize,
            ) -> [[f32; R]; T] {
                // SAFETY: the features are enabled here; lengths by the trait contract.
                unsafe { $tile::<$w, R, T>(w, x, len) }
            }
        }
    };
}

kernel!(F32, f32, f32, unprepared, float_tile, 1);
kernel!(F16, f16, f32, unprepared, float_tile, 1);
kernel!(Bf16, bf16, f32, unprepared, float_tile, 1);
kernel!(Fp8, BlockFp8, f32, padded_prepared, wide_tile, 4);
kernel!(Mxfp4, BlockMxfp4, f32, padded_prepared, wide_tile, 4);
kernel!(Q8, BlockQ8, ActBlock, unprepared, quant_tile, 1);
kernel!(Q4, BlockQ4, ActBlock, unprepared, quant_tile, 1);
kernel!(Q2, BlockQ2, ActBlock, unprepared, quant_tile, 1);
