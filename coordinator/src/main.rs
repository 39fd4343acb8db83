//! `coordinator`: keeps a cluster's expert placement in etcd. Several may run; they elect one
//! leader, which plans and writes the placement (see `leader`); the others stand by and take over
//! within a lease TTL when it dies. A bad configuration exits with status 64 (`--check-config`
//! checks it and stops there, without reading the model); etcd being down at start is waited
//! for, with a message saying where it was looked for. Serves `grpc.health.v1` on `--listen`
//! (SERVING once etcd answers) and prints `listening on ADDR` on stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use moe_coordinator::election::{Candidate, Role, Term};
use moe_coordinator::leader::{self, LeadError, Settings};
use moe_coordinator::planner::{DEFAULT_REPLICATION, Hysteresis};
use moe_model::ModelConfig;
use moe_model::config::{config_path, served_name};
use moe_model::precision::{PrecisionPair, Precisions};
use moe_service::tls::{self, TlsArgs};
use moe_state::etcd::Etcd;
use moe_state::keys::{ClusterKeys, Name};
use moe_state::records::{GatewayStats, NodeRecord};
use moe_state::watch::Watcher;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};
use tonic_health::ServingStatus;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Keep a moe-cluster's expert placement in etcd (one leader among replicas)"
)]
struct Config {
    /// etcd endpoints, comma-separated, e.g. http://127.0.0.1:2379.
    #[arg(long, env = "MOE_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// The cluster's name: its keys live under /moe/v1/<cluster>/.
    #[arg(long, env = "MOE_CLUSTER", default_value = "default")]
    cluster: String,
    /// Address of the health endpoint (grpc.health.v1); port 0 picks one.
    #[arg(long, env = "MOE_LISTEN", default_value = "127.0.0.1:50071")]
    listen: SocketAddr,
    /// This coordinator's name in the election (default: coordinator-<host>-<pid>).
    #[arg(long, env = "MOE_COORDINATOR_ID")]
    id: Option<String>,
    /// HuggingFace checkpoint directory of the served model (only config.json is read).
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// The model's name in the placement (default: the checkpoint directory's name).
    #[arg(long, env = "MOE_MODEL_NAME")]
    model_name: Option<String>,
    /// The precision pair expert nodes serve: `auto` (fp8+q4 for an fp8 checkpoint, f16+q4
    /// otherwise, as the nodes resolve it) or a pair such as f16+q4, q8+q2, fp8+q4.
    #[arg(long, env = "MOE_PRECISIONS", default_value = "auto")]
    precisions: String,
    /// Copies of every expert where capacity allows (the hottest first when it does not); hot
    /// experts get more, in proportion to their tokens, with the room left.
    #[arg(long, env = "MOE_REPLICATION", default_value_t = DEFAULT_REPLICATION)]
    replication: u32,
    /// Lease TTL of this coordinator's candidacy: a dead leader is replaced within it.
    #[arg(long, env = "MOE_LEASE_TTL_SECONDS", default_value_t = 10)]
    lease_ttl_seconds: u64,
    /// How often the leader checks whether popularity calls for a rebalance.
    #[arg(long, env = "MOE_REPLAN_SECONDS", default_value_t = 30)]
    replan_seconds: u64,
    /// Expert copies one rebalance may move.
    #[arg(long, env = "MOE_BALANCE_MOVES", default_value_t = 64)]
    balance_moves: usize,
    /// Deadline of every etcd call.
    #[arg(long, env = "MOE_ETCD_TIMEOUT_SECONDS", default_value_t = 5)]
    etcd_timeout_seconds: u64,
    /// TLS of the health endpoint (server side).
    #[command(flatten)]
    tls: TlsArgs<tls::Cluster>,
    /// TLS of the connection to etcd.
    #[command(flatten)]
    etcd_tls: TlsArgs<tls::Etcd>,
    #[command(flatten)]
    check: moe_service::config::CheckConfig,
}

/// What the flags alone decide, checked before anything starts.
struct Checked {
    keys: ClusterKeys,
    id: String,
    settings: Settings,
    tls: Tls,
}

/// The TLS configurations of the health endpoint and of the etcd client (`None`: plaintext).
struct Tls {
    server: Option<ServerTlsConfig>,
    etcd: Option<ClientTlsConfig>,
}

/// Reads and checks the TLS files the flags name (part of `--check-config`).
fn check_tls(config: &Config) -> Result<Tls, String> {
    Ok(Tls {
        server: config.tls.server().map_err(|e| e.to_string())?,
        etcd: config
            .etcd_tls
            .for_endpoints(&config.etcd)
            .map_err(|e| e.to_string())?,
    })
}

/// What the flags alone decide (all that `--check-config` checks): the cluster's keys, this
/// coordinator's id and the precision pair.
fn check_flags(config: &Config) -> Result<(ClusterKeys, String, Option<PrecisionPair>), String> {
    let keys = ClusterKeys::new(&config.cluster).map_err(|e| format!("--cluster: {e}"))?;
    let id = match &config.id {
        Some(id) => id.clone(),
        None => moe_service::instance_name("coordinator"),
    };
    Name::new("coordinator id", &id).map_err(|e| format!("--id: {e}"))?;
    let Precisions(pair) = config
        .precisions
        .parse()
        .map_err(|e| format!("--precisions {e}"))?;
    if config.replication == 0 || config.lease_ttl_seconds == 0 || config.replan_seconds == 0 {
        return Err(
            "--replication, --lease-ttl-seconds and --replan-seconds must be positive".into(),
        );
    }
    Ok((keys, id, pair))
}

/// Everything checked before a start: the flags, then the model's shape from its config.json.
fn check(config: &Config) -> Result<Checked, String> {
    let (keys, id, pair) = check_flags(config)?;
    let tls = check_tls(config)?;
    let name = config
        .model_name
        .clone()
        .unwrap_or_else(|| served_name(&config.model));
    let model = |e: moe_model::ModelError| format!("--model {}: {e}", config.model.display());
    let pair = match pair {
        Some(pair) => pair,
        None => PrecisionPair::for_model(
            &ModelConfig::from_file(&config_path(&config.model)).map_err(model)?,
        ),
    };
    let shape = leader::model_shape(&config.model, &name, pair.high, pair.low).map_err(model)?;
    Ok(Checked {
        keys,
        id,
        settings: Settings {
            shape,
            precisions: pair,
            replication: config.replication,
            replan_every: Duration::from_secs(config.replan_seconds),
            hysteresis: Hysteresis::default(),
            balance_moves: config.balance_moves,
        },
        tls,
    })
}

fn main() -> ExitCode {
    let config = match moe_service::config::parse::<Config>() {
        Ok(config) => config,
        Err(status) => return status,
    };
    let command = Config::command();
    if config.check.check_config {
        return moe_service::config::check_config(&command, || {
            check_flags(&config)?;
            check_tls(&config).map(drop)
        });
    }
    moe_service::main(
        &command,
        || check(&config).map(|checked| (config.clone(), checked)),
        |(config, checked)| run(config, checked),
    )
}

async fn run(config: Config, checked: Checked) -> anyhow::Result<()> {
    let shutdown = moe_service::shutdown_signal();
    let Checked {
        keys,
        id,
        settings,
        tls,
    } = checked;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let mut builder = tonic::transport::Server::builder();
    if let Some(server_tls) = tls.server {
        builder = builder.tls_config(server_tls)?;
    }
    let server = tokio::spawn(
        builder
            .add_service(health_service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped(stopping.clone())),
    );

    let timeout = Duration::from_secs(config.etcd_timeout_seconds);
    let etcd = tokio::select! {
        etcd = Etcd::connect_patiently(&config.etcd, tls.etcd, timeout) => etcd,
        _ = stopped(stopping.clone()) => return Ok(()),
    };
    let nodes = Watcher::nodes(&etcd, &keys)
        .await
        .context("watching the nodes")?;
    let stats = Watcher::stats(&etcd, &keys)
        .await
        .context("watching the stats")?;
    health.set_service_status("", ServingStatus::Serving).await;
    tracing::info!(%id, cluster = %config.cluster, "campaigning");
    let ttl = Duration::from_secs(config.lease_ttl_seconds);
    let campaign = async {
        let mut retry = Duration::from_millis(200);
        loop {
            // etcd may be away (the reason the last candidacy was lost): keep trying.
            let candidate = match Candidate::start(&etcd, &keys, &id, ttl).await {
                Ok(candidate) => candidate,
                Err(e) => {
                    tracing::warn!(error = %e, "could not join the election; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = stopped(stopping.clone()) => return anyhow::Ok(()),
                    }
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            retry = Duration::from_millis(200);
            let lost = async {
                let mut role = candidate.role();
                loop {
                    let now = role.borrow_and_update().clone();
                    match now {
                        Role::Leader(term) => {
                            lead(&etcd, &term, &settings, &nodes, &stats, &candidate).await
                        }
                        Role::Standby => {}
                        Role::Lost => return,
                    }
                    if role.changed().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = lost => tracing::warn!("the candidacy's lease is gone; campaigning again"),
                _ = stopped(stopping.clone()) => {
                    // Resigning deletes the leader key at once, so a standby takes over now.
                    if let Err(e) = candidate.resign().await {
                        tracing::warn!(error = %e, "could not resign; the lease will expire");
                    }
                    return anyhow::Ok(());
                }
            }
        }
    };
    campaign.await?;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// Leads for `term` until deposed, going on after etcd errors while still leader.
async fn lead(
    etcd: &Etcd,
    term: &Term,
    settings: &Settings,
    nodes: &Watcher<NodeRecord>,
    stats: &Watcher<GatewayStats>,
    candidate: &Candidate,
) {
    tracing::info!(term = term.create_revision(), "leading");
    loop {
        let outcome = leader::lead(
            etcd,
            term,
            settings,
            nodes.subscribe(),
            stats.subscribe(),
            candidate.role(),
        )
        .await;
        match outcome {
            Ok(()) | Err(LeadError::Deposed) => {
                tracing::warn!("no longer leading");
                return;
            }
            Err(LeadError::Etcd(e)) => {
                tracing::warn!(error = %e, "etcd failed while leading; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if candidate.term().as_ref() != Some(term) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(extra: &[&str]) -> Config {
        let mut args = vec![
            "coordinator",
            "--model",
            "/nowhere",
            "--etcd",
            "http://etcd:2379",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn every_flag_but_check_config_has_a_moe_variable() {
        moe_service::config::assert_every_flag_has_a_variable(&Config::command());
    }

    #[test]
    fn the_flag_check_leaves_the_model_to_the_start() {
        let fine = config(&["--id", "coordinator-a"]);
        let (_, id, pair) = check_flags(&fine).unwrap();
        assert_eq!(
            (id.as_str(), pair),
            ("coordinator-a", None),
            "auto by default"
        );
        let (_, _, pair) = check_flags(&config(&["--precisions", "fp8+q4"])).unwrap();
        assert_eq!(pair.map(|p| p.to_string()).as_deref(), Some("fp8+q4"));
        let refused = check(&fine).err().unwrap();
        assert!(refused.starts_with("--model /nowhere"), "{refused}");

        let refused = check_flags(&config(&["--precisions", "q4+f16"])).unwrap_err();
        assert!(refused.contains("--precisions"), "{refused}");
        let refused = check_flags(&config(&["--replication", "0"])).unwrap_err();
        assert!(refused.contains("--replication"), "{refused}");
    }
}
