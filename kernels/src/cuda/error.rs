use crate::format::Format;

/// Why the CUDA backend cannot compile, load or run the expert kernels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaError {
    /// `libnvrtc` could not be loaded.
    #[error(
        "NVRTC (libnvrtc.so.12) was not found; install it (e.g. `pip install nvidia-cuda-nvrtc-cu12` and put its lib directory on LD_LIBRARY_PATH) or use the CPU backend"
    )]
    NvrtcMissing,
    /// `libcuda` (the driver) could not be loaded.
    #[error("the CUDA driver (libcuda.so) was not found")]
    DriverMissing,
    /// The driver loaded but reports no device.
    #[error("the CUDA driver reports no GPU")]
    NoDevice,
    /// An architecture name that is not `sm_<major><minor>`.
    #[error("unknown GPU architecture {0:?} (expected sm_80, sm_86, sm_89, sm_90, ...)")]
    UnknownArch(String),
    /// NVRTC refused the source; `log` is its output.
    #[error("NVRTC could not compile the kernels for {arch}:\n{log}")]
    Compile { arch: String, log: String },
    /// A format the GPU kernels do not implement.
    #[error("the GPU kernels do not implement {0} weights (only f16, fp8, q8, q4, mxfp4, q2)")]
    UnsupportedFormat(Format),
    /// Shapes or index arrays the kernels cannot take.
    #[error("{0}")]
    Shape(String),
    /// A driver or NVRTC call failed.
    #[error("CUDA: {0}")]
    Api(String),
    /// Reading or writing the cubin cache.
    #[error("kernel cache {path}: {message}")]
    Cache { path: String, message: String },
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Api(e.to_string())
    }
}

impl From<cudarc::nvrtc::result::NvrtcError> for CudaError {
    fn from(e: cudarc::nvrtc::result::NvrtcError) -> Self {
        CudaError::Api(e.to_string())
    }
}
