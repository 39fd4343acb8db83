//! The cluster's processes in tests: [`moe_launch::Process`] started the tests' way — the
//! workspace's binaries found beside the test binary, `RUST_LOG=warn`, stderr dropped, stdout
//! lines after `listening on ADDR` kept, killed on drop — panicking with the reason when one
//! does not start.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use moe_launch::{Process, Signal};

/// A binary of the workspace, in the directory the running test binary was built into
/// (`target/<profile>`, the parent of its `deps/`).
pub fn sibling_binary(name: &str, package: &str) -> PathBuf {
    moe_launch::sibling(name, package).unwrap_or_else(|e| panic!("{e}"))
}

/// `program` with `args` and the variables `env`, once it has printed its address.
pub fn start(program: &Path, args: &[String], env: &[(&str, String)]) -> Process {
    start_command(Command::new(program), args, env)
}

/// As [`start`], for a command already set up (e.g. to run in a namespace).
pub fn start_command(mut command: Command, args: &[String], env: &[(&str, String)]) -> Process {
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn");
    let program = Path::new(command.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str());
    moe_launch::Launch::command(&name.to_string_lossy(), &command)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}
