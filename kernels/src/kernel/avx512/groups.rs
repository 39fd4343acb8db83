//! The data layout of the AVX-512 quantized kernels: activations rearranged into [`XGroup`]s
//! once per product, and groups of four weight blocks loaded and unpacked into the same layout
//! ([`WGroup`]), with a plain AVX-512 BW loader and a VBMI/GFNI one per format.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::activation::ActBlock;
use crate::quant::{BlockQ2, BlockQ4, BlockQ8};

// ---------------------------------------------------------------------------------------------
// Quantized formats: activation groups.

/// Blocks per group.
pub(super) const GROUP: usize = 4;

/// Four activation blocks laid out for the AVX-512 quantized kernels: register `h` holds codes
/// `16h..16h+16` of block `k` in bytes `16k..16k+16`, so `vpdpbusd` sums each block into int32
/// lanes `4k..4k+4`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct XGroup {
    /// Codes, see the type docs.
    pub(super) q: [[i8; 64]; 2],
    /// Initial int32 accumulator per lane (lanes `4k..4k+4` belong to block `k`).
    pub(super) init: [i32; 16],
    /// Factors for the compact weight scale vector (`d_x`, zero where unused).
    pub(super) dx: [f32; 8],
    /// Factors for the compact offset terms (`Q2`: `d_x Σq_x` at odd lanes).
    pub(super) m: [f32; 8],
}

const ZERO_GROUP: XGroup = XGroup {
    q: [[0; 64]; 2],
    init: [0; 16],
    dx: [0.0; 8],
    m: [0.0; 8],
};

/// Rearranges `n` vectors of `len` blocks into groups of four (the last one zero-padded).
/// `init_per_sum` is the per-lane initial accumulator per unit of `Σq_x`; `offset_lanes` selects
/// the `Q2` layout of `dx` / `m` (scale and offset interleaved).
pub(super) fn prepare_groups(
    x: &[ActBlock],
    n: usize,
    len: usize,
    init_per_sum: i32,
    offset_lanes: bool,
) -> Vec<XGroup> {
    let groups = len.div_ceil(GROUP);
    let mut out = vec![ZERO_GROUP; n * groups];
    for i in 0..n {
        for (b, a) in x[i * len..(i + 1) * len].iter().enumerate() {
            let g = &mut out[i * groups + b / GROUP];
            let k = b % GROUP;
            for h in 0..2 {
                g.q[h][16 * k..16 * k + 16].copy_from_slice(&a.qs[16 * h..16 * h + 16]);
            }
            g.init[4 * k..4 * k + 4].fill(init_per_sum * a.sum);
            if offset_lanes {
                g.dx[2 * k] = a.d;
                g.m[2 * k + 1] = a.d * a.sum as f32;
            } else {
                g.dx[k] = a.d;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Quantized formats: weight groups.

/// Four weight blocks unpacked: `q[h]` holds codes `16h..16h+16` of block `k` in bytes
/// `16k..16k+16` (as [`XGroup`]), `s` a compact f32 vector of the scales (`Q8`/`Q4`: `d` in lanes
/// 0..4; `Q2`: `d, m` interleaved).
#[derive(Clone, Copy)]
pub(super) struct WGroup {
    pub(super) q: [__m512i; 2],
    pub(super) s: __m256,
}

/// A quantized weight format as the AVX-512 kernels see it.
pub(super) trait QFormat {
    /// Bytes per block.
    const BYTES: usize;
    /// Bytes the `Icl` loader reads from the start of a group.
    const WINDOW: usize;
    /// Whether the codes the `Bw` loader returns are signed (`Q8`).
    const SIGNED: bool;
    /// Whether the block has an offset term (`Q2`).
    const OFFSET: bool;
    /// How far ahead a single row's stream is prefetched, in bytes, if at all. Unpacking `Q4`
    /// and `Q2` groups takes long enough that the hardware prefetcher alone leaves loads
    /// waiting: a short lead into L1 made 2-thread matvecs 10-25% faster on the AVX-512
    /// development VM (`Q4` 1024x3584: 20 to 26 GB/s; `Q2` 3584x1024: 18 to 21), while for `Q8`
    /// any lead from 512 bytes to 8 KiB was slower than none.
    const LEAD: Option<usize>;

    /// Loads and unpacks the group at `p` with plain AVX-512 BW instructions.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and F16C must be available; `4 * BYTES` bytes at `p` readable.
    unsafe fn load_bw(p: *const u8) -> WGroup;

    /// Loads and unpacks the group at `p` with VBMI / GFNI (`Q8`'s signed codes biased to
    /// unsigned ones by 128).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VBMI, GFNI and F16C must be available; `WINDOW` bytes at `p` readable.
    unsafe fn load_icl(p: *const u8) -> WGroup;
}

/// The byte-permutation tables of the `Icl` loaders.
#[derive(Clone, Copy)]
enum Table {
    Q4Codes,
    Q4Scales,
    Q2Codes,
    Q2Scales,
    Q8Low,
    Q8High,
    Q8Scales,
}

/// Source byte of output byte `o` for `table`, as an index into the one or two 64-byte windows
/// the loader passes to `vpermb` / `vpermt2b`. Groups start at byte 0.
///
/// * `Q4` (18-byte blocks, windows at 0 and 8): codes are block `k`'s 16 bytes at `16k`.
/// * `Q2` (12-byte blocks, window at 0): block `k`'s 8 code bytes twice, at `16k` and `16k+8`.
/// * `Q8` (34-byte blocks): bytes `0..16` of each block's codes (windows at 0 and 64), bytes
///   `16..32` (windows at 16 and 80).
/// * Scales: the f16 `d` of each block (`Q2`: `d, m`), packed from byte 0.
const fn source(table: Table, o: usize) -> usize {
    let (k, j) = (o / 16, o % 16);
    match table {
        Table::Q4Codes => {
            let s = 18 * k + 2 + j;
            if s < 64 { s } else { 64 + s - 8 }
        }
        Table::Q4Scales => {
            if o < 8 {
                18 * (o / 2) + o % 2
            } else {
                0
            }
        }
        Table::Q2Codes => 12 * k + 4 + j % 8,
        Table::Q2Scales => {
            if o < 16 {
                12 * (o / 4) + o % 4
            } else {
                0
            }
        }
        Table::Q8Low => 34 * k + 2 + j,
        Table::Q8High => {
            let s = 34 * k + 18 + j;
            if s < 80 { s - 16 } else { 64 + s - 80 }
        }
        Table::Q8Scales => {
            if o < 8 {
                34 * (o / 2) + o % 2
            } else {
                0
            }
        }
    }
}

const fn index_bytes(table: Table) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        out[i] = source(table, i) as u8;
        i += 1;
    }
    out
}

static Q4_CODES: [u8; 64] = index_bytes(Table::Q4Codes);
static Q4_SCALES: [u8; 64] = index_bytes(Table::Q4Scales);
static Q2_CODES: [u8; 64] = index_bytes(Table::Q2Codes);
static Q2_SCALES: [u8; 64] = index_bytes(Table::Q2Scales);
static Q8_LOW: [u8; 64] = index_bytes(Table::Q8Low);
static Q8_HIGH: [u8; 64] = index_bytes(Table::Q8High);
static Q8_SCALES: [u8; 64] = index_bytes(Table::Q8Scales);

/// `vgf2p8affineqb` matrix that keeps the low nibble of each byte.
const GF_LOW_NIBBLE: i64 = 0x0102_0408_0000_0000;
/// `vgf2p8affineqb` matrix that moves the high nibble of each byte down.
const GF_HIGH_NIBBLE: i64 = 0x1020_4080_0000_0000;

/// `vgf2p8affineqb` matrix that moves bits `2k, 2k+1` of each byte to bits 0, 1.
const fn gf_field(k: u32) -> i64 {
    (((1u64 << (2 * k)) << 56) | ((1u64 << (2 * k + 1)) << 48)) as i64
}

/// Loads a 64-byte index table.
///
/// # Safety
/// AVX-512 F must be available.
#[inline(always)]
unsafe fn table(t: &[u8; 64]) -> __m512i {
    // SAFETY: the caller guarantees AVX-512 F; `t` is 64 readable bytes.
    unsafe { _mm512_loadu_si512(t.as_ptr().cast()) }
}

/// Reads a little-endian `T` at byte `offset` of `p`.
///
/// # Safety
/// `size_of::<T>()` bytes at `p + offset` must be readable (any alignment).
#[inline(always)]
unsafe fn read<T: bytemuck::Pod>(p: *const u8, offset: usize) -> T {
    // SAFETY: the caller guarantees the bytes are readable; `read_unaligned` needs no alignment.
    unsafe { p.add(offset).cast::<T>().read_unaligned() }
}

/// Eight f16 values, read at byte offsets `at` of `p`, to f32.
///
/// # Safety
/// F16C must be available and the bytes readable.
#[inline(always)]
unsafe fn halves(p: *const u8, at: [usize; 8]) -> __m256 {
    // SAFETY: the caller guarantees F16C and readable bytes.
    unsafe {
        let h = |i: usize| read::<i16>(p, at[i]);
        _mm256_cvtph_ps(_mm_setr_epi16(
            h(0),
            h(1),
            h(2),
            h(3),
            h(4),
            h(5),
            h(6),
            h(7),
        ))
    }
}

/// Four f16 values at byte offsets `0, step, 2 step, 3 step` of `p` to f32 (lanes 4..8 zero).
///
/// # Safety
/// F16C must be available and the bytes readable.
#[inline(always)]
unsafe fn halves4(p: *const u8, step: usize) -> __m256 {
    // SAFETY: the caller guarantees F16C and readable bytes.
    unsafe {
        let h = |k: usize| read::<i16>(p, k * step);
        _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), 0, 0, 0, 0))
    }
}

/// Four 16-byte pieces as one 512-bit register.
///
/// # Safety
/// AVX-512 F must be available; each pointer has 16 readable bytes.
#[inline(always)]
unsafe fn join4(p: [*const u8; 4]) -> __m512i {
    // SAFETY: the caller guarantees the feature and readable memory.
    unsafe {
        let v = _mm512_castsi128_si512(_mm_loadu_si128(p[0].cast()));
        let v = _mm512_inserti32x4::<1>(v, _mm_loadu_si128(p[1].cast()));
        let v = _mm512_inserti32x4::<2>(v, _mm_loadu_si128(p[2].cast()));
        _mm512_inserti32x4::<3>(v, _mm_loadu_si128(p[3].cast()))
    }
}

pub(super) struct Q8Fmt;

impl QFormat for Q8Fmt {
    const BYTES: usize = size_of::<BlockQ8>();
    const WINDOW: usize = 144;
    const SIGNED: bool = true;
    const OFFSET: bool = false;
    const LEAD: Option<usize> = None;

    #[inline(always)]
    unsafe fn load_bw(p: *const u8) -> WGroup {
        // SAFETY: features and readable blocks by the caller.
        unsafe {
            let mut q = [_mm512_setzero_si512(); 2];
            for h in 0..2 {
                let mut ptrs = [p; 4];
                for k in 0..4 {
                    ptrs[k] = p.add(Self::BYTES * k + 2 + 16 * h);
                }
                q[h] = join4(ptrs);
            }
            WGroup {
                q,
                s: halves4(p, Self::BYTES),
            }
        }
    }

    #[inline(always)]
    unsafe fn load_icl(p: *const u8) -> WGroup {
        // SAFETY: features and `WINDOW` readable bytes by the caller.
        unsafe {
            let l0 = _mm512_loadu_si512(p.cast());
            let l1 = _mm512_loadu_si512(p.add(64).cast());
            let h0 = _mm512_loadu_si512(p.add(16).cast());
            let h1 = _mm512_loadu_si512(p.add(80).cast());
            let bias = _mm512_set1_epi8(-128);
            let lo = _mm512_permutex2var_epi8(l0, table(&Q8_LOW), l1);
            let hi = _mm512_permutex2var_epi8(h0, table(&Q8_HIGH), h1);
            let d = _mm512_permutex2var_epi8(l0, table(&Q8_SCALES), l1);
            WGroup {
                q: [_mm512_xor_si512(lo, bias), _mm512_xor_si512(hi, bias)],
                s: _mm256_cvtph_ps(_mm512_castsi512_si128(d)),
            }
        }
    }
}

/// The 16 code bytes at offset `skip` of each of the four `bytes`-byte blocks at `p`, as their
/// low nibbles and their high nibbles (the `Q4` nibble order: elements `j` and `j + 16`).
///
/// # Safety
/// AVX-512 F/BW must be available and the four blocks readable.
#[inline(always)]
unsafe fn nibbles4(p: *const u8, bytes: usize, skip: usize) -> [__m512i; 2] {
    // SAFETY: features and readable blocks by the caller.
    unsafe {
        let mut ptrs = [p; 4];
        for k in 0..4 {
            ptrs[k] = p.add(bytes * k + skip);
        }
        let raw = join4(ptrs);
        let mask = _mm512_set1_epi8(0x0f);
        [
            _mm512_and_si512(raw, mask),
            _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask),
        ]
    }
}

/// The low and the high nibbles of `raw`'s bytes, each extracted with one `vgf2p8affineqb`.
///
/// # Safety
/// AVX-512 F and GFNI must be available.
#[inline(always)]
unsafe fn split_nibbles(raw: __m512i) -> [__m512i; 2] {
    // SAFETY: the caller guarantees the features.
    unsafe {
        [
            _mm512_gf2p8affine_epi64_epi8::<0>(raw, _mm512_set1_epi64(GF_LOW_NIBBLE)),
            _mm512_gf2p8affine_epi64_epi8::<0>(raw, _mm512_set1_epi64(GF_HIGH_NIBBLE)),
        ]
    }
}

pub(super) struct Q4Fmt;

impl QFormat for Q4Fmt {
    const BYTES: usize = size_of::<BlockQ4>();
    const WINDOW: usize = 72;
    const SIGNED: bool = false;
    const OFFSET: bool = false;
    const LEAD: Option<usize> = Some(512);

    #[inline(always)]
    unsafe fn load_bw(p: *const u8) -> WGroup {
        // SAFETY: features and readable blocks by the caller.
        unsafe {
            WGroup {
                q: nibbles4(p, Self::BYTES, 2),
                s: halves4(p, Self::BYTES),
            }
        }
    }

    #[inline(always)]
    unsafe fn load_icl(p: *const u8) -> WGroup {
        // SAFETY: features and `WINDOW` readable bytes by the caller.
        unsafe {
            let l0 = _mm512_loadu_si512(p.cast());
            let l1 = _mm512_loadu_si512(p.add(8).cast());
            let raw = _mm512_permutex2var_epi8(l0, table(&Q4_CODES), l1);
            let d = _mm512_permutexvar_epi8(table(&Q4_SCALES), l0);
            WGroup {
                q: split_nibbles(raw),
                s: _mm256_cvtph_ps(_mm512_castsi512_si128(d)),
            }
        }
    }
}

pub(super) struct Q2Fmt;

impl QFormat for Q2Fmt {
    const BYTES: usize = size_of::<BlockQ2>();
    const WINDOW: usize = 64;
    const SIGNED: bool = false;
    const OFFSET: bool = true;
    const LEAD: Option<usize> = Some(256);

    #[inline(always)]
    unsafe fn load_bw(p: *const u8) -> WGroup {
        // SAFETY: features and readable blocks by the caller.
        unsafe {
            let mut bits = [0i64; 4];
            for k in 0..4 {
                bits[k] = read::<i64>(p, Self::BYTES * k + 4);
            }
            let [a, b, c, d] = bits;
            let twice = _mm512_set_epi64(d, d, c, c, b, b, a, a);
            let mask = _mm512_set1_epi8(3);
            let lo = _mm512_srlv_epi64(twice, _mm512_set_epi64(2, 0, 2, 0, 2, 0, 2, 0));
            let hi = _mm512_srlv_epi64(twice, _mm512_set_epi64(6, 4, 6, 4, 6, 4, 6, 4));
            WGroup {
                q: [_mm512_and_si512(lo, mask), _mm512_and_si512(hi, mask)],
                s: halves(p, [0, 2, 12, 14, 24, 26, 36, 38]),
            }
        }
    }

    #[inline(always)]
    unsafe fn load_icl(p: *const u8) -> WGroup {
        // SAFETY: features and `WINDOW` readable bytes by the caller.
        unsafe {
            let l0 = _mm512_loadu_si512(p.cast());
            let twice = _mm512_permutexvar_epi8(table(&Q2_CODES), l0);
            let dm = _mm512_permutexvar_epi8(table(&Q2_SCALES), l0);
            let (f0, f1, f2, f3) = (gf_field(0), gf_field(1), gf_field(2), gf_field(3));
            let lo = _mm512_set_epi64(f1, f0, f1, f0, f1, f0, f1, f0);
            let hi = _mm512_set_epi64(f3, f2, f3, f2, f3, f2, f3, f2);
            WGroup {
                q: [
                    _mm512_gf2p8affine_epi64_epi8::<0>(twice, lo),
                    _mm512_gf2p8affine_epi64_epi8::<0>(twice, hi),
                ],
                s: _mm256_cvtph_ps(_mm512_castsi512_si128(dm)),
            }
        }
    }
}
