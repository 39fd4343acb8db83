//! Rotary position embeddings in HuggingFace's `rotate_half` convention: dimension `i` pairs with
//! `i + head_dim/2`, inverse frequencies `theta^(-2i/head_dim)`, all in f32 as transformers does.

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32) -> Rope {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Rope { inv_freq }
    }

    /// Rotates every `head_dim`-wide head in `x` (one token's heads) for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.inv_freq.len();
        let (sin, cos): (Vec<f32>, Vec<f32>) = self
            .inv_freq
            .iter()
            .map(|f| (pos as f32 * f).sin_cos())
            .unzip();
        for head in x.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
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
        rope.apply(&mut x, 0);
        assert_eq!(x, orig);
        rope.apply(&mut x, 17);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 * n0);
    }

    #[test]
    fn relative_positions_give_equal_dot_products() {
        let rope = Rope::new(4, 100.0);
        let (q, k) = ([0.3, -1.0, 0.5, 2.0], [1.0, 0.2, -0.7, 0.4]);
        let dot = |pq: usize, pk: usize| {
            let (mut a, mut b) = (q, k);
            rope.apply(&mut a, pq);
            rope.apply(&mut b, pk);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot(5, 2) - dot(13, 10)).abs() < 1e-4);
    }
}
