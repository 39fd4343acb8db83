//! Key/value caches in fixed-size blocks, as vLLM pages them. A [`BlockPool`] is the KV memory
//! that sequences share, in blocks of [`BLOCK_POSITIONS`] positions, each holding those
//! positions' rotated keys and values for every layer (f32). Keys and values may differ in width:
//! multi-head latent attention caches one latent vector per position as its "key" and no value. A sequence's [`KvCache`] holds the
//! blocks its positions live in: it takes blocks from the pool as it grows (never copying what it
//! has), gives back the ones past its length when truncated, and all of them when dropped. A pool
//! never holds more than its budget: a cache that cannot get a block fails with
//! [`ModelError::KvCacheFull`] and keeps what it had.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{ModelError, Result};

/// Positions per block.
pub const BLOCK_POSITIONS: usize = 16;

/// One block: `[layer][keys: [position in block][key_dim], values: [position][value_dim]]`.
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

/// KV memory shared by sequences, in blocks, bounded by a budget.
#[derive(Debug)]
pub struct BlockPool {
    layers: usize,
    width: KvWidth,
    max_blocks: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Blocks given back, reused before any new one is allocated.
    free: Vec<Block>,
    /// Blocks allocated so far (held by caches or free).
    allocated: usize,
}

impl BlockPool {
    /// A pool for a model of `layers` layers storing `width` values per position and layer,
    /// holding at most `max_positions` positions (rounded up to whole blocks). Blocks are
    /// allocated as first needed and reused afterwards.
    pub fn new(layers: usize, width: KvWidth, max_positions: usize) -> Arc<BlockPool> {
        Arc::new(BlockPool {
            layers,
            width,
            max_blocks: max_positions.div_ceil(BLOCK_POSITIONS),
            state: Mutex::new(PoolState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn block_len(&self) -> usize {
        self.layers * self.layer_len()
    }

    /// A block's values for one layer.
    fn layer_len(&self) -> usize {
        BLOCK_POSITIONS * (self.width.key + self.width.value)
    }

    fn take(&self) -> Option<Block> {
        let mut state = self.lock();
        if let Some(block) = state.free.pop() {
            return Some(block);
        }
        if state.allocated == self.max_blocks {
            return None;
        }
        state.allocated += 1;
        drop(state);
        Some(vec![0.0; self.block_len()].into_boxed_slice())
    }

    fn give(&self, blocks: impl IntoIterator<Item = Block>) {
        self.lock().free.extend(blocks);
    }

    /// Blocks the pool may hold.
    pub fn max_blocks(&self) -> usize {
        self.max_blocks
    }

    /// Blocks held by caches now.
    pub fn blocks_in_use(&self) -> usize {
        let state = self.lock();
        state.allocated - state.free.len()
    }
}

/// One sequence's keys and values, in blocks of its pool.
#[derive(Debug)]
pub struct KvCache {
    pool: Arc<BlockPool>,
    blocks: Vec<Block>,
    /// Positions committed by [`KvCache::advance`].
    len: usize,
    /// The model's context: positions this cache may ever hold.
    capacity: usize,
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.pool.give(self.blocks.drain(..));
    }
}

impl KvCache {
    /// An empty cache of at most `capacity` positions, its blocks from `pool`.
    pub fn new(pool: Arc<BlockPool>, capacity: usize) -> KvCache {
        KvCache {
            pool,
            blocks: Vec::new(),
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

    /// Blocks this cache holds.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
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
        let held = self.blocks.len();
        while self.blocks.len() * BLOCK_POSITIONS < needed {
            match self.pool.take() {
                Some(block) => self.blocks.push(block),
                None => {
                    self.pool.give(self.blocks.drain(held..));
                    return Err(ModelError::KvCacheFull {
                        blocks: self.pool.max_blocks,
                    });
                }
            }
        }
        Ok(())
    }

    /// Where position `pos`'s keys (`values` false) or values of `layer` start in its block.
    fn offset(&self, layer: usize, values: bool, pos: usize) -> (usize, usize) {
        let KvWidth { key, value } = self.pool.width;
        let in_block = pos % BLOCK_POSITIONS;
        let at = layer * self.pool.layer_len()
            + match values {
                false => in_block * key,
                true => BLOCK_POSITIONS * key + in_block * value,
            };
        (pos / BLOCK_POSITIONS, at)
    }

    /// Writes the keys and values of the positions `len()..len() + n` of `layer`
    /// (`[n, width.key]` and `[n, width.value]`), reserved beforehand; they count once
    /// [`KvCache::advance`] commits them.
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let KvWidth { key, value } = self.pool.width;
        let n = keys.len() / key.max(1);
        for i in 0..n {
            let pos = self.len + i;
            let (block, at) = self.offset(layer, false, pos);
            self.blocks[block][at..at + key].copy_from_slice(&keys[i * key..][..key]);
            let (block, at) = self.offset(layer, true, pos);
            self.blocks[block][at..at + value].copy_from_slice(&values[i * value..][..value]);
        }
    }

    /// The keys of position `pos` of `layer` (`width.key` values).
    pub fn key(&self, layer: usize, pos: usize) -> &[f32] {
        let (block, at) = self.offset(layer, false, pos);
        &self.blocks[block][at..at + self.pool.width.key]
    }

    /// The values of position `pos` of `layer` (`width.value` values).
    pub fn value(&self, layer: usize, pos: usize) -> &[f32] {
        let (block, at) = self.offset(layer, true, pos);
        &self.blocks[block][at..at + self.pool.width.value]
    }

    /// Commits `n` appended positions.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops positions from `len` on and gives back the blocks no longer needed.
    pub fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
        let keep = self.len.div_ceil(BLOCK_POSITIONS);
        self.pool
            .give(self.blocks.drain(keep.min(self.blocks.len())..));
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
        assert_eq!(pool.block_len(), 2 * BLOCK_POSITIONS * 5);
    }

    #[test]
    fn a_full_pool_refuses_and_the_cache_keeps_what_it_had() {
        let pool = BlockPool::new(1, KvWidth::symmetric(2), 40);
        assert_eq!(pool.max_blocks(), 3);
        let mut a = KvCache::new(Arc::clone(&pool), 100);
        let mut b = KvCache::new(Arc::clone(&pool), 100);
        a.reserve(20).unwrap();
        a.advance(20);
        let refused = b.reserve(17);
        assert!(
            matches!(refused, Err(ModelError::KvCacheFull { blocks: 3 })),
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
