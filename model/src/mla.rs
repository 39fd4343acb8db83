//! Multi-head latent attention (DeepSeek-V2/V3, Kimi K2) as transformers defines it: the query
//! from `q_proj`, or from `q_a_proj` → RMSNorm → `q_b_proj`; one latent vector per position
//! (`kv_a_proj_with_mqa`, split into the `kv_lora_rank` latent, RMS-normalised, and a rope key
//! shared by every head); per head a no-rope and a rope part of the query and key, RoPE on the
//! rope parts only; `kv_b_proj` expanding the latent into each head's no-rope key and value.
//!
//! The cache holds what a position needs and nothing more: its latent and rope key,
//! `kv_lora_rank + qk_rope_head_dim` values (576 for DeepSeek-V3, against 128 heads x 320 for the
//! expanded keys and values). Attention runs in the absorbed form, so a step never expands the
//! cache: `kv_b_proj`'s key half is folded into the query (`q_nope · W_uk c = (W_uk^T q_nope) · c`)
//! and its value half applied after the softmax (`Σ p_j W_uv c_j = W_uv Σ p_j c_j`).

use moe_kernels::{Format, Matrix, Pool};

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, KvWidth};
use crate::layout::{Layout, MlaTensor};
use crate::linear::Linear;
use crate::ops::{dot, rms_norm, softmax};
use crate::rope::Rope;

/// The shape of multi-head latent attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaDims {
    pub heads: usize,
    /// Rank of the query's low-rank projection; `None`: a plain `q_proj`.
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
}

impl MlaDims {
    /// Per head: the no-rope and rope parts of a query or key together.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// What the cache holds per position and layer: the latent and the rope key.
    pub fn latent_width(&self) -> KvWidth {
        KvWidth {
            key: self.kv_lora_rank + self.qk_rope_head_dim,
            value: 0,
        }
    }

    /// What a cache of expanded per-head keys and values would hold per position and layer.
    pub fn expanded_width(&self) -> KvWidth {
        KvWidth {
            key: self.heads * self.qk_head_dim(),
            value: self.heads * self.v_head_dim,
        }
    }
}

/// The query's projection.
#[derive(Debug, Clone)]
enum Query {
    Direct(Linear),
    LowRank {
        a: Linear,
        norm: Vec<f32>,
        b: Linear,
    },
}

/// One layer's multi-head latent attention.
#[derive(Debug, Clone)]
pub struct Mla {
    dims: MlaDims,
    query: Query,
    /// `[kv_lora_rank + qk_rope_head_dim, hidden]`.
    kv_a: Linear,
    kv_norm: Vec<f32>,
    /// `[heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]`: per head its key rows, then
    /// its value rows.
    kv_b: Matrix,
    o: Linear,
    /// The softmax's scale: `qk_head_dim^-0.5`, times YaRN's `mscale^2` where configured.
    scale: f32,
    eps: f32,
}

impl Mla {
    /// Loads layer `layer`'s attention, projections converted to `format` if given (the latent
    /// norms stay as stored).
    pub fn load(
        ckpt: &Checkpoint,
        layout: &Layout<'_>,
        layer: usize,
        (dims, scale, eps): (MlaDims, f32, f32),
        format: Option<Format>,
    ) -> Result<Mla> {
        let linear = |t| Linear::load(ckpt, &[layout.mla(layer, t)], &[], format);
        let query = match dims.q_lora_rank {
            None => Query::Direct(linear(MlaTensor::Q)?),
            Some(_) => Query::LowRank {
                a: linear(MlaTensor::QA)?,
                norm: ckpt.vector(&layout.mla(layer, MlaTensor::QANorm))?,
                b: linear(MlaTensor::QB)?,
            },
        };
        Ok(Mla {
            dims,
            query,
            kv_a: linear(MlaTensor::KvA)?,
            kv_norm: ckpt.vector(&layout.mla(layer, MlaTensor::KvANorm))?,
            kv_b: ckpt.matrix(&layout.mla(layer, MlaTensor::KvB), format)?,
            o: linear(MlaTensor::O)?,
            scale,
            eps,
        })
    }

    /// Bytes of weights read per token.
    pub fn weight_bytes(&self) -> usize {
        let query = match &self.query {
            Query::Direct(q) => q.weight().nbytes(),
            Query::LowRank { a, b, .. } => a.weight().nbytes() + b.weight().nbytes(),
        };
        query + self.kv_a.weight().nbytes() + self.kv_b.nbytes() + self.o.weight().nbytes()
    }

    /// Attends `n` new tokens (`h`, `[n, hidden]`, already normalised) at positions
    /// `cache.len()..cache.len()+n`, appending their latents to the cache of `layer`. Returns
    /// `[n, hidden]`.
    pub fn forward(
        &self,
        pool: &Pool,
        h: &[f32],
        n: usize,
        rope: &Rope,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Vec<f32>> {
        let d = self.dims;
        if cache.width() != d.latent_width() {
            return Err(ModelError::InvalidArgument(format!(
                "layer {layer}: a cache of {:?} per position, not MLA's latent {:?}",
                cache.width(),
                d.latent_width()
            )));
        }
        let mut q = match &self.query {
            Query::Direct(q) => q.forward(pool, h, n)?,
            Query::LowRank { a, norm, b } => {
                let mut low = a.forward(pool, h, n)?;
                rms_norm(&mut low, norm, self.eps);
                b.forward(pool, &low, n)?
            }
        };
        let mut latent = self.kv_a.forward(pool, h, n)?;
        let pos0 = cache.len();
        let width = d.latent_width().key;
        for t in 0..n {
            let row = &mut latent[t * width..(t + 1) * width];
            let (c, k_rope) = row.split_at_mut(d.kv_lora_rank);
            rms_norm(c, &self.kv_norm, self.eps);
            rope.apply(k_rope, d.qk_rope_head_dim, pos0 + t);
            let q_row = &mut q[t * d.heads * d.qk_head_dim()..][..d.heads * d.qk_head_dim()];
            rope.apply_from(q_row, d.qk_head_dim(), d.qk_nope_head_dim, pos0 + t);
        }
        cache.append(layer, &latent, &[]);
        let absorbed = self.absorb_queries(&q, n)?;
        let context = self.attend(&q, &absorbed, n, pos0, cache, layer);
        let out = self.expand_values(&context, n)?;
        self.o.forward(pool, &out, n)
    }

    /// Per token and head, `W_uk^T q_nope` (`kv_lora_rank` values): the query against which a
    /// position's latent is scored directly.
    fn absorb_queries(&self, q: &[f32], n: usize) -> Result<Vec<f32>> {
        let d = self.dims;
        let (rank, qk) = (d.kv_lora_rank, d.qk_head_dim());
        let mut absorbed = vec![0.0; n * d.heads * rank];
        let mut row = vec![0.0; rank];
        for head in 0..d.heads {
            let first = head * (d.qk_nope_head_dim + d.v_head_dim);
            for i in 0..d.qk_nope_head_dim {
                self.kv_b.dequantize_row(first + i, &mut row)?;
                for t in 0..n {
                    let weight = q[(t * d.heads + head) * qk + i];
                    let out = &mut absorbed[(t * d.heads + head) * rank..][..rank];
                    out.iter_mut().zip(&row).for_each(|(o, r)| *o += weight * r);
                }
            }
        }
        Ok(absorbed)
    }

    /// Per token and head, the attention-weighted sum of the latents it sees (causal), scored by
    /// the absorbed no-rope query against the latent plus the rope query against the rope key.
    fn attend(
        &self,
        q: &[f32],
        absorbed: &[f32],
        n: usize,
        pos0: usize,
        cache: &KvCache,
        layer: usize,
    ) -> Vec<f32> {
        let d = self.dims;
        let (rank, qk) = (d.kv_lora_rank, d.qk_head_dim());
        let mut context = vec![0.0; n * d.heads * rank];
        let mut scores = Vec::new();
        for t in 0..n {
            let pos = pos0 + t;
            for head in 0..d.heads {
                let at = t * d.heads + head;
                let q_abs = &absorbed[at * rank..][..rank];
                let q_rope = &q[at * qk + d.qk_nope_head_dim..][..d.qk_rope_head_dim];
                scores.clear();
                scores.extend((0..=pos).map(|j| {
                    let (c, k_rope) = cache.key(layer, j).split_at(rank);
                    (dot(q_abs, c) + dot(q_rope, k_rope)) * self.scale
                }));
                softmax(&mut scores);
                let out = &mut context[at * rank..][..rank];
                for (j, &w) in scores.iter().enumerate() {
                    let c = &cache.key(layer, j)[..rank];
                    out.iter_mut().zip(c).for_each(|(o, x)| *o += w * x);
                }
            }
        }
        context
    }

    /// Per token and head, `W_uv` applied to its latent context: `[n, heads * v_head_dim]`.
    fn expand_values(&self, context: &[f32], n: usize) -> Result<Vec<f32>> {
        let d = self.dims;
        let (rank, v) = (d.kv_lora_rank, d.v_head_dim);
        let mut out = vec![0.0; n * d.heads * v];
        let mut row = vec![0.0; rank];
        for head in 0..d.heads {
            let first = head * (d.qk_nope_head_dim + v) + d.qk_nope_head_dim;
            for i in 0..v {
                self.kv_b.dequantize_row(first + i, &mut row)?;
                for t in 0..n {
                    let at = t * d.heads + head;
                    out[at * v + i] = dot(&row, &context[at * rank..][..rank]);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepseek_v3_caches_576_values_per_layer_instead_of_40960() {
        let dims = MlaDims {
            heads: 128,
            q_lora_rank: Some(1536),
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
        };
        let latent = dims.latent_width();
        let expanded = dims.expanded_width();
        assert_eq!(latent.key + latent.value, 576);
        assert_eq!(expanded.key + expanded.value, 128 * (192 + 128));
        // f32 over the released 61 layers: 137 KiB per token against 9.5 MiB.
        assert_eq!(61 * latent.bytes(), 140_544);
        assert_eq!(61 * expanded.bytes(), 9_994_240);
    }
}
