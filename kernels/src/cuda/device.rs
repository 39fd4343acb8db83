//! One GPU running the expert kernels: probing for it, loading the kernels, holding experts in
//! device memory, and running one layer's batch (three launches on one stream, see
//! `cuda/experts.cu`). Weights are copied on a stream of their own, so uploads overlap compute.

use std::path::Path;
use std::sync::Arc;

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
        let (major, minor) = context.compute_capability()?;
        let arch = Arch::new(major as u32, minor as u32);
        let image = compile_cached(arch, cache_dir)?;
        let module = context.load_module(Ptx::from_binary(image))?;
        let formats = [Format::F16, Format::Q8, Format::Q4, Format::Q2]
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
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn arch(&self) -> Arch {
        self.arch
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

    /// Copies an expert to the device on the copy stream; compute launches that use it wait for
    /// the copy.
    pub fn upload(&self, gate_up: &Matrix, down: &Matrix) -> Result<DeviceExpert, CudaError> {
        let format = gate_up.format();
        self.kernels(format)?;
        let (hidden, inter) = (gate_up.cols(), down.cols());
        let consistent = down.format() == format
            && gate_up.rows() == 2 * inter
            && down.rows() == hidden
            && hidden.is_multiple_of(32)
            && inter.is_multiple_of(32);
        if !consistent {
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
        Ok(DeviceExpert {
            format,
            hidden,
            inter,
            gate_up: self.copies.clone_htod(gate_up.as_bytes())?,
            down: self.copies.clone_htod(down.as_bytes())?,
        })
    }

    /// Runs one layer's batch: `x` is `[n_tokens, hidden]`; returns, per token, the gate-weighted
    /// sum of its experts' outputs (`[n_tokens, hidden]`).
    pub fn run(
        &self,
        x: &[f32],
        hidden: usize,
        experts: &[ExpertInput<'_>],
    ) -> Result<Vec<f32>, CudaError> {
        if hidden == 0 || !x.len().is_multiple_of(hidden) {
            return Err(CudaError::Shape(format!(
                "{} input values are not whole rows of {hidden}",
                x.len()
            )));
        }
        let n_tokens = x.len() / hidden;
        let Some(first) = experts.first() else {
            return Ok(vec![0.0; x.len()]);
        };
        let inter = first.expert.inter;
        if let Some(e) = experts
            .iter()
            .find(|e| e.expert.hidden != hidden || e.expert.inter != inter)
        {
            return Err(CudaError::Shape(format!(
                "an expert of hidden {} / intermediate {} in a batch of hidden {hidden} / intermediate {inter}",
                e.expert.hidden, e.expert.inter
            )));
        }
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
        let s = &self.stream;
        let (hidden_i, inter_i) = (
            to_i32(hidden, "hidden size")?,
            to_i32(inter, "intermediate size")?,
        );
        to_i32(
            batch.n_pairs().max(n_tokens) * hidden.max(inter),
            "buffer length",
        )?;
        let mut gate_up_ptrs = Vec::with_capacity(order.len());
        let mut down_ptrs = Vec::with_capacity(order.len());
        for &i in &order {
            let e = experts[i].expert;
            gate_up_ptrs.push(e.gate_up.device_ptr(s).0);
            down_ptrs.push(e.down.device_ptr(s).0);
        }
        let x_d = s.clone_htod(x)?;
        let gate_up_d = s.clone_htod(&gate_up_ptrs)?;
        let down_d = s.clone_htod(&down_ptrs)?;
        let offsets_d = s.clone_htod(&batch.pair_offsets)?;
        let rows_d = s.clone_htod(&batch.pair_rows)?;
        let weights_d = s.clone_htod(&batch.pair_weights)?;
        let token_offsets_d = s.clone_htod(&batch.token_offsets)?;
        let token_pairs_d = s.clone_htod(&batch.token_pairs)?;
        let mut h_d = s.alloc_zeros::<f32>(batch.n_pairs().max(1) * inter)?;
        let mut y_d = s.alloc_zeros::<f32>(batch.n_pairs().max(1) * hidden)?;
        let mut out_d = s.alloc_zeros::<f32>(x.len())?;
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
            let (ptrs, offsets) = (gate_up_d.slice(start..end), offsets_d.slice(start..=end));
            // SAFETY: the arguments match `moe_gate_up_<fmt>` in experts.cu; every index array
            // was built by `ExpertBatch`, whose rows are below n_tokens, and the buffers have
            // the lengths the kernels index (h: n_pairs x inter).
            unsafe {
                s.launch_builder(&kernels.gate_up)
                    .arg(&ptrs)
                    .arg(&offsets)
                    .arg(&rows_d)
                    .arg(&x_d)
                    .arg(&mut h_d)
                    .arg(&hidden_i)
                    .arg(&inter_i)
                    .launch(gate_up_cfg)?;
            }
            let ptrs = down_d.slice(start..end);
            // SAFETY: as above for `moe_down_<fmt>` (y: n_pairs x hidden).
            unsafe {
                s.launch_builder(&kernels.down)
                    .arg(&ptrs)
                    .arg(&offsets)
                    .arg(&weights_d)
                    .arg(&h_d)
                    .arg(&mut y_d)
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
                .arg(&token_offsets_d)
                .arg(&token_pairs_d)
                .arg(&y_d)
                .arg(&mut out_d)
                .arg(&hidden_i)
                .launch(combine_cfg)?;
        }
        let out = s.clone_dtoh(&out_d)?;
        s.synchronize()?;
        Ok(out)
    }
}
