//! `Mxfp4`: OCP microscaling FP4, 32 FP4 E2M1 codes and one E8M0 power-of-two scale per block
//! (the format gpt-oss ships its experts in).
//!
//! Byte layout of one [`BlockMxfp4`] (17 bytes, alignment 1):
//!
//! | offset | size | field | meaning                                                     |
//! |--------|------|-------|-------------------------------------------------------------|
//! | 0      | 1    | `e`   | E8M0 scale: the block's elements are multiplied by 2^(e-127); 255 (NaN) is refused |
//! | 1      | 16   | `qs`  | byte `j`: bits 0..4 = code of element `j`, bits 4..8 = code of element `j + 16` |
//!
//! A 4-bit code holds the sign in bit 3 and the magnitude in bits 0..3; codes 0..=15 are
//! `+0, +0.5, +1, +1.5, +2, +3, +4, +6, -0, -0.5, -1, -1.5, -2, -3, -4, -6` ([`E2M1_VALUES`]).
//!
//! Nibble order: the codes are kept in the order of [`BlockQ4`](super::BlockQ4) (element `j` in
//! the low nibble of byte `j`, element `j + 16` in its high nibble), so the kernels unpack them
//! exactly like `Q4` codes. Checkpoints (and HF transformers reading them) pack consecutive
//! elements instead: byte `j` holds element `2j` low and `2j + 1` high;
//! [`BlockMxfp4::from_checkpoint`] converts.
//!
//! Quantizing: `e` is the smallest scale whose 6 (the largest code) covers the block's largest
//! magnitude, `e = ceil(log2(amax / 6)) + 127` clamped to `0..=254`, and each value is rounded to
//! the nearest code, ties to the even code. The kernels read the codes as twice their value
//! ([`E2M1_DOUBLED`], integers, looked up in a 16-entry table) times the scale 2^(e-128)
//! ([`BlockMxfp4::half_scale`]), with f32 activations: a product is exact but for its f32
//! additions, as for the checkpoint's own decoded weights.

use bytemuck::{Pod, Zeroable};

use super::QK;

/// The value of each E2M1 code.
pub const E2M1_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Twice the value of each E2M1 code: the integers the kernels multiply with int8 activations.
pub const E2M1_DOUBLED: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// The E8M0 code of NaN.
const E8M0_NAN: u8 = 255;

/// Midpoints between neighbouring magnitudes of codes 0..=7: a magnitude above `MIDPOINTS[i]`
/// rounds to code `i + 1` or higher.
const MIDPOINTS: [f32; 7] = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];

/// 32 weights as FP4 E2M1 codes with an E8M0 scale; see the module docs for the byte layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockMxfp4 {
    /// E8M0 scale exponent: the scale is 2^(e-127).
    pub e: u8,
    /// Packed codes: low nibble of byte `j` is element `j`, high nibble is element `j + 16`.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockMxfp4>() == 17);
const _: () = assert!(align_of::<BlockMxfp4>() == 1);

/// 2^k as an f32 for `k` in `-149..=127` (subnormal below -126).
const fn pow2(k: i32) -> f32 {
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1 << (k + 149))
    }
}

/// The scale of each E8M0 code (NaN for 255).
pub const fn e8m0_to_f32(e: u8) -> f32 {
    if e == E8M0_NAN {
        f32::NAN
    } else {
        pow2(e as i32 - 127)
    }
}

/// 2^(e-128) for every E8M0 code: the scale that goes with [`E2M1_DOUBLED`].
static E8M0_HALF: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut e = 0;
    while e < 255 {
        table[e] = pow2(e as i32 - 128);
        e += 1;
    }
    table[255] = f32::NAN;
    table
};

/// The E2M1 code nearest to `v` (ties to the even code), saturating at ±6; `v` must not be NaN.
pub fn f32_to_e2m1(v: f32) -> u8 {
    let sign = if v.is_sign_negative() { 8 } else { 0 };
    let a = v.abs();
    let mut code = 0u8;
    for (i, &m) in MIDPOINTS.iter().enumerate() {
        // On a tie the upper neighbour `i + 1` wins when it is even.
        if a > m || (a == m && i % 2 == 1) {
            code = i as u8 + 1;
        }
    }
    sign | code
}

/// The E8M0 code of the smallest power of two `s` with `6 s >= amax`, within `0..=254`.
fn scale_code(amax: f32) -> u8 {
    let amax = f64::from(amax);
    // 6 * 2^(e-127) >= amax; f64 holds every such product exactly.
    let covers = |e: i32| 6.0 * 2f64.powi(e - 127) >= amax;
    let mut e = ((amax / 6.0).log2().ceil() as i32 + 127).clamp(0, 254);
    while e < 254 && !covers(e) {
        e += 1;
    }
    while e > 0 && covers(e - 1) {
        e -= 1;
    }
    e as u8
}

/// The largest magnitude code (`0..=7`) whose value at scale 2^(e-127) is a finite f32: 7
/// except for the two largest scales.
fn largest_finite_code(e: u8) -> u8 {
    let scale = 2f64.powi(i32::from(e) - 127);
    let finite = |c: &u8| f64::from(E2M1_VALUES[usize::from(*c)]) * scale <= f64::from(f32::MAX);
    (0..8u8).rev().find(finite).unwrap_or(0)
}

impl BlockMxfp4 {
    /// Quantizes 32 finite values; magnitudes within a step of `f32::MAX` saturate at the
    /// largest code that stays finite.
    pub fn quantize(x: &[f32; QK]) -> BlockMxfp4 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let e = scale_code(amax);
        // Dividing by a power of two is exact in f64 for every finite f32 and every scale.
        let inv = 2f64.powi(127 - i32::from(e));
        let cap = largest_finite_code(e);
        let code = |v: f32| {
            let c = f32_to_e2m1((f64::from(v) * inv) as f32);
            (c & 8) | (c & 7).min(cap)
        };
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
        }
        BlockMxfp4 { e, qs }
    }

    /// A block from a checkpoint's 16 code bytes (byte `j`: element `2j` in the low nibble,
    /// `2j + 1` in the high one) and its E8M0 scale, reordered to this crate's nibble order.
    pub fn from_checkpoint(blocks: &[u8; QK / 2], e: u8) -> BlockMxfp4 {
        let code = |i: usize| (blocks[i / 2] >> (4 * (i % 2))) & 0x0f;
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(j) | (code(j + QK / 2) << 4);
        }
        BlockMxfp4 { e, qs }
    }

    /// The block's 16 code bytes in a checkpoint's order (the inverse of
    /// [`BlockMxfp4::from_checkpoint`]); its scale is `e`.
    pub fn to_checkpoint(&self) -> [u8; QK / 2] {
        std::array::from_fn(|j| self.code(2 * j) | (self.code(2 * j + 1) << 4))
    }

    /// The code of element `i` (`0..32`).
    pub fn code(&self, i: usize) -> u8 {
        (self.qs[i % (QK / 2)] >> (4 * (i / (QK / 2)))) & 0x0f
    }

    /// 2^(e-128), the factor of the doubled codes the integer kernels use.
    pub fn half_scale(&self) -> f32 {
        E8M0_HALF[usize::from(self.e)]
    }

    /// Writes the 32 values the block represents.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = e8m0_to_f32(self.e);
        for (i, o) in out.iter_mut().enumerate() {
            *o = E2M1_VALUES[usize::from(self.code(i))] * d;
        }
    }

    /// Whether the scale is NaN (255) or a value the block holds is beyond the f32 range
    /// (scales 2^126 and 2^127 with large codes).
    pub fn is_invalid(&self) -> bool {
        let cap = largest_finite_code(self.e);
        self.e == E8M0_NAN || (0..QK).any(|i| self.code(i) & 7 > cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_rounds_to_itself_and_doubles_to_an_integer() {
        for code in 0..16u8 {
            let v = E2M1_VALUES[usize::from(code)];
            assert_eq!(2.0 * v, f32::from(E2M1_DOUBLED[usize::from(code)]));
            // -0 is code 8, and +0 and -0 are the same weight.
            let back = f32_to_e2m1(v);
            assert!(back == code || v == 0.0, "{code} -> {v} -> {back}");
            assert_eq!(E2M1_VALUES[usize::from(back)], v);
        }
        for code in 0..7 {
            assert!(E2M1_VALUES[code] < E2M1_VALUES[code + 1]);
        }
    }

    #[test]
    fn rounding_is_to_the_nearest_code_ties_to_even_and_saturates() {
        // Ties go to the even code: 0.25 -> 0, 0.75 -> 1.0, 1.25 -> 1.0, 1.75 -> 2.0,
        // 2.5 -> 2.0, 3.5 -> 4.0, 5.0 -> 4.0.
        let ties = [
            (0.25, 0),
            (0.75, 2),
            (1.25, 2),
            (1.75, 4),
            (2.5, 4),
            (3.5, 6),
            (5.0, 6),
        ];
        for (v, code) in ties {
            assert_eq!(f32_to_e2m1(v), code, "{v}");
            assert_eq!(f32_to_e2m1(-v), code | 8, "-{v}");
        }
        assert_eq!(f32_to_e2m1(0.26), 1);
        assert_eq!(f32_to_e2m1(2.51), 5);
        assert_eq!(f32_to_e2m1(5.01), 7);
        assert_eq!(f32_to_e2m1(100.0), 7);
        assert_eq!(f32_to_e2m1(-100.0), 15);
        assert_eq!(f32_to_e2m1(1e-30), 0);
    }

    #[test]
    fn the_scale_is_the_smallest_power_of_two_that_covers_the_block() {
        assert_eq!(scale_code(6.0), 127);
        assert_eq!(scale_code(6.000001), 128);
        assert_eq!(scale_code(3.0), 126);
        assert_eq!(scale_code(3.1), 127);
        assert_eq!(scale_code(0.75), 124);
        assert_eq!(scale_code(0.0), 0);
        assert_eq!(scale_code(f32::MIN_POSITIVE / 4.0), 0);
        assert_eq!(scale_code(f32::MAX), 253);
        assert_eq!(e8m0_to_f32(0), pow2(-127));
        assert_eq!(e8m0_to_f32(0).to_bits(), 1 << 22);
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert!(e8m0_to_f32(255).is_nan());
        assert_eq!(E8M0_HALF[0].to_bits(), 1 << 21);
        assert_eq!(E8M0_HALF[1].to_bits(), 1 << 22);
        assert_eq!(E8M0_HALF[128], 1.0);
        assert_eq!(E8M0_HALF[254], 2f32.powi(126));
    }

    #[test]
    fn a_block_holds_values_within_half_a_code_step() {
        let x: [f32; QK] = std::array::from_fn(|i| (i as f32 - 13.5) * 0.37);
        let b = BlockMxfp4::quantize(&x);
        // amax = 18.5 * 0.37 = 6.845, so the scale is 2.
        assert_eq!(b.e, 128);
        let mut out = [0.0f32; QK];
        b.dequantize(&mut out);
        for (o, v) in out.iter().zip(&x) {
            // The widest step (4 to 6) times the scale, halved.
            assert!((o - v).abs() <= 2.0, "{o} vs {v}");
            assert_eq!(*o, E2M1_VALUES[usize::from(f32_to_e2m1(v / 2.0))] * 2.0);
        }
        assert!(!b.is_invalid());
        let tiny: [f32; QK] = std::array::from_fn(|i| if i == 3 { -1e-39 } else { 0.0 });
        let t = BlockMxfp4::quantize(&tiny);
        assert_eq!(t.e, 0);
        t.dequantize(&mut out);
        // 1e-39 / 2^-127 = 0.17: rounds to zero, keeping its sign.
        assert!(out.iter().all(|&v| v == 0.0));
        let huge: [f32; QK] = std::array::from_fn(|i| if i == 7 { -f32::MAX } else { 1.0 });
        let h = BlockMxfp4::quantize(&huge);
        assert_eq!((h.e, h.code(7)), (253, 13));
        assert!(!h.is_invalid());
    }

    #[test]
    fn the_checkpoint_order_round_trips() {
        let bytes: [u8; QK / 2] = std::array::from_fn(|j| (j as u8).wrapping_mul(37));
        let block = BlockMxfp4::from_checkpoint(&bytes, 120);
        assert_eq!(block.to_checkpoint(), bytes);
        assert_eq!(
            (block.code(2), block.code(3)),
            (bytes[1] & 0x0f, bytes[1] >> 4)
        );
    }

    #[test]
    fn the_checkpoint_order_is_converted_and_nan_or_overflowing_scales_are_invalid() {
        let mut raw = [0u8; QK / 2];
        for (j, b) in raw.iter_mut().enumerate() {
            // Element 2j gets code j % 16, element 2j + 1 code (j + 5) % 16.
            *b = (j as u8 % 16) | ((j as u8 + 5) % 16) << 4;
        }
        let b = BlockMxfp4::from_checkpoint(&raw, 127);
        for i in 0..QK {
            let j = i / 2;
            let want = if i % 2 == 0 { j % 16 } else { (j + 5) % 16 };
            assert_eq!(usize::from(b.code(i)), want, "element {i}");
        }
        assert!(
            BlockMxfp4 {
                e: 255,
                qs: [0; 16]
            }
            .is_invalid()
        );
        // 1.5 * 2^127 is a finite f32, 2 * 2^127 and 4 * 2^126 are not.
        assert!(
            !BlockMxfp4 {
                e: 254,
                qs: [0x33; 16]
            }
            .is_invalid()
        );
        assert!(
            BlockMxfp4 {
                e: 254,
                qs: [0x04; 16]
            }
            .is_invalid()
        );
        assert!(
            BlockMxfp4 {
                e: 253,
                qs: [0xe0; 16]
            }
            .is_invalid()
        );
        assert!(
            !BlockMxfp4 {
                e: 253,
                qs: [0xd0; 16]
            }
            .is_invalid()
        );
    }
}
