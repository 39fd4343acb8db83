//! NVRTC compilation of the kernel source to a cubin for one architecture, the resource report
//! ptxas prints for it, and a cache of cubins keyed by source hash and architecture.

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cudarc::nvrtc::{result, sys};

use super::{CudaError, SOURCE};

/// A GPU architecture as NVRTC names it: `sm_<major><minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
}

impl Arch {
    /// The architectures CI compiles for: Ampere (A100, A10/RTX 30), Ada (L4/RTX 40), Hopper.
    pub const CHECKED: [Arch; 4] = [
        Arch::new(8, 0),
        Arch::new(8, 6),
        Arch::new(8, 9),
        Arch::new(9, 0),
    ];

    pub const fn new(major: u32, minor: u32) -> Arch {
        Arch { major, minor }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

impl FromStr for Arch {
    type Err = CudaError;

    fn from_str(s: &str) -> Result<Arch, CudaError> {
        let digits = s.trim().strip_prefix("sm_").unwrap_or("");
        let valid = (2..=3).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(CudaError::UnknownArch(s.to_string()));
        }
        let (major, minor) = digits.split_at(digits.len() - 1);
        Ok(Arch::new(
            major.parse().expect("digits"),
            minor.parse().expect("digits"),
        ))
    }
}

/// What ptxas reports for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub stack_bytes: u32,
    pub shared_bytes: u32,
}

/// A compiled cubin with the compiler's log and its per-kernel resource report.
#[derive(Debug, Clone)]
pub struct Cubin {
    pub arch: Arch,
    pub image: Vec<u8>,
    pub log: String,
    pub kernels: Vec<KernelResources>,
}

/// Frees an NVRTC program on every path.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by `create_program` and is destroyed once, here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// Whether `libnvrtc` can be loaded.
pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: only tries to load the library; nothing is called through it.
    unsafe { sys::is_culib_present() }
}

/// The loaded NVRTC's `(major, minor)` version.
pub fn nvrtc_version() -> Result<(u32, u32), CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::NvrtcMissing);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both are valid out pointers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result()?;
    Ok((major as u32, minor as u32))
}

/// Compiles [`SOURCE`] to a cubin for `arch`, with ptxas' verbose resource report.
///
/// NVRTC 12.9 and later may serve a repeated compile from their cache without running ptxas;
/// the report is then empty. `CUDA_CACHE_DISABLE=1` turns that cache off.
pub fn compile(arch: Arch) -> Result<Cubin, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::NvrtcMissing);
    }
    let source = CString::new(SOURCE).expect("the kernel source has no NUL byte");
    let program = Program(result::create_program(&source, Some(c"experts.cu"))?);
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    // SAFETY: `program` is a live program from `create_program`.
    let compiled = unsafe { result::compile_program(program.0, &options) };
    // SAFETY: as above; the log exists whether or not compilation succeeded.
    let raw_log = unsafe { result::get_program_log(program.0) }?;
    // SAFETY: NVRTC returns a NUL-terminated C string.
    let log = unsafe { CStr::from_ptr(raw_log.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    if compiled.is_err() {
        return Err(CudaError::Compile {
            arch: arch.to_string(),
            log,
        });
    }
    let mut size = 0usize;
    // SAFETY: `program` compiled successfully; `size` is a valid out pointer.
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }.result()?;
    let mut image = vec![0u8; size];
    // SAFETY: `image` has the size NVRTC reported.
    unsafe { sys::nvrtcGetCUBIN(program.0, image.as_mut_ptr().cast()) }.result()?;
    let kernels = parse_ptxas_log(&log);
    Ok(Cubin {
        arch,
        image,
        log,
        kernels,
    })
}

/// FNV-1a over the kernel source: the cache key, stable across builds and platforms.
fn source_hash() -> u64 {
    SOURCE.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cubin for `arch` from `dir` if an earlier run compiled this source, else compiled now and
/// written there (temporary file, then rename, so a crash never leaves half a cubin).
pub fn compile_cached(arch: Arch, dir: &Path) -> Result<Vec<u8>, CudaError> {
    let path = dir.join(format!("experts-{:016x}-{arch}.cubin", source_hash()));
    if let Ok(image) = std::fs::read(&path)
        && !image.is_empty()
    {
        return Ok(image);
    }
    let cubin = compile(arch)?;
    let cache_err = |path: &PathBuf, e: std::io::Error| CudaError::Cache {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| cache_err(&dir.to_path_buf(), e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &cubin.image).map_err(|e| cache_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| cache_err(&path, e))?;
    Ok(cubin.image)
}

/// Reads ptxas' `-v` report: per entry function, registers, spills, stack and shared memory.
///
/// ```text
/// ptxas info    : Compiling entry function 'moe_combine' for 'sm_90'
/// ptxas info    : Function properties for moe_combine
/// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 32 registers, used 0 barriers
/// ```
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            kernels.push(KernelResources {
                name,
                registers: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                stack_bytes: 0,
                shared_bytes: 0,
            });
            continue;
        }
        let Some(k) = kernels.last_mut() else {
            continue;
        };
        for part in line.split([',', ':']) {
            let words: Vec<&str> = part.split_whitespace().collect();
            let number = |i: usize| {
                words
                    .get(i)
                    .and_then(|w| w.parse::<u32>().ok())
                    .unwrap_or(0)
            };
            let n = words.len();
            if n >= 3 && words[n - 3] == "Used" && words[n - 1] == "registers" {
                k.registers = number(n - 2);
            } else if n >= 2 && words[n - 2..] == ["bytes", "smem"] {
                k.shared_bytes = number(n - 3);
            } else if n >= 4 {
                let value = number(n - 4);
                match words[n - 3..] {
                    ["bytes", "stack", "frame"] => k.stack_bytes = value,
                    ["bytes", "spill", "stores"] => k.spill_store_bytes = value,
                    ["bytes", "spill", "loads"] => k.spill_load_bytes = value,
                    _ => {}
                }
            }
        }
    }
    kernels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for arch in Arch::CHECKED {
            assert_eq!(arch.to_string().parse::<Arch>(), Ok(arch));
        }
        assert_eq!("sm_100".parse::<Arch>(), Ok(Arch::new(10, 0)));
        for bad in ["sm_8", "compute_80", "sm_8x", "--sm_80", ""] {
            assert!(matches!(
                bad.parse::<Arch>(),
                Err(CudaError::UnknownArch(_))
            ));
        }
    }

    #[test]
    fn reads_the_ptxas_report() {
        let log = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'moe_gate_up_q4' for 'sm_90'
ptxas info    : Function properties for moe_gate_up_q4
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8 bytes cumulative stack size, 16384 bytes smem
ptxas info    : Compiling entry function 'moe_combine' for 'sm_90'
ptxas info    : Function properties for moe_combine
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 16 registers, 384 bytes cmem[0]
";
        let kernels = parse_ptxas_log(log);
        assert_eq!(
            kernels,
            [
                KernelResources {
                    name: "moe_gate_up_q4".into(),
                    registers: 64,
                    spill_store_bytes: 4,
                    spill_load_bytes: 12,
                    stack_bytes: 8,
                    shared_bytes: 16384,
                },
                KernelResources {
                    name: "moe_combine".into(),
                    registers: 16,
                    spill_store_bytes: 0,
                    spill_load_bytes: 0,
                    stack_bytes: 0,
                    shared_bytes: 0,
                },
            ]
        );
    }

    #[test]
    fn a_cached_cubin_is_reused_without_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let arch = Arch::new(9, 0);
        let path = dir
            .path()
            .join(format!("experts-{:016x}-sm_90.cubin", source_hash()));
        std::fs::write(&path, b"cached image").unwrap();
        assert_eq!(compile_cached(arch, dir.path()).unwrap(), b"cached image");
    }
}
