//! Storage formats: byte layouts, round-trip error budgets, conversions and refused inputs.
//!
//! Error budgets (measured values on 2^20 standard-normal values in brackets):
//!
//! | format | max abs error / block amax | RMS error / RMS of data |
//! |--------|----------------------------|-------------------------|
//! | f16    | 0.0005 (0.00049)           | 0.0003 (0.00021)        |
//! | bf16   | 0.004 (0.0039)             | 0.002 (0.0017)          |
//! | q8     | 0.004 (0.00394)            | 0.006 (0.0053)          |
//! | q4     | 0.20 (0.159)               | 0.09 (0.081)            |
//! | mxfp4  | 0.25 (a bound, not measured) | 0.13 (0.116 on 2^18) |
//! | q2     | 0.75 (0.58)                | 0.33 (0.31)             |
//!
//! The max-error column is what the adversarial inputs are held to (per 32-element block; for
//! float formats per element relative to the block amax as well). The mxfp4 bound: a power-of-two
//! scale leaves the block's amax at 3 to 6 code units, and the widest step (4 to 6) halved is one
//! unit, at most amax / 4.

mod common;

use common::Rng;
use half::{bf16, f16};
use moe_kernels::{
    BlockFp8, BlockMxfp4, BlockQ2, BlockQ4, BlockQ8, Format, KernelError, Matrix, e4m3_to_f32,
};

fn max_budget(format: Format) -> f32 {
    match format {
        Format::F32 => 0.0,
        Format::F16 => 0.0005,
        Format::Bf16 => 0.004,
        // Three mantissa bits: half a step is 1/16 of a value, at most 1/16 of the block's amax.
        Format::Fp8 => 0.0625,
        Format::Q8 => 0.004,
        Format::Q4 => 0.20,
        Format::Mxfp4 => 0.25,
        Format::Q2 => 0.75,
    }
}

fn rms_budget(format: Format) -> f64 {
    match format {
        Format::F32 => 0.0,
        Format::F16 => 0.0003,
        Format::Bf16 => 0.002,
        Format::Fp8 => 0.03,
        Format::Q8 => 0.006,
        Format::Q4 => 0.09,
        Format::Mxfp4 => 0.13,
        Format::Q2 => 0.33,
    }
}

/// Quantizes `x` (rows of 64) and checks finiteness and the per-block max-error budget.
fn check_blocks(format: Format, x: &[f32], what: &str) {
    let m = Matrix::from_f32(x.len() / 64, 64, x, format).unwrap();
    let y = m.to_f32();
    assert!(
        y.iter().all(|v| v.is_finite()),
        "{format} {what}: non-finite output"
    );
    for (b, (bx, by)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
        let amax = bx.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (j, (a, v)) in bx.iter().zip(by).enumerate() {
            let err = (a - v).abs();
            assert!(
                err <= max_budget(format) * amax,
                "{format} {what}: block {b} element {j}: {a} -> {v} (amax {amax})"
            );
        }
    }
}

#[test]
fn round_trip_error_on_normal_data() {
    let mut rng = Rng::new(1);
    let x = rng.normals(256 * 1024, 1.0);
    println!("format  max|err|  mean|err|  RMS err/RMS  (2^18 N(0,1) values)");
    for format in Format::ALL {
        check_blocks(format, &x, "normal");
        let y = Matrix::from_f32(256, 1024, &x, format).unwrap().to_f32();
        let se: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let s: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
        let rel = (se / s).sqrt();
        let abs = x.iter().zip(&y).map(|(a, b)| f64::from((a - b).abs()));
        let (max, sum) = abs.fold((0.0f64, 0.0f64), |(m, s), e| (m.max(e), s + e));
        println!(
            "{format:<6}  {max:>8.5}  {:>9.6}  {rel:>11.6}",
            sum / x.len() as f64
        );
        assert!(rel <= rms_budget(format), "{format}: RMS error {rel}");
    }
}

#[test]
fn round_trip_error_on_adversarial_blocks() {
    let mut rng = Rng::new(2);
    let n = 64 * 8;
    let mut cases: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; n]),
        ("all equal", vec![0.37; n]),
        ("all equal negative", vec![-1234.5; n]),
        ("large 1e4", rng.normals(n, 1e4)),
        (
            "large 6e4",
            rng.normals(n, 1.0)
                .iter()
                .map(|v| v.clamp(-1.0, 1.0) * 6e4)
                .collect(),
        ),
        (
            "negative only",
            rng.normals(n, 1.0).iter().map(|v| -v.abs() - 0.5).collect(),
        ),
        (
            "positive only",
            rng.normals(n, 1.0).iter().map(|v| v.abs() + 2.0).collect(),
        ),
        (
            "tiny spread on offset",
            rng.normals(n, 1e-3).iter().map(|v| v + 10.0).collect(),
        ),
    ];
    let mut outliers = rng.normals(n, 0.01);
    for (b, block) in outliers.chunks_mut(32).enumerate() {
        block[b % 32] = if b % 2 == 0 { 50.0 } else { -50.0 };
    }
    cases.push(("one outlier per block", outliers));
    let mut alternating = vec![0.0f32; n];
    for (i, v) in alternating.iter_mut().enumerate() {
        *v = if i % 2 == 0 { 3.0 } else { -3.0 };
    }
    cases.push(("alternating sign", alternating));
    for (what, x) in &cases {
        for format in Format::ALL {
            check_blocks(format, x, what);
        }
    }
}

#[test]
fn zeros_stay_exact() {
    for format in Format::ALL {
        let m = Matrix::from_f32(2, 64, &[0.0; 128], format).unwrap();
        assert!(m.to_f32().iter().all(|&v| v == 0.0), "{format}");
    }
}

#[test]
fn non_finite_values_are_refused_for_quantized_formats() {
    let mut x = vec![1.0f32; 64];
    x[40] = f32::NAN;
    for format in [
        Format::Fp8,
        Format::Q8,
        Format::Q4,
        Format::Mxfp4,
        Format::Q2,
    ] {
        assert_eq!(
            Matrix::from_f32(1, 64, &x, format).unwrap_err(),
            KernelError::NonFinite { format, index: 40 }
        );
    }
    x[40] = f32::INFINITY;
    assert!(Matrix::from_f32(1, 64, &x, Format::Q4).is_err());
    assert!(Matrix::from_f32(1, 64, &x, Format::F16).is_ok());
}

#[test]
fn fp8_layout() {
    let mut bytes = vec![0u8; 36];
    bytes[0..4].copy_from_slice(&0.5f32.to_le_bytes());
    // 1.0, -2.0, 448, the smallest subnormal (2^-9), then zeros.
    bytes[4..8].copy_from_slice(&[0x38, 0xc0, 0x7e, 0x01]);
    let m = Matrix::from_bytes(1, 32, Format::Fp8, &bytes).unwrap();
    let y = m.to_f32();
    assert_eq!(y[..4], [0.5, -1.0, 224.0, 0.5 / 512.0]);
    assert!(y[4..].iter().all(|&v| v == 0.0));
    let b: &BlockFp8 = bytemuck::from_bytes(&bytes);
    assert_eq!((b.d, b.qs[2]), (0.5, 0x7e));
    // A NaN code or a scale that is not finite is refused.
    let mut nan = bytes.clone();
    nan[9] = 0x7f;
    assert!(matches!(
        Matrix::from_bytes(1, 32, Format::Fp8, &nan),
        Err(KernelError::InvalidFp8 { .. })
    ));
    let mut inf = bytes.clone();
    inf[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert!(Matrix::from_bytes(1, 32, Format::Fp8, &inf).is_err());
}

#[test]
fn fp8_checkpoint_weights_are_held_exactly_with_partial_blocks() {
    // 130 x 200 codes with 128 x 128 block scales: 2 x 2 scales, partial at both edges.
    let (rows, cols) = (130, 200);
    let codes: Vec<u8> = (0..rows * cols)
        .map(|i| match (i * 37 % 256) as u8 {
            c if c & 0x7f == 0x7f => 0x10,
            c => c,
        })
        .collect();
    let scales = [0.25f32, 3.0e-4, -1.5, 7.0];
    let m = Matrix::from_fp8(rows, cols, &codes, &scales, 128).unwrap();
    assert_eq!(m.format(), Format::Fp8);
    assert_eq!(m.nbytes(), rows * 7 * 36);
    let y = m.to_f32();
    for r in 0..rows {
        for c in 0..cols {
            let scale = scales[(r / 128) * 2 + c / 128];
            let want = e4m3_to_f32(codes[r * cols + c]) * scale;
            assert_eq!(y[r * cols + c], want, "({r}, {c})");
        }
    }
    let back = Matrix::from_bytes(rows, cols, Format::Fp8, m.as_bytes()).unwrap();
    assert_eq!(back.to_f32(), y);
    assert!(matches!(
        Matrix::from_fp8(rows, cols, &codes, &scales[..3], 128),
        Err(KernelError::ShapeMismatch { .. })
    ));
    assert!(Matrix::from_fp8(rows, cols, &codes, &scales, 100).is_err());
    let mut nan = codes.clone();
    nan[5] = 0xff;
    assert_eq!(
        Matrix::from_fp8(rows, cols, &nan, &scales, 128).unwrap_err(),
        KernelError::InvalidFp8 {
            what: "weight",
            index: 5
        }
    );
}

#[test]
fn mxfp4_layout() {
    let mut bytes = vec![0u8; 17];
    // Scale 2^-1; element 0 = -6, element 16 = 1, element 1 = 0.5, element 17 = 6 (code units).
    bytes[0] = 126;
    bytes[1] = 0x2f;
    bytes[2] = 0x71;
    let m = Matrix::from_bytes(1, 32, Format::Mxfp4, &bytes).unwrap();
    let y = m.to_f32();
    assert_eq!((y[0], y[16], y[1], y[17]), (-3.0, 0.5, 0.25, 3.0));
    assert_eq!(y.iter().filter(|&&v| v != 0.0).count(), 4);
    let b: &BlockMxfp4 = bytemuck::from_bytes(&bytes);
    assert_eq!((b.e, b.qs[0], b.code(16)), (126, 0x2f, 2));
    let mut nan = bytes.clone();
    nan[0] = 255;
    assert_eq!(
        Matrix::from_bytes(1, 32, Format::Mxfp4, &nan).unwrap_err(),
        KernelError::InvalidMxfp4 { index: 0 }
    );
}

/// What HF transformers' `convert_moe_packed_tensors` computes: byte `j` of a block gives element
/// `2j` (low nibble) and `2j + 1` (high nibble) through the E2M1 table, then `ldexp` by
/// `scale - 127`.
fn transformers_decode(blocks: &[u8], scales: &[u8]) -> Vec<f32> {
    const LUT: [f32; 16] = [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
    ];
    let mut out = Vec::with_capacity(blocks.len() * 2);
    for (block, &s) in blocks.chunks_exact(16).zip(scales) {
        let factor = 2f64.powi(i32::from(s) - 127);
        for &b in block {
            out.push((f64::from(LUT[usize::from(b & 0x0f)]) * factor) as f32);
            out.push((f64::from(LUT[usize::from(b >> 4)]) * factor) as f32);
        }
    }
    out
}

#[test]
fn mxfp4_checkpoint_weights_decode_exactly_as_transformers_does() {
    // 2 x 64: four blocks with a small, a unit, a large and the smallest scale.
    let scales = [124u8, 127, 147, 0];
    let mut blocks = vec![0u8; 4 * 16];
    blocks[0] = 0x9f; // elements 0, 1: codes 15 (-6), 9 (-0.5)
    blocks[15] = 0x07; // elements 30, 31: codes 7 (6), 0
    for (i, b) in blocks.iter_mut().enumerate().skip(16) {
        *b = (i * 29 % 256) as u8;
    }
    blocks[16] = 0x10;
    blocks[32] = 0x40;
    let m = Matrix::from_mxfp4(2, 64, &blocks, &scales).unwrap();
    assert_eq!((m.format(), m.nbytes()), (Format::Mxfp4, 4 * 17));
    let y = m.to_f32();
    // Block 0 at scale 2^-3, by hand.
    assert_eq!((y[0], y[1], y[30], y[31]), (-0.75, -0.0625, 0.75, 0.0));
    assert!(y[2..30].iter().all(|&v| v == 0.0));
    // Block 1 starts with byte 16 = 0x10: element 32 is code 0, element 33 code 1 (0.5).
    assert_eq!((y[32], y[33]), (0.0, 0.5));
    // Block 2 at scale 2^20: byte 32 = 0x40, so element 65 is code 4 (2.0).
    assert_eq!(y[65], 2.0 * 1048576.0);
    let want = transformers_decode(&blocks, &scales);
    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "element {i}: {a} vs {b}");
    }
    assert!(y[96..].iter().any(|&v| v != 0.0 && v.abs() < 1e-37));
    let back = Matrix::from_bytes(2, 64, Format::Mxfp4, m.as_bytes()).unwrap();
    assert_eq!(back.to_f32(), y);
    assert!(matches!(
        Matrix::from_mxfp4(2, 64, &blocks, &scales[..3]),
        Err(KernelError::ShapeMismatch { .. })
    ));
    assert!(Matrix::from_mxfp4(2, 64, &blocks[..63], &scales).is_err());
    assert!(matches!(
        Matrix::from_mxfp4(1, 48, &blocks[..24], &scales[..1]),
        Err(KernelError::UnalignedCols { .. })
    ));
    let mut nan = scales;
    nan[2] = 255;
    assert_eq!(
        Matrix::from_mxfp4(2, 64, &blocks, &nan).unwrap_err(),
        KernelError::InvalidMxfp4 { index: 2 }
    );
}

#[test]
fn q8_layout() {
    let mut qs = [0i8; 32];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = j as i8 - 16;
    }
    let block = BlockQ8 {
        d: f16::from_f32(0.5),
        qs,
    };
    let m = Matrix::from_bytes(1, 32, Format::Q8, bytemuck::bytes_of(&block)).unwrap();
    let bytes = m.as_bytes();
    assert_eq!(bytes.len(), 34);
    assert_eq!(&bytes[..2], &[0x00, 0x38]); // 0.5 as f16, little endian
    assert_eq!(bytes[2], (-16i8) as u8);
    assert_eq!(bytes[33], 15);
    let y = m.to_f32();
    assert_eq!(y[0], -8.0);
    assert_eq!(y[31], 7.5);
}

#[test]
fn q4_layout() {
    // Byte j: low nibble = element j, high nibble = element j + 16.
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = (j as u8) | ((15 - j as u8) << 4);
    }
    let block = BlockQ4 {
        d: f16::from_f32(-2.0),
        qs,
    };
    let bytes = bytemuck::bytes_of(&block);
    assert_eq!(bytes.len(), 18);
    assert_eq!(&bytes[..2], &[0x00, 0xc0]); // -2.0 as f16
    assert_eq!(bytes[2], 0xf0);
    let m = Matrix::from_bytes(1, 32, Format::Q4, bytes).unwrap();
    let y = m.to_f32();
    for j in 0..16 {
        assert_eq!(y[j], -2.0 * (j as f32 - 8.0), "element {j}");
        assert_eq!(y[j + 16], -2.0 * (7.0 - j as f32), "element {}", j + 16);
    }
}

#[test]
fn q2_layout() {
    // Element j: byte j % 8, bits 2*(j/8)..2*(j/8)+2; value d * q + m.
    let codes: Vec<u8> = (0..32).map(|j| ((j * 7 + j / 8) % 4) as u8).collect();
    let mut qs = [0u8; 8];
    for (j, &q) in codes.iter().enumerate() {
        qs[j % 8] |= q << (2 * (j / 8));
    }
    let block = BlockQ2 {
        d: f16::from_f32(0.25),
        m: f16::from_f32(-1.0),
        qs,
    };
    let bytes = bytemuck::bytes_of(&block);
    assert_eq!(bytes.len(), 12);
    assert_eq!(&bytes[..4], &[0x00, 0x34, 0x00, 0xbc]); // 0.25, -1.0 as f16
    let y = Matrix::from_bytes(1, 32, Format::Q2, bytes)
        .unwrap()
        .to_f32();
    for (j, &q) in codes.iter().enumerate() {
        assert_eq!(y[j], 0.25 * f32::from(q) - 1.0, "element {j}");
    }
}

#[test]
fn float_layouts_are_plain_little_endian() {
    let x = [1.0f32, -2.5, 3.25];
    let m = Matrix::from_f32(1, 3, &x, Format::F32).unwrap();
    assert_eq!(&m.as_bytes()[..4], &1.0f32.to_le_bytes());
    let h = Matrix::from_f32(1, 3, &x, Format::F16).unwrap();
    assert_eq!(
        &h.as_bytes()[2..4],
        &f16::from_f32(-2.5).to_bits().to_le_bytes()
    );
    let b = Matrix::from_f32(1, 3, &x, Format::Bf16).unwrap();
    assert_eq!(
        &b.as_bytes()[4..6],
        &bf16::from_f32(3.25).to_bits().to_le_bytes()
    );
    let kept = Matrix::from_f16(1, 2, vec![f16::from_f32(1.5), f16::from_f32(-0.5)]).unwrap();
    assert_eq!(kept.to_f32(), vec![1.5, -0.5]);
    let kept = Matrix::from_bf16(1, 2, vec![bf16::from_f32(2.0), bf16::from_f32(-4.0)]).unwrap();
    assert_eq!(kept.to_f32(), vec![2.0, -4.0]);
}

#[test]
fn bytes_round_trip_and_sizes() {
    let mut rng = Rng::new(3);
    let x = rng.normals(3 * 96, 1.0);
    for format in Format::ALL {
        let m = Matrix::from_f32(3, 96, &x, format).unwrap();
        assert_eq!(m.nbytes(), 3 * format.row_bytes(96));
        assert_eq!(
            m.nbytes() as f64,
            3.0 * 96.0 * format.bits_per_weight() / 8.0
        );
        let back = Matrix::from_bytes(3, 96, format, m.as_bytes()).unwrap();
        assert_eq!(back.as_bytes(), m.as_bytes());
        assert_eq!(back.to_f32(), m.to_f32());
        assert_eq!((back.rows(), back.cols(), back.format()), (3, 96, format));
        let mut row = vec![0.0; 96];
        back.dequantize_row(2, &mut row).unwrap();
        assert_eq!(row, m.to_f32()[192..]);
    }
}

#[test]
fn conversions() {
    let mut rng = Rng::new(4);
    let x = rng.normals(4 * 64, 1.0);
    let q8 = Matrix::from_f32(4, 64, &x, Format::Q8).unwrap();
    let same = q8.convert(Format::Q8).unwrap();
    assert_eq!(same.as_bytes(), q8.as_bytes());
    for format in Format::ALL {
        let c = q8.convert(format).unwrap();
        assert_eq!(c.format(), format);
        // Converting the dequantized values again stays within the target format's budget.
        for (a, b) in q8.to_f32().chunks(32).zip(c.to_f32().chunks(32)) {
            let amax = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= max_budget(format) * amax);
            }
        }
    }
    let h = Matrix::from_f32(4, 64, &x, Format::F16).unwrap();
    assert_eq!(h.convert(Format::F32).unwrap().to_f32(), h.to_f32());
}

#[test]
fn stacking_rows_keeps_every_part() {
    let mut rng = Rng::new(5);
    for format in Format::ALL {
        let a = Matrix::from_f32(3, 64, &rng.normals(3 * 64, 1.0), format).unwrap();
        let b = Matrix::from_f32(2, 64, &rng.normals(2 * 64, 1.0), format).unwrap();
        let s = Matrix::stack_rows(&[&a, &b]).unwrap();
        assert_eq!((s.rows(), s.cols(), s.format()), (5, 64, format));
        assert_eq!(s.to_f32(), [a.to_f32(), b.to_f32()].concat(), "{format}");
    }
    let q8 = Matrix::from_f32(1, 64, &[0.5; 64], Format::Q8).unwrap();
    let q4 = Matrix::from_f32(1, 64, &[0.5; 64], Format::Q4).unwrap();
    let wide = Matrix::from_f32(1, 96, &[0.5; 96], Format::Q8).unwrap();
    assert!(Matrix::stack_rows(&[&q8, &q4]).is_err());
    assert!(Matrix::stack_rows(&[&q8, &wide]).is_err());
    assert!(Matrix::stack_rows(&[]).is_err());
}

#[test]
fn refused_inputs() {
    let x = vec![0.0f32; 64];
    for format in Format::ALL {
        assert!(matches!(
            Matrix::from_bytes(0, usize::MAX, format, &[]),
            Err(KernelError::TooLarge { .. })
        ));
    }
    assert_eq!(
        Matrix::from_f32(2, 33, &x, Format::F32).unwrap_err(),
        KernelError::ShapeMismatch {
            what: "matrix data",
            expected: 66,
            got: 64
        }
    );
    assert_eq!(
        Matrix::from_f32(2, 32, &x, Format::Q4).map(|m| m.rows()),
        Ok(2)
    );
    assert_eq!(
        Matrix::from_f32(4, 16, &x, Format::Q8).unwrap_err(),
        KernelError::UnalignedCols {
            cols: 16,
            block: 32
        }
    );
    assert!(Matrix::from_f32(usize::MAX, 2, &x, Format::F32).is_err());
    assert!(Matrix::from_f16(1, 3, vec![f16::ZERO; 2]).is_err());
    assert!(Matrix::from_bf16(1, 1, vec![bf16::ZERO; 2]).is_err());
    for format in Format::ALL {
        let bytes = vec![0u8; format.row_bytes(64) * 2];
        assert!(Matrix::from_bytes(2, 64, format, &bytes).is_ok());
        for len in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    Matrix::from_bytes(2, 64, format, &bytes[..len]),
                    Err(KernelError::InvalidBytes { .. })
                ),
                "{format} {len}"
            );
        }
        let longer = vec![0u8; bytes.len() + 1];
        assert!(matches!(
            Matrix::from_bytes(2, 64, format, &longer),
            Err(KernelError::InvalidBytes { .. })
        ));
    }
    assert!(matches!(
        Matrix::from_bytes(1, 48, Format::Q2, &[0; 18]),
        Err(KernelError::UnalignedCols { .. })
    ));
    let m = Matrix::from_f32(2, 32, &x, Format::Q2).unwrap();
    let mut row = vec![0.0; 32];
    assert_eq!(
        m.dequantize_row(2, &mut row),
        Err(KernelError::RowOutOfRange { row: 2, rows: 2 })
    );
    assert!(matches!(
        m.dequantize_row(0, &mut row[..31]),
        Err(KernelError::ShapeMismatch { .. })
    ));
    let empty = Matrix::from_f32(0, 0, &[], Format::Q4).unwrap();
    assert_eq!(empty.nbytes(), 0);
    assert!(empty.to_f32().is_empty());
}
