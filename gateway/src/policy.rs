//! The link-aware precision policy (DESIGN section 6), pure: HOBBIT's token-level rule, and per
//! expert node a saturation detector with hysteresis that moves a downgrade ladder. Time comes in
//! as arguments; nothing here does IO.
//!
//! **Saturation.** Each answered call gives a *wire time*: its round trip minus the queue and
//! compute time the node reports, so what is left is the link and both ends' (de)serialisation.
//! The *baseline* is the smallest wire time of the last [`LadderConfig::baseline_window`] (the
//! link's bare latency), and a call's wire time beyond it is time the link spent carrying (or
//! queueing) its bytes. The link's *busy share* is that excess per second of wall time, a moving
//! average with a time constant of one second: 1 means the gateway always had bytes on the link.
//! A link is *over* when its busy share is above `busy_high` or the node's reported queue time
//! averages (weight 1/4 per call) above `queue_budget`; it is *under* when the busy share is
//! below `busy_low` and the queue below half its budget; in between it holds.
//!
//! **Ladder.** Over for `climb_after` without a break climbs one rung (and again after each further
//! `climb_after`; the first call found over counts from when it was sent, so one call that sat
//! on a backed-up link for longer than `climb_after` climbs at once); under for `descend_after`
//! descends one, unless the busy share scaled to the lower rung's wire bytes would be above
//! `headroom` times `busy_high`: then the link stays where it is rather than flap, until it has
//! been under for `probe_after`, when it descends anyway to learn whether the link got faster (at
//! worst it climbs back `climb_after` later). The rungs, safest first, each keeping the ones
//! below it:
//! 1. int8 activations with a scale per row on the wire, both ways;
//! 2. pairs whose unimportance is above T1 run on the node's low-precision weights;
//! 3. pairs above T2 are skipped (only with `skip` on; off by default).
//!
//! The top expert of each token (unimportance 0) always runs at high precision, and `exact`
//! requests bypass the policy altogether.

use std::time::{Duration, Instant};

/// A node link's downgrade rung.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rung {
    /// f32 activations, every pair at high precision.
    #[default]
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

    /// The rung's name on the command line (`--precision-ladder`): `off` for [`Rung::Full`].
    pub fn flag(self) -> &'static str {
        match self {
            Rung::Full => "off",
            Rung::Int8Wire => "int8-wire",
            Rung::LowWeights => "low-weights",
            Rung::Skip => "skip",
        }
    }

    fn up(self) -> Rung {
        Rung::ALL[(self as usize + 1).min(Rung::ALL.len() - 1)]
    }

    fn down(self) -> Rung {
        Rung::ALL[(self as usize).saturating_sub(1)]
    }

    /// Whether activations travel as int8 (with a scale per row) at this rung.
    pub fn int8_activations(self) -> bool {
        self >= Rung::Int8Wire
    }

    /// Wire bytes relative to [`Rung::Full`]: int8 rows are about a quarter of f32's.
    fn wire_share(self) -> f64 {
        if self.int8_activations() { 0.25 } else { 1.0 }
    }
}

impl std::str::FromStr for Rung {
    type Err = String;

    /// A rung by its flag or metric name (`off` and `full` both name [`Rung::Full`]).
    fn from_str(s: &str) -> Result<Rung, String> {
        Rung::ALL
            .into_iter()
            .find(|r| r.flag() == s || r.name() == s)
            .ok_or_else(|| format!("`{s}`: expected off, int8-wire, low-weights or skip"))
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

/// (token, expert) pairs counted by how they were planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts([u64; 3]);

impl PairCounts {
    pub fn new(high: u64, low: u64, skip: u64) -> PairCounts {
        PairCounts([high, low, skip])
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: PairCounts) {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a += b);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each plan with its count, in [`PairPlan::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (PairPlan, u64)> + '_ {
        PairPlan::ALL.into_iter().map(|plan| (plan, self[plan]))
    }
}

impl std::ops::Index<PairPlan> for PairCounts {
    type Output = u64;

    fn index(&self, plan: PairPlan) -> &u64 {
        match plan {
            PairPlan::High => &self.0[0],
            PairPlan::Low => &self.0[1],
            PairPlan::Skip => &self.0[2],
        }
    }
}

impl std::ops::IndexMut<PairPlan> for PairCounts {
    fn index_mut(&mut self, plan: PairPlan) -> &mut u64 {
        match plan {
            PairPlan::High => &mut self.0[0],
            PairPlan::Low => &mut self.0[1],
            PairPlan::Skip => &mut self.0[2],
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
    /// The defaults for a model routing each token to `top_k` experts: HOBBIT's for top-2 or
    /// fewer; with more experts per token the scores spread over [0, 1) (the k-th expert's is
    /// the mass of the k-1 above it), so 0.9 and 0.98 keep about half of the pairs high.
    pub fn for_top_k(top_k: usize) -> Thresholds {
        if top_k <= 2 {
            Thresholds::default()
        } else {
            Thresholds { t1: 0.9, t2: 0.98 }
        }
    }

    /// `t1` and `t2` where given, [`Thresholds::for_top_k`]'s otherwise, checked.
    pub fn resolve(t1: Option<f32>, t2: Option<f32>, top_k: usize) -> Result<Thresholds, String> {
        let default = Thresholds::for_top_k(top_k);
        Thresholds::new(t1.unwrap_or(default.t1), t2.unwrap_or(default.t2))
    }

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
    pub busy_high: f64,
    pub busy_low: f64,
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
            busy_high: 0.5,
            busy_low: 0.25,
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

/// The busy share's time constant.
const BUSY_TAU: f64 = 1.0;

/// One node link's saturation state and rung.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    rung: Option<Rung>,
    baseline: WindowedMin,
    busy: f64,
    queue: f64,
    last: Option<Instant>,
    over_since: Option<Instant>,
    under_since: Option<Instant>,
    /// Since when the link has been under without a break, or since its last descent.
    calm_since: Option<Instant>,
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

    /// The bare wire time, in seconds, once a call has been seen.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline.get()
    }

    /// The busy share as of the last call.
    pub fn busy(&self) -> f64 {
        self.busy
    }

    /// The busy share as of the last call, decayed to `now`.
    fn busy_at(&self, now: Instant) -> f64 {
        let idle = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.busy * (-idle / BUSY_TAU).exp()
    }

    /// Whether the link has no room for more rows at `now`: it is saturated, or its busy share
    /// (decayed since its last call), scaled to full-width activations, or its node's queue, is
    /// not below the calm level a link descends at. A link at a lower rung only because int8
    /// rows shrank its bytes is crowded by this rule: rows moved onto it would saturate it again.
    pub fn crowded(&self, now: Instant, config: &LadderConfig) -> bool {
        let at_full = self.busy_at(now) / self.rung().wire_share();
        let budget = config.queue_budget.as_secs_f64();
        self.saturated() || at_full >= config.busy_low || self.queue >= budget / 2.0
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
        let excess = (wire - self.baseline().unwrap_or(wire)).max(0.0);
        self.busy = self.busy_at(now) + excess / BUSY_TAU;
        self.last = Some(now);
        self.queue += (sample.queue.as_secs_f64() - self.queue) / 4.0;
        let budget = config.queue_budget.as_secs_f64();
        let over = self.busy > config.busy_high || self.queue > budget;
        let under = self.busy < config.busy_low && self.queue < budget / 2.0;
        if over {
            self.under_since = None;
            // A call that spent its wire time queued says the link was backed up that long.
            let backed_up = now.checked_sub(sample.wire).unwrap_or(now);
            let since = *self.over_since.get_or_insert(backed_up);
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
                let predicted = self.busy * lower.wire_share() / self.rung().wire_share();
                let fits = predicted <= config.headroom * config.busy_high;
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

    /// A call with `wire_us` microseconds on the wire and none queued.
    fn sample(wire_us: u64) -> Sample {
        Sample {
            wire: Duration::from_micros(wire_us),
            queue: Duration::ZERO,
        }
    }

    /// Feeds one call every 10 ms for `count` calls, returning the time after the last.
    fn feed(
        ladder: &mut Ladder,
        mut now: Instant,
        count: usize,
        s: Sample,
        config: &LadderConfig,
    ) -> Instant {
        for _ in 0..count {
            ladder.observe(now, s, config);
            now += 10 * MS;
        }
        now
    }

    /// One second of unloaded calls (1 ms on the wire), from now.
    fn unloaded(ladder: &mut Ladder, config: &LadderConfig) -> Instant {
        feed(ladder, Instant::now(), 100, sample(1000), config)
    }

    /// Calls every 10 ms that each spent 19 ms more than the bare 1 ms on the wire: busy 1.9.
    const SATURATED: u64 = 20_000;

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
        assert_eq!(Thresholds::for_top_k(2), Thresholds::default());
        assert_eq!(Thresholds::for_top_k(8), Thresholds { t1: 0.9, t2: 0.98 });
        let resolved = Thresholds::resolve(Some(0.7), None, 2);
        assert_eq!(resolved, Ok(Thresholds { t1: 0.7, t2: 0.9 }));
        assert!(Thresholds::resolve(Some(0.95), None, 2).is_err());
    }

    #[test]
    fn a_link_is_crowded_until_its_full_width_load_is_calm() {
        let config = LadderConfig {
            top: Rung::Skip,
            ..LadderConfig::default()
        };
        let mut ladder = Ladder::default();
        assert!(
            !ladder.crowded(Instant::now(), &config),
            "no calls yet: room"
        );
        let now = unloaded(&mut ladder, &config);
        assert!(!ladder.crowded(now, &config), "unloaded: room");
        let now = feed(&mut ladder, now, 50, sample(SATURATED), &config);
        assert!(ladder.rung() > Rung::Full);
        assert!(ladder.crowded(now, &config), "saturated");
        // 1.5 ms beyond the bare wire time every 10 ms: busy 0.15, calm at int8 width (the
        // ladder descends to it) but 0.6 at full width.
        let now = feed(&mut ladder, now, 600, sample(2500), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire, "{}", ladder.busy());
        assert!(ladder.busy() < config.busy_low, "{}", ladder.busy());
        assert!(ladder.crowded(now, &config), "{}", ladder.busy());
        // No calls for five seconds: its busy share has decayed, whatever the last call said.
        assert!(!ladder.crowded(now + 5000 * MS, &config));
        let now = feed(&mut ladder, now, 300, sample(1000), &config);
        assert!(
            !ladder.crowded(now, &config),
            "calm again: {}",
            ladder.busy()
        );
    }

    #[test]
    fn rungs_parse_from_their_flags() {
        for rung in Rung::ALL {
            assert_eq!(rung.flag().parse(), Ok(rung));
            assert_eq!(rung.name().parse(), Ok(rung));
        }
        assert!("fastest".parse::<Rung>().is_err());
    }

    #[test]
    fn an_unloaded_link_stays_full() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        unloaded(&mut ladder, &config);
        assert_eq!(ladder.rung(), Rung::Full);
        assert!(!ladder.saturated());
        assert_eq!(ladder.baseline(), Some(0.001));
        assert_eq!(ladder.busy(), 0.0);
    }

    #[test]
    fn the_busy_share_is_the_excess_wire_time_per_second() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        // 3 ms over the bare 1 ms every 10 ms: 0.3 once the average has settled.
        feed(&mut ladder, now, 1000, sample(4000), &config);
        assert!((ladder.busy() - 0.3).abs() < 0.02, "{}", ladder.busy());
    }

    #[test]
    fn the_ladder_climbs_in_order_to_its_top_and_no_further() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let mut now = unloaded(&mut ladder, &config);
        let mut seen = vec![ladder.rung()];
        for _ in 0..200 {
            ladder.observe(now, sample(SATURATED), &config);
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
        feed(&mut ladder, now, 100, sample(SATURATED), &with_skip);
        assert_eq!(ladder.rung(), Rung::Skip);
    }

    #[test]
    fn a_short_spike_does_not_climb_and_the_dead_band_holds() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        // Four slow calls: over for about 100 ms, less than climb_after.
        let now = feed(&mut ladder, now, 4, sample(SATURATED), &config);
        let now = feed(&mut ladder, now, 100, sample(1000), &config);
        assert_eq!(ladder.rung(), Rung::Full);
        let now = feed(&mut ladder, now, 100, sample(SATURATED), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        // Busy 0.35 is neither over (0.5) nor under (0.25): the rung holds.
        feed(&mut ladder, now, 1000, sample(4500), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        assert!(!ladder.saturated());
    }

    #[test]
    fn a_recovered_link_descends_one_rung_per_hold_time() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        let now = feed(&mut ladder, now, 100, sample(SATURATED), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        // Recovered: the busy share (about 1.2 after a second saturated) falls under 0.25 after
        // about 1.6 s, then each rung takes 2 s.
        let now = feed(&mut ladder, now, 300, sample(1000), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        let now = feed(&mut ladder, now, 100, sample(1000), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire);
        let now = feed(&mut ladder, now, 200, sample(1000), &config);
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
        let now = feed(&mut ladder, now, 100, sample(SATURATED), &config);
        assert_eq!(ladder.rung(), Rung::LowWeights);
        // Busy 0.2 at the int8 rung: under, but four times that at f32 is above 0.4. Down to
        // int8 (same bytes), then held there until the probe.
        let now = feed(&mut ladder, now, 800, sample(3000), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire);
        // Load drops to busy 0.05: f32 would be 0.2, which fits.
        let mut lighter = ladder.clone();
        feed(&mut lighter, now, 500, sample(1500), &config);
        assert_eq!(lighter.rung(), Rung::Full);
        // Load stays: after 10 s at the int8 rung, the ladder probes f32 anyway.
        let now = feed(&mut ladder, now, 600, sample(3000), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire);
        feed(&mut ladder, now, 200, sample(3000), &config);
        assert_eq!(ladder.rung(), Rung::Full);
    }

    #[test]
    fn one_call_that_sat_on_the_link_past_climb_after_climbs_at_once() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let now = unloaded(&mut ladder, &config);
        ladder.observe(now, sample(1_000_000), &config);
        assert_eq!(ladder.rung(), Rung::Int8Wire);
        assert!(ladder.saturated());
    }

    #[test]
    fn a_backed_up_node_queue_counts_as_saturation() {
        let config = LadderConfig::default();
        let mut ladder = Ladder::default();
        let busy = Sample {
            queue: 50 * MS,
            ..sample(1000)
        };
        feed(&mut ladder, Instant::now(), 100, busy, &config);
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
        feed(&mut ladder, now, 300, sample(SATURATED), &config);
        assert!(ladder.saturated());
        assert_eq!(ladder.rung(), Rung::Full);
    }
}
