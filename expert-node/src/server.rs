//! The gRPC face of the node: `ExpertService` (one bidirectional `Process` stream per gateway,
//! `Info`) and `grpc.health.v1`. Layer requests are decoded and validated on the stream's task,
//! then handed to one compute thread through a bounded queue: a full queue refuses the batch with
//! RESOURCE_EXHAUSTED at once. A bad batch is answered with a `BatchError` and the stream goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use moe_kernels::Pool;
use moe_proto::expert::expert_service_server::ExpertService;
use moe_proto::expert::{
    BatchError, ClientMessage, HeldExpert, InfoRequest, LayerRequest, NodeInfo, ServerMessage,
    Timings, client_message, server_message,
};
use moe_proto::tensor::{Limits, WireDtype};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::request::{layer_work, reply, wire_precision};
use crate::work::{ExpertSet, LayerWork, PrecisionPair};

type Replies = mpsc::Sender<Result<ServerMessage, Status>>;

/// A validated batch waiting for compute.
struct Job {
    batch_id: u64,
    work: LayerWork,
    arrived: Instant,
    replies: Replies,
}

/// What the node serves once its experts are loaded.
pub struct Loaded {
    pub experts: ExpertSet,
    jobs: SyncSender<Job>,
}

pub struct Node {
    pub node_id: String,
    pub pair: PrecisionPair,
    pub limits: Limits,
    pub queue_capacity: usize,
    queued: Arc<AtomicUsize>,
    loaded: OnceLock<Arc<Loaded>>,
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
            loaded: OnceLock::new(),
        }
    }

    /// Starts the compute thread for `experts` and begins serving them.
    pub fn serve_experts(&self, experts: ExpertSet, pool: Pool) -> std::io::Result<()> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(self.queue_capacity);
        let loaded = Arc::new(Loaded { experts, jobs });
        let worker = Arc::clone(&loaded);
        let (pair, queued) = (self.pair, Arc::clone(&self.queued));
        std::thread::Builder::new()
            .name("expert-compute".into())
            .spawn(move || {
                for job in queue {
                    queued.fetch_sub(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let hidden = worker.experts.hidden();
                    let message = worker
                        .experts
                        .execute(&job.work, pair, &pool)
                        .map_err(Status::from)
                        .and_then(|out| {
                            let timings = Timings {
                                queue_us: started.duration_since(job.arrived).as_micros() as u64,
                                compute_us: started.elapsed().as_micros() as u64,
                            };
                            reply(
                                job.batch_id,
                                &job.work,
                                &out,
                                hidden,
                                pair,
                                WireDtype::F32,
                                timings,
                            )
                        });
                    let message = match message {
                        Ok(r) => ServerMessage {
                            kind: Some(server_message::Kind::Reply(r)),
                        },
                        Err(status) => batch_error(job.batch_id, &status),
                    };
                    // A gateway that went away just drops its replies.
                    let _ = job.replies.blocking_send(Ok(message));
                }
            })?;
        let _ = self.loaded.set(loaded);
        Ok(())
    }

    fn loaded(&self) -> Result<Arc<Loaded>, Status> {
        self.loaded
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("the node is still loading its experts"))
    }

    /// Decodes, validates and queues one request; `Err` is the batch's refusal.
    fn submit(&self, loaded: &Loaded, req: &LayerRequest, replies: &Replies) -> Result<(), Status> {
        let arrived = Instant::now();
        let work = layer_work(req, loaded.experts.hidden(), &self.limits)?;
        loaded.experts.validate(&work, self.pair)?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            batch_id: req.batch_id,
            work,
            arrived,
            replies: replies.clone(),
        };
        loaded.jobs.try_send(job).map_err(|e| {
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
                    // Experts live in host memory on the CPU backend: nothing to stage.
                    Some(client_message::Kind::Prefetch(_)) | None => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<NodeInfo>, Status> {
        let loaded = self.0.loaded()?;
        let mut held: Vec<HeldExpert> = Vec::new();
        for (layer, expert, format) in loaded.experts.keys() {
            let precision = wire_precision(format) as i32;
            match held
                .iter_mut()
                .find(|h| h.layer == layer && h.expert == expert)
            {
                Some(h) => h.precisions.push(precision),
                None => held.push(HeldExpert {
                    layer,
                    expert,
                    precisions: vec![precision],
                }),
            }
        }
        held.sort_by_key(|h| (h.layer, h.expert));
        Ok(Response::new(NodeInfo {
            node_id: self.0.node_id.clone(),
            backend: "cpu".into(),
            high: wire_precision(self.0.pair.high) as i32,
            low: wire_precision(self.0.pair.low) as i32,
            experts: held,
            host_memory_bytes: loaded.experts.weight_bytes() as u64,
            ram_disk_bytes: 0,
            gpu_memory_bytes: 0,
            queue_depth: self.0.queued.load(Ordering::Relaxed) as u32,
            queue_capacity: self.0.queue_capacity as u32,
            hidden_size: loaded.experts.hidden() as u32,
            epoch: 0,
            max_rows: self.0.limits.max_rows as u32,
            max_message_bytes: self.0.limits.max_bytes as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_kernels::{Format, Matrix};
    use moe_model::moe::Expert;
    use moe_proto::expert::ExpertWork;
    use moe_proto::tensor;

    const HIDDEN: usize = 32;

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
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_counts_nothing() {
        let pair = PrecisionPair {
            high: Format::F32,
            low: Format::F32,
        };
        let node = Node::new("n".into(), pair, Limits::default(), 1);
        let m = |rows, cols| {
            Matrix::from_f32(rows, cols, &vec![0.1; rows * cols], Format::F32).unwrap()
        };
        let mut experts = ExpertSet::new(HIDDEN);
        experts.insert(
            0,
            0,
            Expert::from_matrices(&m(HIDDEN, HIDDEN), &m(HIDDEN, HIDDEN), m(HIDDEN, HIDDEN))
                .unwrap(),
        );
        // No compute thread drains this queue, so its one slot stays taken.
        let (jobs, _queue) = std::sync::mpsc::sync_channel(1);
        let loaded = Loaded { experts, jobs };
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
        assert_eq!(
            node.queued.load(Ordering::Relaxed),
            1,
            "a refused batch is not counted"
        );
    }
}
