//! How close one model's next-token distributions are to a reference's, position by position
//! (teacher forced): KL divergence, top-1 agreement and cosine similarity of the logits. Pure.

use crate::ops::{argmax, log_softmax};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub positions: usize,
    /// Mean over positions of KL(reference || candidate), in nats.
    pub mean_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions whose most likely token is the same.
    pub top1_agreement: f64,
    /// Mean cosine similarity of the logit vectors.
    pub mean_cosine: f64,
}

/// Compares two `[n, vocab]` logit matrices row by row.
pub fn compare(reference: &[f32], candidate: &[f32], vocab: usize) -> Agreement {
    assert_eq!(
        reference.len(),
        candidate.len(),
        "logit matrices differ in size"
    );
    let mut kl_sum = 0.0;
    let mut max_kl: f64 = 0.0;
    let mut agree = 0usize;
    let mut cos_sum = 0.0;
    let rows = reference
        .chunks_exact(vocab)
        .zip(candidate.chunks_exact(vocab));
    let positions = reference.len() / vocab;
    for (r, c) in rows {
        let (lr, lc) = (log_softmax(r), log_softmax(c));
        let kl: f64 = lr.iter().zip(&lc).map(|(a, b)| a.exp() * (a - b)).sum();
        kl_sum += kl;
        max_kl = max_kl.max(kl);
        agree += usize::from(argmax(r) == argmax(c));
        let dot: f64 = r.iter().zip(c).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |x: &[f32]| x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        cos_sum += dot / (norm(r) * norm(c)).max(f64::MIN_POSITIVE);
    }
    let n = positions.max(1) as f64;
    Agreement {
        positions,
        mean_kl: kl_sum / n,
        max_kl,
        top1_agreement: agree as f64 / n,
        mean_cosine: cos_sum / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_fully() {
        let a = [1.0, 2.0, 3.0, 0.5, 0.1, 0.2];
        let q = compare(&a, &a, 3);
        assert_eq!(q.positions, 2);
        assert!(
            q.mean_kl.abs() < 1e-12
                && q.top1_agreement == 1.0
                && (q.mean_cosine - 1.0).abs() < 1e-12
        );
    }

    #[test]
    fn different_logits_show_divergence() {
        let q = compare(&[3.0, 0.0, 0.0], &[0.0, 3.0, 0.0], 3);
        assert!(q.mean_kl > 1.0 && q.top1_agreement == 0.0 && q.mean_cosine < 0.1);
    }
}
