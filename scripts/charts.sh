#!/usr/bin/env bash
# Regenerates the benchmark results and charts under docs/bench/: builds the release binaries,
# writes the `medium` demo checkpoint (once), runs bench-kernels, bench-decode (experts at f16,
# q8 and q4), bench-cluster (two nodes, 1 to 64 streams), eval-quality and the precision study
# bench-precision (the trained model in models/stdlib-moe, two nodes behind tc-shaped links, at
# the default thresholds and at T1 0.5 / T2 0.8; needs root) and bench-overload, keeps
# their JSON, and draws the SVG charts with `moe plot` (with docs/gpu/bench-gpu.json, recorded on
# a GPU machine). Takes about fifteen minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --locked -p moe-cli -p moe-coordinator -p moe-expert-node -p moe-gateway
moe=target/release/moe
model=target/bench-model-mixtral-medium
out=docs/bench
mkdir -p "$out"
[ -f "$model/config.json" ] || $moe gen-model --arch mixtral --preset medium --seed 1 --out "$model"

$moe bench-kernels --formats f16,q8,q4,q2 --json "$out/kernels.json"
for p in f16 q8 q4; do
    $moe bench-decode --model "$model" --expert-precision $p --runs 3 --json "$out/decode-$p.json"
done
$moe bench-cluster --model "$model" --nodes 2 --concurrency 1,4,16,64 --prompt-tokens 32 \
    --max-tokens 32 --json "$out/cluster.json"
$moe eval-quality --model models/stdlib-moe --tokens 16384 --json "$out/eval-quality.json"
$moe bench-precision --model models/stdlib-moe --nodes 2 --link-rate 3mbit --streams 16 \
    --max-tokens 64 --json "$out/precision.json"
$moe bench-precision --model models/stdlib-moe --nodes 2 --link-rate 3mbit --streams 16 \
    --max-tokens 64 --ladders off,low-weights,skip --t1 0.5 --t2 0.8 --json "$out/precision-t05.json"
$moe bench-overload --model models/stdlib-moe --seconds 10 --json "$out/overload.json"
$moe plot --out "$out" "$out"/*.json docs/gpu/bench-gpu.json
