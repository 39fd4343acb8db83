//! The gRPC face of the node: `ExpertService` (one bidirectional `Process` stream per gateway,
//! `Info`) and `grpc.health.v1`. Layer requests are checked against the node's placement epoch,
//! decoded and validated on the stream's task, then handed to one compute thread through a
//! bounded queue: a full queue refuses the batch with RESOURCE_EXHAUSTED at once. A bad batch is
//! answered with a `BatchError` and the stream goes on. Prefetch hints are checked on the stream's
//! task and handed to the staging thread; they never fail a stream.

use moe_service::telemetry::set_remote_parent;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use moe_kernels::{Format, Pool};
use moe_proto::expert::expert_service_server::ExpertService;
use moe_proto::expert::{
    BatchError, ClientMessage, ExpertShape, FormatFallback, HeldExpert, InfoRequest, LayerRequest,
    LoadFailure, NodeInfo, PrefetchHint, ServerMessage, Timings, client_message, server_message,
};
use moe_proto::tensor::{Limits, WireDtype};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::epoch::Epoch;
use crate::gpu::Accelerator;
use crate::request::{self, Ran, layer_work, reply, reply_dtype, wire_precision};
use crate::residency::{Batch, Residency};
use crate::shard::{ExpertDims, ShardKey};
use crate::staging::{Stage, Stager};
use crate::store::Catalog;
use crate::unloadable::Unloadable;
use crate::work::{ExpertSet, LayerWork, PrecisionPair, WorkError};

type Replies = mpsc::Sender<Result<ServerMessage, Status>>;

/// A validated batch waiting for compute.
struct Job {
    batch_id: u64,
    work: LayerWork,
    /// A later layer's work on the same rows, answered in the same reply.
    ahead: Option<LayerWork>,
    /// Reply with each pair's unweighted output (see `LayerRequest.per_pair`).
    per_pair: bool,
    reply_dtype: WireDtype,
    arrived: Instant,
    replies: Replies,
    /// This request's span, a child of the gateway's when the request carried a traceparent;
    /// entered while the compute thread runs it.
    span: tracing::Span,
}

/// Work for the compute thread, in arrival order.
enum Task {
    Layer(Job),
    /// Experts a prefetch hint named, to copy to the GPU ahead of use.
    Prefetch(Vec<ShardKey>),
}

/// The GPU side, shared by the compute thread (which runs on it) and `Info` (which reads it).
type SharedGpu = Arc<Mutex<Box<dyn Accelerator>>>;

/// What the node serves once its experts are loaded.
struct Loaded {
    residency: Arc<Residency>,
    jobs: SyncSender<Task>,
    stager: Stager,
    gpu: Option<SharedGpu>,
    gpu_fallbacks: Arc<AtomicU64>,
}

/// Why the node could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the node already serves its experts; it serves one set for its lifetime")]
    AlreadyServing,
    #[error("starting the {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub struct Node {
    pub node_id: String,
    pub pair: PrecisionPair,
    pub limits: Limits,
    pub queue_capacity: usize,
    queued: Arc<AtomicUsize>,
    epoch: AtomicU64,
    hints_received: AtomicU64,
    hints_acted_on: AtomicU64,
    /// T1 for groups downgraded because the compute queue is backed up (half full or more).
    downgrade_above: f32,
    queue_downgraded: AtomicU64,
    started: AtomicBool,
    loaded: OnceLock<Arc<Loaded>>,
    /// The assigned experts it could not load, and how many the placement assigns it.
    unloadable: Mutex<(Unloadable, usize)>,
}

fn batch_error(batch_id: u64, status: &Status) -> ServerMessage {
    ServerMessage {
        kind: Some(server_message::Kind::Error(BatchError {
            batch_id,
            code: status.code() as i32,
            message: status.message().to_string(),
        })),
    }
}

fn lock(gpu: &SharedGpu) -> MutexGuard<'_, Box<dyn Accelerator>> {
    // The accelerator's state stays consistent at every unlock: a panic does not poison it.
    gpu.lock().unwrap_or_else(|p| p.into_inner())
}

/// One layer's work as the compute thread ran it: the experts it gathered, the output and the
/// format each group ran at.
struct Executed {
    batch: Batch,
    out: Vec<f32>,
    used: Vec<Format>,
}

impl Executed {
    fn ran<'a>(&'a self, work: &'a LayerWork) -> Ran<'a> {
        Ran {
            work,
            out: &self.out,
            used: &self.used,
        }
    }
}

/// The compute thread's view of the node.
struct Compute {
    residency: Arc<Residency>,
    stager: Stager,
    pair: PrecisionPair,
    pool: Pool,
    queued: Arc<AtomicUsize>,
    gpu: Option<SharedGpu>,
    gpu_fallbacks: Arc<AtomicU64>,
}

impl Compute {
    /// Runs tasks one after another until every sender is gone.
    fn run(&self, queue: Receiver<Task>) {
        for task in queue {
            match task {
                Task::Layer(job) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    self.layer(job);
                }
                Task::Prefetch(keys) => {
                    if let Some(gpu) = &self.gpu {
                        let catalog = self.residency.catalog();
                        let fetch = |key| {
                            catalog
                                .read(key)
                                .map(Arc::new)
                                .map_err(|e| WorkError::Shard(e.to_string()))
                        };
                        lock(gpu).prefetch(&keys, &fetch);
                    }
                }
            }
        }
    }

    /// Runs `work` on the GPU when there is one and it takes the batch, else on the CPU; returns
    /// the sums (or the per-pair outputs, which only the CPU path gives) and the format each
    /// group ran at.
    fn execute(
        &self,
        experts: &ExpertSet,
        work: &LayerWork,
        per_pair: bool,
    ) -> Result<(Vec<f32>, Vec<Format>), WorkError> {
        if per_pair {
            let out = experts.execute_pairs(work, self.pair, &self.pool)?;
            return Ok((out, experts.used(work, self.pair)));
        }
        if let Some(gpu) = &self.gpu {
            let catalog = self.residency.catalog();
            let fetch = |key| match experts.shared(key) {
                Some(e) => Ok(e),
                None => catalog
                    .read(key)
                    .map(Arc::new)
                    .map_err(|e| WorkError::Shard(e.to_string())),
            };
            if let Some(run) = lock(gpu).execute(work, &fetch)? {
                return Ok((run.out, run.used));
            }
            self.gpu_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        let out = experts.execute(work, self.pair, &self.pool)?;
        Ok((out, experts.used(work, self.pair)))
    }

    /// Gathers `work`'s experts and runs it.
    fn run_work(&self, work: &LayerWork, per_pair: bool) -> Result<Executed, WorkError> {
        let batch = self.residency.gather(work, self.pair)?;
        let (out, used) = self.execute(&batch.experts, work, per_pair)?;
        Ok(Executed { batch, out, used })
    }

    /// Runs one batch (and the later layer's work it carries), replies, then records what ran.
    fn layer(&self, job: Job) {
        let _running = job.span.enter();
        let started = Instant::now();
        let hidden = self.residency.catalog().hidden();
        let ran = self.run_work(&job.work, job.per_pair).and_then(|now| {
            let ahead = job.ahead.as_ref().map(|w| self.run_work(w, false));
            Ok((now, ahead.transpose()?))
        });
        let (message, batches) = match ran {
            Ok((now, ahead)) => {
                let ahead_load = ahead.as_ref().map_or(Duration::ZERO, |a| a.batch.load_time);
                let timings = Timings {
                    queue_us: started.duration_since(job.arrived).as_micros() as u64,
                    compute_us: started.elapsed().as_micros() as u64,
                    load_us: (now.batch.load_time + ahead_load).as_micros() as u64,
                };
                let ahead_ran = job.ahead.as_ref().zip(ahead.as_ref());
                let r = reply(
                    job.batch_id,
                    now.ran(&job.work),
                    ahead_ran.map(|(work, a)| a.ran(work)),
                    hidden,
                    job.reply_dtype,
                    timings,
                );
                (r, [Some(now.batch), ahead.map(|a| a.batch)])
            }
            Err(e) => (Err(Status::from(e)), [None, None]),
        };
        let message = match message {
            Ok(r) => ServerMessage {
                kind: Some(server_message::Kind::Reply(r)),
            },
            Err(status) => batch_error(job.batch_id, &status),
        };
        // A gateway that went away just drops its replies.
        let _ = job.replies.blocking_send(Ok(message));
        for batch in batches.into_iter().flatten() {
            let missing = self.residency.record(batch);
            if !missing.is_empty() && !self.stager.send(Stage::Load(missing)) {
                tracing::debug!("the staging queue is full; the hot set fills on a later choice");
            }
        }
    }
}

impl Node {
    pub fn new(
        node_id: String,
        pair: PrecisionPair,
        limits: Limits,
        queue_capacity: usize,
    ) -> Node {
        Node {
            node_id,
            pair,
            limits,
            queue_capacity,
            queued: Arc::new(AtomicUsize::new(0)),
            epoch: AtomicU64::new(0),
            hints_received: AtomicU64::new(0),
            hints_acted_on: AtomicU64::new(0),
            downgrade_above: 0.6,
            queue_downgraded: AtomicU64::new(0),
            started: AtomicBool::new(false),
            loaded: OnceLock::new(),
            unloadable: Mutex::new((Unloadable::default(), 0)),
        }
    }

    /// Records what the node could not load of the `assigned` experts the placement gives it.
    pub fn set_unloadable(&self, unloadable: Unloadable, assigned: usize) {
        *self.unloadable.lock().unwrap_or_else(|p| p.into_inner()) = (unloadable, assigned);
    }

    /// What the node could not load of its assignment.
    pub fn unloadable(&self) -> Unloadable {
        let standing = self.unloadable.lock().unwrap_or_else(|p| p.into_inner());
        standing.0.clone()
    }

    /// Why the node should answer NOT_SERVING although started, when it should.
    pub fn not_serving(&self) -> Option<String> {
        let standing = self.unloadable.lock().unwrap_or_else(|p| p.into_inner());
        standing.0.not_serving(standing.1)
    }

    /// T1 for the compute-queue rule ([`LayerWork::downgrade_unimportant`]); 0.6 otherwise.
    pub fn with_downgrade_above(mut self, t1: f32) -> Node {
        self.downgrade_above = t1;
        self
    }

    /// The placement epoch requests are checked against (see `Epoch::admits`).
    pub fn set_placement_epoch(&self, epoch: Epoch) {
        self.epoch.store(epoch.0, Ordering::Release);
    }

    pub fn placement_epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Starts the compute and staging threads for `residency` and begins serving its experts, on
    /// `gpu` when given (batches it cannot take run on `pool`). A node serves one set for its
    /// lifetime: a second call is refused.
    pub fn serve_experts(
        &self,
        residency: Arc<Residency>,
        pool: Pool,
        gpu: Option<Box<dyn Accelerator>>,
    ) -> Result<(), NodeError> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(NodeError::AlreadyServing);
        }
        let started = self.start(residency, pool, gpu);
        if started.is_err() {
            self.started.store(false, Ordering::Release);
        }
        started
    }

    fn start(
        &self,
        residency: Arc<Residency>,
        pool: Pool,
        gpu: Option<Box<dyn Accelerator>>,
    ) -> Result<(), NodeError> {
        let thread = |thread| move |source| NodeError::Thread { thread, source };
        let stager = Stager::spawn(Arc::clone(&residency), self.queue_capacity)
            .map_err(thread("staging"))?;
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Task>(self.queue_capacity);
        let gpu: Option<SharedGpu> = gpu.map(|g| Arc::new(Mutex::new(g)));
        let gpu_fallbacks = Arc::new(AtomicU64::new(0));
        let compute = Compute {
            residency: Arc::clone(&residency),
            stager: stager.clone(),
            pair: self.pair,
            pool,
            queued: Arc::clone(&self.queued),
            gpu: gpu.clone(),
            gpu_fallbacks: Arc::clone(&gpu_fallbacks),
        };
        std::thread::Builder::new()
            .name("expert-compute".into())
            .spawn(move || compute.run(queue))
            .map_err(thread("compute"))?;
        let loaded = Arc::new(Loaded {
            residency,
            jobs,
            stager,
            gpu,
            gpu_fallbacks,
        });
        self.loaded
            .set(loaded)
            .map_err(|_| NodeError::AlreadyServing)
    }

    fn loaded(&self) -> Result<Arc<Loaded>, Status> {
        self.loaded
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("the node is still loading its experts"))
    }

    /// Checks, decodes, validates and queues one request; `Err` is the batch's refusal.
    fn submit(&self, loaded: &Loaded, req: &LayerRequest, replies: &Replies) -> Result<(), Status> {
        let arrived = Instant::now();
        let span = tracing::info_span!(
            "layer_request",
            batch = req.batch_id,
            layer = req.layer,
            experts = req.experts.len()
        );
        set_remote_parent(&span, &req.traceparent);
        self.placement_epoch()
            .admits(Epoch(req.epoch))
            .map_err(WorkError::from)?;
        let reply_dtype = reply_dtype(req)?;
        let catalog = loaded.residency.catalog();
        let (mut work, mut ahead) = layer_work(req, catalog.hidden(), &self.limits)?;
        let backed_up = 2 * self.queued.load(Ordering::Relaxed) >= self.queue_capacity;
        for w in std::iter::once(&mut work).chain(ahead.as_mut()) {
            if backed_up {
                let downgraded = w.downgrade_unimportant(self.downgrade_above);
                self.queue_downgraded
                    .fetch_add(downgraded as u64, Ordering::Relaxed);
            }
            w.validate(self.pair, catalog.hidden(), |key| catalog.contains(key))?;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            batch_id: req.batch_id,
            work,
            ahead,
            per_pair: req.per_pair,
            reply_dtype,
            arrived,
            replies: replies.clone(),
            span,
        };
        loaded.jobs.try_send(Task::Layer(job)).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => Status::resource_exhausted(format!(
                    "the compute queue is full ({} batches); retry later or on a replica",
                    self.queue_capacity
                )),
                TrySendError::Disconnected(_) => {
                    Status::unavailable("the compute thread has stopped")
                }
            }
        })
    }

    /// Hands the held experts `hint` names to the staging thread; `Err` says why it is ignored.
    fn prefetch(&self, loaded: &Loaded, hint: &PrefetchHint) -> Result<(), String> {
        self.hints_received.fetch_add(1, Ordering::Relaxed);
        self.placement_epoch()
            .admits(Epoch(hint.epoch))
            .map_err(|e| e.to_string())?;
        let precision = request::precision(hint.precision).map_err(|s| s.message().to_string())?;
        let format = precision.format(self.pair);
        let catalog = loaded.residency.catalog();
        let keys: Vec<ShardKey> = hint
            .experts
            .iter()
            .map(|&expert| ShardKey {
                layer: hint.layer,
                expert,
                format,
            })
            .filter(|&key| catalog.contains(key))
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "layer {}: names no expert this node holds at {format}",
                hint.layer
            ));
        }
        if loaded.gpu.is_some() {
            // Behind the layers already queued; dropped, like any hint, when the queue is full.
            let _ = loaded.jobs.try_send(Task::Prefetch(keys.clone()));
        }
        if !loaded.stager.send(Stage::Pin(keys)) {
            return Err("the staging queue is full".into());
        }
        self.hints_acted_on.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The `ExpertService` handle tonic clones per connection.
#[derive(Clone)]
pub struct NodeService(pub Arc<Node>);

#[tonic::async_trait]
impl ExpertService for NodeService {
    type ProcessStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let loaded = self.0.loaded()?;
        let mut inbound = request.into_inner();
        let (replies, outbound) = mpsc::channel(2 * self.0.queue_capacity);
        let node = Arc::clone(&self.0);
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = replies.send(Err(status)).await;
                        break;
                    }
                };
                match message.kind {
                    Some(client_message::Kind::Layer(req)) => {
                        if let Err(status) = node.submit(&loaded, &req, &replies)
                            && replies
                                .send(Ok(batch_error(req.batch_id, &status)))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                    Some(client_message::Kind::Prefetch(hint)) => {
                        if let Err(reason) = node.prefetch(&loaded, &hint) {
                            tracing::debug!(%reason, layer = hint.layer, "prefetch hint ignored");
                        }
                    }
                    None => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<NodeInfo>, Status> {
        let node = &self.0;
        let Ok(loaded) = node.loaded() else {
            let loading = moe_service::progress::current()
                .unwrap_or_else(|| "checking its expert shards".to_string());
            return Ok(Response::new(NodeInfo {
                node_id: node.node_id.clone(),
                high: wire_precision(node.pair.high) as i32,
                low: wire_precision(node.pair.low) as i32,
                queue_capacity: node.queue_capacity as u32,
                loading,
                ..NodeInfo::default()
            }));
        };
        let residency = &loaded.residency;
        let catalog = residency.catalog();
        let mut held: Vec<HeldExpert> = Vec::new();
        for (key, _) in catalog.experts() {
            let precision = wire_precision(key.format) as i32;
            match held.last_mut() {
                Some(h) if (h.layer, h.expert) == (key.layer, key.expert) => {
                    h.precisions.push(precision)
                }
                _ => held.push(HeldExpert {
                    layer: key.layer,
                    expert: key.expert,
                    precisions: vec![precision],
                }),
            }
        }
        let resident = residency.snapshot();
        let gpu = loaded.gpu.as_ref().map(|g| lock(g).snapshot());
        Ok(Response::new(NodeInfo {
            node_id: node.node_id.clone(),
            backend: if gpu.is_some() { "cuda" } else { "cpu" }.into(),
            high: wire_precision(node.pair.high) as i32,
            low: wire_precision(node.pair.low) as i32,
            experts: held,
            host_memory_bytes: residency.budget().as_flag(),
            ram_disk_bytes: catalog.file_bytes(),
            gpu_memory_bytes: gpu.map_or(0, |g| g.capacity_bytes),
            queue_depth: node.queued.load(Ordering::Relaxed) as u32,
            queue_capacity: node.queue_capacity as u32,
            hidden_size: catalog.hidden() as u32,
            epoch: node.placement_epoch().0,
            max_rows: node.limits.max_rows as u32,
            max_message_bytes: node.limits.max_bytes as u64,
            hot_set_bytes: resident.hot_bytes,
            hot_experts: resident.hot as u32,
            cold_experts: resident.cold as u32,
            prefetch_hints_received: node.hints_received.load(Ordering::Relaxed),
            prefetch_hints_acted_on: node.hints_acted_on.load(Ordering::Relaxed),
            prefetch_loads: resident.staged_loads,
            cold_loads: resident.cold_loads,
            gpu_used_bytes: gpu.map_or(0, |g| g.used_bytes),
            gpu_hits: gpu.map_or(0, |g| g.stats.high.hits + g.stats.low.hits),
            gpu_misses: gpu.map_or(0, |g| g.stats.high.misses + g.stats.low.misses),
            gpu_downgraded: gpu.map_or(0, |g| g.stats.downgraded_loads + g.stats.downgraded_hits),
            gpu_fallbacks: loaded.gpu_fallbacks.load(Ordering::Relaxed),
            loading: moe_service::progress::current().unwrap_or_default(),
            queue_downgraded: node.queue_downgraded.load(Ordering::Relaxed),
            fallbacks: fallbacks(&catalog, node.pair),
            unloadable: load_failures(&node.unloadable()),
            not_serving: node.not_serving().unwrap_or_default(),
            expert_shape: Some(expert_shape(catalog.dims())),
        }))
    }
}

/// The catalog's matrices stored wider than `pair` asks, as `Info` lists them.
/// The wire form of the node's expert shape.
fn expert_shape(dims: ExpertDims) -> ExpertShape {
    ExpertShape {
        activation: dims.shape.activation.name(),
        biased: dims.shape.biased,
        intermediate_size: dims.intermediate as u32,
    }
}

fn fallbacks(catalog: &Catalog, pair: PrecisionPair) -> Vec<FormatFallback> {
    catalog
        .fallbacks(pair)
        .into_iter()
        .map(|(matrix, fit)| FormatFallback {
            asked: wire_precision(fit.asked) as i32,
            stored: wire_precision(fit.format) as i32,
            matrix: matrix.to_string(),
            reason: fit.reason().unwrap_or_default(),
        })
        .collect()
}

/// The experts the node could not load, as `Info` lists them: by cause, each with the formats
/// that failed.
fn load_failures(unloadable: &Unloadable) -> Vec<LoadFailure> {
    unloadable
        .records()
        .into_iter()
        .map(|r| LoadFailure {
            experts: r
                .experts
                .iter()
                .map(|&(layer, expert)| HeldExpert {
                    layer,
                    expert,
                    precisions: unloadable
                        .formats((layer, expert))
                        .map(|f| wire_precision(f) as i32)
                        .collect(),
                })
                .collect(),
            cause: r.cause,
            no_room: r.no_room,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_policy::Stats;
    use crate::gpu::{Fetch, GpuRun, GpuSnapshot};
    use crate::hot_set::Budget;
    use crate::selection::ExpertSelection;
    use crate::store;
    use moe_proto::expert::{ExpertWork, Precision as WirePrecision};
    use moe_proto::tensor;

    const HIDDEN: usize = 64;
    const PAIR: PrecisionPair = PrecisionPair {
        high: Format::F16,
        low: Format::Q4,
    };

    /// Layer 0, experts 0-1 of the Mixtral fixture, all resident.
    fn residency() -> (tempfile::TempDir, Residency) {
        let dir = tempfile::tempdir().unwrap();
        let fixture =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mixtral");
        let selection: ExpertSelection = "0:0-1".parse().unwrap();
        let (catalog, resident, _) =
            store::open(&fixture, dir.path(), &selection, PAIR, Budget::Unlimited).unwrap();
        (dir, Residency::new(catalog, Budget::Unlimited, resident))
    }

    fn request(batch_id: u64) -> LayerRequest {
        LayerRequest {
            batch_id,
            epoch: 0,
            layer: 0,
            tokens: Some(tensor::encode(&[0.5; HIDDEN], 1, HIDDEN, WireDtype::F32).unwrap()),
            experts: vec![ExpertWork {
                expert: 0,
                rows: vec![0],
                weights: vec![1.0],
                precisions: Vec::new(),
                unimportance: Vec::new(),
            }],
            reply_dtype: 0,
            per_pair: false,
            traceparent: String::new(),
            ahead: None,
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_counts_nothing() {
        let node = Node::new("n".into(), PAIR, Limits::default(), 1);
        let (_dir, residency) = residency();
        let residency = Arc::new(residency);
        let stager = Stager::spawn(Arc::clone(&residency), 1).unwrap();
        // No compute thread drains this queue, so its one slot stays taken.
        let (jobs, _queue) = std::sync::mpsc::sync_channel(1);
        let loaded = Loaded {
            residency,
            jobs,
            stager,
            gpu: None,
            gpu_fallbacks: Arc::new(AtomicU64::new(0)),
        };
        let (replies, _outbound) = mpsc::channel(4);

        assert!(node.submit(&loaded, &request(1), &replies).is_ok());
        let refused = node.submit(&loaded, &request(2), &replies).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("queue is full"),
            "{}",
            refused.message()
        );
        assert_eq!(node.queued.load(Ordering::Relaxed), 1);

        let mut wrong = request(3);
        wrong.experts[0].expert = 9;
        assert_eq!(
            node.submit(&loaded, &wrong, &replies).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        node.set_placement_epoch(Epoch(2));
        assert_eq!(
            node.submit(&loaded, &request(4), &replies)
                .unwrap_err()
                .code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            node.queued.load(Ordering::Relaxed),
            1,
            "a refused batch is not counted"
        );
    }

    #[test]
    fn info_says_what_a_loading_node_is_doing() {
        let node = Arc::new(Node::new("n".into(), PAIR, Limits::default(), 4));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let info = |node: &Arc<Node>| {
            runtime
                .block_on(NodeService(Arc::clone(node)).info(Request::new(InfoRequest {})))
                .unwrap()
                .into_inner()
        };
        let loading = info(&node);
        assert!(!loading.loading.is_empty(), "{loading:?}");
        assert_eq!((loading.node_id.as_str(), loading.queue_capacity), ("n", 4));
        assert!(loading.experts.is_empty());
        let (_dir, residency) = residency();
        node.serve_experts(Arc::new(residency), Pool::new(1).unwrap(), None)
            .unwrap();
        let serving = info(&node);
        assert_eq!(serving.experts.len(), 2);
    }

    #[test]
    fn serving_twice_is_refused() {
        let node = Node::new("n".into(), PAIR, Limits::default(), 4);
        let (_dir, first) = residency();
        node.serve_experts(Arc::new(first), Pool::new(1).unwrap(), None)
            .unwrap();
        let (_dir2, second) = residency();
        let refused = node
            .serve_experts(Arc::new(second), Pool::new(1).unwrap(), None)
            .unwrap_err();
        assert!(matches!(refused, NodeError::AlreadyServing), "{refused}");
    }

    /// An accelerator that answers every batch with ones at the low precision (reading the low
    /// copies through `fetch`), or declines every batch, and records the prefetches it gets.
    struct Scripted {
        take: bool,
        prefetched: Arc<Mutex<Vec<ShardKey>>>,
    }

    impl Accelerator for Scripted {
        fn execute(
            &mut self,
            work: &LayerWork,
            fetch: &Fetch<'_>,
        ) -> Result<Option<GpuRun>, WorkError> {
            if !self.take {
                return Ok(None);
            }
            for e in &work.experts {
                fetch(ShardKey {
                    layer: work.layer,
                    expert: e.expert,
                    format: PAIR.low,
                })?;
            }
            Ok(Some(GpuRun {
                out: vec![1.0; work.tokens.len()],
                used: vec![PAIR.low; work.experts.len()],
                copied_bytes: 0,
            }))
        }

        fn prefetch(&mut self, keys: &[ShardKey], _fetch: &Fetch<'_>) {
            self.prefetched.lock().unwrap().extend_from_slice(keys);
        }

        fn snapshot(&self) -> GpuSnapshot {
            GpuSnapshot {
                capacity_bytes: 1 << 20,
                used_bytes: 0,
                stats: Stats::default(),
            }
        }
    }

    #[test]
    fn the_gpu_answers_the_batches_it_takes_and_the_cpu_the_rest() {
        for take in [true, false] {
            let node = Arc::new(Node::new("n".into(), PAIR, Limits::default(), 4));
            let (_dir, residency) = residency();
            let prefetched = Arc::new(Mutex::new(Vec::new()));
            let gpu = Scripted {
                take,
                prefetched: Arc::clone(&prefetched),
            };
            node.serve_experts(
                Arc::new(residency),
                Pool::new(1).unwrap(),
                Some(Box::new(gpu)),
            )
            .unwrap();
            let loaded = node.loaded().unwrap();
            let (replies, mut outbound) = mpsc::channel(4);
            let mut answer = |batch_id| {
                node.submit(&loaded, &request(batch_id), &replies).unwrap();
                match outbound.blocking_recv().unwrap().unwrap().kind {
                    Some(server_message::Kind::Reply(r)) => r,
                    other => panic!("batch {batch_id}: {other:?}"),
                }
            };
            let reply = answer(1);
            let out = tensor::decode(reply.output.as_ref().unwrap(), HIDDEN, &Limits::default())
                .unwrap()
                .data;
            let (low, high) = (WirePrecision::Q4 as i32, WirePrecision::F16 as i32);
            if take {
                assert!(out.iter().all(|&v| v == 1.0));
                assert_eq!(reply.precisions[0].used, [low]);
            } else {
                assert!(out.iter().any(|&v| v != 1.0));
                assert_eq!(reply.precisions[0].used, [high]);
            }

            let hint = PrefetchHint {
                epoch: 0,
                layer: 0,
                experts: vec![1, 9],
                precision: WirePrecision::Low as i32,
            };
            node.prefetch(&loaded, &hint).unwrap();
            // Tasks run in order: once batch 2 is answered, the hint has reached the GPU.
            answer(2);
            let low_copy = ShardKey {
                layer: 0,
                expert: 1,
                format: PAIR.low,
            };
            assert_eq!(*prefetched.lock().unwrap(), [low_copy]);

            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let info = runtime
                .block_on(NodeService(Arc::clone(&node)).info(Request::new(InfoRequest {})))
                .unwrap()
                .into_inner();
            assert_eq!(
                (info.backend.as_str(), info.gpu_memory_bytes),
                ("cuda", 1 << 20)
            );
            assert_eq!(info.gpu_fallbacks, if take { 0 } else { 2 });
        }
    }
}
