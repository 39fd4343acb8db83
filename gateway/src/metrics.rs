//! The gateway's metrics in the Prometheus text format, named as vLLM names its own (with the
//! `moe:` prefix) so existing dashboards map over: requests running and waiting, KV cache usage,
//! prompt and generated tokens, finished requests by reason, time to first token, inter-token
//! latency and end-to-end latency as histograms, and the expert calls' retries.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::metric_names as names;
use crate::openai::FinishReason;

/// Upper bounds (seconds) of the latency histograms' buckets: vLLM's short ones, then on to
/// two hours as its request latencies go (a long generation takes minutes).
const BUCKETS: [f64; 24] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0,
    30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
];

/// Upper bounds of the per-request token histograms' buckets, as vLLM's.
const TOKEN_BUCKETS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100000.0,
];

/// A histogram of values, by default durations in seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::over(&BUCKETS)
    }
}

impl Histogram {
    /// A histogram whose buckets end at `bounds`.
    fn over(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    pub(crate) fn observe(&mut self, value: f64) {
        for (bound, n) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        self.render_series(out, name, "");
    }

    /// The buckets, sum and count of one series; `labels` is empty or `key="value",...` to
    /// put before `le`.
    pub(crate) fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// `text` (an exposition) with the label `key="value"` added last to every sample, as vLLM
/// labels every series with `model_name`.
pub fn with_label(text: &str, key: &str, value: &str) -> String {
    let value = value.replace('\\', "\\\\").replace('"', "\\\"");
    let label = format!("{key}=\"{value}\"");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        match line.rsplit_once(' ') {
            Some((series, sample)) if !line.starts_with('#') => match series.strip_suffix('}') {
                Some(labels) => {
                    let _ = writeln!(out, "{labels},{label}}} {sample}");
                }
                None => {
                    let _ = writeln!(out, "{series}{{{label}}} {sample}");
                }
            },
            _ => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

/// The `# HELP` and `# TYPE` lines of a metric family.
pub(crate) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[derive(Debug)]
struct Latencies {
    first_token: Histogram,
    inter_token: Histogram,
    end_to_end: Histogram,
    queue: Histogram,
    prefill: Histogram,
    decode: Histogram,
    prompt_tokens: Histogram,
    generation_tokens: Histogram,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies {
            first_token: Histogram::default(),
            inter_token: Histogram::default(),
            end_to_end: Histogram::default(),
            queue: Histogram::default(),
            prefill: Histogram::default(),
            decode: Histogram::default(),
            prompt_tokens: Histogram::over(&TOKEN_BUCKETS),
            generation_tokens: Histogram::over(&TOKEN_BUCKETS),
        }
    }
}

/// When a request reached each phase: arrival, its first step (the end of its wait in the
/// queue), its first token (the end of its prefill), and its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    pub arrived: Instant,
    pub scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    pub ended: Instant,
}

impl Timeline {
    /// Seconds queued, in prefill and decoding, as far as the request got.
    fn phases(&self) -> [Option<f64>; 3] {
        let between = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
        let scheduled = self.scheduled.unwrap_or(self.ended);
        let first = self.first_token.unwrap_or(self.ended);
        [
            Some(between(self.arrived, scheduled)),
            self.scheduled.map(|s| between(s, first)),
            self.first_token.map(|f| between(f, self.ended)),
        ]
    }
}

/// The engine's counters; cheap to update from the generation thread.
#[derive(Debug, Default)]
pub struct Metrics {
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    finished_stop: AtomicU64,
    finished_length: AtomicU64,
    failed: AtomicU64,
    steps: AtomicU64,
    step_nanos: AtomicU64,
    latencies: Mutex<Latencies>,
}

/// The engine's state at the moment of a scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gauges {
    pub running: usize,
    pub waiting: usize,
    /// Fraction of the KV budget in use, 0 to 1.
    pub kv_usage: f64,
    /// KV blocks held by sequences' caches now (the memory behind `kv_usage`).
    pub kv_blocks_in_use: usize,
    pub preemptions: u64,
    pub expert_retries: u64,
    /// Protobuf bytes of layer requests sent to nodes and replies received.
    pub expert_bytes_sent: u64,
    pub expert_bytes_received: u64,
    /// Time spent waiting for the nodes' experts (network and node compute).
    pub expert_seconds: f64,
}

impl Metrics {
    fn latencies(&self) -> std::sync::MutexGuard<'_, Latencies> {
        self.latencies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A model step over the running batch, `seconds` long (attention, routing and the expert
    /// calls together).
    pub fn step(&self, seconds: f64) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    pub fn prompt(&self, tokens: usize) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// A generated token, `since` seconds after the request arrived (first token) or after the
    /// request's previous token.
    pub fn token(&self, first: bool, since: f64) {
        self.generation_tokens.fetch_add(1, Ordering::Relaxed);
        let mut l = self.latencies();
        if first {
            l.first_token.observe(since);
        } else {
            l.inter_token.observe(since);
        }
    }

    /// A request that ended (`reason` none: it failed), with when it went through each phase
    /// and its prompt and completion tokens. A finished request's phases and tokens go into
    /// their histograms; every request's end-to-end time does.
    pub fn finished(&self, reason: Option<FinishReason>, timeline: &Timeline, tokens: [usize; 2]) {
        let counter = match reason {
            Some(FinishReason::Stop) => &self.finished_stop,
            Some(FinishReason::Length) => &self.finished_length,
            None => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.latencies();
        let l = &mut *guard;
        let total = timeline.ended.saturating_duration_since(timeline.arrived);
        l.end_to_end.observe(total.as_secs_f64());
        if reason.is_none() {
            return;
        }
        let [queue, prefill, decode] = timeline.phases();
        let phases = [&mut l.queue, &mut l.prefill, &mut l.decode];
        for (histogram, seconds) in phases.into_iter().zip([queue, prefill, decode]) {
            if let Some(seconds) = seconds {
                histogram.observe(seconds);
            }
        }
        l.prompt_tokens.observe(tokens[0] as f64);
        l.generation_tokens.observe(tokens[1] as f64);
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            names::NUM_REQUESTS_RUNNING,
            "Requests in the running batch.",
            gauges.running as f64,
        );
        gauge(
            &mut out,
            names::NUM_REQUESTS_WAITING,
            "Requests waiting to start.",
            gauges.waiting as f64,
        );
        gauge(
            &mut out,
            names::KV_CACHE_USAGE_PERC,
            "Fraction of the KV cache budget in use.",
            gauges.kv_usage,
        );
        gauge(
            &mut out,
            names::KV_CACHE_BLOCKS_IN_USE,
            "KV cache blocks held by sequences.",
            gauges.kv_blocks_in_use as f64,
        );
        counter(
            &mut out,
            names::NUM_PREEMPTIONS_TOTAL,
            "Sequences preempted to free KV blocks.",
            gauges.preemptions,
        );
        counter(
            &mut out,
            names::EXPERT_CALL_RETRIES_TOTAL,
            "Expert calls retried on a replica.",
            gauges.expert_retries,
        );
        counter(
            &mut out,
            names::EXPERT_BYTES_SENT_TOTAL,
            "Protobuf bytes of layer requests sent to expert nodes.",
            gauges.expert_bytes_sent,
        );
        counter(
            &mut out,
            names::EXPERT_BYTES_RECEIVED_TOTAL,
            "Protobuf bytes of the expert nodes' replies.",
            gauges.expert_bytes_received,
        );
        let seconds = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        seconds(
            &mut out,
            names::EXPERT_SECONDS_TOTAL,
            "Time waiting for expert nodes (network and their compute).",
            gauges.expert_seconds,
        );
        counter(
            &mut out,
            names::STEPS_TOTAL,
            "Model steps over the running batch.",
            self.steps.load(Ordering::Relaxed),
        );
        seconds(
            &mut out,
            names::STEP_SECONDS_TOTAL,
            "Time in model steps (attention, routing and expert calls).",
            self.step_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
        counter(
            &mut out,
            names::PROMPT_TOKENS_TOTAL,
            "Prompt tokens admitted.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            names::GENERATION_TOKENS_TOTAL,
            "Tokens generated.",
            self.generation_tokens.load(Ordering::Relaxed),
        );
        let success = names::REQUEST_SUCCESS_TOTAL;
        header(
            &mut out,
            success,
            "Requests finished, by reason.",
            "counter",
        );
        let _ = writeln!(
            out,
            "{success}{{finished_reason=\"stop\"}} {}\n{success}{{finished_reason=\"length\"}} {}",
            self.finished_stop.load(Ordering::Relaxed),
            self.finished_length.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            names::REQUEST_FAILURE_TOTAL,
            "Requests that failed.",
            self.failed.load(Ordering::Relaxed),
        );
        let l = self.latencies();
        l.first_token.render(
            &mut out,
            names::TIME_TO_FIRST_TOKEN_SECONDS,
            "Time to the first token.",
        );
        l.inter_token.render(
            &mut out,
            names::INTER_TOKEN_LATENCY_SECONDS,
            "Time between tokens.",
        );
        l.end_to_end.render(
            &mut out,
            names::E2E_REQUEST_LATENCY_SECONDS,
            "Arrival to the last token.",
        );
        let per_request = [
            (
                &l.queue,
                names::REQUEST_QUEUE_TIME_SECONDS,
                "Arrival to the first step.",
            ),
            (
                &l.prefill,
                names::REQUEST_PREFILL_TIME_SECONDS,
                "First step to the first token.",
            ),
            (
                &l.decode,
                names::REQUEST_DECODE_TIME_SECONDS,
                "First token to the last.",
            ),
            (
                &l.prompt_tokens,
                names::REQUEST_PROMPT_TOKENS,
                "Prompt tokens per request.",
            ),
            (
                &l.generation_tokens,
                names::REQUEST_GENERATION_TOKENS,
                "Tokens generated per request.",
            ),
        ];
        for (histogram, name, help) in per_request {
            histogram.render(&mut out, name, help);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_goes_last_on_every_sample_and_nowhere_else() {
        let text = "# HELP a A.\n# TYPE a counter\na 3\nb{node=\"x\"} 1.5\n";
        let labelled = with_label(text, "model_name", "org/m\"1");
        assert_eq!(
            labelled,
            "# HELP a A.\n# TYPE a counter\na{model_name=\"org/m\\\"1\"} 3\n\
             b{node=\"x\",model_name=\"org/m\\\"1\"} 1.5\n"
        );
    }

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let m = Metrics::default();
        m.prompt(5);
        m.token(true, 0.03);
        m.token(false, 0.007);
        m.token(false, 3.0);
        let arrived = Instant::now();
        let after = |s: f64| arrived + std::time::Duration::from_secs_f64(s);
        let timeline = Timeline {
            arrived,
            scheduled: Some(after(0.5)),
            first_token: Some(after(0.7)),
            ended: after(3.2),
        };
        m.finished(Some(FinishReason::Length), &timeline, [5, 3]);
        m.step(0.25);
        let text = m.render(Gauges {
            running: 2,
            waiting: 1,
            kv_usage: 0.25,
            kv_blocks_in_use: 7,
            preemptions: 0,
            expert_retries: 3,
            expert_bytes_sent: 1000,
            expert_bytes_received: 2000,
            expert_seconds: 0.5,
        });
        for line in [
            "moe:num_requests_running 2",
            "moe:num_requests_waiting 1",
            "moe:kv_cache_usage_perc 0.25",
            "moe:kv_cache_blocks_in_use 7",
            "moe:expert_call_retries_total 3",
            "moe:expert_bytes_sent_total 1000",
            "moe:expert_bytes_received_total 2000",
            "moe:expert_seconds_total 0.5",
            "moe:steps_total 1",
            "moe:step_seconds_total 0.25",
            "moe:prompt_tokens_total 5",
            "moe:generation_tokens_total 3",
            "moe:request_success_total{finished_reason=\"length\"} 1",
            "moe:time_to_first_token_seconds_bucket{le=\"0.04\"} 1",
            "moe:time_to_first_token_seconds_bucket{le=\"0.02\"} 0",
            "moe:inter_token_latency_seconds_bucket{le=\"0.01\"} 1",
            "moe:inter_token_latency_seconds_bucket{le=\"5\"} 2",
            "moe:inter_token_latency_seconds_count 2",
            "moe:e2e_request_latency_seconds_bucket{le=\"+Inf\"} 1",
            "moe:e2e_request_latency_seconds_bucket{le=\"2.5\"} 0",
            "moe:e2e_request_latency_seconds_bucket{le=\"7680\"} 1",
            "moe:request_queue_time_seconds_bucket{le=\"0.25\"} 0",
            "moe:request_queue_time_seconds_bucket{le=\"0.5\"} 1",
            "moe:request_prefill_time_seconds_bucket{le=\"0.25\"} 1",
            "moe:request_decode_time_seconds_bucket{le=\"2.5\"} 1",
            "moe:request_prompt_tokens_bucket{le=\"5\"} 1",
            "moe:request_prompt_tokens_bucket{le=\"2\"} 0",
            "moe:request_generation_tokens_sum 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
