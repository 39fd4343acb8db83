//! The key/value cache of one sequence: per layer, the rotated keys and the values of every past
//! position, in f32, growing up to a fixed capacity.

use crate::error::{ModelError, Result};

#[derive(Debug, Clone)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    len: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(num_layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        KvCache {
            kv_dim,
            capacity,
            len: 0,
            keys: vec![Vec::new(); num_layers],
            values: vec![Vec::new(); num_layers],
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

    /// Checks that `n` more positions fit.
    pub fn reserve(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(ModelError::ContextOverflow {
                len: self.len + n,
                max: self.capacity,
            });
        }
        Ok(())
    }

    /// Appends `n` positions of keys and values to `layer` (the cache length moves on `advance`).
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        self.keys[layer].extend_from_slice(keys);
        self.values[layer].extend_from_slice(values);
    }

    /// Keys and values of `layer`, `[positions, kv_dim]` each, including appended positions.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Commits `n` appended positions.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops positions from `len` on (e.g. to reuse a prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.len);
        for layer in 0..self.keys.len() {
            self.keys[layer].truncate(len * self.kv_dim);
            self.values[layer].truncate(len * self.kv_dim);
        }
        self.len = len;
    }
}
