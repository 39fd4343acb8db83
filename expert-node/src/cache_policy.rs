//! The GPU expert cache policy of an expert node, in the manner of HOBBIT's sequence-level cache:
//! which expert copies stay in GPU memory, which are evicted to make room, and at which precision a
//! miss is loaded. Pure logic: it copies nothing, does no IO and reads no clock (time is the count
//! of accesses in the current sequence). The CUDA backend asks it, then does the copies it names.
//!
//! # Pools
//!
//! Each expert has a high and a low precision copy ([`Tier`]). The two tiers live in separate
//! pools, each with its own byte capacity; an entry is one copy, keyed by (layer, expert, tier),
//! with its size in bytes. Evicting from one pool never frees the other.
//!
//! # Eviction priority
//!
//! When a pool has no room, the unprotected entries with the lowest priority are evicted first:
//!
//! ```text
//! p = w_lru*R/T + w_lfu*F/T + w_lhu*H/T + w_fld*(1 - d/L),   d = (l_i - l_t + L) mod L
//! ```
//!
//! - T: accesses in this sequence so far, the current one included (at least 1);
//! - R: the access number of the expert's last use in this sequence (0 if unused);
//! - F: the expert's uses in this sequence; H: those served at high precision;
//! - l_t: the layer being computed now (that of the latest access), l_i: the entry's layer,
//!   L: the number of layers of the model.
//!
//! R, F and H are the expert's, shared by both of its copies, so that LHU tells an expert the
//! model keeps asking for at high precision from one it mostly runs at low precision.
//!
//! d counts the layer steps from l_t forward to l_i, i.e. how long until l_i is computed again.
//! The current layer scores 1 (its experts are in use during this step), the next layer
//! `1 - 1/L`, the highest of the other layers, and the layer just behind the current one `1/L`,
//! the lowest: it comes back only a whole cycle later. The formula is often written with
//! `(l_t - l_i + L) mod L`; read literally that counts layers *backwards* and would evict the next
//! layer's experts first, the opposite of "farthest layer distance", so the forward distance is used.
//!
//! Every term lies in `[0, 1]`. The records reset per sequence ([`ExpertCache::begin_sequence`]),
//! the resident set does not.
//!
//! # Lookups
//!
//! [`ExpertCache::access`] serves one (token, expert) pair's expert at the cheapest cost: a resident
//! copy costs nothing; a miss costs the bytes of the copy loaded, so a low-precision miss costs
//! `bits_low/bits_high` of a full one. When the host-to-device copy queue is backed up
//! ([`Link::BackedUp`]), a pair whose unimportance score is above T1 is served at low precision:
//! its resident low copy, else a low-precision load. The top expert of a token (score 0) is never
//! downgraded. A pair that wants low precision is served by its low copy, else by a resident high
//! copy, else a low-precision load. A request opted out of downgrades passes a score of 0.
//!
//! `access` applies its decision at once: evicted entries leave the cache and the loaded one is
//! resident when it returns. The caller frees and copies accordingly before running the expert,
//! and calls [`ExpertCache::remove`] if a copy fails.
//!
//! # Prefetch protection
//!
//! [`ExpertCache::prefetch`] loads a predicted expert and protects it from eviction until it
//! serves an access, or until [`ExpertCache::unprotect_all`] (when the predictions are superseded).
//! A load that can only find room by evicting protected entries is refused
//! ([`Decision::NoRoom`]) and changes no resident entry.

use std::collections::HashMap;

/// Which of an expert's two copies: the node's high (f16, q8) or low (q4, q2) precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    High,
    Low,
}

/// One cache entry: one copy of one expert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub layer: u32,
    pub expert: u32,
    pub tier: Tier,
}

impl Key {
    pub fn new(layer: u32, expert: u32, tier: Tier) -> Key {
        Key {
            layer,
            expert,
            tier,
        }
    }
}

/// A byte count per tier: the pools' capacities, or the sizes of an expert's two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierBytes {
    pub high: u64,
    pub low: u64,
}

impl TierBytes {
    pub fn get(&self, tier: Tier) -> u64 {
        match tier {
            Tier::High => self.high,
            Tier::Low => self.low,
        }
    }

    fn get_mut(&mut self, tier: Tier) -> &mut u64 {
        match tier {
            Tier::High => &mut self.high,
            Tier::Low => &mut self.low,
        }
    }
}

/// The weights of the four eviction signals. The default weighs them equally (0.25 each): every
/// term lies in `[0, 1]`, so no signal dominates before profiling says otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Recency: `R/T`.
    pub lru: f64,
    /// Frequency in this sequence: `F/T`.
    pub lfu: f64,
    /// High-precision frequency in this sequence: `H/T`.
    pub lhu: f64,
    /// Cyclic layer distance: `1 - d/L`.
    pub fld: f64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights {
            lru: 0.25,
            lfu: 0.25,
            lhu: 0.25,
            fld: 0.25,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    /// GPU bytes of each pool.
    pub capacity: TierBytes,
    /// L: the number of layers in the model's cycle; keys' layers are `0..layers`.
    pub layers: u32,
    pub weights: Weights,
    /// T1: with a backed-up link, a pair whose unimportance score is above this is served at low
    /// precision (HOBBIT used 0.6 for Mixtral).
    pub downgrade_above: f32,
}

/// The state of the node's host-to-device copy queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Clear,
    BackedUp,
}

impl Link {
    /// Backed up when more than `threshold` bytes wait in the copy queue.
    pub fn from_queue(queued: u64, threshold: u64) -> Link {
        if queued > threshold {
            Link::BackedUp
        } else {
            Link::Clear
        }
    }
}

/// One (token, expert) pair's need for an expert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub layer: u32,
    pub expert: u32,
    /// The precision the pair asks for.
    pub want: Tier,
    /// HOBBIT's unimportance score: the normalised gate mass of the token's experts ranked above
    /// this one; 0 for the top expert.
    pub unimportance: f32,
    /// The sizes of the expert's two copies.
    pub bytes: TierBytes,
}

/// What the caller must do to run an expert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A copy of this tier is resident: run it.
    Hit(Tier),
    /// Free the `evict` entries, copy the `load` tier in (`cost` bytes), then run it. The cache
    /// already counts the evicted entries as gone and the loaded one as resident.
    Miss {
        load: Tier,
        evict: Vec<Key>,
        cost: u64,
    },
    /// Loading this tier would need evicting protected entries: nothing was loaded or evicted.
    NoRoom(Tier),
}

/// Counters per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierStats {
    /// Accesses served by a resident copy of this tier.
    pub hits: u64,
    /// Accesses that loaded this tier.
    pub misses: u64,
    /// Prefetches that loaded this tier.
    pub prefetches: u64,
    /// Bytes copied into this pool, by misses and prefetches.
    pub bytes_loaded: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub high: TierStats,
    pub low: TierStats,
    /// Misses that wanted high precision and loaded low because the link was backed up.
    pub downgraded_loads: u64,
    /// Accesses that wanted high precision and ran the resident low copy for the same reason.
    pub downgraded_hits: u64,
    /// Accesses and prefetches answered with [`Decision::NoRoom`].
    pub refused: u64,
}

impl Stats {
    pub fn tier(&self, tier: Tier) -> &TierStats {
        match tier {
            Tier::High => &self.high,
            Tier::Low => &self.low,
        }
    }

    fn tier_mut(&mut self, tier: Tier) -> &mut TierStats {
        match tier {
            Tier::High => &mut self.high,
            Tier::Low => &mut self.low,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    #[error("{key:?} is {bytes} bytes, more than its whole pool ({capacity} bytes)")]
    TooLarge { key: Key, bytes: u64, capacity: u64 },
    #[error("layer {layer} is outside the model's {layers} layers")]
    LayerOutOfRange { layer: u32, layers: u32 },
    #[error("invalid cache config: {0}")]
    BadConfig(&'static str),
}

/// One expert's use in the current sequence.
#[derive(Debug, Clone, Copy, Default)]
struct Record {
    last_use: u64,
    uses: u64,
    high_uses: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    protected: bool,
}

/// The resident set of both pools and the records of the current sequence.
#[derive(Debug, Clone)]
pub struct ExpertCache {
    config: CacheConfig,
    entries: HashMap<Key, Entry>,
    used: TierBytes,
    records: HashMap<(u32, u32), Record>,
    /// T: accesses in this sequence.
    now: u64,
    /// l_t: the layer of the latest access.
    layer_now: u32,
    stats: Stats,
}

impl ExpertCache {
    /// An empty cache; the config needs at least one layer, finite non-negative weights and a
    /// finite non-negative T1.
    pub fn new(config: CacheConfig) -> Result<ExpertCache, CacheError> {
        let w = config.weights;
        if config.layers == 0 {
            return Err(CacheError::BadConfig("the model needs at least one layer"));
        }
        if ![w.lru, w.lfu, w.lhu, w.fld]
            .iter()
            .all(|x| x.is_finite() && *x >= 0.0)
        {
            return Err(CacheError::BadConfig(
                "weights must be finite and non-negative",
            ));
        }
        if !(config.downgrade_above.is_finite() && config.downgrade_above >= 0.0) {
            return Err(CacheError::BadConfig(
                "the downgrade threshold must be finite and non-negative",
            ));
        }
        Ok(ExpertCache {
            config,
            entries: HashMap::new(),
            used: TierBytes::default(),
            records: HashMap::new(),
            now: 0,
            layer_now: 0,
            stats: Stats::default(),
        })
    }

    /// Starts a new sequence: clears every expert's records and the access count, keeps the
    /// resident entries and their protection.
    pub fn begin_sequence(&mut self) {
        self.records.clear();
        self.now = 0;
    }

    /// Serves one pair (see the module doc for the rules) and records the use. Every access
    /// counts as a use of the expert, a refused one too: the records describe the sequence's
    /// routing, not the cache's contents.
    pub fn access(&mut self, req: &Request, link: Link) -> Result<Decision, CacheError> {
        self.check_layer(req.layer)?;
        let key = |tier| Key::new(req.layer, req.expert, tier);
        let has = |tier| self.entries.contains_key(&key(tier));
        let downgrade = link == Link::BackedUp && req.unimportance > self.config.downgrade_above;
        let (tier, resident) = match req.want {
            Tier::Low if has(Tier::Low) => (Tier::Low, true),
            Tier::Low if has(Tier::High) => (Tier::High, true),
            Tier::Low => (Tier::Low, false),
            Tier::High if has(Tier::High) => (Tier::High, true),
            Tier::High if downgrade => (Tier::Low, has(Tier::Low)),
            Tier::High => (Tier::High, false),
        };
        let downgraded = req.want == Tier::High && tier == Tier::Low;
        if !resident {
            self.check_fits(key(tier), req.bytes.get(tier))?;
        }
        self.now += 1;
        self.layer_now = req.layer;
        let decision = if resident {
            if let Some(entry) = self.entries.get_mut(&key(tier)) {
                entry.protected = false;
            }
            Decision::Hit(tier)
        } else {
            self.load(key(tier), req.bytes.get(tier), false)
        };
        match decision {
            Decision::Hit(_) => {
                self.stats.tier_mut(tier).hits += 1;
                self.stats.downgraded_hits += u64::from(downgraded);
            }
            Decision::Miss { .. } => {
                self.stats.tier_mut(tier).misses += 1;
                self.stats.downgraded_loads += u64::from(downgraded);
            }
            Decision::NoRoom(_) => self.stats.refused += 1,
        }
        let record = self.records.entry((req.layer, req.expert)).or_default();
        record.last_use = self.now;
        record.uses += 1;
        record.high_uses += u64::from(tier == Tier::High);
        Ok(decision)
    }

    /// Makes a predicted expert resident at `key.tier` (or keeps its resident high copy when
    /// `key.tier` is low) and protects it. Not a use: the records are untouched.
    pub fn prefetch(&mut self, key: Key, bytes: u64) -> Result<Decision, CacheError> {
        self.check_layer(key.layer)?;
        let high = Key {
            tier: Tier::High,
            ..key
        };
        if let Some(k) = [key, high]
            .into_iter()
            .find(|k| self.entries.contains_key(k))
        {
            if let Some(entry) = self.entries.get_mut(&k) {
                entry.protected = true;
            }
            return Ok(Decision::Hit(k.tier));
        }
        self.check_fits(key, bytes)?;
        let decision = self.load(key, bytes, true);
        match decision {
            Decision::NoRoom(_) => self.stats.refused += 1,
            _ => self.stats.tier_mut(key.tier).prefetches += 1,
        }
        Ok(decision)
    }

    /// Ends the protection of every entry.
    pub fn unprotect_all(&mut self) {
        for entry in self.entries.values_mut() {
            entry.protected = false;
        }
    }

    /// Forgets a resident entry (its copy failed, or the backend dropped it); returns its size.
    pub fn remove(&mut self, key: Key) -> Option<u64> {
        let entry = self.entries.remove(&key)?;
        *self.used.get_mut(key.tier) -= entry.bytes;
        Some(entry.bytes)
    }

    pub fn contains(&self, key: Key) -> bool {
        self.entries.contains_key(&key)
    }

    /// The resident entries and their sizes, in no particular order.
    pub fn resident(&self) -> impl Iterator<Item = (Key, u64)> + '_ {
        self.entries.iter().map(|(k, e)| (*k, e.bytes))
    }

    /// Bytes resident in `tier`'s pool.
    pub fn used(&self, tier: Tier) -> u64 {
        self.used.get(tier)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn check_layer(&self, layer: u32) -> Result<(), CacheError> {
        if layer < self.config.layers {
            Ok(())
        } else {
            Err(CacheError::LayerOutOfRange {
                layer,
                layers: self.config.layers,
            })
        }
    }

    fn check_fits(&self, key: Key, bytes: u64) -> Result<(), CacheError> {
        let capacity = self.config.capacity.get(key.tier);
        if bytes <= capacity {
            Ok(())
        } else {
            Err(CacheError::TooLarge {
                key,
                bytes,
                capacity,
            })
        }
    }

    /// Evicts what `key` needs and inserts it, or refuses without changing anything.
    fn load(&mut self, key: Key, bytes: u64, protected: bool) -> Decision {
        let Some(evict) = self.victims(key.tier, bytes) else {
            return Decision::NoRoom(key.tier);
        };
        for victim in &evict {
            self.remove(*victim);
        }
        self.entries.insert(key, Entry { bytes, protected });
        *self.used.get_mut(key.tier) += bytes;
        self.stats.tier_mut(key.tier).bytes_loaded += bytes;
        Decision::Miss {
            load: key.tier,
            evict,
            cost: bytes,
        }
    }

    /// The entries of `tier`'s pool to evict, lowest priority first (ties by key), for `bytes`
    /// more to fit; `None` when evicting every unprotected entry would not be enough.
    fn victims(&self, tier: Tier, bytes: u64) -> Option<Vec<Key>> {
        let mut free = self.config.capacity.get(tier) - self.used.get(tier);
        let mut evict = Vec::new();
        if free >= bytes {
            return Some(evict);
        }
        let mut candidates: Vec<(f64, Key, u64)> = self
            .entries
            .iter()
            .filter(|(k, e)| k.tier == tier && !e.protected)
            .map(|(k, e)| (self.priority(*k), *k, e.bytes))
            .collect();
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, key, size) in candidates {
            free += size;
            evict.push(key);
            if free >= bytes {
                return Some(evict);
            }
        }
        None
    }

    /// HOBBIT's priority of an entry now: the lowest is evicted first.
    fn priority(&self, key: Key) -> f64 {
        let w = self.config.weights;
        let r = self
            .records
            .get(&(key.layer, key.expert))
            .copied()
            .unwrap_or_default();
        let t = self.now.max(1) as f64;
        w.lru * r.last_use as f64 / t
            + w.lfu * r.uses as f64 / t
            + w.lhu * r.high_uses as f64 / t
            + w.fld * self.fld(key.layer)
    }

    /// The FLD term `1 - d/L` of an entry of `layer`, d counted forward from the current layer.
    fn fld(&self, layer: u32) -> f64 {
        let l = u64::from(self.config.layers);
        let ahead = (u64::from(layer) + l - u64::from(self.layer_now)) % l;
        1.0 - ahead as f64 / l as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: u32 = 4;
    const SIZE: TierBytes = TierBytes { high: 10, low: 3 };

    fn cache(high: u64, low: u64, weights: Weights) -> ExpertCache {
        ExpertCache::new(CacheConfig {
            capacity: TierBytes { high, low },
            layers: LAYERS,
            weights,
            downgrade_above: 0.6,
        })
        .unwrap()
    }

    fn only(lru: f64, lfu: f64, lhu: f64, fld: f64) -> Weights {
        Weights { lru, lfu, lhu, fld }
    }

    fn request(layer: u32, expert: u32, want: Tier, unimportance: f32) -> Request {
        Request {
            layer,
            expert,
            want,
            unimportance,
            bytes: SIZE,
        }
    }

    /// An access on a clear link by a top expert.
    fn run(cache: &mut ExpertCache, layer: u32, expert: u32, want: Tier) -> Decision {
        cache
            .access(&request(layer, expert, want, 0.0), Link::Clear)
            .unwrap()
    }

    fn evicted(decision: Decision) -> Vec<Key> {
        match decision {
            Decision::Miss { evict, .. } => evict,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    fn high(layer: u32, expert: u32) -> Key {
        Key::new(layer, expert, Tier::High)
    }

    #[test]
    fn low_miss_costs_the_bits_ratio_of_a_high_miss() {
        let weights = 1u64 << 20;
        let bytes = TierBytes {
            high: weights * 16 / 8,
            low: weights * 9 / 16,
        };
        let mut c = cache(u64::MAX, u64::MAX, Weights::default());
        let mut miss = |expert, want| {
            let req = Request {
                bytes,
                ..request(0, expert, want, 0.0)
            };
            match c.access(&req, Link::Clear).unwrap() {
                Decision::Miss { load, cost, .. } => {
                    assert_eq!(load, want);
                    cost
                }
                other => panic!("expected a miss, got {other:?}"),
            }
        };
        let (full, low) = (miss(0, Tier::High), miss(1, Tier::Low));
        assert_eq!(full, bytes.high);
        assert_eq!(low as f64 / full as f64, 4.5 / 16.0);
        assert_eq!(c.stats().low.bytes_loaded, low);
        assert_eq!(c.stats().high.bytes_loaded, full);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut c = cache(30, 30, only(1.0, 0.0, 0.0, 0.0));
        for expert in [0, 1, 2, 0] {
            run(&mut c, 0, expert, Tier::High);
        }
        assert_eq!(evicted(run(&mut c, 0, 3, Tier::High)), [high(0, 1)]);
    }

    #[test]
    fn lfu_evicts_the_least_used_in_this_sequence() {
        let mut c = cache(30, 30, only(0.0, 1.0, 0.0, 0.0));
        // Expert 0 is the least recently used, expert 1 the least used.
        for expert in [0, 0, 0, 1, 2, 2] {
            run(&mut c, 0, expert, Tier::High);
        }
        assert_eq!(evicted(run(&mut c, 0, 3, Tier::High)), [high(0, 1)]);
    }

    #[test]
    fn lhu_evicts_the_fewest_high_precision_uses() {
        let mut c = cache(30, 30, only(0.0, 0.0, 1.0, 0.0));
        c.prefetch(Key::new(0, 0, Tier::Low), SIZE.low).unwrap();
        // Expert 1 is the least recent and least used; expert 0 the most used (4 uses) and the
        // most recent, but only once at high precision.
        for (expert, want) in [
            (1, Tier::High),
            (1, Tier::High),
            (2, Tier::High),
            (2, Tier::High),
            (2, Tier::High),
            (0, Tier::High),
            (0, Tier::Low),
            (0, Tier::Low),
            (0, Tier::Low),
        ] {
            run(&mut c, 0, expert, want);
        }
        assert_eq!(c.stats().low.hits, 3);
        assert_eq!(evicted(run(&mut c, 0, 3, Tier::High)), [high(0, 0)]);
    }

    #[test]
    fn fld_keeps_the_next_layer_and_evicts_the_layer_just_behind() {
        let mut c = cache(30, 30, only(0.0, 0.0, 0.0, 1.0));
        for layer in [0, 2, 3] {
            run(&mut c, layer, 0, Tier::High);
        }
        // Computing layer 1: layer 2 is next, layer 0 comes back only after a whole cycle.
        // The distance read backwards, (l_t - l_i + L) mod L, would evict layer 2 first.
        assert_eq!(evicted(run(&mut c, 1, 0, Tier::High)), [high(0, 0)]);
        assert_eq!(c.fld(1), 1.0);
        assert_eq!(c.fld(2), 0.75);
        assert_eq!(c.fld(3), 0.5);
        assert_eq!(c.fld(0), 0.25);
        assert_eq!(evicted(run(&mut c, 1, 1, Tier::High)), [high(3, 0)]);
        assert!(c.contains(high(2, 0)));
    }

    #[test]
    fn a_new_sequence_clears_the_records_and_keeps_the_residents() {
        let mut c = cache(30, 30, only(0.0, 1.0, 0.0, 0.0));
        for expert in [0, 0, 0, 0, 0, 1, 2] {
            run(&mut c, 0, expert, Tier::High);
        }
        c.begin_sequence();
        assert!((0..3).all(|e| c.contains(high(0, e))));
        // Expert 0 was the most used in the old sequence but is unused in the new one.
        for expert in [1, 1, 2] {
            assert_eq!(
                run(&mut c, 0, expert, Tier::High),
                Decision::Hit(Tier::High)
            );
        }
        assert_eq!(evicted(run(&mut c, 0, 3, Tier::High)), [high(0, 0)]);
    }

    #[test]
    fn protected_predictions_are_not_evicted_and_a_full_pinned_pool_refuses() {
        let mut c = cache(20, 30, Weights::default());
        for expert in [0, 1] {
            let d = c.prefetch(high(0, expert), SIZE.high).unwrap();
            assert_eq!(evicted(d), []);
        }
        assert_eq!(c.stats().high.prefetches, 2);
        assert_eq!(run(&mut c, 0, 2, Tier::High), Decision::NoRoom(Tier::High));
        assert_eq!(c.stats().refused, 1);
        assert!(c.contains(high(0, 0)) && c.contains(high(0, 1)));
        assert!(!c.contains(high(0, 2)));
        assert_eq!(c.used(Tier::High), 20);

        // Using expert 0 ends its protection; expert 1, never used (the lowest priority), stays.
        assert_eq!(run(&mut c, 0, 0, Tier::High), Decision::Hit(Tier::High));
        assert_eq!(evicted(run(&mut c, 0, 2, Tier::High)), [high(0, 0)]);

        c.unprotect_all();
        assert_eq!(evicted(run(&mut c, 0, 3, Tier::High)), [high(0, 1)]);
    }

    #[test]
    fn a_backed_up_link_downgrades_unimportant_misses_only() {
        assert_eq!(Link::from_queue(101, 100), Link::BackedUp);
        assert_eq!(Link::from_queue(100, 100), Link::Clear);
        let mut c = cache(100, 100, Weights::default());
        let mut load = |expert, unimportance, link| match c
            .access(&request(0, expert, Tier::High, unimportance), link)
            .unwrap()
        {
            Decision::Miss { load, cost, .. } => (load, cost),
            other => panic!("expected a miss, got {other:?}"),
        };
        assert_eq!(load(0, 0.7, Link::BackedUp), (Tier::Low, SIZE.low));
        assert_eq!(load(1, 0.0, Link::BackedUp), (Tier::High, SIZE.high));
        assert_eq!(load(2, 0.6, Link::BackedUp), (Tier::High, SIZE.high));
        assert_eq!(load(3, 0.9, Link::Clear), (Tier::High, SIZE.high));
        assert_eq!(c.stats().downgraded_loads, 1);

        // Only the low copy of expert 0 is resident.
        let want_high = request(0, 0, Tier::High, 0.7);
        assert_eq!(
            c.access(&want_high, Link::BackedUp).unwrap(),
            Decision::Hit(Tier::Low)
        );
        assert_eq!(c.stats().downgraded_hits, 1);
        assert!(!c.contains(high(0, 0)));
        let top = request(0, 0, Tier::High, 0.0);
        assert_eq!(
            evicted(c.access(&top, Link::BackedUp).unwrap()),
            Vec::<Key>::new()
        );
        assert!(c.contains(high(0, 0)) && c.contains(Key::new(0, 0, Tier::Low)));
        assert_eq!(c.stats().downgraded_loads, 1);
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let capacity = TierBytes { high: 100, low: 30 };
        let mut c = ExpertCache::new(CacheConfig {
            capacity,
            layers: LAYERS,
            weights: Weights::default(),
            downgrade_above: 0.6,
        })
        .unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let size = |layer: u32, expert: u32| {
            let high = 15 + u64::from(layer * 8 + expert) * 7 % 20;
            TierBytes {
                high,
                low: high / 4 + 1,
            }
        };
        let tier = |bit| if bit == 0 { Tier::High } else { Tier::Low };
        for _ in 0..20_000 {
            let (layer, expert) = (next(u64::from(LAYERS)) as u32, next(8) as u32);
            let key = Key::new(layer, expert, tier(next(2)));
            match next(40) {
                0 => c.begin_sequence(),
                1 => c.unprotect_all(),
                2 => {
                    c.remove(key);
                }
                3..=6 => {
                    c.prefetch(key, size(layer, expert).get(key.tier)).unwrap();
                }
                _ => {
                    let req = Request {
                        layer,
                        expert,
                        want: key.tier,
                        unimportance: next(100) as f32 / 100.0,
                        bytes: size(layer, expert),
                    };
                    let link = if next(2) == 0 {
                        Link::Clear
                    } else {
                        Link::BackedUp
                    };
                    c.access(&req, link).unwrap();
                }
            }
            for t in [Tier::High, Tier::Low] {
                let sum: u64 = c
                    .resident()
                    .filter(|(k, _)| k.tier == t)
                    .map(|(_, b)| b)
                    .sum();
                assert!(sum <= capacity.get(t), "{t:?} pool holds {sum} bytes");
                assert_eq!(sum, c.used(t));
            }
        }
        let s = c.stats();
        assert!(s.high.misses > 1000 && s.low.misses > 1000, "{s:?}");
        assert!(s.high.hits > 100 && s.low.hits > 100, "{s:?}");
    }

    #[test]
    fn an_entry_larger_than_its_pool_is_refused() {
        let mut c = cache(100, 30, Weights::default());
        let req = Request {
            bytes: TierBytes { high: 101, low: 3 },
            ..request(0, 0, Tier::High, 0.0)
        };
        let err = c.access(&req, Link::Clear).unwrap_err();
        assert_eq!(
            err,
            CacheError::TooLarge {
                key: high(0, 0),
                bytes: 101,
                capacity: 100
            }
        );
        assert!(err.to_string().contains("more than its whole pool"));
        let low = Key::new(0, 1, Tier::Low);
        assert!(matches!(
            c.prefetch(low, 31),
            Err(CacheError::TooLarge { capacity: 30, .. })
        ));
        assert_eq!(c.resident().count(), 0);
        assert_eq!(c.stats(), Stats::default());
    }

    #[test]
    fn bad_configs_and_layers_are_rejected() {
        let config = CacheConfig {
            capacity: SIZE,
            layers: 0,
            weights: Weights::default(),
            downgrade_above: 0.6,
        };
        assert!(matches!(
            ExpertCache::new(config),
            Err(CacheError::BadConfig(_))
        ));
        let negative = CacheConfig {
            layers: LAYERS,
            weights: only(-1.0, 0.0, 0.0, 0.0),
            ..config
        };
        assert!(ExpertCache::new(negative).is_err());
        let mut c = cache(100, 30, Weights::default());
        assert_eq!(
            c.access(&request(LAYERS, 0, Tier::High, 0.0), Link::Clear),
            Err(CacheError::LayerOutOfRange {
                layer: LAYERS,
                layers: LAYERS
            })
        );
    }
}
