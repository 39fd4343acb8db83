//! The last line every benchmark prints: its results as one JSON object, also written to the
//! file `--json` names.

use std::path::Path;

use anyhow::Context;

/// Prints `report` as one line of JSON and, when `path` is given, writes the same line there.
pub fn emit(report: &serde_json::Value, path: Option<&Path>) -> anyhow::Result<()> {
    let line = serde_json::to_string(report)?;
    if let Some(path) = path {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{line}");
    Ok(())
}
