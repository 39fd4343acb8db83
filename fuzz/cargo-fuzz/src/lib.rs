//! What the libFuzzer targets in `fuzz_targets/` share: the checkpoint fixture they start from,
//! the expert shards written from it once per process, and the precision pair nodes serve. Each
//! target feeds one parser that takes outside input; an input must be accepted or refused with
//! an error, never panic, hang or abort (README.md lists the targets and how to run them).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::store;
use moe_expert_node::work::{ExpertSet, PrecisionPair};
use moe_kernels::{Format, Pool};
use moe_model::ModelConfig;

/// The pair of formats the expert targets load and run experts in.
pub const PAIR: PrecisionPair = PrecisionPair {
    high: Format::F16,
    low: Format::Q4,
};

/// The small Mixtral checkpoint of the test fixtures.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mixtral")
}

/// The fixture's experts, loaded once: the shard files written for them, the set built from
/// them, its configuration and a one-thread pool to run them on.
pub struct Experts {
    /// Where the shard files are; removed when the process ends.
    pub shards: tempfile::TempDir,
    pub set: ExpertSet,
    pub config: ModelConfig,
    pub pool: Pool,
}

/// The fixture's experts, loaded on first use.
pub fn experts() -> &'static Experts {
    static EXPERTS: OnceLock<Experts> = OnceLock::new();
    EXPERTS.get_or_init(|| {
        let dir = fixture();
        let config = ModelConfig::from_file(&dir.join("config.json")).expect("the fixture loads");
        let shards = tempfile::tempdir().expect("a temporary directory");
        let all: ExpertSelection = "all".parse().expect("`all` is a selection");
        let (set, _) = store::load(&dir, shards.path(), &all, PAIR).expect("the fixture loads");
        Experts {
            shards,
            set,
            config,
            pool: Pool::new(1).expect("a one-thread pool"),
        }
    })
}
