//! One token's attention over a span of its cached positions, kept as a partial softmax: per
//! query head the largest score, the sum of the exponentials below it and the so-weighted sum of
//! the values. Spans computed apart (on different threads) merge into the softmax over their
//! union, with an optional sink logit per head (gpt-oss); this is how a long context's decode
//! step is shared among threads (flash-decoding). Each cached key and value row is read once
//! for all the heads, front to back.

use std::ops::Range;

use moe_kernels::vector::{axpy, dot};

use crate::kv_cache::KvCache;

/// The head layout of grouped-query attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key-value heads; query head `h` reads key-value head `h / (heads / kv_heads)`.
    pub kv_heads: usize,
    /// Width of one head.
    pub dim: usize,
}

/// One token's attention over one span of positions.
#[derive(Debug)]
pub(crate) struct Partial {
    /// Per head, the largest scaled score in the span.
    max: Vec<f32>,
    /// Per head, `Σ exp(score - max)`.
    sum: Vec<f32>,
    /// Per head, `Σ exp(score - max) · value` (`[heads, dim]`).
    out: Vec<f32>,
}

impl Partial {
    /// The query `q` (`[heads, dim]`) attending over positions `span` (not empty) of `layer`,
    /// its scores scaled by `scale`.
    pub(crate) fn over(
        q: &[f32],
        heads: Heads,
        scale: f32,
        cache: &KvCache,
        layer: usize,
        span: Range<usize>,
    ) -> Partial {
        let Heads {
            heads,
            kv_heads,
            dim,
        } = heads;
        let group = heads / kv_heads;
        let len = span.len();
        let mut scores = vec![0.0; heads * len];
        for (i, j) in span.clone().enumerate() {
            let keys = cache.key(layer, j);
            for (h, qh) in q.chunks_exact(dim).enumerate() {
                scores[h * len + i] = dot(qh, &keys[h / group * dim..][..dim]) * scale;
            }
        }
        let mut max = Vec::with_capacity(heads);
        let mut sum = Vec::with_capacity(heads);
        for row in scores.chunks_exact_mut(len) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            max.push(m);
            sum.push(s);
        }
        let mut out = vec![0.0; heads * dim];
        for (i, j) in span.enumerate() {
            let values = cache.value(layer, j);
            for (h, oh) in out.chunks_exact_mut(dim).enumerate() {
                axpy(oh, scores[h * len + i], &values[h / group * dim..][..dim]);
            }
        }
        Partial { max, sum, out }
    }

    /// The attention outputs (`[heads, dim]`) of the spans `parts` together, as one softmax over
    /// all their positions and, per head, `sinks[h]` (a logit with no value) when given.
    pub(crate) fn merge(parts: &[Partial], sinks: Option<&[f32]>, dim: usize) -> Vec<f32> {
        let heads = parts.first().map_or(0, |p| p.max.len());
        let mut out = vec![0.0; heads * dim];
        for (h, oh) in out.chunks_exact_mut(dim).enumerate() {
            let sink = sinks.map(|s| s[h]);
            let top = parts
                .iter()
                .map(|p| p.max[h])
                .chain(sink)
                .fold(f32::NEG_INFINITY, f32::max);
            let mut total = sink.map_or(0.0, |s| (s - top).exp());
            for p in parts {
                let factor = (p.max[h] - top).exp();
                total += p.sum[h] * factor;
                for (o, x) in oh.iter_mut().zip(&p.out[h * dim..][..dim]) {
                    *o += factor * x;
                }
            }
            oh.iter_mut().for_each(|o| *o /= total);
        }
        out
    }
}

/// Splits `positions` into at most `pieces` spans of at least `min_len` positions each (one span
/// when it is shorter than two).
pub(crate) fn spans(positions: Range<usize>, min_len: usize, pieces: usize) -> Vec<Range<usize>> {
    let count = (positions.len() / min_len.max(1)).clamp(1, pieces.max(1));
    let per = positions.len().div_ceil(count);
    (0..count)
        .map(|i| positions.start + i * per..(positions.start + (i + 1) * per).min(positions.end))
        .filter(|span| !span.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kv_cache::{BlockPool, KvWidth};

    /// A cache of one layer with `len` positions of two key-value heads of width 4.
    fn cache(len: usize) -> KvCache {
        let pool = BlockPool::new(1, KvWidth::symmetric(8), 256);
        let mut cache = KvCache::new(Arc::clone(&pool), 256);
        let keys: Vec<f32> = (0..len * 8)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let values: Vec<f32> = (0..len * 8)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 5.0)
            .collect();
        cache.reserve(len).unwrap();
        cache.append(0, &keys, &values);
        cache.advance(len);
        cache
    }

    #[test]
    fn spans_merged_equal_one_span_over_their_union() {
        let cache = cache(100);
        let heads = Heads {
            heads: 4,
            kv_heads: 2,
            dim: 4,
        };
        let q: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 3.0).collect();
        for sinks in [None, Some([0.5f32, -1.0, 2.0, 0.0].as_slice())] {
            let whole = Partial::merge(
                &[Partial::over(&q, heads, 0.5, &cache, 0, 3..100)],
                sinks,
                4,
            );
            let parts: Vec<Partial> = spans(3..100, 20, 4)
                .into_iter()
                .map(|span| Partial::over(&q, heads, 0.5, &cache, 0, span))
                .collect();
            assert_eq!(parts.len(), 4);
            let merged = Partial::merge(&parts, sinks, 4);
            for (a, b) in whole.iter().zip(&merged) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} {b}");
            }
            // Against the plain softmax, head 3 (key-value head 1).
            let (qh, sink) = (&q[12..16], sinks.map_or(f32::NEG_INFINITY, |s| s[3]));
            let scores: Vec<f32> = (3..100)
                .map(|j| dot(qh, &cache.key(0, j)[4..8]) * 0.5)
                .collect();
            let top = scores.iter().copied().fold(sink, f32::max);
            let total: f32 =
                scores.iter().map(|s| (s - top).exp()).sum::<f32>() + (sink - top).exp();
            for d in 0..4 {
                let expected: f32 = (3..100)
                    .zip(&scores)
                    .map(|(j, s)| (s - top).exp() / total * cache.value(0, j)[4 + d])
                    .sum();
                assert!(
                    (expected - merged[12 + d]).abs() <= 1e-5,
                    "{expected} {}",
                    merged[12 + d]
                );
            }
        }
    }

    #[test]
    fn spans_cover_the_positions_in_order() {
        assert_eq!(spans(0..10, 64, 4), vec![0..10]);
        assert_eq!(
            spans(5..261, 64, 4),
            vec![5..69, 69..133, 133..197, 197..261]
        );
        assert_eq!(spans(0..1000, 64, 4).len(), 4);
        assert_eq!(spans(0..130, 64, 8), vec![0..65, 65..130]);
    }
}
