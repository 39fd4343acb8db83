#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a machine with an NVIDIA GPU and its driver:
# the kernels compiled for every checked architecture, the kernels against the scalar reference
# on the device, a real expert node on the CUDA backend, the ptxas report for the device's own
# architecture, and `moe bench-gpu`. Writes each step's output and the JSON figures under
# docs/gpu/latest/ (and $OUT when set, for a machine that sends files back), and a summary of
# which steps passed. A step that fails does not stop the others; the exit status says whether
# all passed.
#
# Needs: cargo, a C++ compiler, protoc (as scripts/test.sh), the CUDA driver (libcuda), and NVRTC
# (found on LD_LIBRARY_PATH, or installed here from the PyPI wheel as scripts/test.sh does).
set -uo pipefail
cd "$(dirname "$0")/.."

out=docs/gpu/latest
mkdir -p "$out"

nvrtc_lib="$PWD/target/cuda-tools/nvidia/cuda_nvrtc/lib"
if ! ldconfig -p | grep -q libnvrtc.so && [ ! -e "$nvrtc_lib/libnvrtc.so.12" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target target/cuda-tools \
        nvidia-cuda-nvrtc-cu12==12.9.86
fi
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MOE_REQUIRE_GPU=1 MOE_REQUIRE_NVRTC=1 CUDA_CACHE_DISABLE=1

summary="$out/summary.txt"
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    git rev-parse HEAD
} >"$summary"

failed=0
step() {
    local name=$1
    shift
    local start=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        echo "passed  $name ($((SECONDS - start)) s)" >>"$summary"
    else
        echo "FAILED  $name ($((SECONDS - start)) s): see $name.log" >>"$summary"
        failed=1
    fi
}

step build cargo build --release -p moe-cli -p moe-expert-node
step cuda-compile cargo test --release -p moe-kernels --features cuda --test cuda_compile -- --nocapture
step cuda-device cargo test --release -p moe-kernels --features cuda --test cuda_device -- --nocapture
step node-process cargo test --release -p moe-expert-node --test node_process the_backend -- --nocapture
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
step check-kernels target/release/moe check-kernels --archs "sm_${arch:-90}" --json "$out/check-kernels.json"
step bench-gpu target/release/moe bench-gpu --json "$out/bench-gpu.json"

cat "$summary"
if [ -n "${OUT:-}" ]; then
    cp -r "$out" "$OUT/"
fi
exit $failed
