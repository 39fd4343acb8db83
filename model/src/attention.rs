//! Grouped-query causal self-attention of one decoder layer: q/k/v projections (+ bias), optional
//! q/k RMSNorm (per head or over the whole projection), optional clipping, RoPE, the KV cache, an
//! optional sliding window, optional attention sinks (a learned logit per head that joins the
//! softmax's denominator and takes no value, gpt-oss), and the output projection.

use moe_kernels::{Format, Pool};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::layout::{Layout, Projection};
use crate::linear::Linear;
use crate::ops::{dot, rms_norm, softmax, softmax_with_sink};
use crate::rope::Rope;

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

        let group = self.num_heads / self.num_kv_heads;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let mut out = vec![0.0; n * q_dim];
        let mut scores = Vec::new();
        for t in 0..n {
            let pos = pos0 + t;
            let first = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for head in 0..self.num_heads {
                let kv_off = (head / group) * self.head_dim;
                let qh = &q[t * q_dim + head * self.head_dim..][..self.head_dim];
                scores.clear();
                scores.extend((first..=pos).map(|j| {
                    let kh = &cache.key(layer, j)[kv_off..][..self.head_dim];
                    dot(qh, kh) * scale
                }));
                match &self.sinks {
                    Some(sinks) => softmax_with_sink(&mut scores, sinks[head]),
                    None => softmax(&mut scores),
                }
                let oh = &mut out[t * q_dim + head * self.head_dim..][..self.head_dim];
                for (j, &w) in (first..=pos).zip(&scores) {
                    let vh = &cache.value(layer, j)[kv_off..][..self.head_dim];
                    for (o, x) in oh.iter_mut().zip(vh) {
                        *o += w * x;
                    }
                }
            }
        }
        self.o.forward(pool, &out, n)
    }
}
