#!/usr/bin/env bash
# Runs every check the project has, on a fresh machine: formatting, lints, and the whole test
# suite. Installs what the tests need beyond the Rust toolchain first:
#   - protoc, which etcd-client's build compiles etcd's protos with (Debian's protobuf-compiler);
#   - etcd, which the end-to-end tests (moe-tests) start on loopback ports (Debian's
#     etcd-server);
#   - a C++ compiler, for the CPU emulation of the CUDA kernels (Debian's g++);
#   - ip and tc, which the shaped-link test builds its test network with (Debian's iproute2);
#   - NVRTC, to compile the CUDA kernels for sm_80..sm_90 without a GPU (the PyPI wheel
#     nvidia-cuda-nvrtc-cu12, unpacked under target/cuda-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v c++ >/dev/null || missing+=(g++)
command -v tc >/dev/null || missing+=(iproute2)
command -v npm >/dev/null || missing+=(npm) # the chart tests' helm comes from an npm package
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

nvrtc_root=target/cuda-tools
nvrtc_lib="$PWD/$nvrtc_root/nvidia/cuda_nvrtc/lib"
if [ ! -e "$nvrtc_lib/libnvrtc.so.12" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$nvrtc_root" \
        nvidia-cuda-nvrtc-cu12==12.9.86
fi
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MOE_REQUIRE_NVRTC=1
# NVRTC 12.9+ may serve a repeated compile from its cache, without the ptxas report the kernel
# checks read.
export CUDA_CACHE_DISABLE=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests (moe-tests) start the workspace's binaries from beside their own.
cargo build --workspace --bins --locked
cargo test --workspace --locked
scripts/helm-test.sh # the Helm chart: lint, Kubernetes schemas, each binary's --check-config
