#!/usr/bin/env bash
# The quickstart: builds everything, starts a local cluster with `moe up` (etcd, a coordinator,
# two expert nodes, a gateway) serving the small trained model in models/stdlib-moe (a
# Mixtral-shaped MoE trained on Python's standard library), sends one completion request to the
# gateway's OpenAI-compatible API, prints the answer and stops.
# Usage: scripts/demo.sh [PROMPT]
#        scripts/demo.sh --random PRESET [PROMPT]   (a seeded random checkpoint: tiny | small | medium)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --locked -p moe-cli -p moe-coordinator -p moe-expert-node -p moe-gateway
if [ "${1:-}" = "--random" ]; then
    preset="${2:-small}"
    prompt="${3:-The quick brown fox}"
    dir="target/demo-model-mixtral-$preset"
    [ -f "$dir/config.json" ] || target/release/moe gen-model --arch mixtral --preset "$preset" --seed 1 --out "$dir"
    sampling='"temperature": 0.8, "seed": 1'
else
    prompt="${1:-class Stack:\\n    def __init__(self):\\n}"
    dir="models/stdlib-moe"
    sampling='"temperature": 0.7, "top_p": 0.95, "seed": 2'
fi
name="$(basename "$dir")"

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
body="{\"model\": \"$name\", \"prompt\": \"$prompt\", \"max_tokens\": 64, $sampling}"
echo "POST $gateway/v1/completions $body"
answer="$(curl -sS "$gateway/v1/completions" -H 'Content-Type: application/json' -d "$body")"
echo "$answer"
# The prompt and its completion as text (the prompt is a JSON string body).
python3 - "$prompt" "$answer" <<'PY' || true
import json, sys
prompt = json.loads('"' + sys.argv[1] + '"')
print("--- prompt + completion ---")
print(prompt + json.loads(sys.argv[2])["choices"][0]["text"])
PY
