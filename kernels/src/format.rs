//! The weight formats a [`Matrix`](crate::Matrix) can be stored in, with their sizes.
//! Layout details live in the `quant` modules; this file only names and sizes them.

use std::fmt;
use std::str::FromStr;

use crate::error::KernelError;
use crate::quant::{BlockQ2, BlockQ4, BlockQ8, QK};

/// A storage format for a row-major weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// IEEE binary32, 4 bytes per weight.
    F32,
    /// IEEE binary16, 2 bytes per weight.
    F16,
    /// bfloat16, 2 bytes per weight.
    Bf16,
    /// 32-weight blocks of int8 with an f16 scale ([`BlockQ8`]), 8.5 bits per weight.
    Q8,
    /// 32-weight blocks of 4-bit codes with an f16 scale ([`BlockQ4`]), 4.5 bits per weight.
    Q4,
    /// 32-weight blocks of 2-bit codes with an f16 scale and minimum ([`BlockQ2`]), 3 bits per weight.
    Q2,
}

impl Format {
    /// Every format, widest first.
    pub const ALL: [Format; 6] = [
        Format::F32,
        Format::F16,
        Format::Bf16,
        Format::Q8,
        Format::Q4,
        Format::Q2,
    ];

    /// The lowercase name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::F16 => "f16",
            Format::Bf16 => "bf16",
            Format::Q8 => "q8",
            Format::Q4 => "q4",
            Format::Q2 => "q2",
        }
    }

    /// Whether the format stores 32-element blocks with scales (as opposed to plain floats).
    pub fn is_quantized(self) -> bool {
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
            Format::Q8 => size_of::<BlockQ8>(),
            Format::Q4 => size_of::<BlockQ4>(),
            Format::Q2 => size_of::<BlockQ2>(),
        }
    }

    /// Storage bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }

    /// Bytes of one row of `cols` weights. For quantized formats a partial block counts as a whole
    /// one (such a matrix cannot be built, see [`KernelError::UnalignedCols`]).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols.div_ceil(self.block_len()) * self.block_bytes()
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
    fn sizes() {
        assert_eq!(Format::Q8.bits_per_weight(), 8.5);
        assert_eq!(Format::Q4.bits_per_weight(), 4.5);
        assert_eq!(Format::Q2.bits_per_weight(), 3.0);
        assert_eq!(Format::F16.bits_per_weight(), 16.0);
        assert_eq!(Format::Q4.row_bytes(1024), 32 * 18);
        assert_eq!(Format::Bf16.row_bytes(7), 14);
        assert_eq!(Format::F32.block_len(), 1);
        assert_eq!(Format::Q2.block_len(), 32);
    }
}
