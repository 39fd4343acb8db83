//! The expert protocol as a node receives it: protobuf bytes decoded as a `LayerRequest`, turned
//! into work with the wire tensor checked against the model's width, validated against the
//! experts the node holds, and run when valid; also `PrefetchHint` and `LayerReply` decoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moe_cargo_fuzz::{PAIR, experts};
use moe_expert_node::request::layer_work;
use moe_proto::expert::{LayerReply, LayerRequest, PrefetchHint};
use moe_proto::tensor;
use prost::Message as _;

fuzz_target!(|bytes: &[u8]| {
    let experts = experts();
    let hidden = experts.config.hidden_size;
    let limits = tensor::Limits::default();
    let _ = PrefetchHint::decode(bytes);
    if let Ok(reply) = LayerReply::decode(bytes)
        && let Some(output) = &reply.output
    {
        let _ = tensor::decode(output, hidden, &limits);
    }
    let Ok(request) = LayerRequest::decode(bytes) else {
        return;
    };
    let Ok((work, ahead)) = layer_work(&request, hidden, &limits) else {
        return;
    };
    for work in std::iter::once(&work).chain(ahead.as_ref()) {
        if experts.set.validate(work, PAIR).is_ok() {
            let _ = experts.set.execute(work, PAIR, &experts.pool);
        }
    }
});
