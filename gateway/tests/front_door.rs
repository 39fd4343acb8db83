//! The front door's bounds on real sockets (127.0.0.1:0, raw TCP clients): a stalled body is
//! answered 408 and a stalled head, a silent connection and an idle keep-alive connection are
//! closed, each within its timeout (measured, never before it), while normal requests are served
//! meanwhile; connections above the bound wait until one ends; the drain finishes a request in
//! flight and refuses new connections; and on gRPC, a connection that sends nothing is dropped
//! after the header timeout and holds its place in the bound until then.
//!
//! Timeouts are 1 to 3 s and each is asserted within [`SLACK`] of its end: the machine may be
//! slow and shared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moe_gateway::chat_template::Message;
use moe_gateway::engine::{Engine, Event, Job};
use moe_gateway::front_door::FrontDoor;
use moe_gateway::http::{HttpOptions, router};
use moe_gateway::openai::{ApiError, FinishReason, Usage};
use moe_gateway::readiness::Readiness;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How much later than its timeout a connection may be cut off.
const SLACK: Duration = Duration::from_secs(2);
/// How long any exchange that no timeout governs may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Long timeouts and room for many connections; each test shortens what it measures.
fn front_door() -> FrontDoor {
    FrontDoor {
        header_timeout: secs(30),
        body_timeout: secs(30),
        idle_timeout: secs(30),
        max_connections: 64,
    }
}

// --- The engine and the server ---------------------------------------------------------------

/// Hands each job's event sender to the test, which ends the job when it likes.
struct HeldEngine {
    jobs: mpsc::UnboundedSender<mpsc::Sender<Event>>,
}

impl Engine for HeldEngine {
    fn model(&self) -> &str {
        "test-moe"
    }

    fn context_length(&self) -> usize {
        64
    }

    fn max_tokens_limit(&self) -> usize {
        16
    }

    fn vocab_size(&self) -> usize {
        1000
    }

    fn tokenize(&self, text: &str, _special: bool) -> Result<Vec<u32>, ApiError> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, ApiError> {
        Ok(format!("{ids:?}"))
    }

    fn chat_prompt(&self, messages: &[Message]) -> Result<String, ApiError> {
        Ok(messages.iter().map(|m| m.content.as_str()).collect())
    }

    fn submit(&self, _job: Job) -> Result<mpsc::Receiver<Event>, ApiError> {
        let (sender, receiver) = mpsc::channel(4);
        self.jobs
            .send(sender)
            .map_err(|_| ApiError::internal("the test went away"))?;
        Ok(receiver)
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            epoch: Some(1),
            experts: 1,
            missing: Vec::new(),
        }
    }
}

async fn finish(job: &mpsc::Sender<Event>) {
    let end = Event::Finished {
        reason: FinishReason::Stop,
        usage: Usage::new(1, 0),
        stop_reason: None,
    };
    job.send(end).await.unwrap();
}

/// The HTTP API behind `front_door` on 127.0.0.1:0.
struct Server {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
    jobs: mpsc::UnboundedReceiver<mpsc::Sender<Event>>,
}

async fn serve(front_door: FrontDoor) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (jobs, receiver) = mpsc::unbounded_channel();
    let engine: Arc<dyn Engine> = Arc::new(HeldEngine { jobs });
    let app = router(engine, HttpOptions::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(front_door.serve(listener, app, async {
        let _ = stopped.await;
    }));
    Server {
        address,
        stop: Some(stop),
        served,
        jobs: receiver,
    }
}

// --- A raw HTTP/1.1 client -------------------------------------------------------------------

/// A request head that keeps the connection open, announcing `length` body bytes.
fn head(method: &str, path: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    )
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.address).await.unwrap()
}

/// One response: the status, the head's lines in lower case, and the body (framed by its
/// content length, or by the end of the connection).
async fn response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map(|n| n.trim().parse::<usize>().unwrap());
            if length.is_some_and(|n| body.len() >= n) {
                let status = head[9..12].parse().unwrap();
                return (status, head, body.to_owned());
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed mid-response: {text}");
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the server to close `stream` (end of stream or a reset), reading and discarding
/// whatever comes first; returns when it closed.
async fn closed(stream: &mut TcpStream) -> Instant {
    let mut chunk = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    timeout(DEADLINE, wait)
        .await
        .expect("the server closed the connection")
}

/// A complete `GET path` on a connection of its own: its status.
async fn get(server: &Server, path: &str) -> u16 {
    let exchange = async {
        let mut stream = connect(server).await;
        stream
            .write_all(head("GET", path, 0).as_bytes())
            .await
            .unwrap();
        response(&mut stream).await.0
    };
    timeout(DEADLINE, exchange).await.expect("an answer")
}

fn assert_within(what: &str, elapsed: Duration, timeout: Duration) {
    println!("{what}: {elapsed:.2?} (timeout {timeout:?})");
    assert!(
        elapsed >= timeout,
        "{what} after {elapsed:?}, before the {timeout:?} timeout"
    );
    assert!(
        elapsed <= timeout + SLACK,
        "{what} after {elapsed:?}, long after the {timeout:?} timeout"
    );
}

/// A normal request `served` after a stalled one started came before the stalled one could be
/// cut off.
fn assert_served_meanwhile(served: Duration, timeout: Duration) {
    println!("a normal request was served after {served:.2?}");
    assert!(
        served < timeout,
        "the normal request waited for the stalled one"
    );
}

// --- HTTP ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stalled_body_is_answered_408_after_the_body_timeout_while_others_are_served() {
    let body_timeout = secs(2);
    let server = serve(FrontDoor {
        body_timeout,
        header_timeout: secs(1),
        ..front_door()
    })
    .await;
    let mut stalled = connect(&server).await;
    let request = head("POST", "/v1/completions", 100) + "{\"model\": ";
    stalled.write_all(request.as_bytes()).await.unwrap();
    let sent = Instant::now();

    assert_eq!(get(&server, "/v1/models").await, 200);
    let served = sent.elapsed();
    let (status, head, body) = timeout(DEADLINE, response(&mut stalled)).await.unwrap();
    let answered = sent.elapsed();
    assert_eq!(status, 408, "{head}\n{body}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["type"], "RequestTimeoutError", "{body}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("body timeout of 2 seconds"), "{message}");
    closed(&mut stalled).await;
    assert_served_meanwhile(served, body_timeout);
    // The header timeout (1 s) does not cut a request whose body is on its way.
    assert_within("the stalled body was answered 408", answered, body_timeout);
}

#[tokio::test]
async fn a_body_that_arrives_in_time_is_served() {
    let mut server = serve(FrontDoor {
        body_timeout: secs(2),
        ..front_door()
    })
    .await;
    let body = r#"{"model": "test-moe", "prompt": "say hi"}"#;
    let (first, rest) = body.split_at(10);
    let mut stream = connect(&server).await;
    let request = head("POST", "/v1/completions", body.len()) + first;
    stream.write_all(request.as_bytes()).await.unwrap();
    // A slow client, well within the timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let job = timeout(DEADLINE, server.jobs.recv())
        .await
        .unwrap()
        .unwrap();
    finish(&job).await;
    let (status, _, body) = timeout(DEADLINE, response(&mut stream)).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_stalled_head_is_dropped_after_the_header_timeout_while_others_are_served() {
    let header_timeout = secs(1);
    let server = serve(FrontDoor {
        header_timeout,
        ..front_door()
    })
    .await;
    let mut stalled = connect(&server).await;
    stalled
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    let sent = Instant::now();

    assert_eq!(get(&server, "/health/live").await, 200);
    let served = sent.elapsed();
    let dropped = closed(&mut stalled).await - sent;
    assert_served_meanwhile(served, header_timeout);
    assert_within("the stalled head was dropped", dropped, header_timeout);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let idle_timeout = secs(1);
    let server = serve(FrontDoor {
        idle_timeout,
        ..front_door()
    })
    .await;
    let opened = Instant::now();
    let mut silent = connect(&server).await;
    let closed_after = closed(&mut silent).await - opened;
    assert_within(
        "the silent connection was closed",
        closed_after,
        idle_timeout,
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let idle_timeout = secs(3);
    let server = serve(FrontDoor {
        idle_timeout,
        header_timeout: secs(1),
        ..front_door()
    })
    .await;
    let mut stream = connect(&server).await;
    let request = head("GET", "/health/live", 0);
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head, _) = timeout(DEADLINE, response(&mut stream)).await.unwrap();
    let answered = Instant::now();
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let idle = closed(&mut stream).await - answered;
    assert_within(
        "the idle keep-alive connection was closed",
        idle,
        idle_timeout,
    );
}

#[tokio::test]
async fn connections_above_the_bound_wait_until_one_ends() {
    let idle_timeout = secs(1);
    let server = serve(FrontDoor {
        idle_timeout,
        max_connections: 1,
        ..front_door()
    })
    .await;
    // The one connection allowed, kept open after its request.
    let mut first = connect(&server).await;
    let request = head("GET", "/health/live", 0);
    first.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        timeout(DEADLINE, response(&mut first)).await.unwrap().0,
        200
    );
    let idle_since = Instant::now();

    // The second is queued (its TCP handshake completes in the backlog) until the idle timeout
    // closes the first.
    let second = async {
        let mut second = connect(&server).await;
        second.write_all(request.as_bytes()).await.unwrap();
        let (status, _, _) = timeout(DEADLINE, response(&mut second)).await.unwrap();
        (status, idle_since.elapsed())
    };
    let (first_closed, (status, waited)) = tokio::join!(closed(&mut first), second);
    assert_eq!(status, 200);
    assert_within(
        "the first connection was closed",
        first_closed - idle_since,
        idle_timeout,
    );
    assert_within("the queued connection was served", waited, idle_timeout);
}

#[tokio::test]
async fn the_drain_finishes_a_request_in_flight_and_refuses_new_connections() {
    let mut server = serve(front_door()).await;
    let mut stream = connect(&server).await;
    let body =
        r#"{"model": "test-moe", "messages": [{"role": "user", "content": "hi"}], "stream": true}"#;
    let request = head("POST", "/v1/chat/completions", body.len()) + body;
    stream.write_all(request.as_bytes()).await.unwrap();
    let job = timeout(DEADLINE, server.jobs.recv())
        .await
        .unwrap()
        .unwrap();
    // The stream's first event (the assistant's role) is out: the request is in flight.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let mut chunk = [0u8; 1024];
        let n = timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the first event");
        seen.extend_from_slice(&chunk[..n]);
    }

    server.stop.take().unwrap().send(()).unwrap();
    let refused = async {
        while let Ok(late) = TcpStream::connect(server.address).await {
            drop(late);
            tokio::task::yield_now().await;
        }
    };
    timeout(DEADLINE, refused)
        .await
        .expect("new connections refused");
    assert!(!server.served.is_finished(), "the drain did not wait");

    finish(&job).await;
    let mut rest = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("data: [DONE]"), "{rest}");
    timeout(DEADLINE, server.served).await.unwrap().unwrap();
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_and_closed_with_goaway_when_idle() {
    use axum::body::Body;
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let idle_timeout = secs(1);
    let server = serve(FrontDoor {
        idle_timeout,
        ..front_door()
    })
    .await;
    let stream = connect(&server).await;
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = axum::http::Request::get(format!("http://{}/v1/models", server.address))
        .body(Body::empty())
        .unwrap();
    let response = timeout(DEADLINE, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let answered = Instant::now();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
    drop(response);
    // The server's GOAWAY ends the connection cleanly.
    timeout(DEADLINE, connection)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let idle = answered.elapsed();
    assert_within("the idle HTTP/2 connection was closed", idle, idle_timeout);
}

// --- gRPC ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_silent_grpc_connection_holds_its_place_until_the_header_timeout_drops_it() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let header_timeout = secs(1);
    let front_door = FrontDoor {
        header_timeout,
        max_connections: 1,
        ..front_door()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(front_door.grpc_incoming(listener)),
    );
    let opened = Instant::now();
    let mut silent = TcpStream::connect(address).await.unwrap();

    // The bound's one place is the silent connection's until it is dropped.
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = HealthCheckRequest {
            service: String::new(),
        };
        HealthClient::new(channel).check(request).await.unwrap()
    };
    let check = async {
        let reply = timeout(DEADLINE, check).await.expect("a health answer");
        (reply, opened.elapsed())
    };
    let (dropped, (reply, served)) = tokio::join!(closed(&mut silent), check);
    assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
    let dropped = dropped - opened;
    assert_within(
        "the silent gRPC connection was dropped",
        dropped,
        header_timeout,
    );
    assert_within("the queued gRPC client was served", served, header_timeout);
}
