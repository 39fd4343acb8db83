//! `gateway`: serves the OpenAI-compatible HTTP API for a model whose experts run on the expert
//! nodes of a cluster. Loads the checkpoint without its routed experts, follows the placement and
//! the node records in etcd, and prints `listening on ADDR` (HTTP) and `grpc on ADDR` once its
//! ports are bound. A bad configuration exits with status 64 (`--check-config` checks it and
//! stops there); SIGTERM stops accepting and finishes open responses.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use moe_gateway::api_keys::ApiKeys;
use moe_gateway::chat_template::{ChatTemplate, TemplateError};
use moe_gateway::dispatch::Dispatcher;
use moe_gateway::engine::Engine;
use moe_gateway::front_door::FrontDoor;
use moe_gateway::generator::{Generator, GeneratorConfig};
use moe_gateway::grpc::GrpcApi;
use moe_gateway::http::{self, HttpOptions};
use moe_gateway::policy::{LadderConfig, Rung, Thresholds};
use moe_gateway::precalculation::PreCalculate;
use moe_gateway::prediction::MAX_DISTANCE;
use moe_gateway::scheduler::SchedulerConfig;
use moe_kernels::Pool;
use moe_model::config::served_name;
use moe_model::{LoadOptions, Model, Tokenizer};
use moe_proto::gateway::gateway_service_server::GatewayServiceServer;
use moe_proto::tensor::Limits;
use moe_service::progress::{Unit, reporter};
use moe_service::reflection;
use moe_service::tls::{self, ClientTlsArgs, TlsArgs};
use moe_state::etcd::Etcd;
use moe_state::keys::{ClusterKeys, Name};
use moe_state::records::GatewayStats;
use moe_state::stats::StatsPublisher;
use moe_state::watch::Watcher;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "Serve the OpenAI-compatible API for a model whose experts run on expert nodes"
)]
struct Config {
    /// HuggingFace checkpoint directory (the routed experts are not read).
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// The model's name in the API (default: the checkpoint directory's name).
    #[arg(long, env = "MOE_MODEL_NAME")]
    model_name: Option<String>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "MOE_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// The cluster's name: its keys live under /moe/v1/<cluster>/.
    #[arg(long, env = "MOE_CLUSTER", default_value = "default")]
    cluster: String,
    /// Address of the HTTP API; port 0 picks one.
    #[arg(long, env = "MOE_HTTP", default_value = "127.0.0.1:8000")]
    http: SocketAddr,
    /// Address of the gRPC API (moe.gateway.v1.GatewayService, health, reflection); port 0 picks
    /// one, printed as `grpc on ADDR`.
    #[arg(long, env = "MOE_GRPC", default_value = "127.0.0.1:8001")]
    grpc: SocketAddr,
    /// Bearer keys the /v1 HTTP API and the gRPC GatewayService accept, comma-separated (several
    /// at once while one is rotated); none leaves the APIs open. Health and metrics stay open.
    #[arg(long, env = "MOE_API_KEY", value_delimiter = ',')]
    api_key: Vec<String>,
    /// The largest max_tokens a request may ask for.
    #[arg(long, env = "MOE_MAX_TOKENS_LIMIT", default_value_t = 4096)]
    max_tokens_limit: usize,
    /// Tokens of KV cache all running sequences share.
    #[arg(long, env = "MOE_KV_TOKENS", default_value_t = 65536)]
    kv_tokens: usize,
    /// Requests waiting to start at most; beyond it, 503 with Retry-After.
    #[arg(long, env = "MOE_MAX_WAITING", default_value_t = 256)]
    max_waiting: usize,
    /// Sequences running at once at most.
    #[arg(long, env = "MOE_MAX_RUNNING", default_value_t = 64)]
    max_running: usize,
    /// Groups each step's sequences are split into and run at once, so one group's attention
    /// overlaps the others' expert round trips (1 = the whole step as one batch). Pays when the
    /// gateway's own step time is a large share and the nodes have capacity to spare.
    #[arg(long, env = "MOE_MICRO_BATCHES", default_value_t = 1)]
    micro_batches: usize,
    /// Tokens fed to the model per step at most (decodes plus prefill chunks).
    #[arg(long, env = "MOE_MAX_BATCH_TOKENS", default_value_t = 512)]
    max_batch_tokens: usize,
    /// Deadline of each expert call; a late node is replaced by a replica within the step.
    #[arg(long, env = "MOE_EXPERT_DEADLINE_MS", default_value_t = 5000)]
    expert_deadline_ms: u64,
    /// MoE layers ahead (0 to 3) whose experts each MoE layer predicts with their routers
    /// (HOBBIT's stacked gating) and hints to the nodes that hold them, so they stage them before
    /// use; 0 sends no hints.
    #[arg(long, env = "MOE_PREFETCH_LAYERS", default_value_t = 1)]
    prefetch_layers: usize,
    /// DAOP's pre-calculation for `auto` requests: `off`, or `alternate` — every other MoE layer
    /// also runs the next MoE layer's experts as that layer's router predicts them from this
    /// layer's input, in the same messages, and the next layer uses those outputs instead of a
    /// round trip of its own (half the round trips per token, at a measured quality cost).
    #[arg(long, env = "MOE_PRE_CALCULATE", default_value = "off")]
    pre_calculate: PreCalculate,
    /// The highest rung of the link-aware precision ladder for `auto` requests: `off` (always
    /// f32 activations and high precision), `int8-wire` (int8 activations on a saturated link),
    /// `low-weights` (and low-precision weights for pairs above T1) or `skip` (and skipping
    /// pairs above T2).
    #[arg(long, env = "MOE_PRECISION_LADDER", default_value = "low-weights")]
    precision_ladder: Rung,
    /// HOBBIT's T1: on a link at the low-weights rung, pairs whose unimportance (the normalised
    /// gate mass of the token's heavier experts) is above it run at low precision (default 0.6
    /// for models with two experts per token, 0.9 for more).
    #[arg(long, env = "MOE_PRECISION_T1")]
    precision_t1: Option<f32>,
    /// HOBBIT's T2: on a link at the skip rung, pairs whose unimportance is above it are skipped
    /// (default 0.9 for models with two experts per token, 0.98 for more).
    #[arg(long, env = "MOE_PRECISION_T2")]
    precision_t2: Option<f32>,
    /// Kernel threads for attention and the dense layers (0 = one per core).
    #[arg(long, env = "MOE_THREADS", default_value_t = 0)]
    threads: usize,
    /// Deadline of every etcd call.
    #[arg(long, env = "MOE_ETCD_TIMEOUT_SECONDS", default_value_t = 5)]
    etcd_timeout_seconds: u64,
    /// This gateway's name for its popularity report (default: host name and process id).
    #[arg(long, env = "MOE_GATEWAY_ID")]
    gateway_id: Option<String>,
    /// How often the tokens routed per expert are reported to etcd for the coordinator.
    #[arg(long, env = "MOE_STATS_SECONDS", default_value_t = 30)]
    stats_seconds: u64,
    /// Seconds an HTTP request head may take from its first byte; past it the connection is
    /// dropped. On gRPC: a connection's first bytes and its TLS handshake.
    #[arg(long, env = "MOE_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 60)]
    http_header_timeout_seconds: u64,
    /// Seconds an HTTP request body may take to arrive after its head; past it, 408.
    #[arg(long, env = "MOE_HTTP_BODY_TIMEOUT_SECONDS", default_value_t = 60)]
    http_body_timeout_seconds: u64,
    /// Seconds an HTTP connection may wait for its next request before it is closed. On gRPC:
    /// the silence after which the client is pinged (and dropped if it does not answer).
    #[arg(long, env = "MOE_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 75)]
    http_idle_timeout_seconds: u64,
    /// Connections open at once on each API; more wait in the listen backlog until one ends.
    #[arg(long, env = "MOE_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: u32,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// TLS of the gRPC API (server side; with --grpc-tls-ca, clients must present a
    /// certificate). The HTTP API stays plaintext.
    #[command(flatten)]
    grpc_tls: TlsArgs<tls::Api>,
    #[command(flatten)]
    check: moe_service::config::CheckConfig,
}

fn main() -> ExitCode {
    let config = match moe_service::config::parse::<Config>() {
        Ok(config) => config,
        Err(status) => return status,
    };
    let command = Config::command();
    if config.check.check_config {
        return moe_service::config::check_config(&command, || {
            check(&config)?;
            check_tls(&config).map(drop)
        });
    }
    moe_service::main(
        &command,
        || {
            check(&config)?;
            Ok((config.clone(), check_tls(&config)?))
        },
        |(config, tls)| run(config, tls),
    )
}

/// The TLS configurations the flags ask for (`None`: plaintext): towards the nodes, towards
/// etcd, and of the gRPC API.
struct Tls {
    nodes: Option<ClientTlsConfig>,
    etcd: Option<ClientTlsConfig>,
    api: Option<ServerTlsConfig>,
}

/// Reads and checks the TLS files the flags name (part of `--check-config`).
fn check_tls(config: &Config) -> Result<Tls, String> {
    let (nodes, etcd) = config.tls.configs(&config.etcd)?;
    Ok(Tls {
        nodes,
        etcd,
        api: config.grpc_tls.server().map_err(|e| e.to_string())?,
    })
}

/// What the flags alone can tell (all that `--check-config` checks: the checkpoint is read
/// only when serving).
fn check(config: &Config) -> Result<(), String> {
    ClusterKeys::new(&config.cluster).map_err(|e| format!("--cluster: {e}"))?;
    Name::new("gateway id", &gateway_id(config)).map_err(|e| format!("--gateway-id: {e}"))?;
    if config.micro_batches == 0 {
        return Err("--micro-batches must be at least 1".into());
    }
    if config.prefetch_layers > MAX_DISTANCE {
        return Err(format!("--prefetch-layers must be at most {MAX_DISTANCE}"));
    }
    let given = [config.precision_t1, config.precision_t2];
    if given
        .into_iter()
        .flatten()
        .any(|t| !(0.0..=1.0).contains(&t))
    {
        return Err("--precision-t1 and --precision-t2 must be between 0 and 1".into());
    }
    if let [Some(t1), Some(t2)] = given {
        Thresholds::new(t1, t2).map_err(|e| format!("--precision-t1/--precision-t2: {e}"))?;
    }
    if config.stats_seconds == 0 {
        return Err("--stats-seconds must be positive".into());
    }
    if config.kv_tokens < 16 || config.max_waiting == 0 || config.max_running == 0 {
        return Err(
            "--kv-tokens must be at least 16, --max-waiting and --max-running positive".into(),
        );
    }
    check_front_door(config)
}

/// How long a gRPC client has to answer a keep-alive ping (tonic's default).
const GRPC_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest timeout the front door takes: a day.
const MAX_TIMEOUT_SECONDS: u64 = 86_400;

fn check_front_door(config: &Config) -> Result<(), String> {
    let timeouts = [
        (
            "--http-header-timeout-seconds",
            config.http_header_timeout_seconds,
        ),
        (
            "--http-body-timeout-seconds",
            config.http_body_timeout_seconds,
        ),
        (
            "--http-idle-timeout-seconds",
            config.http_idle_timeout_seconds,
        ),
    ];
    for (flag, seconds) in timeouts {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
            return Err(format!(
                "{flag} must be between 1 and {MAX_TIMEOUT_SECONDS}"
            ));
        }
    }
    if config.max_connections == 0 {
        return Err("--max-connections must be positive".into());
    }
    Ok(())
}

/// The bounds of both APIs' connections.
fn front_door(config: &Config) -> FrontDoor {
    FrontDoor {
        header_timeout: Duration::from_secs(config.http_header_timeout_seconds),
        body_timeout: Duration::from_secs(config.http_body_timeout_seconds),
        idle_timeout: Duration::from_secs(config.http_idle_timeout_seconds),
        max_connections: config.max_connections,
    }
}

async fn run(config: Config, tls: Tls) -> anyhow::Result<()> {
    let shutdown = moe_service::shutdown_signal();
    let name = config
        .model_name
        .clone()
        .unwrap_or_else(|| served_name(&config.model));
    let options = LoadOptions {
        skip_routed_experts: true,
        ..LoadOptions::default()
    };
    let model_dir = config.model.clone();
    let threads = config.threads;
    let (model, tokenizer, template) = tokio::task::spawn_blocking(move || {
        let pool = Arc::new(Pool::new(threads)?);
        let mut report = reporter("loading layers", Unit::Items("layers"));
        let model = Model::load_counting(&model_dir, &options, pool, &mut report)?;
        let tokenizer = Tokenizer::from_dir(&model_dir)?;
        let template = match ChatTemplate::from_checkpoint(&model_dir) {
            Ok(t) => Some(t),
            Err(TemplateError::Missing { .. }) => None,
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        anyhow::Ok((model, tokenizer, template))
    })
    .await
    .context("the loading task failed")?
    .with_context(|| format!("loading {}", config.model.display()))?;
    if template.is_none() {
        tracing::warn!("the model has no chat template: /v1/chat/completions answers 400");
    }

    let keys = ClusterKeys::new(&config.cluster)?;
    let timeout = Duration::from_secs(config.etcd_timeout_seconds);
    let etcd = Etcd::connect_patiently(&config.etcd, tls.etcd, timeout).await;
    let placement = Watcher::placement(&etcd, &keys)
        .await
        .context("watching the placement")?;
    let nodes = Watcher::nodes(&etcd, &keys)
        .await
        .context("watching the nodes")?;
    let mut dispatcher = Dispatcher::new(
        placement.subscribe(),
        nodes.subscribe(),
        model.config().hidden_size,
        Duration::from_millis(config.expert_deadline_ms),
        Limits::default(),
    );
    if let Some(nodes_tls) = tls.nodes {
        dispatcher = dispatcher.with_tls(nodes_tls);
    }
    let dispatcher = Arc::new(
        dispatcher
            .with_prefetch_layers(config.prefetch_layers)
            .with_pre_calculate(config.pre_calculate)
            .with_policy(
                Thresholds::resolve(
                    config.precision_t1,
                    config.precision_t2,
                    model.config().top_k,
                )
                .map_err(|e| anyhow::anyhow!("--precision-t1/--precision-t2: {e}"))?,
                LadderConfig {
                    top: config.precision_ladder,
                    ..LadderConfig::default()
                },
            ),
    );
    let every = Duration::from_secs(config.stats_seconds);
    let id = gateway_id(&config);
    let stats = StatsPublisher::start(&etcd, &keys, &id, 3 * every)
        .await
        .context("starting the popularity report")?;
    tokio::spawn(report(stats, Arc::clone(&dispatcher), id, every));
    let scheduler = SchedulerConfig {
        max_waiting: config.max_waiting,
        max_running: config.max_running,
        max_batch_tokens: config.max_batch_tokens.max(config.max_running),
        ..SchedulerConfig::new(config.kv_tokens / 16)
    };
    let generator = Generator::start(
        Arc::new(model),
        Arc::new(tokenizer),
        template,
        dispatcher,
        tokio::runtime::Handle::current(),
        GeneratorConfig {
            name,
            max_tokens_limit: config.max_tokens_limit,
            scheduler,
            micro_batches: config.micro_batches,
        },
    )?;
    let engine: Arc<dyn Engine> = Arc::new(generator);
    serve(&config, engine, tls.api, shutdown).await?;
    drop((placement, nodes));
    Ok(())
}

/// Binds both APIs' ports and serves them until `shutdown` resolves and open requests finished.
async fn serve(
    config: &Config,
    engine: Arc<dyn Engine>,
    api_tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let api_keys = ApiKeys::new(config.api_key.iter().cloned());
    let router = http::router(
        Arc::clone(&engine),
        HttpOptions {
            api_keys: api_keys.clone(),
            ..HttpOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding {}", config.http))?;
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc)
        .await
        .with_context(|| format!("binding {}", config.grpc))?;
    println!("listening on {}", listener.local_addr()?);
    println!("grpc on {}", grpc_listener.local_addr()?);
    std::io::stdout().flush()?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(Arc::clone(&engine), health));
    let descriptors = [
        moe_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ];
    let served = [GATEWAY_SERVICE, reflection::HEALTH];
    let (reflection_v1, reflection_v1alpha) = reflection::reflection(&descriptors, &served)
        .context("building the reflection services")?;
    // A request message is held to the HTTP body limit, and one connection to the requests the
    // engine can hold (running and waiting); past those the caller gets an error at once.
    let api = GatewayServiceServer::new(GrpcApi {
        engine: Arc::clone(&engine),
    })
    .max_decoding_message_size(http::DEFAULT_MAX_BODY_BYTES);
    let api = InterceptedService::new(api, move |request| api_keys.check(request));
    let streams = u32::try_from(config.max_running + config.max_waiting).unwrap_or(u32::MAX);
    let front_door = front_door(config);
    // What tonic offers of the front door's bounds: pings after the idle timeout without
    // traffic (a peer that does not answer in 20 s is dropped) and the TLS handshake's timeout;
    // the connection bound and the deadline for a connection's first bytes come with
    // `grpc_incoming`. No per-request timeout: a stream of tokens may run for minutes.
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(streams))
        .http2_keepalive_interval(Some(front_door.idle_timeout))
        .http2_keepalive_timeout(Some(GRPC_PING_TIMEOUT));
    if let Some(api_tls) = api_tls {
        builder = builder.tls_config(api_tls.timeout(front_door.header_timeout))?;
    }
    let grpc = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .serve_with_incoming_shutdown(
            front_door.grpc_incoming(grpc_listener),
            stopped(stopping.clone()),
        );
    let http = front_door.serve(listener, router, stopped(stopping));
    let ((), grpc) = tokio::join!(http, grpc);
    grpc.context("serving gRPC")?;
    Ok(())
}

/// `--gateway-id`, or `gw-<host>-<pid>`.
/// The gateway's API as gRPC health and reflection name it.
const GATEWAY_SERVICE: &str = <GatewayServiceServer<GrpcApi> as NamedService>::NAME;

/// Keeps the health status of `moe.gateway.v1.GatewayService` at the engine's readiness: SERVING
/// when every expert has a serving node, NOT_SERVING otherwise (the server as a whole, `""`,
/// stays SERVING while the process runs). Checked every second.
async fn report_health(engine: Arc<dyn Engine>, health: HealthReporter) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = None;
    loop {
        tick.tick().await;
        let ready = engine.readiness().is_ready();
        if reported == Some(ready) {
            continue;
        }
        let status = match ready {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        health.set_service_status(GATEWAY_SERVICE, status).await;
        reported = Some(ready);
    }
}

fn gateway_id(config: &Config) -> String {
    config
        .gateway_id
        .clone()
        .unwrap_or_else(|| moe_service::instance_name("gw"))
}

/// Publishes the tokens routed per expert every `every`, for the coordinator's rebalancing.
async fn report(
    mut stats: StatsPublisher,
    dispatcher: Arc<Dispatcher>,
    gateway: String,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let counts = dispatcher.take_counts();
        let report = GatewayStats {
            gateway: gateway.clone(),
            window_seconds: every.as_secs(),
            counts,
        };
        if let Err(e) = stats.publish(&report).await {
            tracing::warn!(error = %e, "publishing the popularity report failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(extra: &[&str]) -> Config {
        let mut args = vec![
            "gateway",
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
    fn the_check_needs_no_checkpoint_and_refuses_bad_values() {
        assert_eq!(check(&config(&[])), Ok(()));
        assert!(config(&["--check-config"]).check.check_config);
        let refused = check(&config(&["--prefetch-layers", "9"])).unwrap_err();
        assert!(refused.contains("--prefetch-layers"), "{refused}");
        let refused = check(&config(&[
            "--precision-t1",
            "0.95",
            "--precision-t2",
            "0.9",
        ]));
        assert!(refused.unwrap_err().contains("T1"));
        let refused = check(&config(&["--precision-t2", "1.5"])).unwrap_err();
        assert!(refused.contains("between 0 and 1"), "{refused}");
        assert_eq!(
            config(&["--precision-ladder", "int8-wire"]).precision_ladder,
            Rung::Int8Wire
        );
        assert_eq!(
            config(&["--pre-calculate", "alternate"]).pre_calculate,
            PreCalculate::Alternate
        );
        assert_eq!(config(&[]).pre_calculate, PreCalculate::Off);
        let refused = check(&config(&["--cluster", "no/slash"])).unwrap_err();
        assert!(refused.contains("--cluster"), "{refused}");
        let refused = check(&config(&["--http-body-timeout-seconds", "0"])).unwrap_err();
        assert!(refused.contains("--http-body-timeout-seconds"), "{refused}");
        let refused = check(&config(&["--http-idle-timeout-seconds", "86401"])).unwrap_err();
        assert!(refused.contains("--http-idle-timeout-seconds"), "{refused}");
        let refused = check(&config(&["--max-connections", "0"])).unwrap_err();
        assert!(refused.contains("--max-connections"), "{refused}");
        let front_door = front_door(&config(&["--http-header-timeout-seconds", "5"]));
        assert_eq!(front_door.header_timeout, Duration::from_secs(5));
        assert_eq!(front_door.idle_timeout, FrontDoor::default().idle_timeout);
    }
}
