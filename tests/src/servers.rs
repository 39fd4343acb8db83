//! The cluster's servers on the Mixtral fixture (2 MoE layers x 8 experts), started as the
//! end-to-end tests start them: the flags they all give, and each test's own after them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, Process, sibling_binary};

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mixtral")
}

fn args(common: &[&str], extra: &[&str]) -> Vec<String> {
    common.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// A `coordinator` of `cluster` through `etcd`, id `co-1`, re-planning every second.
pub fn coordinator(etcd: &str, cluster: &str, extra: &[&str]) -> Process {
    coordinator_named(etcd, cluster, "co-1", extra, &[])
}

/// As [`coordinator`], with id `id` and the variables `env` set.
pub fn coordinator_named(
    etcd: &str,
    cluster: &str,
    id: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> Process {
    let model = fixture();
    let common = [
        "--etcd",
        etcd,
        "--cluster",
        cluster,
        "--listen",
        "127.0.0.1:0",
        "--id",
        id,
        "--model",
        model.to_str().unwrap(),
        "--replan-seconds",
        "1",
    ];
    let program = sibling_binary("coordinator", "moe-coordinator");
    process::start(&program, &args(&common, extra), env)
}

/// The `expert-node` binary, to be run by [`node`] directly or through a wrapper.
pub fn node_binary() -> PathBuf {
    sibling_binary("expert-node", "moe-expert-node")
}

/// An `expert-node` `id` of `cluster` run by `command`, listening on `listen`, with its shards in
/// `shards`, on the CPU with one thread.
pub fn node(
    command: Command,
    etcd: &str,
    cluster: &str,
    id: &str,
    listen: &str,
    shards: &Path,
) -> Process {
    node_with(command, etcd, cluster, id, listen, shards, &[])
}

/// As [`node`], with `extra` flags after the common ones.
pub fn node_with(
    command: Command,
    etcd: &str,
    cluster: &str,
    id: &str,
    listen: &str,
    shards: &Path,
    extra: &[&str],
) -> Process {
    let model = fixture();
    let common = [
        "--etcd",
        etcd,
        "--cluster",
        cluster,
        "--listen",
        listen,
        "--node-id",
        id,
        "--model",
        model.to_str().unwrap(),
        "--shard-dir",
        shards.to_str().unwrap(),
        "--threads",
        "1",
        "--backend",
        "cpu",
    ];
    process::start_command(command, &args(&common, extra), &[])
}

/// The single-process model's greedy texts for `prompts`, `max_tokens` each, with its experts at
/// the nodes' high precision (f16): what `exact` completions through the cluster must equal.
pub fn reference_texts(prompts: &[Vec<u32>], max_tokens: usize) -> Vec<String> {
    let model = fixture();
    let pool = std::sync::Arc::new(moe_kernels::Pool::new(1).unwrap());
    let options = moe_model::LoadOptions::with_expert_format(Some(moe_kernels::Format::F16));
    let reference = moe_model::Model::load(&model, &options, pool).unwrap();
    let tokenizer = moe_model::Tokenizer::from_dir(&model).unwrap();
    let params = moe_model::GenerateParams {
        max_tokens,
        ..moe_model::GenerateParams::default()
    };
    prompts
        .iter()
        .map(|p| {
            let generated = moe_model::generate(&reference, Some(&tokenizer), p, &params);
            generated.unwrap().text.unwrap()
        })
        .collect()
}

/// A `gateway` of `cluster` on ports the system picks, with one kernel thread.
pub fn gateway(etcd: &str, cluster: &str, extra: &[&str]) -> Process {
    let model = fixture();
    let common = [
        "--model",
        model.to_str().unwrap(),
        "--etcd",
        etcd,
        "--cluster",
        cluster,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--threads",
        "1",
    ];
    let program = sibling_binary("gateway", "moe-gateway");
    process::start(&program, &args(&common, extra), &[])
}
