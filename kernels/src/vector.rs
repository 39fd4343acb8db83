//! Short f32 vector operations for the model's own loops (attention over the KV cache: a query
//! head against each cached key, each cached value added into an output head), with the widest
//! instructions this CPU has, chosen on every call from the detected [`Isa`] (a cached value).
//! They are not split among threads; callers share their loops out themselves.
#![allow(clippy::needless_range_loop)]

use crate::isa::Isa;

/// `Σ a[i] b[i]` over the shorter of the two.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_with(Isa::detect(), a, b)
}

/// `y[i] += alpha x[i]` over the shorter of the two.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    axpy_with(Isa::detect(), y, alpha, x)
}

/// [`dot`] with the instructions of `isa`, which this CPU supports.
fn dot_with(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert!(isa.is_supported());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the level is supported (the caller's contract).
        Isa::Avx512 | Isa::Avx512Vnni => return unsafe { x86::dot_avx512(a, b) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { x86::dot_avx2(a, b) },
        Isa::Scalar => {}
    }
    dot_portable(a, b)
}

/// [`axpy`] with the instructions of `isa`, which this CPU supports.
fn axpy_with(isa: Isa, y: &mut [f32], alpha: f32, x: &[f32]) {
    debug_assert!(isa.is_supported());
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the level is supported (the caller's contract).
        Isa::Avx512 | Isa::Avx512Vnni => return unsafe { x86::axpy_avx512(y, alpha, x) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { x86::axpy_avx2(y, alpha, x) },
        Isa::Scalar => {}
    }
    for (o, v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// [`dot`] with eight running sums, for any CPU.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512 F must be available; `a` and `b` of the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY: every full load reads i..i+16 <= n; the masked one only the last n - i < 16.
        unsafe {
            while i + 32 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                let (x, y) = (pa.add(i + 16), pb.add(i + 16));
                s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x), _mm512_loadu_ps(y), s1);
                i += 32;
            }
            while i + 16 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                i += 16;
            }
            if i < n {
                let k: __mmask16 = (1u16 << (n - i)) - 1;
                let (x, y) = (
                    _mm512_maskz_loadu_ps(k, pa.add(i)),
                    _mm512_maskz_loadu_ps(k, pb.add(i)),
                );
                s1 = _mm512_fmadd_ps(x, y, s1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a` and `b` of the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY: every load reads i..i+8 <= n.
        unsafe {
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                let (x, y) = (pa.add(i + 8), pb.add(i + 8));
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(y), s1);
                i += 16;
            }
            while i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                i += 8;
            }
        }
        let s = _mm256_add_ps(s0, s1);
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let tail: f32 = a[i..].iter().zip(&b[i..]).map(|(x, y)| x * y).sum();
        _mm_cvtss_f32(s) + tail
    }

    /// # Safety
    /// AVX-512 F must be available; `y` and `x` of the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy_avx512(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every full access covers i..i+16 <= n; the masked ones only the last n - i.
        unsafe {
            while i + 16 <= n {
                let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
                _mm512_storeu_ps(py.add(i), v);
                i += 16;
            }
            if i < n {
                let k: __mmask16 = (1u16 << (n - i)) - 1;
                let (xv, yv) = (
                    _mm512_maskz_loadu_ps(k, px.add(i)),
                    _mm512_maskz_loadu_ps(k, py.add(i)),
                );
                _mm512_mask_storeu_ps(py.add(i), k, _mm512_fmadd_ps(a, xv, yv));
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `y` and `x` of the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy_avx2(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every access covers i..i+8 <= n.
        unsafe {
            while i + 8 <= n {
                let v = _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), v);
                i += 8;
            }
        }
        for j in i..n {
            y[j] += alpha * x[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 31 + seed * 17) % 97) as f32 - 48.0) / 13.0)
            .collect()
    }

    /// Every instruction set this CPU has, every length from 0 to 100 (full registers, tails,
    /// both), against f64 sums.
    #[test]
    fn dot_and_axpy_match_the_plain_sums_at_every_length() {
        for isa in Isa::available() {
            for n in 0..=100 {
                let (a, b) = (vector(n, 1), vector(n, 2));
                let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
                let scale: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (*x as f64 * *y as f64).abs())
                    .sum();
                let got = dot_with(isa, &a, &b) as f64;
                assert!(
                    (got - exact).abs() <= 1e-6 * (1.0 + scale),
                    "{isa} n={n}: {got} vs {exact}"
                );
                let mut y = b.clone();
                axpy_with(isa, &mut y, 0.75, &a);
                for i in 0..n {
                    let want = b[i] + 0.75 * a[i];
                    assert!(
                        (y[i] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{isa} n={n}"
                    );
                }
            }
            assert_eq!(dot_with(isa, &[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
        }
    }
}
