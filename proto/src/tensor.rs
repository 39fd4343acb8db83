//! `Tensor` messages to and from f32 rows, validated on decode: a 2-D shape with the expected
//! column count, data length = rows x cols x element size, one finite scale per row for int8, and
//! the row and byte limits each side configures. Pure: no IO.

use bytes::Bytes;
use half::{bf16, f16};

use crate::expert::{Dtype, Tensor};

/// The element types a tensor travels as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireDtype {
    F32,
    F16,
    Bf16,
    /// int8 with one f32 scale per row (`scale = max |x| / 127`): a quarter of f32's bytes.
    I8RowScaled,
}

impl WireDtype {
    pub fn element_bytes(self) -> usize {
        match self {
            WireDtype::F32 => 4,
            WireDtype::F16 | WireDtype::Bf16 => 2,
            WireDtype::I8RowScaled => 1,
        }
    }

    /// The dtype a request asks for in a `Dtype` field; `DTYPE_UNSPECIFIED`, the proto default,
    /// means f32.
    pub fn requested(raw: i32) -> Result<WireDtype, WireError> {
        if raw == Dtype::Unspecified as i32 {
            Ok(WireDtype::F32)
        } else {
            WireDtype::from_proto(raw)
        }
    }

    /// The `Dtype` this is on the wire.
    pub fn proto(self) -> Dtype {
        match self {
            WireDtype::F32 => Dtype::F32,
            WireDtype::F16 => Dtype::F16,
            WireDtype::Bf16 => Dtype::Bf16,
            WireDtype::I8RowScaled => Dtype::I8RowScaled,
        }
    }

    fn from_proto(raw: i32) -> Result<WireDtype, WireError> {
        match Dtype::try_from(raw) {
            Ok(Dtype::F32) => Ok(WireDtype::F32),
            Ok(Dtype::F16) => Ok(WireDtype::F16),
            Ok(Dtype::Bf16) => Ok(WireDtype::Bf16),
            Ok(Dtype::I8RowScaled) => Ok(WireDtype::I8RowScaled),
            Ok(Dtype::Unspecified) | Err(_) => Err(WireError::UnknownDtype(raw)),
        }
    }
}

/// What one side accepts in a single tensor; both sides configure it explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    /// 4096 token rows and 64 MiB, the defaults of the binaries.
    fn default() -> Limits {
        Limits {
            max_rows: 4096,
            max_bytes: 64 << 20,
        }
    }
}

/// Why a tensor was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("unknown tensor dtype {0}")]
    UnknownDtype(i32),
    #[error("tensor shape {0:?} is not [rows, cols]")]
    NotAMatrix(Vec<u32>),
    #[error("tensor has {got} columns, expected {expected}")]
    Columns { expected: usize, got: usize },
    #[error("tensor has {rows} rows, more than the limit of {max}")]
    TooManyRows { rows: usize, max: usize },
    #[error("tensor data is {bytes} bytes, more than the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("tensor data is {got} bytes, its shape and dtype need {expected}")]
    DataLength { expected: usize, got: usize },
    #[error("tensor has {got} row scales for {expected} rows")]
    RowScales { expected: usize, got: usize },
    #[error("row {0} has a non-finite scale or values")]
    NonFinite(usize),
    #[error("{len} values do not make {rows} rows of {cols}")]
    Shape {
        len: usize,
        rows: usize,
        cols: usize,
    },
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> tonic::Status {
        match e {
            WireError::TooManyRows { .. } | WireError::TooLarge { .. } => {
                tonic::Status::resource_exhausted(e.to_string())
            }
            _ => tonic::Status::invalid_argument(e.to_string()),
        }
    }
}

/// Rows of f32 values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Encodes `data` (`rows` x `cols`, row-major) as `dtype`.
pub fn encode(
    data: &[f32],
    rows: usize,
    cols: usize,
    dtype: WireDtype,
) -> Result<Tensor, WireError> {
    let dims = (u32::try_from(rows), u32::try_from(cols));
    let (Ok(r), Ok(c), true) = (dims.0, dims.1, rows.checked_mul(cols) == Some(data.len())) else {
        return Err(WireError::Shape {
            len: data.len(),
            rows,
            cols,
        });
    };
    let mut bytes = Vec::with_capacity(data.len() * dtype.element_bytes());
    let mut row_scales = Vec::new();
    match dtype {
        WireDtype::F32 => data
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
        WireDtype::F16 => data
            .iter()
            .for_each(|v| bytes.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        WireDtype::Bf16 => data
            .iter()
            .for_each(|v| bytes.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        WireDtype::I8RowScaled => {
            for i in 0..rows {
                let row = &data[i * cols..(i + 1) * cols];
                let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                if !amax.is_finite() || row.iter().any(|v| v.is_nan()) {
                    return Err(WireError::NonFinite(i));
                }
                let scale = amax / 127.0;
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                bytes.extend(
                    row.iter()
                        .map(|v| (v * inverse).round().clamp(-127.0, 127.0) as i8 as u8),
                );
                row_scales.push(scale);
            }
        }
    }
    Ok(Tensor {
        dtype: dtype.proto() as i32,
        shape: vec![r, c],
        data: Bytes::from(bytes),
        row_scales,
    })
}

/// Decodes and validates `t` as rows of `cols` values.
pub fn decode(t: &Tensor, cols: usize, limits: &Limits) -> Result<Rows, WireError> {
    let dtype = WireDtype::from_proto(t.dtype)?;
    let &[rows, got_cols] = t.shape.as_slice() else {
        return Err(WireError::NotAMatrix(t.shape.clone()));
    };
    let (rows, got_cols) = (rows as usize, got_cols as usize);
    if got_cols != cols {
        return Err(WireError::Columns {
            expected: cols,
            got: got_cols,
        });
    }
    if rows > limits.max_rows {
        return Err(WireError::TooManyRows {
            rows,
            max: limits.max_rows,
        });
    }
    if t.data.len() > limits.max_bytes {
        return Err(WireError::TooLarge {
            bytes: t.data.len(),
            max: limits.max_bytes,
        });
    }
    let expected = rows
        .saturating_mul(cols)
        .saturating_mul(dtype.element_bytes());
    if t.data.len() != expected {
        return Err(WireError::DataLength {
            expected,
            got: t.data.len(),
        });
    }
    let scales = if dtype == WireDtype::I8RowScaled {
        rows
    } else {
        0
    };
    if t.row_scales.len() != scales {
        return Err(WireError::RowScales {
            expected: scales,
            got: t.row_scales.len(),
        });
    }
    if let Some(row) = t.row_scales.iter().position(|s| !s.is_finite()) {
        return Err(WireError::NonFinite(row));
    }
    let b = &t.data;
    let data = match dtype {
        WireDtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        WireDtype::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        WireDtype::Bf16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        WireDtype::I8RowScaled => b
            .chunks_exact(cols.max(1))
            .zip(&t.row_scales)
            .flat_map(|(row, s)| row.iter().map(move |&q| q as i8 as f32 * s))
            .collect(),
    };
    Ok(Rows { rows, cols, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 0.013)
            .collect()
    }

    #[test]
    fn round_trips_within_each_dtype_budget() {
        let (rows, cols) = (5, 64);
        let x = sample(rows, cols);
        let limits = Limits::default();
        for (dtype, budget) in [
            (WireDtype::F32, 0.0),
            (WireDtype::F16, 1.0 / 2048.0),
            (WireDtype::Bf16, 1.0 / 256.0),
        ] {
            let t = encode(&x, rows, cols, dtype).unwrap();
            assert_eq!(t.data.len(), rows * cols * dtype.element_bytes());
            let back = decode(&t, cols, &limits).unwrap();
            assert_eq!((back.rows, back.cols), (rows, cols));
            for (a, b) in x.iter().zip(&back.data) {
                assert!((a - b).abs() <= budget * a.abs(), "{dtype:?}: {a} -> {b}");
            }
        }
        let t = encode(&x, rows, cols, WireDtype::I8RowScaled).unwrap();
        let back = decode(&t, cols, &limits).unwrap();
        for ((row, back_row), scale) in x
            .chunks(cols)
            .zip(back.data.chunks(cols))
            .zip(&t.row_scales)
        {
            for (a, b) in row.iter().zip(back_row) {
                assert!(
                    (a - b).abs() <= scale * 0.5 * 1.0001,
                    "int8: {a} -> {b} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_values_survive() {
        let t = encode(&[0.0; 8], 2, 4, WireDtype::I8RowScaled).unwrap();
        assert_eq!(
            decode(&t, 4, &Limits::default()).unwrap().data,
            vec![0.0; 8]
        );
        let no_cols = encode(&[], 3, 0, WireDtype::I8RowScaled).unwrap();
        assert_eq!(decode(&no_cols, 0, &Limits::default()).unwrap().rows, 3);
        let empty = encode(&[], 0, 4, WireDtype::F16).unwrap();
        assert_eq!(decode(&empty, 4, &Limits::default()).unwrap().rows, 0);
    }

    #[test]
    fn malformed_tensors_are_refused() {
        let limits = Limits::default();
        let good = encode(&sample(2, 8), 2, 8, WireDtype::F32).unwrap();
        let with = |f: &dyn Fn(&mut Tensor)| {
            let mut t = good.clone();
            f(&mut t);
            decode(&t, 8, &limits).unwrap_err()
        };
        assert_eq!(with(&|t| t.dtype = 0), WireError::UnknownDtype(0));
        assert_eq!(with(&|t| t.dtype = 99), WireError::UnknownDtype(99));
        assert_eq!(
            with(&|t| t.shape = vec![16]),
            WireError::NotAMatrix(vec![16])
        );
        assert_eq!(
            with(&|t| t.shape = vec![4, 4]),
            WireError::Columns {
                expected: 8,
                got: 4
            }
        );
        assert_eq!(
            with(&|t| t.data = t.data.slice(..60)),
            WireError::DataLength {
                expected: 64,
                got: 60
            }
        );
        assert_eq!(
            with(&|t| t.dtype = Dtype::F16 as i32),
            WireError::DataLength {
                expected: 32,
                got: 64
            }
        );
        assert_eq!(
            with(&|t| t.row_scales = vec![1.0, 1.0]),
            WireError::RowScales {
                expected: 0,
                got: 2
            }
        );

        let int8 = encode(&sample(2, 8), 2, 8, WireDtype::I8RowScaled).unwrap();
        let mut t = int8.clone();
        t.row_scales.pop();
        assert_eq!(
            decode(&t, 8, &limits).unwrap_err(),
            WireError::RowScales {
                expected: 2,
                got: 1
            }
        );
        let mut t = int8;
        t.row_scales[1] = f32::NAN;
        assert_eq!(decode(&t, 8, &limits).unwrap_err(), WireError::NonFinite(1));

        assert!(matches!(
            encode(&[1.0; 7], 2, 4, WireDtype::F32),
            Err(WireError::Shape { .. })
        ));
        assert_eq!(
            encode(&[1.0, f32::INFINITY], 1, 2, WireDtype::I8RowScaled).unwrap_err(),
            WireError::NonFinite(0)
        );
    }

    #[test]
    fn a_requested_dtype_defaults_to_f32() {
        assert_eq!(WireDtype::requested(0), Ok(WireDtype::F32));
        assert_eq!(
            WireDtype::requested(Dtype::I8RowScaled as i32),
            Ok(WireDtype::I8RowScaled)
        );
        assert_eq!(
            WireDtype::requested(Dtype::Bf16 as i32),
            Ok(WireDtype::Bf16)
        );
        assert_eq!(WireDtype::requested(17), Err(WireError::UnknownDtype(17)));
    }

    #[test]
    fn limits_are_enforced_and_map_to_resource_exhausted() {
        let t = encode(&sample(10, 8), 10, 8, WireDtype::F32).unwrap();
        let rows = Limits {
            max_rows: 9,
            max_bytes: 1 << 20,
        };
        let e = decode(&t, 8, &rows).unwrap_err();
        assert_eq!(e, WireError::TooManyRows { rows: 10, max: 9 });
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::ResourceExhausted
        );
        let bytes = Limits {
            max_rows: 100,
            max_bytes: 319,
        };
        assert_eq!(
            decode(&t, 8, &bytes).unwrap_err(),
            WireError::TooLarge {
                bytes: 320,
                max: 319
            }
        );
        let shape = tonic::Status::from(WireError::Columns {
            expected: 8,
            got: 4,
        });
        assert_eq!(shape.code(), tonic::Code::InvalidArgument);
    }
}
