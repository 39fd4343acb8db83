//! Products: every SIMD level this CPU supports, forced explicitly, against the scalar
//! reference; quantized products against the f32 reference; refused shapes.
//!
//! Budget: SIMD and scalar do the same integer block dot products and the same scale products,
//! so they differ only by the order (and fusing) of f32 additions. With `S = Σ_c |w_c x_c|`
//! (dequantized weights, unquantized activations) the difference must stay below
//! `1e-5 * S + 1e-6` per output: 30x the largest reordering error measured over all paths and
//! shapes below (3.4e-7 * S), and far below any real kernel bug (errors of order S). The scalar
//! level reproduces the reference exactly.

mod common;

use common::Rng;
use moe_kernels::{Format, Isa, KernelError, Matrix, Pool, scalar};

const SHAPES: &[(usize, usize)] = &[
    (1, 32),
    (3, 64),
    (5, 96),
    (13, 160),
    (17, 256),
    (33, 288),
    (67, 1024),
    (130, 544),
    (257, 96),
];

fn abs_sums(w: &Matrix, xs: &[f32], n: usize) -> Vec<f32> {
    let wf = w.to_f32();
    let (rows, cols) = (w.rows(), w.cols());
    let mut out = vec![0.0; n * rows];
    for i in 0..n {
        for r in 0..rows {
            out[i * rows + r] = (0..cols)
                .map(|c| (wf[r * cols + c] * xs[i * cols + c]).abs())
                .sum();
        }
    }
    out
}

fn check(
    isa: Isa,
    threads: usize,
    format: Format,
    rows: usize,
    cols: usize,
    n: usize,
    rng: &mut Rng,
) {
    // Formats that fit any width get odd widths too.
    let cols = if format.fits(cols + rows % 7) {
        cols + rows % 7
    } else {
        cols
    };
    let w = Matrix::from_f32(rows, cols, &rng.normals(rows * cols, 0.05), format).unwrap();
    let xs = rng.normals(n * cols, 1.0);
    let pool = Pool::with_isa(threads, isa).unwrap();
    let mut want = vec![0.0; n * rows];
    let mut got = vec![f32::NAN; n * rows];
    scalar::matmul(&w, &xs, n, &mut want).unwrap();
    if n == 1 {
        pool.matvec(&w, &xs, &mut got).unwrap();
    } else {
        pool.matmul(&w, &xs, n, &mut got).unwrap();
    }
    let sums = abs_sums(&w, &xs, n);
    for (k, ((g, w), s)) in got.iter().zip(&want).zip(&sums).enumerate() {
        let tol = 1e-5 * s + 1e-6;
        assert!(
            (g - w).abs() <= tol,
            "{isa} {format} {rows}x{cols} n={n} threads={threads} out[{k}]: simd {g} scalar {w} (tol {tol})"
        );
    }
}

#[test]
fn every_isa_matches_scalar_matvec_and_matmul() {
    let mut rng = Rng::new(7);
    for isa in Isa::available() {
        for format in Format::ALL {
            for &(rows, cols) in SHAPES {
                for n in [1, 3, 4, 7, 17] {
                    check(isa, 1 + rows % 3, format, rows, cols, n, &mut rng);
                }
            }
        }
    }
}

#[test]
fn large_matvec_splits_across_threads() {
    let mut rng = Rng::new(11);
    for isa in Isa::available() {
        for format in Format::ALL {
            check(isa, 3, format, 1001, 1024, 1, &mut rng);
            check(isa, 2, format, 509, 3584, 2, &mut rng);
            // More vectors than one block of the driver (32).
            check(isa, 2, format, 37, 288, 70, &mut rng);
        }
    }
}

#[test]
fn unsupported_isa_is_an_error() {
    for isa in Isa::ALL {
        assert_eq!(Pool::with_isa(1, isa).is_ok(), isa.is_supported());
    }
    assert!(Isa::available().contains(&Isa::Scalar));
    assert!(Isa::detect().is_supported());
}

/// Activation quantization error: a quantized-weight product against the same dequantized
/// weights times the unquantized activations. Each activation element moves by at most half its
/// block step `d_x / 2 = amax_x / 254`, so per output
/// `|y - y_ref| <= Σ_blocks (d_x / 2) Σ_c |w_c|`, plus f32 rounding (`1e-5 Σ|w_c x_c|`).
#[test]
fn quantized_products_stay_within_the_activation_quantization_bound() {
    let mut rng = Rng::new(13);
    let (rows, cols, n) = (48, 512, 3);
    for format in [Format::Q8, Format::Q4, Format::Q2] {
        let w = Matrix::from_f32(rows, cols, &rng.normals(rows * cols, 0.05), format).unwrap();
        let mut xs = rng.normals(n * cols, 1.0);
        xs[5] = 40.0; // an outlier widens one block's step
        let wf = w.to_f32();
        let pool = Pool::new(2).unwrap();
        let mut got = vec![0.0; n * rows];
        let mut reference = vec![0.0; n * rows];
        pool.matmul(&w, &xs, n, &mut got).unwrap();
        scalar::matmul_dequantized(&w, &xs, n, &mut reference).unwrap();
        let sums = abs_sums(&w, &xs, n);
        let mut worst = 0.0f32;
        for i in 0..n {
            for r in 0..rows {
                let mut bound = 0.0f32;
                for b in 0..cols / 32 {
                    let x = &xs[i * cols + 32 * b..i * cols + 32 * b + 32];
                    let step = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                    let wsum: f32 = wf[r * cols + 32 * b..r * cols + 32 * b + 32]
                        .iter()
                        .map(|v| v.abs())
                        .sum();
                    bound += 0.5 * step * wsum;
                }
                let k = i * rows + r;
                let err = (got[k] - reference[k]).abs();
                worst = worst.max(err / bound);
                assert!(
                    err <= bound + 1e-5 * sums[k],
                    "{format} out[{k}]: {} vs reference {} (bound {bound})",
                    got[k],
                    reference[k]
                );
            }
        }
        // The bound is loose but not vacuous: errors use a visible part of it.
        assert!(worst > 0.01, "{format}: worst error / bound = {worst}");
    }
}

#[test]
fn products_with_f32_activations_match_the_f64_reference() {
    let mut rng = Rng::new(17);
    let rows = 40;
    for format in [
        Format::F32,
        Format::F16,
        Format::Bf16,
        Format::Fp8,
        Format::Mxfp4,
    ] {
        let cols = if format.fits(333) { 333 } else { 352 };
        assert!(!format.takes_int8_activations(), "{format}");
        let w = Matrix::from_f32(rows, cols, &rng.normals(rows * cols, 0.05), format).unwrap();
        let x = rng.normals(cols, 1.0);
        let mut got = vec![0.0; rows];
        let mut reference = vec![0.0; rows];
        Pool::new(2).unwrap().matvec(&w, &x, &mut got).unwrap();
        scalar::matvec_dequantized(&w, &x, &mut reference).unwrap();
        let sums = abs_sums(&w, &x, 1);
        for r in 0..rows {
            assert!(
                (got[r] - reference[r]).abs() <= 1e-5 * sums[r],
                "{format} row {r}"
            );
        }
    }
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let pool = Pool::new(2).unwrap();
    for format in Format::ALL {
        let w = Matrix::from_f32(8, 64, &[0.5; 512], format).unwrap();
        let mut y = vec![0.0; 8];
        assert!(matches!(
            pool.matvec(&w, &[1.0; 63], &mut y),
            Err(KernelError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            pool.matvec(&w, &[1.0; 64], &mut y[..7]),
            Err(KernelError::ShapeMismatch { .. })
        ));
        assert!(pool.matmul(&w, &[1.0; 128], 3, &mut [0.0; 24]).is_err());
        assert!(pool.matmul(&w, &[1.0; 192], 3, &mut [0.0; 16]).is_err());
        assert!(pool.matmul(&w, &[1.0; 64], usize::MAX, &mut y).is_err());
        assert!(scalar::matvec(&w, &[1.0; 65], &mut y).is_err());
        assert!(scalar::matmul_dequantized(&w, &[1.0; 64], 2, &mut y).is_err());
        // n = 0 is an empty product, not an error.
        assert!(pool.matmul(&w, &[], 0, &mut []).is_ok());
        pool.matvec(&w, &[1.0; 64], &mut y).unwrap();
        assert!(
            y.iter().all(|&v| (v - 32.0).abs() < 0.1 && v == y[0]),
            "{format} {y:?}"
        );
    }
    let empty = Matrix::from_f32(0, 32, &[], Format::Q4).unwrap();
    assert!(pool.matvec(&empty, &[0.0; 32], &mut []).is_ok());
    let no_cols = Matrix::from_f32(3, 0, &[], Format::F16).unwrap();
    let mut y = vec![1.0; 3];
    pool.matvec(&no_cols, &[], &mut y).unwrap();
    assert_eq!(y, vec![0.0; 3]);
}
