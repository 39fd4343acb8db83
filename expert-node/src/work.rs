//! One MoE layer's work on this node, as the pure core of the request path: validate a batch
//! (known experts, row indices in range, one weight per row), run each requested expert once on
//! all of its rows, and return per token the gate-weighted sum of the experts' outputs. No IO.

use std::collections::HashMap;
use std::sync::Arc;

use moe_kernels::{Format, KernelError, Pool};
use moe_model::moe::Expert;

use crate::epoch::StaleEpoch;
use crate::shard::ShardKey;

/// The precision a pair asks for: the node's high or low copy, or a named format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    High,
    Low,
    Exact(Format),
}

pub use moe_model::precision::PrecisionPair;

impl Precision {
    /// The format this precision names on a node with `pair`.
    pub fn format(self, pair: PrecisionPair) -> Format {
        match self {
            Precision::High => pair.high,
            Precision::Low => pair.low,
            Precision::Exact(f) => f,
        }
    }
}

/// The rows of a batch routed to one expert.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertRows {
    pub expert: u32,
    pub rows: Vec<u32>,
    pub weights: Vec<f32>,
    pub precision: Precision,
    /// The smallest HOBBIT unimportance of the rows (0 when one of them is a token's top expert):
    /// the group may be served at low precision only when every row may.
    pub unimportance: f32,
}

/// One layer's work: `tokens` is `[n, hidden]`, every token row once.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWork {
    pub layer: u32,
    pub n_tokens: usize,
    pub tokens: Vec<f32>,
    pub experts: Vec<ExpertRows>,
}

impl LayerWork {
    /// HOBBIT's rule on a node's own compute queue: with the queue backed up, every group asked
    /// for at high precision whose rows are all above `t1` (a request opted out sends no scores,
    /// so 0) runs at low precision instead. The number of groups downgraded.
    pub fn downgrade_unimportant(&mut self, t1: f32) -> usize {
        let mut downgraded = 0;
        for group in &mut self.experts {
            if group.precision == Precision::High && group.unimportance > t1 {
                group.precision = Precision::Low;
                downgraded += 1;
            }
        }
        downgraded
    }

    /// The work for `(token, expert, gate weight)` pairs, grouped by expert in id order, every
    /// pair at `precision`.
    pub fn from_pairs(
        layer: u32,
        n_tokens: usize,
        tokens: Vec<f32>,
        pairs: impl IntoIterator<Item = (u32, u32, f32)>,
        precision: Precision,
    ) -> LayerWork {
        let mut experts: std::collections::BTreeMap<u32, ExpertRows> =
            std::collections::BTreeMap::new();
        for (token, expert, weight) in pairs {
            let rows = experts.entry(expert).or_insert_with(|| ExpertRows {
                expert,
                rows: Vec::new(),
                weights: Vec::new(),
                precision,
                unimportance: 0.0,
            });
            rows.rows.push(token);
            rows.weights.push(weight);
        }
        LayerWork {
            layer,
            n_tokens,
            tokens,
            experts: experts.into_values().collect(),
        }
    }

    /// The (layer, expert, format) of every expert group, in order; an expert whose rows ask for
    /// two precisions appears once per format.
    pub fn keys(&self, pair: PrecisionPair) -> impl Iterator<Item = ShardKey> + '_ {
        self.experts.iter().map(move |e| ShardKey {
            layer: self.layer,
            expert: e.expert,
            format: e.precision.format(pair),
        })
    }

    /// Checks the work completely against a node with `hidden`-wide rows that holds what `holds`
    /// says, before any compute, so a bad batch costs nothing.
    pub fn validate(
        &self,
        pair: PrecisionPair,
        hidden: usize,
        holds: impl Fn(ShardKey) -> bool,
    ) -> Result<(), WorkError> {
        if Some(self.tokens.len()) != self.n_tokens.checked_mul(hidden) {
            return Err(WorkError::TokenShape {
                n_tokens: self.n_tokens,
                hidden,
                got: self.tokens.len(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (e, key) in self.experts.iter().zip(self.keys(pair)) {
            if !seen.insert(key) {
                return Err(WorkError::Duplicate {
                    expert: e.expert,
                    format: key.format,
                });
            }
            if !holds(key) {
                return Err(WorkError::NotHeld {
                    layer: self.layer,
                    expert: e.expert,
                    format: key.format,
                });
            }
            if e.rows.len() != e.weights.len() {
                return Err(WorkError::WeightCount {
                    expert: e.expert,
                    rows: e.rows.len(),
                    weights: e.weights.len(),
                });
            }
            if let Some(&row) = e.rows.iter().find(|&&r| r as usize >= self.n_tokens) {
                return Err(WorkError::RowOutOfRange {
                    expert: e.expert,
                    row,
                    n_tokens: self.n_tokens,
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkError {
    #[error("layer {layer} expert {expert} at {format} is not held by this node")]
    NotHeld {
        layer: u32,
        expert: u32,
        format: Format,
    },
    #[error("expert {expert}: row {row} is out of range for {n_tokens} tokens")]
    RowOutOfRange {
        expert: u32,
        row: u32,
        n_tokens: usize,
    },
    #[error("expert {expert}: {rows} rows but {weights} gate weights")]
    WeightCount {
        expert: u32,
        rows: usize,
        weights: usize,
    },
    #[error("expert {expert} at {format} is listed twice")]
    Duplicate { expert: u32, format: Format },
    #[error("tokens hold {got} values, expected {n_tokens} x {hidden}")]
    TokenShape {
        n_tokens: usize,
        hidden: usize,
        got: usize,
    },
    #[error(transparent)]
    StaleEpoch(#[from] StaleEpoch),
    #[error("reading a cold expert from the RAM disk: {0}")]
    Shard(String),
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("expert: {0}")]
    Expert(String),
}

/// Experts in memory, by (layer, expert, format); shared, so a batch can run on the node's
/// resident experts while they stay resident.
#[derive(Debug, Default)]
pub struct ExpertSet {
    hidden: usize,
    experts: HashMap<ShardKey, Arc<Expert>>,
}

impl ExpertSet {
    pub fn new(hidden: usize) -> ExpertSet {
        ExpertSet {
            hidden,
            experts: HashMap::new(),
        }
    }

    /// Adds the expert `key` names; `key.format` is the format it was asked for, which its
    /// matrices are in unless a width did not fit it (`Expert::formats_at`).
    pub fn insert(&mut self, key: ShardKey, weights: Expert) {
        self.experts.insert(key, Arc::new(weights));
    }

    /// Adds an expert another set holds too, under the same key.
    pub fn insert_shared(&mut self, key: ShardKey, weights: Arc<Expert>) {
        self.experts.insert(key, weights);
    }

    pub fn get(&self, layer: u32, expert: u32, format: Format) -> Option<&Expert> {
        self.experts
            .get(&ShardKey {
                layer,
                expert,
                format,
            })
            .map(|e| &**e)
    }

    /// The expert at `key`, to share with another set.
    pub fn shared(&self, key: ShardKey) -> Option<Arc<Expert>> {
        self.experts.get(&key).cloned()
    }

    pub fn contains(&self, key: ShardKey) -> bool {
        self.experts.contains_key(&key)
    }

    /// Drops every expert `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(ShardKey) -> bool) {
        self.experts.retain(|&key, _| keep(key));
    }

    /// Every (layer, expert, format) in the set.
    pub fn keys(&self) -> impl Iterator<Item = ShardKey> + '_ {
        self.experts.keys().copied()
    }

    /// Bytes of all weights in the set.
    pub fn weight_bytes(&self) -> usize {
        self.experts.values().map(|e| e.weight_bytes()).sum()
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn len(&self) -> usize {
        self.experts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.experts.is_empty()
    }

    /// The precision each of `work`'s groups runs at on the CPU: its expert's
    /// (`Expert::precision`), which is the one asked for unless a matrix fell back to a wider
    /// format; the one asked for where the set lacks the expert.
    pub fn used(&self, work: &LayerWork, pair: PrecisionPair) -> Vec<Format> {
        work.experts
            .iter()
            .map(|e| {
                let asked = e.precision.format(pair);
                self.get(work.layer, e.expert, asked)
                    .map_or(asked, Expert::precision)
            })
            .collect()
    }

    /// Checks `work` completely against the experts in this set, before any compute.
    pub fn validate(&self, work: &LayerWork, pair: PrecisionPair) -> Result<(), WorkError> {
        work.validate(pair, self.hidden, |key| self.contains(key))
    }

    /// Runs `work`: each expert once on all of its rows; returns `[n_tokens, hidden]` weighted sums.
    pub fn execute(
        &self,
        work: &LayerWork,
        pair: PrecisionPair,
        pool: &Pool,
    ) -> Result<Vec<f32>, WorkError> {
        let hidden = self.hidden;
        let mut out = vec![0.0; work.n_tokens * hidden];
        self.run_groups(work, pair, pool, |e, y| {
            for ((&r, &w), yr) in e.rows.iter().zip(&e.weights).zip(y.chunks_exact(hidden)) {
                let r = r as usize;
                for (o, v) in out[r * hidden..(r + 1) * hidden].iter_mut().zip(yr) {
                    *o += w * v;
                }
            }
        })?;
        Ok(out)
    }

    /// Runs `work` like [`ExpertSet::execute`] but returns every pair's unweighted output,
    /// `[n_pairs, hidden]`: the groups in order, each group's rows in order. The caller adds
    /// them up in whatever order it must reproduce.
    pub fn execute_pairs(
        &self,
        work: &LayerWork,
        pair: PrecisionPair,
        pool: &Pool,
    ) -> Result<Vec<f32>, WorkError> {
        let pairs: usize = work.experts.iter().map(|e| e.rows.len()).sum();
        let mut out = Vec::with_capacity(pairs * self.hidden);
        self.run_groups(work, pair, pool, |_, y| out.extend_from_slice(y))?;
        Ok(out)
    }

    /// Validates `work`, then runs each group's expert once on all of its rows and hands the
    /// outputs (`[rows, hidden]`) to `take`, group by group in order.
    fn run_groups(
        &self,
        work: &LayerWork,
        pair: PrecisionPair,
        pool: &Pool,
        mut take: impl FnMut(&ExpertRows, &[f32]),
    ) -> Result<(), WorkError> {
        self.validate(work, pair)?;
        let hidden = self.hidden;
        let mut x = Vec::new();
        for e in &work.experts {
            if e.rows.is_empty() {
                continue;
            }
            let format = e.precision.format(pair);
            let expert = self
                .get(work.layer, e.expert, format)
                .ok_or(WorkError::NotHeld {
                    layer: work.layer,
                    expert: e.expert,
                    format,
                })?;
            x.clear();
            for &r in &e.rows {
                let r = r as usize;
                x.extend_from_slice(&work.tokens[r * hidden..(r + 1) * hidden]);
            }
            let y = expert
                .forward(pool, &x, e.rows.len())
                .map_err(|err| WorkError::Expert(err.to_string()))?;
            take(e, &y);
        }
        Ok(())
    }
}
