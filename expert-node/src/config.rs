//! The `expert-node` configuration: command-line flags with `MOE_*` environment fallbacks,
//! validated before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use moe_proto::tensor::Limits;
use moe_service::tls::{self, Mode, Side, TlsArgs};
use moe_state::keys::{ClusterKeys, Name};
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

use crate::selection::ExpertSelection;

/// Where experts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Cpu,
    Cuda,
    /// CUDA when a driver and device are present, else the CPU.
    Auto,
}

pub use moe_model::precision::Precisions;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "expert-node",
    version,
    about = "Serve a MoE model's experts to gateways over gRPC"
)]
pub struct Config {
    /// HuggingFace checkpoint directory.
    #[arg(long, env = "MOE_MODEL")]
    pub model: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "MOE_LISTEN", default_value = "127.0.0.1:50061")]
    pub listen: SocketAddr,
    /// Directory for the quantized shard files, ideally a RAM disk.
    #[arg(long, env = "MOE_SHARD_DIR", default_value = "/dev/shm/moe-shards")]
    pub shard_dir: PathBuf,
    /// This node's id.
    #[arg(long, env = "MOE_NODE_ID", default_value = "node-0")]
    pub node_id: String,
    /// Bytes of host memory resident experts may use (0 = no limit); the others are read from
    /// their shards on the RAM disk when needed.
    #[arg(long, env = "MOE_HOST_MEMORY", default_value_t = 0)]
    pub host_memory: u64,
    /// cpu, cuda or auto (cuda when a driver, NVRTC and a GPU are present, else cpu).
    #[arg(long, env = "MOE_BACKEND", value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// The GPU to use (CUDA device ordinal).
    #[arg(long, env = "MOE_GPU_DEVICE", default_value_t = 0)]
    pub gpu_device: usize,
    /// Bytes of GPU memory for the expert cache (0 = 90% of what is free at start); a quarter
    /// holds low-precision copies.
    #[arg(long, env = "MOE_GPU_MEMORY", default_value_t = 0)]
    pub gpu_memory: u64,
    /// Bytes of host-to-device copies since the previous batch above which the PCIe link counts
    /// as backed up, so that unimportant misses load the low-precision copy.
    #[arg(long, env = "MOE_PCIE_BACKLOG_BYTES", default_value_t = 64 << 20)]
    pub pcie_backlog_bytes: u64,
    /// HOBBIT's T1: pairs whose unimportance (gate mass of the token's heavier experts) is above
    /// it may be served at low precision when the PCIe link is backed up, or the compute queue
    /// is half full or more.
    #[arg(long, env = "MOE_DOWNGRADE_ABOVE", default_value_t = 0.6)]
    pub downgrade_above: f32,
    /// The high and low copy of every expert: `auto` (fp8+q4 for an fp8 checkpoint, so its
    /// experts are served as stored; f16+q4 otherwise) or a pair such as f16+q4, q8+q2, fp8+q4.
    #[arg(long, env = "MOE_PRECISIONS", default_value = "auto")]
    pub precisions: Precisions,
    /// Experts to serve without a coordinator: `all` (the default), or e.g. `0:0-3,1:4-7`. With
    /// `--etcd` the placement decides instead.
    #[arg(long, env = "MOE_EXPERTS")]
    pub experts: Option<ExpertSelection>,
    /// etcd endpoints, comma-separated (e.g. http://127.0.0.1:2379): join the cluster — register
    /// under a lease and serve the experts the coordinator's placement assigns to `--node-id`.
    #[arg(long, env = "MOE_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The cluster's name: its keys live under /moe/v1/<cluster>/.
    #[arg(long, env = "MOE_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// The address gateways dial, as registered in etcd (default: the bound address).
    #[arg(long, env = "MOE_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// TTL of the node's registration lease: a dead node leaves the placement within it.
    #[arg(long, env = "MOE_LEASE_TTL_SECONDS", default_value_t = 30)]
    pub lease_ttl_seconds: u64,
    /// Bytes of shard files the RAM disk may hold, the bound the placement respects (0 = the size
    /// of the filesystem holding --shard-dir).
    #[arg(long, env = "MOE_RAM_DISK_BYTES", default_value_t = 0)]
    pub ram_disk_bytes: u64,
    /// Seconds an expert stays served after the placement moves it away, so work routed by the
    /// previous placement finishes.
    #[arg(long, env = "MOE_RELEASE_GRACE_SECONDS", default_value_t = 30)]
    pub release_grace_seconds: u64,
    /// Deadline of every etcd call.
    #[arg(long, env = "MOE_ETCD_TIMEOUT_SECONDS", default_value_t = 5)]
    pub etcd_timeout_seconds: u64,
    /// Kernel threads (0 = one per core).
    #[arg(long, env = "MOE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Batches waiting for compute at most; a full queue answers RESOURCE_EXHAUSTED.
    #[arg(long, env = "MOE_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Token rows per request at most.
    #[arg(long, env = "MOE_MAX_ROWS", default_value_t = 4096)]
    pub max_rows: usize,
    /// Bytes of one gRPC message at most.
    #[arg(long, env = "MOE_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub max_message_bytes: usize,
    /// Seconds to finish in-flight work after SIGTERM.
    #[arg(long, env = "MOE_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// TLS of the node's gRPC server.
    #[command(flatten)]
    pub tls: TlsArgs<tls::Cluster>,
    /// TLS of the connection to etcd.
    #[command(flatten)]
    pub etcd_tls: TlsArgs<tls::Etcd>,
    #[command(flatten)]
    pub check: moe_service::config::CheckConfig,
}

impl Config {
    /// Checks everything a start checks before binding: the flags, then that `--model` holds a
    /// config.json.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_flags()?;
        if !self.model.join("config.json").is_file() {
            return Err(format!(
                "--model {}: no config.json there",
                self.model.display()
            ));
        }
        Ok(())
    }

    /// Checks what the flags alone can tell, reading no file but the TLS ones (all that
    /// `--check-config` checks).
    pub fn validate_flags(&self) -> Result<(), String> {
        self.server_tls()?;
        self.etcd_tls()?;
        if self.etcd.is_empty() && !matches!(self.etcd_tls.mode(Side::Client), Ok(Mode::Plaintext))
        {
            return Err("--etcd-ca, --etcd-cert and --etcd-key need --etcd".into());
        }
        if !self.etcd.is_empty() && self.experts.is_some() {
            return Err(
                "--experts and --etcd exclude each other: with --etcd the placement decides".into(),
            );
        }
        if !self.etcd.is_empty() && self.lease_ttl_seconds == 0 {
            return Err("--lease-ttl-seconds must be positive".into());
        }
        if !self.etcd.is_empty() {
            // Both name keys in etcd: refused here rather than after the shards are loaded.
            ClusterKeys::new(&self.cluster).map_err(|e| format!("--cluster: {e}"))?;
            Name::new("node id", &self.node_id).map_err(|e| format!("--node-id: {e}"))?;
        }
        if !(0.0..=1.0).contains(&self.downgrade_above) {
            return Err(format!(
                "--downgrade-above {}: expected a gate mass between 0 and 1",
                self.downgrade_above
            ));
        }
        if self.queue_capacity == 0 || self.max_rows == 0 || self.max_message_bytes < 1024 {
            return Err("--queue-capacity and --max-rows must be positive and --max-message-bytes at least 1024".into());
        }
        Ok(())
    }

    /// The experts to load at start: the `--experts` selection, none when the placement decides.
    pub fn selection(&self) -> ExpertSelection {
        match (&self.experts, self.etcd.is_empty()) {
            (Some(selection), _) => selection.clone(),
            (None, true) => ExpertSelection::All,
            (None, false) => ExpertSelection::Ranges(Vec::new()),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_rows: self.max_rows,
            max_bytes: self.max_message_bytes,
        }
    }

    /// The gRPC server's TLS configuration from the TLS files (`None`: plaintext).
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, String> {
        self.tls.server().map_err(|e| e.to_string())
    }

    /// The etcd client's TLS configuration from the etcd TLS files (`None`: plaintext).
    pub fn etcd_tls(&self) -> Result<Option<ClientTlsConfig>, String> {
        self.etcd_tls
            .for_endpoints(&self.etcd)
            .map_err(|e| e.to_string())
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn config(model: &std::path::Path, extra: &[&str]) -> Config {
        let mut args = vec!["expert-node", "--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn every_flag_but_check_config_has_a_moe_variable() {
        moe_service::config::assert_every_flag_has_a_variable(&Config::command());
    }

    #[test]
    fn the_flag_check_reads_no_file_and_the_start_needs_config_json() {
        let empty = tempfile::tempdir().unwrap();
        let node = config(empty.path(), &["--check-config"]);
        assert!(node.check.check_config);
        assert_eq!(node.validate_flags(), Ok(()));
        let refused = node.validate().unwrap_err();
        assert!(refused.ends_with("no config.json there"), "{refused}");
        std::fs::write(empty.path().join("config.json"), "{}").unwrap();
        assert_eq!(node.validate(), Ok(()));

        let both = config(
            empty.path(),
            &["--etcd", "http://etcd:2379", "--experts", "all"],
        );
        assert!(both.validate_flags().unwrap_err().contains("--experts"));
        let etcd = ["--etcd", "http://etcd:2379"];
        let refused = config(empty.path(), &[&etcd[..], &["--cluster", "a/b"]].concat())
            .validate_flags()
            .unwrap_err();
        assert!(refused.starts_with("--cluster"), "{refused}");
        let refused = config(empty.path(), &[&etcd[..], &["--node-id=-x"]].concat())
            .validate_flags()
            .unwrap_err();
        assert!(refused.starts_with("--node-id"), "{refused}");
        let static_node = config(empty.path(), &["--cluster", "a/b"]);
        assert_eq!(static_node.validate_flags(), Ok(()), "no etcd, no keys");

        let refused = config(empty.path(), &["--downgrade-above", "1.5"])
            .validate_flags()
            .unwrap_err();
        assert!(refused.contains("--downgrade-above"), "{refused}");
    }
}
