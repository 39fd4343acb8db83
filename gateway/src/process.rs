//! This process's resource use in the Prometheus client libraries' standard series
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_start_time_seconds`, `process_open_fds`, `process_max_fds`), read from Linux's
//! `/proc`: a pure parser of the files' text and a thin reader. Where `/proc` is not there the
//! series are left out.

use std::fmt::Write;

use crate::metric_names as names;
use crate::metrics::header;

/// Clock ticks per second of `/proc`'s times (Linux's `USER_HZ`, fixed for user space at 100).
const TICKS_PER_SECOND: f64 = 100.0;

/// What the series say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

impl ProcessStats {
    /// From `/proc/self/stat`, `/proc/self/status`, `/proc/stat` (for the boot time),
    /// `/proc/self/limits` and the number of entries in `/proc/self/fd`; `None` when a file
    /// does not say what it should.
    pub fn parse(
        stat: &str,
        status: &str,
        system: &str,
        limits: &str,
        open_fds: usize,
    ) -> Option<ProcessStats> {
        // The fields after the command, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // Numbered as proc(5) numbers them: state is field 3, so field n is fields[n - 3].
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
        let started_after_boot = field(22)? / TICKS_PER_SECOND;
        let boot: f64 = system
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let kib = |key: &str| -> Option<f64> {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            let kb: f64 = line.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024.0)
        };
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(ProcessStats {
            cpu_seconds,
            resident_bytes: kib("VmRSS:")?,
            virtual_bytes: kib("VmSize:")?,
            start_time_seconds: boot + started_after_boot,
            open_fds: open_fds as f64,
            max_fds,
        })
    }

    /// This process's, read from `/proc` now.
    pub fn read() -> Option<ProcessStats> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        ProcessStats::parse(
            &read("/proc/self/stat")?,
            &read("/proc/self/status")?,
            &read("/proc/stat")?,
            &read("/proc/self/limits")?,
            open_fds,
        )
    }

    pub fn render(&self, out: &mut String) {
        let series = [
            (
                names::PROCESS_CPU_SECONDS_TOTAL,
                "User and system CPU time spent, in seconds.",
                "counter",
                self.cpu_seconds,
            ),
            (
                names::PROCESS_RESIDENT_MEMORY_BYTES,
                "Resident memory size in bytes.",
                "gauge",
                self.resident_bytes,
            ),
            (
                names::PROCESS_VIRTUAL_MEMORY_BYTES,
                "Virtual memory size in bytes.",
                "gauge",
                self.virtual_bytes,
            ),
            (
                names::PROCESS_START_TIME_SECONDS,
                "Start time of the process since the Unix epoch, in seconds.",
                "gauge",
                self.start_time_seconds,
            ),
            (
                names::PROCESS_OPEN_FDS,
                "Open file descriptors.",
                "gauge",
                self.open_fds,
            ),
            (
                names::PROCESS_MAX_FDS,
                "The most file descriptors the process may open.",
                "gauge",
                self.max_fds,
            ),
        ];
        for (name, help, kind, value) in series {
            header(out, name, help, kind);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (gate way) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                        12 0 30000 123456789 2048 18446744073709551615";
    const STATUS: &str = "Name:\tgateway\nVmSize:\t  120000 kB\nVmRSS:\t   50000 kB\n";
    const SYSTEM: &str = "cpu  1 2 3\nbtime 1765000000\nprocesses 10\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
                          Max open files            1024                 524288               files\n";

    #[test]
    fn proc_files_give_the_standard_series() {
        let stats = ProcessStats::parse(STAT, STATUS, SYSTEM, LIMITS, 17).unwrap();
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 50000.0 * 1024.0,
                virtual_bytes: 120000.0 * 1024.0,
                start_time_seconds: 1765000000.0 + 300.0,
                open_fds: 17.0,
                max_fds: 1024.0,
            }
        );
        let mut text = String::new();
        stats.render(&mut text);
        assert!(text.contains("process_cpu_seconds_total 3\n"), "{text}");
        assert!(text.contains("# TYPE process_open_fds gauge"), "{text}");
        assert!(ProcessStats::parse("garbage", STATUS, SYSTEM, LIMITS, 1).is_none());
    }

    #[test]
    fn this_process_can_be_read_where_there_is_a_proc() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            println!("no /proc here: the reader is not exercised");
            return;
        }
        let stats = ProcessStats::read().expect("this process's stats");
        assert!(
            stats.resident_bytes > 0.0 && stats.open_fds > 0.0,
            "{stats:?}"
        );
    }
}
