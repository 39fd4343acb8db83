//! `expert-node`: parses and validates the configuration (exit 64 when it is bad; with
//! `--check-config`, only the flags, and stops there), binds, reports NOT_SERVING while it
//! checks its experts' shards (building missing ones), reads the hot set that fits
//! `--host-memory` and opens its backend (CUDA or CPU), then serves — with `--etcd`,
//! registered in the cluster and following its placement — until SIGTERM or Ctrl-C, when it
//! deregisters and drains within `--drain-seconds`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use moe_expert_node::backend::{self, Chosen};
use moe_expert_node::config::Config;
use moe_expert_node::hot_set::Budget;
use moe_expert_node::membership;
use moe_expert_node::residency::Residency;
use moe_expert_node::server::{Node, NodeService};
use moe_expert_node::store;
use moe_kernels::Pool;
use moe_proto::expert::expert_service_server::ExpertServiceServer;
use moe_service::reflection;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;

fn main() -> ExitCode {
    let config = match moe_service::config::parse::<Config>() {
        Ok(config) => config,
        Err(status) => return status,
    };
    let command = Config::command();
    if config.check.check_config {
        return moe_service::config::check_config(&command, || config.validate_flags());
    }
    moe_service::main(&command, || config.validate().map(|()| config.clone()), run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = moe_service::shutdown_signal();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    // One small message per layer each way: Nagle's algorithm would hold replies for a delayed ACK.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    println!("listening on {address}");
    std::io::stdout().flush()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<ExpertServiceServer<NodeService>>()
        .await;
    let pair = config
        .precisions
        .resolve(&config.model)
        .with_context(|| format!("reading {}", config.model.display()))?;
    let node = Arc::new(
        Node::new(
            config.node_id.clone(),
            pair,
            config.limits(),
            config.queue_capacity,
        )
        .with_downgrade_above(config.downgrade_above),
    );
    let service = ExpertServiceServer::new(NodeService(Arc::clone(&node)))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let descriptors = [
        moe_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let served = [
        <ExpertServiceServer<NodeService> as NamedService>::NAME,
        reflection::HEALTH,
    ];
    let (reflection_v1, reflection_v1alpha) = reflection::reflection(&descriptors, &served)
        .context("building the reflection services")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = config.server_tls().map_err(anyhow::Error::msg)? {
        builder = builder.tls_config(tls)?;
    }
    let server = tokio::spawn(
        builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    let (model, shards, experts) = (
        config.model.clone(),
        config.shard_dir.clone(),
        config.selection(),
    );
    let budget = Budget::from_flag(config.host_memory);
    let (catalog, resident, report) =
        tokio::task::spawn_blocking(move || store::open(&model, &shards, &experts, pair, budget))
            .await
            .context("the loading task failed")??;
    for reason in &report.refused {
        tracing::warn!(%reason, "rebuilt a shard");
    }
    let chosen = backend::choose(&config, &catalog, pair).map_err(anyhow::Error::msg)?;
    if let Chosen::Cpu {
        reason: Some(reason),
    } = &chosen
    {
        tracing::info!(%reason, "no CUDA backend; experts run on the CPU");
    }
    let backend = chosen.describe();
    let kind = match &chosen {
        Chosen::Cuda { .. } => "cuda",
        Chosen::Cpu { .. } => "cpu",
    };
    let gpu = match chosen {
        Chosen::Cuda { gpu, .. } => Some(gpu),
        Chosen::Cpu { .. } => None,
    };
    let residency = Arc::new(Residency::new(catalog, budget, resident));
    let hot = residency.snapshot();
    let limit = match budget {
        Budget::Unlimited => "no limit".to_string(),
        Budget::Bytes(n) => format!("limit {n} bytes"),
    };
    println!(
        "serving {} expert shards ({} mapped, {} built) in {:.3} s; hot set {} bytes ({limit}), {} resident, {} cold; backend {backend}",
        residency.catalog().len(),
        report.mapped,
        report.built,
        report.elapsed.as_secs_f64(),
        hot.hot_bytes,
        hot.hot,
        hot.cold
    );
    std::io::stdout().flush()?;
    let gpu_bytes = gpu.as_ref().map_or(0, |g| g.snapshot().capacity_bytes);
    node.serve_experts(Arc::clone(&residency), Pool::new(config.threads)?, gpu)?;
    health
        .set_serving::<ExpertServiceServer<NodeService>>()
        .await;
    tracing::info!(%address, node = %config.node_id, %backend, "serving");

    let membership = if config.etcd.is_empty() {
        None
    } else {
        let record = membership::record(&config, pair, address, (kind, gpu_bytes))
            .with_context(|| format!("measuring {}", config.shard_dir.display()))?;
        let serving = (Arc::clone(&node), Arc::clone(&residency));
        let joining = membership::join((&config, pair), record, serving, health.clone());
        Some(joining.await?)
    };

    shutdown.await;
    if let Some(membership) = membership {
        let deadline = Duration::from_secs(2 * config.etcd_timeout_seconds);
        match tokio::time::timeout(deadline, membership.leave()).await {
            Ok(Ok(())) => tracing::info!("left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not deregister; the lease will expire"),
            Err(_) => {
                tracing::warn!("etcd did not answer the deregistration; the lease will expire")
            }
        }
    }
    tracing::info!("draining");
    health
        .set_not_serving::<ExpertServiceServer<NodeService>>()
        .await;
    let _ = stop.send(());
    match tokio::time::timeout(config.drain(), server).await {
        Ok(result) => result
            .context("the server task failed")?
            .context("serving")?,
        Err(_) => tracing::warn!("in-flight streams outlived the drain deadline; exiting"),
    }
    Ok(())
}
