#!/usr/bin/env bash
# The quickstart: build `moe`, write a seeded random Mixtral-shaped checkpoint, and generate from it.
# Usage: scripts/demo.sh [PRESET] [PROMPT]   (PRESET: tiny | small | medium; default small)
set -euo pipefail
cd "$(dirname "$0")/.."

preset="${1:-small}"
prompt="${2:-The quick brown fox}"
dir="target/demo-model-mixtral-$preset"

cargo build --release --locked -p moe-cli
[ -f "$dir/config.json" ] || target/release/moe gen-model --arch mixtral --preset "$preset" --seed 1 --out "$dir"
target/release/moe generate --model "$dir" --prompt "$prompt" --max-tokens 32 --temperature 0.8 --seed 1 --json
