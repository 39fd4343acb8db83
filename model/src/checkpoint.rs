//! A HuggingFace safetensors checkpoint on disk: `model.safetensors`, or shards named by
//! `model.safetensors.index.json`. Files are memory-mapped; headers are validated on open; each
//! tensor is read by name with its shape checked. Turning bytes into weights happens here too, so
//! callers never see a dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use moe_kernels::mmap::MappedFile;
use moe_kernels::{Format, Matrix};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::fallback;
use crate::layout::TensorSpec;

pub const SINGLE_FILE: &str = "model.safetensors";
/// The edge of the square blocks an fp8 checkpoint's `weight_scale_inv` scales (DeepSeek-V3's
/// `weight_block_size`); partial blocks at the matrix's edges.
pub const FP8_BLOCK: usize = 128;
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One safetensors file: its mapping and parsed header.
struct Shard {
    path: PathBuf,
    map: MappedFile,
    /// Where the tensor data starts in the file (8-byte length + header).
    data_start: usize,
    metadata: Metadata,
}

pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name -> index into `shards`.
    owner: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

/// A tensor's bytes as stored, with enough context to name it in errors.
pub struct TensorData<'a> {
    path: &'a Path,
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    bytes: &'a [u8],
}

impl Checkpoint {
    /// Opens `model.safetensors`, or every shard listed by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index_path = dir.join(INDEX_FILE);
        let files: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
                path: index_path.clone(),
                source,
            })?;
            let index: Index = serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: index_path.clone(),
                source,
            })?;
            let mut files: Vec<String> = index.weight_map.into_values().collect();
            files.sort();
            files.dedup();
            // Shards live beside the index: a path elsewhere is a corrupt (or hostile) index.
            if let Some(bad) = files
                .iter()
                .find(|f| Path::new(f).file_name() != Some(std::ffi::OsStr::new(f)))
            {
                return Err(ModelError::Config {
                    path: index_path,
                    key: "weight_map".into(),
                    reason: format!("shard `{bad}` is not a file name in the checkpoint directory"),
                });
            }
            files
        } else {
            vec![SINGLE_FILE.to_string()]
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut owner = HashMap::new();
        for file in files {
            let shard = Shard::open(&dir.join(&file))?;
            for name in shard.metadata.tensors().into_keys() {
                if let Some(previous) = owner.insert(name.clone(), shards.len()) {
                    let first: &Shard = &shards[previous];
                    return Err(ModelError::Safetensors {
                        path: shard.path.clone(),
                        reason: format!("tensor `{name}` is also in {}", first.path.display()),
                    });
                }
            }
            shards.push(shard);
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            shards,
            owner,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }

    /// The tensor `spec` names, checked against `spec`'s shape: weights of a float type.
    pub fn tensor<'a>(&'a self, spec: &'a TensorSpec) -> Result<TensorData<'a>> {
        self.typed(spec, &[Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F8_E4M3])
    }

    /// The tensor `spec` names, checked against `spec`'s shape and against `dtypes`.
    fn typed<'a>(&'a self, spec: &'a TensorSpec, dtypes: &[Dtype]) -> Result<TensorData<'a>> {
        let Some(&i) = self.owner.get(&spec.name) else {
            return Err(ModelError::MissingTensor {
                dir: self.dir.clone(),
                tensor: spec.name.clone(),
            });
        };
        let shard = &self.shards[i];
        let info = shard
            .metadata
            .info(&spec.name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                tensor: spec.name.clone(),
            })?;
        if info.shape != spec.shape {
            return Err(ModelError::ShapeMismatch {
                path: shard.path.clone(),
                tensor: spec.name.clone(),
                expected: spec.shape.clone(),
                got: info.shape.clone(),
            });
        }
        if !dtypes.contains(&info.dtype) {
            return Err(ModelError::UnsupportedDtype {
                path: shard.path.clone(),
                tensor: spec.name.clone(),
                dtype: format!("{:?}", info.dtype),
            });
        }
        let (start, end) = info.data_offsets;
        let bytes = &shard.map[shard.data_start + start..shard.data_start + end];
        Ok(TensorData {
            path: &shard.path,
            name: &spec.name,
            dtype: info.dtype,
            shape: &info.shape,
            bytes,
        })
    }

    /// A vector (norm weight, bias) as f32.
    pub fn vector(&self, spec: &TensorSpec) -> Result<Vec<f32>> {
        let tensor = self.tensor(spec)?;
        if tensor.dtype == Dtype::F8_E4M3 {
            return Err(tensor.invalid("an fp8 tensor where a vector of floats belongs"));
        }
        Ok(tensor.to_f32())
    }

    /// A 2-D weight kept in its stored type (`format: None`) or converted to `format`, or to the
    /// nearest wider format when its width does not fit `format`'s blocks (see `fallback`). An
    /// fp8 weight (`float8_e4m3fn` with its `<name>_scale_inv` block scales) is kept as fp8.
    pub fn matrix(&self, spec: &TensorSpec, format: Option<Format>) -> Result<Matrix> {
        let tensor = self.tensor(spec)?;
        if tensor.dtype != Dtype::F8_E4M3 {
            return tensor.to_matrix(format);
        }
        let stored = self.fp8_matrix(spec, &tensor)?;
        match format {
            None => Ok(stored),
            Some(f) => Ok(stored.convert(fallback::fitted(f, stored.cols()))?),
        }
    }

    /// An fp8 weight with its block scales, as the kernels' fp8 format holds it.
    fn fp8_matrix(&self, spec: &TensorSpec, codes: &TensorData<'_>) -> Result<Matrix> {
        let &[rows, cols] = codes.shape else {
            return Err(codes.invalid("an fp8 tensor that is not a matrix"));
        };
        let blocks = [rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)];
        let name = format!("{}_scale_inv", spec.name);
        let scale_spec = TensorSpec {
            name,
            shape: blocks.to_vec(),
        };
        let scales = self.tensor(&scale_spec).map_err(|e| match e {
            ModelError::ShapeMismatch { got, .. } => codes.invalid(&format!(
                "its scale_inv is {got:?}, not one per 128x128 block {blocks:?} (other block sizes are not supported)"
            )),
            other => other,
        })?;
        if scales.dtype == Dtype::F8_E4M3 {
            return Err(scales.invalid("fp8 block scales (float32 or bfloat16 expected)"));
        }
        Matrix::from_fp8(rows, cols, codes.bytes, &scales.to_f32(), FP8_BLOCK)
            .map_err(|e| codes.invalid(&e.to_string()))
    }
}

/// The rows of one expert of a layer's fused tensors (gpt-oss's layout, see `FusedExpert`).
impl Checkpoint {
    /// Rows `rows` (output indices, in order) of expert `expert` of the fused matrix `spec`
    /// (`[experts, inputs, outputs]`, input-major), as a `[rows.len(), inputs]` matrix kept in
    /// its stored type (`format: None`) or converted to `format`. Read from `<name>_blocks` and
    /// `<name>_scales` where the checkpoint stores it as MXFP4.
    pub fn expert_rows(
        &self,
        spec: &TensorSpec,
        expert: usize,
        rows: &[usize],
        format: Option<Format>,
    ) -> Result<Matrix> {
        let &[_, inputs, outputs] = spec.shape.as_slice() else {
            return Err(ModelError::InvalidArgument(format!(
                "fused expert tensor `{}` is {:?}, not 3-D",
                spec.name, spec.shape
            )));
        };
        let blocks = format!("{}_blocks", spec.name);
        if self.contains(&blocks) {
            let stored = self.mxfp4_rows(spec, (inputs, outputs), expert, rows)?;
            return match format {
                None | Some(Format::Mxfp4) => Ok(stored),
                Some(f) => Ok(stored.convert(fallback::fitted(f, inputs))?),
            };
        }
        let tensor = self.tensor(spec)?;
        if tensor.dtype == Dtype::F8_E4M3 {
            return Err(tensor.invalid("an fp8 fused expert tensor (MXFP4 or floats expected)"));
        }
        let slice = tensor.range_f32(expert * inputs * outputs, inputs * outputs);
        let mut data = Vec::with_capacity(rows.len() * inputs);
        for &r in rows {
            data.extend((0..inputs).map(|i| slice[i * outputs + r]));
        }
        let target = format.map_or(tensor.format(), |f| fallback::fitted(f, inputs));
        Matrix::from_f32(rows.len(), inputs, &data, target)
            .map_err(|e| tensor.invalid(&e.to_string()))
    }

    /// Rows of one expert of an MXFP4-stored fused matrix: `<name>_blocks` `[experts, outputs,
    /// inputs / 32, 16]` and `<name>_scales` `[experts, outputs, inputs / 32]`, both bytes.
    fn mxfp4_rows(
        &self,
        spec: &TensorSpec,
        (inputs, outputs): (usize, usize),
        expert: usize,
        rows: &[usize],
    ) -> Result<Matrix> {
        let groups = inputs / 32;
        let experts = spec.shape[0];
        let bytes = |suffix: &str, shape: &[usize]| TensorSpec {
            name: format!("{}_{suffix}", spec.name),
            shape: shape.to_vec(),
        };
        let (b, s) = (
            bytes("blocks", &[experts, outputs, groups, 16]),
            bytes("scales", &[experts, outputs, groups]),
        );
        let (blocks, scales) = (self.typed(&b, &[Dtype::U8])?, self.typed(&s, &[Dtype::U8])?);
        if !inputs.is_multiple_of(32) {
            return Err(blocks.invalid(&format!("{inputs} inputs are not whole 32-value blocks")));
        }
        let row = |r: usize| expert * outputs + r;
        let mut picked_blocks = Vec::with_capacity(rows.len() * groups * 16);
        let mut picked_scales = Vec::with_capacity(rows.len() * groups);
        for &r in rows {
            picked_blocks.extend_from_slice(&blocks.bytes[row(r) * groups * 16..][..groups * 16]);
            picked_scales.extend_from_slice(&scales.bytes[row(r) * groups..][..groups]);
        }
        Matrix::from_mxfp4(rows.len(), inputs, &picked_blocks, &picked_scales)
            .map_err(|e| blocks.invalid(&e.to_string()))
    }

    /// Row `expert` of a per-expert vector tensor `[experts, n]` (a fused expert's bias).
    pub fn expert_vector(&self, spec: &TensorSpec, expert: usize) -> Result<Vec<f32>> {
        let n = spec.shape.get(1).copied().unwrap_or(0);
        let tensor = self.tensor(spec)?;
        if tensor.dtype == Dtype::F8_E4M3 {
            return Err(tensor.invalid("an fp8 tensor where a vector of floats belongs"));
        }
        Ok(tensor.range_f32(expert * n, n))
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Shard> {
        let map = MappedFile::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| ModelError::Safetensors {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            metadata,
        })
    }
}

/// Little-endian 16-bit words.
fn halves(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

impl TensorData<'_> {
    /// An error naming this tensor and its file.
    fn invalid(&self, reason: &str) -> ModelError {
        ModelError::InvalidArgument(format!(
            "{}: tensor `{}`: {reason}",
            self.path.display(),
            self.name
        ))
    }

    pub fn to_f32(&self) -> Vec<f32> {
        let len = self.bytes.len() * 8 / self.dtype.bitsize().max(1);
        self.range_f32(0, len)
    }

    /// Elements `start..start + len` (of a float tensor) as f32.
    fn range_f32(&self, start: usize, len: usize) -> Vec<f32> {
        let size = self.dtype.bitsize() / 8;
        let bytes = &self.bytes[start * size..(start + len) * size];
        match self.dtype {
            Dtype::F16 => halves(bytes).map(|b| f16::from_bits(b).to_f32()).collect(),
            Dtype::BF16 => halves(bytes).map(|b| bf16::from_bits(b).to_f32()).collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }

    fn halves(&self) -> impl Iterator<Item = u16> + '_ {
        halves(self.bytes)
    }

    /// The stored format of this tensor.
    pub fn format(&self) -> Format {
        match self.dtype {
            Dtype::F16 => Format::F16,
            Dtype::BF16 => Format::Bf16,
            _ => Format::F32,
        }
    }

    pub fn to_matrix(&self, format: Option<Format>) -> Result<Matrix> {
        let &[rows, cols] = self.shape else {
            return Err(ModelError::NotAMatrix {
                path: self.path.to_path_buf(),
                tensor: self.name.to_string(),
                shape: self.shape.to_vec(),
            });
        };
        let target = format.map_or(self.format(), |f| fallback::fitted(f, cols));
        let matrix = match (self.dtype, target) {
            (Dtype::F16, Format::F16) => {
                Matrix::from_f16(rows, cols, self.halves().map(f16::from_bits).collect())
            }
            (Dtype::BF16, Format::Bf16) => {
                Matrix::from_bf16(rows, cols, self.halves().map(bf16::from_bits).collect())
            }
            _ => Matrix::from_f32(rows, cols, &self.to_f32(), target),
        };
        matrix.map_err(|e| {
            ModelError::InvalidArgument(format!(
                "{}: tensor `{}`: {e}",
                self.path.display(),
                self.name
            ))
        })
    }
}
