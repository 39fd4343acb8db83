//! The weight formats a [`Matrix`](crate::Matrix) can be stored in, with their sizes.
//! Layout details live in the `quant` modules; this file only names and sizes them.

use std::fmt;
use std::str::FromStr;

use crate::error::KernelError;
use crate::quant::{BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8, QK};

/// A storage format for a row-major weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// IEEE binary32, 4 bytes per weight.
    F32,
    /// IEEE binary16, 2 bytes per weight.
    F16,
    /// bfloat16, 2 bytes per weight.
    Bf16,
    /// 32-weight blocks of FP8 E4M3 codes with an f32 scale ([`BlockFp8`]), 9 bits per weight:
    /// fp8 checkpoints as stored.
    Fp8,
    /// 32-weight blocks of int8 with an f16 scale ([`BlockQ8`]), 8.5 bits per weight.
    Q8,
    /// 32-weight blocks of 4-bit codes with an f16 scale ([`BlockQ4`]), 4.5 bits per weight.
    Q4,
    /// 32-weight blocks of FP4 E2M1 codes with an E8M0 power-of-two scale ([`BlockMxfp4`]),
    /// 4.25 bits per weight: OCP MXFP4, as gpt-oss checkpoints store their experts.
    Mxfp4,
    /// 32-weight blocks of 2-bit codes with an f16 scale and minimum ([`BlockQ2`]), 3 bits per weight.
    Q2,
}

impl Format {
    /// Every format, widest first.
    pub const ALL: [Format; 8] = [
        Format::F32,
        Format::F16,
        Format::Bf16,
        Format::Fp8,
        Format::Q8,
        Format::Q4,
        Format::Mxfp4,
        Format::Q2,
    ];

    /// The formats the CUDA expert kernels (`cuda/experts.cu`) implement, each with its
    /// `moe_gate_up_<name>` and `moe_down_<name>`.
    pub const GPU: [Format; 6] = [
        Format::F16,
        Format::Fp8,
        Format::Q8,
        Format::Q4,
        Format::Mxfp4,
        Format::Q2,
    ];

    /// The lowercase name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::F16 => "f16",
            Format::Bf16 => "bf16",
            Format::Fp8 => "fp8",
            Format::Q8 => "q8",
            Format::Q4 => "q4",
            Format::Mxfp4 => "mxfp4",
            Format::Q2 => "q2",
        }
    }

    /// Whether the format stores 32-element blocks with scales (as opposed to plain floats).
    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            Format::Fp8 | Format::Q8 | Format::Q4 | Format::Mxfp4 | Format::Q2
        )
    }

    /// Whether products with this format take the activations quantized to int8 blocks (the
    /// integer formats); the others take them as f32, among them the formats checkpoints store
    /// (`Fp8`, `Mxfp4`), so that a checkpoint served as stored computes what its exactly
    /// decoded weights do.
    pub fn takes_int8_activations(self) -> bool {
        matches!(self, Format::Q8 | Format::Q4 | Format::Q2)
    }

    /// Elements per storage unit: 1 for float formats, 32 for quantized ones.
    pub fn block_len(self) -> usize {
        if self.is_quantized() { QK } else { 1 }
    }

    /// Bytes per storage unit (one element or one block).
    pub fn block_bytes(self) -> usize {
        match self {
            Format::F32 => 4,
            Format::F16 | Format::Bf16 => 2,
            Format::Fp8 => size_of::<BlockFp8>(),
            Format::Q8 => size_of::<BlockQ8>(),
            Format::Q4 => size_of::<BlockQ4>(),
            Format::Mxfp4 => size_of::<BlockMxfp4>(),
            Format::Q2 => size_of::<BlockQ2>(),
        }
    }

    /// Storage bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }

    /// Bytes of one row of `cols` weights. For block formats a partial block counts as a whole
    /// one (`Fp8` pads it; the integer formats cannot build such a matrix, see
    /// [`KernelError::UnalignedCols`]).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols.div_ceil(self.block_len()) * self.block_bytes()
    }

    /// Whether a matrix of `cols` columns (input features) can be stored in this format: float
    /// formats and `Fp8` (which pads a row's last block) store any width, the integer block
    /// formats a whole number of blocks per row.
    pub fn fits(self, cols: usize) -> bool {
        self == Format::Fp8 || cols.is_multiple_of(self.block_len())
    }

    /// The next wider format a matrix falls back to when this one does not fit its shape:
    /// q2 → q4 → q8 → f16, and mxfp4 → q8 (q4 has the same block length, so it never fits where
    /// mxfp4 does not); `None` for float formats and fp8, which fit every shape.
    pub fn wider(self) -> Option<Format> {
        match self {
            Format::Q2 => Some(Format::Q4),
            Format::Q4 | Format::Mxfp4 => Some(Format::Q8),
            Format::Q8 => Some(Format::F16),
            Format::F32 | Format::F16 | Format::Bf16 | Format::Fp8 => None,
        }
    }

    /// The format a matrix of `cols` columns asked to be stored in this format is stored in:
    /// this one when it fits, otherwise the nearest wider one that does (see [`Format::wider`]),
    /// with why this one did not.
    pub fn fitting(self, cols: usize) -> Fit {
        let mut format = self;
        while !format.fits(cols) {
            match format.wider() {
                Some(wider) => format = wider,
                None => break,
            }
        }
        Fit {
            asked: self,
            format,
            cols,
        }
    }
}

/// What [`Format::fitting`] chose for a matrix: the format asked for, the one it is stored in and
/// the width that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fit {
    pub asked: Format,
    pub format: Format,
    pub cols: usize,
}

impl Fit {
    /// Whether the matrix is stored in a format other than the one asked for.
    pub fn fell_back(&self) -> bool {
        self.asked != self.format
    }

    /// Why the format asked for did not fit (`None` when it did), e.g. "40 columns is not a
    /// multiple of the 32-element block".
    pub fn reason(&self) -> Option<String> {
        self.fell_back().then(|| {
            format!(
                "{} columns is not a multiple of the {}-element block",
                self.cols,
                self.asked.block_len()
            )
        })
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{} stored as {}: {reason}", self.asked, self.format),
            None => write!(f, "{}", self.format),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.name() == lower)
            .ok_or_else(|| KernelError::UnknownFormat(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("Q4".parse::<Format>(), Ok(Format::Q4));
        assert!(matches!(
            "q3".parse::<Format>(),
            Err(KernelError::UnknownFormat(_))
        ));
    }

    #[test]
    fn a_format_that_does_not_fit_falls_back_to_the_nearest_wider_one() {
        assert!(Format::Q4.fits(64) && !Format::Q4.fits(40) && Format::F16.fits(40));
        let fit = Format::Q2.fitting(40);
        assert_eq!(
            (fit.asked, fit.format, fit.cols),
            (Format::Q2, Format::F16, 40)
        );
        assert!(fit.fell_back());
        assert_eq!(
            fit.to_string(),
            "q2 stored as f16: 40 columns is not a multiple of the 32-element block"
        );
        let fits = Format::Q4.fitting(96);
        assert_eq!(
            (fits.format, fits.fell_back(), fits.reason()),
            (Format::Q4, false, None)
        );
        assert_eq!(Format::Bf16.fitting(7).format, Format::Bf16);
        for format in Format::ALL {
            let fit = format.fitting(33);
            assert!(fit.format.fits(33), "{fit}");
            assert!(
                fit.format.bits_per_weight() >= format.bits_per_weight(),
                "{fit}"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(Format::Q8.bits_per_weight(), 8.5);
        assert_eq!(Format::Q4.bits_per_weight(), 4.5);
        assert_eq!(Format::Q2.bits_per_weight(), 3.0);
        assert_eq!(Format::Fp8.bits_per_weight(), 9.0);
        assert_eq!(Format::Fp8.row_bytes(48), 72);
        assert!(Format::Fp8.fits(48) && Format::Fp8.is_quantized());
        assert!(!Format::Fp8.takes_int8_activations() && Format::Q4.takes_int8_activations());
        assert_eq!(Format::Mxfp4.bits_per_weight(), 4.25);
        assert_eq!(Format::Mxfp4.row_bytes(64), 34);
        assert!(Format::Mxfp4.is_quantized() && !Format::Mxfp4.takes_int8_activations());
        assert!(Format::Mxfp4.fits(64) && !Format::Mxfp4.fits(48));
        assert_eq!(Format::Mxfp4.wider(), Some(Format::Q8));
        assert_eq!(Format::Mxfp4.fitting(48).format, Format::F16);
        assert_eq!(Format::F16.bits_per_weight(), 16.0);
        assert_eq!(Format::Q4.row_bytes(1024), 32 * 18);
        assert_eq!(Format::Bf16.row_bytes(7), 14);
        assert_eq!(Format::F32.block_len(), 1);
        assert_eq!(Format::Q2.block_len(), 32);
    }
}
