//! One HTTP connection of the front door: hyper (HTTP/1.1, or HTTP/2 with prior knowledge)
//! serving the router, watched by the connection's [`Activity`]: its socket reports the bytes
//! that arrive, its service the requests that start, and each response body, when it is sent or
//! dropped, the request that ends. The connection task enforces the activity's verdicts (idle:
//! graceful shutdown; a head too slow: dropped) and the server's drain, and bounds each request
//! body with the body timeout (answered 408, and the HTTP/1 connection closed).
//!
//! Not here: accepting and the connection bound ([`super::incoming`]), the routes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Request, Response, Version};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

use super::activity::{Activity, Timeouts, Verdict};
use super::socket::{ReadHook, Socket};
use crate::openai::ApiError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that had not fully arrived when the body timeout ran out.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimeout(Duration);

/// Serves `router` on `stream` until the connection ends, an activity verdict drops it, or
/// (after `draining` turns true) its requests in flight are answered.
pub(super) async fn serve(
    stream: TcpStream,
    router: Router,
    timeouts: Timeouts,
    body_timeout: Duration,
    mut draining: watch::Receiver<bool>,
) {
    let tracker = Arc::new(Tracker {
        activity: Mutex::new(Activity::new(Instant::now())),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Socket::new(stream, Watched(Arc::clone(&tracker))));
    let service = ConnectionService {
        router,
        tracker: Arc::clone(&tracker),
        body_timeout,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The activity times heads (from their first byte, which hyper's timer does not).
    builder.http1().header_read_timeout(None);
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut drained = false;
    loop {
        let changed = tracker.changed.notified();
        // Not held while the verdict is acted on: dropping the connection ends its requests.
        let verdict = tracker.lock().verdict(Instant::now(), &timeouts);
        let wake = match verdict {
            Verdict::Wait(wake) => wake,
            Verdict::CloseGracefully => {
                tracing::debug!("closing an idle connection");
                connection.as_mut().graceful_shutdown();
                continue;
            }
            Verdict::Drop => {
                tracing::debug!("dropping a connection whose request head or close was late");
                return;
            }
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = changed => {}
            () = sleep_until(wake) => {}
            Ok(_) = draining.wait_for(|stop| *stop), if !drained => {
                drained = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection's activity, shared by its socket, service, response bodies and task.
struct Tracker {
    activity: Mutex<Activity>,
    /// Woken when the activity's deadline changed.
    changed: Notify,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `event`, waking the connection task if the deadline changed.
    fn update(&self, event: impl FnOnce(&mut Activity) -> bool) {
        if event(&mut self.lock()) {
            self.changed.notify_one();
        }
    }
}

/// The socket's hook: reports the bytes that arrive.
struct Watched(Arc<Tracker>);

impl ReadHook for Watched {
    fn arrived(&mut self, bytes: usize) {
        if bytes > 0 {
            self.0
                .update(|activity| activity.bytes_read(Instant::now()));
        }
    }
}

/// The router as this connection's hyper service.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    tracker: Arc<Tracker>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let version = request.version();
        self.tracker
            .update(|activity| activity.request_started(version));
        let in_flight = InFlight(Arc::clone(&self.tracker));
        let timeout = self.body_timeout;
        let expired = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Instant::now() + timeout,
                sleep: None,
                timeout,
                expired: Arc::clone(&expired),
            })
        });
        let mut router = self.router.clone();
        Box::pin(async move {
            let Ok(mut response) = router.call(request).await;
            if expired.load(Ordering::Acquire) {
                response = body_timed_out(timeout, version);
            }
            Ok(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// 408 in OpenAI's error shape; an HTTP/1 connection closes after it (the rest of the body may
/// still come), an HTTP/2 stream ends.
fn body_timed_out(timeout: Duration, version: Version) -> Response<Body> {
    tracing::info!(?timeout, "a request body did not arrive in time");
    let mut response = ApiError::request_timeout(timeout).into_response();
    if version <= Version::HTTP_11 {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(CONNECTION, close);
    }
    response
}

/// A request in flight until dropped (with its response body, or with the handler's future).
struct InFlight(Arc<Tracker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .update(|activity| activity.request_ended(Instant::now()));
    }
}

/// A response body that ends its request when dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails with [`BodyTimeout`] (and says so in `expired`) if it has not
/// ended by `deadline`. The timer is only set once a handler reads the body.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(BodyTimeout(this.timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
