//! The front door: how the gateway's two APIs take connections from the network, with the bounds
//! a production HTTP server has, so that a client that stalls cannot hold a connection for as
//! long as it likes.
//!
//! The HTTP API ([`FrontDoor::serve`]) is served by hyper (HTTP/1.1, and HTTP/2 with prior
//! knowledge, as `axum::serve` did) in an accept loop of its own:
//!
//! * **Header timeout**: a request head must be complete within it of its first byte, or the
//!   connection is dropped (there is no request to answer). hyper's own `header_read_timeout`
//!   is off: its timer starts when the connection opens or its previous response ends, not at
//!   the first byte, so it would also cut the idle wait between requests; and behind hyper's
//!   protocol detection (HTTP/1 or HTTP/2) a connection that sends nothing is not timed at all.
//! * **Body timeout**: a request body must have fully arrived within it of the request's head,
//!   or the request is answered 408 in OpenAI's error shape (and an HTTP/1 connection closed).
//!   The timer runs only while a handler reads the body, which is where bodies are read (the body
//!   limit is checked there too).
//! * **Idle timeout**: a connection with no request in flight and no byte of a next request,
//!   since it opened or its last response ended, is shut down gracefully (HTTP/1: closed; HTTP/2:
//!   GOAWAY) and dropped if it lingers a second more. A request in flight, however long (a
//!   stream of tokens), has no deadline.
//! * **Connection bound**: with `max_connections` open, the server stops accepting; new
//!   connections queue in the kernel's listen backlog and are taken as open ones end (past the
//!   backlog the kernel ignores their SYNs and the clients retry). Queued rather than refused:
//!   a refusal needs an accepted socket and a response written to a client that may not read
//!   it, and the timeouts above make room within a bounded time.
//! * **Drain**: when the shutdown future resolves the listener is closed (new connections are
//!   refused), every connection is shut down gracefully (requests in flight finish; idle ones
//!   close), and [`FrontDoor::serve`] returns once all have ended. The timeouts still hold
//!   meanwhile, so a stalled client cannot hold up the drain.
//!
//! The gRPC API ([`FrontDoor::grpc_incoming`], served by tonic) gets the same connection bound,
//! and a connection's first bytes (the HTTP/2 preface, or the start of a TLS handshake) must come
//! within the header timeout. The rest is tonic's (set by the binary): the TLS handshake's
//! timeout, and HTTP/2 pings after the idle timeout without traffic, closing a peer that does
//! not answer. Neither a body timeout nor an idle timeout for a live peer exists there.
//!
//! Not here: the routes ([`crate::http`]), the gRPC service ([`crate::grpc`]).

mod activity;
mod connection;
mod incoming;
mod socket;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_stream::{Stream, StreamExt};

use activity::Timeouts;
pub use incoming::GrpcStream;

/// The bounds of the front door (the gateway's `--http-*-timeout-seconds` and
/// `--max-connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontDoor {
    /// From a request head's first byte to its end.
    pub header_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once on each API; more wait to be accepted.
    pub max_connections: u32,
}

impl Default for FrontDoor {
    /// nginx's timeouts: 60 s for heads and bodies, 75 s between requests; 4096 connections.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
        }
    }
}

impl FrontDoor {
    /// Serves `router` on `listener` until `shutdown` resolves and the connections then open
    /// have ended.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) {
        let timeouts = Timeouts {
            header: self.header_timeout,
            idle: self.idle_timeout,
        };
        let permits = Arc::new(Semaphore::new(self.max_connections as usize));
        let (drain, draining) = watch::channel(false);
        {
            // Dropped at the end of the block, closing the listening socket.
            let mut incoming = pin!(incoming::bounded(listener, Arc::clone(&permits)));
            let mut shutdown = pin!(shutdown);
            loop {
                let (stream, permit) = tokio::select! {
                    accepted = incoming.next() => match accepted {
                        Some(accepted) => accepted,
                        None => break,
                    },
                    () = &mut shutdown => break,
                };
                let connection = connection::serve(
                    stream,
                    router.clone(),
                    timeouts,
                    self.body_timeout,
                    draining.clone(),
                );
                tokio::spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
        }
        tracing::info!("draining the HTTP connections");
        let _ = drain.send(true);
        // Each connection holds a permit until it ends.
        let _ = permits.acquire_many(self.max_connections).await;
    }

    /// The gRPC API's connections from `listener`, for tonic's `serve_with_incoming*`.
    pub fn grpc_incoming(
        self,
        listener: TcpListener,
    ) -> impl Stream<Item = std::io::Result<GrpcStream>> {
        let permits = Arc::new(Semaphore::new(self.max_connections as usize));
        incoming::bounded(listener, permits).map(move |(stream, permit)| {
            Ok(incoming::grpc_stream(stream, permit, self.header_timeout))
        })
    }
}
