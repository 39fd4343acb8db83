//! `moe eval-quality`: what each rung of the link-aware precision ladder costs in quality, in
//! this process, through the same code the cluster runs. The text is cut into windows of
//! `--window` tokens; each window goes through the model teacher-forced, once with the
//! single-process model's own experts at the node's high precision (`exact`, the reference) and
//! once per `--rungs` entry with every MoE layer's routed experts sent as an `auto` request on a
//! link at that rung would send them (the gateway's request: activations at the rung's dtype,
//! each pair's precision by T1/T2, skipped pairs left out), decoded and run by the expert node's
//! own request and work code on every expert at both of its precisions, and the reply decoded
//! back. It reports per rung: held-out perplexity and its change against exact, the mean
//! KL(exact || rung) of the next-token distributions, top-1 agreement, and the split of
//! (token, expert) pairs into high, low and skipped.
//!
//! Prints a table, then one JSON object as the last line. Every rung is applied to every layer
//! call here; in a cluster a link sits at a rung only while it is saturated, so these are the
//! most each rung can cost.
//!
//! With `--gateway ADDR` it scores the text through a running cluster instead: pieces of about
//! `--window` tokens (whole lines) sent as `/v1/completions` with `echo` and `logprobs: 1`, once
//! `exact` and once `auto`, giving the perplexity of each and the top-1 agreement of `auto`
//! with `exact` (the cluster returns only the top alternatives, so no KL there).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moe_expert_node::request::{Ran, layer_work, reply, reply_dtype};
use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::store;
use moe_expert_node::work::{ExpertSet, LayerWork, PrecisionPair};
use moe_gateway::dispatch::whole_layer_request;
use moe_gateway::policy::{PairCounts, PairPlan, Rung, Thresholds};
use moe_gateway::precalculation::{LayerOutputs, PreCalculate, Precalculation, Tally};
use moe_kernels::Pool;
use moe_launch::http::{Request, blocking};
use moe_model::moe::{Route, RoutedExperts};
use moe_model::quality::compare;
use moe_model::{LoadOptions, Logits, Model, ModelError, RoutedError, Tokenizer};
use moe_proto::expert::Timings;
use moe_proto::tensor::{self, Limits, WireDtype};

/// Options of `moe eval-quality`.
#[derive(clap::Args, Debug)]
pub struct EvalQualityArgs {
    /// HuggingFace checkpoint directory.
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// The held-out text (default: `heldout.py` in the checkpoint directory).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokens per window (each window starts a fresh sequence with the model's BOS token).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Tokens to evaluate at most, in whole windows from the start of the text.
    #[arg(long, default_value_t = 8192)]
    tokens: usize,
    /// Comma-separated rungs to measure: off (f32 activations, all high), int8-wire,
    /// low-weights, skip.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off,int8-wire,low-weights,skip"
    )]
    rungs: Vec<Rung>,
    #[command(flatten)]
    thresholds: ThresholdArgs,
    /// The nodes' precision pair, e.g. f16+q4, q8+q2 or mxfp4+q2; `auto` is the checkpoint's
    /// (f16+q4, fp8+q4 for fp8 checkpoints, mxfp4+q2 for MXFP4 ones), as a node serves it.
    #[arg(long, default_value = "auto")]
    precisions: moe_expert_node::config::Precisions,
    /// Kernel threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// DAOP's pre-calculation as the gateway's `--pre-calculate` runs it for `auto` requests
    /// (`off` or `alternate`), applied at every rung.
    #[arg(long, default_value = "off")]
    pre_calculate: PreCalculate,
    /// Score through this running gateway (`host:port`) instead of in process.
    #[arg(long)]
    gateway: Option<String>,
    /// The model's name at the gateway (default: the checkpoint directory's name).
    #[arg(long)]
    served_name: Option<String>,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// HOBBIT's thresholds on the command line.
#[derive(clap::Args, Debug)]
pub struct ThresholdArgs {
    /// HOBBIT's T1: pairs whose unimportance is above it run at low precision (default: the
    /// gateway's for the model's experts per token).
    #[arg(long)]
    t1: Option<f32>,
    /// HOBBIT's T2: pairs whose unimportance is above it are skipped (at the skip rung).
    #[arg(long)]
    t2: Option<f32>,
}

impl ThresholdArgs {
    /// The thresholds given, the rest defaulting as the gateway's do for `model`'s experts per
    /// token; checked.
    pub fn resolve(&self, model: &Path) -> anyhow::Result<Thresholds> {
        let top_k = moe_model::ModelConfig::from_file(&model.join("config.json"))?.top_k;
        Thresholds::resolve(self.t1, self.t2, top_k).map_err(anyhow::Error::msg)
    }
}

/// Every MoE layer's routed experts as one expert node holding all of them would run an `auto`
/// request from a link at `rung`.
struct SimulatedNode<'a> {
    set: &'a ExpertSet,
    pair: PrecisionPair,
    pool: &'a Pool,
    policy: (Rung, Thresholds),
    /// Pairs planned at each precision.
    planned: PairCounts,
}

/// A forward pass's routed experts on a [`SimulatedNode`], with the gateway's pre-calculation.
struct SimulatedExperts<'a> {
    node: SimulatedNode<'a>,
    model: &'a Model,
    precalculation: Precalculation,
}

fn internal(e: &dyn std::fmt::Display) -> ModelError {
    ModelError::RoutedExperts(RoutedError::Internal(e.to_string()))
}

impl SimulatedNode<'_> {
    /// `work` run as the node runs it, its sums through the wire's dtype and back, per token.
    fn execute(
        &self,
        work: &LayerWork,
        dtype: WireDtype,
        tokens: &[usize],
        n: usize,
    ) -> moe_model::Result<Vec<f32>> {
        let hidden = self.set.hidden();
        let sums = self
            .set
            .execute(work, self.pair, self.pool)
            .map_err(|e| internal(&e))?;
        let used = self.set.used(work, self.pair);
        let ran = Ran {
            work,
            out: &sums,
            used: &used,
        };
        let answer = reply(0, ran, None, hidden, dtype, Timings::default())
            .map_err(|s| internal(&s.message()))?;
        let output = answer.output.ok_or_else(|| internal(&"no output"))?;
        let limits = Limits::default();
        let rows = tensor::decode(&output, hidden, &limits).map_err(|e| internal(&e))?;
        let mut out = vec![0.0; n * hidden];
        for (row, &t) in rows.data.chunks_exact(hidden).zip(tokens) {
            out[t * hidden..(t + 1) * hidden].copy_from_slice(row);
        }
        Ok(out)
    }
}

impl SimulatedNode<'_> {
    /// Layer `layer`'s request as the gateway builds it for one node holding every expert (with
    /// the later layer's predicted routes as its ahead work when `later` gives them), run as
    /// the node runs it: its output and the later layer's.
    fn run_layer(
        &mut self,
        layer: usize,
        h: &[f32],
        (routes, later): (&[Route], Option<(usize, &[Route])>),
    ) -> moe_model::Result<LayerOutputs> {
        let (hidden, n) = (self.set.hidden(), routes.len());
        let (req, tokens, planned) =
            whole_layer_request(layer, h, (routes, later), hidden, self.policy);
        self.planned.add(planned);
        if tokens.is_empty() {
            // Every pair was skipped; the later layer then runs on its own.
            return Ok((vec![0.0; n * hidden], None));
        }
        let limits = Limits::default();
        let (work, ahead_work) =
            layer_work(&req, hidden, &limits).map_err(|s| internal(&s.message()))?;
        let dtype = reply_dtype(&req).map_err(|s| internal(&s.message()))?;
        let early = match ahead_work {
            Some(w) => Some(self.execute(&w, dtype, &tokens, n)?),
            None => None,
        };
        Ok((self.execute(&work, dtype, &tokens, n)?, early))
    }
}

impl RoutedExperts for SimulatedExperts<'_> {
    fn run(&mut self, layer: usize, h: &[f32], routes: &[Route]) -> moe_model::Result<Vec<f32>> {
        if let Some((out, _)) = self.precalculation.take(layer, routes) {
            return Ok(out);
        }
        let node = &mut self.node;
        let run = |later: Option<(usize, &[Route])>| node.run_layer(layer, h, (routes, later));
        self.precalculation.run(self.model, (layer, h, routes), run)
    }
}

/// Sums over a rung's windows.
#[derive(Default)]
struct Totals {
    positions: usize,
    nll: f64,
    kl: f64,
    agree: f64,
    planned: PairCounts,
    precalculated: Tally,
}

/// Mean negative log-likelihood of `ids[1..]` under `logits` (`[ids.len(), vocab]`), summed.
fn nll_sum(logits: &[f32], ids: &[u32], vocab: usize) -> f64 {
    logits
        .chunks_exact(vocab)
        .zip(&ids[1..])
        .map(|(row, &next)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            max + sum.ln() - row[next as usize] as f64
        })
        .sum()
}

/// One rung's quality against the exact path.
#[derive(Debug, Clone, Copy)]
pub struct RungQuality {
    pub rung: Rung,
    pub perplexity: f64,
    pub change_percent: f64,
    pub mean_kl: f64,
    pub top1_agreement: f64,
    /// Pairs planned at each precision.
    pub pairs: PairCounts,
    /// The layers answered from a pre-calculation, and how many of their chosen pairs were.
    pub precalculated: Tally,
}

impl RungQuality {
    fn share(&self, plan: PairPlan) -> f64 {
        100.0 * self.pairs[plan] as f64 / self.pairs.total().max(1) as f64
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "rung": self.rung.name(),
            "perplexity": self.perplexity,
            "perplexity_change_percent": self.change_percent,
            "mean_kl": self.mean_kl,
            "top1_agreement": self.top1_agreement,
            "pairs": {
                "high": self.pairs[PairPlan::High],
                "low": self.pairs[PairPlan::Low],
                "skip": self.pairs[PairPlan::Skip],
            },
            "precalculated": {
                "layers": self.precalculated.layers,
                "routed_pairs": self.precalculated.routed,
                "hits": self.precalculated.hits,
                "hit_rate": self.precalculated.hit_rate(),
            },
        })
    }
}

/// What [`measure`] found.
pub struct Quality {
    pub tokens: usize,
    pub windows: usize,
    pub exact_perplexity: f64,
    pub rungs: Vec<RungQuality>,
}

/// What to measure.
pub struct Setup<'a> {
    pub model: &'a Path,
    pub text: &'a Path,
    pub window: usize,
    pub tokens: usize,
    pub thresholds: Thresholds,
    pub pair: PrecisionPair,
    pub threads: usize,
    pub pre_calculate: PreCalculate,
}

/// Runs the windows of `setup.text` exactly and at each of `rungs` (module docs).
pub fn measure(setup: &Setup<'_>, rungs: &[Rung]) -> anyhow::Result<Quality> {
    anyhow::ensure!(setup.window >= 2, "--window must be at least 2");
    let pool = Arc::new(Pool::new(setup.threads)?);
    let options = LoadOptions::with_expert_format(Some(setup.pair.high));
    let model =
        Model::load(setup.model, &options, Arc::clone(&pool)).context("loading the model")?;
    let cfg = model.config().clone();
    let vocab = cfg.vocab_size;
    let text = std::fs::read_to_string(setup.text)
        .with_context(|| format!("reading {}", setup.text.display()))?;
    let ids = Tokenizer::from_dir(setup.model)?.encode(&text)?;
    let bos = cfg.bos_token_id;
    let body = setup.window - usize::from(bos.is_some());
    let windows: Vec<Vec<u32>> = ids
        .chunks_exact(body)
        .take((setup.tokens / setup.window).max(1))
        .map(|c| bos.into_iter().chain(c.iter().copied()).collect())
        .collect();
    anyhow::ensure!(
        !windows.is_empty(),
        "{} has fewer than {} tokens",
        setup.text.display(),
        setup.window
    );

    let shards = tempfile::tempdir()?;
    let every: ExpertSelection = "all".parse().map_err(anyhow::Error::msg)?;
    let (set, _) = store::load(setup.model, shards.path(), &every, setup.pair)
        .context("quantizing the experts as a node does")?;

    let mut exact = Totals::default();
    let mut totals: Vec<Totals> = rungs.iter().map(|_| Totals::default()).collect();
    let started = std::time::Instant::now();
    for (w, window) in windows.iter().enumerate() {
        let reference = model.forward(window, &mut model.new_cache(), Logits::All)?;
        let positions = window.len() - 1;
        let scored = &reference[..positions * vocab];
        exact.nll += nll_sum(scored, window, vocab);
        exact.positions += positions;
        for (&rung, t) in rungs.iter().zip(&mut totals) {
            let node = SimulatedNode {
                set: &set,
                pair: setup.pair,
                pool: &pool,
                policy: (rung, setup.thresholds),
                planned: PairCounts::default(),
            };
            let mut experts = SimulatedExperts {
                node,
                model: &model,
                precalculation: Precalculation::new(setup.pre_calculate, &model),
            };
            let logits =
                model.forward_with(window, &mut model.new_cache(), Logits::All, &mut experts)?;
            let logits = &logits[..positions * vocab];
            let q = compare(scored, logits, vocab);
            t.nll += nll_sum(logits, window, vocab);
            t.kl += q.mean_kl * positions as f64;
            t.agree += q.top1_agreement * positions as f64;
            t.positions += positions;
            t.planned.add(experts.node.planned);
            t.precalculated.add(experts.precalculation.tally);
        }
        eprintln!(
            "window {}/{} ({:.0} s)",
            w + 1,
            windows.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let ppl = |t: &Totals| (t.nll / t.positions as f64).exp();
    let exact_perplexity = ppl(&exact);
    let rungs = rungs
        .iter()
        .zip(&totals)
        .map(|(&rung, t)| RungQuality {
            rung,
            perplexity: ppl(t),
            change_percent: 100.0 * (ppl(t) / exact_perplexity - 1.0),
            mean_kl: t.kl / t.positions as f64,
            top1_agreement: t.agree / t.positions as f64,
            pairs: t.planned,
            precalculated: t.precalculated,
        })
        .collect();
    Ok(Quality {
        tokens: exact.positions,
        windows: windows.len(),
        exact_perplexity,
        rungs,
    })
}

/// One text piece scored by the gateway: each scored token's log-probability, and the most
/// likely token's text there.
struct Scored {
    logprobs: Vec<f64>,
    top: Vec<String>,
}

/// `piece` scored through the gateway at `precision`.
fn score_remote(
    gateway: &str,
    model: &str,
    piece: &str,
    precision: &str,
) -> anyhow::Result<Scored> {
    let body = serde_json::json!({
        "model": model, "prompt": piece, "echo": true, "logprobs": 1, "max_tokens": 1,
        "temperature": 0, "precision": precision,
    });
    let request = Request::post("/v1/completions", body.to_string());
    let reply = blocking::call(gateway, &request, Duration::from_secs(60))?;
    let json: serde_json::Value = serde_json::from_str(&reply.body).context("a JSON body")?;
    let logprobs = &json["choices"][0]["logprobs"];
    anyhow::ensure!(logprobs.is_object(), "the gateway answered {json}");
    let values = logprobs["token_logprobs"]
        .as_array()
        .context("token_logprobs")?;
    let tops = logprobs["top_logprobs"]
        .as_array()
        .context("top_logprobs")?;
    // The prompt's tokens (the first unscored), then the one generated token (left out).
    let scored = 1..values.len().saturating_sub(1);
    Ok(Scored {
        logprobs: scored.clone().filter_map(|i| values[i].as_f64()).collect(),
        top: scored
            .map(|i| {
                tops[i]
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
                    .unwrap_or_default()
            })
            .collect(),
    })
}

/// `text` cut into pieces of about `tokens` tokens, at line ends.
fn pieces(text: &str, tokenizer: &Tokenizer, tokens: usize) -> anyhow::Result<Vec<String>> {
    let mut out = vec![String::new()];
    let mut count = 0;
    for line in text.split_inclusive('\n') {
        let n = tokenizer.encode(line)?.len();
        if count + n > tokens && count > 0 {
            out.push(String::new());
            count = 0;
        }
        out.last_mut().expect("one piece at least").push_str(line);
        count += n;
    }
    Ok(out)
}

/// Held-out text scored through a gateway, `exact` and `auto`.
pub struct RemoteQuality {
    pub tokens: usize,
    pub exact_perplexity: f64,
    pub auto_perplexity: f64,
    /// How often `auto`'s most likely next token is `exact`'s.
    pub top1_agreement: f64,
}

impl RemoteQuality {
    /// `auto`'s perplexity change against `exact`, in percent.
    pub fn change_percent(&self) -> f64 {
        100.0 * (self.auto_perplexity / self.exact_perplexity - 1.0)
    }
}

/// The first `tokens` tokens of `text` (in pieces of about `window` tokens, whole lines)
/// scored through `gateway`, whose model is `model` (served as `served`), `exact` and `auto`.
pub fn score_through(
    gateway: &str,
    (model, served): (&Path, &str),
    text: &Path,
    (window, tokens): (usize, usize),
) -> anyhow::Result<RemoteQuality> {
    let tokenizer = Tokenizer::from_dir(model)?;
    let content =
        std::fs::read_to_string(text).with_context(|| format!("reading {}", text.display()))?;
    let mut all = pieces(&content, &tokenizer, window)?;
    all.truncate((tokens / window).max(1));
    let (mut exact_nll, mut auto_nll, mut positions, mut agree) = (0.0, 0.0, 0usize, 0usize);
    for (i, piece) in all.iter().enumerate() {
        let exact = score_remote(gateway, served, piece, "exact")?;
        let auto = score_remote(gateway, served, piece, "auto")?;
        anyhow::ensure!(
            exact.logprobs.len() == auto.logprobs.len(),
            "piece {i}: the two precisions scored different token counts"
        );
        exact_nll -= exact.logprobs.iter().sum::<f64>();
        auto_nll -= auto.logprobs.iter().sum::<f64>();
        positions += exact.logprobs.len();
        agree += exact
            .top
            .iter()
            .zip(&auto.top)
            .filter(|(a, b)| a == b)
            .count();
        eprintln!("piece {}/{}", i + 1, all.len());
    }
    anyhow::ensure!(positions > 0, "nothing was scored");
    Ok(RemoteQuality {
        tokens: positions,
        exact_perplexity: (exact_nll / positions as f64).exp(),
        auto_perplexity: (auto_nll / positions as f64).exp(),
        top1_agreement: agree as f64 / positions as f64,
    })
}

/// The `--gateway` mode (module docs).
fn run_remote(args: &EvalQualityArgs, gateway: &str, text: &Path) -> anyhow::Result<()> {
    let served = args
        .served_name
        .clone()
        .unwrap_or_else(|| moe_model::config::served_name(&args.model));
    let q = score_through(
        gateway,
        (&args.model, &served),
        text,
        (args.window, args.tokens),
    )?;
    let (exact_ppl, auto_ppl) = (q.exact_perplexity, q.auto_perplexity);
    let (change, agreement, positions) = (q.change_percent(), q.top1_agreement, q.tokens);
    println!("{positions} tokens of {} through {gateway}", text.display());
    println!(
        "{:<8} {:>10} {:>9} {:>8}",
        "request", "perplexity", "change %", "top-1"
    );
    println!("{:<8} {exact_ppl:>10.4} {:>9} {:>8}", "exact", "-", "-");
    println!(
        "{:<8} {auto_ppl:>10.4} {change:>+9.3} {agreement:>8.4}",
        "auto"
    );
    let result = serde_json::json!({
        "gateway": gateway,
        "text": text.display().to_string(),
        "tokens": positions,
        "exact_perplexity": exact_ppl,
        "auto_perplexity": auto_ppl,
        "perplexity_change_percent": change,
        "top1_agreement": agreement,
    });
    crate::report::emit(&result, args.json.as_deref())
}

pub fn run(args: &EvalQualityArgs) -> anyhow::Result<()> {
    let text = args
        .text
        .clone()
        .unwrap_or_else(|| args.model.join("heldout.py"));
    if let Some(gateway) = &args.gateway {
        return run_remote(args, gateway, &text);
    }

    let thresholds = args.thresholds.resolve(&args.model)?;
    let setup = Setup {
        model: &args.model,
        text: &text,
        window: args.window,
        tokens: args.tokens,
        thresholds,
        pair: args.precisions.resolve(&args.model)?,
        threads: args.threads,
        pre_calculate: args.pre_calculate,
    };
    let q = measure(&setup, &args.rungs)?;
    let pair = setup.pair;
    println!(
        "{} tokens of {} in {} windows; T1 {} T2 {}; nodes {}+{}; pre-calculation {}",
        q.tokens,
        text.display(),
        q.windows,
        thresholds.t1,
        thresholds.t2,
        pair.high,
        pair.low,
        setup.pre_calculate.name()
    );
    println!(
        "{:<12} {:>10} {:>9} {:>10} {:>8} {:>7} {:>7} {:>7}",
        "rung", "perplexity", "change %", "mean KL", "top-1", "high %", "low %", "skip %"
    );
    println!(
        "{:<12} {:>10.4} {:>9} {:>10} {:>8}",
        "exact", q.exact_perplexity, "-", "-", "-"
    );
    for r in &q.rungs {
        println!(
            "{:<12} {:>10.4} {:>+9.3} {:>10.2e} {:>8.4} {:>7.1} {:>7.1} {:>7.1}",
            r.rung.name(),
            r.perplexity,
            r.change_percent,
            r.mean_kl,
            r.top1_agreement,
            r.share(PairPlan::High),
            r.share(PairPlan::Low),
            r.share(PairPlan::Skip)
        );
    }
    let result = serde_json::json!({
        "model": args.model.display().to_string(),
        "text": text.display().to_string(),
        "tokens": q.tokens,
        "windows": q.windows,
        "window": args.window,
        "t1": thresholds.t1,
        "t2": thresholds.t2,
        "precisions": format!("{}+{}", pair.high, pair.low),
        "pre_calculate": setup.pre_calculate.name(),
        "exact_perplexity": q.exact_perplexity,
        "rungs": q.rungs.iter().map(RungQuality::json).collect::<Vec<_>>(),
    });
    crate::report::emit(&result, args.json.as_deref())
}
