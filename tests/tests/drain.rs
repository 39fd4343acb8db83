//! A gateway stopped with SIGTERM while requests run: it stops taking connections, finishes every
//! request it accepted (status 200, ended by length or a stop token) and exits cleanly. Real processes: etcd, a
//! `coordinator`, an `expert-node` and the `gateway`.

use std::process::Command;
use std::time::Duration;

use moe_tests::EtcdServer;
use moe_tests::http::{get_text, metric, post, wait_ready};
use moe_tests::servers;

const CLUSTER: &str = "drain";
const TOKENS: u64 = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_requests_in_flight_and_refuses_new_ones() {
    let etcd = EtcdServer::start().await;
    let shards = tempfile::tempdir().unwrap();
    let endpoint = etcd.endpoint();
    let _coordinator = servers::coordinator(&endpoint, CLUSTER, &[]);
    let command = Command::new(servers::node_binary());
    let _node = servers::node(
        command,
        &endpoint,
        CLUSTER,
        "a",
        "127.0.0.1:0",
        shards.path(),
    );
    let gateway = servers::gateway(&endpoint, CLUSTER, &[]);
    let address = gateway.address.clone();
    wait_ready(&address).await;

    let requests: Vec<_> = (0..4u32)
        .map(|i| {
            let address = address.clone();
            let body = serde_json::json!({"model": "mixtral", "prompt": [1 + i, 7, 9], "max_tokens": TOKENS, "temperature": 0});
            tokio::spawn(async move { post(&address, "/v1/completions", &body).await })
        })
        .collect();
    // SIGTERM as soon as the gateway reports requests running.
    let started = std::time::Instant::now();
    loop {
        let metrics = get_text(&address, "/metrics").await.unwrap_or_default();
        let running = metric(&metrics, "moe:num_requests_running", &[]).unwrap_or(0.0);
        if running > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no request started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let running = requests.iter().filter(|r| !r.is_finished()).count();
    assert!(
        running > 0,
        "the requests ended before SIGTERM: nothing to drain"
    );
    let status =
        tokio::task::spawn_blocking(move || gateway.terminate(Duration::from_secs(60)).unwrap())
            .await
            .unwrap();
    assert!(status.success(), "the gateway exited with {status}");
    for (i, request) in requests.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        let reason = body["choices"][0]["finish_reason"].as_str();
        assert!(
            matches!(reason, Some("length" | "stop")),
            "request {i}: {body}"
        );
        assert!(
            body["usage"]["completion_tokens"].as_u64() > Some(0),
            "request {i}: {body}"
        );
    }
    assert!(
        get_text(&address, "/health/live").await.is_none(),
        "the gateway still answers after it exited"
    );
    println!("{running} of 4 requests were running at SIGTERM; every one finished");
}
