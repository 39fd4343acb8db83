//! Which experts a node serves, as given on the command line until a coordinator assigns them:
//! `all`, or `LAYER:FIRST-LAST` / `LAYER:EXPERT` items separated by commas (`0:0-3,1:4-7,2:5`).

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertSelection {
    All,
    /// (layer, first expert, last expert), inclusive.
    Ranges(Vec<(u32, u32, u32)>),
}

impl ExpertSelection {
    /// The selected (layer, expert) pairs among `moe_layers` with `experts` experts each; an item
    /// naming a layer or expert the model does not have is an error.
    pub fn resolve(&self, moe_layers: &[u32], experts: u32) -> Result<Vec<(u32, u32)>, String> {
        match self {
            ExpertSelection::All => Ok(moe_layers
                .iter()
                .flat_map(|&l| (0..experts).map(move |e| (l, e)))
                .collect()),
            ExpertSelection::Ranges(items) => {
                let mut out = Vec::new();
                for &(layer, first, last) in items {
                    if !moe_layers.contains(&layer) {
                        return Err(format!("layer {layer} is not a MoE layer of this model"));
                    }
                    if last >= experts {
                        return Err(format!(
                            "expert {last} does not exist (the model has {experts} per layer)"
                        ));
                    }
                    out.extend((first..=last).map(|e| (layer, e)));
                }
                out.sort_unstable();
                out.dedup();
                Ok(out)
            }
        }
    }
}

impl FromStr for ExpertSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<ExpertSelection, String> {
        if s.trim() == "all" {
            return Ok(ExpertSelection::All);
        }
        let item = |it: &str| -> Result<(u32, u32, u32), String> {
            let bad = || format!("`{it}` is not LAYER:EXPERT or LAYER:FIRST-LAST");
            let (layer, experts) = it.split_once(':').ok_or_else(bad)?;
            let num = |v: &str| v.trim().parse::<u32>().map_err(|_| bad());
            let (first, last) = match experts.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(experts)?, num(experts)?),
            };
            if first > last {
                return Err(format!("`{it}`: the range is empty"));
            }
            Ok((num(layer)?, first, last))
        };
        s.split(',')
            .map(|it| item(it.trim()))
            .collect::<Result<_, _>>()
            .map(ExpertSelection::Ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let all: ExpertSelection = "all".parse().unwrap();
        assert_eq!(
            all.resolve(&[0, 2], 2).unwrap(),
            vec![(0, 0), (0, 1), (2, 0), (2, 1)]
        );
        let list: ExpertSelection = "0:0-2, 2:1,0:2-3".parse().unwrap();
        assert_eq!(
            list,
            ExpertSelection::Ranges(vec![(0, 0, 2), (2, 1, 1), (0, 2, 3)])
        );
        assert_eq!(
            list.resolve(&[0, 2], 4).unwrap(),
            vec![(0, 0), (0, 1), (0, 2), (0, 3), (2, 1)]
        );
    }

    #[test]
    fn refuses_what_does_not_fit() {
        for bad in ["", "0", "0:", "x:1", "0:3-1", "0:1-x", "0-1:2"] {
            assert!(bad.parse::<ExpertSelection>().is_err(), "{bad:?}");
        }
        let list: ExpertSelection = "1:0".parse().unwrap();
        assert!(list.resolve(&[0], 8).unwrap_err().contains("layer 1"));
        let list: ExpertSelection = "0:7-8".parse().unwrap();
        assert!(list.resolve(&[0], 8).unwrap_err().contains("expert 8"));
    }
}
