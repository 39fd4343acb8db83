//! Waiting on a starting cluster: polling a check with a deadline while saying every 5 s on
//! stderr how long it has waited and on what, and reading the gateway's `/health/ready` answer
//! for the experts no node can load.

use std::time::{Duration, Instant};

use crate::LaunchError;

/// How often a check is polled.
const POLL: Duration = Duration::from_millis(100);
/// How often the wait is reported on stderr.
const REPORT: Duration = Duration::from_secs(5);

/// Polls `check` until it says ready (or fails), for `within` at most; `waiting_on` says, in a
/// line for people, what the wait is on.
pub(crate) fn poll(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<bool, LaunchError>,
    waiting_on: &dyn Fn() -> Option<String>,
) -> Result<(), LaunchError> {
    let start = Instant::now();
    let mut said = Instant::now();
    while !check()? {
        if start.elapsed() > within {
            return Err(LaunchError::NotReady {
                what: what.to_string(),
                within,
                state: waiting_on(),
            });
        }
        if said.elapsed() > REPORT {
            let on = waiting_on().map(|d| format!(": {d}")).unwrap_or_default();
            let waited = start.elapsed().as_secs_f64();
            eprintln!("waiting for {what} ({waited:.0} s){on}");
            said = Instant::now();
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// The reason in a `/health/ready` body that reports experts no node can load.
pub(crate) fn unservable(body: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    let count = body["readiness"]["unservable_count"].as_u64()?;
    (count > 0).then(|| body["error"]["message"].as_str().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experts_no_node_can_load_are_read_with_their_reason() {
        let body = r#"{"readiness": {"unservable_count": 2}, "error": {"message": "no room"}}"#;
        assert_eq!(unservable(body).as_deref(), Some("no room"));
        let loading = r#"{"readiness": {"unservable_count": 0}}"#;
        assert_eq!(unservable(loading), None);
        assert_eq!(unservable("not json"), None);
    }

    #[test]
    fn a_check_that_fails_ends_the_wait_and_one_never_ready_times_out() {
        let failed = poll(
            "x",
            Duration::from_secs(10),
            || Err(LaunchError::Unservable("why".into())),
            &|| None,
        );
        assert!(matches!(failed, Err(LaunchError::Unservable(_))));
        let never = poll("x", Duration::ZERO, || Ok(false), &|| Some("state".into()));
        match never {
            Err(e @ LaunchError::NotReady { .. }) => {
                assert_eq!(e.to_string(), "x was not ready after 0ns: state")
            }
            other => panic!("{other:?}"),
        }
    }
}
