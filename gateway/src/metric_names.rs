//! Every series the gateway exports on `/metrics`, named once: the exporters write these
//! constants and the readers (`moe status`, the benchmarks, through [`crate::exposition`]) read
//! them, so a renamed series cannot silently zero a column. Named as vLLM names its own, with the
//! `moe:` prefix, so existing dashboards map over; the `process_*` series take the Prometheus
//! client libraries' standard names. Each says its kind and its labels; every sample also
//! carries `model_name`, the served model's name, as vLLM's do.

/// Requests in the running batch. (gauge).
pub const NUM_REQUESTS_RUNNING: &str = "moe:num_requests_running";
/// Requests waiting to start. (gauge).
pub const NUM_REQUESTS_WAITING: &str = "moe:num_requests_waiting";
/// Fraction of the KV cache budget in use. (gauge).
pub const KV_CACHE_USAGE_PERC: &str = "moe:kv_cache_usage_perc";
/// KV cache blocks held by sequences. (gauge).
pub const KV_CACHE_BLOCKS_IN_USE: &str = "moe:kv_cache_blocks_in_use";
/// Sequences preempted to free KV blocks. (counter).
pub const NUM_PREEMPTIONS_TOTAL: &str = "moe:num_preemptions_total";
/// Expert calls retried on a replica. (counter).
pub const EXPERT_CALL_RETRIES_TOTAL: &str = "moe:expert_call_retries_total";
/// Protobuf bytes of layer requests sent to expert nodes. (counter).
pub const EXPERT_BYTES_SENT_TOTAL: &str = "moe:expert_bytes_sent_total";
/// Protobuf bytes of the expert nodes' replies. (counter).
pub const EXPERT_BYTES_RECEIVED_TOTAL: &str = "moe:expert_bytes_received_total";
/// Time waiting for expert nodes (network and their compute). (counter).
pub const EXPERT_SECONDS_TOTAL: &str = "moe:expert_seconds_total";
/// Model steps over the running batch. (counter).
pub const STEPS_TOTAL: &str = "moe:steps_total";
/// Time in model steps (attention, routing and expert calls). (counter).
pub const STEP_SECONDS_TOTAL: &str = "moe:step_seconds_total";
/// Prompt tokens admitted. (counter).
pub const PROMPT_TOKENS_TOTAL: &str = "moe:prompt_tokens_total";
/// Tokens generated. (counter).
pub const GENERATION_TOKENS_TOTAL: &str = "moe:generation_tokens_total";
/// Requests finished, by reason. (counter). Labels: `finished_reason`.
pub const REQUEST_SUCCESS_TOTAL: &str = "moe:request_success_total";
/// Requests that failed. (counter).
pub const REQUEST_FAILURE_TOTAL: &str = "moe:request_failure_total";
/// Time to the first generated token. (histogram).
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "moe:time_to_first_token_seconds";
/// Time between generated tokens. (histogram).
pub const INTER_TOKEN_LATENCY_SECONDS: &str = "moe:inter_token_latency_seconds";
/// Time from admission to the last token. (histogram).
pub const E2E_REQUEST_LATENCY_SECONDS: &str = "moe:e2e_request_latency_seconds";
/// Layer requests sent to the node. (counter). Labels: `node`.
pub const EXPERT_NODE_CALLS_TOTAL: &str = "moe:expert_node_calls_total";
/// Layer requests to the node that failed. (counter). Labels: `node`.
pub const EXPERT_NODE_FAILURES_TOTAL: &str = "moe:expert_node_failures_total";
/// Request bytes sent to the node. (counter). Labels: `node`.
pub const EXPERT_NODE_BYTES_SENT_TOTAL: &str = "moe:expert_node_bytes_sent_total";
/// Reply bytes received from the node. (counter). Labels: `node`.
pub const EXPERT_NODE_BYTES_RECEIVED_TOTAL: &str = "moe:expert_node_bytes_received_total";
/// Time the node's replies say they waited in its queue. (counter). Labels: `node`.
pub const EXPERT_NODE_QUEUE_SECONDS_TOTAL: &str = "moe:expert_node_queue_seconds_total";
/// Time the node's replies say they computed. (counter). Labels: `node`.
pub const EXPERT_NODE_COMPUTE_SECONDS_TOTAL: &str = "moe:expert_node_compute_seconds_total";
/// Round-trip time of layer requests to the node, summed. (counter). Labels: `node`.
pub const EXPERT_NODE_RTT_SECONDS_TOTAL: &str = "moe:expert_node_rtt_seconds_total";
/// Round-trip time of layer requests to the node. (histogram). Labels: `node`.
pub const EXPERT_NODE_RTT_SECONDS: &str = "moe:expert_node_rtt_seconds";
/// The sum of [`EXPERT_NODE_RTT_SECONDS`]'s observations. Labels: `node`.
pub const EXPERT_NODE_RTT_SECONDS_SUM: &str = "moe:expert_node_rtt_seconds_sum";
/// The count of [`EXPERT_NODE_RTT_SECONDS`]'s observations. Labels: `node`.
pub const EXPERT_NODE_RTT_SECONDS_COUNT: &str = "moe:expert_node_rtt_seconds_count";
/// The precision ladder's rung on the node's link. (gauge). Labels: `node`.
pub const EXPERT_LINK_RUNG: &str = "moe:expert_link_rung";
/// Whether the node's link is saturated. (gauge). Labels: `node`.
pub const EXPERT_LINK_SATURATED: &str = "moe:expert_link_saturated";
/// The link's unloaded round-trip time. (gauge). Labels: `node`.
pub const EXPERT_LINK_BASELINE_SECONDS: &str = "moe:expert_link_baseline_seconds";
/// Layer requests in flight on the link. (gauge). Labels: `node`.
pub const EXPERT_LINK_BUSY: &str = "moe:expert_link_busy";
/// Time the link spent at each rung. (counter). Labels: `node`, `rung`.
pub const EXPERT_LINK_RUNG_SECONDS_TOTAL: &str = "moe:expert_link_rung_seconds_total";
/// (token, expert) pairs planned for the node, by precision (`skip`: not sent). (counter). Labels: `node`, `precision`.
pub const EXPERT_PAIRS_TOTAL: &str = "moe:expert_pairs_total";
/// Pairs sent to a replica on a less loaded link instead of low on a saturated one. (counter). Labels: `node`.
pub const EXPERT_PAIRS_REROUTED_TOTAL: &str = "moe:expert_pairs_rerouted_total";
/// Pairs of a later layer sent to the node with an earlier layer's request, pre-calculated from
/// that layer's input. (counter). Labels: `node`.
pub const EXPERT_PAIRS_PRECALCULATED_TOTAL: &str = "moe:expert_pairs_precalculated_total";
/// Whether the node has loaded the current placement. (gauge). Labels: `node`.
pub const EXPERT_NODE_PLACEMENT_LOADED: &str = "moe:expert_node_placement_loaded";
/// Prefetch hints sent to the node. (counter). Labels: `node`.
pub const EXPERT_PREFETCH_HINTS_TOTAL: &str = "moe:expert_prefetch_hints_total";
/// Tokens routed to each expert. (counter). Labels: `layer`, `expert`.
pub const EXPERT_ROUTED_TOKENS_TOTAL: &str = "moe:expert_routed_tokens_total";
/// Predicted (token, expert) pairs, by layers ahead. (counter). Labels: `distance`.
pub const EXPERT_PREDICTION_PAIRS_TOTAL: &str = "moe:expert_prediction_pairs_total";
/// Predicted pairs the router then chose. (counter). Labels: `distance`.
pub const EXPERT_PREDICTION_HITS_TOTAL: &str = "moe:expert_prediction_hits_total";
/// MoE layers answered from an earlier layer's pre-calculation, each a round trip saved. (counter).
pub const PRECALCULATED_LAYERS_TOTAL: &str = "moe:precalculated_layers_total";
/// (token, expert) pairs the router chose in pre-calculated layers. (counter).
pub const PRECALCULATED_ROUTED_PAIRS_TOTAL: &str = "moe:precalculated_routed_pairs_total";
/// Of those, the pairs that were among the pre-calculated ones. (counter).
pub const PRECALCULATED_HITS_TOTAL: &str = "moe:precalculated_hits_total";
/// Share of predicted pairs the router chose. (gauge). Labels: `distance`.
pub const EXPERT_PREDICTION_ACCURACY: &str = "moe:expert_prediction_accuracy";
/// User and system CPU time of the gateway process, in seconds. (counter).
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// The gateway process's resident memory, in bytes. (gauge).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// The gateway process's virtual memory, in bytes. (gauge).
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
/// When the gateway process started, in seconds since the Unix epoch. (gauge).
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
/// File descriptors the gateway process has open. (gauge).
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The most file descriptors the gateway process may open. (gauge).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// Arrival to a request's first step. (histogram).
pub const REQUEST_QUEUE_TIME_SECONDS: &str = "moe:request_queue_time_seconds";
/// A request's first step to its first token. (histogram).
pub const REQUEST_PREFILL_TIME_SECONDS: &str = "moe:request_prefill_time_seconds";
/// A request's first token to its last. (histogram).
pub const REQUEST_DECODE_TIME_SECONDS: &str = "moe:request_decode_time_seconds";
/// Prompt tokens per finished request. (histogram).
pub const REQUEST_PROMPT_TOKENS: &str = "moe:request_prompt_tokens";
/// Generated tokens per finished request. (histogram).
pub const REQUEST_GENERATION_TOKENS: &str = "moe:request_generation_tokens";
