//! The hot set: which held experts (per layer, expert and format) stay resident in host memory
//! within the `--host-memory` budget. Pure: sizes, use counts, pins and the budget in, the set out.
//! Where the experts live and when the choice is made again is `residency`'s business.

use std::collections::BTreeSet;

use crate::shard::ShardKey;

/// Bytes of host memory resident experts may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Unlimited,
    Bytes(u64),
}

impl Budget {
    /// The `--host-memory` flag: 0 means no limit.
    pub fn from_flag(bytes: u64) -> Budget {
        match bytes {
            0 => Budget::Unlimited,
            n => Budget::Bytes(n),
        }
    }

    /// As the flag and `NodeInfo.host_memory_bytes` write it: 0 for no limit.
    pub fn as_flag(self) -> u64 {
        match self {
            Budget::Unlimited => 0,
            Budget::Bytes(n) => n,
        }
    }
}

/// One held expert at one format, as the choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub key: ShardKey,
    /// Bytes it takes when resident.
    pub bytes: u64,
    /// Batches that used it, recently.
    pub uses: u64,
    /// Named by a prefetch hint and not used since: about to be needed.
    pub pinned: bool,
    /// In memory now; at equal use it keeps its place, so ties do not churn.
    pub resident: bool,
}

/// The experts to keep resident: pinned ones first, then by use (most first), resident before
/// non-resident at equal use, then in key order; each is taken if it still fits, so an expert too
/// large for what is left does not keep smaller ones out.
pub fn choose(candidates: &[Candidate], budget: Budget) -> BTreeSet<ShardKey> {
    let mut left = match budget {
        Budget::Unlimited => return candidates.iter().map(|c| c.key).collect(),
        Budget::Bytes(n) => n,
    };
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by_key(|c| (std::cmp::Reverse((c.pinned, c.uses, c.resident)), c.key));
    let mut hot = BTreeSet::new();
    for c in order {
        if c.bytes <= left {
            left -= c.bytes;
            hot.insert(c.key);
        }
    }
    hot
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_kernels::Format;

    fn key(expert: u32) -> ShardKey {
        ShardKey {
            layer: 0,
            expert,
            format: Format::Q4,
        }
    }

    fn candidate(expert: u32, bytes: u64, uses: u64) -> Candidate {
        Candidate {
            key: key(expert),
            bytes,
            uses,
            pinned: false,
            resident: false,
        }
    }

    fn experts(set: &BTreeSet<ShardKey>) -> Vec<u32> {
        set.iter().map(|k| k.expert).collect()
    }

    #[test]
    fn the_most_used_experts_fill_the_budget() {
        let all = [
            candidate(0, 100, 1),
            candidate(1, 100, 9),
            candidate(2, 100, 5),
            candidate(3, 100, 0),
        ];
        assert_eq!(experts(&choose(&all, Budget::Bytes(250))), vec![1, 2]);
        assert_eq!(experts(&choose(&all, Budget::Bytes(300))), vec![0, 1, 2]);
        assert_eq!(experts(&choose(&all, Budget::Bytes(99))), Vec::<u32>::new());
        assert_eq!(
            experts(&choose(&all, Budget::Unlimited)),
            vec![0, 1, 2, 3],
            "no limit keeps everything"
        );
    }

    #[test]
    fn an_expert_too_large_for_what_is_left_leaves_room_for_smaller_ones() {
        let all = [
            candidate(0, 300, 9),
            candidate(1, 200, 8),
            candidate(2, 50, 1),
        ];
        assert_eq!(experts(&choose(&all, Budget::Bytes(360))), vec![0, 2]);
    }

    #[test]
    fn pins_come_first_and_ties_keep_the_resident_expert() {
        let mut all = [
            candidate(0, 100, 9),
            candidate(1, 100, 3),
            candidate(2, 100, 3),
        ];
        all[2].pinned = true;
        assert_eq!(experts(&choose(&all, Budget::Bytes(200))), vec![0, 2]);
        all[2].pinned = false;
        assert_eq!(
            experts(&choose(&all, Budget::Bytes(200))),
            vec![0, 1],
            "key order breaks a tie between non-resident experts"
        );
        all[2].resident = true;
        assert_eq!(experts(&choose(&all, Budget::Bytes(200))), vec![0, 2]);
    }

    #[test]
    fn the_flag_zero_means_no_limit() {
        assert_eq!(Budget::from_flag(0), Budget::Unlimited);
        assert_eq!(Budget::from_flag(5), Budget::Bytes(5));
        assert_eq!(Budget::from_flag(5).as_flag(), 5);
        assert_eq!(Budget::Unlimited.as_flag(), 0);
    }
}
