//! AVX-512 dot products (16 f32 lanes), in two flavours:
//!
//! * `Bw`: AVX-512 F/BW/VL only (Skylake-SP and later). Integer block dots use
//!   `vpmaddubsw` + `vpmaddwd`; blocks are gathered with plain loads and inserts.
//! * `Icl`: adds VNNI, VBMI and GFNI (Ice Lake, Sapphire Rapids, Zen 4 and later). Integer dots use
//!   `vpdpbusd`; four blocks are loaded with one or two wide loads, rearranged with `vpermb` /
//!   `vpermt2b`, and their 2- or 4-bit fields extracted with one `vgf2p8affineqb`.
//!
//! Quantized rows are walked in groups of four blocks. Two 512-bit registers hold the group's
//! 128 codes, arranged so that 16 codes of block `k` sit in bytes `16k..16k+16` of each; two
//! `vpdpbusd` then leave the exact integer dot of block `k` spread over int32 lanes `4k..4k+4`.
//! One conversion to f32 and one FMA with the block scales `d_w * d_x` (expanded from a compact
//! vector of four with one `vpermps`) accumulate the whole group. The activations are
//! rearranged once per product into [`XGroup`]s with the same layout, including per-lane
//! integer offsets (`Q4`: `-2 Σx` per lane, so four lanes subtract `8 Σx`; `Q8` with VNNI: the
//! unsigned operand is `w + 128`, corrected by `-32 Σx` per lane). A group that would read past
//! the end of the weights, or has fewer than four blocks, is first copied into a zero-padded
//! buffer.
//!
//! `Fp8` and `Mxfp4` take f32 activations: `wide` widens a block's codes to f32 and scales each
//! block's sum.
//!
//! Submodules: `float` (float tiles), `wide` (the fp8 and mxfp4 tile), `groups` (the quantized
//! data layout and block loaders), `quant` (the quantized tile). Their helpers are `#[inline(always)]` without target features
//! and are only called from the `Tile` implementations in this file, which enable the features.

mod float;
mod groups;
mod quant;
mod wide;

use std::borrow::Cow;

use half::{bf16, f16};

use super::{Tile, padded_prepared, unprepared};
use crate::activation::ActBlock;
use crate::quant::{BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8};
use float::float_tile;
use groups::{GROUP, Q2Fmt, Q4Fmt, Q8Fmt, QFormat, XGroup, prepare_groups};
use quant::quant_tile;
use wide::wide_tile;

// Tile implementations (the only functions with target features).

/// A kernel of weights `$w` with f32 activations, readied by `$prepared`, computed by `$tile`,
/// with matvec tiles of `$matvec_rows` rows.
macro_rules! f32_kernel {
    ($name:ident, $w:ty, $prepared:ident, $tile:ident, $matvec_rows:literal) => {
        pub(crate) struct $name;

        impl Tile for $name {
            type W = $w;
            type X = f32;
            const WIDE: bool = true;
            const MATVEC_ROWS: usize = $matvec_rows;
            $prepared!();

            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            unsafe fn tile<const R: usize, const T: usize>(
                w: &[$w],
                x: &[f32],
                len: usize,
            ) -> [[f32; R]; T] {
                // SAFETY: the features are enabled here; lengths by the trait contract.
                unsafe { $tile::<$w, R, T>(w, x, len) }
            }
        }
    };
}

f32_kernel!(F32, f32, unprepared, float_tile, 1);
f32_kernel!(F16, f16, unprepared, float_tile, 1);
f32_kernel!(Bf16, bf16, unprepared, float_tile, 1);
f32_kernel!(Fp8, BlockFp8, padded_prepared, wide_tile, 1);
f32_kernel!(Mxfp4, BlockMxfp4, padded_prepared, wide_tile, 4);

macro_rules! quant_kernel {
    ($name:ident, $fmt:ty, $block:ty, $icl:expr, $init:expr, $features:literal) => {
        pub(crate) struct $name;

        impl Tile for $name {
            type W = $block;
            type X = ActBlock;
            type P = XGroup;
            const WIDE: bool = true;

            fn prepared_len(len: usize) -> usize {
                len.div_ceil(GROUP)
            }

            fn prepare(x: &[ActBlock], n: usize, len: usize) -> Cow<'_, [XGroup]> {
                Cow::Owned(prepare_groups(x, n, len, $init, <$fmt>::OFFSET))
            }

            #[target_feature(enable = $features)]
            unsafe fn tile<const R: usize, const T: usize>(
                w: &[$block],
                x: &[XGroup],
                len: usize,
            ) -> [[f32; R]; T] {
                // SAFETY: the features are enabled here; lengths by the trait contract.
                unsafe { quant_tile::<$fmt, $block, $icl, R, T>(w, x, len) }
            }
        }
    };
}

quant_kernel!(
    Q8Bw,
    Q8Fmt,
    BlockQ8,
    false,
    0,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
);
quant_kernel!(
    Q4Bw,
    Q4Fmt,
    BlockQ4,
    false,
    -2,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
);
quant_kernel!(
    Q2Bw,
    Q2Fmt,
    BlockQ2,
    false,
    0,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
);
quant_kernel!(
    Q8Icl,
    Q8Fmt,
    BlockQ8,
    true,
    -32,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c"
);
quant_kernel!(
    Q4Icl,
    Q4Fmt,
    BlockQ4,
    true,
    -2,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c"
);
quant_kernel!(
    Q2Icl,
    Q2Fmt,
    BlockQ2,
    true,
    0,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c"
);
