//! Turning a logits row into the next token as vLLM does: a bias per token, the repetition,
//! frequency and presence penalties over the tokens seen so far, then greedy (temperature 0), or temperature
//! with min-p, top-k and top-p (nucleus) filtering, drawn from a seeded generator.

use std::collections::{HashMap, HashSet};

use crate::error::{ModelError, Result};
use crate::ops::{argmax, softmax};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// vLLM's filters and penalties.
    pub shaping: Shaping,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            shaping: Shaping::default(),
            seed: 0,
        }
    }
}

/// vLLM's filters and penalties: how a logits row is shaped besides temperature and `top_p`.
#[derive(Debug, Clone, PartialEq)]
pub struct Shaping {
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the tokens at least `min_p` times as likely as the most likely one (0 = off).
    pub min_p: f32,
    /// Divides a positive logit, multiplies a negative one, of every token in the prompt or
    /// the output so far (1 = off).
    pub repetition_penalty: f32,
    /// Subtracted from the logit of every token the output holds (0 = off).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time the output holds it (0 = off).
    pub frequency_penalty: f32,
    /// Added to these tokens' logits, before the penalties.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for Shaping {
    fn default() -> Shaping {
        Shaping {
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
        }
    }
}

impl Shaping {
    fn penalizes(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(ModelError::InvalidArgument(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        let shaping = &self.shaping;
        if !(0.0..=1.0).contains(&shaping.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", shaping.min_p));
        }
        if !(shaping.repetition_penalty > 0.0 && shaping.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be a finite number > 0, got {}",
                shaping.repetition_penalty
            ));
        }
        if !(shaping.presence_penalty.is_finite() && shaping.frequency_penalty.is_finite()) {
            return bad("presence_penalty and frequency_penalty must be finite".into());
        }
        Ok(())
    }
}

/// The tokens a sequence has seen, for the penalties: the prompt's, and the output's with how
/// often each was sampled.
#[derive(Debug, Clone, Default)]
struct Seen {
    prompt: HashSet<u32>,
    output: HashMap<u32, u32>,
}

impl Seen {
    /// Applies the penalties of `p` to `out` (vLLM's order: repetition, then frequency and
    /// presence).
    fn penalize(&self, out: &mut [f32], p: &Shaping) {
        if p.repetition_penalty != 1.0 {
            let output_only = self.output.keys().filter(|t| !self.prompt.contains(t));
            for &t in self.prompt.iter().chain(output_only) {
                if let Some(l) = out.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        for (&t, &count) in &self.output {
            if let Some(l) = out.get_mut(t as usize) {
                *l -= p.frequency_penalty * count as f32 + p.presence_penalty;
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Kept only when a penalty is on.
    seen: Option<Seen>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        let seen = params.shaping.penalizes().then(Seen::default);
        Ok(Sampler { params, rng, seen })
    }

    /// This sampler for a sequence whose prompt is `prompt` (which the repetition penalty
    /// counts as seen).
    pub fn with_prompt(mut self, prompt: &[u32]) -> Sampler {
        if let Some(seen) = &mut self.seen {
            seen.prompt.extend(prompt);
        }
        self
    }

    /// The next token, which counts as seen from now on.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let adjusted = self.adjust(logits);
        let id = self.draw(adjusted.as_deref().unwrap_or(logits));
        if let Some(seen) = &mut self.seen {
            *seen.output.entry(id).or_default() += 1;
        }
        id
    }

    /// `logits` with the bias and then the penalties applied, when there are any.
    fn adjust(&self, logits: &[f32]) -> Option<Vec<f32>> {
        let shaping = &self.params.shaping;
        if shaping.logit_bias.is_empty() && self.seen.is_none() {
            return None;
        }
        let mut out = logits.to_vec();
        for &(id, bias) in &shaping.logit_bias {
            if let Some(l) = out.get_mut(id as usize) {
                *l += bias;
            }
        }
        if let Some(seen) = &self.seen {
            seen.penalize(&mut out, shaping);
        }
        Some(out)
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let (top_k, min_p) = (p.shaping.top_k, p.shaping.min_p);
        if p.temperature == 0.0 || top_k == 1 {
            return argmax(logits).unwrap_or(0) as u32;
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if min_p > 0.0 {
            // p_i >= min_p p_max, in logits: l_i / T >= l_max / T + ln(min_p).
            let floor = logits[order[0]] / p.temperature + min_p.ln();
            let keep = order.partition_point(|&i| logits[i] / p.temperature >= floor);
            order.truncate(keep.max(1));
        }
        if top_k > 0 {
            order.truncate(top_k);
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
            seed,
            shaping: Shaping {
                top_k,
                ..Shaping::default()
            },
        })
        .unwrap()
    }

    /// Greedy sampling shaped by `shaping`.
    fn shaped(shaping: Shaping) -> SamplingParams {
        SamplingParams {
            shaping,
            ..SamplingParams::default()
        }
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
                ..SamplingParams::default()
            })
            .is_err()
        };
        assert!(bad(-1.0, 1.0) && bad(f32::NAN, 1.0) && bad(1.0, 0.0) && bad(1.0, 1.5));
        for params in [
            shaped(Shaping {
                min_p: 1.5,
                ..Shaping::default()
            }),
            shaped(Shaping {
                repetition_penalty: 0.0,
                ..Shaping::default()
            }),
            shaped(Shaping {
                presence_penalty: f32::INFINITY,
                ..Shaping::default()
            }),
        ] {
            assert!(Sampler::new(params).is_err());
        }
    }

    #[test]
    fn min_p_keeps_only_tokens_near_the_most_likely() {
        // Probabilities at temperature 1 about 0.48, 0.29, 0.18, 0.04: min_p 0.5 keeps two.
        let logits = [2.0, 1.5, 1.0, -0.5];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: 5,
            ..shaped(Shaping {
                min_p: 0.5,
                ..Shaping::default()
            })
        })
        .unwrap();
        let drawn: HashSet<u32> = (0..300).map(|_| s.sample(&logits)).collect();
        assert_eq!(drawn, HashSet::from([0, 1]));
    }

    #[test]
    fn penalties_steer_greedy_away_from_seen_tokens() {
        let logits = [3.0, 2.5, 1.0, -1.0];
        let greedy = |params: SamplingParams, prompt: &[u32]| {
            let mut s = Sampler::new(params).unwrap().with_prompt(prompt);
            (0..3).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
        };
        assert_eq!(greedy(SamplingParams::default(), &[0]), [0, 0, 0]);
        // Token 0 is in the prompt: 3 / 2 = 1.5 < 2.5, so token 1 wins; seen, it falls to 1.25
        // and token 0 (penalized once, however often seen) wins from then on.
        let repetition = shaped(Shaping {
            repetition_penalty: 2.0,
            ..Shaping::default()
        });
        assert_eq!(greedy(repetition, &[0]), [1, 0, 0]);
        // Presence: 3 - 1 = 2 < 2.5 after the first, then token 1 falls to 1.5 < 2.
        let presence = shaped(Shaping {
            presence_penalty: 1.0,
            ..Shaping::default()
        });
        assert_eq!(greedy(presence, &[]), [0, 1, 0]);
        // Frequency: each use costs 0.4: 3, then 2.6 > 2.5, then 2.2 < 2.5.
        let frequency = shaped(Shaping {
            frequency_penalty: 0.4,
            ..Shaping::default()
        });
        assert_eq!(greedy(frequency, &[]), [0, 0, 1]);
        // A negative logit of a seen token is made more negative, not less.
        let seen_negative = Seen {
            prompt: HashSet::from([3]),
            output: HashMap::new(),
        };
        let p = Shaping {
            repetition_penalty: 2.0,
            ..Shaping::default()
        };
        let mut penalized = logits;
        seen_negative.penalize(&mut penalized, &p);
        assert_eq!(penalized[3], -2.0);
        // A bias of +100 forces a token, at any temperature.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.5,
            seed: 1,
            ..shaped(Shaping {
                logit_bias: vec![(3, 100.0)],
                ..Shaping::default()
            })
        })
        .unwrap();
        assert!((0..50).all(|_| s.sample(&logits) == 3));
    }
}
