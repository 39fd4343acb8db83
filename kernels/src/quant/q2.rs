//! `Q2`: 32 two-bit codes with an f16 scale and an f16 offset per block.
//!
//! Byte layout of one [`BlockQ2`] (12 bytes, alignment 2):
//!
//! | offset | size | field | meaning                                                  |
//! |--------|------|-------|----------------------------------------------------------|
//! | 0      | 2    | `d`   | scale, IEEE binary16, little endian                       |
//! | 2      | 2    | `m`   | offset (the block "minimum"), IEEE binary16, little endian |
//! | 4      | 8    | `qs`  | element `j` has its code in byte `j % 8`, bits `2*(j/8) .. 2*(j/8)+2` |
//!
//! So byte `i` holds elements `i`, `i+8`, `i+16`, `i+24` from its low bits up. Element `j` with
//! code `q` in `0..=3` is `d * q + m`.
//!
//! Choosing `d` and `m` (in the spirit of llama.cpp `make_qkx2_quants`, unweighted): starting from
//! `m = min`, `d = (max - min) / 3`, codes are tried for 16 scales `(2.5 + 0.1 k) / (max - min)`;
//! for each code assignment `d` and `m` are refit by least squares and the pair with the smallest
//! squared error is kept. Codes are recomputed for the f16-rounded `d` and `m`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{QK, round_code, scale_to_f16};

/// 32 weights as 2-bit codes with an f16 scale and offset; see the module docs for the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2 {
    /// Scale.
    pub d: f16,
    /// Offset added to every element.
    pub m: f16,
    /// Packed codes: element `j` at bits `2*(j/8)..` of byte `j % 8`.
    pub qs: [u8; QK / 4],
}

const _: () = assert!(size_of::<BlockQ2>() == 12);
const _: () = assert!(align_of::<BlockQ2>() == 2);

/// Least-squares `(d, m, err)` for codes `q_j = round((x_j - min) * iscale)` clamped to `0..=3`.
fn fit(x: &[f32; QK], min: f32, iscale: f32) -> Option<(f32, f32, f32)> {
    let code = |v: f32| round_code((v - min) * iscale, 0.0, 3.0);
    let (mut sq, mut sq2, mut sx, mut sxq) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for &v in x {
        let q = code(v);
        sq += q;
        sq2 += q * q;
        sx += v;
        sxq += v * q;
    }
    let n = QK as f32;
    let det = n * sq2 - sq * sq;
    if det <= 0.0 {
        return None;
    }
    let d = (n * sxq - sq * sx) / det;
    let m = (sq2 * sx - sq * sxq) / det;
    if d <= 0.0 {
        return None;
    }
    let err = x
        .iter()
        .map(|&v| {
            let e = v - (d * code(v) + m);
            e * e
        })
        .sum::<f32>();
    Some((d, m, err))
}

impl BlockQ2 {
    /// Quantizes 32 finite values.
    pub fn quantize(x: &[f32; QK]) -> BlockQ2 {
        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let range = max - min;
        let mut best = (range / 3.0, min, f32::INFINITY);
        if range > 0.0 {
            if let Some(first) = fit(x, min, 3.0 / range) {
                best = first;
            }
            for k in 0..16 {
                let iscale = (2.5 + 0.1 * k as f32) / range;
                if let Some(cand) = fit(x, min, iscale)
                    && cand.2 < best.2
                {
                    best = cand;
                }
            }
        }
        let d = scale_to_f16(best.0);
        let m = scale_to_f16(best.1);
        let (df, mf) = (d.to_f32(), m.to_f32());
        let id = if df > 0.0 { 1.0 / df } else { 0.0 };
        let mut qs = [0u8; QK / 4];
        for (j, &v) in x.iter().enumerate() {
            let q = round_code((v - mf) * id, 0.0, 3.0) as u8;
            qs[j % 8] |= q << (2 * (j / 8));
        }
        BlockQ2 { d, m, qs }
    }

    /// Writes the 32 values the block represents.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, o) in out.iter_mut().enumerate() {
            let q = (self.qs[j % 8] >> (2 * (j / 8))) & 3;
            *o = d * f32::from(q) + m;
        }
    }
}
