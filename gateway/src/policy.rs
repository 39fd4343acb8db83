//! The link-aware precision policy (DESIGN section 6), pure: HOBBIT's token-level rule, and per
//! expert node a saturation detector with hysteresis that moves a downgrade ladder. Time comes in
//! as arguments; nothing here does IO.
//!
//! **Saturation.** Each answered call gives a *wire time*: its round trip minus the queue and
//! compute time the node reports, so what is left is the link and both ends' (de)serialisation.
//! The *baseline* is the smallest wire time of the last [`LadderConfig::baseline_window`] (the
//! unloaded link). A link is *over* when the moving average of its wire times (weight 1/4 per call)
//! is above both `inflation` times the baseline and the baseline plus `min_excess`, or when the
//! node's reported queue time averages above `queue_budget`; it is *under* when the average is
//! below half of both margins and the queue below half its budget; in between it holds.
//!
//! **Ladder.** Over for `climb_after` without a break climbs one rung (and again after each further
//! `climb_after`); under for `descend_after` descends one, unless the bytes per second the node
//! carried in the last second, scaled to the lower rung, would exceed `headroom` times the
//! bytes per second it delivered while over (its measured capacity): then the link stays where it
//! is rather than flap, until it has been under for `probe_after`, when it descends anyway to
//! learn whether the link got faster (at worst it climbs back `climb_after` later). The rungs,
//! safest first, each keeping the ones below it:
//! 1. int8 activations with a scale per row on the wire, both ways;
//! 2. pairs whose unimportance is above T1 run on the node's low-precision weights;
//! 3. pairs above T2 are skipped (only with `skip` on; off by default).
//!
//! The top expert of each token (unimportance 0) always runs at high precision, and `exact`
//! requests bypass the policy altogether.

use std::time::{Duration, Instant};

/// A node link's downgrade rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rung {
    /// f32 activations, every pair at high precision.
    Full = 0,
    /// int8 activations with per-row scales on the wire.
    Int8Wire = 1,
    /// And low-precision weights for pairs above T1.
    LowWeights = 2,
    /// And pairs above T2 skipped.
    Skip = 3,
}

impl Rung {
    pub const ALL: [Rung; 4] = [Rung::Full, Rung::Int8Wire, Rung::LowWeights, Rung::Skip];

    pub fn name(self) -> &'static str {
        match self {
            Rung::Full => "full",
            Rung::Int8Wire => "int8_wire",
            Rung::LowWeights => "low_weights",
            Rung::Skip => "skip",
        }
    }

    fn up(self) -> Rung {
        Rung::ALL[(self as usize + 1).min(Rung::ALL.len() - 1)]
    }

    fn down(self) -> Rung {
        Rung::ALL[(self as usize).saturating_sub(1)]
    }

    /// Wire bytes relative to [`Rung::Full`]: int8 rows are about a quarter of f32's.
    fn wire_share(self) -> f64 {
        if self >= Rung::Int8Wire { 0.25 } else { 1.0 }
    }
}

/// What happens to one (token, expert) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairPlan {
    High,
    Low,
    Skip,
}

impl PairPlan {
    pub const ALL: [PairPlan; 3] = [PairPlan::High, PairPlan::Low, PairPlan::Skip];

    pub fn name(self) -> &'static str {
        match self {
            PairPlan::High => "high",
            PairPlan::Low => "low",
            PairPlan::Skip => "skip",
        }
    }
}

/// HOBBIT's token-level thresholds on the unimportance score (the normalised gate mass of the
/// token's heavier experts): above `t1` low precision, above `t2` skipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub t1: f32,
    pub t2: f32,
}

impl Default for Thresholds {
    /// HOBBIT's values for Mixtral (top-2): 67% high, 30% low, 3% skipped there.
    fn default() -> Thresholds {
        Thresholds { t1: 0.6, t2: 0.9 }
    }
}

impl Thresholds {
    /// Checks `0 <= t1 <= t2 <= 1`.
    pub fn new(t1: f32, t2: f32) -> Result<Thresholds, String> {
        if !(0.0..=1.0).contains(&t1) || !(0.0..=1.0).contains(&t2) || t1 > t2 {
            return Err(format!(
                "precision thresholds must satisfy 0 <= T1 <= T2 <= 1 (got T1 {t1}, T2 {t2})"
            ));
        }
        Ok(Thresholds { t1, t2 })
    }

    /// The plan for a pair of unimportance `score` on a link at `rung`.
    pub fn plan(self, score: f32, rung: Rung) -> PairPlan {
        if score <= 0.0 || rung < Rung::LowWeights || score <= self.t1 {
            PairPlan::High
        } else if rung >= Rung::Skip && score > self.t2 {
            PairPlan::Skip
        } else {
            PairPlan::Low
        }
    }
}

/// The saturation rule's and the ladder's settings (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LadderConfig {
    /// The highest rung: [`Rung::Full`] turns the policy off, [`Rung::Skip`] allows skipping.
    pub top: Rung,
    pub inflation: f64,
    pub min_excess: Duration,
    pub queue_budget: Duration,
    pub climb_after: Duration,
    pub descend_after: Duration,
    pub baseline_window: Duration,
    pub headroom: f64,
    pub probe_after: Duration,
}

impl Default for LadderConfig {
    fn default() -> LadderConfig {
        LadderConfig {
            top: Rung::LowWeights,
            inflation: 3.0,
            min_excess: Duration::from_millis(5),
            queue_budget: Duration::from_millis(20),
            climb_after: Duration::from_millis(200),
            descend_after: Duration::from_secs(2),
            baseline_window: Duration::from_secs(30),
            headroom: 0.8,
            probe_after: Duration::from_secs(10),
        }
    }
}

/// One answered call, as the ladder sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Round trip minus the node's queue and compute time.
    pub wire: Duration,
    /// The node's queue time.
    pub queue: Duration,
    /// Bytes both ways.
    pub bytes: u64,
}

/// The smallest value of a sliding window, kept as the minima of its two halves.
#[derive(Debug, Clone, Default)]
struct WindowedMin {
    current: Option<(Instant, f64)>,
    previous: Option<f64>,
}

impl WindowedMin {
    fn observe(&mut self, now: Instant, value: f64, window: Duration) {
        match self.current {
            Some((start, min)) if now.duration_since(start) < window / 2 => {
                self.current = Some((start, min.min(value)));
            }
            Some((_, min)) => {
                self.previous = Some(min);
                self.current = Some((now, value));
            }
            None => self.current = Some((now, value)),
        }
    }

    fn get(&self) -> Option<f64> {
        let current = self.current.map(|(_, m)| m);
        match (current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Bytes per second over one-second windows: the last full window's rate.
#[derive(Debug, Clone, Default)]
struct Rate {
    start: Option<Instant>,
    bytes: u64,
    last: Option<f64>,
}

impl Rate {
    /// Adds `bytes` at `now`; whether that closed a window.
    fn add(&mut self, now: Instant, bytes: u64) -> bool {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        let closed = elapsed >= Duration::from_secs(1);
        if closed {
            self.last = Some(self.bytes as f64 / elapsed.as_secs_f64());
            self.start = Some(now);
            self.bytes = 0;
        }
        self.bytes += bytes;
        closed
    }
}

/// One node link's saturation state and rung.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    rung: Option<Rung>,
    baseline: WindowedMin,
    wire: Option<f64>,
    queue: f64,
    over_since: Option<Instant>,
    under_since: Option<Instant>,
    /// Since when the link has been under without a break, or since its last descent.
    calm_since: Option<Instant>,
    rate: Rate,
    capacity: Option<f64>,
    /// Since when the link has been at its rung, and the time spent at each rung before that.
    entered: Option<Instant>,
    time_in: [Duration; 4],
}

impl Ladder {
    /// The link's rung now.
    pub fn rung(&self) -> Rung {
        self.rung.unwrap_or(Rung::Full)
    }

    /// Whether the link is over the saturation rule now.
    pub fn saturated(&self) -> bool {
        self.over_since.is_some()
    }

    /// The unloaded wire time, in seconds, once a call has been seen.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline.get()
    }

    /// Bytes per second the link delivered while over the rule, once it has been.
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// Time spent at each rung (by [`Rung`] order) up to `now`.
    pub fn time_in(&self, now: Instant) -> [Duration; 4] {
        let mut t = self.time_in;
        if let Some(entered) = self.entered {
            t[self.rung() as usize] += now.saturating_duration_since(entered);
        }
        t
    }

    fn set(&mut self, now: Instant, rung: Rung) {
        self.time_in = self.time_in(now);
        self.entered = Some(now);
        self.rung = Some(rung);
    }

    /// Takes in an answered call at `now` and moves the rung as the rules say.
    pub fn observe(&mut self, now: Instant, sample: Sample, config: &LadderConfig) {
        if self.entered.is_none() {
            self.set(now, Rung::Full);
        }
        let wire = sample.wire.as_secs_f64();
        self.baseline.observe(now, wire, config.baseline_window);
        let average = self.wire.map_or(wire, |w| w + (wire - w) / 4.0);
        self.wire = Some(average);
        self.queue += (sample.queue.as_secs_f64() - self.queue) / 4.0;
        let measured = self.rate.add(now, sample.bytes);
        let base = self.baseline().unwrap_or(wire);
        let margin = (base * config.inflation).max(base + config.min_excess.as_secs_f64());
        let budget = config.queue_budget.as_secs_f64();
        let over = average > margin || self.queue > budget;
        let under = average < base + (margin - base) / 2.0 && self.queue < budget / 2.0;
        if over {
            self.under_since = None;
            let since = *self.over_since.get_or_insert(now);
            if measured {
                self.capacity = self.rate.last;
            }
            if now.duration_since(since) >= config.climb_after && self.rung() < config.top {
                self.set(now, self.rung().up());
                self.over_since = Some(now);
            }
        } else {
            self.over_since = None;
        }
        if under {
            let calm = *self.calm_since.get_or_insert(now);
            let since = *self.under_since.get_or_insert(now);
            if now.duration_since(since) >= config.descend_after && self.rung() > Rung::Full {
                let lower = self.rung().down();
                let predicted = self
                    .rate
                    .last
                    .map(|r| r * lower.wire_share() / self.rung().wire_share());
                let fits = match (predicted, self.capacity) {
                    (Some(p), Some(c)) => p <= config.headroom * c,
                    _ => true,
                };
                if fits || now.duration_since(calm) >= config.probe_after {
                    self.set(now, lower);
                    self.calm_since = Some(now);
                }
                self.under_since = Some(now);
            }
        } else {
            self.under_since = None;
            self.calm_since = None;
        }
        if self.rung() > config.top {
            self.set(now, config.top);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn sample(wire_ms: u32, bytes: u64) -> Sample {
        Sample {
            wire: wire_ms * MS,
            queue: Duration::ZERO,
            bytes,
        }
    }

    /// Feeds one call every `every` for `count` calls, returning the time after the last.
    fn feed(
        ladder: &mut Ladder,
        mut now: Instant,
        count: usize,
        every: Duration,
        s: Sample,
        config: &LadderConfig,
    ) -> Instant {
        for _ in 0..count {
            ladder.observe(now, s, config);
            now += every;
        }
        now
    }

    /// One second of unloaded calls (1 ms on the wire), from now.
    fn unloaded(ladder: &mut Ladder, config: &LadderConfig) -> Instant {
        feed(
            ladder,
            Instant::now(),
            100,
            10 * MS,
            sample(1, 1000),
            config,
        )
    }

    #[test]
    fn top_experts_stay_high_and_scores_split_at_the_thresholds() {
        let t = Thresholds::default();
        for rung in Rung::ALL {
            assert_eq!(t.plan(0.0, rung), PairPlan::High, "{rung:?}");
        }
        assert_eq!(t.plan(0.95, Rung::Full), PairPlan::High);
        assert_eq!(t.plan(0.95, Rung::Int8Wire), PairPlan::High);
        assert_eq!(t.plan(0.6, Rung::LowWeights), PairPlan::High);
        assert_eq!(t.plan(0.61, Rung::LowWeights), PairPlan::Low);
        assert_eq!(t.plan(0.95, Rung::LowWeights), PairPlan::Low);
        assert_eq!(t.plan(0.9, Rung::Skip), PairPlan::Low);
        assert_eq!(t.plan(0.91, Rung::Skip), PairPlan::Skip);
        assert!(Thresholds::new(0.7, 0.5).is_err());
        assert!(Thresholds::new(-0.1, 0.5).is_err());
        assert!(Thresholds::new(0.5, 1.5).is_err());
        assert_eq!(
            Thresholds::new(0.5, 0.5),
            Ok(Thresholds { t1: 0.5, t2: 0.5 })
        );
    }

    #[test]
    fn an_unloaded_link_stays_full() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = Instant::now();
        feed(&mut ladder, now, 500, 10 * MS, sample(1, 1000), &config);
        assert_eq!(ladder.rung(), Rung::Full);
        assert!(!ladder.saturated());
        assert_eq!(ladder.baseline(), Some(0.001));
    }

    #[test]
    fn the_ladder_climbs_in_order_to_its_top_and_no_further() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let mut now = unloaded(&mut ladder, &config);
        // Inflated 20x: one rung per 200 ms of being over, never past the top (skip is off).
        let mut seen = vec![ladder.rung()];
        for _ in 0..200 {
            ladder.observe(now, sample(20, 1000), &config);
            if *seen.last().unwrap() != ladder.rung() {
                seen.push(ladder.rung());
            }
            now += 10 * MS;
        }
        assert_eq!(seen, [Rung::Full, Rung::Int8Wire, Rung::LowWeights]);
        assert!(ladder.saturated());
        let with_skip = LadderConfig {
            top: Rung::Skip,
            ..config
        };
        feed(&mut ladder, now, 100, 10 * MS, sample(20, 1000), &with_skip);
        assert_eq!(ladder.rung(), Rung::Skip);
    }

    #[test]
    fn a_short_spike_does_not_climb_and_the_dead_band_holds() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        // 100 ms of slow calls keep the average over for about 150 ms: less than climb_after.
        let now = feed(&mut ladder, now, 10, 10 * MS, sample(20, 1000), &config);
        let now = feed(&mut ladder, now, 50, 10 * MS, sample(1, 1000), &config);
        assert_eq!(ladder.rung(), Rung::Full);
        let now = feed(&mut ladder, now, 100, 10 * MS, sample(20, 1000), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        // 4.5 ms is neither over (6 ms) nor under (3.5 ms): the rung holds.
        let banded = Sample {
            wire: Duration::from_micros(4500),
            ..sample(0, 100)
        };
        feed(&mut ladder, now, 1000, 10 * MS, banded, &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        assert!(!ladder.saturated());
    }

    #[test]
    fn a_recovered_link_descends_one_rung_per_hold_time() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        let now = feed(&mut ladder, now, 100, 10 * MS, sample(20, 1000), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        // Recovered, at a tenth of the bytes the link carried while over: the average falls
        // under the rule after about 80 ms, and then each rung takes 2 s.
        let now = feed(&mut ladder, now, 200, 10 * MS, sample(1, 100), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        let now = feed(&mut ladder, now, 30, 10 * MS, sample(1, 100), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire);
        let now = feed(&mut ladder, now, 200, 10 * MS, sample(1, 100), &config);
        assert_eq!(ladder.rung(), Rung::Full);
        let times = ladder.time_in(now);
        assert!(times[..3].iter().all(|t| !t.is_zero()), "{times:?}");
        assert!(times[3].is_zero(), "{times:?}");
    }

    #[test]
    fn the_ladder_stays_up_while_the_lower_rung_would_overrun_the_link() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        // Over for 3 s at 100 kB/s: the measured capacity.
        let now = feed(&mut ladder, now, 300, 10 * MS, sample(20, 1000), &config);
        assert_eq!(ladder.capacity(), Some(100_000.0));
        assert_eq!(ladder.rung(), Rung::LowWeights);
        // Fast again, at the int8 rung's 40 kB/s: back to int8 (same bytes) after 2 s, but f32
        // would be four times that, above 80% of the capacity: held there for the next 8 s.
        let now = feed(&mut ladder, now, 1000, 10 * MS, sample(1, 400), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire);
        // Load drops to 10 kB/s: f32 would carry 40 kB/s, which fits.
        let mut lighter = ladder.clone();
        feed(&mut lighter, now, 150, 10 * MS, sample(1, 100), &config);
        assert_eq!(
            lighter.rung(),
            Rung::Int8Wire,
            "not before the rate window closed"
        );
        feed(
            &mut lighter,
            now + Duration::from_millis(1500),
            100,
            10 * MS,
            sample(1, 100),
            &config,
        );
        assert_eq!(lighter.rung(), Rung::Full);
        // Load stays: after 10 s under at the int8 rung, the ladder probes f32 anyway.
        feed(&mut ladder, now, 300, 10 * MS, sample(1, 400), &config);
        assert_eq!(ladder.rung(), Rung::Full);
    }

    #[test]
    fn a_backed_up_node_queue_counts_as_saturation() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let busy = Sample {
            queue: 50 * MS,
            ..sample(1, 1000)
        };
        feed(&mut ladder, Instant::now(), 100, 10 * MS, busy, &config);
        assert!(ladder.saturated());
        assert_eq!(ladder.rung(), Rung::LowWeights);
    }

    #[test]
    fn top_full_turns_the_policy_off() {
        let config = LadderConfig {
            top: Rung::Full,
            ..LadderConfig::default()
        };
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        feed(&mut ladder, now, 300, 10 * MS, sample(20, 1000), &config);
        assert!(ladder.saturated());
        assert_eq!(ladder.rung(), Rung::Full);
    }
}
