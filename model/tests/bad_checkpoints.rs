//! Broken checkpoints give clear errors that name the file and tensor, never a panic.

mod common;

use std::fs;
use std::path::Path;

use common::{copy_fixture, pool};
use moe_model::{LoadOptions, Model, ModelError};

fn load_err(dir: &Path) -> ModelError {
    match Model::load(dir, &LoadOptions::default(), pool()) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_config_names_the_file() {
    let dir = copy_fixture("mixtral");
    fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn missing_weights_file_names_the_file() {
    let dir = copy_fixture("mixtral");
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = copy_fixture("mixtral");
    let path = dir.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Safetensors { .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn corrupt_header_is_reported() {
    let dir = copy_fixture("olmoe");
    let path = dir.path().join("model.safetensors");
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] = b'#';
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        load_err(dir.path()),
        ModelError::Safetensors { .. }
    ));
    fs::write(&path, [1u8, 2, 3]).unwrap();
    assert!(matches!(
        load_err(dir.path()),
        ModelError::Safetensors { .. }
    ));
}

#[test]
fn missing_shard_and_missing_tensor_are_named() {
    let dir = copy_fixture("qwen3-moe");
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&index_path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    let first = map.keys().next().unwrap().clone();
    map.remove(&first);
    // Every tensor is still in the shard files, so dropping an index entry alone loses nothing.
    fs::write(&index_path, index.to_string()).unwrap();
    assert!(Model::load(dir.path(), &LoadOptions::default(), pool()).is_ok());

    let mut hostile = index.clone();
    hostile["weight_map"][&first] = "../../etc/passwd".into();
    fs::write(&index_path, hostile.to_string()).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("../../etc/passwd") && e.contains("index.json"),
        "{e}"
    );
    fs::write(&index_path, index.to_string()).unwrap();

    fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn wrong_shape_and_unknown_architecture_are_named() {
    let dir = copy_fixture("mixtral");
    let config_path = dir.path().join("config.json");
    let original = fs::read_to_string(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    config["intermediate_size"] = serde_json::json!(96);
    fs::write(&config_path, config.to_string()).unwrap();
    match load_err(dir.path()) {
        ModelError::ShapeMismatch { tensor, .. } => assert!(tensor.contains("experts"), "{tensor}"),
        e => panic!("expected a shape mismatch, got {e}"),
    }

    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    config["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    fs::write(&config_path, config.to_string()).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("GPT2LMHeadModel") && e.contains("config.json"),
        "{e}"
    );

    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    config["num_local_experts"] = serde_json::json!(9);
    fs::write(&config_path, config.to_string()).unwrap();
    match load_err(dir.path()) {
        ModelError::MissingTensor { tensor, .. } => {
            assert!(tensor.contains("experts.8"), "{tensor}")
        }
        e => panic!("expected a missing tensor, got {e}"),
    }
}

#[test]
fn out_of_range_tokens_and_overlong_prompts_are_errors() {
    let model = common::load("mixtral", None);
    let mut cache = model.new_cache();
    let e = model
        .forward(&[1, 9999], &mut cache, moe_model::Logits::Last)
        .unwrap_err();
    assert!(
        matches!(e, ModelError::TokenOutOfRange { id: 9999, .. }),
        "{e}"
    );
    assert!(cache.is_empty());
    let long = vec![1u32; model.max_context() + 1];
    let e = model
        .forward(&long, &mut cache, moe_model::Logits::Last)
        .unwrap_err();
    assert!(matches!(e, ModelError::ContextOverflow { .. }), "{e}");
}

/// The first byte of tensor `name`'s data in the checkpoint `dir` (sharded, with an index).
fn tensor_start(dir: &Path, name: &str) -> (std::path::PathBuf, usize) {
    let index: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let file = dir.join(index["weight_map"][name].as_str().unwrap());
    let bytes = fs::read(&file).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let offset = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    (file, 8 + len + offset)
}

#[test]
fn a_nan_mxfp4_scale_names_the_expert_tensor() {
    let dir = copy_fixture("gpt-oss-mxfp4");
    let name = "model.layers.1.mlp.experts.down_proj_scales";
    let (file, at) = tensor_start(dir.path(), name);
    let mut bytes = fs::read(&file).unwrap();
    bytes[at] = 0xff; // E8M0's NaN
    fs::write(&file, bytes).unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(
        e.contains("model.layers.1.mlp.experts.down_proj_blocks") && e.contains("NaN"),
        "{e}"
    );
}

#[test]
fn mxfp4_tensors_of_another_shape_than_the_config_says_are_refused() {
    let dir = copy_fixture("gpt-oss-mxfp4");
    let config = dir.path().join("config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    value["intermediate_size"] = 96.into();
    fs::write(&config, value.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::ShapeMismatch { .. }), "{e}");
}
