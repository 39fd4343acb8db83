//! Key/value caches in fixed-size blocks, as vLLM pages them. A [`BlockPool`] is the KV memory
//! that sequences share, in blocks of [`BLOCK_POSITIONS`] positions, each holding those
//! positions' rotated keys and values for every layer of one kind (f32): full-attention layers
//! keep every position, sliding-window layers only the blocks their windows still reach, so a
//! long sequence's windowed layers hold no more than their window. Keys and values may differ in width:
//! multi-head latent attention caches one latent vector per position as its "key" and no value. A sequence's [`KvCache`] holds the
//! blocks its positions live in: it takes blocks from the pool as it grows (never copying what it
//! has), gives back the ones past its length when truncated, and all of them when dropped. A pool
//! never holds more than its budget: a cache that cannot get a block fails with
//! [`ModelError::KvCacheFull`] and keeps what it had.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{ModelError, Result};

/// Positions per block.
pub const BLOCK_POSITIONS: usize = 16;

/// One block: `[layer of its kind][keys: [position in block][key_dim], values: [position][value_dim]]`.
type Block = Box<[f32]>;

/// The values one position stores per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvWidth {
    pub key: usize,
    pub value: usize,
}

impl KvWidth {
    /// Keys and values of the same width (grouped-query attention).
    pub fn symmetric(dim: usize) -> KvWidth {
        KvWidth {
            key: dim,
            value: dim,
        }
    }

    /// Bytes one position takes in one layer (the cache holds f32).
    pub fn bytes(&self) -> usize {
        (self.key + self.value) * size_of::<f32>()
    }
}

/// Which blocks hold a layer: those of every position (full attention), or those of the
/// positions a sliding window still sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Full,
    Windowed,
}

/// KV memory shared by sequences, in blocks, bounded by a budget. Full-attention layers and
/// sliding-window layers keep their positions in blocks of their own, so a sequence gives back
/// the windowed layers' blocks its windows have passed.
#[derive(Debug)]
pub struct BlockPool {
    width: KvWidth,
    /// Per layer: its kind and its index among the layers of that kind.
    layers: Vec<(Kind, usize)>,
    /// Layers of each kind.
    full_layers: usize,
    windowed_layers: usize,
    /// The widest window of the windowed layers (0 without).
    window: usize,
    /// The budget, in f32 values.
    max_values: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Blocks given back, by kind, reused before any new one is allocated.
    free: [Vec<Block>; 2],
    /// Values allocated so far (in blocks held by caches or free).
    allocated: usize,
    /// Blocks allocated so far, of both kinds.
    blocks: usize,
}

impl BlockPool {
    /// A pool for a model of `layers` full-attention layers storing `width` values per position
    /// and layer, holding at most `max_positions` positions (rounded up to whole blocks).
    pub fn new(layers: usize, width: KvWidth, max_positions: usize) -> Arc<BlockPool> {
        BlockPool::with_windows(&vec![None; layers], width, max_positions)
    }

    /// A pool for a model whose layers attend within `windows` (per layer; `None` for full
    /// attention), with a budget of the memory `max_positions` positions take in every layer.
    /// Blocks are allocated as first needed and reused afterwards.
    pub fn with_windows(
        windows: &[Option<usize>],
        width: KvWidth,
        max_positions: usize,
    ) -> Arc<BlockPool> {
        let (mut full, mut windowed) = (0, 0);
        let layers = windows
            .iter()
            .map(|w| match w {
                None => (Kind::Full, post_inc(&mut full)),
                Some(_) => (Kind::Windowed, post_inc(&mut windowed)),
            })
            .collect();
        let layer_len = BLOCK_POSITIONS * (width.key + width.value);
        Arc::new(BlockPool {
            width,
            layers,
            full_layers: full,
            windowed_layers: windowed,
            window: windows.iter().flatten().copied().max().unwrap_or(0),
            max_values: max_positions.div_ceil(BLOCK_POSITIONS) * windows.len() * layer_len,
            state: Mutex::new(PoolState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A block's values for one layer.
    fn layer_len(&self) -> usize {
        BLOCK_POSITIONS * (self.width.key + self.width.value)
    }

    fn block_len(&self, kind: Kind) -> usize {
        self.layer_len()
            * match kind {
                Kind::Full => self.full_layers,
                Kind::Windowed => self.windowed_layers,
            }
    }

    fn take(&self, kind: Kind) -> Option<Block> {
        let mut state = self.lock();
        if let Some(block) = state.free[kind as usize].pop() {
            return Some(block);
        }
        let len = self.block_len(kind);
        if state.allocated + len > self.max_values {
            return None;
        }
        state.allocated += len;
        state.blocks += 1;
        drop(state);
        Some(vec![0.0; len].into_boxed_slice())
    }

    fn give(&self, kind: Kind, blocks: impl IntoIterator<Item = Block>) {
        self.lock().free[kind as usize].extend(blocks);
    }

    /// The pool's budget in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_values * size_of::<f32>()
    }

    /// Blocks held by caches now, of both kinds.
    pub fn blocks_in_use(&self) -> usize {
        let state = self.lock();
        state.blocks - state.free.iter().map(Vec::len).sum::<usize>()
    }
}

/// `*n`, then one more.
fn post_inc(n: &mut usize) -> usize {
    *n += 1;
    *n - 1
}

/// One sequence's keys and values, in blocks of its pool.
#[derive(Debug)]
pub struct KvCache {
    pool: Arc<BlockPool>,
    /// The full-attention layers' blocks: block `b` holds positions `16b..16b + 16`.
    full: Vec<Block>,
    /// The windowed layers' blocks from block index `first_windowed` on; earlier ones are
    /// behind every window and given back.
    windowed: VecDeque<Block>,
    first_windowed: usize,
    /// Positions committed by [`KvCache::advance`].
    len: usize,
    /// The model's context: positions this cache may ever hold.
    capacity: usize,
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.pool.give(Kind::Full, self.full.drain(..));
        self.pool.give(Kind::Windowed, self.windowed.drain(..));
    }
}

impl KvCache {
    /// An empty cache of at most `capacity` positions, its blocks from `pool`.
    pub fn new(pool: Arc<BlockPool>, capacity: usize) -> KvCache {
        KvCache {
            pool,
            full: Vec::new(),
            windowed: VecDeque::new(),
            first_windowed: 0,
            len: 0,
            capacity,
        }
    }

    /// Positions already in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn width(&self) -> KvWidth {
        self.pool.width
    }

    /// Blocks this cache holds, of both kinds.
    pub fn blocks(&self) -> usize {
        self.full.len() + self.windowed.len()
    }

    /// Makes room for `n` more positions: checks the context and takes the blocks they need.
    /// On failure the cache is as it was.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        let needed = self.len + n;
        if needed > self.capacity {
            return Err(ModelError::ContextOverflow {
                len: needed,
                max: self.capacity,
            });
        }
        let blocks = needed.div_ceil(BLOCK_POSITIONS);
        let held = (self.full.len(), self.windowed.len());
        let mut short = false;
        while self.pool.full_layers > 0 && self.full.len() < blocks && !short {
            match self.pool.take(Kind::Full) {
                Some(block) => self.full.push(block),
                None => short = true,
            }
        }
        while self.pool.windowed_layers > 0
            && self.first_windowed + self.windowed.len() < blocks
            && !short
        {
            match self.pool.take(Kind::Windowed) {
                Some(block) => self.windowed.push_back(block),
                None => short = true,
            }
        }
        if short {
            self.pool.give(Kind::Full, self.full.drain(held.0..));
            self.pool
                .give(Kind::Windowed, self.windowed.drain(held.1..));
            return Err(ModelError::KvCacheFull {
                bytes: self.pool.max_bytes(),
            });
        }
        Ok(())
    }

    /// The block position `pos` of `layer` lives in, and where its keys (`values` false) or
    /// values start in it.
    fn locate(&self, layer: usize, values: bool, pos: usize) -> (&Block, usize) {
        let KvWidth { key, value } = self.pool.width;
        let (kind, index) = self.pool.layers[layer];
        let in_block = pos % BLOCK_POSITIONS;
        let at = index * self.pool.layer_len()
            + match values {
                false => in_block * key,
                true => BLOCK_POSITIONS * key + in_block * value,
            };
        let block = match kind {
            Kind::Full => &self.full[pos / BLOCK_POSITIONS],
            Kind::Windowed => &self.windowed[pos / BLOCK_POSITIONS - self.first_windowed],
        };
        (block, at)
    }

    fn block_mut(&mut self, layer: usize, pos: usize) -> &mut Block {
        match self.pool.layers[layer].0 {
            Kind::Full => &mut self.full[pos / BLOCK_POSITIONS],
            Kind::Windowed => &mut self.windowed[pos / BLOCK_POSITIONS - self.first_windowed],
        }
    }

    /// Writes the keys and values of the positions `len()..len() + n` of `layer`
    /// (`[n, width.key]` and `[n, width.value]`), reserved beforehand; they count once
    /// [`KvCache::advance`] commits them.
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let KvWidth { key, value } = self.pool.width;
        let n = keys.len() / key.max(1);
        for i in 0..n {
            let pos = self.len + i;
            let (_, at) = self.locate(layer, false, pos);
            self.block_mut(layer, pos)[at..at + key].copy_from_slice(&keys[i * key..][..key]);
            let (_, at) = self.locate(layer, true, pos);
            self.block_mut(layer, pos)[at..at + value]
                .copy_from_slice(&values[i * value..][..value]);
        }
    }

    /// The keys of position `pos` of `layer` (`width.key` values).
    pub fn key(&self, layer: usize, pos: usize) -> &[f32] {
        let (block, at) = self.locate(layer, false, pos);
        &block[at..at + self.pool.width.key]
    }

    /// The values of position `pos` of `layer` (`width.value` values).
    pub fn value(&self, layer: usize, pos: usize) -> &[f32] {
        let (block, at) = self.locate(layer, true, pos);
        &block[at..at + self.pool.width.value]
    }

    /// Commits `n` appended positions, and gives back the windowed layers' blocks that no window
    /// of the next token reaches.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        let seen_from = (self.len + 1).saturating_sub(self.pool.window);
        let mut passed = Vec::new();
        while (self.first_windowed + 1) * BLOCK_POSITIONS <= seen_from {
            match self.windowed.pop_front() {
                Some(block) => passed.push(block),
                None => break,
            }
            self.first_windowed += 1;
        }
        self.pool.give(Kind::Windowed, passed);
    }

    /// Drops positions from `len` on and gives back the blocks no longer needed. Positions the
    /// windows have already passed are gone: truncating takes a cache back to where a step
    /// started, never further than its windows reach.
    pub fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
        let keep = self.len.div_ceil(BLOCK_POSITIONS);
        self.pool
            .give(Kind::Full, self.full.drain(keep.min(self.full.len())..));
        let windowed_keep = keep.saturating_sub(self.first_windowed);
        let from = windowed_keep.min(self.windowed.len());
        self.pool.give(Kind::Windowed, self.windowed.drain(from..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, kv_dim: usize, base: f32) -> Vec<f32> {
        (0..n * kv_dim).map(|i| base + i as f32).collect()
    }

    #[test]
    fn positions_span_blocks_and_read_back_per_layer() {
        let pool = BlockPool::new(2, KvWidth::symmetric(3), 64);
        let mut cache = KvCache::new(Arc::clone(&pool), 64);
        for (n, base) in [(5, 0.0), (20, 1000.0)] {
            cache.reserve(n).unwrap();
            cache.append(0, &rows(n, 3, base), &rows(n, 3, base + 500.0));
            cache.append(1, &rows(n, 3, -base), &rows(n, 3, -base - 500.0));
            cache.advance(n);
        }
        assert_eq!((cache.len(), cache.blocks()), (25, 2));
        assert_eq!(cache.key(0, 0), [0.0, 1.0, 2.0]);
        assert_eq!(cache.value(0, 4), [512.0, 513.0, 514.0]);
        // Position 17 is the 13th of the second append, in the second block.
        assert_eq!(cache.key(0, 17), [1036.0, 1037.0, 1038.0]);
        assert_eq!(cache.key(1, 17), [-964.0, -963.0, -962.0]);
        assert_eq!(cache.value(1, 24), [-1443.0, -1442.0, -1441.0]);
        assert_eq!(pool.blocks_in_use(), 2);
    }

    #[test]
    fn a_latent_cache_keeps_wide_keys_and_no_values() {
        let width = KvWidth { key: 5, value: 0 };
        let pool = BlockPool::new(2, width, 64);
        let mut cache = KvCache::new(Arc::clone(&pool), 64);
        cache.reserve(18).unwrap();
        cache.append(0, &rows(18, 5, 0.0), &[]);
        cache.append(1, &rows(18, 5, 100.0), &[]);
        cache.advance(18);
        assert_eq!(cache.key(0, 17), [85.0, 86.0, 87.0, 88.0, 89.0]);
        assert_eq!(cache.key(1, 3), [115.0, 116.0, 117.0, 118.0, 119.0]);
        assert!(cache.value(1, 3).is_empty());
        assert_eq!(pool.block_len(Kind::Full), 2 * BLOCK_POSITIONS * 5);
    }

    #[test]
    fn windowed_layers_keep_only_the_blocks_their_window_reaches() {
        // Layer 0 attends within 20 positions, layer 1 to every position.
        let pool = BlockPool::with_windows(&[Some(20), None], KvWidth::symmetric(1), 1000);
        let mut cache = KvCache::new(Arc::clone(&pool), 1000);
        for step in 0..100usize {
            cache.reserve(1).unwrap();
            let v = [step as f32];
            cache.append(0, &v, &v);
            cache.append(1, &v, &v);
            cache.advance(1);
            // The next token sees positions step + 2 - 20 ..= step + 1: every one of them
            // that exists is still here.
            let first = (step + 2).saturating_sub(20);
            for pos in first..=step {
                assert_eq!(cache.key(0, pos), [pos as f32]);
            }
        }
        assert_eq!(cache.key(1, 0), [0.0]);
        // 100 positions: 7 full blocks; the window's 19 past positions span at most 2 blocks.
        assert_eq!((cache.full.len(), cache.windowed.len()), (7, 2));
        assert_eq!(pool.blocks_in_use(), 9);
        drop(cache);
        assert_eq!(pool.blocks_in_use(), 0);
    }

    #[test]
    fn a_full_pool_refuses_and_the_cache_keeps_what_it_had() {
        let pool = BlockPool::new(1, KvWidth::symmetric(2), 40);
        assert_eq!(pool.max_bytes(), 3 * BLOCK_POSITIONS * 4 * 4);
        let mut a = KvCache::new(Arc::clone(&pool), 100);
        let mut b = KvCache::new(Arc::clone(&pool), 100);
        a.reserve(20).unwrap();
        a.advance(20);
        let refused = b.reserve(17);
        assert!(
            matches!(refused, Err(ModelError::KvCacheFull { bytes: 768 })),
            "{refused:?}"
        );
        assert_eq!((b.blocks(), pool.blocks_in_use()), (0, 2));
        b.reserve(16).unwrap();
        assert_eq!(pool.blocks_in_use(), 3);
        let overflow = a.reserve(81);
        assert!(matches!(
            overflow,
            Err(ModelError::ContextOverflow { len: 101, max: 100 })
        ));
    }

    #[test]
    fn truncating_and_dropping_give_blocks_back_for_reuse() {
        let pool = BlockPool::new(1, KvWidth::symmetric(2), 64);
        let mut a = KvCache::new(Arc::clone(&pool), 64);
        a.reserve(40).unwrap();
        a.advance(40);
        assert_eq!(pool.blocks_in_use(), 3);
        a.truncate(17);
        assert_eq!((a.len(), a.blocks(), pool.blocks_in_use()), (17, 2, 2));
        a.truncate(0);
        assert_eq!((a.blocks(), pool.blocks_in_use()), (0, 0));
        a.reserve(33).unwrap();
        drop(a);
        assert_eq!(pool.blocks_in_use(), 0);
        let mut b = KvCache::new(Arc::clone(&pool), 64);
        b.reserve(64).unwrap();
        assert_eq!(
            pool.blocks_in_use(),
            4,
            "freed blocks are reused within the budget"
        );
    }
}
