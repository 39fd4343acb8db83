//! A checkpoint's `config.json`: JSON parsed, then read into a `ModelConfig` with every size and
//! count checked against its bound.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use moe_model::ModelConfig;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = ModelConfig::from_json(&value, Path::new("config.json"));
    }
});
