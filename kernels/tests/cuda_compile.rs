//! The CUDA expert kernels compiled with NVRTC to cubins for every architecture CI checks, with
//! ptxas' resource report: every kernel present, none spilling, shared memory as designed.
//!
//! Needs `libnvrtc.so.12` on the library path (`scripts/test.sh` installs the
//! `nvidia-cuda-nvrtc-cu12` wheel and sets `LD_LIBRARY_PATH`). Without it the test says why and
//! passes, unless `MOE_REQUIRE_NVRTC=1` (as `scripts/test.sh` sets), where it fails. The report
//! comes from ptxas, which a cached NVRTC compile skips: run with `CUDA_CACHE_DISABLE=1`.
#![cfg(feature = "cuda")]

use moe_kernels::cuda::{self, Arch, CudaError};

/// `xs[MAX_PAIRS][TILE / 4]` of float4 in `experts.cu`: 8 x 128 x 16 bytes.
const STAGING_BYTES: u32 = 16 * 1024;

#[test]
fn every_kernel_compiles_for_every_checked_arch() {
    let required = std::env::var("MOE_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    for arch in Arch::CHECKED {
        let cubin = match cuda::compile(arch) {
            Err(CudaError::NvrtcMissing) if !required => {
                eprintln!("not run: {}", CudaError::NvrtcMissing);
                return;
            }
            other => other.unwrap_or_else(|e| panic!("{arch}: {e}")),
        };
        assert!(!cubin.image.is_empty());
        let mut names: Vec<&str> = cubin.kernels.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        let mut expected = cuda::KERNELS.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "{arch}: kernels in the ptxas report");
        for k in &cubin.kernels {
            println!(
                "{arch} {:<16} registers {:>3}  spill stores {:>3} B  spill loads {:>3} B  stack {:>3} B  smem {:>5} B",
                k.name,
                k.registers,
                k.spill_store_bytes,
                k.spill_load_bytes,
                k.stack_bytes,
                k.shared_bytes
            );
            assert_eq!(
                (k.spill_store_bytes, k.spill_load_bytes),
                (0, 0),
                "{arch} {} spills registers:\n{}",
                k.name,
                cubin.log
            );
            assert!(k.registers > 0 && k.registers <= 255, "{arch} {}", k.name);
            let smem = if k.name == "moe_combine" {
                0
            } else {
                STAGING_BYTES
            };
            assert_eq!(k.shared_bytes, smem, "{arch} {} shared memory", k.name);
        }
    }
}
