//! The tokens routed to each (layer, expert): since the coordinator last took them (the
//! gateway's popularity report) and since start (exported on `/metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use moe_state::records::ExpertCount;

use super::pairs::Pair;
use crate::metric_names as names;
use crate::metrics::header;

#[derive(Debug, Default)]
pub(super) struct Popularity {
    /// Since the counts were last taken.
    routed: Mutex<BTreeMap<(u32, u32), u64>>,
    /// Since start.
    total: Mutex<BTreeMap<(u32, u32), u64>>,
}

impl Popularity {
    /// Counts the pairs of each expert of `layer`.
    pub(super) fn record(&self, layer: usize, pairs: &BTreeMap<usize, Vec<Pair>>) {
        for counts in [&self.routed, &self.total] {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            for (&expert, pairs) in pairs {
                *counts.entry((layer as u32, expert as u32)).or_default() += pairs.len() as u64;
            }
        }
    }

    /// The counts since the last call.
    pub(super) fn take(&self) -> Vec<ExpertCount> {
        let mut routed = self.routed.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *routed)
            .into_iter()
            .map(|((layer, expert), tokens)| ExpertCount {
                layer,
                expert,
                tokens,
            })
            .collect()
    }

    /// The counts since start as a Prometheus counter per (layer, expert).
    pub(super) fn render(&self, out: &mut String) {
        let routed = names::EXPERT_ROUTED_TOKENS_TOTAL;
        header(
            out,
            routed,
            "Tokens routed to each expert since start.",
            "counter",
        );
        let total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        for ((layer, expert), tokens) in total.iter() {
            let _ = writeln!(
                out,
                "{routed}{{layer=\"{layer}\",expert=\"{expert}\"}} {tokens}"
            );
        }
    }
}
