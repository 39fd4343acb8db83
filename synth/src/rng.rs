//! The seeded random numbers behind every weight: SplitMix64 to expand seeds, xoshiro256** for the
//! streams, and standard normals by the polar form of Box-Muller with a logarithm of our own. Only
//! integer and IEEE-exact float operations (+, -, *, /, sqrt) are used, so a seed gives the same bits
//! on every platform and with every dependency version. Not for cryptography.

/// SplitMix64 (Steele, Lea, Flood 2014): seeds the other generators.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256** (Blackman, Vigna 2018).
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// Four SplitMix64 outputs of `seed`; they are distinct, so the state is never all zero.
    pub fn seed_from(seed: u64) -> Xoshiro256 {
        let mut sm = SplitMix64::new(seed);
        Xoshiro256 {
            s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()],
        }
    }

    /// The stream of one named tensor: the seed mixed with a hash of the name, so that adding,
    /// removing or reordering tensors leaves every other tensor's values unchanged.
    pub fn for_name(seed: u64, name: &str) -> Xoshiro256 {
        Xoshiro256::seed_from(SplitMix64::new(seed).next_u64() ^ fnv1a(name.as_bytes()))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Standard normal samples, two per accepted point of the polar method.
#[derive(Debug, Clone)]
pub struct Normal {
    rng: Xoshiro256,
    spare: Option<f64>,
}

impl Normal {
    pub fn new(rng: Xoshiro256) -> Normal {
        Normal { rng, spare: None }
    }

    pub fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let r = self.rng.next_u64();
            let x = symmetric_unit((r >> 32) as u32);
            let y = symmetric_unit(r as u32);
            let s = x * x + y * y;
            if s < 1.0 {
                // s > 0 always: x and y are odd multiples of 2^-32, never zero.
                let f = (-2.0 * ln(s) / s).sqrt();
                self.spare = Some(y * f);
                return x * f;
            }
        }
    }
}

/// Maps 32 random bits to (-1, 1), symmetric about zero and never zero.
fn symmetric_unit(bits: u32) -> f64 {
    (f64::from(bits) + 0.5) * (1.0 / 2_147_483_648.0) - 1.0
}

/// Natural logarithm of a positive, normal `x`, to about 1e-14 relative error: `x = m * 2^e` with
/// `m` in [sqrt(1/2), sqrt(2)), then `ln m = 2 atanh((m - 1) / (m + 1))` by its odd series.
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = 2.0 / 17.0;
    for k in [15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        series = 2.0 / k + s2 * series;
    }
    e as f64 * std::f64::consts::LN_2 + s * series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_reference_vector() {
        // Reference: the C implementation seeded with s = {1, 2, 3, 4}.
        let mut r = Xoshiro256 { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, vec![11520, 0, 1509978240]);
    }

    #[test]
    fn splitmix_matches_reference_vector() {
        // Reference: SplitMix64 seeded with 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ln_is_accurate() {
        let mut r = Xoshiro256::seed_from(7);
        for _ in 0..10_000 {
            let x = symmetric_unit(r.next_u64() as u32).abs() * 3.0 + 1e-300;
            let (got, want) = (ln(x), x.ln());
            assert!(
                (got - want).abs() <= 1e-13 * want.abs().max(1.0),
                "ln({x}) = {got}, want {want}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn normal_moments() {
        let mut n = Normal::new(Xoshiro256::seed_from(1));
        let count = 200_000;
        let xs: Vec<f64> = (0..count).map(|_| n.sample()).collect();
        let mean = xs.iter().sum::<f64>() / count as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / count as f64;
        let within_one = xs.iter().filter(|x| x.abs() < 1.0).count() as f64 / count as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(
            (within_one - 0.6827).abs() < 0.01,
            "P(|z| < 1) = {within_one}"
        );
    }

    #[test]
    fn named_streams_differ_and_repeat() {
        let a = Xoshiro256::for_name(0, "a").next_u64();
        assert_eq!(a, Xoshiro256::for_name(0, "a").next_u64());
        assert_ne!(a, Xoshiro256::for_name(0, "b").next_u64());
        assert_ne!(a, Xoshiro256::for_name(1, "a").next_u64());
    }
}
