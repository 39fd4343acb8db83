//! Experts on a GPU: which copies sit in device memory (decided by `cache_policy`, HOBBIT's
//! cache), copying them there from host memory, and running a layer's batch on the device.
//!
//! The device is behind [`ExpertDevice`]: `moe_kernels::cuda::CudaExperts` in a CUDA build, and
//! a host-memory stand-in in the tests below. Per batch, every group of rows asks the cache for
//! its expert at the precision it wants; a miss evicts what the policy names and copies the
//! expert in. The host-to-device link counts as backed up once the copies issued since the
//! previous batch (prefetches and this batch's own misses) exceed `backlog_bytes`; then groups whose unimportance is above T1 are served by the
//! low-precision copy (HOBBIT's rule applied to the node's own PCIe link), and the reply reports
//! the precision actually used. A group whose format is neither of the node's two tiers, that
//! cannot find room because every resident copy is pinned by a prefetch, or whose expert the
//! device's kernels cannot take (its two matrices in different formats because one width did not
//! fit the format, see `Expert::formats_at`, or widths that are not multiples of 32), makes the
//! whole batch run on the CPU kernels instead ([`Accelerator::execute`] returns `None`).

use std::collections::HashMap;
use std::sync::Arc;

use moe_kernels::{ExpertPairs, Format};
use moe_model::moe::Expert;

use crate::cache_policy::{
    CacheConfig, CacheError, Decision, ExpertCache, Key, Link, Request, Stats, Tier, TierBytes,
};
use crate::shard::ShardKey;
use crate::work::{LayerWork, PrecisionPair, WorkError};

/// A device that holds experts and runs batches of them.
pub trait ExpertDevice {
    /// An expert in device memory; dropping it frees the memory.
    type Expert;
    /// Whether the device's kernels can run `expert` (its format, its shape); one they cannot
    /// runs on the CPU.
    fn takes(&self, expert: &Expert) -> bool;
    fn upload(&self, expert: &Expert) -> Result<Self::Expert, String>;
    /// `x` is `[n_tokens, hidden]`; returns per token the gate-weighted sum of its experts.
    fn run(
        &self,
        x: &[f32],
        hidden: usize,
        batch: &[(&Self::Expert, ExpertPairs<'_>)],
    ) -> Result<Vec<f32>, String>;
}

/// Where the host copies of experts come from (the batch's gathered set, else the RAM disk).
pub type Fetch<'a> = dyn Fn(ShardKey) -> Result<Arc<Expert>, WorkError> + 'a;

/// A batch's result on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuRun {
    pub out: Vec<f32>,
    /// The format each group of the work ran at.
    pub used: Vec<Format>,
    /// Bytes copied to the device for this batch.
    pub copied_bytes: u64,
}

/// What `Info` reports about the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSnapshot {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub stats: Stats,
}

/// The GPU side of an expert node.
pub trait Accelerator: Send {
    /// Runs `work` on the device, or `None` when it must run on the CPU (see the module docs).
    fn execute(&mut self, work: &LayerWork, fetch: &Fetch<'_>)
    -> Result<Option<GpuRun>, WorkError>;
    /// Copies predicted experts in ahead of use and protects them until used.
    fn prefetch(&mut self, keys: &[ShardKey], fetch: &Fetch<'_>);
    fn snapshot(&self) -> GpuSnapshot;
}

/// Experts cached on one device under the HOBBIT policy.
pub struct Gpu<D: ExpertDevice> {
    device: D,
    cache: ExpertCache,
    /// Copies on the device, with the precision each runs at (`Expert::precision`).
    resident: HashMap<Key, (D::Expert, Format)>,
    pair: PrecisionPair,
    /// Bytes each expert takes at each tier, from the node's catalog.
    sizes: HashMap<(u32, u32), TierBytes>,
    backlog_bytes: u64,
    /// Bytes copied since the last batch started (prefetches included).
    queued_bytes: u64,
    capacity: u64,
}

impl<D: ExpertDevice> Gpu<D> {
    /// `sizes` lists every held (layer, expert, format) with its bytes.
    pub fn new(
        device: D,
        config: CacheConfig,
        pair: PrecisionPair,
        sizes: impl IntoIterator<Item = (ShardKey, u64)>,
        backlog_bytes: u64,
    ) -> Result<Gpu<D>, CacheError> {
        let capacity = config.capacity.high + config.capacity.low;
        let mut by_expert: HashMap<(u32, u32), TierBytes> = HashMap::new();
        for (key, bytes) in sizes {
            let entry = by_expert
                .entry((key.layer, key.expert))
                .or_insert(TierBytes { high: 0, low: 0 });
            if key.format == pair.high {
                entry.high = bytes;
            }
            if key.format == pair.low {
                entry.low = bytes;
            }
        }
        Ok(Gpu {
            device,
            cache: ExpertCache::new(config)?,
            resident: HashMap::new(),
            pair,
            sizes: by_expert,
            backlog_bytes,
            queued_bytes: 0,
            capacity,
        })
    }

    fn tier(&self, format: Format) -> Option<Tier> {
        if format == self.pair.high {
            Some(Tier::High)
        } else if format == self.pair.low {
            Some(Tier::Low)
        } else {
            None
        }
    }

    fn format(&self, tier: Tier) -> Format {
        match tier {
            Tier::High => self.pair.high,
            Tier::Low => self.pair.low,
        }
    }

    /// Frees what `decision` evicts and copies in what it loads; `Ok(None)` = no room, or a copy
    /// the kernels cannot take (see `ExpertDevice::takes`).
    fn apply(
        &mut self,
        layer: u32,
        expert: u32,
        decision: Decision,
        fetch: &Fetch<'_>,
    ) -> Result<Option<Tier>, WorkError> {
        match decision {
            Decision::Hit(tier) => Ok(Some(tier)),
            Decision::NoRoom(_) => Ok(None),
            Decision::Miss { load, evict, cost } => {
                for key in evict {
                    self.resident.remove(&key);
                }
                let key = Key::new(layer, expert, load);
                let host = fetch(ShardKey {
                    layer,
                    expert,
                    format: self.format(load),
                });
                let copied = host.and_then(|host| {
                    if !self.device.takes(&host) {
                        return Ok(None);
                    }
                    let on_device = self.device.upload(&host).map_err(WorkError::Expert)?;
                    Ok(Some((on_device, host.precision())))
                });
                match copied {
                    Ok(Some(on_device)) => {
                        self.resident.insert(key, on_device);
                        self.queued_bytes += cost;
                        Ok(Some(load))
                    }
                    Ok(None) => {
                        self.cache.remove(key);
                        Ok(None)
                    }
                    Err(e) => {
                        self.cache.remove(key);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Asks the cache for every group's expert and makes the copies it decides; the tier each
    /// group runs at, or `None` when the batch must run on the CPU. The link state is read
    /// before each group, so copies made for this batch count towards a backlog.
    fn place(
        &mut self,
        work: &LayerWork,
        fetch: &Fetch<'_>,
    ) -> Result<Option<Vec<Tier>>, WorkError> {
        let mut tiers = Vec::with_capacity(work.experts.len());
        for e in &work.experts {
            let Some(want) = self.tier(e.precision.format(self.pair)) else {
                return Ok(None);
            };
            let request = Request {
                layer: work.layer,
                expert: e.expert,
                want,
                unimportance: e.unimportance,
                bytes: self.sizes(work.layer, e.expert),
            };
            let link = Link::from_queue(self.queued_bytes, self.backlog_bytes);
            let decision = self.cache.access(&request, link).map_err(cache_error)?;
            match self.apply(work.layer, e.expert, decision, fetch)? {
                Some(tier) => tiers.push(tier),
                None => return Ok(None),
            }
        }
        Ok(Some(tiers))
    }

    fn sizes(&self, layer: u32, expert: u32) -> TierBytes {
        self.sizes
            .get(&(layer, expert))
            .copied()
            .unwrap_or(TierBytes { high: 0, low: 0 })
    }
}

fn cache_error(e: CacheError) -> WorkError {
    WorkError::Expert(format!("GPU cache: {e}"))
}

impl<D> Accelerator for Gpu<D>
where
    D: ExpertDevice + Send,
    D::Expert: Send,
{
    fn execute(
        &mut self,
        work: &LayerWork,
        fetch: &Fetch<'_>,
    ) -> Result<Option<GpuRun>, WorkError> {
        let before = self.queued_bytes;
        let placed = self.place(work, fetch);
        let copied_bytes = self.queued_bytes - before;
        self.queued_bytes = 0;
        let Some(tiers) = placed? else {
            return Ok(None);
        };
        let mut batch = Vec::with_capacity(work.experts.len());
        let mut used = Vec::with_capacity(work.experts.len());
        for (e, &tier) in work.experts.iter().zip(&tiers) {
            let (on_device, precision) = self
                .resident
                .get(&Key::new(work.layer, e.expert, tier))
                .ok_or_else(|| {
                WorkError::Expert(format!(
                    "layer {} expert {}: the GPU cache lost a copy it had just placed",
                    work.layer, e.expert
                ))
            })?;
            let pairs = ExpertPairs {
                rows: &e.rows,
                weights: &e.weights,
            };
            batch.push((on_device, pairs));
            used.push(*precision);
        }
        let hidden = work.tokens.len() / work.n_tokens.max(1);
        let out = self
            .device
            .run(&work.tokens, hidden, &batch)
            .map_err(WorkError::Expert)?;
        Ok(Some(GpuRun {
            out,
            used,
            copied_bytes,
        }))
    }

    fn prefetch(&mut self, keys: &[ShardKey], fetch: &Fetch<'_>) {
        for key in keys {
            let Some(tier) = self.tier(key.format) else {
                continue;
            };
            let bytes = self.sizes(key.layer, key.expert).get(tier);
            let applied = self
                .cache
                .prefetch(Key::new(key.layer, key.expert, tier), bytes)
                .map_err(cache_error)
                .and_then(|d| self.apply(key.layer, key.expert, d, fetch));
            if let Err(e) = applied {
                tracing::warn!(error = %e, layer = key.layer, expert = key.expert, "GPU prefetch failed");
            }
        }
    }

    fn snapshot(&self) -> GpuSnapshot {
        GpuSnapshot {
            capacity_bytes: self.capacity,
            used_bytes: self.cache.used(Tier::High) + self.cache.used(Tier::Low),
            stats: self.cache.stats(),
        }
    }
}

#[cfg(feature = "cuda")]
impl ExpertDevice for moe_kernels::cuda::CudaExperts {
    type Expert = moe_kernels::cuda::DeviceExpert;

    fn takes(&self, expert: &Expert) -> bool {
        let (gate_up, down) = expert.parts();
        // The CUDA kernels compute SwiGLU without biases; other experts run on the CPU.
        expert.shape() == moe_model::moe::ExpertShape::SWIGLU
            && expert.is_uniform()
            && moe_kernels::cuda::CudaExperts::takes(self, gate_up, down)
    }

    fn upload(&self, expert: &Expert) -> Result<Self::Expert, String> {
        let (gate_up, down) = expert.parts();
        moe_kernels::cuda::CudaExperts::upload(self, gate_up, down).map_err(|e| e.to_string())
    }

    fn run(
        &self,
        x: &[f32],
        hidden: usize,
        batch: &[(&Self::Expert, ExpertPairs<'_>)],
    ) -> Result<Vec<f32>, String> {
        let inputs: Vec<moe_kernels::cuda::ExpertInput> = batch
            .iter()
            .map(|&(expert, pairs)| moe_kernels::cuda::ExpertInput { expert, pairs })
            .collect();
        moe_kernels::cuda::CudaExperts::run(self, x, hidden, &inputs).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use moe_kernels::{Matrix, Pool};

    use super::*;
    use crate::cache_policy::Weights;
    use crate::work::{ExpertRows, ExpertSet, Precision};

    const HIDDEN: usize = 64;
    const INTER: usize = 32;
    const PAIR: PrecisionPair = PrecisionPair {
        high: Format::F16,
        low: Format::Q4,
    };

    /// Holds experts in host memory and runs them with the CPU kernels, counting uploads.
    struct HostDevice {
        pool: Pool,
        uploads: Cell<usize>,
    }

    impl ExpertDevice for HostDevice {
        type Expert = Expert;

        fn takes(&self, expert: &Expert) -> bool {
            expert.is_uniform()
        }

        fn upload(&self, expert: &Expert) -> Result<Expert, String> {
            self.uploads.set(self.uploads.get() + 1);
            Ok(expert.clone())
        }

        fn run(
            &self,
            x: &[f32],
            hidden: usize,
            batch: &[(&Expert, ExpertPairs<'_>)],
        ) -> Result<Vec<f32>, String> {
            let mut out = vec![0.0; x.len()];
            for (expert, pairs) in batch {
                let rows: Vec<f32> = pairs
                    .rows
                    .iter()
                    .flat_map(|&r| &x[r as usize * hidden..(r as usize + 1) * hidden])
                    .copied()
                    .collect();
                let y = expert
                    .forward(&self.pool, &rows, pairs.rows.len())
                    .map_err(|e| e.to_string())?;
                for ((&r, &w), yr) in pairs.rows.iter().zip(pairs.weights).zip(y.chunks(hidden)) {
                    let o = &mut out[r as usize * hidden..(r as usize + 1) * hidden];
                    o.iter_mut().zip(yr).for_each(|(o, v)| *o += w * v);
                }
            }
            Ok(out)
        }
    }

    /// Experts 0..n of layer 0 at both formats of `PAIR`, from seeded values.
    fn host_experts(n: u32) -> ExpertSet {
        let mut set = ExpertSet::new(HIDDEN);
        for expert in 0..n {
            let values = |len: usize, salt: u32| -> Vec<f32> {
                (0..len)
                    .map(|i| {
                        (((i as u32).wrapping_mul(2_654_435_761) ^ ((expert + salt) * 40503))
                            % 1000) as f32
                            / 1e4
                            - 0.05
                    })
                    .collect()
            };
            for format in [PAIR.high, PAIR.low] {
                let gate_up =
                    Matrix::from_f32(2 * INTER, HIDDEN, &values(2 * INTER * HIDDEN, 1), format)
                        .unwrap();
                let down =
                    Matrix::from_f32(HIDDEN, INTER, &values(HIDDEN * INTER, 7), format).unwrap();
                let key = ShardKey {
                    layer: 0,
                    expert,
                    format,
                };
                set.insert(key, Expert::from_parts(gate_up, down).unwrap());
            }
        }
        set
    }

    fn gpu(set: &ExpertSet, capacity: TierBytes, backlog_bytes: u64) -> Gpu<HostDevice> {
        let config = CacheConfig {
            capacity,
            layers: 1,
            weights: Weights::default(),
            downgrade_above: 0.3,
        };
        let sizes = set.keys().map(|k| {
            (
                k,
                set.get(k.layer, k.expert, k.format).unwrap().weight_bytes() as u64,
            )
        });
        let device = HostDevice {
            pool: Pool::new(1).unwrap(),
            uploads: Cell::new(0),
        };
        Gpu::new(device, config, PAIR, sizes, backlog_bytes).unwrap()
    }

    fn fetch(set: &ExpertSet) -> impl Fn(ShardKey) -> Result<Arc<Expert>, WorkError> + '_ {
        |key| {
            set.shared(key).ok_or(WorkError::NotHeld {
                layer: key.layer,
                expert: key.expert,
                format: key.format,
            })
        }
    }

    fn group(expert: u32, rows: Vec<u32>, precision: Precision, unimportance: f32) -> ExpertRows {
        ExpertRows {
            expert,
            weights: rows.iter().map(|&r| 0.25 + 0.125 * r as f32).collect(),
            rows,
            precision,
            unimportance,
        }
    }

    fn work(experts: Vec<ExpertRows>) -> LayerWork {
        let n_tokens = 3;
        LayerWork {
            layer: 0,
            n_tokens,
            tokens: (0..n_tokens * HIDDEN)
                .map(|i| ((i % 13) as f32 - 6.0) / 8.0)
                .collect(),
            experts,
        }
    }

    fn expert_bytes(set: &ExpertSet, format: Format) -> u64 {
        set.get(0, 0, format).unwrap().weight_bytes() as u64
    }

    #[test]
    fn runs_what_the_cpu_runs_and_reuses_resident_copies() {
        let set = host_experts(3);
        let pool = Pool::new(1).unwrap();
        let all = TierBytes {
            high: 1 << 20,
            low: 1 << 20,
        };
        let mut gpu = gpu(&set, all, u64::MAX);
        let w = work(vec![
            group(0, vec![0, 2], Precision::High, 0.0),
            group(2, vec![1, 2], Precision::Low, 0.5),
        ]);
        let cpu = set.execute(&w, PAIR, &pool).unwrap();
        let first = gpu.execute(&w, &fetch(&set)).unwrap().unwrap();
        assert_eq!(first.out, cpu);
        assert_eq!(first.used, [Format::F16, Format::Q4]);
        assert_eq!(
            first.copied_bytes,
            expert_bytes(&set, Format::F16) + expert_bytes(&set, Format::Q4)
        );
        let again = gpu.execute(&w, &fetch(&set)).unwrap().unwrap();
        assert_eq!((again.out, again.copied_bytes), (cpu, 0));
        assert_eq!(gpu.device.uploads.get(), 2);
    }

    #[test]
    fn a_backed_up_link_serves_unimportant_groups_at_low_precision() {
        let set = host_experts(2);
        let pool = Pool::new(1).unwrap();
        let all = TierBytes {
            high: 1 << 20,
            low: 1 << 20,
        };
        // Any copy backs the link up: the first group's copy makes the second group downgrade.
        let mut gpu = gpu(&set, all, 0);
        let w = work(vec![
            group(0, vec![0, 1], Precision::High, 0.0),
            group(1, vec![1, 2], Precision::High, 0.6),
        ]);
        let run = gpu.execute(&w, &fetch(&set)).unwrap().unwrap();
        assert_eq!(run.used, [Format::F16, Format::Q4]);
        let mut as_served = w.clone();
        as_served.experts[1].precision = Precision::Low;
        assert_eq!(run.out, set.execute(&as_served, PAIR, &pool).unwrap());
        assert_eq!(gpu.snapshot().stats.downgraded_loads, 1);
    }

    #[test]
    fn the_top_expert_is_never_downgraded() {
        let set = host_experts(2);
        let all = TierBytes {
            high: 1 << 20,
            low: 1 << 20,
        };
        let mut gpu = gpu(&set, all, 0);
        let w = work(vec![
            group(0, vec![0], Precision::High, 0.0),
            group(1, vec![1], Precision::High, 0.0),
        ]);
        let run = gpu.execute(&w, &fetch(&set)).unwrap().unwrap();
        assert_eq!(run.used, [Format::F16, Format::F16]);
    }

    #[test]
    fn evictions_keep_the_pools_within_capacity() {
        let set = host_experts(4);
        let high = expert_bytes(&set, Format::F16);
        let low = expert_bytes(&set, Format::Q4);
        let capacity = TierBytes {
            high: 2 * high,
            low,
        };
        let mut gpu = gpu(&set, capacity, u64::MAX);
        for step in 0..12u32 {
            let w = work(vec![
                group(step % 4, vec![0], Precision::High, 0.0),
                group((step + 1) % 4, vec![1], Precision::Low, 0.5),
            ]);
            gpu.execute(&w, &fetch(&set)).unwrap().unwrap();
            let snapshot = gpu.snapshot();
            assert!(snapshot.used_bytes <= 2 * high + low, "step {step}");
            assert_eq!(
                gpu.resident.len(),
                gpu.cache.resident().count(),
                "step {step}"
            );
        }
        assert!(
            gpu.device.uploads.get() > 4,
            "four experts in room for three copies must evict"
        );
    }

    #[test]
    fn pinned_prefetches_and_foreign_formats_send_the_batch_to_the_cpu() {
        let set = host_experts(2);
        let high = expert_bytes(&set, Format::F16);
        let mut gpu = gpu(&set, TierBytes { high, low: 1 << 20 }, u64::MAX);
        let pinned = ShardKey {
            layer: 0,
            expert: 0,
            format: Format::F16,
        };
        gpu.prefetch(&[pinned], &fetch(&set));
        assert_eq!(gpu.device.uploads.get(), 1);
        let other = work(vec![group(1, vec![0], Precision::High, 0.0)]);
        assert_eq!(gpu.execute(&other, &fetch(&set)).unwrap(), None);
        let q8 = work(vec![group(0, vec![0], Precision::Exact(Format::Q8), 0.0)]);
        assert_eq!(gpu.execute(&q8, &fetch(&set)).unwrap(), None);
        // The pinned copy serves its own expert without another upload.
        let own = work(vec![group(0, vec![0], Precision::High, 0.0)]);
        assert!(gpu.execute(&own, &fetch(&set)).unwrap().is_some());
        assert_eq!(gpu.device.uploads.get(), 1);
    }
}
