//! The gateway of a moe-cluster: what users talk to.
//!
//! * [`openai`]: the OpenAI-compatible request and response documents, their validation, and
//!   errors as OpenAI error JSON with their HTTP status.
//! * [`chat_template`]: HuggingFace chat templates (`tokenizer_config.json`) rendered with
//!   Jinja and the Python-compatible helpers the templates use.
//! * [`node_client`]: one persistent stream to an expert node, shared by every call.
//! * [`dispatch`]: one MoE layer's routed experts run on the nodes the placement names, with
//!   retries on replicas; [`dispatch::RemoteExperts`] plugs it into the model's forward pass.

pub mod chat_template;
pub mod dispatch;
pub mod node_client;
pub mod openai;
