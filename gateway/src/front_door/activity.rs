//! One HTTP connection's traffic as a small state machine, and the deadline each state sets: how
//! long a connection may sit idle, how long a request head may take to arrive, and what to do
//! when either runs out. Pure: it is told the time and the events and never touches a socket
//! (the connection task in [`super::connection`] is its shell).
//!
//! Glossary:
//! * *idle*: no request in flight and no byte of a next one read: since the connection was
//!   accepted, or since its last response ended. Bounded by the idle timeout; when it runs out
//!   the connection is shut down gracefully (HTTP/1: closed at once; HTTP/2: GOAWAY), and
//!   dropped if it is still open and idle [`CLOSE_GRACE`] later.
//! * *head*: bytes of a next HTTP/1 request arrived, its head is not complete yet. Bounded by the
//!   header timeout, from the first byte; when it runs out the connection is dropped (there is
//!   no request to answer). On HTTP/2, frames between requests (window updates, pings) are not a
//!   head: the connection stays idle.
//! * *busy*: requests in flight (from their head until their response body is sent or dropped).
//!   No deadline here: a body that does not arrive is the body timeout's (answered 408 by the
//!   connection's service), and a long response, a stream of tokens, is the point.

use std::time::Duration;

use axum::http::Version;
use tokio::time::Instant;

/// How long an idle connection that was shut down gracefully may take to close before it is
/// dropped (an HTTP/2 peer answers the GOAWAY's ping in a round trip).
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The two connection timeouts the state machine enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request head's first byte to its end.
    pub header: Duration,
    /// From the connection's start or its last response's end to the next request's first byte.
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Busy { requests: usize },
}

/// What the connection task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet: ask again at this time, or after the next event (`None`).
    Wait(Option<Instant>),
    /// The idle timeout ran out: start a graceful shutdown, then ask again.
    CloseGracefully,
    /// A head took too long, or a graceful close did: drop the connection.
    Drop,
}

/// One connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// When an idle connection was shut down gracefully.
    closing_since: Option<Instant>,
    /// Whether the connection speaks HTTP/2, where bytes between requests are not a head.
    multiplexed: bool,
}

impl Activity {
    /// A connection accepted at `now`: idle.
    pub fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Idle,
            since: now,
            closing_since: None,
            multiplexed: false,
        }
    }

    /// Bytes arrived at `now`. Returns whether the deadline changed.
    pub fn bytes_read(&mut self, now: Instant) -> bool {
        if self.phase != Phase::Idle || self.multiplexed {
            return false;
        }
        self.phase = Phase::Head;
        self.since = now;
        true
    }

    /// A request's head was read (the connection's protocol is the request's `version`).
    /// Returns whether the deadline changed.
    pub fn request_started(&mut self, version: Version) -> bool {
        self.multiplexed = version >= Version::HTTP_2;
        self.closing_since = None;
        let requests = match self.phase {
            Phase::Busy { requests } => requests + 1,
            Phase::Idle | Phase::Head => 1,
        };
        let changed = !matches!(self.phase, Phase::Busy { .. });
        self.phase = Phase::Busy { requests };
        changed
    }

    /// A request's response ended (sent or dropped) at `now`. Returns whether the deadline
    /// changed.
    pub fn request_ended(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Busy { requests } if requests > 1 => {
                self.phase = Phase::Busy {
                    requests: requests - 1,
                };
                false
            }
            Phase::Busy { .. } => {
                self.phase = Phase::Idle;
                self.since = now;
                true
            }
            // Unbalanced: nothing was in flight.
            Phase::Idle | Phase::Head => false,
        }
    }

    /// What to do at `now`.
    pub fn verdict(&mut self, now: Instant, timeouts: &Timeouts) -> Verdict {
        match (self.phase, self.closing_since) {
            (Phase::Busy { .. }, _) => Verdict::Wait(None),
            (Phase::Head, _) => expire(now, self.since + timeouts.header, Verdict::Drop),
            (Phase::Idle, Some(closing)) => expire(now, closing + CLOSE_GRACE, Verdict::Drop),
            (Phase::Idle, None) => {
                let verdict = expire(now, self.since + timeouts.idle, Verdict::CloseGracefully);
                if verdict == Verdict::CloseGracefully {
                    self.closing_since = Some(now);
                }
                verdict
            }
        }
    }
}

/// `verdict` once `deadline` has passed, otherwise a wait for it.
fn expire(now: Instant, deadline: Instant, verdict: Verdict) -> Verdict {
    if now >= deadline {
        verdict
    } else {
        Verdict::Wait(Some(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
    };

    fn secs(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn an_idle_connection_closes_gracefully_then_is_dropped_after_the_grace() {
        let start = Instant::now();
        let mut activity = Activity::new(start);
        assert_eq!(
            activity.verdict(secs(start, 29), &TIMEOUTS),
            Verdict::Wait(Some(secs(start, 30)))
        );
        assert_eq!(
            activity.verdict(secs(start, 30), &TIMEOUTS),
            Verdict::CloseGracefully
        );
        let closed = secs(start, 30);
        assert_eq!(
            activity.verdict(closed, &TIMEOUTS),
            Verdict::Wait(Some(closed + CLOSE_GRACE))
        );
        assert_eq!(
            activity.verdict(closed + CLOSE_GRACE, &TIMEOUTS),
            Verdict::Drop
        );
    }

    #[test]
    fn a_head_is_timed_from_its_first_byte_and_dropped() {
        let start = Instant::now();
        let mut activity = Activity::new(start);
        assert!(activity.bytes_read(secs(start, 25)));
        assert!(!activity.bytes_read(secs(start, 26)), "already a head");
        assert_eq!(
            activity.verdict(secs(start, 30), &TIMEOUTS),
            Verdict::Wait(Some(secs(start, 35)))
        );
        assert_eq!(activity.verdict(secs(start, 35), &TIMEOUTS), Verdict::Drop);
    }

    #[test]
    fn requests_in_flight_have_no_deadline_and_the_last_one_ending_restarts_idleness() {
        let start = Instant::now();
        let mut activity = Activity::new(start);
        activity.bytes_read(start);
        assert!(activity.request_started(Version::HTTP_11));
        assert!(
            !activity.bytes_read(secs(start, 1)),
            "body bytes are no head"
        );
        assert_eq!(
            activity.verdict(secs(start, 1000), &TIMEOUTS),
            Verdict::Wait(None)
        );
        assert!(!activity.request_started(Version::HTTP_11));
        assert!(!activity.request_ended(secs(start, 1000)), "one still runs");
        assert!(activity.request_ended(secs(start, 1001)));
        assert_eq!(
            activity.verdict(secs(start, 1001), &TIMEOUTS),
            Verdict::Wait(Some(secs(start, 1031)))
        );
        assert!(!activity.request_ended(secs(start, 1002)), "unbalanced");
    }

    #[test]
    fn a_request_during_the_grace_cancels_the_close() {
        let start = Instant::now();
        let mut activity = Activity::new(start);
        assert_eq!(
            activity.verdict(secs(start, 30), &TIMEOUTS),
            Verdict::CloseGracefully
        );
        activity.request_started(Version::HTTP_2);
        assert!(activity.request_ended(secs(start, 40)));
        assert_eq!(
            activity.verdict(secs(start, 40), &TIMEOUTS),
            Verdict::Wait(Some(secs(start, 70)))
        );
    }

    #[test]
    fn frames_between_http2_requests_are_no_head() {
        let start = Instant::now();
        let mut activity = Activity::new(start);
        activity.request_started(Version::HTTP_2);
        activity.request_ended(secs(start, 1));
        assert!(!activity.bytes_read(secs(start, 2)));
        assert_eq!(
            activity.verdict(secs(start, 2), &TIMEOUTS),
            Verdict::Wait(Some(secs(start, 31)))
        );
    }
}
