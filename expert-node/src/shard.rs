//! Shard files: one expert's weights at one format, written once from the HF checkpoint into the
//! shard directory (a RAM disk) and memory-mapped on every later start. A shard that is corrupt
//! (bad magic, header or payload checksum, wrong length) or stale (other layout version, other
//! checkpoint, other shape) is refused with a reason, so the caller rebuilds it instead of serving
//! it. Files are written under a temporary name and renamed into place.
//!
//! A shard is named by the format its expert was asked for (the node's high or low precision);
//! each matrix is stored in that format, or in the nearest wider one when its width does not fit
//! the format's blocks (`Expert::formats_at`), and the header says which.
//!
//! Layout, little endian, a 128-byte header then the payload:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `MOESHARD` |
//! | 8 | 4 | layout version (3) |
//! | 12 | 4 | format asked for, by code: 0 f32, 1 f16, 2 bf16, 3 q8, 4 q4, 5 q2, 6 fp8, 7 mxfp4 |
//! | 16 | 4 | layer |
//! | 20 | 4 | expert |
//! | 24 | 4 | hidden size |
//! | 28 | 4 | expert intermediate size |
//! | 32 | 8 | fingerprint of the source checkpoint |
//! | 40 | 8 | payload bytes |
//! | 48 | 4 | format code of the gate/up matrix |
//! | 52 | 4 | format code of the down matrix |
//! | 56 | 4 | CRC-32 of the payload |
//! | 60 | 4 | 1 when the payload ends in the expert's biases (gpt-oss), else 0 |
//! | 64 | 60 | zero |
//! | 124 | 4 | CRC-32 of header bytes 0..124 |
//! | 128 | payload | stacked gate/up matrix `[2 * intermediate, hidden]`, then down `[hidden, intermediate]`, each in the kernels crate's byte layout; then, when biased, the gate/up bias (`2 * intermediate` f32, gate then up) and the down bias (`hidden` f32) |
//!
//! The activation between the products is the model's (its config is in the fingerprint).
//! Versions 1 and 2 (64-byte headers without biases) are refused as stale and rebuilt.

use std::io::Write;
use std::path::{Path, PathBuf};

use moe_kernels::mmap::MappedFile;
use moe_kernels::{Format, Matrix};
use moe_model::ModelConfig;
use moe_model::moe::{Expert, ExpertBias, ExpertShape};

const MAGIC: &[u8; 8] = b"MOESHARD";
const VERSION: u32 = 3;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 128;
/// Where the header's own checksum is.
const HEADER_CRC_AT: usize = HEADER_BYTES - 4;

/// What every expert of a model is: its widths and shape (activation, biases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub shape: ExpertShape,
}

impl ExpertDims {
    pub fn of(cfg: &ModelConfig) -> ExpertDims {
        ExpertDims {
            hidden: cfg.hidden_size,
            intermediate: cfg.moe_intermediate_size,
            shape: cfg.expert_shape,
        }
    }

    /// Bytes of the biases a shard's payload ends in.
    fn bias_bytes(&self) -> usize {
        match self.shape.biased {
            true => (2 * self.intermediate + self.hidden) * size_of::<f32>(),
            false => 0,
        }
    }
}
/// Formats by their code in the header (the inverse of `format_code`). Kept apart
/// from `Format::ALL` so that reordering that list never changes what files on disk mean.
const FORMATS: [Format; 8] = [
    Format::F32,
    Format::F16,
    Format::Bf16,
    Format::Q8,
    Format::Q4,
    Format::Q2,
    Format::Fp8,
    Format::Mxfp4,
];

/// Which expert at which format a shard holds; ordered by layer, expert, then format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    pub layer: u32,
    pub expert: u32,
    pub format: Format,
}

impl ShardKey {
    pub fn file_name(&self) -> String {
        format!(
            "layer{:03}-expert{:04}-{}.shard",
            self.layer, self.expert, self.format
        )
    }
}

/// Bytes of one expert's weights at `format` (the shard's payload, and what it takes in memory).
pub fn payload_bytes(format: Format, hidden: usize, intermediate: usize) -> usize {
    Expert::bytes_at(format, hidden, intermediate)
}

/// Identifies the checkpoint shards were made from: a shard from another checkpoint is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// CRC-32 of `config.json` and of the names and sizes of the weight files, side by side.
    pub fn of_checkpoint(dir: &Path) -> Result<Fingerprint, ShardError> {
        fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
            move |source| ShardError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        let config_path = dir.join("config.json");
        let config = std::fs::read(&config_path).map_err(io(&config_path))?;
        let mut weights: Vec<(String, u64)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json") {
                weights.push((name, entry.metadata().map_err(io(&entry.path()))?.len()));
            }
        }
        weights.sort();
        let mut listing = crc32fast::Hasher::new();
        for (name, len) in &weights {
            listing.update(name.as_bytes());
            listing.update(&len.to_le_bytes());
        }
        Ok(Fingerprint(
            (u64::from(crc32fast::hash(&config)) << 32) | u64::from(listing.finalize()),
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no such shard")]
    Missing(PathBuf),
    #[error("{path}: corrupt shard: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: stale shard: {reason}")]
    Stale { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: moe_model::ModelError,
    },
}

/// The header fields a shard must match to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    key: ShardKey,
    hidden: u32,
    intermediate: u32,
    fingerprint: Fingerprint,
    payload_bytes: u64,
    /// The formats of the gate/up and the down matrix.
    formats: [Format; 2],
    payload_crc: u32,
    biased: bool,
}

fn format_code(format: Format) -> u32 {
    match format {
        Format::F32 => 0,
        Format::F16 => 1,
        Format::Bf16 => 2,
        Format::Q8 => 3,
        Format::Q4 => 4,
        Format::Q2 => 5,
        Format::Fp8 => 6,
        Format::Mxfp4 => 7,
    }
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&format_code(self.key.format).to_le_bytes());
        h[16..20].copy_from_slice(&self.key.layer.to_le_bytes());
        h[20..24].copy_from_slice(&self.key.expert.to_le_bytes());
        h[24..28].copy_from_slice(&self.hidden.to_le_bytes());
        h[28..32].copy_from_slice(&self.intermediate.to_le_bytes());
        h[32..40].copy_from_slice(&self.fingerprint.0.to_le_bytes());
        h[40..48].copy_from_slice(&self.payload_bytes.to_le_bytes());
        h[48..52].copy_from_slice(&format_code(self.formats[0]).to_le_bytes());
        h[52..56].copy_from_slice(&format_code(self.formats[1]).to_le_bytes());
        h[56..60].copy_from_slice(&self.payload_crc.to_le_bytes());
        h[60..64].copy_from_slice(&u32::from(self.biased).to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_CRC_AT]);
        h[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and checks a header; `Err` is the reason it is corrupt or stale.
    fn decode(h: &[u8]) -> Result<Header, (bool, String)> {
        let corrupt = |reason: String| (true, reason);
        if h.len() < 12 {
            return Err(corrupt(format!(
                "{} bytes, shorter than the header",
                h.len()
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        if &h[0..8] != MAGIC {
            return Err(corrupt("bad magic".into()));
        }
        if u32_at(8) != VERSION {
            return Err((
                false,
                format!("layout version {}, this build reads {VERSION}", u32_at(8)),
            ));
        }
        if h.len() < HEADER_BYTES {
            return Err(corrupt(format!(
                "{} bytes, shorter than the header",
                h.len()
            )));
        }
        if crc32fast::hash(&h[..HEADER_CRC_AT]) != u32_at(HEADER_CRC_AT) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let format = |at: usize| {
            FORMATS
                .get(u32_at(at) as usize)
                .copied()
                .ok_or_else(|| corrupt(format!("unknown format code {}", u32_at(at))))
        };
        Ok(Header {
            key: ShardKey {
                layer: u32_at(16),
                expert: u32_at(20),
                format: format(12)?,
            },
            hidden: u32_at(24),
            intermediate: u32_at(28),
            fingerprint: Fingerprint(u64_at(32)),
            payload_bytes: u64_at(40),
            formats: [format(48)?, format(52)?],
            payload_crc: u32_at(56),
            biased: u32_at(60) != 0,
        })
    }
}

/// Writes `expert` as the shard `key` into `dir` (temporary name, then rename); returns its path.
pub fn write(
    dir: &Path,
    key: ShardKey,
    fingerprint: Fingerprint,
    expert: &Expert,
) -> Result<PathBuf, ShardError> {
    let path = dir.join(key.file_name());
    let io = |source| ShardError::Io {
        path: path.clone(),
        source,
    };
    let (gate_up, down) = expert.parts();
    let formats = [gate_up.format(), down.format()];
    if formats != Expert::formats_at(key.format, down.rows(), down.cols()) {
        return Err(ShardError::Corrupt {
            path: path.clone(),
            reason: format!(
                "expert is {}/{}, the key says {}",
                formats[0], formats[1], key.format
            ),
        });
    }
    let biases: Vec<u8> = expert.bias().map_or_else(Vec::new, |b| {
        b.gate_up
            .iter()
            .chain(&b.down)
            .flat_map(|v| v.to_le_bytes())
            .collect()
    });
    let parts = [gate_up.as_bytes(), down.as_bytes(), &biases];
    let mut crc = crc32fast::Hasher::new();
    parts.iter().for_each(|p| crc.update(p));
    let header = Header {
        key,
        hidden: down.rows() as u32,
        intermediate: down.cols() as u32,
        fingerprint,
        payload_bytes: parts.iter().map(|p| p.len() as u64).sum(),
        formats,
        payload_crc: crc.finalize(),
        biased: expert.bias().is_some(),
    };
    let partial = dir.join(format!("{}.partial", key.file_name()));
    let encoded = header.encode();
    let written = write_file(&partial, &[&encoded, parts[0], parts[1], parts[2]])
        .and_then(|()| std::fs::rename(&partial, &path));
    if let Err(source) = written {
        // A full RAM disk must not keep the part that did fit.
        let _ = std::fs::remove_file(&partial);
        return Err(io(source));
    }
    Ok(path)
}

/// Writes `parts` one after another to a new file at `path` and syncs it.
fn write_file(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for part in parts {
        file.write_all(part)?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Whether `e` says the shard directory has no room (a full filesystem or quota).
pub fn is_no_room(e: &ShardError) -> bool {
    matches!(e, ShardError::Io { source, .. } if matches!(
        source.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ))
}

/// Removes the shard files in `dir` that `keep` refuses (and any left half-written), to make
/// room; returns the bytes freed.
pub fn reclaim(dir: &Path, keep: impl Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let shard = name.ends_with(".shard") && !keep(&name);
        if shard || name.ends_with(".shard.partial") {
            let bytes = entry.metadata().map_or(0, |m| m.len());
            if std::fs::remove_file(entry.path()).is_ok() {
                freed += bytes;
            }
        }
    }
    freed
}

/// Checks the shard `key` in `dir` as `read` does, without copying its weights out.
pub fn check(
    dir: &Path,
    key: ShardKey,
    fingerprint: Fingerprint,
    dims: ExpertDims,
) -> Result<(), ShardError> {
    open_checked(dir, key, fingerprint, dims).map(|_| ())
}

/// Reads the shard `key` from `dir`, checking it against the checkpoint `fingerprint` and the
/// expected expert `dims`.
pub fn read(
    dir: &Path,
    key: ShardKey,
    fingerprint: Fingerprint,
    dims: ExpertDims,
) -> Result<Expert, ShardError> {
    let ExpertDims {
        hidden,
        intermediate,
        shape,
    } = dims;
    let (path, map) = open_checked(dir, key, fingerprint, dims)?;
    let payload = &map[HEADER_BYTES..];
    let (payload, biases) = payload.split_at(payload.len() - dims.bias_bytes());
    let weights = |source| ShardError::Weights {
        path: path.clone(),
        source,
    };
    let [gate_up_format, down_format] = Expert::formats_at(key.format, hidden, intermediate);
    let gate_up_bytes = 2 * intermediate * gate_up_format.row_bytes(hidden);
    if payload.len() < gate_up_bytes {
        return Err(ShardError::Corrupt {
            path: path.clone(),
            reason: format!(
                "payload of {} bytes cannot hold the gate/up matrix",
                payload.len()
            ),
        });
    }
    let (gu, dn) = payload.split_at(gate_up_bytes);
    let gate_up = Matrix::from_bytes(2 * intermediate, hidden, gate_up_format, gu)
        .map_err(|e| weights(e.into()))?;
    let down =
        Matrix::from_bytes(hidden, intermediate, down_format, dn).map_err(|e| weights(e.into()))?;
    let expert = Expert::from_parts(gate_up, down)
        .map_err(weights)?
        .with_activation(shape.activation);
    if !shape.biased {
        return Ok(expert);
    }
    let values: Vec<f32> = biases
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (gate_up, down) = values.split_at(2 * intermediate);
    let bias = ExpertBias {
        gate_up: gate_up.to_vec(),
        down: down.to_vec(),
    };
    expert.with_bias(bias).map_err(weights)
}

/// Maps the shard `key` and checks its header, length and payload checksum.
fn open_checked(
    dir: &Path,
    key: ShardKey,
    fingerprint: Fingerprint,
    dims: ExpertDims,
) -> Result<(PathBuf, MappedFile), ShardError> {
    let (hidden, intermediate) = (dims.hidden, dims.intermediate);
    let path = dir.join(key.file_name());
    if !path.exists() {
        return Err(ShardError::Missing(path));
    }
    let map = MappedFile::open(&path).map_err(|source| ShardError::Io {
        path: path.clone(),
        source,
    })?;
    let refuse = |(corrupt, reason): (bool, String)| match corrupt {
        true => ShardError::Corrupt {
            path: path.clone(),
            reason,
        },
        false => ShardError::Stale {
            path: path.clone(),
            reason,
        },
    };
    let header = Header::decode(&map).map_err(refuse)?;
    let formats = Expert::formats_at(key.format, hidden, intermediate);
    let expected = (
        key,
        hidden as u32,
        intermediate as u32,
        fingerprint,
        formats,
        dims.shape.biased,
    );
    let found = (
        header.key,
        header.hidden,
        header.intermediate,
        header.fingerprint,
        header.formats,
        header.biased,
    );
    if found != expected {
        return Err(refuse((
            false,
            format!("holds {found:?}, expected {expected:?}"),
        )));
    }
    let payload = &map[HEADER_BYTES..];
    let weights = payload_bytes(key.format, hidden, intermediate) + dims.bias_bytes();
    if payload.len() as u64 != header.payload_bytes || payload.len() != weights {
        return Err(refuse((
            true,
            format!(
                "payload is {} bytes, header says {}, the expert takes {weights}",
                payload.len(),
                header.payload_bytes
            ),
        )));
    }
    if crc32fast::hash(payload) != header.payload_crc {
        return Err(refuse((true, "payload checksum mismatch".into())));
    }
    Ok((path, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIDDEN: usize = 64;
    const INTER: usize = 32;

    fn expert(format: Format, seed: usize) -> Expert {
        let values = |rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| (((i + seed) * 7919 % 1013) as f32 - 506.0) * 0.002)
                .collect()
        };
        let m = |rows, cols| Matrix::from_f32(rows, cols, &values(rows, cols), format).unwrap();
        Expert::from_matrices(&m(INTER, HIDDEN), &m(INTER, HIDDEN), m(HIDDEN, INTER)).unwrap()
    }

    fn key(format: Format) -> ShardKey {
        ShardKey {
            layer: 3,
            expert: 5,
            format,
        }
    }

    const FP: Fingerprint = Fingerprint(0x1234_5678_9abc_def0);

    fn dims(intermediate: usize) -> ExpertDims {
        ExpertDims {
            hidden: HIDDEN,
            intermediate,
            shape: ExpertShape::SWIGLU,
        }
    }

    #[test]
    fn a_biased_expert_round_trips_with_its_biases_and_activation() {
        use moe_model::moe::Activation;
        let dir = tempfile::tempdir().unwrap();
        let shape = ExpertShape {
            activation: Activation::ClampedSwiglu {
                alpha: 1.702,
                limit: 7.0,
            },
            biased: true,
        };
        let bias = ExpertBias {
            gate_up: (0..2 * INTER).map(|i| i as f32 * 0.5).collect(),
            down: (0..HIDDEN).map(|i| -(i as f32)).collect(),
        };
        let e = expert(Format::Mxfp4, 7)
            .with_activation(shape.activation)
            .with_bias(bias.clone())
            .unwrap();
        let k = key(Format::Mxfp4);
        write(dir.path(), k, FP, &e).unwrap();
        let biased = ExpertDims {
            shape,
            ..dims(INTER)
        };
        let back = read(dir.path(), k, FP, biased).unwrap();
        assert_eq!((back.shape(), back.bias()), (shape, Some(&bias)));
        assert_eq!(back.parts().0.as_bytes(), e.parts().0.as_bytes());
        // A model whose experts have no biases does not take this shard.
        let e = read(dir.path(), k, FP, dims(INTER)).unwrap_err();
        assert!(matches!(e, ShardError::Stale { .. }), "{e}");
    }

    #[test]
    fn every_format_round_trips_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        for format in FORMATS {
            let e = expert(format, 1);
            let path = write(dir.path(), key(format), FP, &e).unwrap();
            assert!(path.ends_with(format!("layer003-expert0005-{format}.shard")));
            let back = read(dir.path(), key(format), FP, dims(INTER)).unwrap();
            assert_eq!(back.weight_bytes(), payload_bytes(format, HIDDEN, INTER));
            check(dir.path(), key(format), FP, dims(INTER)).unwrap();
            assert_eq!(
                back.parts().0.as_bytes(),
                e.parts().0.as_bytes(),
                "{format}"
            );
            assert_eq!(
                back.parts().1.as_bytes(),
                e.parts().1.as_bytes(),
                "{format}"
            );
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|f| {
            !f.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        }));
    }

    #[test]
    fn an_expert_whose_width_does_not_fit_round_trips_with_its_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let inter = 40;
        let k = key(Format::Q4);
        let [gate_up_format, down_format] = Expert::formats_at(Format::Q4, HIDDEN, inter);
        let values = |n: usize| (0..n).map(|i| (i % 17) as f32 * 0.01).collect::<Vec<_>>();
        let gate_up = Matrix::from_f32(
            2 * inter,
            HIDDEN,
            &values(2 * inter * HIDDEN),
            gate_up_format,
        );
        let down = Matrix::from_f32(HIDDEN, inter, &values(HIDDEN * inter), down_format);
        let e = Expert::from_parts(gate_up.unwrap(), down.unwrap()).unwrap();
        write(dir.path(), k, FP, &e).unwrap();
        let back = read(dir.path(), k, FP, dims(inter)).unwrap();
        assert_eq!(
            (back.parts().0.format(), back.parts().1.format()),
            (Format::Q4, Format::F16)
        );
        assert_eq!(back.parts().1.as_bytes(), e.parts().1.as_bytes());
        assert_eq!(
            back.weight_bytes(),
            payload_bytes(Format::Q4, HIDDEN, inter)
        );
        let all_q8 = {
            let gate_up =
                Matrix::from_f32(2 * inter, HIDDEN, &values(2 * inter * HIDDEN), Format::Q8);
            let down = Matrix::from_f32(HIDDEN, inter, &values(HIDDEN * inter), Format::F16);
            Expert::from_parts(gate_up.unwrap(), down.unwrap()).unwrap()
        };
        let refused = write(dir.path(), k, FP, &all_q8).unwrap_err();
        assert!(matches!(refused, ShardError::Corrupt { .. }), "{refused}");
    }

    #[test]
    fn a_shard_of_an_earlier_layout_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(Format::F16);
        let path = write(dir.path(), k, FP, &expert(Format::F16, 4)).unwrap();
        let mut old = std::fs::read(&path).unwrap();
        old[8..12].copy_from_slice(&2u32.to_le_bytes());
        std::fs::write(&path, old).unwrap();
        let e = read(dir.path(), k, FP, dims(INTER)).unwrap_err();
        assert!(
            matches!(&e, ShardError::Stale { reason, .. } if reason.contains("layout version 2")),
            "{e}"
        );
    }

    #[test]
    fn corrupt_shards_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(Format::Q4);
        let path = write(dir.path(), k, FP, &expert(Format::Q4, 2)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let corrupt_with = |bytes: Vec<u8>| {
            std::fs::write(&path, bytes).unwrap();
            read(dir.path(), k, FP, dims(INTER)).unwrap_err()
        };
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            matches!(corrupt_with(flipped), ShardError::Corrupt { reason, .. } if reason.contains("payload checksum"))
        );
        assert!(matches!(
            check(dir.path(), k, FP, dims(INTER)),
            Err(ShardError::Corrupt { .. })
        ));
        assert!(matches!(
            corrupt_with(good[..good.len() - 3].to_vec()),
            ShardError::Corrupt { .. }
        ));
        assert!(matches!(
            corrupt_with(good[..10].to_vec()),
            ShardError::Corrupt { .. }
        ));
        let mut header = good.clone();
        header[20] ^= 1;
        assert!(
            matches!(corrupt_with(header), ShardError::Corrupt { reason, .. } if reason.contains("header checksum"))
        );
        let mut magic = good;
        magic[0] = b'X';
        assert!(
            matches!(corrupt_with(magic), ShardError::Corrupt { reason, .. } if reason.contains("magic"))
        );
    }

    #[test]
    fn stale_and_missing_shards_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(Format::Q8);
        write(dir.path(), k, FP, &expert(Format::Q8, 3)).unwrap();
        let e = read(dir.path(), k, Fingerprint(1), dims(INTER)).unwrap_err();
        assert!(matches!(e, ShardError::Stale { .. }), "{e}");
        let e = read(dir.path(), k, FP, dims(INTER * 2)).unwrap_err();
        assert!(matches!(e, ShardError::Stale { .. }), "{e}");
        let other = ShardKey { expert: 6, ..k };
        assert!(matches!(
            read(dir.path(), other, FP, dims(INTER)),
            Err(ShardError::Missing(_))
        ));
        let wrong_format =
            write(dir.path(), key(Format::Q2), FP, &expert(Format::Q8, 3)).unwrap_err();
        assert!(matches!(wrong_format, ShardError::Corrupt { .. }));
    }

    #[test]
    fn fingerprint_follows_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), [0u8; 16]).unwrap();
        let a = Fingerprint::of_checkpoint(dir.path()).unwrap();
        assert_eq!(a, Fingerprint::of_checkpoint(dir.path()).unwrap());
        std::fs::write(dir.path().join("model.safetensors"), [0u8; 17]).unwrap();
        let b = Fingerprint::of_checkpoint(dir.path()).unwrap();
        std::fs::write(dir.path().join("config.json"), "{ }").unwrap();
        let c = Fingerprint::of_checkpoint(dir.path()).unwrap();
        assert!(a != b && b != c && a != c);
        assert!(Fingerprint::of_checkpoint(&dir.path().join("absent")).is_err());
    }
}
