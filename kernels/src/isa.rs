//! Which SIMD instruction set the kernels use, detected once at run time.
//!
//! The crate is built for the baseline target (never `target-cpu=native`); each SIMD path is
//! compiled with `#[target_feature]` and only entered after [`Isa::is_supported`] said yes.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::KernelError;

/// An instruction-set level with its own set of kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (plus AVX2, FMA, F16C), integer dots with `vpmaddubsw`.
    Avx512,
    /// As [`Isa::Avx512`], plus AVX-512 VNNI (`vpdpbusd` integer dots), VBMI and GFNI (block
    /// unpacking): Ice Lake, Sapphire Rapids, Zen 4 and later.
    Avx512Vnni,
}

impl Isa {
    /// Every level, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The best level this CPU supports (detected on first use, then cached).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            Isa::ALL
                .into_iter()
                .rev()
                .find(|isa| isa.probe())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Every level this CPU supports, slowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// Whether this CPU can run the level's kernels.
    pub fn is_supported(self) -> bool {
        self.probe()
    }

    /// Lowercase name for logs and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn probe(self) -> bool {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        let avx512 = avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2,
            Isa::Avx512 => avx512,
            Isa::Avx512Vnni => avx512 && has!("avx512vnni") && has!("avx512vbmi") && has!("gfni"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn probe(self) -> bool {
        self == Isa::Scalar
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == lower)
            .ok_or_else(|| KernelError::UnknownIsa(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        }
        assert!("sse9".parse::<Isa>().is_err());
    }

    #[test]
    fn detected_level_is_supported() {
        assert!(Isa::detect().is_supported());
        assert!(Isa::Scalar.is_supported());
        assert_eq!(Isa::available().last(), Some(&Isa::detect()));
    }
}
