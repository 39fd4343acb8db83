//! `Fp8`: 32 OCP FP8 E4M3 (`float8_e4m3fn`) codes and one f32 scale per block, the weights of
//! checkpoints stored in fp8 (DeepSeek-V3 and its family) served as they are.
//!
//! Byte layout of one [`BlockFp8`] (36 bytes, alignment 4):
//!
//! | offset | size | field | meaning                                   |
//! |--------|------|-------|-------------------------------------------|
//! | 0      | 4    | `d`   | scale, IEEE binary32, little endian        |
//! | 4      | 32   | `qs`  | `qs[j]` = E4M3 code of element `j`         |
//!
//! Element `j` is `d * e4m3(qs[j])`. An E4M3 code is a sign bit, four exponent bits (bias 7)
//! and three mantissa bits; exponent 0 is subnormal (`m / 8 * 2^-6`), codes `0x7f` / `0xff` are
//! NaN and never stored, the largest magnitude is 448. A row whose width is not a multiple of 32
//! ends in a partial block padded with code 0 (zero), so the format fits every width.
//!
//! A checkpoint's 128 x 128 block scales (`weight_scale_inv`) become the scale of each of the
//! four 32-wide blocks they cover in every row, so its weights are held exactly. Quantizing f32
//! values uses `d = amax / 448` and rounds to the nearest code, ties to even.

use bytemuck::{Pod, Zeroable};

use super::QK;

/// 32 weights as E4M3 codes with an f32 scale; see the module docs for the byte layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockFp8 {
    /// Scale.
    pub d: f32,
    /// Codes, element `j` at index `j`.
    pub qs: [u8; QK],
}

const _: () = assert!(size_of::<BlockFp8>() == 36);
const _: () = assert!(align_of::<BlockFp8>() == 4);

/// The largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// Whether `code` is one of the two E4M3 NaN codes.
pub fn is_e4m3_nan(code: u8) -> bool {
    code & 0x7f == 0x7f
}

/// The value of an E4M3 code (NaN codes read as NaN).
pub const fn e4m3_to_f32(code: u8) -> f32 {
    let exponent = ((code >> 3) & 0x0f) as u32;
    let mantissa = (code & 0x07) as f32;
    let magnitude = if code & 0x7f == 0x7f {
        f32::NAN
    } else if exponent == 0 {
        mantissa / 512.0
    } else {
        f32::from_bits((exponent + 120) << 23) * (1.0 + mantissa / 8.0)
    };
    if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Every code's value, for the reference dot product.
pub(crate) static E4M3_VALUES: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = e4m3_to_f32(code as u8);
        code += 1;
    }
    table
};

/// The E4M3 code nearest to `v` (ties to even), saturating at ±448; `v` must not be NaN.
pub fn f32_to_e4m3(v: f32) -> u8 {
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let a = v.abs().min(E4M3_MAX);
    let smallest_normal = 1.0 / 64.0;
    // Codes are ordered like their magnitudes, and the subnormal step continues into the first
    // binade, so the subnormal count 8 is the code of 2^-6 and a mantissa of 8 the next binade.
    let magnitude = if a < smallest_normal {
        (a * 512.0).round_ties_even() as u32
    } else {
        let exponent = (a.to_bits() >> 23) as i32 - 127;
        let scaled = a / f32::from_bits(((exponent + 127) as u32) << 23);
        let mantissa = ((scaled - 1.0) * 8.0).round_ties_even() as u32;
        ((exponent + 7) as u32) * 8 + mantissa
    };
    sign | magnitude.min(0x7e) as u8
}

impl BlockFp8 {
    /// Quantizes up to 32 finite values; missing ones (a row's partial last block) are zero.
    pub fn quantize(x: &[f32]) -> BlockFp8 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / E4M3_MAX;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = f32_to_e4m3(v * id);
        }
        BlockFp8 { d, qs }
    }

    /// Writes the values the block represents into `out` (up to 32).
    pub fn dequantize(&self, out: &mut [f32]) {
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = self.d * E4M3_VALUES[usize::from(q)];
        }
    }

    /// Whether the block holds a NaN code or a scale that is not finite.
    pub fn is_invalid(&self) -> bool {
        !self.d.is_finite() || self.qs.iter().any(|&q| is_e4m3_nan(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_codes_are_ordered_by_value() {
        for code in 0..=255u8 {
            if is_e4m3_nan(code) {
                assert!(e4m3_to_f32(code).is_nan());
                continue;
            }
            let v = e4m3_to_f32(code);
            let back = f32_to_e4m3(v);
            // +0 and -0 are both zero.
            assert!(back == code || v == 0.0, "{code:#x} -> {v} -> {back:#x}");
        }
        for code in 0..0x7eu8 {
            assert!(e4m3_to_f32(code) < e4m3_to_f32(code + 1));
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 1.0 / 512.0);
        assert_eq!(e4m3_to_f32(0x08), 1.0 / 64.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
    }

    #[test]
    fn rounding_is_to_the_nearest_code_ties_to_even_and_saturates() {
        // 1.0 and 1.125 are neighbours; 1.0625 is the tie, 1.07 above it.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.07), 0x39);
        assert_eq!(f32_to_e4m3(1.1875), 0x3a);
        assert_eq!(f32_to_e4m3(1e6), 0x7e);
        assert_eq!(f32_to_e4m3(-1e6), 0xfe);
        assert_eq!(f32_to_e4m3(1e-9), 0x00);
        // Between the largest subnormal (7/512) and the smallest normal (8/512).
        assert_eq!(f32_to_e4m3(7.6 / 512.0), 0x08);
        // The top of a binade rounds into the next one.
        assert_eq!(f32_to_e4m3(1.99), 0x40);
    }

    #[test]
    fn a_block_holds_values_within_half_a_code_step() {
        let x: Vec<f32> = (0..QK).map(|i| (i as f32 - 13.5) * 0.37).collect();
        let b = BlockFp8::quantize(&x);
        let mut out = [0.0f32; QK];
        b.dequantize(&mut out);
        for (o, v) in out.iter().zip(&x) {
            // E4M3 has 3 mantissa bits: relative step 1/8, so half a step is 1/16 of the value.
            assert!((o - v).abs() <= v.abs() / 16.0 + 1e-6, "{o} vs {v}");
        }
        let partial = BlockFp8::quantize(&x[..5]);
        assert!(partial.qs[5..].iter().all(|&q| q == 0));
        assert!(!partial.is_invalid());
        let nan = BlockFp8 {
            d: 1.0,
            qs: [0x7f; QK],
        };
        assert!(nan.is_invalid());
    }
}
