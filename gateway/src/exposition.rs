//! Reading the gateway's `/metrics` (the Prometheus text format) back, for `moe status` and the
//! benchmarks: one parser of samples and labels instead of one per reader. Pure.

use std::collections::BTreeMap;

/// A Prometheus text exposition.
#[derive(Debug, Clone, Copy)]
pub struct Exposition<'a> {
    text: &'a str,
}

/// One sample: its labels (`key="value"` pairs) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub labels: Vec<(&'a str, &'a str)>,
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<'a> Exposition<'a> {
    pub fn new(text: &'a str) -> Exposition<'a> {
        Exposition { text }
    }

    /// Every sample of the series `name` (exactly that name: `name_sum` is another series).
    pub fn samples(&self, name: &str) -> Vec<Sample<'a>> {
        self.text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (labels, value) = match rest.strip_prefix('{') {
                    Some(inner) => {
                        let (labels, value) = inner.rsplit_once("} ")?;
                        (parse_labels(labels)?, value)
                    }
                    None => (Vec::new(), rest.strip_prefix(' ')?),
                };
                let value = value.trim().parse().ok()?;
                Some(Sample { labels, value })
            })
            .collect()
    }

    /// The sample of `name` with no labels but `model_name` (every series has it), 0 when it
    /// is absent.
    pub fn value(&self, name: &str) -> f64 {
        self.samples(name)
            .iter()
            .find(|s| s.labels.iter().all(|(k, _)| *k == "model_name"))
            .map_or(0.0, |s| s.value)
    }

    /// The samples of `name` whose label `key` is `value`, summed (0 when there are none).
    pub fn sum_where(&self, name: &str, key: &str, value: &str) -> f64 {
        self.samples(name)
            .iter()
            .filter(|s| s.label(key) == Some(value))
            .map(|s| s.value)
            .sum()
    }

    /// Every sample of `name`, summed over its label sets.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples(name).iter().map(|s| s.value).sum()
    }

    /// The samples of `name` by their label `key`, keeping those that also carry `filter` (a
    /// label and its value) when one is given.
    pub fn by_label(
        &self,
        name: &str,
        key: &str,
        filter: Option<(&str, &str)>,
    ) -> BTreeMap<&'a str, f64> {
        self.samples(name)
            .iter()
            .filter(|s| filter.is_none_or(|(k, v)| s.label(k) == Some(v)))
            .filter_map(|s| Some((s.label(key)?, s.value)))
            .collect()
    }
}

/// `key="value",...` as pairs; `None` when malformed (a value holding a quote or a comma is not
/// read, as the gateway never writes one).
fn parse_labels(labels: &str) -> Option<Vec<(&str, &str)>> {
    if labels.is_empty() {
        return Some(Vec::new());
    }
    labels
        .split(',')
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            (!value.contains('"')).then_some((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP moe:expert_pairs_total pairs
# TYPE moe:expert_pairs_total counter
moe:expert_pairs_total{node=\"node-0\",precision=\"high\"} 5
moe:expert_pairs_total{node=\"node-0\",precision=\"low\"} 2
moe:expert_pairs_total{node=\"node-1\",precision=\"high\"} 7
moe:expert_node_rtt_seconds_sum{node=\"node-0\"} 0.5
moe:num_requests_running 3
moe:num_requests_running_extra 9
";

    #[test]
    fn samples_are_read_by_exact_name_and_label() {
        let e = Exposition::new(TEXT);
        assert_eq!(e.value("moe:num_requests_running"), 3.0);
        assert_eq!(e.value("moe:absent"), 0.0);
        assert_eq!(e.sum("moe:expert_pairs_total"), 14.0);
        assert_eq!(
            e.sum_where("moe:expert_pairs_total", "precision", "high"),
            12.0
        );
        let high = e.by_label(
            "moe:expert_pairs_total",
            "node",
            Some(("precision", "high")),
        );
        assert_eq!(high, BTreeMap::from([("node-0", 5.0), ("node-1", 7.0)]));
        // `_sum` is its own series, not a sample of `moe:expert_node_rtt_seconds`.
        assert!(e.samples("moe:expert_node_rtt_seconds").is_empty());
        assert_eq!(
            e.by_label("moe:expert_node_rtt_seconds_sum", "node", None),
            BTreeMap::from([("node-0", 0.5)])
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let e =
            Exposition::new("m{node=\"a\"\"} 1\nm{node=a} 2\nm{node=\"b\"} x\nm{node=\"c\"} 4\n");
        assert_eq!(e.by_label("m", "node", None), BTreeMap::from([("c", 4.0)]));
    }
}
