//! Grouped-query causal self-attention of one decoder layer: q/k/v projections (+ bias), optional
//! q/k RMSNorm (per head or over the whole projection), optional clipping, RoPE, the KV cache, an
//! optional sliding window, optional attention sinks (a learned logit per head that joins the
//! softmax's denominator and takes no value, gpt-oss), and the output projection.

use std::ops::Range;
use std::sync::Mutex;

use moe_kernels::{Format, Pool};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::layout::{Layout, Projection};
use crate::linear::Linear;
use crate::ops::rms_norm;
use crate::rope::Rope;
use crate::span::{Heads, Partial, spans};

/// Layer `layer`'s `projections` stacked, with their biases.
fn linear(
    ckpt: &Checkpoint,
    layout: &Layout<'_>,
    layer: usize,
    projections: &[Projection],
    format: Option<Format>,
) -> Result<Linear> {
    let weights: Vec<_> = projections
        .iter()
        .map(|&p| layout.projection(layer, p))
        .collect();
    let biases: Vec<_> = projections
        .iter()
        .filter_map(|&p| layout.projection_bias(layer, p))
        .collect();
    Linear::load(ckpt, &weights, &biases, format)
}

#[derive(Debug, Clone)]
pub struct Attention {
    /// q, k and v stacked: rows `[q_dim | kv_dim | kv_dim]`.
    qkv: Linear,
    o: Linear,
    /// q and k RMSNorm weights: one head wide (each head normalised alone) or the whole
    /// projection wide (each token's q or k normalised as one vector).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    clip: Option<f32>,
    window: Option<usize>,
    /// Each head's sink logit.
    sinks: Option<Vec<f32>>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    eps: f32,
}

impl Attention {
    /// Loads layer `layer`'s attention, projections converted to `format` if given.
    pub fn load(
        ckpt: &Checkpoint,
        cfg: &ModelConfig,
        layer: usize,
        format: Option<Format>,
    ) -> Result<Attention> {
        let layout = Layout::new(cfg);
        let qk_norm = match layout.qk_norms(layer) {
            Some([q, k]) => Some((ckpt.vector(&q)?, ckpt.vector(&k)?)),
            None => None,
        };
        let sinks = layout.sinks(layer).map(|s| ckpt.vector(&s)).transpose()?;
        Ok(Attention {
            qkv: linear(
                ckpt,
                &layout,
                layer,
                &[Projection::Q, Projection::K, Projection::V],
                format,
            )?,
            o: linear(ckpt, &layout, layer, &[Projection::O], format)?,
            qk_norm,
            clip: cfg.clip_qkv,
            window: cfg.sliding_window[layer],
            sinks,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            eps: cfg.rms_norm_eps,
        })
    }

    /// Bytes of weights read per token.
    pub fn weight_bytes(&self) -> usize {
        [&self.qkv, &self.o]
            .iter()
            .map(|l| l.weight().nbytes())
            .sum()
    }

    /// Attends `n` new tokens (`h`, `[n, hidden]`, already normalised) at positions
    /// `cache.len()..cache.len()+n`, appending their keys and values to the cache of `layer`.
    /// Returns `[n, hidden]`. The caller advances the cache once every layer has run.
    pub fn forward(
        &self,
        pool: &Pool,
        h: &[f32],
        n: usize,
        rope: &Rope,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Vec<f32>> {
        let q_dim = self.num_heads * self.head_dim;
        let kv_dim = self.num_kv_heads * self.head_dim;
        let qkv = self.qkv.forward(pool, h, n)?;
        let (mut q, mut k, mut v) = (
            Vec::with_capacity(n * q_dim),
            Vec::with_capacity(n * kv_dim),
            Vec::with_capacity(n * kv_dim),
        );
        for row in qkv.chunks_exact(q_dim + 2 * kv_dim) {
            let (qr, kv) = row.split_at(q_dim);
            let (kr, vr) = kv.split_at(kv_dim);
            q.extend_from_slice(qr);
            k.extend_from_slice(kr);
            v.extend_from_slice(vr);
        }
        if let Some((qw, kw)) = &self.qk_norm {
            rms_norm(&mut q, qw, self.eps);
            rms_norm(&mut k, kw, self.eps);
        }
        if let Some(c) = self.clip {
            for x in q.iter_mut().chain(k.iter_mut()).chain(v.iter_mut()) {
                *x = x.clamp(-c, c);
            }
        }
        let pos0 = cache.len();
        for t in 0..n {
            rope.apply(&mut q[t * q_dim..(t + 1) * q_dim], self.head_dim, pos0 + t);
            rope.apply(
                &mut k[t * kv_dim..(t + 1) * kv_dim],
                self.head_dim,
                pos0 + t,
            );
        }
        cache.append(layer, &k, &v);

        let out = self.attend(pool, &q, n, pos0, cache, layer);
        self.o.forward(pool, &out, n)
    }

    /// Every head of every new token attending over the cache: `[n, heads * head_dim]`. A unit
    /// of work is one token over one span of its positions, all heads together, so each cached
    /// key and value row is read once; a long context is split into spans whose partial
    /// softmaxes merge. Units are shared among the pool's threads in contiguous runs when the
    /// scores to compute are many enough to repay the hand-off (long contexts, prefill).
    fn attend(
        &self,
        pool: &Pool,
        q: &[f32],
        n: usize,
        pos0: usize,
        cache: &KvCache,
        layer: usize,
    ) -> Vec<f32> {
        let q_dim = self.num_heads * self.head_dim;
        let units: Vec<(usize, Range<usize>)> = (0..n)
            .flat_map(|t| {
                let pos = pos0 + t;
                let first = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                spans(first..pos + 1, MIN_SPAN, MAX_SPANS)
                    .into_iter()
                    .map(move |s| (t, s))
            })
            .collect();
        let keys: usize = units.iter().map(|(_, s)| s.len()).sum::<usize>() * q_dim;
        let runs = if keys < PARALLEL_KEYS {
            1
        } else {
            units.len().min(pool.threads() * 4)
        };
        let per_run = units.len().div_ceil(runs.max(1));
        let heads = Heads {
            heads: self.num_heads,
            kv_heads: self.num_kv_heads,
            dim: self.head_dim,
        };
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let parts = Mutex::new(Vec::with_capacity(units.len()));
        pool.parallel_for(units.len().div_ceil(per_run), |run| {
            let first = run * per_run;
            let done: Vec<(usize, Partial)> = (first..(first + per_run).min(units.len()))
                .map(|u| {
                    let (t, span) = &units[u];
                    let qt = &q[t * q_dim..][..q_dim];
                    (
                        u,
                        Partial::over(qt, heads, scale, cache, layer, span.clone()),
                    )
                })
                .collect();
            parts.lock().unwrap_or_else(|p| p.into_inner()).extend(done);
        });
        let mut parts = parts.into_inner().unwrap_or_else(|p| p.into_inner());
        parts.sort_unstable_by_key(|(u, _)| *u);
        let parts: Vec<Partial> = parts.into_iter().map(|(_, p)| p).collect();
        // Units are in token order: each token's spans are a run of them.
        let mut out = Vec::with_capacity(n * q_dim);
        let mut start = 0;
        for t in 0..n {
            let end = start + units[start..].iter().take_while(|(u, _)| *u == t).count();
            let sinks = self.sinks.as_deref();
            out.extend(Partial::merge(&parts[start..end], sinks, self.head_dim));
            start = end;
        }
        out
    }
}

/// Positions below which a token's context is not split into spans.
const MIN_SPAN: usize = 64;
/// The most spans a token's context is split into. Fixed rather than taken from the pool's
/// threads, so that a result does not depend on how many threads computed it.
const MAX_SPANS: usize = 8;

/// Scores times head width below which attention runs on the calling
/// thread: handing out fewer costs more than it saves.
const PARALLEL_KEYS: usize = 1 << 16;
