//! Writing a whole checkpoint directory: the JSON files, the weight shards and their index. Each
//! file is written under a temporary name and renamed into place, so an interrupted run never
//! leaves a truncated file under a real name. Files this crate does not name are left alone.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use moe_model::checkpoint::FP8_BLOCK;
use moe_model::config::Quantization;
use moe_model::layout::{ExpertTensors, Layout};
use moe_model::{Arch, ModelConfig};
use serde_json::{Map, Value, json};

use crate::error::SynthError;
use crate::init::{InitPlan, Values};
use crate::preset::{Preset, config_json};
use crate::shard::{self, INDEX_FILE, Quantized};
use crate::tokenizer::{BOS_ID, EOS_ID, tokenizer_config_json, tokenizer_json};

/// Data bytes per shard above which a checkpoint is split, as HF's default `max_shard_size` splits.
pub const MAX_SHARD_BYTES: u64 = 1 << 30;
const WRITE_BUFFER: usize = 1 << 20;
const PARTIAL_SUFFIX: &str = ".partial";

/// What [`write_checkpoint`] wrote.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// The written `config.json`, parsed.
    pub config: ModelConfig,
    /// Values over all weight tensors.
    pub parameters: u64,
    /// Bytes over all files written (weights, index and JSON files).
    pub bytes: u64,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
}

/// Writes a seeded random-weight checkpoint of `arch` at `preset` into `out` (created if absent):
/// `config.json`, `generation_config.json`, `tokenizer.json`, `tokenizer_config.json` and the f16
/// weights, as `model.safetensors` or, past [`MAX_SHARD_BYTES`], as numbered shards with
/// `model.safetensors.index.json`. Weight files of an earlier checkpoint in `out` that this one does
/// not rewrite are removed once the new ones are in place, so the finished directory holds one
/// consistent checkpoint (a reader opening it while it is being written may see a mix); other
/// files are left alone. The same arguments always write the same bytes.
pub fn write_checkpoint(
    arch: Arch,
    preset: Preset,
    seed: u64,
    out: &Path,
) -> Result<SynthReport, SynthError> {
    let none = Overrides::default();
    write_checkpoint_reporting(arch, preset, &none, seed, out, &mut |_, _| {})
}

/// As [`write_checkpoint`], with `overrides` applied to the preset's `config.json` (the weights
/// follow the shapes it then says), calling `written(bytes_so_far, total_bytes)` as each
/// tensor's weights are about to be written, for a progress display.
pub fn write_checkpoint_reporting(
    arch: Arch,
    preset: Preset,
    overrides: &Overrides,
    seed: u64,
    out: &Path,
    written: &mut dyn FnMut(u64, u64),
) -> Result<SynthReport, SynthError> {
    let config = overrides.apply(config_json(arch, preset));
    write_sharded(config, seed, out, MAX_SHARD_BYTES, written)
}

/// Keys of a preset's `config.json` set to other values (e.g. `moe_intermediate_size=40`, for a
/// shape the kernels' blocks do not fit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(Vec<(String, Value)>);

impl Overrides {
    /// The `quantization_config` of a checkpoint stored in fp8 the way DeepSeek-V3 is (E4M3
    /// weights, one scale per 128x128 block): with it the decoder layers' matrices are written
    /// in fp8.
    pub fn fp8_storage() -> Overrides {
        Overrides::quantization(json!({
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
        }))
    }

    /// The `quantization_config` of a checkpoint whose experts are stored in MXFP4 the way
    /// gpt-oss's are; with it the fused expert matrices are written as blocks and scales.
    pub fn mxfp4_storage() -> Overrides {
        Overrides::quantization(json!({
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
                "lm_head"
            ],
        }))
    }

    fn quantization(config: Value) -> Overrides {
        Overrides(vec![("quantization_config".to_string(), config)])
    }

    /// `config` with every override set, in order.
    pub fn apply(&self, mut config: Value) -> Value {
        for (key, value) in &self.0 {
            config[key.as_str()] = value.clone();
        }
        config
    }
}

impl FromIterator<Overrides> for Overrides {
    /// Every override of each, in order.
    fn from_iter<I: IntoIterator<Item = Overrides>>(all: I) -> Overrides {
        Overrides(all.into_iter().flat_map(|o| o.0).collect())
    }
}

impl std::str::FromStr for Overrides {
    type Err = String;

    /// `key=value[,key=value...]`; a value that is not JSON is taken as a string.
    fn from_str(s: &str) -> Result<Overrides, String> {
        s.split(',')
            .map(|pair| {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`{pair}` is not key=value"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                Ok((key.trim().to_string(), value))
            })
            .collect::<Result<_, _>>()
            .map(Overrides)
    }
}

pub(crate) fn write_sharded(
    config_value: Value,
    seed: u64,
    out: &Path,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SynthReport, SynthError> {
    let config = ModelConfig::from_json(&config_value, &out.join("config.json"))?;
    let tokenizer = tokenizer_json(config.vocab_size)?;
    fs::create_dir_all(out).map_err(SynthError::io(out))?;

    let mut written = Written::new(out);
    written.json("config.json", &config_value)?;
    written.json("generation_config.json", &generation_config())?;
    written.json("tokenizer.json", &tokenizer)?;
    let tokenizer_config = tokenizer_config_json(config.max_position_embeddings);
    written.json("tokenizer_config.json", &tokenizer_config)?;

    let specs = Layout::new(&config).all();
    let parameters = specs.iter().map(|t| t.numel() as u64).sum();
    let kept_wide = kept_wide_in_fp8(&config);
    let fused = fused_expert_matrices(&config);
    let tensors = shard::stored(specs, |t| match config.quantization {
        Some(Quantization::Fp8) if !kept_wide.contains(&t.name) => Some(Quantized::Fp8),
        Some(Quantization::Mxfp4) if fused.contains(&t.name) => Some(Quantized::Mxfp4),
        _ => None,
    });
    let total_size: u64 = tensors.iter().map(shard::Stored::bytes).sum();
    let plan = InitPlan::new(&config);
    let shards = shard::plan(tensors, max_shard_bytes);
    let mut done = 0;
    for s in &shards {
        written.file(&s.file_name, |w| {
            shard::write(w, &s.tensors, |t| {
                progress(done, total_size);
                done += t.bytes();
                Values::new(seed, &t.spec.name, plan.init(&t.logical()))
            })
        })?;
    }
    progress(done, total_size);
    if shards.len() > 1 {
        let weight_map: Map<String, Value> = shards
            .iter()
            .flat_map(|s| {
                s.tensors
                    .iter()
                    .map(|t| (t.spec.name.clone(), json!(s.file_name)))
            })
            .collect();
        let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
        written.json(INDEX_FILE, &index)?;
    }
    written.remove_stale_weights()?;

    Ok(SynthReport {
        config,
        parameters,
        bytes: written.bytes,
        files: written.files,
    })
}

/// The matrices an fp8 checkpoint keeps in their wide type, as DeepSeek's FP8 release does: the
/// embeddings, the head and the routers (and a shared expert's gate); every other matrix of the
/// decoder layers is stored in fp8.
fn kept_wide_in_fp8(config: &ModelConfig) -> HashSet<String> {
    let layout = Layout::new(config);
    let mut kept: HashSet<String> = [Some(layout.embed_tokens()), layout.lm_head()]
        .into_iter()
        .flatten()
        .map(|t| t.name)
        .collect();
    for layer in config.moe_layers() {
        kept.insert(layout.router(layer).name);
        kept.extend(layout.shared_expert_gate(layer).map(|t| t.name));
    }
    kept
}

/// The fused expert matrices an MXFP4 checkpoint stores as blocks and scales (gpt-oss's gate/up
/// and down of every MoE layer; their biases stay wide).
fn fused_expert_matrices(config: &ModelConfig) -> HashSet<String> {
    let layout = Layout::new(config);
    let mut names = HashSet::new();
    for layer in config.moe_layers() {
        if let ExpertTensors::Fused(f) = layout.routed_expert(layer, 0) {
            names.extend([f.gate_up.name, f.down.name]);
        }
    }
    names
}

fn generation_config() -> Value {
    json!({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID})
}

/// The files written so far into one directory.
struct Written<'a> {
    dir: &'a Path,
    files: Vec<PathBuf>,
    bytes: u64,
}

impl<'a> Written<'a> {
    fn new(dir: &'a Path) -> Written<'a> {
        Written {
            dir,
            files: Vec::new(),
            bytes: 0,
        }
    }

    fn json(&mut self, name: &str, value: &Value) -> Result<(), SynthError> {
        self.file(name, |w| {
            serde_json::to_writer_pretty(&mut *w, value)?;
            w.write_all(b"\n")
        })
    }

    /// Writes `name` through `body` under a temporary name, then renames it into place.
    fn file(
        &mut self,
        name: &str,
        body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<(), SynthError> {
        let path = self.dir.join(name);
        let partial = self.dir.join(format!("{name}{PARTIAL_SUFFIX}"));
        let file = File::create(&partial).map_err(SynthError::io(&partial))?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file);
        let written = body(&mut w).and_then(|()| w.flush());
        drop(w);
        if let Err(e) = written {
            let _ = fs::remove_file(&partial);
            return Err(SynthError::io(&partial)(e));
        }
        fs::rename(&partial, &path).map_err(SynthError::io(&path))?;
        let size = fs::metadata(&path).map_err(SynthError::io(&path))?.len();
        self.bytes += size;
        self.files.push(path);
        Ok(())
    }

    /// Removes weight files (and leftovers of interrupted writes) not written this time.
    fn remove_stale_weights(&self) -> Result<(), SynthError> {
        let entries = fs::read_dir(self.dir).map_err(SynthError::io(self.dir))?;
        for entry in entries {
            let entry = entry.map_err(SynthError::io(self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let owned = shard::is_weight_file(name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(name));
            let path = entry.path();
            if owned && !self.files.contains(&path) {
                fs::remove_file(&path).map_err(SynthError::io(&path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{Dtype, SafeTensors};
    use std::collections::BTreeMap;

    /// Every tensor in the directory, by name: (file name, shape, bytes).
    fn read_tensors(dir: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_str().unwrap().to_string();
            if !file.ends_with(".safetensors") {
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
            let format = metadata
                .metadata()
                .as_ref()
                .and_then(|m| m.get("format").cloned());
            assert_eq!(format.as_deref(), Some("pt"), "{file}");
            for (name, view) in st.tensors() {
                assert_eq!(view.dtype(), Dtype::F16, "{name}");
                let entry = (file.clone(), view.shape().to_vec(), view.data().to_vec());
                assert!(out.insert(name.clone(), entry).is_none(), "{name} twice");
            }
        }
        out
    }

    /// The checkpoint in `dir` holds exactly the layout's tensors, and its index (if any) agrees.
    fn check(dir: &Path, report: &SynthReport) {
        let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        assert_eq!(config, report.config);
        let tensors = read_tensors(dir);
        let layout = Layout::new(&config).all();
        assert_eq!(tensors.len(), layout.len(), "no missing or extra tensors");
        for spec in &layout {
            let (_, shape, data) = &tensors[&spec.name];
            assert_eq!(shape, &spec.shape, "{}", spec.name);
            assert_eq!(data.len(), spec.numel() * 2);
        }
        let params: usize = layout.iter().map(|t| t.numel()).sum();
        assert_eq!(report.parameters, params as u64);
        let on_disk: u64 = report
            .files
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum();
        assert_eq!(report.bytes, on_disk);

        let files: std::collections::BTreeSet<&String> = tensors.values().map(|t| &t.0).collect();
        let index_path = dir.join(INDEX_FILE);
        if files.len() == 1 {
            assert!(files.contains(&"model.safetensors".to_string()));
            assert!(!index_path.exists());
            return;
        }
        let index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
        assert_eq!(index["metadata"]["total_size"], json!(params * 2));
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), tensors.len());
        for (name, (file, _, _)) in &tensors {
            assert_eq!(map[name], json!(file), "{name}");
        }
    }

    /// An fp8 DeepSeek-V3: the decoder matrices (routers aside) are E4M3 with one f32 scale per
    /// 128x128 block, and hold the f16 checkpoint's values to fp8 precision; the rest is f16.
    #[test]
    fn fp8_storage_quantizes_the_decoder_matrices_with_block_scales() {
        let fp8 = Overrides::fp8_storage();
        let (wide, narrow) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let none = Overrides::default();
        let f16_report = write_checkpoint_reporting(
            Arch::DeepseekV3,
            Preset::Tiny,
            &none,
            3,
            wide.path(),
            &mut |_, _| {},
        )
        .unwrap();
        let report = write_checkpoint_reporting(
            Arch::DeepseekV3,
            Preset::Tiny,
            &fp8,
            3,
            narrow.path(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(
            (report.config.quantization, f16_report.config.quantization),
            (Some(Quantization::Fp8), None)
        );
        assert!(report.bytes < f16_report.bytes);
        let bytes = weights(narrow.path());
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let layout = Layout::new(&report.config);
        let layer = report.config.moe_layers().next().unwrap();
        let expert = layout.expert(layer, 1, moe_model::layout::ExpertMatrix::Down);
        assert_eq!(st.tensor(&expert.name).unwrap().dtype(), Dtype::F8_E4M3);
        let scales = st.tensor(&format!("{}_scale_inv", expert.name)).unwrap();
        assert_eq!(scales.dtype(), Dtype::F32);
        assert_eq!(scales.shape(), [1, 1]);
        for kept in [layout.embed_tokens(), layout.router(layer)] {
            assert_eq!(
                st.tensor(&kept.name).unwrap().dtype(),
                Dtype::F16,
                "{}",
                kept.name
            );
        }
        let open = |dir: &Path| moe_model::checkpoint::Checkpoint::open(dir).unwrap();
        let (a, b) = (open(wide.path()), open(narrow.path()));
        for spec in [expert, layout.mla(0, moe_model::layout::MlaTensor::KvB)] {
            let want = a.matrix(&spec, None).unwrap().to_f32();
            let got = b.matrix(&spec, None).unwrap();
            assert_eq!(got.format(), moe_kernels::Format::Fp8, "{}", spec.name);
            let amax = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.to_f32().iter().zip(&want) {
                assert!((g - w).abs() <= amax / 16.0, "{}: {g} vs {w}", spec.name);
            }
        }
    }

    /// gpt-oss with MXFP4 storage: each layer's fused expert matrices as U8 blocks and scales in
    /// the released layout, read back as mxfp4 experts; every other tensor stays f16.
    #[test]
    fn mxfp4_storage_writes_the_fused_experts_as_blocks_and_scales() {
        let dir = tempfile::tempdir().unwrap();
        let report = write_checkpoint_reporting(
            Arch::GptOss,
            Preset::Tiny,
            &Overrides::mxfp4_storage(),
            5,
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(report.config.quantization, Some(Quantization::Mxfp4));
        let bytes = weights(dir.path());
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let c = &report.config;
        let (e, h, i) = (c.num_experts, c.hidden_size, c.moe_intermediate_size);
        let name = "model.layers.1.mlp.experts.gate_up_proj";
        let blocks = st.tensor(&format!("{name}_blocks")).unwrap();
        assert_eq!(
            (blocks.dtype(), blocks.shape()),
            (Dtype::U8, &[e, 2 * i, h / 32, 16][..])
        );
        let scales = st.tensor(&format!("{name}_scales")).unwrap();
        assert_eq!(
            (scales.dtype(), scales.shape()),
            (Dtype::U8, &[e, 2 * i, h / 32][..])
        );
        assert!(st.tensor(name).is_err());
        let bias = st.tensor(&format!("{name}_bias")).unwrap();
        assert_eq!(bias.dtype(), Dtype::F16);
        let model = moe_model::Model::load(
            dir.path(),
            &moe_model::LoadOptions::default(),
            std::sync::Arc::new(moe_kernels::Pool::new(1).unwrap()),
        )
        .unwrap();
        let expert = &model.moe_block(1).unwrap().experts()[3];
        assert_eq!(expert.precision(), moe_kernels::Format::Mxfp4);
        // Values drawn with the init's spread (1 / sqrt(hidden)), quantized, not zero.
        let w = expert.parts().0.to_f32();
        let rms = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        let want = 1.0 / (h as f32).sqrt();
        assert!((rms - want).abs() < 0.2 * want, "{rms} vs {want}");
    }

    fn weights(dir: &Path) -> Vec<u8> {
        fs::read(dir.join("model.safetensors")).unwrap()
    }

    #[test]
    fn tiny_checkpoints_of_every_arch() {
        for arch in Arch::ALL {
            let dir = tempfile::tempdir().unwrap();
            let report = write_checkpoint(arch, Preset::Tiny, 0, dir.path()).unwrap();
            check(dir.path(), &report);
            assert_eq!(report.config.arch, arch);
            for name in [
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
            ] {
                assert!(report.files.contains(&dir.path().join(name)), "{name}");
            }
            assert!(!fs::read_dir(dir.path()).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(PARTIAL_SUFFIX)
            }));
        }
    }

    #[test]
    fn seeds_decide_the_bytes() {
        let [a, b, c] = [(); 3].map(|()| tempfile::tempdir().unwrap());
        write_checkpoint(Arch::Mixtral, Preset::Tiny, 7, a.path()).unwrap();
        write_checkpoint(Arch::Mixtral, Preset::Tiny, 7, b.path()).unwrap();
        write_checkpoint(Arch::Mixtral, Preset::Tiny, 8, c.path()).unwrap();
        assert_eq!(weights(a.path()), weights(b.path()));
        assert_ne!(weights(a.path()), weights(c.path()));
        let tensors_a = read_tensors(a.path());
        let tensors_c = read_tensors(c.path());
        for (name, (_, _, data)) in &tensors_a {
            assert_ne!(
                data, &tensors_c[name].2,
                "{name} is the same under another seed"
            );
        }
        for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            let read = |d: &Path| fs::read(d.join(name)).unwrap();
            assert_eq!(read(a.path()), read(c.path()), "{name}");
        }
    }

    #[test]
    fn sharded_checkpoint_with_index() {
        let dir = tempfile::tempdir().unwrap();
        let single = tempfile::tempdir().unwrap();
        let mut calls = Vec::new();
        let report = write_sharded(
            config_json(Arch::Qwen3Moe, Preset::Tiny),
            1,
            dir.path(),
            200_000,
            &mut |d, t| calls.push((d, t)),
        )
        .unwrap();
        let total = calls[0].1;
        assert!(
            calls
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[1].1 == total)
        );
        assert_eq!(
            calls.last(),
            Some(&(total, total)),
            "the last call reports everything written"
        );
        write_checkpoint(Arch::Qwen3Moe, Preset::Tiny, 1, single.path()).unwrap();
        check(dir.path(), &report);
        let shards = report
            .files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".safetensors"))
            .count();
        assert!(shards > 2, "{shards} shards");
        // Sharding moves tensors between files but never changes their values.
        let sharded: BTreeMap<_, _> = read_tensors(dir.path())
            .into_iter()
            .map(|(n, (_, s, d))| (n, (s, d)))
            .collect();
        let whole: BTreeMap<_, _> = read_tensors(single.path())
            .into_iter()
            .map(|(n, (_, s, d))| (n, (s, d)))
            .collect();
        assert_eq!(sharded, whole);
    }

    #[test]
    fn overrides_change_the_config_and_the_shapes_that_follow_it() {
        let overrides: Overrides = "moe_intermediate_size=40,model_type=\"qwen3_moe\""
            .parse()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let report = write_checkpoint_reporting(
            Arch::Qwen3Moe,
            Preset::Tiny,
            &overrides,
            2,
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(report.config.moe_intermediate_size, 40);
        check(dir.path(), &report);
        assert!("no_equals".parse::<Overrides>().is_err());
    }

    #[test]
    fn rewriting_removes_stale_weights_only() {
        let dir = tempfile::tempdir().unwrap();
        write_sharded(
            config_json(Arch::Olmoe, Preset::Tiny),
            0,
            dir.path(),
            100_000,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(dir.path().join(INDEX_FILE).exists());
        fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
        fs::write(
            dir.path().join("model-00009-of-00009.safetensors.partial"),
            "",
        )
        .unwrap();
        let report = write_checkpoint(Arch::Mixtral, Preset::Tiny, 0, dir.path()).unwrap();
        check(dir.path(), &report);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected = [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "notes.txt",
            "tokenizer.json",
            "tokenizer_config.json",
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn written_tokenizer_matches_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let report = write_checkpoint(Arch::Qwen2Moe, Preset::Tiny, 0, dir.path()).unwrap();
        let t = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(t.get_vocab_size(true), report.config.vocab_size);
        let tc: Value =
            serde_json::from_slice(&fs::read(dir.path().join("tokenizer_config.json")).unwrap())
                .unwrap();
        let bos = report.config.bos_token_id.unwrap();
        assert_eq!(t.token_to_id(tc["bos_token"].as_str().unwrap()), Some(bos));
        let eos = report.config.eos_token_ids[0];
        assert_eq!(t.token_to_id(tc["eos_token"].as_str().unwrap()), Some(eos));
    }
}
