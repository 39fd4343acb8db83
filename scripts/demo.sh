#!/usr/bin/env bash
# The quickstart: builds everything, writes a seeded random Mixtral-shaped checkpoint, starts a
# local cluster on it with `moe up` (etcd, a coordinator, two expert nodes, a gateway), sends one
# completion request to the gateway's OpenAI-compatible API, prints the answer and stops.
# Usage: scripts/demo.sh [PRESET] [PROMPT]   (PRESET: tiny | small | medium; default small)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

preset="${1:-small}"
prompt="${2:-The quick brown fox}"
dir="target/demo-model-mixtral-$preset"
name="$(basename "$dir")"

cargo build --release --locked -p moe-cli -p moe-coordinator -p moe-expert-node -p moe-gateway
[ -f "$dir/config.json" ] || target/release/moe gen-model --arch mixtral --preset "$preset" --seed 1 --out "$dir"

run="$(mktemp -d)"
target/release/moe up --model "$dir" --http 127.0.0.1:0 --grpc 127.0.0.1:0 --dir "$run" >"$run/up.out" 2>"$run/up.err" &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$run"' EXIT
for _ in $(seq 600); do
    grep -q '^ready' "$run/up.out" && break
    kill -0 $up 2>/dev/null || { cat "$run/up.err"; exit 1; }
    sleep 0.5
done
grep -q '^ready' "$run/up.out" || { echo "the cluster did not become ready"; cat "$run/up.err"; exit 1; }
grep -v '^ready' "$run/up.out"
gateway="$(sed -n 's/^gateway *\(http:[^ ]*\).*/\1/p' "$run/up.out")"
body="{\"model\": \"$name\", \"prompt\": \"$prompt\", \"max_tokens\": 32, \"temperature\": 0.8, \"seed\": 1}"
echo "POST $gateway/v1/completions $body"
curl -sS "$gateway/v1/completions" -H 'Content-Type: application/json' -d "$body"
echo
