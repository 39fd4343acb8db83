//! The gateway's HTTP API in tests, through the one client ([`moe_launch::http`]'s tokio shell):
//! a fresh connection per call, so a test sees exactly the status, head and body the server
//! wrote. Calls panic with the reason when there is no answer, except where a test waits on one.

use std::time::{Duration, Instant};

use moe_launch::http::{CompletionStream, Request, Response, completion, nonblocking};

pub use moe_launch::http::Streamed;

/// How long a request may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// How long a `GET` may take: the probes and `/metrics` answer at once.
const GET_WITHIN: Duration = Duration::from_secs(10);

/// The value of the sample of `name` in the exposition `text` that carries every label of
/// `labels` (whatever else it carries: every series has `model_name`), if there is one.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (series, value) = rest.rsplit_once(' ')?;
        let inner = match series {
            "" => "",
            braced => braced.strip_prefix('{')?.strip_suffix('}')?,
        };
        let has = |(k, v): &(&str, &str)| inner.split(',').any(|l| l == format!("{k}=\"{v}\""));
        labels.iter().all(has).then(|| value.parse().ok()).flatten()
    })
}

/// `POST path` with a JSON body over HTTP/1.1; returns the status and the body.
pub async fn post(address: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    post_raw(address, path, &body.to_string()).await
}

/// `POST path` with `body` as it is; the status and the body as JSON.
pub async fn post_raw(address: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = post_with_head(address, path, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `POST path` with `body` as it is; the status, the response's head (status line and headers)
/// and its body.
pub async fn post_with_head(address: &str, path: &str, body: &str) -> (u16, String, String) {
    let request = Request::post(path, body);
    let response = nonblocking::call(address, &request, ANSWER_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (response.status(), response.head.text, response.body)
}

/// The text of a streamed completion: the `text` of every SSE event, in order, until
/// `data: [DONE]`.
pub async fn post_streamed(address: &str, body: &serde_json::Value) -> String {
    stream_completion(address, body, ANSWER_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("a streamed completion: {e}"))
        .text
}

/// `POST /v1/completions` with `body` (which asks for `stream`), read as it arrives. An error
/// says what went wrong: no connection, a status other than 200, an error event, the connection
/// closed before `data: [DONE]`, or no end within `within`.
pub async fn stream_completion(
    address: &str,
    body: &serde_json::Value,
    within: Duration,
) -> Result<Streamed, String> {
    let stream = CompletionStream::default();
    nonblocking::exchange(address, &completion(body), within, stream)
        .await
        .map_err(|e| e.to_string())
}

/// The response to `GET path`, or `None` when nothing answers.
pub async fn get(address: &str, path: &str) -> Option<Response> {
    nonblocking::call(address, &Request::get(path), GET_WITHIN)
        .await
        .ok()
}

/// The body of the response to `GET path`, or `None` when nothing answers.
pub async fn get_text(address: &str, path: &str) -> Option<String> {
    get(address, path).await.map(|response| response.body)
}

/// Waits until `GET /health/ready` answers 200.
pub async fn wait_ready(address: &str) {
    let start = Instant::now();
    loop {
        if get(address, "/health/ready")
            .await
            .is_some_and(|r| r.status() == 200)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
