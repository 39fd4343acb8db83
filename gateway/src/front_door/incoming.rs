//! Accepting connections up to a bound, for both APIs: each accepted connection holds a permit
//! until it is dropped, and with every permit out the listener is not polled, so new connections
//! wait in the kernel's listen backlog (and past it their SYNs go unanswered and are retried by
//! the client's TCP) until a connection ends. Also the gRPC API's sockets, which must bring
//! their first bytes in time.
//!
//! Not here: what is served on a connection ([`super::connection`], tonic).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::socket::{ReadHook, Socket};

/// The bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), or of a TLS
/// ClientHello's start, that a gRPC connection must send within the header timeout.
const PREFACE_BYTES: usize = 24;

/// Connections accepted from `listener` while `permits` has one to give, each with its permit.
/// Accept errors are handled as axum's server does (connection errors skipped, others logged
/// and retried after a second).
pub(super) fn bounded(
    listener: TcpListener,
    permits: Arc<Semaphore>,
) -> impl Stream<Item = (TcpStream, OwnedSemaphorePermit)> {
    let state = (listener, permits, false);
    futures_util::stream::unfold(state, |(mut listener, permits, mut full)| async move {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                full = false;
                permit
            }
            Err(_) => {
                if !full {
                    tracing::warn!(
                        "every connection the bound allows is open: new ones wait in the \
                         listen backlog"
                    );
                    full = true;
                }
                Arc::clone(&permits).acquire_owned().await.ok()?
            }
        };
        let (stream, _) = Listener::accept(&mut listener).await;
        Some(((stream, permit), (listener, permits, full)))
    })
}

/// An accepted gRPC connection: a socket that holds its permit, and whose first
/// [`PREFACE_BYTES`] bytes must arrive within the header timeout.
pub type GrpcStream = Socket<Preface>;

/// A gRPC socket from `bounded`, with the preface deadline `timeout`.
pub(super) fn grpc_stream(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
) -> GrpcStream {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY could not be set");
    }
    let preface = Preface {
        _permit: permit,
        missing: Some((PREFACE_BYTES, Box::pin(tokio::time::sleep(timeout)))),
    };
    Socket::new(stream, preface)
}

/// A gRPC socket's permit and, until its first bytes arrived, a deadline after which reading
/// fails with `TimedOut` (and tonic drops the connection).
pub struct Preface {
    _permit: OwnedSemaphorePermit,
    /// The preface bytes still expected and their deadline; `None` once they came.
    missing: Option<(usize, Pin<Box<Sleep>>)>,
}

impl ReadHook for Preface {
    fn arrived(&mut self, bytes: usize) {
        if let Some((missing, _)) = &mut self.missing {
            *missing = missing.saturating_sub(bytes);
            if *missing == 0 {
                self.missing = None;
            }
        }
    }

    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((_, deadline)) = &mut self.missing else {
            return Poll::Pending;
        };
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection's first bytes did not arrive within the header timeout",
        ))
    }
}

impl Connected for GrpcStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream().connect_info()
    }
}
