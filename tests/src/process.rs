//! The cluster's processes in tests: a workspace binary started with its arguments, read until
//! it prints the address it listens on, and killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A binary of the workspace, in the directory the running test binary was built into
/// (`target/<profile>`, the parent of its `deps/`).
pub fn sibling_binary(name: &str, package: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let dir = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it first (cargo build -p {package}; scripts/test.sh builds \
         the whole workspace)",
        binary.display()
    );
    binary
}

/// A child process killed on drop; its first stdout line must be `listening on ADDR`.
pub struct Process {
    child: Child,
    pub address: String,
    /// Its stdout lines after the first.
    lines: Receiver<String>,
}

impl Process {
    pub fn start(program: &Path, args: &[String], env: &[(&str, String)]) -> Process {
        Process::start_command(Command::new(program), args, env)
    }

    /// As [`Process::start`], for a command already set up (e.g. to run in a namespace).
    pub fn start_command(mut command: Command, args: &[String], env: &[(&str, String)]) -> Process {
        let mut child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the process prints its address");
        let address = first
            .strip_prefix("listening on ")
            .expect(&first)
            .to_string();
        Process {
            child,
            address,
            lines,
        }
    }

    /// The process's next stdout line, waiting up to `within`.
    pub fn next_line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Sends the signal named `signal` (`TERM`, `STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; its exit status.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
