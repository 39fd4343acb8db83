//! Turning a logits row into the next token: greedy (temperature 0), or temperature with top-k and
//! top-p (nucleus) filtering, drawn from a seeded generator.

use crate::error::{ModelError, Result};
use crate::ops::{argmax, softmax};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::InvalidArgument(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::InvalidArgument(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Sampler { params, rng })
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature == 0.0 || p.top_k == 1 {
            return argmax(logits).unwrap_or(0) as u32;
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let mut probs: Vec<f32> = order.iter().map(|&i| logits[i] / p.temperature).collect();
        softmax(&mut probs);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cumulative += q;
                if cumulative >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut target = self.rng.next_f64() as f32 * total;
        for (i, q) in probs[..keep].iter().enumerate() {
            if target < *q {
                return order[i] as u32;
            }
            target -= q;
        }
        order[keep - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> Sampler {
        Sampler::new(SamplingParams {
            temperature,
            top_p,
            top_k,
            seed,
        })
        .unwrap()
    }

    #[test]
    fn greedy_takes_argmax() {
        assert_eq!(sampler(0.0, 1.0, 0, 1).sample(&[0.1, 3.0, 2.9]), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let logits = [2.0, 1.9, 1.8, -5.0, 1.7];
        let mut s = sampler(1.0, 1.0, 2, 3);
        for _ in 0..200 {
            assert!(matches!(s.sample(&logits), 0 | 1));
        }
        let peaked = [10.0, 0.0, 0.0, 0.0];
        let mut s = sampler(1.0, 0.5, 0, 3);
        for _ in 0..200 {
            assert_eq!(s.sample(&peaked), 0);
        }
    }

    #[test]
    fn seed_reproduces_and_temperature_spreads() {
        let logits = [1.0, 1.0, 1.0, 1.0];
        let a: Vec<u32> = (0..50)
            .scan(sampler(1.0, 1.0, 0, 9), |s, _| Some(s.sample(&logits)))
            .collect();
        let b: Vec<u32> = (0..50)
            .scan(sampler(1.0, 1.0, 0, 9), |s, _| Some(s.sample(&logits)))
            .collect();
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn rejects_bad_params() {
        let bad = |t: f32, p: f32| {
            Sampler::new(SamplingParams {
                temperature: t,
                top_p: p,
                top_k: 0,
                seed: 0,
            })
            .is_err()
        };
        assert!(bad(-1.0, 1.0) && bad(f32::NAN, 1.0) && bad(1.0, 0.0) && bad(1.0, 1.5));
    }
}
