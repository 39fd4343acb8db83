//! The CUDA backend: the expert kernels of `cuda/experts.cu`, compiled with NVRTC for the GPU's
//! own architecture and launched with cudarc.
//!
//! Nothing here needs a CUDA library to build. At run time [`Availability::probe`] says whether
//! the driver and NVRTC libraries load and a device answers, without touching anything that
//! would panic when they do not; callers fall back to the CPU kernels otherwise.

mod compile;
mod device;
mod error;

pub use compile::{
    Arch, Cubin, KernelResources, compile, compile_cached, nvrtc_version, parse_ptxas_log,
};
pub use device::{Availability, CudaExperts, DeviceExpert, ExpertInput};
pub use error::CudaError;

/// The kernel source, embedded in every binary that links this crate.
pub const SOURCE: &str = include_str!("../../cuda/experts.cu");

/// Every kernel entry point the source defines.
pub const KERNELS: [&str; 13] = [
    "moe_gate_up_f16",
    "moe_down_f16",
    "moe_gate_up_fp8",
    "moe_down_fp8",
    "moe_gate_up_q8",
    "moe_down_q8",
    "moe_gate_up_q4",
    "moe_down_q4",
    "moe_gate_up_mxfp4",
    "moe_down_mxfp4",
    "moe_gate_up_q2",
    "moe_down_q2",
    "moe_combine",
];

/// Threads per block of the gate/up and down kernels (`MOE_THREADS`), and output rows per block
/// (`WARPS`), as `experts.cu` defines them.
const THREADS: u32 = 256;
const ROWS_PER_BLOCK: u32 = 8;
