//! Rotary position embeddings as transformers computes them, in f32: inverse frequencies
//! `theta^(-2i/d)` over the rotary dimensions `d` of a head (all of it, or its first part for a
//! `partial_rotary_factor`), optionally rescaled by YaRN, and the rotation applied either in the
//! `rotate_half` layout (dimension `i` pairs with `i + d/2`) or the interleaved one DeepSeek-V3
//! uses (dimension `2i` pairs with `2i + 1`). Dimensions past the rotary ones pass unchanged.

/// Which dimensions of a head a frequency rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// `i` with `i + d/2` (transformers' `rotate_half`).
    Half,
    /// `2i` with `2i + 1` (DeepSeek-V3's `rope_interleave`).
    Interleaved,
}

/// YaRN's context extension (transformers' `_compute_yarn_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub factor: f32,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Scales cos and sin; when absent, derived from `factor`, `mscale` and `mscale_all_dim`.
    pub attention_factor: Option<f32>,
    pub mscale: Option<f32>,
    pub mscale_all_dim: Option<f32>,
    /// Round the correction range outwards to whole dimensions (the default).
    pub truncate: bool,
}

/// `0.1 * mscale * ln(scale) + 1` for a scale above 1, else 1 (YaRN's Eq. 21).
fn yarn_mscale(scale: f32, mscale: f32) -> f32 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl Yarn {
    /// The factor cos and sin are multiplied by.
    pub fn attention_factor(&self) -> f32 {
        if let Some(a) = self.attention_factor {
            return a;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                yarn_mscale(self.factor, m) / yarn_mscale(self.factor, all)
            }
            _ => yarn_mscale(self.factor, 1.0),
        }
    }

    /// The factor by which MLA models scale their softmax beyond `1/sqrt(head_dim)`:
    /// `mscale(factor, mscale_all_dim)^2` (transformers' `yarn_apply_mscale`), 1 without
    /// `mscale_all_dim`.
    pub fn softmax_factor(&self) -> f32 {
        match self.mscale_all_dim {
            Some(all) if all != 0.0 => {
                let m = yarn_mscale(self.factor, all);
                m * m
            }
            _ => 1.0,
        }
    }

    /// The inverse frequencies for `dim` rotary dimensions of base `theta`.
    fn inv_freq(&self, dim: usize, theta: f32) -> Vec<f32> {
        let (dim_f, half) = (dim as f64, dim / 2);
        let base = f64::from(theta);
        let max_pos = self.original_max_position_embeddings as f64;
        let correction = |rotations: f32| {
            let r = f64::from(rotations);
            dim_f * (max_pos / (r * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
        };
        let (mut low, mut high) = (correction(self.beta_fast), correction(self.beta_slow));
        if self.truncate {
            (low, high) = (low.floor(), high.ceil());
        }
        let (low, mut high) = (low.max(0.0) as f32, high.min(dim_f - 1.0) as f32);
        if low == high {
            high += 0.001;
        }
        (0..half)
            .map(|i| {
                let pos_freq = theta.powf((2 * i) as f32 / dim as f32);
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (self.factor * pos_freq);
                let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                interpolation * (1.0 - keep) + extrapolation * keep
            })
            .collect()
    }
}

/// The rotary embedding of one model: what every attention layer applies to q and k.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Dimensions of a head rotated (its first `rotary_dim`).
    rotary_dim: usize,
    layout: RopeLayout,
    /// cos and sin are multiplied by it (YaRN's attention factor; 1 otherwise).
    scale: f32,
}

impl Rope {
    /// Plain RoPE over whole heads of `head_dim`, `rotate_half` layout.
    pub fn new(head_dim: usize, theta: f32) -> Rope {
        Rope::with(head_dim, theta, RopeLayout::Half, None)
    }

    /// RoPE over the first `rotary_dim` dimensions of each head, in `layout`, with YaRN when
    /// given.
    pub fn with(rotary_dim: usize, theta: f32, layout: RopeLayout, yarn: Option<&Yarn>) -> Rope {
        let inv_freq = match yarn {
            Some(y) => y.inv_freq(rotary_dim, theta),
            None => (0..rotary_dim / 2)
                .map(|i| 1.0 / theta.powf((2 * i) as f32 / rotary_dim as f32))
                .collect(),
        };
        Rope {
            inv_freq,
            rotary_dim,
            layout,
            scale: yarn.map_or(1.0, Yarn::attention_factor),
        }
    }

    /// Rotates every `head_dim`-wide head in `x` (one token's heads) for position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.apply_from(x, head_dim, 0, pos);
    }

    /// As [`Rope::apply`], rotating the `rotary_dim` dimensions of each head that start at
    /// `start` (DeepSeek-V3's query heads end in their rope part).
    pub fn apply_from(&self, x: &mut [f32], head_dim: usize, start: usize, pos: usize) {
        let half = self.inv_freq.len();
        let (sin, cos): (Vec<f32>, Vec<f32>) = self
            .inv_freq
            .iter()
            .map(|f| {
                let (s, c) = (pos as f32 * f).sin_cos();
                (s * self.scale, c * self.scale)
            })
            .unzip();
        for head in x.chunks_exact_mut(head_dim) {
            let rotary = &mut head[start..start + self.rotary_dim];
            match self.layout {
                RopeLayout::Half => {
                    let (a, b) = rotary.split_at_mut(half);
                    for i in 0..half {
                        let (x0, x1) = (a[i], b[i]);
                        a[i] = x0 * cos[i] - x1 * sin[i];
                        b[i] = x1 * cos[i] + x0 * sin[i];
                    }
                }
                RopeLayout::Interleaved => {
                    // transformers writes the rotated pairs de-interleaved: the first halves of
                    // the pairs first, then the second halves.
                    let pairs: Vec<(f32, f32)> =
                        rotary.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    for (i, &(x0, x1)) in pairs.iter().enumerate() {
                        rotary[i] = x0 * cos[i] - x1 * sin[i];
                        rotary[half + i] = x1 * cos[i] + x0 * sin[i];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let rope = Rope::new(8, 10000.0);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        let mut x = orig.clone();
        rope.apply(&mut x, 8, 0);
        assert_eq!(x, orig);
        rope.apply(&mut x, 8, 17);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 * n0);
    }

    #[test]
    fn relative_positions_give_equal_dot_products() {
        for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
            let rope = Rope::with(4, 100.0, layout, None);
            let (q, k) = ([0.3, -1.0, 0.5, 2.0], [1.0, 0.2, -0.7, 0.4]);
            let dot = |pq: usize, pk: usize| {
                let (mut a, mut b) = (q, k);
                rope.apply(&mut a, 4, pq);
                rope.apply(&mut b, 4, pk);
                a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
            };
            assert!((dot(5, 2) - dot(13, 10)).abs() < 1e-4, "{layout:?}");
        }
    }

    #[test]
    fn partial_rotation_leaves_the_other_dimensions_alone() {
        let rope = Rope::with(4, 10000.0, RopeLayout::Half, None);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 + 1.0).collect();
        let mut x = orig.clone();
        rope.apply(&mut x, 8, 9);
        for head in 0..2 {
            assert_ne!(x[head * 8..head * 8 + 4], orig[head * 8..head * 8 + 4]);
            assert_eq!(
                x[head * 8 + 4..head * 8 + 8],
                orig[head * 8 + 4..head * 8 + 8]
            );
        }
    }

    #[test]
    fn interleaved_pairs_rotate_adjacent_dimensions_and_write_them_apart() {
        let rope = Rope::with(4, 10000.0, RopeLayout::Interleaved, None);
        let mut x = [1.0, 0.0, 0.0, 1.0];
        rope.apply(&mut x, 4, 1);
        // Pair 0 (x0, x1) = (1, 0) turns by 1 radian: (cos 1, sin 1), written to dims 0 and 2.
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn yarn_matches_transformers_for_deepseek_v3() {
        // DeepSeek-V3's released rope_scaling; attention factor and softmax factor as
        // transformers derives them, and the lowest frequency interpolated by the factor.
        let yarn = Yarn {
            factor: 40.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: Some(1.0),
            mscale_all_dim: Some(1.0),
            truncate: true,
        };
        assert_eq!(yarn.attention_factor(), 1.0);
        let m = 0.1 * 40f32.ln() + 1.0;
        assert!((yarn.softmax_factor() - m * m).abs() < 1e-6);
        let inv = yarn.inv_freq(64, 10000.0);
        assert_eq!(inv[0], 1.0, "the fastest frequency is extrapolated");
        let slowest = 1.0 / (40.0 * 10000f32.powf(62.0 / 64.0));
        assert!(
            (inv[31] - slowest).abs() < 1e-12,
            "{} vs {slowest}",
            inv[31]
        );
    }
}
