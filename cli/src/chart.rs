//! Charts as standalone SVG documents, drawn from numbers alone: lines over a numeric x axis
//! and grouped bars over named categories, with axes, ticks, a title and a legend. Pure string
//! building, so the benchmarks' pictures need no plotting library.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// One named series of points or bar heights.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<(f64, f64)>,
}

/// Text safe inside SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About five round tick values from 0 to at least `max`.
fn ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

fn label(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() < 0.1 {
        format!("{v:.3}").trim_end_matches('0').to_string()
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

/// The frame every chart shares: title, y axis with ticks and grid lines, axis titles, legend.
fn frame(
    out: &mut String,
    title: &str,
    x_title: &str,
    y_title: &str,
    y_ticks: &[f64],
    names: &[&str],
) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    // About 0.55 em per character: shrink a long title to the width.
    let size = (WIDTH - 20.0) / (0.55 * title.chars().count().max(1) as f64);
    let _ = write!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="{:.1}">{}</text>"#,
        WIDTH / 2.0,
        size.min(15.0),
        escape(title)
    );
    let y_max = *y_ticks.last().unwrap_or(&1.0);
    for &t in y_ticks {
        let y = y_of(t, y_max);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="black"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 15.0,
        escape(x_title)
    );
    let _ = write!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(y_title)
    );
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let x = WIDTH - RIGHT + 15.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y - 10.0,
            COLORS[i % COLORS.len()],
            x + 18.0,
            y,
            escape(name)
        );
    }
}

fn y_of(v: f64, y_max: f64) -> f64 {
    HEIGHT - BOTTOM - (v / y_max) * (HEIGHT - BOTTOM - TOP)
}

/// Lines over a numeric x axis, one per series, with a dot at every point; `log2_x` spaces the
/// x values by their base-2 logarithm (concurrency 1, 4, 16, 64 evenly).
pub fn lines(title: &str, x_title: &str, y_title: &str, series: &[Series], log2_x: bool) -> String {
    let xs = |x: f64| if log2_x { x.max(1.0).log2() } else { x };
    let points = series.iter().flat_map(|s| &s.values);
    let x_max = points
        .clone()
        .map(|&(x, _)| xs(x))
        .fold(0.0, f64::max)
        .max(1e-9);
    let x_min = points
        .clone()
        .map(|&(x, _)| xs(x))
        .fold(f64::INFINITY, f64::min)
        .min(x_max);
    let y_ticks = ticks(points.map(|&(_, y)| y).fold(0.0, f64::max));
    let y_max = *y_ticks.last().unwrap_or(&1.0);
    let x_of = |x: f64| {
        let span = (x_max - x_min).max(1e-9);
        LEFT + 20.0 + (xs(x) - x_min) / span * (WIDTH - RIGHT - LEFT - 40.0)
    };
    let mut out = String::new();
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    frame(&mut out, title, x_title, y_title, &y_ticks, &names);
    let mut x_labels: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| v.0))
        .collect();
    x_labels.sort_by(f64::total_cmp);
    x_labels.dedup();
    for x in x_labels {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(x),
            HEIGHT - BOTTOM + 18.0,
            label(x)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .values
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y, y_max)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(x, y) in &s.values {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                x_of(x),
                y_of(y, y_max)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Grouped bars: for each category (x axis), one bar per series; a series' value for category
/// `i` is its point whose x is `i`.
pub fn bars(title: &str, y_title: &str, categories: &[String], series: &[Series]) -> String {
    let y_ticks = ticks(
        series
            .iter()
            .flat_map(|s| s.values.iter().map(|v| v.1))
            .fold(0.0, f64::max),
    );
    let y_max = *y_ticks.last().unwrap_or(&1.0);
    let mut out = String::new();
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    frame(&mut out, title, "", y_title, &y_ticks, &names);
    let slot = (WIDTH - RIGHT - LEFT) / categories.len().max(1) as f64;
    let bar = slot * 0.8 / series.len().max(1) as f64;
    for (c, name) in categories.iter().enumerate() {
        let x0 = LEFT + slot * c as f64 + slot * 0.1;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + slot * 0.4,
            HEIGHT - BOTTOM + 18.0,
            escape(name)
        );
        for (i, s) in series.iter().enumerate() {
            let Some(&(_, v)) = s.values.iter().find(|(x, _)| *x as usize == c) else {
                continue;
            };
            let y = y_of(v, y_max);
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                x0 + bar * i as f64,
                bar * 0.95,
                HEIGHT - BOTTOM - y,
                COLORS[i % COLORS.len()],
                escape(&s.name),
                label((v * 100.0).round() / 100.0)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(168.0), [0.0, 50.0, 100.0, 150.0, 200.0]);
        assert_eq!(ticks(0.9), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(0.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
    }

    #[test]
    fn a_line_chart_has_a_point_per_value_and_escaped_text() {
        let series = [
            Series {
                name: "cluster".into(),
                values: vec![(1.0, 37.7), (4.0, 62.9), (16.0, 118.5)],
            },
            Series {
                name: "a<b".into(),
                values: vec![(1.0, 10.0)],
            },
        ];
        let svg = lines("tok/s & streams", "streams", "tok/s", &series, true);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("tok/s &amp; streams") && svg.contains("a&lt;b"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn bars_are_grouped_by_category_and_as_high_as_their_value() {
        let categories = vec!["f16".to_string(), "q4".to_string()];
        let series = [
            Series {
                name: "decode".into(),
                values: vec![(0.0, 50.0), (1.0, 100.0)],
            },
            Series {
                name: "bound".into(),
                values: vec![(0.0, 80.0), (1.0, 200.0)],
            },
        ];
        let svg = bars("decode", "tok/s", &categories, &series);
        assert_eq!(
            svg.matches("<rect x=").count(),
            4 + 2,
            "4 bars and 2 legend keys"
        );
        let height = |v: &str| -> f64 {
            let at = svg.find(&format!("<title>{v}</title>")).unwrap();
            let rect = &svg[svg[..at].rfind("<rect").unwrap()..at];
            rect.split("height=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((height("bound: 200") / height("decode: 100") - 2.0).abs() < 1e-6);
    }
}
