//! Loading a node's experts through the shard directory: the first start quantizes from the
//! checkpoint and writes shards, the next maps them, and a damaged shard is rebuilt, never served.

mod common;

use common::fixture;
use std::sync::Arc;

use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::store::load;
use moe_expert_node::{PrecisionPair, ShardKey};
use moe_kernels::{Format, Pool};
use moe_model::{LoadOptions, Model};

const PAIR: PrecisionPair = PrecisionPair {
    high: Format::F16,
    low: Format::Q4,
};

#[test]
fn first_start_builds_then_later_starts_map_and_damage_is_rebuilt() {
    let shards = tempfile::tempdir().unwrap();
    let all = ExpertSelection::All;
    let (set, first) = load(&fixture(), shards.path(), &all, PAIR).unwrap();
    // Mixtral fixture: 2 MoE layers x 8 experts x 2 formats.
    assert_eq!((first.built, first.mapped, set.len()), (32, 0, 32));

    let (_, second) = load(&fixture(), shards.path(), &all, PAIR).unwrap();
    assert_eq!((second.built, second.mapped), (0, 32));
    assert!(second.refused.is_empty());

    let damaged = shards.path().join(
        ShardKey {
            layer: 1,
            expert: 6,
            format: Format::Q4,
        }
        .file_name(),
    );
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();
    let (set, third) = load(&fixture(), shards.path(), &all, PAIR).unwrap();
    assert_eq!((third.built, third.mapped), (1, 31));
    assert_eq!(third.refused.len(), 1);
    assert!(third.refused[0].contains("checksum"), "{:?}", third.refused);

    // What is served equals the single-process model's expert at that format.
    let pool = Arc::new(Pool::new(1).unwrap());
    let reference = Model::load(
        &fixture(),
        &LoadOptions::with_expert_format(Some(Format::Q4)),
        pool,
    )
    .unwrap();
    let want = &reference.moe_block(1).unwrap().experts()[6];
    let got = set.get(1, 6, Format::Q4).unwrap();
    assert_eq!(got.parts().0.as_bytes(), want.parts().0.as_bytes());
    assert_eq!(got.parts().1.as_bytes(), want.parts().1.as_bytes());
}

#[test]
fn a_selection_loads_only_its_experts_and_bad_ones_are_refused() {
    let shards = tempfile::tempdir().unwrap();
    let some: ExpertSelection = "0:2-3,1:7".parse().unwrap();
    let (set, report) = load(&fixture(), shards.path(), &some, PAIR).unwrap();
    assert_eq!((report.built, set.len()), (6, 6));
    assert!(set.get(0, 3, Format::F16).is_some() && set.get(1, 7, Format::Q4).is_some());
    assert!(set.get(0, 4, Format::F16).is_none());

    let missing_layer: ExpertSelection = "5:0".parse().unwrap();
    let e = load(&fixture(), shards.path(), &missing_layer, PAIR).unwrap_err();
    assert!(e.to_string().contains("layer 5"), "{e}");
    let e = load(&shards.path().join("nope"), shards.path(), &some, PAIR).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
}
