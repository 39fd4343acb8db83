//! Both shells of the HTTP client against a loopback server that answers each connection with a
//! scripted response: whole responses (length, chunked, until close), a streamed completion, a
//! refused stream, and deadlines.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use moe_launch::LaunchError;
use moe_launch::http::{CompletionStream, Request, Streamed, blocking, completion, nonblocking};

/// A server on a loopback port that reads each request's head, then writes `pieces` with
/// `pause` between them and closes; its address.
fn serve(pieces: Vec<String>, pause: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut byte = [0];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            for piece in &pieces {
                let _ = stream.write_all(piece.as_bytes());
                std::thread::sleep(pause);
            }
        }
    });
    address
}

const WITHIN: Duration = Duration::from_secs(10);

/// The streamed completion `body` from `address`, through the blocking shell.
fn follow(address: &str, body: &serde_json::Value) -> Result<Streamed, LaunchError> {
    blocking::exchange(
        address,
        &completion(body),
        WITHIN,
        CompletionStream::default(),
    )
}

#[test]
fn a_whole_response_by_length_or_chunks_or_until_close() {
    let length = serve(
        owned(&["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        Duration::ZERO,
    );
    let response = blocking::call(&length, &Request::get("/"), WITHIN).unwrap();
    assert_eq!((response.status(), response.body.as_str()), (200, "ok"));

    let pieces = [
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n",
        "Transfer-Encoding: chunked\r\n\r\n4\r\nbu",
        "sy\r\n0\r\n\r\n",
    ];
    let chunked = serve(owned(&pieces), Duration::from_millis(10));
    let response = blocking::call(&chunked, &Request::post("/", "{}"), WITHIN).unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.header("retry-after"), Some("2"));
    assert_eq!(response.body, "busy");
    assert!(response.head.text.starts_with("HTTP/1.1 503"));

    let close = serve(
        owned(&["HTTP/1.1 200 OK\r\n\r\nto the end"]),
        Duration::ZERO,
    );
    let response = blocking::call(&close, &Request::get("/"), WITHIN).unwrap();
    assert_eq!(response.body, "to the end");
}

/// A streamed completion of the tokens `A` and `B`: its head, one piece per event.
fn stream() -> Vec<String> {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
    let token = |text: &str| format!(r#"{{"choices":[{{"text":"{text}","finish_reason":null}}]}}"#);
    let events = [token("A"), token("B"), "[DONE]".to_string()];
    let chunk = |event: &String| {
        let data = format!("data: {event}\n\n");
        format!("{:x}\r\n{data}\r\n", data.len())
    };
    let mut pieces: Vec<String> = std::iter::once(head)
        .chain(events.iter().map(chunk))
        .collect();
    pieces.push("0\r\n\r\n".to_string());
    pieces
}

/// `pieces` as owned strings.
fn owned(pieces: &[&str]) -> Vec<String> {
    pieces.iter().map(|p| p.to_string()).collect()
}

#[test]
fn a_streamed_completion_gives_each_token_as_it_arrives() {
    let address = serve(stream(), Duration::from_millis(30));
    let body = serde_json::json!({"stream": true});
    let streamed = follow(&address, &body).unwrap();
    assert_eq!(streamed.text, "AB");
    assert_eq!(streamed.tokens.len(), 2);
    let gap = streamed.tokens[1] - streamed.tokens[0];
    assert!(gap >= Duration::from_millis(20), "{gap:?}");
}

#[tokio::test]
async fn the_tokio_shell_reads_the_same() {
    let address = serve(stream(), Duration::ZERO);
    let body = serde_json::json!({"stream": true});
    let streamed = nonblocking::exchange(
        &address,
        &completion(&body),
        WITHIN,
        CompletionStream::default(),
    )
    .await
    .unwrap();
    assert_eq!(streamed.text, "AB");
    assert_eq!(streamed.events.len(), 2);

    let refused = serve(
        owned(&["HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n"]),
        Duration::ZERO,
    );
    match nonblocking::exchange(
        &refused,
        &completion(&body),
        WITHIN,
        CompletionStream::default(),
    )
    .await
    {
        Err(LaunchError::Status(line)) => assert_eq!(line, "HTTP/1.1 429 Too Many"),
        other => panic!("{other:?}"),
    }
    let response = nonblocking::call(&refused, &Request::get("/"), WITHIN)
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
}

#[tokio::test]
async fn every_call_ends_by_its_deadline() {
    let slow = serve(
        owned(&["HTTP/1.1 200 OK\r\n", "\r\n"]),
        Duration::from_secs(5),
    );
    let within = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let blocked = blocking::call(&slow, &Request::get("/"), within);
    assert!(
        matches!(blocked, Err(LaunchError::Timeout { .. })),
        "{blocked:?}"
    );
    let waited = nonblocking::call(&slow, &Request::get("/"), within).await;
    assert!(
        matches!(waited, Err(LaunchError::Timeout { .. })),
        "{waited:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let nobody = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let refused = blocking::call(&nobody, &Request::get("/"), within);
    assert!(
        matches!(refused, Err(LaunchError::Connect { .. })),
        "{refused:?}"
    );
}
