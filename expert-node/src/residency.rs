//! Which held experts are in host memory. The hot set (chosen by `hot_set::choose` within the
//! `--host-memory` budget) stays resident as copies of the shard payloads; every other held expert
//! stays on the RAM disk and is read from its shard when a batch needs it (on the compute thread)
//! or when it is staged ahead of use (on the staging thread). Uses are counted per (layer, expert,
//! format), one per batch that ran it, and halved every `AGING_BATCHES` batches so the set follows
//! the traffic; the set is chosen again after a batch that read a cold expert and when a prefetch
//! hint pins experts. The lock is never held during IO or compute.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::hot_set::{self, Budget, Candidate};
use crate::shard::{ShardError, ShardKey};
use crate::store::Catalog;
use crate::work::{ExpertSet, LayerWork, PrecisionPair, WorkError};

/// Batches between two halvings of the use counts.
pub const AGING_BATCHES: u64 = 1024;

pub struct Residency {
    /// Replaced whole when the node's assignment changes; readers keep the one they took.
    catalog: RwLock<Arc<Catalog>>,
    budget: Budget,
    state: Mutex<State>,
    cold_loads: AtomicU64,
    staged_loads: AtomicU64,
}

struct State {
    resident: ExpertSet,
    /// The last choice; `resident` is always a subset of it.
    hot: BTreeSet<ShardKey>,
    uses: HashMap<ShardKey, u64>,
    pinned: HashSet<ShardKey>,
    batches: u64,
}

/// The experts one batch runs on, and what reading its cold ones cost.
pub struct Batch {
    pub experts: ExpertSet,
    /// Experts read from the RAM disk for this batch.
    pub loaded: Vec<ShardKey>,
    pub load_time: Duration,
}

/// Residency as `Info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub hot_bytes: u64,
    pub hot: usize,
    pub cold: usize,
    /// Experts read on the request path.
    pub cold_loads: u64,
    /// Experts read ahead of use by the staging thread.
    pub staged_loads: u64,
}

impl Residency {
    /// `resident` must hold only experts of `catalog`, within `budget` (as `store::open` returns).
    pub fn new(catalog: Catalog, budget: Budget, resident: ExpertSet) -> Residency {
        let hot = resident.keys().collect();
        Residency {
            catalog: RwLock::new(Arc::new(catalog)),
            budget,
            state: Mutex::new(State {
                resident,
                hot,
                uses: HashMap::new(),
                pinned: HashSet::new(),
                batches: 0,
            }),
            cold_loads: AtomicU64::new(0),
            staged_loads: AtomicU64::new(0),
        }
    }

    /// The experts held now.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Holds `catalog`'s experts from now on: experts it no longer lists leave memory and their
    /// counts are forgotten; new ones start cold.
    pub fn set_catalog(&self, catalog: Catalog) {
        let mut state = self.state();
        state.resident.retain(|key| catalog.contains(key));
        state.hot.retain(|key| catalog.contains(*key));
        state.uses.retain(|key, _| catalog.contains(*key));
        state.pinned.retain(|key| catalog.contains(*key));
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock: a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The experts `work` needs: resident ones shared, cold ones read from their shards on the
    /// caller's thread.
    pub fn gather(&self, work: &LayerWork, pair: PrecisionPair) -> Result<Batch, WorkError> {
        let mut experts = ExpertSet::new(self.catalog().hidden());
        let mut cold = Vec::new();
        {
            let state = self.state();
            for key in work.keys(pair) {
                match state.resident.shared(key) {
                    Some(e) => experts.insert_shared(key, e),
                    None if self.catalog().contains(key) => cold.push(key),
                    None => {}
                }
            }
        }
        let started = Instant::now();
        for &key in &cold {
            let weights = self
                .catalog()
                .read(key)
                .map_err(|e| WorkError::Shard(e.to_string()))?;
            experts.insert_shared(key, Arc::new(weights));
        }
        self.cold_loads
            .fetch_add(cold.len() as u64, Ordering::Relaxed);
        Ok(Batch {
            experts,
            loaded: cold,
            load_time: started.elapsed(),
        })
    }

    /// Records that `batch` ran: counts its uses, and when it read cold experts chooses the hot
    /// set again (keeping the ones just read if they made it). Returns chosen experts that are
    /// not resident yet, for the staging thread.
    pub fn record(&self, batch: Batch) -> Vec<ShardKey> {
        let mut state = self.state();
        for key in batch.experts.keys() {
            *state.uses.entry(key).or_default() += 1;
            state.pinned.remove(&key);
        }
        state.batches += 1;
        if state.batches.is_multiple_of(AGING_BATCHES) {
            state.uses.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
            state.pinned.clear();
        }
        if batch.loaded.is_empty() {
            return Vec::new();
        }
        self.choose(&mut state, &batch.experts)
    }

    /// Pins experts a prefetch hint named until a batch uses them, and chooses again. Returns
    /// chosen experts that are not resident yet, for the staging thread.
    pub fn pin(&self, keys: &[ShardKey]) -> Vec<ShardKey> {
        let mut state = self.state();
        let before = state.pinned.len();
        state
            .pinned
            .extend(keys.iter().filter(|&&k| self.catalog().contains(k)));
        let unstaged = keys.iter().any(|&k| !state.resident.contains(k));
        if state.pinned.len() == before && !unstaged {
            return Vec::new();
        }
        self.choose(&mut state, &ExpertSet::new(self.catalog().hidden()))
    }

    /// Reads `key` into memory if it is chosen and not resident yet; whether it did.
    pub fn stage(&self, key: ShardKey) -> Result<bool, ShardError> {
        {
            let state = self.state();
            if !state.hot.contains(&key) || state.resident.contains(key) {
                return Ok(false);
            }
        }
        let weights = Arc::new(self.catalog().read(key)?);
        let mut state = self.state();
        if !state.hot.contains(&key) || state.resident.contains(key) {
            return Ok(false);
        }
        state.resident.insert_shared(key, weights);
        self.staged_loads.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        let hot = state.resident.len();
        Snapshot {
            hot_bytes: state.resident.weight_bytes() as u64,
            hot,
            cold: self.catalog().len() - hot,
            cold_loads: self.cold_loads.load(Ordering::Relaxed),
            staged_loads: self.staged_loads.load(Ordering::Relaxed),
        }
    }

    /// Chooses the hot set from the current counts; keeps the chosen ones among `resident` and
    /// `fresh` (experts just read), drops the rest, returns the chosen ones still to read.
    fn choose(&self, state: &mut State, fresh: &ExpertSet) -> Vec<ShardKey> {
        let candidates: Vec<Candidate> = self
            .catalog()
            .experts()
            .map(|(key, bytes)| Candidate {
                key,
                bytes,
                uses: state.uses.get(&key).copied().unwrap_or(0),
                pinned: state.pinned.contains(&key),
                resident: state.resident.contains(key) || fresh.contains(key),
            })
            .collect();
        let hot = hot_set::choose(&candidates, self.budget);
        state.resident.retain(|key| hot.contains(&key));
        for key in fresh.keys().filter(|k| hot.contains(k)) {
            if let (false, Some(weights)) = (state.resident.contains(key), fresh.shared(key)) {
                state.resident.insert_shared(key, weights);
            }
        }
        let missing = hot
            .iter()
            .copied()
            .filter(|&k| !state.resident.contains(k))
            .collect();
        state.hot = hot;
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::ExpertSelection;
    use crate::store;
    use crate::work::{LayerWork, Precision};
    use moe_kernels::Format;

    /// One format per expert keeps the sizes in these tests equal.
    const PAIR: PrecisionPair = PrecisionPair {
        high: Format::F16,
        low: Format::F16,
    };

    fn fixture() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mixtral")
    }

    /// Layer 0, experts 0-3 at f16, with room for `f16_copies` of them.
    fn residency(f16_copies: u64) -> (tempfile::TempDir, Residency, u64) {
        let dir = tempfile::tempdir().unwrap();
        let selection: ExpertSelection = "0:0-3".parse().unwrap();
        let f16_bytes = crate::shard::payload_bytes(Format::F16, 64, 128) as u64;
        let budget = Budget::Bytes(f16_copies * f16_bytes);
        let (catalog, resident, _) =
            store::open(&fixture(), dir.path(), &selection, PAIR, budget).unwrap();
        (dir, Residency::new(catalog, budget, resident), f16_bytes)
    }

    fn work(expert: u32) -> LayerWork {
        LayerWork::from_pairs(0, 1, vec![0.5; 64], [(0, expert, 1.0)], Precision::High)
    }

    fn key(expert: u32) -> ShardKey {
        ShardKey {
            layer: 0,
            expert,
            format: Format::F16,
        }
    }

    #[test]
    fn a_cold_expert_is_read_then_kept_once_it_is_used_most() {
        let (_dir, r, f16_bytes) = residency(2);
        let start = r.snapshot();
        assert_eq!((start.hot, start.cold), (2, 2));
        assert_eq!(start.hot_bytes, 2 * f16_bytes);

        let batch = r.gather(&work(3), PAIR).unwrap();
        assert_eq!(batch.loaded, vec![key(3)]);
        assert_eq!(r.record(batch), Vec::<ShardKey>::new());
        let after = r.snapshot();
        assert_eq!((after.hot, after.cold_loads), (2, 1));
        assert!(r.state().resident.contains(key(3)));
        assert!(after.hot_bytes <= 2 * f16_bytes);

        let batch = r.gather(&work(3), PAIR).unwrap();
        assert!(batch.loaded.is_empty(), "expert 3 is resident now");
        r.record(batch);
        assert_eq!(r.snapshot().cold_loads, 1);
    }

    #[test]
    fn a_pin_chooses_the_hinted_expert_and_staging_reads_it() {
        let (_dir, r, _) = residency(2);
        let to_stage = r.pin(&[key(2)]);
        assert_eq!(to_stage, vec![key(2)]);
        assert!(r.stage(key(2)).unwrap());
        assert!(!r.stage(key(2)).unwrap(), "already resident");
        let s = r.snapshot();
        assert_eq!((s.hot, s.staged_loads), (2, 1));
        assert!(r.state().resident.contains(key(2)));
        assert!(!r.stage(key(1)).unwrap(), "not chosen: not read");
    }

    #[test]
    fn counts_age_so_the_hot_set_follows_the_traffic() {
        let (_dir, r, _) = residency(1);
        for _ in 0..3 {
            let batch = r.gather(&work(1), PAIR).unwrap();
            r.record(batch);
        }
        assert_eq!(r.state().uses[&key(1)], 3);
        while r.state().batches % AGING_BATCHES != AGING_BATCHES - 1 {
            let batch = r.gather(&work(1), PAIR).unwrap();
            r.record(batch);
        }
        let used = r.state().uses[&key(1)] + 1;
        let batch = r.gather(&work(1), PAIR).unwrap();
        r.record(batch);
        assert_eq!(r.state().uses[&key(1)], used / 2, "halved at the boundary");
    }

    #[test]
    fn a_new_catalog_adds_cold_experts_and_forgets_released_ones() {
        let (_dir, r, _) = residency(4);
        let (grown, report) = r.catalog().extend(&fixture(), &[key(5), key(1)]).unwrap();
        assert_eq!(
            (report.built, report.mapped),
            (1, 0),
            "expert 1 is held already"
        );
        r.set_catalog(grown.without(&[key(0)]));
        let s = r.snapshot();
        assert_eq!((s.hot, s.cold), (3, 1));
        assert!(!r.catalog().contains(key(0)));
        assert!(!r.state().uses.contains_key(&key(0)));
        let batch = r.gather(&work(5), PAIR).unwrap();
        assert_eq!(batch.loaded, vec![key(5)]);

        let dense = ShardKey { layer: 9, ..key(0) };
        let refused = r.catalog().extend(&fixture(), &[dense]).unwrap_err();
        assert!(
            refused.to_string().contains("layer 9 expert 0"),
            "{refused}"
        );
    }
}
