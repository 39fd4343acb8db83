//! Safetensors files written tensor by tensor, so a checkpoint never has to fit in memory, and the
//! split of a checkpoint into shard files the way HF `save_pretrained` splits it. Writes f16, or
//! for an fp8 checkpoint the decoder layers' projections as E4M3 codes, each followed by its f32
//! `weight_scale_inv` (one scale per 128x128 block, partial at the edges: DeepSeek-V3's layout),
//! or for an MXFP4 checkpoint the fused expert matrices as `<name>_blocks` and `<name>_scales`
//! (gpt-oss's layout: output-major, 32 values per E8M0-scaled block, two E2M1 codes per byte);
//! reading is the loader's business.
//!
//! Format: an 8-byte little-endian header length, a JSON header (`__metadata__` first, then the
//! tensors in checkpoint order with contiguous `data_offsets`) padded with spaces to a multiple of 8
//! bytes, then the tensors' little-endian data back to back.

use std::io::{self, Write};

use half::f16;
use moe_kernels::{BlockMxfp4, f32_to_e4m3};
use moe_model::checkpoint::FP8_BLOCK;
use moe_model::layout::TensorSpec;
use serde_json::Value;

use crate::init::Values;

/// Values generated and converted per write.
const CHUNK: usize = 1 << 16;
/// The largest E4M3 magnitude, which a block's largest value is scaled to.
const FP8_MAX: f32 = 448.0;

pub(crate) use moe_model::checkpoint::{INDEX_FILE, SINGLE_FILE};

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F16,
    /// E4M3 codes; the next tensor holds their block scales.
    Fp8,
    /// The f32 `weight_scale_inv` of the fp8 tensor before it.
    Fp8Scales,
    /// MXFP4 codes of a fused `[experts, inputs, outputs]` matrix, `[experts, outputs,
    /// inputs / 32, 16]` bytes; the next tensor holds their scales.
    Mxfp4Blocks,
    /// The E8M0 scales of the blocks before it, `[experts, outputs, inputs / 32]` bytes.
    Mxfp4Scales,
}

impl Dtype {
    fn bytes(self) -> u64 {
        match self {
            Dtype::F16 => 2,
            Dtype::Fp8 | Dtype::Mxfp4Blocks | Dtype::Mxfp4Scales => 1,
            Dtype::Fp8Scales => 4,
        }
    }

    fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F16 => "F16",
            Dtype::Fp8 => "F8_E4M3",
            Dtype::Fp8Scales => "F32",
            Dtype::Mxfp4Blocks | Dtype::Mxfp4Scales => "U8",
        }
    }
}

/// A tensor as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub spec: TensorSpec,
    pub dtype: Dtype,
}

impl Stored {
    pub fn bytes(&self) -> u64 {
        self.spec.numel() as u64 * self.dtype.bytes()
    }

    /// The tensor whose values this one stores: itself, or for MXFP4 blocks the fused matrix
    /// `[experts, inputs, outputs]` they quantize.
    pub fn logical(&self) -> TensorSpec {
        match (self.dtype, self.spec.shape.as_slice()) {
            (Dtype::Mxfp4Blocks, &[experts, outputs, groups, _]) => TensorSpec {
                name: self.spec.name.trim_end_matches("_blocks").to_string(),
                shape: vec![experts, groups * MXFP4_BLOCK, outputs],
            },
            _ => self.spec.clone(),
        }
    }
}

/// Values per MXFP4 block.
const MXFP4_BLOCK: usize = 32;

/// How a tensor is quantized in the checkpoint, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantized {
    Fp8,
    Mxfp4,
}

/// `tensors` in f16, except the matrices `quantized` selects: fp8 ones stored as E4M3 codes each
/// followed by its `<name>_scale_inv`, MXFP4 ones (fused `[experts, inputs, outputs]` matrices)
/// as `<name>_blocks` followed by `<name>_scales`.
pub(crate) fn stored(
    tensors: Vec<TensorSpec>,
    quantized: impl Fn(&TensorSpec) -> Option<Quantized>,
) -> Vec<Stored> {
    let mut out = Vec::with_capacity(tensors.len());
    for spec in tensors {
        match (spec.shape.as_slice(), quantized(&spec)) {
            (&[experts, inputs, outputs], Some(Quantized::Mxfp4)) => {
                let groups = inputs / MXFP4_BLOCK;
                let named = |suffix: &str, shape: Vec<usize>| TensorSpec {
                    name: format!("{}_{suffix}", spec.name),
                    shape,
                };
                out.push(Stored {
                    spec: named("blocks", vec![experts, outputs, groups, 16]),
                    dtype: Dtype::Mxfp4Blocks,
                });
                out.push(Stored {
                    spec: named("scales", vec![experts, outputs, groups]),
                    dtype: Dtype::Mxfp4Scales,
                });
            }
            (&[rows, cols], Some(Quantized::Fp8)) => {
                let scales = TensorSpec {
                    name: format!("{}_scale_inv", spec.name),
                    shape: vec![rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)],
                };
                out.push(Stored {
                    spec,
                    dtype: Dtype::Fp8,
                });
                out.push(Stored {
                    spec: scales,
                    dtype: Dtype::Fp8Scales,
                });
            }
            _ => out.push(Stored {
                spec,
                dtype: Dtype::F16,
            }),
        }
    }
    out
}

/// One file of a checkpoint and the tensors it holds, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shard {
    pub file_name: String,
    pub tensors: Vec<Stored>,
}

/// Splits tensors, in order, into shards of at most `max_bytes` of data each (a tensor larger
/// than that gets a shard of its own; block scales stay with their codes). One shard is
/// `model.safetensors`; several are `model-00001-of-0000N.safetensors` and so on.
pub(crate) fn plan(tensors: Vec<Stored>, max_bytes: u64) -> Vec<Shard> {
    let mut groups: Vec<Vec<Stored>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for t in tensors {
        let bytes = t.bytes();
        let splittable = !matches!(t.dtype, Dtype::Fp8Scales | Dtype::Mxfp4Scales);
        if splittable && !current.is_empty() && size + bytes > max_bytes {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        size += bytes;
        current.push(t);
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    let count = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, tensors)| Shard {
            file_name: shard_name(i, count),
            tensors,
        })
        .collect()
}

fn shard_name(index: usize, count: usize) -> String {
    if count == 1 {
        SINGLE_FILE.to_string()
    } else {
        format!("model-{:05}-of-{count:05}.safetensors", index + 1)
    }
}

/// Whether `name` is a weight file of the kind [`plan`] names, sharded or not, or the index.
pub(crate) fn is_weight_file(name: &str) -> bool {
    if name == SINGLE_FILE || name == INDEX_FILE {
        return true;
    }
    let Some(rest) = name
        .strip_prefix("model-")
        .and_then(|r| r.strip_suffix(".safetensors"))
    else {
        return false;
    };
    match rest.split_once("-of-") {
        Some((a, b)) => [a, b]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())),
        None => false,
    }
}

/// The 8-byte length and the padded JSON header of a file holding `tensors`.
pub(crate) fn header(tensors: &[Stored]) -> Vec<u8> {
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0;
    for t in tensors {
        let end = offset + t.bytes();
        let shape = Value::from(t.spec.shape.clone());
        let name = Value::from(t.spec.name.as_str());
        let dtype = t.dtype.safetensors_name();
        json.push_str(&format!(
            r#",{name}:{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{offset},{end}]}}"#
        ));
        offset = end;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// Writes one safetensors file: the header, then each tensor's values from `values` (an fp8
/// tensor's are the f16 values it would otherwise hold, quantized per block; MXFP4 blocks take
/// their matrix's values output-major, 32 at a time).
pub(crate) fn write(
    w: &mut impl Write,
    tensors: &[Stored],
    mut values: impl FnMut(&Stored) -> Values,
) -> io::Result<()> {
    w.write_all(&header(tensors))?;
    let mut scales = Vec::new();
    let mut mxfp4_scales = Vec::new();
    for t in tensors {
        match t.dtype {
            Dtype::F16 => write_f16(w, t.spec.numel(), values(t))?,
            Dtype::Fp8 => {
                let (codes, block_scales) = quantize_fp8(&t.spec, values(t));
                w.write_all(&codes)?;
                scales = block_scales;
            }
            Dtype::Fp8Scales => {
                let bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
            Dtype::Mxfp4Blocks => mxfp4_scales = write_mxfp4(w, t.spec.numel() * 2, values(t))?,
            Dtype::Mxfp4Scales => w.write_all(&mxfp4_scales)?,
        }
    }
    Ok(())
}

fn write_f16(w: &mut impl Write, numel: usize, source: Values) -> io::Result<()> {
    stream(w, numel, source, |halves, bytes| {
        bytes.extend(halves.iter().flat_map(|h| h.to_le_bytes()));
    })
}

/// Quantizes `numel` values to MXFP4 blocks, writing their codes in a checkpoint's byte order;
/// returns their scales.
fn write_mxfp4(w: &mut impl Write, numel: usize, source: Values) -> io::Result<Vec<u8>> {
    let mut scales = Vec::with_capacity(numel / MXFP4_BLOCK);
    stream(w, numel, source, |halves, bytes| {
        for chunk in halves.chunks_exact(MXFP4_BLOCK) {
            let values: [f32; MXFP4_BLOCK] = std::array::from_fn(|i| chunk[i].to_f32());
            let block = BlockMxfp4::quantize(&values);
            bytes.extend_from_slice(&block.to_checkpoint());
            scales.push(block.e);
        }
    })?;
    Ok(scales)
}

/// Writes `numel` values from `source`, `CHUNK` at a time, each chunk as `encode` turns it into
/// bytes.
fn stream(
    w: &mut impl Write,
    numel: usize,
    mut source: Values,
    mut encode: impl FnMut(&[f16], &mut Vec<u8>),
) -> io::Result<()> {
    let mut halves = vec![f16::ZERO; CHUNK];
    let mut bytes = Vec::with_capacity(CHUNK * 2);
    let mut left = numel;
    while left > 0 {
        let n = left.min(CHUNK);
        source.fill(&mut halves[..n]);
        bytes.clear();
        encode(&halves[..n], &mut bytes);
        w.write_all(&bytes)?;
        left -= n;
    }
    Ok(())
}

/// A matrix's values as E4M3 codes and one scale per 128x128 block (its largest magnitude over
/// 448, so the block's largest value gets the largest code), row-major both.
fn quantize_fp8(spec: &TensorSpec, mut source: Values) -> (Vec<u8>, Vec<f32>) {
    let (rows, cols) = match spec.shape.as_slice() {
        &[rows, cols] => (rows, cols),
        _ => (1, spec.numel()),
    };
    let mut halves = vec![f16::ZERO; rows * cols];
    source.fill(&mut halves);
    let block_cols = cols.div_ceil(FP8_BLOCK);
    let block = |i: usize| (i / cols / FP8_BLOCK) * block_cols + i % cols / FP8_BLOCK;
    let mut scales = vec![0.0f32; rows.div_ceil(FP8_BLOCK) * block_cols];
    for (i, v) in halves.iter().enumerate() {
        let s = &mut scales[block(i)];
        *s = s.max(v.to_f32().abs() / FP8_MAX);
    }
    let codes = halves
        .iter()
        .enumerate()
        .map(|(i, v)| match scales[block(i)] {
            0.0 => 0,
            s => f32_to_e4m3(v.to_f32() / s),
        })
        .collect();
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Init;

    fn spec(name: &str, shape: &[usize]) -> Stored {
        Stored {
            spec: TensorSpec {
                name: name.to_string(),
                shape: shape.to_vec(),
            },
            dtype: Dtype::F16,
        }
    }

    #[test]
    fn plan_splits_greedily_in_order() {
        let t = |n: &str| spec(n, &[100]); // 200 bytes each
        let one = plan(vec![t("a"), t("b")], 1000);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].file_name, "model.safetensors");

        let shards = plan(
            vec![t("a"), t("b"), t("c"), spec("big", &[1000]), t("d")],
            450,
        );
        let names: Vec<Vec<&str>> = shards
            .iter()
            .map(|s| s.tensors.iter().map(|t| t.spec.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec!["a", "b"], vec!["c"], vec!["big"], vec!["d"]]
        );
        assert_eq!(shards[0].file_name, "model-00001-of-00004.safetensors");
        assert_eq!(shards[3].file_name, "model-00004-of-00004.safetensors");
        assert!(shards.iter().all(|s| is_weight_file(&s.file_name)));
    }

    #[test]
    fn weight_file_names() {
        assert!(is_weight_file("model.safetensors.index.json"));
        assert!(is_weight_file("model-00002-of-00003.safetensors"));
        assert!(!is_weight_file("model-a-of-00003.safetensors"));
        assert!(!is_weight_file("model-00002.safetensors"));
        assert!(!is_weight_file("other.safetensors"));
    }

    #[test]
    fn header_is_padded_and_contiguous() {
        let tensors = [spec("x\"y", &[3]), spec("z", &[2, 2])];
        let h = header(&tensors);
        let len = u64::from_le_bytes(h[..8].try_into().unwrap()) as usize;
        assert_eq!(h.len(), 8 + len);
        assert_eq!(h.len() % 8, 0);
        let json: Value = serde_json::from_slice(&h[8..]).unwrap();
        assert_eq!(json["__metadata__"]["format"], "pt");
        assert_eq!(json["x\"y"]["data_offsets"], serde_json::json!([0, 6]));
        assert_eq!(json["z"]["data_offsets"], serde_json::json!([6, 14]));
        assert_eq!(json["z"]["shape"], serde_json::json!([2, 2]));
    }

    #[test]
    fn write_streams_every_value() {
        let tensors = [spec("a", &[3, CHUNK]), spec("b", &[5])];
        let mut out = Vec::new();
        let init = Init {
            mean: 0.0,
            std: 1.0,
        };
        write(&mut out, &tensors, |t| Values::new(9, &t.spec.name, init)).unwrap();
        let header_len = header(&tensors).len();
        assert_eq!(out.len(), header_len + (3 * CHUNK + 5) * 2);
        let mut expected = vec![f16::ZERO; 5];
        Values::new(9, "b", init).fill(&mut expected);
        let tail: Vec<f16> = out[out.len() - 10..]
            .chunks(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(tail, expected);
    }
}
