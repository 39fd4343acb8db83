//! [`Pool`]: dedicated threads that run matrix-vector products split by rows.
//!
//! Each call validates shapes, prepares the activations once (int8 blocks for quantized
//! weights), then splits the rows into a few contiguous chunks per thread that the threads claim
//! in turn (the calling thread works too; see `workers` for why these are not rayon threads).
//! Small products run on the calling thread. The pool does not own or cache weights.

use std::fmt;
use std::ops::Range;

use crate::activation;
use crate::error::KernelError;
use crate::isa::Isa;
use crate::kernel::{self, Act, Out};
use crate::matrix::Matrix;
use crate::scalar::check_shapes;
use crate::workers::Workers;

/// Weight bytes (times vectors) below which a product is not worth another chunk.
const MIN_BYTES_PER_CHUNK: usize = 32 * 1024;

/// Chunks per thread, so a thread that is descheduled for a while delays only a small part.
const CHUNKS_PER_THREAD: usize = 4;

/// Rows per chunk are rounded up to a multiple of this (the matvec tile height).
const ROW_GRAIN: usize = 4;

/// A dedicated pool of kernel threads (the calling thread counts as one of them).
pub struct Pool {
    workers: Workers,
    threads: usize,
    isa: Isa,
}

impl Pool {
    /// A pool of `threads` threads (0 = one per available core; the calling thread is one of
    /// them, so `threads - 1` are started) using the best SIMD level.
    pub fn new(threads: usize) -> Result<Pool, KernelError> {
        Pool::with_isa(threads, Isa::detect())
    }

    /// A pool that uses the kernels of `isa` (for tests and benchmarks of a specific path).
    pub fn with_isa(threads: usize, isa: Isa) -> Result<Pool, KernelError> {
        if !isa.is_supported() {
            return Err(KernelError::UnsupportedIsa(isa));
        }
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let workers =
            Workers::start(threads).map_err(|e| KernelError::ThreadPool(e.to_string()))?;
        Ok(Pool {
            workers,
            threads,
            isa,
        })
    }

    /// Number of threads that run kernels (the calling thread included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The SIMD level this pool's kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs `f(0)`, ..., `f(chunks - 1)` on the pool's threads (including the calling one) and
    /// returns when all are done. While another call is running on the pool (or when called
    /// from inside `f`), the chunks run on the calling thread instead.
    pub fn parallel_for(&self, chunks: usize, f: impl Fn(usize) + Sync) {
        self.workers.run(chunks, &f);
    }

    /// `y[r] = Σ_c W[r, c] x[c]` (`y.len() == rows`, `x.len() == cols`).
    pub fn matvec(&self, w: &Matrix, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
        self.matmul(w, x, 1, y)
    }

    /// `ys[i*rows + r] = Σ_c W[r, c] xs[i*cols + c]` for `i` in `0..n`: `n` products that read
    /// the weights once.
    pub fn matmul(
        &self,
        w: &Matrix,
        xs: &[f32],
        n: usize,
        ys: &mut [f32],
    ) -> Result<(), KernelError> {
        check_shapes(w, xs, n, ys)?;
        let rows = w.rows();
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let quantized;
        let act = if w.format().takes_int8_activations() {
            quantized = activation::quantize(xs);
            Act::Q(&quantized)
        } else {
            Act::F32(xs)
        };
        let out = Out::new(ys, rows);
        let work = w.nbytes().saturating_mul(n);
        let chunks = (work / MIN_BYTES_PER_CHUNK).clamp(1, self.threads * CHUNKS_PER_THREAD);
        let per_chunk = rows.div_ceil(chunks).next_multiple_of(ROW_GRAIN);
        let chunks = rows.div_ceil(per_chunk);
        let exec = |job: &(dyn Fn(Range<usize>) + Sync)| {
            self.workers.run(chunks, &|c| {
                let start = c * per_chunk;
                job(start..(start + per_chunk).min(rows));
            });
        };
        kernel::run(self.isa, w, act, n, &out, &exec);
        Ok(())
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .field("isa", &self.isa)
            .finish()
    }
}
