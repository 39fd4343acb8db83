#!/usr/bin/env bash
# Runs every check the project has, on a fresh machine: formatting, lints, and the whole test
# suite. Needs only the Rust toolchain today; installs anything else it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
