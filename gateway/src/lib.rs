//! The gateway of a moe-cluster: what users talk to.
//!
//! * [`openai`]: the OpenAI-compatible request and response documents, their validation, and
//!   errors as OpenAI error JSON with their HTTP status.
//! * [`api_keys`]: the bearer keys the HTTP and gRPC APIs accept, compared in constant time.
//! * [`chat_template`]: HuggingFace chat templates (`tokenizer_config.json`) rendered with
//!   Jinja and the Python-compatible helpers the templates use.
//! * [`engine`]: the contract between the APIs and the generation engine (a job in, events out).
//! * [`grpc`]: `moe.gateway.v1.GatewayService`, streamed generation for other services.
//! * [`http`]: the OpenAI-compatible HTTP API (completions, chat, models, health) over an engine.
//! * [`front_door`]: how both APIs take connections: header, body and idle timeouts, a bound on
//!   connections, and the drain.
//! * [`metrics`]: the engine's metrics in the Prometheus text format, with vLLM's names.
//! * [`sequence`]: one sequence's decoding: sampling, end conditions, the text streamed.
//! * [`generator`]: the engine: continuous batching over the cluster on one generation thread.
//! * [`links`]: per expert node, calls, bytes, round-trip times and the node's own queue and
//!   compute time, as Prometheus series labelled by node.
//! * [`node_client`]: one persistent stream to an expert node, shared by every call.
//! * [`dispatch`]: one MoE layer's routed experts run on the nodes the placement names, with
//!   retries on replicas; [`dispatch::RemoteExperts`] plugs it into the model's forward pass.
//! * [`prediction`]: HOBBIT's stacked gating: the next layers' experts predicted from the current
//!   gate input, for prefetch hints, and the predictions' accuracy per distance.
//! * [`precalculation`]: DAOP's pre-calculation: a later MoE layer's predicted experts run with
//!   an earlier layer's, saving that layer's round trip.
//! * [`process`]: this process's CPU time, memory and file descriptors, the standard
//!   `process_*` series.
//! * [`scheduler`]: continuous batching: which sequences run each step, within the KV budget.

pub mod api_keys;
pub mod chat_template;
pub mod dispatch;
pub mod engine;
pub mod exposition;
pub mod front_door;
pub mod generator;
pub mod grpc;
pub mod http;
pub mod links;
pub mod metric_names;
pub mod metrics;
pub mod node_client;
pub mod openai;
pub mod policy;
pub mod precalculation;
pub mod prediction;
pub mod process;
pub mod readiness;
pub mod scheduler;
pub mod sequence;
