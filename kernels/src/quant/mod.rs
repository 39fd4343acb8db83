//! Block weight layouts (`Q8`, `Q4`, `Q2`, `Fp8`, `Mxfp4`) and the routines that fill and read them.
//!
//! A block always covers [`QK`] = 32 consecutive elements of one row; a quantized row is its
//! blocks back to back, a matrix its rows back to back, with no padding anywhere. All multi-byte
//! fields are little endian, and every struct here is `#[repr(C)]` with alignment 2 (`Fp8`: 4, `Mxfp4`: 1), so a
//! `&[BlockQ4]` is exactly the byte stream a file or a GPU buffer holds. The kernels in this crate
//! never repack blocks, so the CUDA side can read the same bytes.
//!
//! This module does not compute dot products; see `kernel` for those.

mod fp8;
mod mxfp4;
mod q2;
mod q4;
mod q8;

pub(crate) use fp8::E4M3_VALUES;
pub use fp8::{BlockFp8, E4M3_MAX, e4m3_to_f32, f32_to_e4m3, is_e4m3_nan};
pub use mxfp4::{BlockMxfp4, E2M1_DOUBLED, E2M1_VALUES, e8m0_to_f32, f32_to_e2m1};
pub use q2::BlockQ2;
pub use q4::BlockQ4;
pub use q8::BlockQ8;

use half::f16;

/// Elements per quantization block.
pub const QK: usize = 32;

/// Rounds a block scale to f16, saturating at the largest finite f16 instead of overflowing.
fn scale_to_f16(v: f32) -> f16 {
    let max = f16::MAX.to_f32();
    f16::from_f32(v.clamp(-max, max))
}

/// `v` clamped to `[lo, hi]` and rounded to the nearest integer (ties to even). The clamp keeps
/// `|v| < 2^22`, where adding and subtracting 1.5 * 2^23 rounds exactly: two additions instead of
/// a libm `roundf` call, which otherwise dominates quantize-on-load time.
#[inline(always)]
fn round_code(v: f32, lo: f32, hi: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v.clamp(lo, hi) + MAGIC) - MAGIC
}
