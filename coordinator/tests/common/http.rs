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
    (status, body.to_string())
}

/// The text of a streamed completion: the `text` of every SSE event of the chunked body, in
/// order, until `data: [DONE]`.
pub async fn post_streamed(address: &str, body: &serde_json::Value) -> String {
    let (status, raw) = post_bytes(address, "/v1/completions", &body.to_string()).await;
    assert_eq!(status, 200, "{raw}");
    let mut events = String::new();
    let mut rest = raw.as_str();
    // Chunked transfer coding: a hex size line, that many bytes, CRLF; a 0 size ends the body.
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        events.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    events
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| {
            let chunk: serde_json::Value = serde_json::from_str(data).unwrap();
            chunk["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
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
