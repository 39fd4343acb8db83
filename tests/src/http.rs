//! Plain HTTP/1.1 to a gateway in tests, over a fresh TCP connection per call, so a test sees
//! exactly the status, headers and (chunked) body the server wrote.

use std::time::{Duration, Instant};

/// `POST path` with a JSON body over HTTP/1.1; returns the status and the body.
pub async fn post(address: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    post_raw(address, path, &body.to_string()).await
}

/// `POST path` with `body` as it is; the status and the body as JSON.
pub async fn post_raw(address: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, body) = post_bytes(address, path, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// `POST path` with `body` as it is; the status and the raw body.
pub async fn post_bytes(address: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = post_with_head(address, path, body).await;
    (status, body)
}

/// `POST path` with `body` as it is; the status, the response's head (status line and headers)
/// and its raw body.
pub async fn post_with_head(address: &str, path: &str, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
        .await
        .expect("a response within 60 s")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The text of a streamed completion: the `text` of every SSE event, in order, until
/// `data: [DONE]`.
pub async fn post_streamed(address: &str, body: &serde_json::Value) -> String {
    stream_completion(address, body, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("a streamed completion: {e}"))
        .text
}

/// A streamed completion as it arrived: when each SSE event came, and their texts together.
pub struct Streamed {
    pub events: Vec<Instant>,
    pub text: String,
}

/// `POST /v1/completions` with `body` (which asks for `stream`), read as it arrives. An error
/// says what went wrong: no connection, a status other than 200, an error event, the connection
/// closed before `data: [DONE]`, or no end within `within`.
pub async fn stream_completion(
    address: &str,
    body: &serde_json::Value,
    within: Duration,
) -> Result<Streamed, String> {
    tokio::time::timeout(within, read_stream(address, body))
        .await
        .unwrap_or_else(|_| Err(format!("no end within {within:?}")))
}

async fn read_stream(address: &str, body: &serde_json::Value) -> Result<Streamed, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let mut next = async || {
        lines
            .next_line()
            .await
            .map_err(|e| format!("reading: {e}"))?
            .ok_or_else(|| "the connection closed before data: [DONE]".to_string())
    };
    let status = next().await?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status);
    }
    while !next().await?.trim_end().is_empty() {}
    // The chunked framing's size lines and blank lines are skipped: each event is a line.
    let mut streamed = Streamed {
        events: Vec::new(),
        text: String::new(),
    };
    loop {
        let line = next().await?;
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return Ok(streamed);
        }
        let event: serde_json::Value =
            serde_json::from_str(data).map_err(|e| format!("event {data}: {e}"))?;
        if !event["error"].is_null() {
            return Err(format!("error event: {data}"));
        }
        streamed.events.push(Instant::now());
        streamed
            .text
            .push_str(event["choices"][0]["text"].as_str().unwrap_or_default());
    }
}

/// The whole response to `GET path`, or `None` when nothing answers.
pub async fn get_text(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    String::from_utf8(response).ok()
}

/// Waits until `GET /health/ready` answers 200.
pub async fn wait_ready(address: &str) {
    let start = Instant::now();
    loop {
        if get_text(address, "/health/ready")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
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
