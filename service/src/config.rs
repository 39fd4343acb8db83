//! The configuration conventions every server binary shares: flags with `MOE_*` environment
//! fallbacks parsed by clap (a malformed one exits 64 like any other bad configuration),
//! `--check-config`, and spotting `MOE_*` variables that no flag of the binary reads (a misspelt
//! name, or one meant for another binary). What a valid configuration is stays with each binary.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::process::ExitCode;

use crate::EXIT_CONFIG;

/// The prefix of every environment variable a server reads a flag from.
pub const ENV_PREFIX: &str = "MOE_";

/// `--check-config`, the same in every server: flatten it into the binary's clap configuration
/// (`#[command(flatten)]`) and hand it to [`check_config`] when set.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct CheckConfig {
    /// Check the configuration (flags and MOE_* variables) as a start would, without reading
    /// the model, contacting etcd or binding a port: value syntax and ranges, names, flags that
    /// exclude each other, and no MOE_* variable this binary does not read. Prints `config ok`
    /// and exits 0, or `error: ...` and exits 64.
    #[arg(long)]
    pub check_config: bool,
}

/// Parses a server's configuration from its command line and `MOE_*` variables. `--help` and
/// `--version` print and give status 0; a malformed or missing flag or variable prints clap's
/// message (`error: ...`) and gives status 64, like every other configuration error.
pub fn parse<P: clap::Parser>() -> Result<P, ExitCode> {
    P::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(parse_status(&e))
    })
}

fn parse_status(e: &clap::Error) -> u8 {
    if e.use_stderr() { EXIT_CONFIG } else { 0 }
}

/// Panics unless `command` is a valid clap command whose every flag but `--check-config`,
/// `--help` and `--version` has a `MOE_*` variable: each server's tests call it, so a flag
/// cannot be added without its variable.
pub fn assert_every_flag_has_a_variable(command: &clap::Command) {
    command.clone().debug_assert();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "check_config" | "help" | "version") {
            assert!(arg.get_env().is_none(), "{id}");
        } else {
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{id} has no variable"));
            assert!(env.to_string_lossy().starts_with(ENV_PREFIX), "{id}");
        }
    }
}

/// The names among `names` that look like configuration (start with [`ENV_PREFIX`]) but that no
/// argument of `command` reads, sorted and without duplicates. Only `command`'s own arguments
/// count (the servers have no subcommands).
pub fn unknown_env<I, S>(command: &clap::Command, names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let known: HashSet<&OsStr> = command
        .get_arguments()
        .filter_map(clap::Arg::get_env)
        .collect();
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|name| !known.contains(name.as_ref()))
        .map(|name| name.as_ref().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(ENV_PREFIX))
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
}

/// The `MOE_*` variables of this process's environment that `command` does not read.
pub fn unknown_env_here(command: &clap::Command) -> Vec<String> {
    unknown_env(command, std::env::vars_os().map(|(name, _)| name))
}

/// What `--check-config` does: refuses the `MOE_*` variables `command` does not read, then runs
/// `check` (the binary's checks that need no file, network or port). Prints `config ok` and gives
/// status 0, or `error: ...` and status 64.
pub fn check_config(
    command: &clap::Command,
    check: impl FnOnce() -> Result<(), String>,
) -> ExitCode {
    match outcome(command, &unknown_env_here(command), check) {
        Ok(()) => {
            println!("config ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn outcome(
    command: &clap::Command,
    unknown: &[String],
    check: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    if unknown.is_empty() {
        check()
    } else {
        Err(unknown_message(command, unknown))
    }
}

/// Names the unknown variables and the binary that does not read them.
pub fn unknown_message(command: &clap::Command, unknown: &[String]) -> String {
    let (noun, pronoun) = if unknown.len() == 1 {
        ("variable", "it")
    } else {
        ("variables", "them")
    };
    format!(
        "unknown {noun} {} in the environment: no flag of `{}` reads {pronoun} (misspelt, or meant for another binary?)",
        unknown.join(", "),
        command.get_name()
    )
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use clap::{Arg, ArgAction, CommandFactory, Parser};

    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("server")
            .arg(Arg::new("model").long("model").env("MOE_MODEL"))
            .arg(Arg::new("http").long("http").env("MOE_HTTP"))
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .action(ArgAction::SetTrue),
            )
    }

    #[test]
    fn known_variables_and_other_prefixes_pass() {
        let names = [
            "MOE_MODEL",
            "MOE_HTTP",
            "PATH",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "moe_x",
        ];
        assert!(unknown_env(&command(), names).is_empty());
    }

    #[test]
    fn misspelt_and_foreign_variables_are_named_once_and_sorted() {
        let names = [
            "MOE_MODLE",
            "MOE_MODEL",
            "MOE_DRAIN_SECONDS",
            "MOE_MODLE",
            "MOE_",
            "HOME",
        ];
        assert_eq!(
            unknown_env(&command(), names),
            ["MOE_", "MOE_DRAIN_SECONDS", "MOE_MODLE"]
        );
    }

    #[test]
    fn names_that_are_not_unicode_are_judged_by_their_prefix() {
        let odd = OsString::from_vec(b"MOE_\xffX".to_vec());
        let other = OsString::from_vec(b"X\xff".to_vec());
        assert_eq!(unknown_env(&command(), [odd, other]), ["MOE_\u{fffd}X"]);
    }

    #[derive(Debug, clap::Parser)]
    #[command(name = "demo")]
    struct Demo {
        #[arg(long, env = "MOE_LISTEN", default_value = "127.0.0.1:1")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        check: CheckConfig,
    }

    #[test]
    fn the_flattened_flag_parses_and_reads_no_variable() {
        let demo = Demo::try_parse_from(["demo", "--check-config"]).unwrap();
        assert!(demo.check.check_config);
        assert!(!Demo::try_parse_from(["demo"]).unwrap().check.check_config);
        let command = Demo::command();
        assert!(unknown_env(&command, ["MOE_LISTEN"]).is_empty());
        assert_eq!(
            unknown_env(&command, ["MOE_CHECK_CONFIG"]),
            ["MOE_CHECK_CONFIG"]
        );
    }

    #[test]
    fn malformed_values_are_configuration_errors_and_help_is_not() {
        let bad = Demo::try_parse_from(["demo", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(parse_status(&bad), EXIT_CONFIG);
        let unknown_flag = Demo::try_parse_from(["demo", "--lisen", "x"]).unwrap_err();
        assert_eq!(parse_status(&unknown_flag), EXIT_CONFIG);
        let help = Demo::try_parse_from(["demo", "--help"]).unwrap_err();
        assert_eq!(parse_status(&help), 0);
    }

    #[test]
    fn unknown_variables_fail_before_the_binary_checks_and_are_named() {
        let command = command();
        let unknown = vec!["MOE_MODLE".to_string()];
        let mut ran = false;
        let refused = outcome(&command, &unknown, || {
            ran = true;
            Ok(())
        })
        .unwrap_err();
        assert!(!ran);
        assert!(refused.contains("MOE_MODLE"), "{refused}");
        assert!(refused.contains("`server`"), "{refused}");
        assert!(refused.starts_with("unknown variable "), "{refused}");
        let two = unknown_message(&command, &["MOE_A".into(), "MOE_B".into()]);
        assert!(two.starts_with("unknown variables MOE_A, MOE_B "), "{two}");
        assert!(two.contains("reads them"), "{two}");

        assert_eq!(outcome(&command, &[], || Ok(())), Ok(()));
        assert_eq!(
            outcome(&command, &[], || Err("--http: bad".into())),
            Err("--http: bad".to_string())
        );
    }
}
