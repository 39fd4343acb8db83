//! What the server binaries (`expert-node`, `coordinator`, `gateway`) share around their own
//! work: logs to stderr (`RUST_LOG`, default `info`) and traces over OTLP ([`telemetry`]), exit
//! status 64 for a bad configuration ([`config`]: flags and `MOE_*` variables, `--check-config`),
//! a multi-threaded runtime, `error: ...` and a failure status when the work fails, the
//! shutdown signal (SIGTERM or Ctrl-C), and gRPC reflection listing only what a binary serves
//! ([`reflection`]).

use std::future::Future;
use std::process::ExitCode;

pub mod config;
pub mod netns;
pub mod progress;
pub mod reflection;
pub mod telemetry;
#[cfg(any(test, feature = "test-pki"))]
pub mod test_pki;
pub mod tls;

use telemetry::Telemetry;

/// Exit status for a configuration refused before anything started (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Runs a server: sets up logging, warns about `MOE_*` variables that no argument of `command`
/// reads (`--check-config` refuses them), checks the configuration with `check` (exit 64 with
/// its message when it fails), then runs `run` with what `check` returned on a new runtime.
pub fn main<C, F>(
    command: &clap::Command,
    check: impl FnOnce() -> Result<C, String>,
    run: impl FnOnce(C) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = Telemetry::init(&runtime);
    let unknown = config::unknown_env_here(command);
    if !unknown.is_empty() {
        tracing::warn!("ignored: {}", config::unknown_message(command, &unknown));
    }
    let checked = match check() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = runtime.block_on(run(checked));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, `: `-separated, leaving out a source whose text the error's own
/// already holds: what a failed TLS handshake or connection says is often only in a source.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

/// `<prefix>-<host name>-<process id>`, kept to the characters etcd names allow: a default name
/// for a server instance that is unique on its host.
pub fn instance_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = match host.trim() {
        "" => "localhost",
        h => h,
    };
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{prefix}-{host}-{}", std::process::id())
}

/// Starts catching SIGTERM now and returns a future that resolves on SIGTERM or Ctrl-C (only
/// Ctrl-C where no SIGTERM handler can be installed). Call it before announcing anything, so
/// that a SIGTERM sent right after the announcement is caught rather than fatal. Needs a runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops this server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn causes_name_each_source_once() {
        let error = Outer(Inner(std::io::Error::other("bad certificate")));
        assert_eq!(causes(&error), "outer: middle: bad certificate");
    }

    #[test]
    fn instance_names_are_safe_and_carry_the_process_id() {
        let name = instance_name("gw");
        assert!(name.starts_with("gw-"), "{name}");
        assert!(
            name.ends_with(&format!("-{}", std::process::id())),
            "{name}"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{name}"
        );
    }
}
