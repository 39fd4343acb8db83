//! An expert node's shard files: the bytes written as the file of one expert's Q4 shard and read
//! back the way a node reads its cache. Every file that differs from the one the node wrote must
//! be refused (its header names the checkpoint and the shape, and a checksum covers the rest).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moe_cargo_fuzz::{experts, fixture};
use moe_expert_node::shard::{self, ExpertDims, Fingerprint, ShardKey};
use moe_kernels::Format;

const KEY: ShardKey = ShardKey {
    layer: 1,
    expert: 2,
    format: Format::Q4,
};

/// The shard file as the node wrote it, the checkpoint's fingerprint, and a directory to write
/// the inputs into.
fn original() -> &'static (Vec<u8>, Fingerprint, tempfile::TempDir) {
    static ORIGINAL: OnceLock<(Vec<u8>, Fingerprint, tempfile::TempDir)> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        let bytes = std::fs::read(experts().shards.path().join(KEY.file_name()))
            .expect("the node wrote the shard");
        let fingerprint = Fingerprint::of_checkpoint(&fixture()).expect("the fixture is readable");
        (
            bytes,
            fingerprint,
            tempfile::tempdir().expect("a temporary directory"),
        )
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (original, fingerprint, work) = original();
    let config = &experts().config;
    std::fs::write(work.path().join(KEY.file_name()), bytes).expect("the shard is written");
    let read = shard::read(work.path(), KEY, *fingerprint, ExpertDims::of(config));
    if bytes != original.as_slice() {
        assert!(read.is_err(), "a changed shard file was accepted");
    }
});
