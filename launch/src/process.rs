//! A child process of the cluster: [`Launch`] says how to start it — program, arguments,
//! environment, where its output goes, whether it prints the address it listens on, how to stop
//! it — and [`Process`] is one run of it, which can be signalled, terminated within a deadline,
//! killed, or started again as it was first started; dropping it stops it. Output either goes
//! to files (`<logs>/<name>.log` for stderr, `<logs>/<name>.out` for stdout after the address
//! line, both appended to so that a process started again keeps its earlier life's output) or
//! is kept for the caller: stderr dropped, stdout lines after the address line handed over by
//! [`Process::next_line`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::LaunchError;

/// Where a process's output goes.
#[derive(Debug, Clone)]
enum Output {
    /// Stderr dropped; stdout's lines kept for [`Process::next_line`].
    Kept,
    /// Appended to `<name>.log` (stderr) and `<name>.out` (stdout) in this directory.
    Logs(PathBuf),
}

/// How the address a process listens on is known.
#[derive(Debug, Clone)]
enum Address {
    /// Its first stdout line says `listening on ADDR`.
    Printed,
    /// Known beforehand (the process was told its port).
    Known(String),
}

/// How a process is stopped when it is dropped.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// SIGKILL at once.
    Kill,
    /// SIGTERM, then SIGKILL if it has not exited within the duration.
    Terminate(Duration),
}

/// The signals the cluster's processes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    /// The name `kill -NAME` takes.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// How to start a process; kept by the process to start it again.
#[derive(Debug, Clone)]
pub struct Launch {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    /// Variables set (`Some`) or removed (`None`) in the inherited environment.
    env: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
    output: Output,
    address: Address,
    within: Duration,
    stop: Stop,
}

impl Launch {
    /// `program`, called `name` in messages and log file names; by default its output kept, its
    /// address printed within 30 s, and killed on drop.
    pub fn new(name: &str, program: impl AsRef<OsStr>) -> Launch {
        Launch {
            name: name.to_string(),
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            output: Output::Kept,
            address: Address::Printed,
            within: Duration::from_secs(30),
            stop: Stop::Kill,
        }
    }

    /// What `command` runs (e.g. a program in a network namespace): its program, arguments,
    /// environment changes and directory.
    pub fn command(name: &str, command: &Command) -> Launch {
        let mut launch = Launch::new(name, command.get_program()).args(command.get_args());
        launch.env = command
            .get_envs()
            .map(|(key, value)| (key.to_os_string(), value.map(OsStr::to_os_string)))
            .collect();
        launch.dir = command.get_current_dir().map(Path::to_path_buf);
        launch
    }

    /// `args` added after the arguments it has.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// The variable `key` set to `value`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        let value = Some(value.as_ref().to_os_string());
        self.env.push((key.as_ref().to_os_string(), value));
        self
    }

    /// The variable `key` not passed on.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Launch {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Its output appended to files in `dir`.
    pub fn logs(mut self, dir: &Path) -> Launch {
        self.output = Output::Logs(dir.to_path_buf());
        self
    }

    /// Its address known beforehand instead of printed.
    pub fn known_address(mut self, address: String) -> Launch {
        self.address = Address::Known(address);
        self
    }

    /// How long it may take to print its address.
    pub fn within(mut self, within: Duration) -> Launch {
        self.within = within;
        self
    }

    /// How it is stopped when dropped.
    pub fn stop(mut self, stop: Stop) -> Launch {
        self.stop = stop;
        self
    }

    /// The file its stderr goes to, when its output goes to files.
    pub fn log(&self) -> Option<PathBuf> {
        self.output_file("log")
    }

    fn output_file(&self, extension: &str) -> Option<PathBuf> {
        match &self.output {
            Output::Logs(dir) => Some(dir.join(format!("{}.{extension}", self.name))),
            Output::Kept => None,
        }
    }

    /// Starts it and, when it prints its address, waits for that line.
    pub fn start(&self) -> Result<Process, LaunchError> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let (stderr, out) = match (self.output_file("log"), self.output_file("out")) {
            (Some(log), Some(out)) => (Stdio::from(append(&log)?), Some(append(&out)?)),
            _ => (Stdio::null(), None),
        };
        let printed = matches!(self.address, Address::Printed);
        let stdout = match (&out, printed) {
            (Some(out), false) => Stdio::from(clone(out, self)?),
            _ => Stdio::piped(),
        };
        let mut child = command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                program: format!("{command:?}"),
                source,
            })?;
        let (send, lines) = std::sync::mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || forward(stdout, send, out));
        }
        let mut process = Process {
            launch: self.clone(),
            child,
            address: String::new(),
            lines,
        };
        process.address = match &self.address {
            Address::Known(address) => address.clone(),
            Address::Printed => process.printed_address()?,
        };
        Ok(process)
    }
}

/// `path` opened for appending, created if absent.
fn append(path: &Path) -> Result<File, LaunchError> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LaunchError::File {
            path: path.to_path_buf(),
            source,
        })
}

fn clone(file: &File, launch: &Launch) -> Result<File, LaunchError> {
    file.try_clone().map_err(|source| LaunchError::File {
        path: launch.output_file("out").unwrap_or_default(),
        source,
    })
}

/// Sends stdout's first line to `lines`, then the rest to `out` when given (so the child never
/// writes into a closed pipe), or else line by line to `lines` too.
fn forward(stdout: ChildStdout, lines: Sender<String>, out: Option<File>) {
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    if stdout.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let _ = lines.send(first.trim_end().to_string());
    match out {
        Some(mut out) => {
            let _ = std::io::copy(&mut stdout, &mut out);
        }
        None => {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        }
    }
}

/// A running (or exited) child process; stopped as its [`Launch`] says when dropped.
#[derive(Debug)]
pub struct Process {
    launch: Launch,
    child: Child,
    /// The address it listens on (`host:port`).
    pub address: String,
    /// Its stdout lines (after the address line, when it prints one).
    lines: Receiver<String>,
}

impl Process {
    /// Its first stdout line's address; kills it when that does not come within the launch's
    /// deadline or says something else.
    fn printed_address(&mut self) -> Result<String, LaunchError> {
        let within = self.launch.within;
        let said = match self.lines.recv_timeout(within) {
            Ok(line) => match line.strip_prefix("listening on ") {
                Some(address) => return Ok(address.to_string()),
                None => format!("its first line was {line:?}"),
            },
            Err(RecvTimeoutError::Timeout) => format!("no address within {within:?}"),
            Err(RecvTimeoutError::Disconnected) => "it printed no address".to_string(),
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(LaunchError::NoAddress {
            name: self.launch.name.clone(),
            said,
            log: self.launch.log(),
        })
    }

    pub fn name(&self) -> &str {
        &self.launch.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The file its stderr goes to, when its output goes to files.
    pub fn log(&self) -> Option<PathBuf> {
        self.launch.log()
    }

    /// Its next stdout line, waiting up to `within`; `None` when its output goes to files.
    pub fn next_line(&self, within: Duration) -> Option<String> {
        match self.launch.output {
            Output::Kept => self.lines.recv_timeout(within).ok(),
            Output::Logs(_) => None,
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        let failed = |detail: String| LaunchError::Signal {
            name: self.launch.name.clone(),
            signal: signal.name(),
            detail,
        };
        let status = Command::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| failed(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(status.to_string()))
        }
    }

    /// Sends SIGTERM and waits up to `within` for it to exit; its exit status.
    pub fn terminate(mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        self.terminated(within)
    }

    fn terminated(&mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        self.signal(Signal::Term)?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LaunchError::NotStopped {
            name: self.launch.name.clone(),
            within,
        })
    }

    /// Kills it (SIGKILL, as a crash would) and waits for it to exit; its exit status.
    pub fn kill(mut self) -> Result<ExitStatus, LaunchError> {
        self.killed()
    }

    fn killed(&mut self) -> Result<ExitStatus, LaunchError> {
        let name = &self.launch.name;
        let failed = |e: std::io::Error| LaunchError::Signal {
            name: name.clone(),
            signal: Signal::Kill.name(),
            detail: e.to_string(),
        };
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().map_err(failed)?;
        }
        self.child.wait().map_err(failed)
    }

    /// Kills it if it still runs and starts it again as it was first started (a server on a
    /// port the system picks gets a new one).
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.killed()?;
        *self = self.launch.start()?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Stop::Terminate(within) = self.launch.stop {
            match self.terminated(within) {
                Ok(_) => return,
                Err(e) => eprintln!("{e}; killing it"),
            }
        }
        let _ = self.killed();
    }
}
