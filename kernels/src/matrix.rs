//! [`Matrix`]: a row-major weight matrix held in one [`Format`], with conversions between formats.
//! It owns its data (no memory mapping here) and knows nothing about how it is multiplied.

use std::fmt;

use bytemuck::Pod;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::KernelError;
use crate::format::Format;
use crate::quant::{BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8, QK};

/// Elements above which `from_f32` quantizes on the global rayon pool.
const PARALLEL_QUANTIZE_MIN: usize = 1 << 18;

/// The stored elements or blocks, row-major, no padding.
#[derive(Clone)]
pub(crate) enum Storage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    Fp8(Vec<BlockFp8>),
    Q8(Vec<BlockQ8>),
    Q4(Vec<BlockQ4>),
    Mxfp4(Vec<BlockMxfp4>),
    Q2(Vec<BlockQ2>),
}

/// A row-major `rows x cols` weight matrix in one [`Format`].
///
/// `as_bytes` is exactly the layout documented for the format (little endian), so a matrix can be
/// written to a file or a GPU buffer as is and rebuilt with [`Matrix::from_bytes`].
#[derive(Clone)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Storage,
}

fn element_count(rows: usize, cols: usize) -> Result<usize, KernelError> {
    // Four bytes is the widest element, so a row's bytes (`Format::row_bytes`) cannot overflow
    // either, even for an empty matrix.
    rows.checked_mul(cols)
        .filter(|n| n.checked_mul(4).is_some() && cols.checked_mul(4).is_some())
        .ok_or(KernelError::TooLarge { rows, cols })
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}

fn check_block_aligned(format: Format, cols: usize) -> Result<(), KernelError> {
    if format.fits(cols) {
        Ok(())
    } else {
        Err(KernelError::UnalignedCols {
            cols,
            block: format.block_len(),
        })
    }
}

fn quantize_blocks<B: Send>(data: &[f32], quantize: impl Fn(&[f32; QK]) -> B + Sync) -> Vec<B> {
    let one = |chunk: &[f32]| match chunk.try_into() {
        Ok(block) => quantize(block),
        Err(_) => unreachable!("chunks_exact yields whole blocks"),
    };
    if data.len() >= PARALLEL_QUANTIZE_MIN {
        data.par_chunks_exact(QK).map(one).collect()
    } else {
        data.chunks_exact(QK).map(one).collect()
    }
}

/// Each row of `data` (`cols` wide) quantized to fp8 blocks, the last one of a row padded.
fn quantize_fp8_rows(data: &[f32], cols: usize) -> Vec<BlockFp8> {
    if cols == 0 {
        return Vec::new();
    }
    let row = |r: &[f32]| r.chunks(QK).map(BlockFp8::quantize).collect::<Vec<_>>();
    if data.len() >= PARALLEL_QUANTIZE_MIN {
        data.par_chunks_exact(cols).flat_map_iter(row).collect()
    } else {
        data.chunks_exact(cols).flat_map(row).collect()
    }
}

/// Copies `bytes` (a whole number of `T`, checked by the caller) into a properly aligned vector.
fn copy_pod<T: Pod>(bytes: &[u8]) -> Vec<T> {
    let mut out = vec![T::zeroed(); bytes.len() / size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    out
}

impl Matrix {
    /// Builds a matrix from f32 values, converting or quantizing them to `format`.
    ///
    /// Float formats round to nearest (beyond the f16 range to infinity). Quantized formats need
    /// `cols % 32 == 0` (except `fp8`) and finite values; the integer formats' block scales are
    /// f16, so blocks whose largest magnitude is below about 1e-2 (`q8`) or 5e-4 (`q4`) get
    /// subnormal scales with less relative precision, and magnitudes beyond about 8e6 (`q8`),
    /// 5e5 (`q4`) or 6.5e4 (`q2`) saturate; `mxfp4` scales span the f32 range. Large matrices are quantized on the global rayon pool.
    pub fn from_f32(
        rows: usize,
        cols: usize,
        data: &[f32],
        format: Format,
    ) -> Result<Matrix, KernelError> {
        let n = element_count(rows, cols)?;
        check_len("matrix data", n, data.len())?;
        check_block_aligned(format, cols)?;
        if format.is_quantized()
            && let Some(index) = data.iter().position(|v| !v.is_finite())
        {
            return Err(KernelError::NonFinite { format, index });
        }
        let data = match format {
            Format::F32 => Storage::F32(data.to_vec()),
            Format::F16 => Storage::F16(data.iter().map(|&v| f16::from_f32(v)).collect()),
            Format::Bf16 => Storage::Bf16(data.iter().map(|&v| bf16::from_f32(v)).collect()),
            Format::Fp8 => Storage::Fp8(quantize_fp8_rows(data, cols)),
            Format::Q8 => Storage::Q8(quantize_blocks(data, BlockQ8::quantize)),
            Format::Q4 => Storage::Q4(quantize_blocks(data, BlockQ4::quantize)),
            Format::Mxfp4 => Storage::Mxfp4(quantize_blocks(data, BlockMxfp4::quantize)),
            Format::Q2 => Storage::Q2(quantize_blocks(data, BlockQ2::quantize)),
        };
        Ok(Matrix { rows, cols, data })
    }

    /// Wraps f16 values as an `F16` matrix without converting them.
    pub fn from_f16(rows: usize, cols: usize, data: Vec<f16>) -> Result<Matrix, KernelError> {
        check_len("matrix data", element_count(rows, cols)?, data.len())?;
        Ok(Matrix {
            rows,
            cols,
            data: Storage::F16(data),
        })
    }

    /// Wraps bf16 values as a `Bf16` matrix without converting them.
    pub fn from_bf16(rows: usize, cols: usize, data: Vec<bf16>) -> Result<Matrix, KernelError> {
        check_len("matrix data", element_count(rows, cols)?, data.len())?;
        Ok(Matrix {
            rows,
            cols,
            data: Storage::Bf16(data),
        })
    }

    /// An `Fp8` matrix from E4M3 codes (`rows x cols`, row-major) and one scale per
    /// `block x block` tile of them (`ceil(rows / block) x ceil(cols / block)`, row-major, partial
    /// tiles at the edges), the way fp8 checkpoints store a weight and its `weight_scale_inv`.
    /// `block` must be a positive multiple of 32; the weights are kept exactly.
    pub fn from_fp8(
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f32],
        block: usize,
    ) -> Result<Matrix, KernelError> {
        check_len("fp8 codes", element_count(rows, cols)?, codes.len())?;
        if block == 0 || !block.is_multiple_of(QK) {
            return Err(KernelError::UnalignedCols {
                cols: block,
                block: QK,
            });
        }
        let tiles_per_row = cols.div_ceil(block);
        check_len(
            "fp8 block scales",
            rows.div_ceil(block) * tiles_per_row,
            scales.len(),
        )?;
        if let Some(index) = codes.iter().position(|&q| crate::quant::is_e4m3_nan(q)) {
            return Err(KernelError::InvalidFp8 {
                what: "weight",
                index,
            });
        }
        if let Some(index) = scales.iter().position(|s| !s.is_finite()) {
            return Err(KernelError::InvalidFp8 {
                what: "block scale",
                index,
            });
        }
        let mut blocks = Vec::with_capacity(rows * cols.div_ceil(QK));
        for (r, row) in codes.chunks_exact(cols.max(1)).take(rows).enumerate() {
            let tile_scales = &scales[(r / block) * tiles_per_row..][..tiles_per_row];
            for (b, chunk) in row.chunks(QK).enumerate() {
                let mut qs = [0u8; QK];
                qs[..chunk.len()].copy_from_slice(chunk);
                let d = tile_scales[b * QK / block];
                blocks.push(BlockFp8 { d, qs });
            }
        }
        Ok(Matrix {
            rows,
            cols,
            data: Storage::Fp8(blocks),
        })
    }

    /// An `Mxfp4` matrix from a checkpoint's `*_blocks` and `*_scales` bytes: `blocks` is
    /// `rows x cols / 32` blocks of 16 bytes, byte `j` of a block holding element `2j` in its low
    /// nibble and `2j + 1` in its high one (the order HF transformers decodes); `scales` one E8M0
    /// byte per block. `cols` must be a multiple of 32; the weights are kept exactly.
    pub fn from_mxfp4(
        rows: usize,
        cols: usize,
        blocks: &[u8],
        scales: &[u8],
    ) -> Result<Matrix, KernelError> {
        let n = element_count(rows, cols)?;
        check_block_aligned(Format::Mxfp4, cols)?;
        check_len("mxfp4 blocks", n / 2, blocks.len())?;
        check_len("mxfp4 scales", n / QK, scales.len())?;
        let data: Vec<BlockMxfp4> = blocks
            .chunks_exact(QK / 2)
            .zip(scales)
            .map(|(b, &e)| match b.try_into() {
                Ok(b) => BlockMxfp4::from_checkpoint(b, e),
                Err(_) => unreachable!("chunks_exact yields whole blocks"),
            })
            .collect();
        Ok(Matrix {
            rows,
            cols,
            data: Storage::Mxfp4(valid_mxfp4(data)?),
        })
    }

    /// Copies a matrix out of its raw bytes (the layout `as_bytes` returns), checking the length.
    pub fn from_bytes(
        rows: usize,
        cols: usize,
        format: Format,
        bytes: &[u8],
    ) -> Result<Matrix, KernelError> {
        element_count(rows, cols)?;
        check_block_aligned(format, cols)?;
        let expected = rows
            .checked_mul(format.row_bytes(cols))
            .ok_or(KernelError::TooLarge { rows, cols })?;
        if bytes.len() != expected {
            return Err(KernelError::InvalidBytes {
                format,
                rows,
                cols,
                expected,
                got: bytes.len(),
            });
        }
        let data = match format {
            Format::F32 => Storage::F32(copy_pod(bytes)),
            Format::F16 => Storage::F16(copy_pod(bytes)),
            Format::Bf16 => Storage::Bf16(copy_pod(bytes)),
            Format::Fp8 => Storage::Fp8(valid_fp8(copy_pod(bytes))?),
            Format::Q8 => Storage::Q8(copy_pod(bytes)),
            Format::Q4 => Storage::Q4(copy_pod(bytes)),
            Format::Mxfp4 => Storage::Mxfp4(valid_mxfp4(copy_pod(bytes))?),
            Format::Q2 => Storage::Q2(copy_pod(bytes)),
        };
        Ok(Matrix { rows, cols, data })
    }

    /// `parts` stacked row-wise into one matrix (e.g. gate and up projections, so one product
    /// computes both). All parts need the same format and column count.
    pub fn stack_rows(parts: &[&Matrix]) -> Result<Matrix, KernelError> {
        let Some(first) = parts.first() else {
            return Err(KernelError::ShapeMismatch {
                what: "matrices to stack",
                expected: 1,
                got: 0,
            });
        };
        let mut bytes = Vec::with_capacity(parts.iter().map(|m| m.nbytes()).sum());
        for m in parts {
            if m.format() != first.format() {
                return Err(KernelError::FormatMismatch {
                    expected: first.format(),
                    got: m.format(),
                });
            }
            if m.cols != first.cols {
                return Err(KernelError::ShapeMismatch {
                    what: "columns of stacked matrices",
                    expected: first.cols,
                    got: m.cols,
                });
            }
            bytes.extend_from_slice(m.as_bytes());
        }
        let rows = parts
            .iter()
            .try_fold(0usize, |acc, m| acc.checked_add(m.rows))
            .ok_or(KernelError::TooLarge {
                rows: usize::MAX,
                cols: first.cols,
            })?;
        Matrix::from_bytes(rows, first.cols, first.format(), &bytes)
    }

    /// The same weights in another format (dequantized to f32, then converted); the identity
    /// conversion is a clone.
    pub fn convert(&self, format: Format) -> Result<Matrix, KernelError> {
        if format == self.format() {
            return Ok(self.clone());
        }
        match (&self.data, format) {
            (Storage::F16(v), Format::F32) => {
                let data = v.iter().map(|x| x.to_f32()).collect();
                return Ok(self.with(Storage::F32(data)));
            }
            (Storage::Bf16(v), Format::F32) => {
                let data = v.iter().map(|x| x.to_f32()).collect();
                return Ok(self.with(Storage::F32(data)));
            }
            _ => {}
        }
        Matrix::from_f32(self.rows, self.cols, &self.to_f32(), format)
    }

    fn with(&self, data: Storage) -> Matrix {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage format.
    pub fn format(&self) -> Format {
        match &self.data {
            Storage::F32(_) => Format::F32,
            Storage::F16(_) => Format::F16,
            Storage::Bf16(_) => Format::Bf16,
            Storage::Fp8(_) => Format::Fp8,
            Storage::Q8(_) => Format::Q8,
            Storage::Q4(_) => Format::Q4,
            Storage::Mxfp4(_) => Format::Mxfp4,
            Storage::Q2(_) => Format::Q2,
        }
    }

    /// Bytes of stored data (what a matvec reads).
    pub fn nbytes(&self) -> usize {
        self.as_bytes().len()
    }

    /// The stored data as raw bytes: rows back to back, each row its elements or blocks, little
    /// endian, exactly as documented for the format.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.data {
            Storage::F32(v) => bytemuck::cast_slice(v),
            Storage::F16(v) => bytemuck::cast_slice(v),
            Storage::Bf16(v) => bytemuck::cast_slice(v),
            Storage::Fp8(v) => bytemuck::cast_slice(v),
            Storage::Q8(v) => bytemuck::cast_slice(v),
            Storage::Q4(v) => bytemuck::cast_slice(v),
            Storage::Mxfp4(v) => bytemuck::cast_slice(v),
            Storage::Q2(v) => bytemuck::cast_slice(v),
        }
    }

    /// Writes row `row` as f32 values into `out` (`out.len() == cols`).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<(), KernelError> {
        if row >= self.rows {
            return Err(KernelError::RowOutOfRange {
                row,
                rows: self.rows,
            });
        }
        check_len("dequantize_row output", self.cols, out.len())?;
        let (cols, nb) = (self.cols, self.cols / QK);
        match &self.data {
            Storage::F32(v) => out.copy_from_slice(&v[row * cols..][..cols]),
            Storage::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[row * cols..][..cols]) {
                    *o = x.to_f32();
                }
            }
            Storage::Bf16(v) => {
                for (o, x) in out.iter_mut().zip(&v[row * cols..][..cols]) {
                    *o = x.to_f32();
                }
            }
            Storage::Fp8(v) => {
                let nb = cols.div_ceil(QK);
                for (b, chunk) in v[row * nb..][..nb].iter().zip(out.chunks_mut(QK)) {
                    b.dequantize(chunk);
                }
            }
            Storage::Q8(v) => dequantize_blocks(&v[row * nb..][..nb], out, BlockQ8::dequantize),
            Storage::Q4(v) => dequantize_blocks(&v[row * nb..][..nb], out, BlockQ4::dequantize),
            Storage::Mxfp4(v) => {
                dequantize_blocks(&v[row * nb..][..nb], out, BlockMxfp4::dequantize)
            }
            Storage::Q2(v) => dequantize_blocks(&v[row * nb..][..nb], out, BlockQ2::dequantize),
        }
        Ok(())
    }

    /// All weights as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        if self.cols > 0 {
            for (row, chunk) in out.chunks_exact_mut(self.cols).enumerate() {
                // Row and length are in range by construction.
                let _ = self.dequantize_row(row, chunk);
            }
        }
        out
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.data
    }
}

/// `blocks` when none holds a NaN code or a scale that is not finite.
fn valid_fp8(blocks: Vec<BlockFp8>) -> Result<Vec<BlockFp8>, KernelError> {
    match blocks.iter().position(BlockFp8::is_invalid) {
        Some(index) => Err(KernelError::InvalidFp8 {
            what: "block",
            index,
        }),
        None => Ok(blocks),
    }
}

/// `blocks` when none has a NaN scale or a value beyond the f32 range.
fn valid_mxfp4(blocks: Vec<BlockMxfp4>) -> Result<Vec<BlockMxfp4>, KernelError> {
    match blocks.iter().position(BlockMxfp4::is_invalid) {
        Some(index) => Err(KernelError::InvalidMxfp4 { index }),
        None => Ok(blocks),
    }
}

fn dequantize_blocks<B>(blocks: &[B], out: &mut [f32], dequantize: impl Fn(&B, &mut [f32; QK])) {
    for (b, chunk) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        if let Ok(chunk) = chunk.try_into() {
            dequantize(b, chunk);
        }
    }
}

impl fmt::Debug for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("format", &self.format())
            .field("nbytes", &self.nbytes())
            .finish()
    }
}
