//! The crate's one error type. Every fallible kernel entry point returns it; nothing here panics on
//! shapes or bytes a caller supplies.

use crate::format::Format;

/// Why a kernel call or a matrix construction was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// A buffer or dimension does not have the length the operation needs.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A quantized format needs whole blocks along each row.
    #[error("{cols} columns is not a multiple of the {block}-element quantization block")]
    UnalignedCols { cols: usize, block: usize },
    /// Matrices that must share a format do not.
    #[error("format mismatch: expected {expected}, got {got}")]
    FormatMismatch { expected: Format, got: Format },
    /// A format name that is none of `f32`, `f16`, `bf16`, `fp8`, `q8`, `q4`, `mxfp4`, `q2`.
    #[error("unknown weight format {0:?} (expected one of f32, f16, bf16, fp8, q8, q4, mxfp4, q2)")]
    UnknownFormat(String),
    /// Raw bytes whose length does not match the matrix they claim to hold.
    #[error("a {format} matrix of {rows}x{cols} is {expected} bytes, got {got}")]
    InvalidBytes {
        format: Format,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    /// `rows * cols` (or the byte size) does not fit in `usize`.
    #[error("a {rows}x{cols} matrix is too large to address")]
    TooLarge { rows: usize, cols: usize },
    /// NaN or infinity cannot be represented by a block scale.
    #[error("non-finite value at element {index} cannot be quantized to {format}")]
    NonFinite { format: Format, index: usize },
    /// An fp8 weight code that is NaN, or a block scale that is not finite.
    #[error("fp8 {what} {index} is NaN or infinite")]
    InvalidFp8 { what: &'static str, index: usize },
    /// An mxfp4 block whose E8M0 scale is NaN (255) or that holds a value beyond the f32 range.
    #[error("mxfp4 block {index} has a NaN scale or a value beyond the f32 range")]
    InvalidMxfp4 { index: usize },
    /// A row index past the end of the matrix.
    #[error("row {row} out of range for a matrix with {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },
    /// An instruction-set name that is none of `scalar`, `avx2`, `avx512`, `avx512-vnni`.
    #[error("unknown instruction set {0:?} (expected one of scalar, avx2, avx512, avx512-vnni)")]
    UnknownIsa(String),
    /// The requested SIMD instruction set is not available on this CPU.
    #[error("instruction set {0} is not supported by this CPU")]
    UnsupportedIsa(crate::isa::Isa),
    /// The worker threads could not be started.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}
