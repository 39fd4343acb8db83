//! The whole single-process model: loads every tensor of a checkpoint (experts at a chosen kernel
//! format) and runs the forward pass over a sequence with its KV cache. This is the reference the
//! distributed system is checked against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use moe_kernels::{Format, Matrix, Pool};

use crate::attention::Attention;
use crate::checkpoint::Checkpoint;
use crate::config::{FeedForward, ModelConfig, config_path};
use crate::error::{ModelError, Result};
use crate::fallback;
use crate::kv_cache::{BlockPool, KvCache};
use crate::layout::{ExpertMatrix, Layout};
use crate::mla::Mla;
use crate::moe::{Expert, MoeBlock, RoutedExperts};
use crate::ops::{add_assign, rms_norm};
use crate::rope::{Rope, Yarn};

/// How to load a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Format of every routed expert's matrices; `None` keeps the stored type.
    pub expert_format: Option<Format>,
    /// Format of the dense weights — attention projections, dense MLPs, shared experts and the
    /// output head; `None` keeps the stored type. Embeddings, norms and routers always stay as
    /// stored.
    pub dense_format: Option<Format>,
    /// Per-(layer, expert) formats that take precedence over `expert_format`.
    pub expert_overrides: HashMap<(usize, usize), Format>,
    /// Longest sequence a cache holds; defaults to `max_position_embeddings`.
    pub max_context: Option<usize>,
    /// Leave the routed experts unread: they run elsewhere ([`Model::forward_with`]).
    pub skip_routed_experts: bool,
}

impl LoadOptions {
    pub fn with_expert_format(format: Option<Format>) -> LoadOptions {
        LoadOptions {
            expert_format: format,
            ..LoadOptions::default()
        }
    }

    fn expert_format(&self, layer: usize, expert: usize) -> Option<Format> {
        self.expert_overrides
            .get(&(layer, expert))
            .copied()
            .or(self.expert_format)
    }
}

/// One sequence's part of a batched step ([`Model::forward_batch`]).
pub struct SequenceStep<'a> {
    /// The new tokens, at positions `cache.len()..`.
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub want: Logits,
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's: `[vocab]`.
    Last,
    /// Every position's: `[n, vocab]` (teacher forcing, prompt log-probabilities).
    All,
}

#[derive(Debug, Clone)]
enum FeedForwardBlock {
    Dense(Expert),
    Moe(MoeBlock),
}

/// A layer's self-attention: grouped-query, or multi-head latent (DeepSeek-V3).
#[derive(Debug, Clone)]
enum AttentionBlock {
    Gqa(Attention),
    Mla(Mla),
}

impl AttentionBlock {
    fn load(
        ckpt: &Checkpoint,
        cfg: &ModelConfig,
        layer: usize,
        format: Option<Format>,
    ) -> Result<AttentionBlock> {
        let Some(dims) = cfg.mla else {
            return Ok(AttentionBlock::Gqa(Attention::load(
                ckpt, cfg, layer, format,
            )?));
        };
        let yarn = cfg.rope.yarn.as_ref().map_or(1.0, Yarn::softmax_factor);
        let scale = (dims.qk_head_dim() as f32).powf(-0.5) * yarn;
        let shape = (dims, scale, cfg.rms_norm_eps);
        let mla = Mla::load(ckpt, &Layout::new(cfg), layer, shape, format)?;
        Ok(AttentionBlock::Mla(mla))
    }

    fn weight_bytes(&self) -> usize {
        match self {
            AttentionBlock::Gqa(a) => a.weight_bytes(),
            AttentionBlock::Mla(a) => a.weight_bytes(),
        }
    }

    fn forward(
        &self,
        pool: &Pool,
        h: &[f32],
        n: usize,
        (rope, cache, layer): (&Rope, &mut KvCache, usize),
    ) -> Result<Vec<f32>> {
        match self {
            AttentionBlock::Gqa(a) => a.forward(pool, h, n, rope, cache, layer),
            AttentionBlock::Mla(a) => a.forward(pool, h, n, rope, cache, layer),
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Vec<f32>,
    attention: AttentionBlock,
    post_norm: Vec<f32>,
    feed_forward: FeedForwardBlock,
}

pub struct Model {
    cfg: ModelConfig,
    embed: Matrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None` when tied to the embeddings and kept in their format.
    lm_head: Option<Matrix>,
    rope: Rope,
    max_context: usize,
    pool: Arc<Pool>,
}

impl Model {
    /// Loads `dir` (config.json + safetensors), running matrix products on `pool`.
    pub fn load(dir: &Path, options: &LoadOptions, pool: Arc<Pool>) -> Result<Model> {
        Model::load_counting(dir, options, pool, &mut |_, _| {})
    }

    /// As [`Model::load`], calling `layers_done(done, total)` after each decoder layer is read
    /// (and converted to the formats asked for): the progress of a long load.
    pub fn load_counting(
        dir: &Path,
        options: &LoadOptions,
        pool: Arc<Pool>,
        layers_done: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let cfg = ModelConfig::from_file(&config_path(dir))?;
        let ckpt = Checkpoint::open(dir)?;
        Model::from_checkpoint(cfg, &ckpt, options, pool, layers_done)
    }

    pub fn from_checkpoint(
        cfg: ModelConfig,
        ckpt: &Checkpoint,
        options: &LoadOptions,
        pool: Arc<Pool>,
        layers_done: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let layout = Layout::new(&cfg);
        let total = cfg.num_layers;
        let layers = (0..cfg.num_layers)
            .map(|l| {
                let feed_forward = match cfg.feed_forward[l] {
                    FeedForward::Dense => FeedForwardBlock::Dense(Expert::load(
                        ckpt,
                        ExpertMatrix::ALL.map(|m| layout.dense_mlp(l, m)),
                        options.dense_format,
                    )?),
                    FeedForward::Moe => FeedForwardBlock::Moe(MoeBlock::load(
                        ckpt,
                        &cfg,
                        l,
                        |e| options.expert_format(l, e),
                        options.dense_format,
                        !options.skip_routed_experts,
                    )?),
                };
                let layer = Layer {
                    input_norm: ckpt.vector(&layout.input_norm(l))?,
                    attention: AttentionBlock::load(ckpt, &cfg, l, options.dense_format)?,
                    post_norm: ckpt.vector(&layout.post_attention_norm(l))?,
                    feed_forward,
                };
                layers_done(l + 1, total);
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = ckpt.matrix(&layout.embed_tokens(), None)?;
        let lm_head = match (layout.lm_head(), options.dense_format) {
            (Some(spec), format) => Some(ckpt.matrix(&spec, format)?),
            (None, Some(format)) => Some(embed.convert(fallback::fitted(format, embed.cols()))?),
            (None, None) => None,
        };
        let max_context = options.max_context.unwrap_or(cfg.max_position_embeddings);
        if cfg.num_mtp_layers > 0 {
            tracing::info!(
                layers = cfg.num_mtp_layers,
                "the checkpoint's multi-token-prediction layers are not loaded"
            );
        }
        let r = &cfg.rope;
        let rope = Rope::with(r.rotary_dim, r.theta, r.layout, r.yarn.as_ref());
        Ok(Model {
            embed,
            norm: ckpt.vector(&layout.final_norm())?,
            lm_head,
            rope,
            layers,
            max_context,
            cfg,
            pool,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// An empty cache for one sequence, with a pool of its own for the whole context.
    pub fn new_cache(&self) -> KvCache {
        self.new_cache_in(&self.new_block_pool(self.max_context))
    }

    /// KV memory for `max_positions` positions, in blocks, for caches to share.
    pub fn new_block_pool(&self, max_positions: usize) -> Arc<BlockPool> {
        BlockPool::with_windows(&self.cfg.sliding_window, self.cfg.kv_width(), max_positions)
    }

    /// An empty cache for one sequence, its blocks from `pool`.
    pub fn new_cache_in(&self, pool: &Arc<BlockPool>) -> KvCache {
        KvCache::new(Arc::clone(pool), self.max_context)
    }

    /// The routed experts of `layer`, or `None` for a dense layer.
    pub fn moe_block(&self, layer: usize) -> Option<&MoeBlock> {
        match &self.layers.get(layer)?.feed_forward {
            FeedForwardBlock::Moe(m) => Some(m),
            FeedForwardBlock::Dense(_) => None,
        }
    }

    fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of weights one decode step reads (experts counted at `top_k` of the average expert).
    pub fn active_weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attention.weight_bytes()
                    + match &l.feed_forward {
                        FeedForwardBlock::Dense(e) => e.weight_bytes(),
                        FeedForwardBlock::Moe(m) => m.active_weight_bytes(),
                    }
            })
            .sum();
        let embed_row = self.embed.nbytes() / self.embed.rows();
        layers + self.lm_head().nbytes() + embed_row
    }

    /// Checks token ids against the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            Some(&id) => Err(ModelError::TokenOutOfRange {
                id,
                vocab: self.cfg.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// Embeddings and every decoder layer for each sequence's new tokens; appends to the
    /// caches without advancing them. Attention runs per sequence; the feed-forward blocks run on
    /// every sequence's rows together, so a MoE layer makes one routed-experts call per step.
    /// Routed experts run on `routed`, or in this process when it is `None`.
    fn layers_forward(
        &self,
        steps: &mut [SequenceStep<'_>],
        mut routed: Option<&mut dyn RoutedExperts>,
    ) -> Result<Vec<Vec<f32>>> {
        let hidden = self.cfg.hidden_size;
        let eps = self.cfg.rms_norm_eps;
        let mut xs = Vec::with_capacity(steps.len());
        for step in steps.iter() {
            let mut x = vec![0.0; step.tokens.len() * hidden];
            for (row, &t) in x.chunks_exact_mut(hidden).zip(step.tokens) {
                self.embed.dequantize_row(t as usize, row)?;
            }
            xs.push(x);
        }
        let total: usize = steps.iter().map(|s| s.tokens.len()).sum();
        for (l, layer) in self.layers.iter().enumerate() {
            let mut h_all = Vec::with_capacity(total * hidden);
            for (step, x) in steps.iter_mut().zip(&mut xs) {
                let n = step.tokens.len();
                let mut h = x.clone();
                rms_norm(&mut h, &layer.input_norm, eps);
                let at = (&self.rope, &mut *step.cache, l);
                let a = layer.attention.forward(&self.pool, &h, n, at)?;
                add_assign(x, &a);
                let mut h = x.clone();
                rms_norm(&mut h, &layer.post_norm, eps);
                h_all.extend_from_slice(&h);
            }
            let f = match &layer.feed_forward {
                FeedForwardBlock::Dense(mlp) => mlp.forward(&self.pool, &h_all, total)?,
                FeedForwardBlock::Moe(moe) => match routed.as_deref_mut() {
                    Some(routed) => moe.forward_with(&self.pool, &h_all, total, l, routed)?,
                    None => moe.forward(&self.pool, &h_all, total)?,
                },
            };
            let mut rows = f.chunks_exact(hidden);
            for x in &mut xs {
                for xr in x.chunks_exact_mut(hidden) {
                    let fr = rows.next().expect("one output row per input row");
                    xr.iter_mut().zip(fr).for_each(|(a, b)| *a += b);
                }
            }
        }
        Ok(xs)
    }

    /// Runs `tokens` at positions `cache.len()..`, extending the cache, and returns logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Vec<f32>> {
        self.forward_inner(tokens, cache, want, None)
    }

    /// As [`Model::forward`], with every MoE layer's routed experts run by `routed` (a
    /// cluster's expert nodes); attention, routers, shared experts and the head run here.
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        want: Logits,
        routed: &mut dyn RoutedExperts,
    ) -> Result<Vec<f32>> {
        self.forward_inner(tokens, cache, want, Some(routed))
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        want: Logits,
        routed: Option<&mut dyn RoutedExperts>,
    ) -> Result<Vec<f32>> {
        let mut step = [SequenceStep {
            tokens,
            cache,
            want,
        }];
        let mut logits = self.forward_batch(&mut step, routed)?;
        Ok(logits.pop().expect("one sequence, one result"))
    }

    /// One model step over several sequences: each one's `tokens` at positions
    /// `cache.len()..`, extending its cache; returns each sequence's logits (as its `want`
    /// says), in order. Attention runs per sequence and every MoE layer's routed experts run once
    /// on all sequences' tokens together, on `routed` (a cluster's expert nodes) or here.
    /// A failure leaves every cache as it was.
    pub fn forward_batch(
        &self,
        steps: &mut [SequenceStep<'_>],
        routed: Option<&mut dyn RoutedExperts>,
    ) -> Result<Vec<Vec<f32>>> {
        for step in steps.iter() {
            if step.tokens.is_empty() {
                return Err(ModelError::InvalidArgument(
                    "forward needs at least one token per sequence".into(),
                ));
            }
            self.check_tokens(step.tokens)?;
        }
        let starts: Vec<usize> = steps.iter().map(|s| s.cache.len()).collect();
        for i in 0..steps.len() {
            let n = steps[i].tokens.len();
            if let Err(e) = steps[i].cache.reserve(n) {
                for (step, &pos0) in steps[..i].iter_mut().zip(&starts) {
                    step.cache.truncate(pos0);
                }
                return Err(e);
            }
        }
        let xs = self.layers_forward(steps, routed);
        let xs = match xs {
            Ok(xs) => xs,
            Err(e) => {
                for (step, &pos0) in steps.iter_mut().zip(&starts) {
                    step.cache.truncate(pos0);
                }
                return Err(e);
            }
        };
        let hidden = self.cfg.hidden_size;
        let eps = self.cfg.rms_norm_eps;
        let mut out = Vec::with_capacity(steps.len());
        for (step, mut x) in steps.iter_mut().zip(xs) {
            let n = step.tokens.len();
            step.cache.advance(n);
            let rows = match step.want {
                Logits::Last => &mut x[(n - 1) * hidden..],
                Logits::All => &mut x[..],
            };
            rms_norm(rows, &self.norm, eps);
            let m = rows.len() / hidden;
            let mut logits = vec![0.0; m * self.cfg.vocab_size];
            self.pool.matmul(self.lm_head(), rows, m, &mut logits)?;
            out.push(logits);
        }
        Ok(out)
    }
}
