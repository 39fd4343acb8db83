//! One GPU running the expert kernels: probing for it, loading the kernels, holding experts in
//! device memory, and running one layer's batch (three launches on one stream, see
//! `cuda/experts.cu`). Weights are copied on a stream of their own, so uploads overlap compute.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg, sys,
};
use cudarc::nvrtc::Ptx;

use super::compile::{Arch, compile_cached, nvrtc_present};
use super::{CudaError, ROWS_PER_BLOCK, THREADS};
use crate::batch::{ExpertBatch, ExpertPairs};
use crate::format::Format;
use crate::matrix::Matrix;

/// Whether this machine can run the CUDA backend, found without touching anything that panics
/// when the libraries are absent.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Ready { devices: usize },
    Unavailable(CudaError),
}

impl Availability {
    pub fn probe() -> Availability {
        // SAFETY: only tries to load the driver library.
        if !unsafe { sys::is_culib_present() } {
            return Availability::Unavailable(CudaError::DriverMissing);
        }
        if !nvrtc_present() {
            return Availability::Unavailable(CudaError::NvrtcMissing);
        }
        match CudaContext::device_count() {
            Ok(n) if n > 0 => Availability::Ready {
                devices: n as usize,
            },
            Ok(_) => Availability::Unavailable(CudaError::NoDevice),
            Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => {
                Availability::Unavailable(CudaError::NoDevice)
            }
            Err(e) => Availability::Unavailable(e.into()),
        }
    }
}

/// The kernels for one weight format.
struct FormatKernels {
    format: Format,
    gate_up: CudaFunction,
    down: CudaFunction,
}

/// An expert's stacked gate/up (`[2 * inter, hidden]`) and down (`[hidden, inter]`) matrices in
/// device memory.
pub struct DeviceExpert {
    format: Format,
    hidden: usize,
    inter: usize,
    gate_up: CudaSlice<u8>,
    down: CudaSlice<u8>,
}

impl DeviceExpert {
    pub fn format(&self) -> Format {
        self.format
    }

    /// Device bytes the expert occupies.
    pub fn bytes(&self) -> usize {
        self.gate_up.len() + self.down.len()
    }
}

/// One expert of a batch with the pairs routed to it.
pub struct ExpertInput<'a> {
    pub expert: &'a DeviceExpert,
    pub pairs: ExpertPairs<'a>,
}

/// A GPU with the expert kernels loaded.
pub struct CudaExperts {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    copies: Arc<CudaStream>,
    formats: Vec<FormatKernels>,
    combine: CudaFunction,
    name: String,
    arch: Arch,
    /// Device memory for a batch's inputs, intermediates and output, grown as needed.
    scratch: Mutex<Option<CudaSlice<u8>>>,
}

/// A batch's host-side inputs laid out as one byte buffer, each array 16-byte aligned, followed
/// by the sizes of the device-only arrays; offsets are in bytes.
#[derive(Default)]
struct Staging {
    bytes: Vec<u8>,
    len: usize,
}

impl Staging {
    fn align(&mut self) -> usize {
        self.len = self.len.next_multiple_of(16);
        self.len
    }

    /// Appends an array (before any [`Staging::reserve`]); returns its offset.
    fn push<T: bytemuck::Pod>(&mut self, values: impl Iterator<Item = T>) -> usize {
        let at = self.align();
        self.bytes.resize(at, 0);
        values.for_each(|v| self.bytes.extend_from_slice(bytemuck::bytes_of(&v)));
        self.len = self.bytes.len();
        at
    }

    /// Reserves room for `n` values on the device only; returns its offset.
    fn reserve<T>(&mut self, n: usize) -> usize {
        let at = self.align();
        self.len += n.max(1) * std::mem::size_of::<T>();
        at
    }
}

fn to_i32(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v)
        .map_err(|_| CudaError::Shape(format!("{what} {v} exceeds the kernels' int range")))
}

impl CudaExperts {
    /// Opens GPU `ordinal`, compiles the kernels for its architecture (or reuses the cubin cached
    /// in `cache_dir`) and loads them.
    pub fn open(ordinal: usize, cache_dir: &Path) -> Result<CudaExperts, CudaError> {
        if let Availability::Unavailable(e) = Availability::probe() {
            return Err(e);
        }
        let context = CudaContext::new(ordinal)?;
        // SAFETY: nothing is allocated yet. Streams are synchronised by hand instead of through
        // an event per use of every buffer: `upload` waits for its copies before returning, and
        // `run` for its stream, so no buffer is ever freed, or read on one stream, while another
        // stream still uses it.
        unsafe { context.disable_event_tracking() };
        let (major, minor) = context.compute_capability()?;
        let arch = Arch::new(major as u32, minor as u32);
        let image = compile_cached(arch, cache_dir)?;
        let module = context.load_module(Ptx::from_binary(image))?;
        let formats = Format::GPU
            .into_iter()
            .map(|format| {
                Ok(FormatKernels {
                    format,
                    gate_up: module.load_function(&format!("moe_gate_up_{format}"))?,
                    down: module.load_function(&format!("moe_down_{format}"))?,
                })
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        Ok(CudaExperts {
            name: context.name()?,
            stream: context.default_stream(),
            copies: context.new_stream()?,
            combine: module.load_function("moe_combine")?,
            formats,
            context,
            arch,
            scratch: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Device-to-device copy bandwidth in bytes per second over a `bytes`-long buffer, counting
    /// bytes read and written: the memory bound the expert kernels are compared with.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64, CudaError> {
        let s = &self.stream;
        let src = s.alloc_zeros::<u8>(bytes)?;
        let mut dst = s.alloc_zeros::<u8>(bytes)?;
        s.memcpy_dtod(&src, &mut dst)?;
        s.synchronize()?;
        let start = Instant::now();
        for _ in 0..reps {
            s.memcpy_dtod(&src, &mut dst)?;
        }
        s.synchronize()?;
        Ok(2.0 * (bytes * reps) as f64 / start.elapsed().as_secs_f64())
    }

    /// `(free, total)` device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize), CudaError> {
        Ok(self.context.mem_get_info()?)
    }

    fn kernels(&self, format: Format) -> Result<&FormatKernels, CudaError> {
        self.formats
            .iter()
            .find(|k| k.format == format)
            .ok_or(CudaError::UnsupportedFormat(format))
    }

    /// Whether the kernels can run an expert of these matrices: one format they implement, a
    /// SwiGLU expert's shapes, widths that are multiples of 32.
    pub fn takes(&self, gate_up: &Matrix, down: &Matrix) -> bool {
        self.kernels(gate_up.format()).is_ok() && Self::shaped_for_kernels(gate_up, down)
    }

    fn shaped_for_kernels(gate_up: &Matrix, down: &Matrix) -> bool {
        let (hidden, inter) = (gate_up.cols(), down.cols());
        down.format() == gate_up.format()
            && gate_up.rows() == 2 * inter
            && down.rows() == hidden
            && hidden.is_multiple_of(32)
            && inter.is_multiple_of(32)
    }

    /// Copies an expert to the device on the copy stream, so an upload from another thread
    /// overlaps a running batch; returns once the copy has landed.
    pub fn upload(&self, gate_up: &Matrix, down: &Matrix) -> Result<DeviceExpert, CudaError> {
        let format = gate_up.format();
        self.kernels(format)?;
        let (hidden, inter) = (gate_up.cols(), down.cols());
        if !Self::shaped_for_kernels(gate_up, down) {
            return Err(CudaError::Shape(format!(
                "expert gate/up {}x{} {} and down {}x{} {} do not form a SwiGLU expert with 32-aligned sizes",
                gate_up.rows(),
                gate_up.cols(),
                gate_up.format(),
                down.rows(),
                down.cols(),
                down.format()
            )));
        }
        let expert = DeviceExpert {
            format,
            hidden,
            inter,
            gate_up: self.copies.clone_htod(gate_up.as_bytes())?,
            down: self.copies.clone_htod(down.as_bytes())?,
        };
        self.copies.synchronize()?;
        Ok(expert)
    }

    /// Runs one layer's batch: `x` is `[n_tokens, hidden]`; returns, per token, the gate-weighted
    /// sum of its experts' outputs (`[n_tokens, hidden]`).
    pub fn run(
        &self,
        x: &[f32],
        hidden: usize,
        experts: &[ExpertInput<'_>],
    ) -> Result<Vec<f32>, CudaError> {
        let n_tokens = token_rows(x, hidden)?;
        let Some(inter) = common_inter(experts, hidden)? else {
            return Ok(vec![0.0; x.len()]);
        };
        // One launch per format covers a contiguous run of experts, so group them by format.
        let mut order: Vec<usize> = (0..experts.len()).collect();
        order.sort_by_key(|&i| experts[i].expert.format);
        let pairs: Vec<ExpertPairs> = order.iter().map(|&i| experts[i].pairs).collect();
        let batch =
            ExpertBatch::new(n_tokens, &pairs).map_err(|e| CudaError::Shape(e.to_string()))?;
        if batch.n_pairs() == 0 {
            return Ok(vec![0.0; x.len()]);
        }
        if batch.n_experts() > 65_535 {
            return Err(CudaError::Shape(format!(
                "{} experts in one batch exceed the grid's 65535",
                batch.n_experts()
            )));
        }
        let (hidden_i, inter_i) = (
            to_i32(hidden, "hidden size")?,
            to_i32(inter, "intermediate size")?,
        );
        to_i32(
            batch.n_pairs().max(n_tokens) * hidden.max(inter),
            "buffer length",
        )?;
        let s = &self.stream;
        // Everything the kernels read goes up in one copy, into a scratch buffer that also holds
        // h (n_pairs x inter), y (n_pairs x hidden) and the output, every element of which the
        // kernels write; the scratch is kept for the next batch.
        let mut staging = Staging::default();
        let gate_up_ptrs = staging.push(order.iter().map(|&i| {
            let (ptr, _read) = experts[i].expert.gate_up.device_ptr(s);
            ptr
        }));
        let down_ptrs = staging.push(order.iter().map(|&i| {
            let (ptr, _read) = experts[i].expert.down.device_ptr(s);
            ptr
        }));
        let pair_offsets = staging.push(batch.pair_offsets.iter().copied());
        let pair_rows = staging.push(batch.pair_rows.iter().copied());
        let pair_weights = staging.push(batch.pair_weights.iter().copied());
        let token_offsets = staging.push(batch.token_offsets.iter().copied());
        let token_pairs = staging.push(batch.token_pairs.iter().copied());
        let x_at = staging.push(x.iter().copied());
        let h_at = staging.reserve::<f32>(batch.n_pairs() * inter);
        let y_at = staging.reserve::<f32>(batch.n_pairs() * hidden);
        let out_at = staging.reserve::<f32>(x.len());
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if scratch.as_ref().is_none_or(|b| b.len() < staging.len) {
            *scratch = None;
            // SAFETY: the buffer is only read where this call's copy or kernels wrote first.
            *scratch = Some(unsafe { s.alloc::<u8>(staging.len.next_power_of_two()) }?);
        }
        let buffer = scratch.as_mut().expect("allocated above");
        s.memcpy_htod(&staging.bytes, &mut buffer.slice_mut(..staging.bytes.len()))?;
        let (base, _written) = buffer.device_ptr(s);
        let at = |offset: usize| base + offset as u64;
        let block = (THREADS, 1, 1);
        let mut start = 0;
        while start < order.len() {
            let format = experts[order[start]].expert.format;
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|&&i| experts[i].expert.format == format)
                    .count();
            let kernels = self.kernels(format)?;
            let n = (end - start) as u32;
            let gate_up_cfg = LaunchConfig {
                grid_dim: ((inter as u32).div_ceil(ROWS_PER_BLOCK), n, 1),
                block_dim: block,
                shared_mem_bytes: 0,
            };
            let down_cfg = LaunchConfig {
                grid_dim: ((hidden as u32).div_ceil(ROWS_PER_BLOCK), n, 1),
                ..gate_up_cfg
            };
            let offsets = at(pair_offsets + 4 * start);
            // SAFETY: the arguments match `moe_gate_up_<fmt>` in experts.cu (pointers passed as
            // 64-bit device addresses into the scratch buffer laid out above); every index array
            // was built by `ExpertBatch`, whose rows are below n_tokens, and h has the length the
            // kernel indexes (n_pairs x inter).
            unsafe {
                s.launch_builder(&kernels.gate_up)
                    .arg(&at(gate_up_ptrs + 8 * start))
                    .arg(&offsets)
                    .arg(&at(pair_rows))
                    .arg(&at(x_at))
                    .arg(&at(h_at))
                    .arg(&hidden_i)
                    .arg(&inter_i)
                    .launch(gate_up_cfg)?;
            }
            // SAFETY: as above for `moe_down_<fmt>` (y: n_pairs x hidden).
            unsafe {
                s.launch_builder(&kernels.down)
                    .arg(&at(down_ptrs + 8 * start))
                    .arg(&offsets)
                    .arg(&at(pair_weights))
                    .arg(&at(h_at))
                    .arg(&at(y_at))
                    .arg(&hidden_i)
                    .arg(&inter_i)
                    .launch(down_cfg)?;
            }
            start = end;
        }
        let combine_cfg = LaunchConfig {
            grid_dim: (n_tokens as u32, 1, 1),
            block_dim: block,
            shared_mem_bytes: 0,
        };
        // SAFETY: `moe_combine` reads token_offsets (n_tokens + 1), token_pairs (n_pairs) and y,
        // and writes out (n_tokens x hidden).
        unsafe {
            s.launch_builder(&self.combine)
                .arg(&at(token_offsets))
                .arg(&at(token_pairs))
                .arg(&at(y_at))
                .arg(&at(out_at))
                .arg(&hidden_i)
                .launch(combine_cfg)?;
        }
        let mut out = vec![0.0f32; x.len()];
        let out_bytes = out_at..out_at + 4 * x.len();
        s.memcpy_dtoh(
            &buffer.slice(out_bytes),
            bytemuck::cast_slice_mut::<f32, u8>(&mut out),
        )?;
        s.synchronize()?;
        Ok(out)
    }
}

/// The rows of `x`, refused unless it is whole rows of `hidden`.
fn token_rows(x: &[f32], hidden: usize) -> Result<usize, CudaError> {
    if hidden == 0 || !x.len().is_multiple_of(hidden) {
        return Err(CudaError::Shape(format!(
            "{} input values are not whole rows of {hidden}",
            x.len()
        )));
    }
    Ok(x.len() / hidden)
}

/// The intermediate size every expert of a batch shares (`None` for no experts), refused unless
/// they all have `hidden` and one intermediate size.
fn common_inter(experts: &[ExpertInput<'_>], hidden: usize) -> Result<Option<usize>, CudaError> {
    let Some(first) = experts.first() else {
        return Ok(None);
    };
    let inter = first.expert.inter;
    match experts
        .iter()
        .find(|e| e.expert.hidden != hidden || e.expert.inter != inter)
    {
        Some(e) => Err(CudaError::Shape(format!(
            "an expert of hidden {} / intermediate {} in a batch of hidden {hidden} / intermediate {inter}",
            e.expert.hidden, e.expert.inter
        ))),
        None => Ok(Some(inter)),
    }
}
