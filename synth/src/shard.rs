//! Safetensors files written tensor by tensor, so a checkpoint never has to fit in memory, and the
//! split of a checkpoint into shard files the way HF `save_pretrained` splits it. Writes f16 only;
//! reading is the loader's business.
//!
//! Format: an 8-byte little-endian header length, a JSON header (`__metadata__` first, then the
//! tensors in checkpoint order with contiguous `data_offsets`) padded with spaces to a multiple of 8
//! bytes, then the tensors' little-endian data back to back.

use std::io::{self, Write};

use half::f16;
use moe_model::layout::TensorSpec;
use serde_json::Value;

use crate::init::Values;

/// Bytes per stored value (f16).
pub(crate) const DTYPE_BYTES: u64 = 2;
/// Values generated and converted per write.
const CHUNK: usize = 1 << 16;

pub(crate) use moe_model::checkpoint::{INDEX_FILE, SINGLE_FILE};

pub(crate) fn tensor_bytes(spec: &TensorSpec) -> u64 {
    spec.numel() as u64 * DTYPE_BYTES
}

/// One file of a checkpoint and the tensors it holds, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shard {
    pub file_name: String,
    pub tensors: Vec<TensorSpec>,
}

/// Splits tensors, in order, into shards of at most `max_bytes` of data each (a tensor larger
/// than that gets a shard of its own). One shard is `model.safetensors`; several are
/// `model-00001-of-0000N.safetensors` and so on.
pub(crate) fn plan(tensors: Vec<TensorSpec>, max_bytes: u64) -> Vec<Shard> {
    let mut groups: Vec<Vec<TensorSpec>> = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for t in tensors {
        let bytes = tensor_bytes(&t);
        if !current.is_empty() && size + bytes > max_bytes {
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
pub(crate) fn header(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0;
    for t in tensors {
        let end = offset + tensor_bytes(t);
        let shape = Value::from(t.shape.clone());
        let name = Value::from(t.name.as_str());
        json.push_str(&format!(
            r#",{name}:{{"dtype":"F16","shape":{shape},"data_offsets":[{offset},{end}]}}"#
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

/// Writes one safetensors file: the header, then each tensor's values from `values`.
pub(crate) fn write(
    w: &mut impl Write,
    tensors: &[TensorSpec],
    mut values: impl FnMut(&TensorSpec) -> Values,
) -> io::Result<()> {
    w.write_all(&header(tensors))?;
    let mut halves = vec![f16::ZERO; CHUNK];
    let mut bytes = Vec::with_capacity(CHUNK * DTYPE_BYTES as usize);
    for t in tensors {
        let mut source = values(t);
        let mut left = t.numel();
        while left > 0 {
            let n = left.min(CHUNK);
            source.fill(&mut halves[..n]);
            bytes.clear();
            bytes.extend(halves[..n].iter().flat_map(|h| h.to_le_bytes()));
            w.write_all(&bytes)?;
            left -= n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Init;

    fn spec(name: &str, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
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
            .map(|s| s.tensors.iter().map(|t| t.name.as_str()).collect())
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
        write(&mut out, &tensors, |t| Values::new(9, &t.name, init)).unwrap();
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
