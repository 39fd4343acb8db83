//! Child processes through `sh`: the address line, later lines kept for the caller, output to
//! log files kept across a restart, signals, termination within a deadline, and a process that
//! never says where it listens.

use std::time::Duration;

use moe_launch::{Launch, LaunchError, Signal, Stop};

/// `sh -c script`, called `name`.
fn shell(name: &str, script: &str) -> Launch {
    Launch::new(name, "sh").args(["-c", script])
}

#[test]
fn the_address_line_comes_first_and_later_lines_are_kept() {
    let script = "echo 'listening on 127.0.0.1:7'; echo second; echo third; sleep 30";
    let process = shell("talker", script).start().unwrap();
    assert_eq!(process.address, "127.0.0.1:7");
    let within = Duration::from_secs(10);
    assert_eq!(process.next_line(within).as_deref(), Some("second"));
    assert_eq!(process.next_line(within).as_deref(), Some("third"));
    assert_eq!(process.next_line(Duration::from_millis(50)), None);
    assert_eq!(process.name(), "talker");
}

#[test]
fn sigterm_ends_a_process_within_the_deadline_with_its_status() {
    let script = "trap 'exit 3' TERM; echo 'listening on x:1'; while true; do sleep 0.01; done";
    let process = shell("trapper", script).start().unwrap();
    let status = process.terminate(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(3));
}

#[test]
fn a_process_ignoring_sigterm_is_reported_not_stopped() {
    let script = "trap '' TERM; echo 'listening on x:1'; while true; do sleep 0.01; done";
    let process = shell("stubborn", script).stop(Stop::Kill).start().unwrap();
    match process.terminate(Duration::from_millis(300)) {
        Err(LaunchError::NotStopped { name, .. }) => assert_eq!(name, "stubborn"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stopped_process_continues_and_a_killed_one_reports_it() {
    let mut process = shell("sleeper", "echo 'listening on x:1'; exec sleep 30")
        .start()
        .unwrap();
    process.signal(Signal::Stop).unwrap();
    process.signal(Signal::Cont).unwrap();
    assert!(process.exited().is_none());
    let status = process.kill().unwrap();
    assert!(!status.success());
}

/// Waits up to 10 s until `out` and `log` hold `times` copies of "out\n" and "err\n".
fn wait_for_copies(out: &std::path::Path, log: &std::path::Path, times: usize) {
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read(out) != "out\n".repeat(times) || read(log) != "err\n".repeat(times) {
        assert!(
            std::time::Instant::now() < deadline,
            "out: {:?}, log: {:?}",
            read(out),
            read(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn output_goes_to_log_files_that_a_restart_appends_to() {
    let logs = tempfile::tempdir().unwrap();
    let script = "echo 'listening on x:1'; echo out; echo err >&2; exec sleep 30";
    let mut process = shell("logger", script).logs(logs.path()).start().unwrap();
    assert_eq!(process.next_line(Duration::from_millis(50)), None);
    let log = logs.path().join("logger.log");
    assert_eq!(process.log(), Some(log.clone()));
    let out = logs.path().join("logger.out");
    // The first life's lines are written before it is killed, then the second's follow them.
    wait_for_copies(&out, &log, 1);
    let first = process.id();
    process.restart().unwrap();
    assert_ne!(process.id(), first);
    wait_for_copies(&out, &log, 2);
}

#[test]
fn a_process_that_prints_no_address_fails_to_start_saying_what_it_printed() {
    match shell("mute", "echo hello; sleep 30").start() {
        Err(LaunchError::NoAddress { name, said, .. }) => {
            assert_eq!(name, "mute");
            assert!(said.contains("hello"), "{said}");
        }
        other => panic!("{other:?}"),
    }
    let silent = shell("silent", "exit 0").start();
    assert!(
        matches!(silent, Err(LaunchError::NoAddress { .. })),
        "{silent:?}"
    );
    let slow = shell("slow", "sleep 30")
        .within(Duration::from_millis(100))
        .start();
    assert!(
        matches!(slow, Err(LaunchError::NoAddress { .. })),
        "{slow:?}"
    );
}

#[test]
fn a_known_address_needs_no_line_and_environment_changes_apply() {
    let process = shell("env", "echo \"$MOE_LAUNCH_TEST\"; sleep 30")
        .env("MOE_LAUNCH_TEST", "set")
        .known_address("127.0.0.1:9".to_string())
        .start()
        .unwrap();
    assert_eq!(process.address, "127.0.0.1:9");
    assert_eq!(
        process.next_line(Duration::from_secs(10)).as_deref(),
        Some("set")
    );
}
