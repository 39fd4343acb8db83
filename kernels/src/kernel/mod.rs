//! The kernel driver: walks a range of weight rows in tiles of `R` rows x `T` activation vectors
//! and hands each tile to the instruction-set specific dot products.
//!
//! A tile computes `R` whole rows against `T` whole vectors, so the per-call overhead of the
//! driver is paid once per `R` rows; inside a tile each weight block is loaded once and used for
//! all `T` vectors (that is what makes `matmul` cheaper than `n` matvecs). Validation of shapes
//! happens before this module is reached (in `Pool` and `scalar`).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod scalar;

use std::borrow::Cow;
use std::ops::Range;

use crate::activation::ActBlock;
use crate::isa::Isa;
use crate::matrix::{Matrix, Storage};

/// The right-hand side of a product, already prepared for the weight format.
#[derive(Clone, Copy)]
pub(crate) enum Act<'a> {
    /// Plain f32 vectors, for float weights.
    F32(&'a [f32]),
    /// Int8 blocks, for quantized weights.
    Q(&'a [ActBlock]),
}

/// Destination of a product: `ys[i * rows + r]`, written by several threads at disjoint rows.
pub(crate) struct Out {
    ptr: *mut f32,
    rows: usize,
    len: usize,
}

// SAFETY: `Out` is only a pointer into a `&mut [f32]` the caller holds for the duration of the
// product; threads write disjoint row ranges (see `Out::put`).
unsafe impl Send for Out {}
// SAFETY: as above; no two threads write the same element.
unsafe impl Sync for Out {}

impl Out {
    pub(crate) fn new(ys: &mut [f32], rows: usize) -> Out {
        Out {
            ptr: ys.as_mut_ptr(),
            rows,
            len: ys.len(),
        }
    }

    /// Stores `ys[i * rows + r] = v`.
    ///
    /// # Safety
    /// No other thread may access the same element concurrently, and the slice `Out::new` was
    /// built from must still be borrowed by the caller.
    #[inline]
    unsafe fn put(&self, i: usize, r: usize, v: f32) {
        let idx = i * self.rows + r;
        debug_assert!(r < self.rows && idx < self.len);
        if idx < self.len {
            // SAFETY: in bounds (checked above) and exclusive by the caller's contract.
            unsafe { *self.ptr.add(idx) = v };
        }
    }
}

/// Dot products of `R` consecutive weight rows with `T` consecutive activation vectors.
pub(crate) trait Tile {
    /// Storage unit of a weight row (an element or a block).
    type W: Copy + Sync;
    /// Storage unit of an activation vector.
    type X: Copy + Sync;
    /// Storage unit of an activation vector as the kernel wants it (often `X` itself).
    type P: Copy + Sync;
    /// Whether `matmul` tiles may be 4 rows x 4 vectors (16 accumulators: needs the 32 vector
    /// registers of AVX-512); otherwise they are 2 x 4.
    const WIDE: bool = false;
    /// Rows of a matvec tile. One for kernels that keep up with memory: each thread then reads
    /// its rows as one sequential stream, which the hardware prefetcher serves best (on the
    /// 2-vCPU AVX-512 development VM, a 2-thread matvec went from 21-23 to 28-34 GB/s for f16
    /// and from 17-21 to 24-31 GB/s for q4 against tiles of four rows with software prefetch).
    /// Four for kernels whose arithmetic is the bound (AVX-512 `Mxfp4`, the AVX2 widened block
    /// formats), which then load each activation once for four rows.
    const MATVEC_ROWS: usize = 1;

    /// Units of `P` per vector, for rows of `len` units of `W`.
    fn prepared_len(len: usize) -> usize;

    /// Converts `n` vectors of `len` units each into the kernel's form (once per product).
    fn prepare(x: &[Self::X], n: usize, len: usize) -> Cow<'_, [Self::P]>;

    /// Returns `out[t][r] = dot(w[r*len..(r+1)*len], x[t*plen..(t+1)*plen])` with
    /// `plen = prepared_len(len)`.
    ///
    /// # Safety
    /// The CPU must support the instruction set of the implementation, and
    /// `w.len() >= R * len`, `x.len() >= T * plen`. Kernels may read (not use) units of `w` past
    /// `R * len` up to `w.len()`.
    unsafe fn tile<const R: usize, const T: usize>(
        w: &[Self::W],
        x: &[Self::P],
        len: usize,
    ) -> [[f32; R]; T];
}

/// Implements the identity `prepare` for kernels that take the activations as they are.
macro_rules! unprepared {
    () => {
        type P = Self::X;

        fn prepared_len(len: usize) -> usize {
            len
        }

        fn prepare(x: &[Self::X], _n: usize, _len: usize) -> std::borrow::Cow<'_, [Self::X]> {
            std::borrow::Cow::Borrowed(x)
        }
    };
}
pub(crate) use unprepared;

/// `n` f32 vectors as the kernels of block formats with f32 activations (fp8, mxfp4) read them:
/// `blocks` whole 32-element blocks each, a vector whose width is not a multiple of 32 copied
/// with zeros after it (fp8's padding codes; mxfp4 rows are whole blocks).
pub(crate) fn padded_vectors(x: &[f32], n: usize, blocks: usize) -> Cow<'_, [f32]> {
    let padded = blocks * crate::quant::QK;
    if n == 0 || x.len() == n * padded {
        return Cow::Borrowed(x);
    }
    let cols = x.len() / n;
    let mut out = vec![0.0; n * padded];
    for (o, v) in out.chunks_exact_mut(padded).zip(x.chunks_exact(cols)) {
        o[..cols].copy_from_slice(v);
    }
    Cow::Owned(out)
}

/// Implements `prepare` for the fp8 and mxfp4 kernels, which take f32 vectors padded to whole
/// blocks.
macro_rules! padded_prepared {
    () => {
        type P = f32;

        fn prepared_len(len: usize) -> usize {
            len * crate::quant::QK
        }

        fn prepare(x: &[f32], n: usize, len: usize) -> std::borrow::Cow<'_, [f32]> {
            crate::kernel::padded_vectors(x, n, len)
        }
    };
}
pub(crate) use padded_prepared;

/// How far ahead of the bytes being read a tile of `rows` rows of `row_bytes` each prefetches:
/// the same place in the next tile, or nowhere for a single row. Tiles of several rows read
/// several interleaved streams, which the hardware prefetcher follows poorly; with this prefetch
/// a 2-thread `Q4` matvec of 1024x3584 in four-row tiles went from 14 to 21 GB/s (of about 30
/// GB/s read bandwidth), and half a tile, two tiles and fixed distances of 1 to 8 KiB were no
/// better. A single row is one sequential stream, which the hardware prefetcher follows on its
/// own (see [`Tile::MATVEC_ROWS`]; the AVX-512 `Q4` and `Q2` kernels add a short lead of their
/// own).
#[cfg(target_arch = "x86_64")]
pub(crate) fn prefetch_ahead(row_bytes: usize, rows: usize) -> Option<usize> {
    (rows > 1).then_some(row_bytes * rows)
}

/// Prefetches the `bytes` at `p` plus `ahead`, if there is an `ahead` (see [`prefetch_ahead`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T, ahead: Option<usize>, bytes: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let Some(ahead) = ahead else { return };
    let p = p.cast::<i8>().wrapping_add(ahead);
    for line in (0..bytes).step_by(64) {
        // SAFETY: prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line)) };
    }
}

/// Activation vectors processed together against a range of rows: their prepared form (at most
/// about 64 KiB for 1024 columns, 230 KiB for 3584) stays in L2 while the rows stream by, and the
/// chunk's rows are re-read from L2 for each such block.
const VECTOR_BLOCK: usize = 32;

/// One block of `R` rows starting at `r` against vectors `vectors`.
///
/// # Safety
/// As [`Tile::tile`], with `w.len() >= (r + R) * len`, `x.len() >= vectors.end * plen`, and
/// rows `r..r+R` of `out` owned by this thread.
unsafe fn row_tile<K: Tile, const R: usize, const T: usize>(
    w: &[K::W],
    x: &[K::P],
    len: usize,
    vectors: Range<usize>,
    r: usize,
    out: &Out,
) {
    let plen = K::prepared_len(len);
    let n = vectors.end;
    assert!(w.len() >= (r + R) * len && x.len() >= n * plen);
    let wr = &w[r * len..];
    let store = |i: usize, o: &[[f32; R]]| {
        for (t, row) in o.iter().enumerate() {
            for (k, &v) in row.iter().enumerate() {
                // SAFETY: this thread owns rows r..r+R of `out`.
                unsafe { out.put(i + t, r + k, v) };
            }
        }
    };
    let mut i = vectors.start;
    while i + T <= n {
        // SAFETY: forwarded from the caller; slices are long enough (indexed above).
        let o = unsafe { K::tile::<R, T>(wr, &x[i * plen..(i + T) * plen], len) };
        store(i, &o);
        i += T;
    }
    let xs = &x[i * plen..];
    // SAFETY: as above, for the remaining n - i < T <= 4 vectors.
    unsafe {
        match n - i {
            0 => {}
            1 => store(i, &K::tile::<R, 1>(wr, xs, len)),
            2 => store(i, &K::tile::<R, 2>(wr, xs, len)),
            _ => {
                debug_assert_eq!(n - i, 3, "fewer than T <= 4 vectors remain");
                store(i, &K::tile::<R, 3>(wr, xs, len));
            }
        }
    }
}

/// Computes `rows` of the product with tiles of `R x T`, single rows at the end of the range.
///
/// # Safety
/// As [`row_tile`] for every row of `rows`.
unsafe fn drive<K: Tile, const R: usize, const T: usize>(
    w: &[K::W],
    x: &[K::P],
    len: usize,
    n: usize,
    rows: Range<usize>,
    out: &Out,
) {
    for first in (0..n).step_by(VECTOR_BLOCK) {
        let vectors = first..(first + VECTOR_BLOCK).min(n);
        let mut r = rows.start;
        while r < rows.end {
            // SAFETY: forwarded from the caller.
            unsafe {
                if rows.end - r >= R {
                    row_tile::<K, R, T>(w, x, len, vectors.clone(), r, out);
                    r += R;
                } else {
                    row_tile::<K, 1, T>(w, x, len, vectors.clone(), r, out);
                    r += 1;
                }
            }
        }
    }
}

/// Picks the tile shape: [`Tile::MATVEC_ROWS`] rows for matvec, 4 (or 2) rows x 4 vectors for
/// matmul.
///
/// # Safety
/// As [`drive`].
unsafe fn shape<K: Tile>(
    w: &[K::W],
    x: &[K::P],
    len: usize,
    n: usize,
    rows: Range<usize>,
    out: &Out,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if n == 1 && K::MATVEC_ROWS == 1 {
            drive::<K, 1, 1>(w, x, len, n, rows, out);
        } else if n == 1 {
            drive::<K, 4, 1>(w, x, len, n, rows, out);
        } else if K::WIDE {
            drive::<K, 4, 4>(w, x, len, n, rows, out);
        } else {
            drive::<K, 2, 4>(w, x, len, n, rows, out);
        }
    }
}

/// Runs row ranges of a product, possibly in parallel; each call covers disjoint rows.
pub(crate) type Exec<'a> = &'a dyn Fn(&(dyn Fn(Range<usize>) + Sync));

/// Computes `ys = W xs` for all `n` vectors with the kernels of `isa`: prepares the activations
/// once, then lets `exec` run the row ranges it chooses.
///
/// The caller has validated the shapes (`act` holds `n` vectors of `w.cols()` elements in the
/// form the format needs, `out` covers `n * w.rows()` values), checked that `isa` is supported,
/// and its `exec` hands out disjoint row ranges within `0..w.rows()`.
pub(crate) fn run(isa: Isa, w: &Matrix, act: Act<'_>, n: usize, out: &Out, exec: Exec<'_>) {
    debug_assert!(isa.is_supported());
    let rows = w.rows();
    let cols = w.cols();
    let nb = cols / crate::quant::QK;
    let padded_blocks = cols.div_ceil(crate::quant::QK);
    macro_rules! go {
        ($k:ty, $w:expr, $x:expr, $len:expr) => {{
            let prepared = <$k as Tile>::prepare($x, n, $len);
            exec(&|range: Range<usize>| {
                if range.end <= rows {
                    // SAFETY: `isa` is supported (checked by the caller at pool creation); slice
                    // lengths are validated by the caller and re-checked in `row_tile`; `exec`
                    // gives each range to one thread only.
                    unsafe { shape::<$k>($w, &prepared, $len, n, range, out) }
                }
            })
        }};
    }
    #[cfg(target_arch = "x86_64")]
    let isa_kernels = isa;
    #[cfg(not(target_arch = "x86_64"))]
    let isa_kernels = Isa::Scalar;
    match (isa_kernels, w.storage(), act) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::F32(v), Act::F32(x)) => go!(avx2::F32, v, x, cols),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::F16(v), Act::F32(x)) => go!(avx2::F16, v, x, cols),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::Bf16(v), Act::F32(x)) => go!(avx2::Bf16, v, x, cols),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::Fp8(v), Act::F32(x)) => go!(avx2::Fp8, v, x, padded_blocks),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::Q8(v), Act::Q(x)) => go!(avx2::Q8, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::Q4(v), Act::Q(x)) => go!(avx2::Q4, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::Mxfp4(v), Act::F32(x)) => go!(avx2::Mxfp4, v, x, padded_blocks),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Storage::Q2(v), Act::Q(x)) => go!(avx2::Q2, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, Storage::F32(v), Act::F32(x)) => {
            go!(avx512::F32, v, x, cols)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, Storage::F16(v), Act::F32(x)) => {
            go!(avx512::F16, v, x, cols)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, Storage::Bf16(v), Act::F32(x)) => {
            go!(avx512::Bf16, v, x, cols)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, Storage::Fp8(v), Act::F32(x)) => {
            go!(avx512::Fp8, v, x, padded_blocks)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, Storage::Mxfp4(v), Act::F32(x)) => {
            go!(avx512::Mxfp4, v, x, padded_blocks)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Storage::Q8(v), Act::Q(x)) => go!(avx512::Q8Bw, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Storage::Q4(v), Act::Q(x)) => go!(avx512::Q4Bw, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Storage::Q2(v), Act::Q(x)) => go!(avx512::Q2Bw, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Storage::Q8(v), Act::Q(x)) => go!(avx512::Q8Icl, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Storage::Q4(v), Act::Q(x)) => go!(avx512::Q4Icl, v, x, nb),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, Storage::Q2(v), Act::Q(x)) => go!(avx512::Q2Icl, v, x, nb),
        (_, Storage::F32(v), Act::F32(x)) => go!(scalar::F32, v, x, cols),
        (_, Storage::F16(v), Act::F32(x)) => go!(scalar::F16, v, x, cols),
        (_, Storage::Bf16(v), Act::F32(x)) => go!(scalar::Bf16, v, x, cols),
        (_, Storage::Fp8(v), Act::F32(x)) => go!(scalar::Fp8, v, x, padded_blocks),
        (_, Storage::Q8(v), Act::Q(x)) => go!(scalar::Q8, v, x, nb),
        (_, Storage::Q4(v), Act::Q(x)) => go!(scalar::Q4, v, x, nb),
        (_, Storage::Mxfp4(v), Act::F32(x)) => go!(scalar::Mxfp4, v, x, padded_blocks),
        (_, Storage::Q2(v), Act::Q(x)) => go!(scalar::Q2, v, x, nb),
        _ => debug_assert!(false, "activation prepared for the wrong format"),
    }
}
