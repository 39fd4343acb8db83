//! `Q8`: 32 int8 codes and one f16 scale per block.
//!
//! Byte layout of one [`BlockQ8`] (34 bytes, alignment 2):
//!
//! | offset | size | field | meaning                                   |
//! |--------|------|-------|-------------------------------------------|
//! | 0      | 2    | `d`   | scale, IEEE binary16, little endian        |
//! | 2      | 32   | `qs`  | `qs[j]` = code of element `j`, two's complement int8 |
//!
//! Element `j` is `d * qs[j]`. The quantizer uses `d = amax / 127` (rounded to f16) and codes in
//! `-127..=127`; readers must also accept `-128`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{QK, round_code, scale_to_f16};

/// 32 weights as int8 codes with an f16 scale; see the module docs for the byte layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8 {
    /// Scale.
    pub d: f16,
    /// Codes, element `j` at index `j`.
    pub qs: [i8; QK],
}

const _: () = assert!(size_of::<BlockQ8>() == 34);
const _: () = assert!(align_of::<BlockQ8>() == 2);

impl BlockQ8 {
    /// Quantizes 32 finite values.
    pub fn quantize(x: &[f32; QK]) -> BlockQ8 {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = scale_to_f16(amax / 127.0);
        let df = d.to_f32();
        let id = if df > 0.0 { 1.0 / df } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = round_code(v * id, -127.0, 127.0) as i8;
        }
        BlockQ8 { d, qs }
    }

    /// Writes the 32 values the block represents.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(self.qs) {
            *o = d * f32::from(q);
        }
    }
}
