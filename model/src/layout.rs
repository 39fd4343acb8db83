//! The tensor names and shapes of each architecture's HuggingFace checkpoint: the one place that
//! knows `model.layers.3.block_sparse_moe.experts.5.w1.weight` and friends. The loader asks it what
//! to read and the checkpoint generator what to write; neither spells a name itself.

use crate::arch::Arch;
use crate::config::{FeedForward, ModelConfig, QkNorm};
use crate::mla::MlaDims;
use crate::router::Routing;

/// The shape `Layout::mla` reads for a model without latent attention.
const ZERO_MLA: MlaDims = MlaDims {
    heads: 0,
    q_lora_rank: None,
    kv_lora_rank: 0,
    qk_nope_head_dim: 0,
    qk_rope_head_dim: 0,
    v_head_dim: 0,
};

/// One tensor a checkpoint holds: its HF name and row-major shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn new(name: String, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name,
            shape: shape.to_vec(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The element count, or `None` where it overflows 64 bits.
    pub fn checked_numel(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(u64::try_from(n).ok()?))
    }
}

/// The three matrices of a SwiGLU expert: `down(silu(gate x) * up x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpertMatrix {
    Gate,
    Up,
    Down,
}

impl ExpertMatrix {
    pub const ALL: [ExpertMatrix; 3] = [ExpertMatrix::Gate, ExpertMatrix::Up, ExpertMatrix::Down];

    fn hf_name(self) -> &'static str {
        match self {
            ExpertMatrix::Gate => "gate_proj",
            ExpertMatrix::Up => "up_proj",
            ExpertMatrix::Down => "down_proj",
        }
    }

    fn mixtral_name(self) -> &'static str {
        match self {
            ExpertMatrix::Gate => "w1",
            ExpertMatrix::Down => "w2",
            ExpertMatrix::Up => "w3",
        }
    }

    /// `[rows, cols]` of this matrix for a hidden size and an intermediate size.
    pub fn shape(self, hidden: usize, intermediate: usize) -> [usize; 2] {
        match self {
            ExpertMatrix::Gate | ExpertMatrix::Up => [intermediate, hidden],
            ExpertMatrix::Down => [hidden, intermediate],
        }
    }
}

/// Where a routed expert's weights are in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertTensors {
    /// Gate, up and down, one matrix each (`ExpertMatrix::ALL` order).
    Separate([TensorSpec; 3]),
    /// One slice of a layer's fused expert tensors (gpt-oss).
    Fused(FusedExpert),
}

/// Expert `expert` of a layer's fused tensors: `gate_up` `[experts, hidden, 2 * intermediate]`
/// (input-major, gate and up interleaved by output column), `down` `[experts, intermediate,
/// hidden]`, and their biases `[experts, 2 * intermediate]` and `[experts, hidden]`. An MXFP4
/// checkpoint stores each of the two matrices as `<name>_blocks` and `<name>_scales`, output-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedExpert {
    pub gate_up: TensorSpec,
    pub gate_up_bias: TensorSpec,
    pub down: TensorSpec,
    pub down_bias: TensorSpec,
    pub expert: usize,
}

/// Which attention projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    Q,
    K,
    V,
    O,
}

impl Projection {
    pub const ALL: [Projection; 4] = [Projection::Q, Projection::K, Projection::V, Projection::O];

    fn name(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::O => "o_proj",
        }
    }
}

/// A tensor of multi-head latent attention (DeepSeek-V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlaTensor {
    /// The plain query projection (no q LoRA).
    Q,
    QA,
    QANorm,
    QB,
    KvA,
    KvANorm,
    KvB,
    O,
}

impl MlaTensor {
    /// The tensors a model with or without a q LoRA holds, in checkpoint order.
    pub fn of(q_lora: bool) -> &'static [MlaTensor] {
        use MlaTensor::*;
        match q_lora {
            true => &[QA, QANorm, QB, KvA, KvANorm, KvB, O],
            false => &[Q, KvA, KvANorm, KvB, O],
        }
    }

    fn name(self) -> &'static str {
        match self {
            MlaTensor::Q => "q_proj.weight",
            MlaTensor::QA => "q_a_proj.weight",
            MlaTensor::QANorm => "q_a_layernorm.weight",
            MlaTensor::QB => "q_b_proj.weight",
            MlaTensor::KvA => "kv_a_proj_with_mqa.weight",
            MlaTensor::KvANorm => "kv_a_layernorm.weight",
            MlaTensor::KvB => "kv_b_proj.weight",
            MlaTensor::O => "o_proj.weight",
        }
    }
}

/// Names and shapes for one model configuration.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    cfg: &'a ModelConfig,
}

impl<'a> Layout<'a> {
    pub fn new(cfg: &'a ModelConfig) -> Layout<'a> {
        Layout { cfg }
    }

    fn layer(&self, layer: usize, rest: &str) -> String {
        format!("model.layers.{layer}.{rest}")
    }

    fn moe_prefix(&self) -> &'static str {
        match self.cfg.arch {
            Arch::Mixtral => "block_sparse_moe",
            _ => "mlp",
        }
    }

    /// Whether a layer's experts are stored fused, all in one tensor per projection.
    fn fused_experts(&self) -> bool {
        self.cfg.arch == Arch::GptOss
    }

    pub fn embed_tokens(&self) -> TensorSpec {
        TensorSpec::new(
            "model.embed_tokens.weight".into(),
            &[self.cfg.vocab_size, self.cfg.hidden_size],
        )
    }

    pub fn final_norm(&self) -> TensorSpec {
        TensorSpec::new("model.norm.weight".into(), &[self.cfg.hidden_size])
    }

    /// `None` when the output projection is tied to the embeddings.
    pub fn lm_head(&self) -> Option<TensorSpec> {
        (!self.cfg.tie_word_embeddings).then(|| {
            TensorSpec::new(
                "lm_head.weight".into(),
                &[self.cfg.vocab_size, self.cfg.hidden_size],
            )
        })
    }

    pub fn input_norm(&self, layer: usize) -> TensorSpec {
        TensorSpec::new(
            self.layer(layer, "input_layernorm.weight"),
            &[self.cfg.hidden_size],
        )
    }

    pub fn post_attention_norm(&self, layer: usize) -> TensorSpec {
        TensorSpec::new(
            self.layer(layer, "post_attention_layernorm.weight"),
            &[self.cfg.hidden_size],
        )
    }

    fn projection_dims(&self, p: Projection) -> [usize; 2] {
        let c = self.cfg;
        match p {
            Projection::Q => [c.q_dim(), c.hidden_size],
            Projection::K | Projection::V => [c.kv_dim(), c.hidden_size],
            Projection::O => [c.hidden_size, c.q_dim()],
        }
    }

    pub fn projection(&self, layer: usize, p: Projection) -> TensorSpec {
        let name = self.layer(layer, &format!("self_attn.{}.weight", p.name()));
        TensorSpec::new(name, &self.projection_dims(p))
    }

    /// The projection's bias, when the architecture has one.
    pub fn projection_bias(&self, layer: usize, p: Projection) -> Option<TensorSpec> {
        let biased = match p {
            Projection::O => self.cfg.o_bias,
            _ => self.cfg.qkv_bias,
        };
        biased.then(|| {
            let name = self.layer(layer, &format!("self_attn.{}.bias", p.name()));
            TensorSpec::new(name, &[self.projection_dims(p)[0]])
        })
    }

    /// The q and k norm weights, when the architecture normalises q and k.
    pub fn qk_norms(&self, layer: usize) -> Option<[TensorSpec; 2]> {
        let c = self.cfg;
        let (q, k) = match c.qk_norm {
            QkNorm::None => return None,
            QkNorm::PerHead => (c.head_dim, c.head_dim),
            QkNorm::Full => (c.q_dim(), c.kv_dim()),
        };
        Some([
            TensorSpec::new(self.layer(layer, "self_attn.q_norm.weight"), &[q]),
            TensorSpec::new(self.layer(layer, "self_attn.k_norm.weight"), &[k]),
        ])
    }

    fn router_name(&self) -> &'static str {
        match self.cfg.arch {
            Arch::GptOss => "router",
            _ => "gate",
        }
    }

    pub fn router(&self, layer: usize) -> TensorSpec {
        let rest = format!("{}.{}.weight", self.moe_prefix(), self.router_name());
        TensorSpec::new(
            self.layer(layer, &rest),
            &[self.cfg.num_experts, self.cfg.hidden_size],
        )
    }

    /// The router's own bias, added to its logits (gpt-oss).
    pub fn router_logit_bias(&self, layer: usize) -> Option<TensorSpec> {
        self.fused_experts().then(|| {
            let name = self.layer(layer, "mlp.router.bias");
            TensorSpec::new(name, &[self.cfg.num_experts])
        })
    }

    /// Each head's attention sink logit (gpt-oss).
    pub fn sinks(&self, layer: usize) -> Option<TensorSpec> {
        self.cfg.attention_sinks.then(|| {
            let name = self.layer(layer, "self_attn.sinks");
            TensorSpec::new(name, &[self.cfg.num_heads])
        })
    }

    /// Where routed expert `expert` of `layer` is.
    pub fn routed_expert(&self, layer: usize, expert: usize) -> ExpertTensors {
        if !self.fused_experts() {
            return ExpertTensors::Separate(
                ExpertMatrix::ALL.map(|m| self.expert(layer, expert, m)),
            );
        }
        let [gate_up, gate_up_bias, down, down_bias] = self.fused_tensors(layer);
        ExpertTensors::Fused(FusedExpert {
            gate_up,
            gate_up_bias,
            down,
            down_bias,
            expert,
        })
    }

    /// A layer's fused expert tensors: gate/up, its bias, down, its bias.
    fn fused_tensors(&self, layer: usize) -> [TensorSpec; 4] {
        let c = self.cfg;
        let (e, h, i) = (c.num_experts, c.hidden_size, c.moe_intermediate_size);
        let spec = |rest: &str, shape: &[usize]| {
            TensorSpec::new(self.layer(layer, &format!("mlp.experts.{rest}")), shape)
        };
        [
            spec("gate_up_proj", &[e, h, 2 * i]),
            spec("gate_up_proj_bias", &[e, 2 * i]),
            spec("down_proj", &[e, i, h]),
            spec("down_proj_bias", &[e, h]),
        ]
    }

    /// Every routed expert tensor of a layer.
    fn routed_expert_tensors(&self, layer: usize) -> Vec<TensorSpec> {
        if self.fused_experts() {
            return self.fused_tensors(layer).to_vec();
        }
        (0..self.cfg.num_experts)
            .flat_map(|e| ExpertMatrix::ALL.map(|m| self.expert(layer, e, m)))
            .collect()
    }

    pub fn expert(&self, layer: usize, expert: usize, m: ExpertMatrix) -> TensorSpec {
        let c = self.cfg;
        let rest = match c.arch {
            Arch::Mixtral => format!(
                "block_sparse_moe.experts.{expert}.{}.weight",
                m.mixtral_name()
            ),
            _ => format!("mlp.experts.{expert}.{}.weight", m.hf_name()),
        };
        TensorSpec::new(
            self.layer(layer, &rest),
            &m.shape(c.hidden_size, c.moe_intermediate_size),
        )
    }

    /// The shared expert's matrix, when the architecture has a shared expert (DeepSeek-V3's and
    /// GLM-4.5's `shared_experts`, Qwen2-MoE's `shared_expert`).
    pub fn shared_expert(&self, layer: usize, m: ExpertMatrix) -> Option<TensorSpec> {
        let size = self.cfg.shared_expert_intermediate_size?;
        let module = match self.cfg.shared_expert_gated {
            true => "shared_expert",
            false => "shared_experts",
        };
        let name = self.layer(layer, &format!("mlp.{module}.{}.weight", m.hf_name()));
        Some(TensorSpec::new(name, &m.shape(self.cfg.hidden_size, size)))
    }

    /// The one-row gate whose sigmoid scales the shared expert's output (Qwen2-MoE).
    pub fn shared_expert_gate(&self, layer: usize) -> Option<TensorSpec> {
        self.cfg.shared_expert_intermediate_size?;
        self.cfg.shared_expert_gated.then(|| {
            let name = self.layer(layer, "mlp.shared_expert_gate.weight");
            TensorSpec::new(name, &[1, self.cfg.hidden_size])
        })
    }

    /// The router's `e_score_correction_bias`, added to the scores when choosing experts
    /// (sigmoid routing).
    pub fn router_bias(&self, layer: usize) -> Option<TensorSpec> {
        matches!(self.cfg.routing, Routing::SigmoidGrouped(_)).then(|| {
            let name = self.layer(layer, "mlp.gate.e_score_correction_bias");
            TensorSpec::new(name, &[self.cfg.num_experts])
        })
    }

    /// A tensor of layer `layer`'s multi-head latent attention (DeepSeek-V3); its shape is
    /// empty for a model without.
    pub fn mla(&self, layer: usize, t: MlaTensor) -> TensorSpec {
        let (c, d) = (self.cfg, self.cfg.mla.unwrap_or(ZERO_MLA));
        let (h, heads) = (c.hidden_size, d.heads);
        let q_lora = d.q_lora_rank.unwrap_or(0);
        let shape: &[usize] = match t {
            MlaTensor::Q => &[heads * d.qk_head_dim(), h],
            MlaTensor::QA => &[q_lora, h],
            MlaTensor::QANorm => &[q_lora],
            MlaTensor::QB => &[heads * d.qk_head_dim(), q_lora],
            MlaTensor::KvA => &[d.kv_lora_rank + d.qk_rope_head_dim, h],
            MlaTensor::KvANorm => &[d.kv_lora_rank],
            MlaTensor::KvB => &[heads * (d.qk_nope_head_dim + d.v_head_dim), d.kv_lora_rank],
            MlaTensor::O => &[h, heads * d.v_head_dim],
        };
        TensorSpec::new(self.layer(layer, &format!("self_attn.{}", t.name())), shape)
    }

    /// A dense layer's MLP matrix.
    pub fn dense_mlp(&self, layer: usize, m: ExpertMatrix) -> TensorSpec {
        let name = self.layer(layer, &format!("mlp.{}.weight", m.hf_name()));
        TensorSpec::new(
            name,
            &m.shape(self.cfg.hidden_size, self.cfg.intermediate_size),
        )
    }

    /// The tensors of a layer's attention block, with the norms before and after it.
    fn attention_tensors(&self, layer: usize) -> Vec<TensorSpec> {
        let mut out = vec![self.input_norm(layer)];
        if let Some(d) = self.cfg.mla {
            let tensors = MlaTensor::of(d.q_lora_rank.is_some());
            out.extend(tensors.iter().map(|&t| self.mla(layer, t)));
            out.push(self.post_attention_norm(layer));
            return out;
        }
        for p in Projection::ALL {
            out.push(self.projection(layer, p));
            out.extend(self.projection_bias(layer, p));
        }
        out.extend(self.sinks(layer));
        out.extend(self.qk_norms(layer).into_iter().flatten());
        out.push(self.post_attention_norm(layer));
        out
    }

    /// The shared expert's matrices and gate, when the architecture has a shared expert.
    fn shared_expert_tensors(&self, layer: usize) -> Vec<TensorSpec> {
        let mut out: Vec<TensorSpec> = ExpertMatrix::ALL
            .into_iter()
            .filter_map(|m| self.shared_expert(layer, m))
            .collect();
        out.extend(self.shared_expert_gate(layer));
        out
    }

    /// Every tensor of the checkpoint, in a stable order (embeddings, layers, final norm, head).
    pub fn all(&self) -> Vec<TensorSpec> {
        let c = self.cfg;
        let mut out = vec![self.embed_tokens()];
        for l in 0..c.num_layers {
            out.extend(self.attention_tensors(l));
            match c.feed_forward[l] {
                FeedForward::Dense => out.extend(ExpertMatrix::ALL.map(|m| self.dense_mlp(l, m))),
                FeedForward::Moe => {
                    out.push(self.router(l));
                    out.extend(self.router_logit_bias(l));
                    out.extend(self.router_bias(l));
                    out.extend(self.routed_expert_tensors(l));
                    out.extend(self.shared_expert_tensors(l));
                }
            }
        }
        out.push(self.final_norm());
        out.extend(self.lm_head());
        out
    }

    /// The parameters of every tensor [`Layout::all`] lists, counted from the shapes of one layer
    /// of each kind without listing them; `None` where the count overflows 64 bits.
    pub fn parameter_count(&self) -> Option<u64> {
        let c = self.cfg;
        let sum = |specs: &[TensorSpec]| {
            specs
                .iter()
                .try_fold(0u64, |acc, s| acc.checked_add(s.checked_numel()?))
        };
        let moe_layers = c.moe_layers().count() as u64;
        let dense_layers = c.num_layers as u64 - moe_layers;
        let experts = match self.fused_experts() {
            true => sum(&self.fused_tensors(0))?,
            false => sum(&ExpertMatrix::ALL.map(|m| self.expert(0, 0, m)))?
                .checked_mul(c.num_experts as u64)?,
        };
        let moe = [
            experts,
            self.router(0).checked_numel()?,
            self.router_logit_bias(0)
                .map_or(Some(0), |b| b.checked_numel())?,
            self.router_bias(0).map_or(Some(0), |b| b.checked_numel())?,
            sum(&self.shared_expert_tensors(0))?,
        ];
        let dense = sum(&ExpertMatrix::ALL.map(|m| self.dense_mlp(0, m)))?;
        let per_layer_kind = [
            sum(&self.attention_tensors(0))?.checked_mul(c.num_layers as u64)?,
            moe.into_iter()
                .try_fold(0u64, u64::checked_add)?
                .checked_mul(moe_layers)?,
            dense.checked_mul(dense_layers)?,
        ];
        let mut outer = vec![self.embed_tokens(), self.final_norm()];
        outer.extend(self.lm_head());
        per_layer_kind
            .into_iter()
            .try_fold(sum(&outer)?, u64::checked_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn mixtral_names() {
        let cfg = ModelConfig::from_json(
            &json!({
                "architectures": ["MixtralForCausalLM"], "vocab_size": 32, "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                "num_key_value_heads": 1, "num_local_experts": 2, "num_experts_per_tok": 2
            }),
            Path::new("config.json"),
        )
        .unwrap();
        let l = Layout::new(&cfg);
        let w1 = l.expert(0, 1, ExpertMatrix::Gate);
        assert_eq!(
            w1.name,
            "model.layers.0.block_sparse_moe.experts.1.w1.weight"
        );
        assert_eq!(w1.shape, vec![16, 8]);
        assert_eq!(l.expert(0, 1, ExpertMatrix::Down).shape, vec![8, 16]);
        assert_eq!(
            l.router(0).name,
            "model.layers.0.block_sparse_moe.gate.weight"
        );
        assert_eq!(l.projection(0, Projection::K).shape, vec![4, 8]);
        let all = l.all();
        // embed, 2 norms, 4 projections, router, 2 experts x 3, final norm, lm_head
        assert_eq!(all.len(), 1 + 2 + 4 + 1 + 6 + 1 + 1);
        let counted: usize = all.iter().map(TensorSpec::numel).sum();
        assert_eq!(l.parameter_count(), Some(counted as u64));
    }

    #[test]
    fn qwen2_shared_expert_and_biases() {
        let cfg = ModelConfig::from_json(
            &json!({
                "architectures": ["Qwen2MoeForCausalLM"], "vocab_size": 32, "hidden_size": 8,
                "intermediate_size": 12, "moe_intermediate_size": 4, "shared_expert_intermediate_size": 6,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_experts": 2,
                "num_experts_per_tok": 1, "mlp_only_layers": [1], "tie_word_embeddings": true
            }),
            Path::new("config.json"),
        )
        .unwrap();
        let l = Layout::new(&cfg);
        assert_eq!(
            l.projection_bias(0, Projection::Q).unwrap().name,
            "model.layers.0.self_attn.q_proj.bias"
        );
        assert!(l.projection_bias(0, Projection::O).is_none());
        assert_eq!(
            l.shared_expert(0, ExpertMatrix::Up).unwrap().shape,
            vec![6, 8]
        );
        assert_eq!(l.shared_expert_gate(0).unwrap().shape, vec![1, 8]);
        assert_eq!(l.dense_mlp(1, ExpertMatrix::Down).shape, vec![8, 12]);
        assert!(l.lm_head().is_none());
        let counted: usize = l.all().iter().map(TensorSpec::numel).sum();
        assert_eq!(l.parameter_count(), Some(counted as u64));
        let names: Vec<_> = l.all().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"model.layers.1.mlp.gate_proj.weight".to_string()));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("model.layers.1.mlp.experts"))
        );
    }
}
