//! The index arrays of one MoE layer's batch, as the GPU expert kernels (`cuda/experts.cu`) read
//! them: pairs grouped by expert, and for every token the pairs whose outputs it adds up.
//!
//! Pure bookkeeping, shared by the CUDA backend and the CPU emulation tests of the kernels.

use crate::error::KernelError;

/// One expert's share of a batch: the token rows routed to it and their gate weights.
#[derive(Debug, Clone, Copy)]
pub struct ExpertPairs<'a> {
    pub rows: &'a [u32],
    pub weights: &'a [f32],
}

/// A batch of (token, expert, gate weight) pairs in the kernels' layout. Pair `p` is the
/// `p`-th pair counting through the experts in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertBatch {
    /// `pair_offsets[e]..pair_offsets[e + 1]` are expert `e`'s pairs.
    pub pair_offsets: Vec<i32>,
    /// The token row of each pair.
    pub pair_rows: Vec<i32>,
    /// The gate weight of each pair.
    pub pair_weights: Vec<f32>,
    /// `token_offsets[t]..token_offsets[t + 1]` index `token_pairs` for token `t`.
    pub token_offsets: Vec<i32>,
    /// Pair indices by token; a token's pairs in expert order, the order its sum is taken in.
    pub token_pairs: Vec<i32>,
}

impl ExpertBatch {
    /// Lays out `experts` for `n_tokens` token rows. Refuses rows out of range, a weight count
    /// that differs from the row count, and counts that do not fit the kernels' `int` indices.
    pub fn new(n_tokens: usize, experts: &[ExpertPairs<'_>]) -> Result<ExpertBatch, KernelError> {
        let n_pairs: usize = experts.iter().map(|e| e.rows.len()).sum();
        let limit = i32::MAX as usize;
        if n_pairs > limit || n_tokens > limit || experts.len() > limit {
            return Err(KernelError::TooLarge {
                rows: n_tokens,
                cols: n_pairs,
            });
        }
        let mut pair_offsets = Vec::with_capacity(experts.len() + 1);
        let mut pair_rows = Vec::with_capacity(n_pairs);
        let mut pair_weights = Vec::with_capacity(n_pairs);
        let mut per_token = vec![0i32; n_tokens + 1];
        pair_offsets.push(0);
        for e in experts {
            if e.weights.len() != e.rows.len() {
                return Err(KernelError::ShapeMismatch {
                    what: "gate weights (one per row)",
                    expected: e.rows.len(),
                    got: e.weights.len(),
                });
            }
            for &row in e.rows {
                if row as usize >= n_tokens {
                    return Err(KernelError::RowOutOfRange {
                        row: row as usize,
                        rows: n_tokens,
                    });
                }
                per_token[row as usize + 1] += 1;
                pair_rows.push(row as i32);
            }
            pair_weights.extend_from_slice(e.weights);
            pair_offsets.push(pair_rows.len() as i32);
        }
        for t in 0..n_tokens {
            per_token[t + 1] += per_token[t];
        }
        let token_offsets = per_token;
        let mut next = token_offsets.clone();
        let mut token_pairs = vec![0i32; n_pairs];
        for (p, &row) in pair_rows.iter().enumerate() {
            let slot = &mut next[row as usize];
            token_pairs[*slot as usize] = p as i32;
            *slot += 1;
        }
        Ok(ExpertBatch {
            pair_offsets,
            pair_rows,
            pair_weights,
            token_offsets,
            token_pairs,
        })
    }

    pub fn n_pairs(&self) -> usize {
        self.pair_rows.len()
    }

    pub fn n_experts(&self) -> usize {
        self.pair_offsets.len() - 1
    }

    pub fn n_tokens(&self) -> usize {
        self.token_offsets.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_pairs_by_expert_and_by_token() {
        let a = ExpertPairs {
            rows: &[2, 0],
            weights: &[0.5, 0.25],
        };
        let b = ExpertPairs {
            rows: &[],
            weights: &[],
        };
        let c = ExpertPairs {
            rows: &[0, 2, 3],
            weights: &[0.75, 0.5, 1.0],
        };
        let batch = ExpertBatch::new(5, &[a, b, c]).unwrap();
        assert_eq!(batch.pair_offsets, [0, 2, 2, 5]);
        assert_eq!(batch.pair_rows, [2, 0, 0, 2, 3]);
        assert_eq!(batch.pair_weights, [0.5, 0.25, 0.75, 0.5, 1.0]);
        // Token 0: pairs 1 (expert a), 2 (expert c); token 1: none; token 2: pairs 0, 3;
        // token 3: pair 4; token 4: none.
        assert_eq!(batch.token_offsets, [0, 2, 2, 4, 5, 5]);
        assert_eq!(batch.token_pairs, [1, 2, 0, 3, 4]);
        assert_eq!(
            (batch.n_pairs(), batch.n_experts(), batch.n_tokens()),
            (5, 3, 5)
        );
    }

    #[test]
    fn refuses_bad_rows_and_weight_counts() {
        let out_of_range = ExpertPairs {
            rows: &[0, 4],
            weights: &[1.0, 1.0],
        };
        assert_eq!(
            ExpertBatch::new(4, &[out_of_range]),
            Err(KernelError::RowOutOfRange { row: 4, rows: 4 })
        );
        let short = ExpertPairs {
            rows: &[0, 1],
            weights: &[1.0],
        };
        assert!(matches!(
            ExpertBatch::new(4, &[short]),
            Err(KernelError::ShapeMismatch { .. })
        ));
    }
}
