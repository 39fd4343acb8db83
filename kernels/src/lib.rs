//! Quantized weight formats and CPU kernels for serving Mixture-of-Experts models.
//!
//! * [`Format`] names the storage formats: `f32`, `f16`, `bf16` and the 32-element block formats
//!   `fp8`, `q8`, `q4`, `mxfp4`, `q2` whose byte layouts are documented in [`quant`] (a CUDA backend reads the same
//!   bytes).
//! * [`Matrix`] holds a row-major weight matrix in one format and converts between formats.
//! * [`Pool`] runs `y = W x` (`matvec`) and small batches (`matmul`) on a dedicated thread pool,
//!   with SIMD kernels picked at run time ([`Isa`]); [`scalar`] has the single-threaded
//!   reference they are tested against.
//! * [`ExpertBatch`] lays out one MoE layer's (token, expert, weight) pairs for the GPU expert
//!   kernels in `cuda/experts.cu`.
//! * `cuda` (feature `cuda`) compiles those kernels with NVRTC and runs them on a GPU.
//! * [`mmap::MappedFile`] maps checkpoint and shard files; [`bandwidth`] measures memory read
//!   bandwidth, the bound for memory-bound decoding.
//!
//! Not here: model structure, file formats, scheduling across experts or nodes.
#![allow(unsafe_code)]

pub mod activation;
pub mod bandwidth;
mod batch;
#[cfg(feature = "cuda")]
pub mod cuda;
mod error;
mod format;
mod isa;
mod kernel;
mod matrix;
pub mod mmap;
mod pool;
pub mod quant;
pub mod scalar;
pub mod vector;
mod workers;

pub use batch::{ExpertBatch, ExpertPairs};
pub use error::KernelError;
pub use format::{Fit, Format};
pub use isa::Isa;
pub use matrix::Matrix;
pub use pool::Pool;
pub use quant::{
    BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8, E4M3_MAX, e4m3_to_f32, e8m0_to_f32,
    f32_to_e4m3,
};

#[cfg(test)]
mod send_sync {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}

    fn assert_shared<T: Send + Sync>() {}

    #[test]
    fn types_are_shareable() {
        assert_traits::<super::Matrix>();
        assert_traits::<super::Format>();
        assert_shared::<super::Pool>();
        assert_shared::<super::mmap::MappedFile>();
    }
}
