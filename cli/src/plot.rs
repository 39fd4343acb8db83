//! `moe plot`: the benchmarks' JSON results as SVG charts. Each input file is recognised by its
//! fields: `bench-cluster` (throughput and latencies against concurrency), `bench-decode`
//! (decode speed against the memory bound, one file per weight format), `bench-gpu` (weight
//! bandwidth per format and tokens per expert), `bench-kernels` (mat-vec bandwidth per
//! format), `bench-precision` (throughput against quality per ladder setting), `bench-overload`
//! (served and refused per phase), `bench-latency` (single-stream decode against link latency
//! per pre-calculation setting) and `eval-quality` (what each precision rung costs). Prints the
//! files it wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::chart::{Series, bars, lines};

/// Options of `moe plot`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Directory to write the SVG files into (created if absent).
    #[arg(long)]
    out: PathBuf,
    /// JSON results of bench-cluster, bench-decode, bench-gpu or bench-kernels (`--json FILE`).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn number(v: &Value, key: &str) -> anyhow::Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("`{key}` is missing or not a number"))
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// (file name, SVG) of a bench-cluster result.
fn cluster(v: &Value) -> anyhow::Result<Vec<(String, String)>> {
    let rows = v["concurrency"].as_array().context("`concurrency`")?;
    let mut tps = Vec::new();
    let (mut ttft, mut itl50, mut itl99) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let streams = number(r, "streams")?;
        tps.push((streams, number(r, "tokens_per_second")?));
        ttft.push((streams, number(r, "ttft_p50_s")? * 1e3));
        itl50.push((streams, number(r, "itl_p50_s")? * 1e3));
        itl99.push((streams, number(r, "itl_p99_s")? * 1e3));
    }
    let distribution = |key: &str| -> Vec<Series> {
        rows.iter()
            .filter_map(|r| {
                let points = r[key].as_array()?;
                let values = points
                    .iter()
                    .filter_map(|q| Some((q[1].as_f64()? * 1e3, q[0].as_f64()?)))
                    .collect();
                let streams = text(r, "streams");
                let noun = if streams == "1" { "stream" } else { "streams" };
                Some(Series {
                    name: format!("{streams} {noun}"),
                    values,
                })
            })
            .collect()
    };
    let single = number(v, "single_process_decode_tps")?;
    let title = format!("{}: {} expert nodes", text(v, "model"), text(v, "nodes"));
    let throughput = lines(
        &format!("{title}, aggregate throughput"),
        "concurrent streams",
        "generated tokens/s",
        &[
            Series {
                name: "cluster".into(),
                values: tps,
            },
            Series {
                name: "single process, 1 stream".into(),
                values: vec![(1.0, single)],
            },
        ],
        true,
    );
    let latency = lines(
        &format!("{title}, latency"),
        "concurrent streams",
        "milliseconds",
        &[
            Series {
                name: "TTFT p50".into(),
                values: ttft,
            },
            Series {
                name: "inter-token p50".into(),
                values: itl50,
            },
            Series {
                name: "inter-token p99".into(),
                values: itl99,
            },
        ],
        true,
    );
    let mut charts = vec![
        ("cluster-throughput.svg".to_string(), throughput),
        ("cluster-latency.svg".to_string(), latency),
    ];
    // The distributions, as cumulative fractions, where the result has them.
    for (key, file, what) in [
        (
            "ttft_quantiles_s",
            "cluster-ttft-cdf.svg",
            "time to first token",
        ),
        (
            "itl_quantiles_s",
            "cluster-itl-cdf.svg",
            "inter-token latency",
        ),
    ] {
        let series = distribution(key);
        if !series.is_empty() {
            let chart = lines(
                &format!("{title}, {what}: fraction of tokens at or below"),
                "milliseconds",
                "fraction",
                &series,
                false,
            );
            charts.push((file.to_string(), chart));
        }
    }
    Ok(charts)
}

/// What each precision rung costs, from an eval-quality result: perplexity change and top-1
/// disagreement with the exact path, in percent.
fn quality(v: &Value) -> anyhow::Result<(String, String)> {
    let rows = v["rungs"].as_array().context("`rungs`")?;
    let mut categories = Vec::new();
    let (mut change, mut disagree) = (Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        categories.push(text(r, "rung"));
        change.push((i as f64, number(r, "perplexity_change_percent")?));
        disagree.push((i as f64, 100.0 * (1.0 - number(r, "top1_agreement")?)));
    }
    let title = format!(
        "{}: each rung on every call, {} held-out tokens (exact perplexity {:.2})",
        text(v, "model"),
        text(v, "tokens"),
        number(v, "exact_perplexity")?
    );
    let series = [
        Series {
            name: "perplexity change".into(),
            values: change,
        },
        Series {
            name: "top-1 disagreement".into(),
            values: disagree,
        },
    ];
    Ok((
        "eval-quality.svg".into(),
        bars(&title, "% against exact", &categories, &series),
    ))
}

/// Requests offered, served and refused per second in each phase of a bench-overload result.
fn overload(v: &Value) -> anyhow::Result<(String, String)> {
    let rows = v["phases"].as_array().context("`phases`")?;
    let mut categories = Vec::new();
    let (mut offered, mut served, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let seconds = number(v, "seconds_per_phase")?;
    for (i, r) in rows.iter().enumerate() {
        categories.push(text(r, "phase"));
        offered.push((i as f64, number(r, "offered_per_second")?));
        served.push((i as f64, number(r, "served_per_second")?));
        refused.push((i as f64, number(r, "refused")? / seconds));
    }
    let title = format!(
        "{}: --max-running {} --max-waiting {}, offered, served and refused (503) per second",
        text(v, "model"),
        text(v, "max_running"),
        text(v, "max_waiting")
    );
    let series = [
        ("offered", offered),
        ("served", served),
        ("refused", refused),
    ]
    .map(|(name, values)| Series {
        name: name.into(),
        values,
    });
    Ok((
        "overload.svg".into(),
        bars(&title, "requests per second", &categories, &series),
    ))
}

/// Decode speed against the bound, one category per bench-decode result.
fn decode(results: &[&Value]) -> anyhow::Result<(String, String)> {
    let mut categories = Vec::new();
    let (mut speed, mut bound) = (Vec::new(), Vec::new());
    for (i, v) in results.iter().enumerate() {
        categories.push(format!(
            "{} / {}",
            text(v, "expert_precision"),
            text(v, "dense_precision")
        ));
        speed.push((i as f64, number(v, "decode_tokens_per_second")?));
        bound.push((i as f64, number(v, "decode_bound_tokens_per_second")?));
    }
    let svg = bars(
        "decode tok/s against the memory-bandwidth bound (experts / dense)",
        "tokens/s",
        &categories,
        &[
            Series {
                name: "decode".into(),
                values: speed,
            },
            Series {
                name: "bound".into(),
                values: bound,
            },
        ],
    );
    Ok(("decode-vs-bound.svg".into(), svg))
}

/// Bars grouped by category: `(category, series, value)` rows, categories and series in the
/// order they first appear.
fn grouped(rows: impl IntoIterator<Item = (String, String, f64)>) -> (Vec<String>, Vec<Series>) {
    let mut categories: Vec<String> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for (category, name, value) in rows {
        let c = match categories.iter().position(|f| *f == category) {
            Some(c) => c,
            None => {
                categories.push(category);
                categories.len() - 1
            }
        };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.values.push((c as f64, value)),
            None => series.push(Series {
                name,
                values: vec![(c as f64, value)],
            }),
        }
    }
    (categories, series)
}

/// Weight bandwidth per format, one series per tokens-per-expert, from a bench-gpu result.
fn gpu(v: &Value) -> anyhow::Result<(String, String)> {
    let rows = v["results"].as_array().context("`results`")?;
    let rows = rows
        .iter()
        .map(|r| {
            let name = format!("{} per expert", text(r, "tokens_per_expert"));
            Ok((text(r, "format"), name, number(r, "gpu_weight_gbps")?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (categories, series) = grouped(rows);
    let title = format!(
        "{}: expert weights read per second, by tokens per expert (copy bandwidth {:.0} GB/s)",
        text(v, "gpu"),
        number(v, "copy_bandwidth_gbps")?
    );
    Ok((
        "gpu-experts.svg".into(),
        bars(&title, "GB/s", &categories, &series),
    ))
}

/// Mat-vec bandwidth per format and shape at n = 1, from a bench-kernels result.
fn kernels(v: &Value) -> anyhow::Result<(String, String)> {
    let rows = v["results"].as_array().context("`results`")?;
    let rows = rows
        .iter()
        .filter(|r| r["n"].as_u64() == Some(1))
        .map(|r| {
            let shape = r["shape"].as_array().context("`shape`")?;
            let name = format!("{}x{}", shape[0], shape[1]);
            Ok((text(r, "format"), name, number(r, "gbps")?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (categories, series) = grouped(rows);
    let title = format!(
        "CPU mat-vec, n = 1 (read bandwidth {:.1} GB/s, {} threads)",
        number(v, "bandwidth_gbps")?,
        text(v, "threads")
    );
    Ok((
        "kernels.svg".into(),
        bars(&title, "GB/s", &categories, &series),
    ))
}

/// Throughput against perplexity change per ladder setting, from a bench-precision result
/// (`<stem>-frontier.svg` for `<stem>.json`, so that several runs keep their charts).
fn precision(path: &Path, v: &Value) -> anyhow::Result<(String, String)> {
    let rows = v["settings"].as_array().context("`settings`")?;
    let series = rows
        .iter()
        .map(|r| {
            let change = number(&r["quality"], "perplexity_change_percent")?;
            Ok(Series {
                name: format!("ladder {}", text(r, "ladder")),
                values: vec![(change, number(r, "tokens_per_second")?)],
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let title = format!(
        "{}: {} nodes behind {} links, {} streams, T1 {:.2} T2 {:.2}: throughput against quality",
        text(v, "model"),
        text(v, "nodes"),
        text(v, "link_rate"),
        text(v, "streams"),
        number(v, "t1")?,
        number(v, "t2")?
    );
    let stem = path
        .file_stem()
        .map_or("precision".into(), |s| s.to_string_lossy());
    Ok((
        format!("{stem}-frontier.svg"),
        lines(
            &title,
            "held-out perplexity change, % (the ladder's top rung on every call)",
            "generated tokens/s",
            &series,
            false,
        ),
    ))
}

/// Single-stream decode speed against the link's latency, one line per pre-calculation setting,
/// from a bench-latency result.
fn latency(v: &Value) -> anyhow::Result<(String, String)> {
    let rows = v["runs"].as_array().context("`runs`")?;
    let mut series: Vec<Series> = Vec::new();
    for r in rows {
        let name = format!("pre-calculate {}", text(r, "setting"));
        let point = (number(r, "latency_ms")?, number(r, "decode_tps_median")?);
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.values.push(point),
            None => series.push(Series {
                name,
                values: vec![point],
            }),
        }
    }
    let title = format!(
        "{}: {} nodes, single-stream decode against link latency",
        text(v, "model"),
        text(v, "nodes")
    );
    Ok((
        "latency.svg".into(),
        lines(
            &title,
            "added latency each way, ms",
            "decode tokens/s",
            &series,
            false,
        ),
    ))
}

/// The charts for `inputs`: (file name, SVG).
pub fn charts(inputs: &[(PathBuf, Value)]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut decodes = Vec::new();
    for (path, v) in inputs {
        let what = || format!("{}", path.display());
        if v.get("concurrency").is_some() {
            out.extend(cluster(v).with_context(what)?);
        } else if v.get("decode_bound_tokens_per_second").is_some() {
            decodes.push(v);
        } else if v.get("copy_bandwidth_gbps").is_some() {
            out.push(gpu(v).with_context(what)?);
        } else if v.get("isa").is_some() {
            out.push(kernels(v).with_context(what)?);
        } else if v.get("settings").is_some() {
            out.push(precision(path, v).with_context(what)?);
        } else if v.get("rungs").is_some() {
            out.push(quality(v).with_context(what)?);
        } else if v.get("phases").is_some() {
            out.push(overload(v).with_context(what)?);
        } else if v.get("runs").is_some() {
            out.push(latency(v).with_context(what)?);
        } else {
            bail!(
                "{}: not a result of bench-cluster, bench-decode, bench-gpu, bench-kernels, \
                 bench-precision, bench-overload, bench-latency or eval-quality",
                path.display()
            );
        }
    }
    if !decodes.is_empty() {
        out.push(decode(&decodes)?);
    }
    Ok(out)
}

pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let inputs = args
        .inputs
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let v: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            Ok((p.clone(), v))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, svg) in charts(&inputs)? {
        let path: PathBuf = Path::new(&args.out).join(name);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_result_gets_its_charts() {
        let cluster = serde_json::json!({
            "model": "m", "nodes": 2, "single_process_decode_tps": 60.0,
            "concurrency": [
                {"streams": 1, "tokens_per_second": 40.0, "ttft_p50_s": 0.2, "itl_p50_s": 0.02, "itl_p99_s": 0.03,
                 "ttft_quantiles_s": [[0.0, 0.1], [1.0, 0.3]], "itl_quantiles_s": [[0.0, 0.01], [1.0, 0.05]]},
                {"streams": 4, "tokens_per_second": 60.0, "ttft_p50_s": 0.3, "itl_p50_s": 0.05, "itl_p99_s": 0.1}
            ]
        });
        let decode = |p: &str, speed: f64| {
            serde_json::json!({
                "expert_precision": p, "dense_precision": "stored",
                "decode_tokens_per_second": speed, "decode_bound_tokens_per_second": 2.0 * speed
            })
        };
        let setting = |ladder: &str, tps: f64, change: f64| {
            serde_json::json!({"ladder": ladder, "tokens_per_second": tps,
                "quality": {"perplexity_change_percent": change}})
        };
        let study = serde_json::json!({
            "model": "m", "nodes": 2, "link_rate": "4mbit", "streams": 16, "t1": 0.6, "t2": 0.9,
            "settings": [setting("off", 20.0, 0.0), setting("int8-wire", 50.0, 0.1)]
        });
        let eval = serde_json::json!({
            "model": "m", "tokens": 100, "exact_perplexity": 20.0,
            "rungs": [{"rung": "int8_wire", "perplexity_change_percent": 0.02, "top1_agreement": 0.99}]
        });
        let overloaded = serde_json::json!({
            "model": "m", "max_running": 8, "max_waiting": 16, "seconds_per_phase": 10.0,
            "phases": [{"phase": "overload", "offered_per_second": 80.0, "served_per_second": 20.0, "refused": 600}]
        });
        let run = |latency: f64, setting: &str, tps: f64| serde_json::json!({"latency_ms": latency, "setting": setting, "decode_tps_median": tps});
        let latencies = serde_json::json!({
            "model": "m", "nodes": 2,
            "runs": [run(0.0, "off", 200.0), run(0.0, "alternate", 210.0), run(2.0, "off", 40.0),
                     run(2.0, "alternate", 70.0)]
        });
        let inputs = vec![
            (PathBuf::from("l.json"), latencies),
            (PathBuf::from("o.json"), overloaded),
            (PathBuf::from("e.json"), eval),
            (PathBuf::from("c.json"), cluster),
            (PathBuf::from("f16.json"), decode("f16", 60.0)),
            (PathBuf::from("q4.json"), decode("q4", 150.0)),
            (PathBuf::from("precision.json"), study),
        ];
        let drawn = charts(&inputs).unwrap();
        let names: Vec<&str> = drawn.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "latency.svg",
                "overload.svg",
                "eval-quality.svg",
                "cluster-throughput.svg",
                "cluster-latency.svg",
                "cluster-ttft-cdf.svg",
                "cluster-itl-cdf.svg",
                "precision-frontier.svg",
                "decode-vs-bound.svg"
            ]
        );
        assert!(
            drawn[0].1.contains("pre-calculate alternate"),
            "{}",
            drawn[0].1
        );
        assert!(drawn[7].1.contains("ladder int8-wire"), "{}", drawn[7].1);
        assert!(drawn[6].1.contains(">1 stream<"), "{}", drawn[6].1);
        let other = vec![(PathBuf::from("x.json"), serde_json::json!({"a": 1}))];
        let refused = charts(&other).unwrap_err().to_string();
        assert!(refused.contains("x.json: not a result"), "{refused}");
    }
}
