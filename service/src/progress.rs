//! Progress of long work (building shards, writing a checkpoint): on a terminal a bar with the
//! rate and the time left; otherwise, as in a container's log, one plain line on stderr every
//! few seconds and one at the end:
//!
//! ```text
//! building shards: 12/32 (38%), 4.1 shards/s, 5 s left
//! building shards: 32/32 in 7.8 s, 4.1 shards/s
//! ```
//!
//! The line of the work under way is also kept for the process to report elsewhere
//! ([`current`]: an expert node's `Info` while it loads).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What [`current`] describes: the work, its unit, done, total and its start.
type Snapshot = (String, Unit, u64, u64, Instant);

/// The work under way in this process (the last one started, if several run at once).
static CURRENT: Mutex<Option<Snapshot>> = Mutex::new(None);

/// The progress line of the work under way in this process, if any.
pub fn current() -> Option<String> {
    let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    current.as_ref().map(|(what, unit, done, total, started)| {
        describe(what, *unit, *done, *total, started.elapsed(), false)
    })
}

fn publish(value: Option<Snapshot>) {
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = value;
}

/// How often the plain lines come unless [`Progress::every`] says otherwise.
pub const EVERY: Duration = Duration::from_secs(5);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Whole things, named (e.g. "shards").
    Items(&'static str),
    /// Bytes, shown in MB.
    Bytes,
}

impl Unit {
    fn amount(self, n: f64) -> String {
        match self {
            Unit::Items(_) => format!("{n:.0}"),
            Unit::Bytes => format!("{:.0} MB", n / 1e6),
        }
    }

    fn rate(self, per_second: f64) -> String {
        match self {
            Unit::Items(name) => format!("{per_second:.1} {name}/s"),
            Unit::Bytes => format!("{:.1} MB/s", per_second / 1e6),
        }
    }
}

/// The line for `done` of `total` after `elapsed`; `finished` for the last one.
pub fn describe(
    what: &str,
    unit: Unit,
    done: u64,
    total: u64,
    elapsed: Duration,
    finished: bool,
) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let (d, t) = (unit.amount(done as f64), unit.amount(total as f64));
    if finished {
        return format!("{what}: {d}/{t} in {seconds:.1} s, {}", unit.rate(rate));
    }
    let percent = if total > 0 {
        100.0 * done as f64 / total as f64
    } else {
        100.0
    };
    let left = if rate > 0.0 {
        format!("{:.0} s left", total.saturating_sub(done) as f64 / rate)
    } else {
        "time left unknown".to_string()
    };
    format!(
        "{what}: {d}/{t} ({percent:.0}%), {}, {left}",
        unit.rate(rate)
    )
}

/// One piece of long work being counted.
pub struct Progress {
    what: String,
    unit: Unit,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    every: Duration,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Counts up to `total`; a bar when stderr is a terminal, plain lines otherwise.
    pub fn new(what: impl Into<String>, unit: Unit, total: u64) -> Progress {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let count = match unit {
                Unit::Items(name) => format!("{{pos}}/{{len}} {name} ({{per_sec}})"),
                Unit::Bytes => "{bytes}/{total_bytes} ({bytes_per_sec})".to_string(),
            };
            let template = format!("{what}: {{wide_bar}} {count}, {{eta}} left");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        publish(Some((what.clone(), unit, 0, total, now)));
        Progress {
            what,
            unit,
            total,
            done: 0,
            started: now,
            last_line: now,
            every: EVERY,
            bar,
        }
    }

    /// Plain lines every `every` instead of [`EVERY`].
    pub fn every(mut self, every: Duration) -> Progress {
        self.every = every;
        self
    }

    /// Counted so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn inc(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        let (what, unit) = (self.what.clone(), self.unit);
        publish(Some((what, unit, self.done, self.total, self.started)));
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_line.elapsed() >= self.every => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line(false));
            }
            None => {}
        }
    }

    fn line(&self, finished: bool) -> String {
        describe(
            &self.what,
            self.unit,
            self.done,
            self.total,
            self.started.elapsed(),
            finished,
        )
    }

    /// Ends the count with its summary line.
    pub fn finish(self) {
        publish(None);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}", self.line(true));
    }
}

/// A report callback for work that learns its total as it goes (`report(done, total)`): the
/// progress starts at the first report and ends with its summary line when `done` reaches
/// `total`.
pub fn reporter(what: &'static str, unit: Unit) -> impl FnMut(usize, usize) {
    let mut progress: Option<Progress> = None;
    move |done, total| {
        let p = progress.get_or_insert_with(|| Progress::new(what, unit, total as u64));
        p.inc((done as u64).saturating_sub(p.done()));
        if done >= total
            && let Some(p) = progress.take()
        {
            p.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_under_way_is_reported_until_it_finishes() {
        let mut p = Progress::new("building shards", Unit::Items("shards"), 4);
        p.inc(1);
        let line = current().unwrap();
        assert!(line.starts_with("building shards: 1/4 (25%)"), "{line}");
        p.finish();
        assert_eq!(current(), None);
        let mut report = reporter("loading layers", Unit::Items("layers"));
        report(1, 2);
        let line = current().unwrap();
        assert!(line.starts_with("loading layers: 1/2 (50%)"), "{line}");
        report(2, 2);
        assert_eq!(current(), None);
    }

    #[test]
    fn lines_give_the_count_the_rate_and_the_time_left() {
        let s = Duration::from_secs;
        assert_eq!(
            describe(
                "building shards",
                Unit::Items("shards"),
                12,
                32,
                s(3),
                false
            ),
            "building shards: 12/32 (38%), 4.0 shards/s, 5 s left"
        );
        assert_eq!(
            describe("building shards", Unit::Items("shards"), 32, 32, s(8), true),
            "building shards: 32/32 in 8.0 s, 4.0 shards/s"
        );
        assert_eq!(
            describe("writing", Unit::Bytes, 0, 2_000_000, s(0), false),
            "writing: 0 MB/2 MB (0%), 0.0 MB/s, time left unknown"
        );
        assert_eq!(
            describe(
                "writing",
                Unit::Bytes,
                500_000_000,
                2_000_000_000,
                s(2),
                false
            ),
            "writing: 500 MB/2000 MB (25%), 250.0 MB/s, 6 s left"
        );
    }
}
