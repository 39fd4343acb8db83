//! The experts a placement assigned to this node that it could not load: which, why, and whether
//! for lack of room on the RAM disk. Pure bookkeeping: the follower updates it after every load,
//! the node's record, `Info` and health report it, and the retry backoff paces the next attempt.
//!
//! A node whose shard directory filled up remembers it (`no_room`) until it sees room again, even
//! once the coordinator has moved the experts it could not load elsewhere: its record keeps
//! saying so, so it is given no more copies than it holds meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use moe_kernels::Format;
use moe_state::records::LoadFailure;

use crate::store::Failed;

/// Why one expert could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    cause: String,
    no_room: bool,
    formats: BTreeSet<Format>,
}

/// The assigned experts this node could not load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unloadable {
    by_expert: BTreeMap<(u32, u32), Failure>,
    /// The cause of the last failure for lack of room, until room is seen again.
    no_room: Option<String>,
}

impl Unloadable {
    /// After a load: only experts still `assigned` and not `held` stay listed, and `failed` are
    /// added (the first cause of each expert kept).
    pub fn update(
        &mut self,
        assigned: &BTreeSet<(u32, u32)>,
        held: impl Fn((u32, u32)) -> bool,
        failed: &[Failed],
    ) {
        self.by_expert
            .retain(|expert, _| assigned.contains(expert) && !held(*expert));
        for f in failed {
            let expert = (f.key.layer, f.key.expert);
            if !assigned.contains(&expert) {
                continue;
            }
            let failure = self.by_expert.entry(expert).or_insert_with(|| Failure {
                cause: f.cause.clone(),
                no_room: f.no_room,
                formats: BTreeSet::new(),
            });
            failure.formats.insert(f.key.format);
            if f.no_room {
                self.no_room = Some(f.cause.clone());
            }
        }
    }

    /// The shard directory has room again.
    pub fn room_returned(&mut self) {
        self.no_room = None;
    }

    pub fn no_room(&self) -> bool {
        self.no_room.is_some()
    }

    /// Whether there is anything to retry or to watch for.
    pub fn is_empty(&self) -> bool {
        self.by_expert.is_empty() && self.no_room.is_none()
    }

    /// The (layer, expert) pairs listed, in order.
    pub fn experts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.by_expert.keys().copied()
    }

    /// The failures by cause, as the node's record lists them: one entry per (cause, no room),
    /// and one with no experts while the directory is remembered full but nothing assigned
    /// failed.
    pub fn records(&self) -> Vec<LoadFailure> {
        let mut grouped: BTreeMap<(&str, bool), Vec<(u32, u32)>> = BTreeMap::new();
        for (&expert, f) in &self.by_expert {
            grouped
                .entry((f.cause.as_str(), f.no_room))
                .or_default()
                .push(expert);
        }
        let mut records: Vec<LoadFailure> = grouped
            .into_iter()
            .map(|((cause, no_room), experts)| LoadFailure {
                cause: cause.to_string(),
                no_room,
                experts,
            })
            .collect();
        if let Some(cause) = &self.no_room
            && !records.iter().any(|r| r.no_room)
        {
            records.push(LoadFailure {
                cause: cause.clone(),
                no_room: true,
                experts: Vec::new(),
            });
        }
        records
    }

    /// The formats of `expert` that failed, when it is listed.
    pub fn formats(&self, expert: (u32, u32)) -> impl Iterator<Item = Format> + '_ {
        self.by_expert
            .get(&expert)
            .into_iter()
            .flat_map(|f| f.formats.iter().copied())
    }

    /// Why the node should answer NOT_SERVING: it was assigned experts and could load none of
    /// them.
    pub fn not_serving(&self, assigned: usize) -> Option<String> {
        let first = self.by_expert.values().next()?;
        (assigned > 0 && self.by_expert.len() >= assigned).then(|| {
            format!(
                "could load none of the {assigned} experts the placement assigns: {}",
                first.cause
            )
        })
    }
}

/// The wait before the next retry: from 1 s, doubling to 60 s; back to 1 s after progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const LONGEST: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before this attempt; the one after it is twice as long.
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::LONGEST);
        wait
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardKey;

    fn failed(layer: u32, expert: u32, format: Format, cause: &str, no_room: bool) -> Failed {
        Failed {
            key: ShardKey {
                layer,
                expert,
                format,
            },
            cause: cause.into(),
            no_room,
        }
    }

    #[test]
    fn failures_are_grouped_by_cause_and_forgotten_once_held_or_moved() {
        let assigned: BTreeSet<(u32, u32)> = [(0, 1), (0, 2), (1, 3)].into();
        let mut u = Unloadable::default();
        u.update(
            &assigned,
            |_| false,
            &[
                failed(0, 1, Format::F16, "full", true),
                failed(0, 1, Format::Q4, "full", true),
                failed(1, 3, Format::Q4, "full", true),
                failed(0, 2, Format::F16, "bad tensor", false),
                failed(5, 5, Format::F16, "not assigned", false),
            ],
        );
        let records = u.records();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].cause, "bad tensor");
        assert_eq!(
            (records[1].no_room, &records[1].experts),
            (true, &vec![(0, 1), (1, 3)])
        );
        assert_eq!(
            u.formats((0, 1)).collect::<Vec<_>>(),
            [Format::F16, Format::Q4]
        );
        assert!(u.no_room());
        assert!(u.not_serving(3).unwrap().contains("none of the 3"));
        assert_eq!(u.not_serving(4), None);

        // (0, 1) loaded on a retry, (1, 3) moved to another node.
        let assigned: BTreeSet<(u32, u32)> = [(0, 1), (0, 2)].into();
        u.update(&assigned, |e| e == (0, 1), &[]);
        assert_eq!(u.experts().collect::<Vec<_>>(), [(0, 2)]);
        let records = u.records();
        assert_eq!(
            records.len(),
            2,
            "the lack of room is remembered: {records:?}"
        );
        assert!(records[1].no_room && records[1].experts.is_empty());
        u.room_returned();
        u.update(&assigned, |_| true, &[]);
        assert!(u.is_empty() && u.records().is_empty());
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| b.wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.wait(), Duration::from_secs(1));
    }
}
