//! An expert node's membership: its [`NodeRecord`] under `nodes/<id>`, held by a lease that a
//! dedicated thread keeps alive. Also the etcd plumbing `watch` and `election` share: the
//! connection with its per-call deadline ([`Etcd`]), the error type ([`EtcdError`]) and the
//! kept-alive lease. Watching the records is `watch`'s job; what the records mean is the
//! planner's.
//!
//! The keep-alive runs on its own OS thread with its own current-thread runtime and its own etcd
//! client, so a caller's runtime busy with other work cannot starve it: it renews every TTL/2,
//! retries a failed renewal every TTL/10, and reports the lease [`LeaseState::Lost`] when etcd
//! says the lease is gone or no renewal got through for a whole TTL.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse,
};
use tokio::sync::{oneshot, watch};

use crate::keys::{ClusterKeys, KeyError, Name};
use crate::records::{NodeRecord, RecordError};

/// The lease TTL of a node registration unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Interval of the HTTP/2 pings that find a dead connection under a long-lived watch or
/// keep-alive stream (etcd refuses pings more often than every 5 s).
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd did not answer {op} within {limit:?}")]
    Timeout { op: &'static str, limit: Duration },
    #[error("etcd {op} failed: {source}")]
    Rpc {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("a lease TTL must be at least 1 s, got {0:?}")]
    InvalidTtl(Duration),
    #[error(
        "node id {id:?} is registered by another live node (lease {lease:x}): \
         give this node another id, or wait for that lease to expire"
    )]
    NodeIdTaken { id: String, lease: i64 },
    #[error("node {id:?} is not registered any more (its lease expired or was revoked)")]
    NotRegistered { id: String },
    #[error("a registration cannot change its node id from {registered:?} to {requested:?}")]
    IdChanged {
        registered: String,
        requested: String,
    },
    #[error("placement epochs only grow: the stored one is {stored}, the new one {proposed}")]
    EpochNotIncreasing { stored: u64, proposed: u64 },
    #[error("{key}: {source}")]
    Record {
        key: String,
        #[source]
        source: RecordError,
    },
    #[error("the lease keep-alive thread failed: {0}")]
    KeepAliveThread(#[source] std::io::Error),
}

/// A connection to etcd and the deadline each call through it gets.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: Vec<String>,
    rpc_timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("rpc_timeout", &self.rpc_timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// The deadline of one etcd call unless configured otherwise.
    pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client of the etcd cluster at `endpoints` (`http://host:port`). Connections are made
    /// lazily: an unreachable etcd shows up as the first call's timeout, not here.
    pub async fn connect(endpoints: &[String], rpc_timeout: Duration) -> Result<Etcd, EtcdError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(rpc_timeout)
            .with_keep_alive(HTTP2_PING_INTERVAL, rpc_timeout)
            .with_keep_alive_while_idle(false);
        let client = deadline(
            rpc_timeout,
            "connect",
            Client::connect(endpoints, Some(options)),
        )
        .await?;
        Ok(Etcd {
            client,
            endpoints: endpoints.to_vec(),
            rpc_timeout,
        })
    }

    /// Connects and waits until etcd answers, saying every few seconds where it was looked for
    /// and how to get one; for programs that cannot work without it.
    pub async fn connect_patiently(endpoints: &[String], rpc_timeout: Duration) -> Etcd {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            let reached = match Etcd::connect(endpoints, rpc_timeout).await {
                Ok(etcd) => match etcd.call("status", etcd.client().status()).await {
                    Ok(_) => return etcd,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if attempt.is_multiple_of(10) {
                tracing::warn!(
                    error = %reached,
                    ?endpoints,
                    "waiting for etcd: start it, or point --etcd / MOE_ETCD at a running one \
                     (Debian: apt-get install etcd-server)"
                );
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
            attempt = attempt.wrapping_add(1);
        }
    }

    /// A handle on the shared client, for calls this crate does not wrap.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    /// Runs one etcd call under this connection's deadline; `op` names it in errors.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        deadline(self.rpc_timeout, op, call).await
    }
}

async fn deadline<T>(
    limit: Duration,
    op: &'static str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(EtcdError::Rpc { op, source }),
        Err(_) => Err(EtcdError::Timeout { op, limit }),
    }
}

/// Whether a lease is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held and kept alive.
    Alive { lease: i64 },
    /// Gone: etcd reported it expired or revoked, or no renewal got through for a whole TTL.
    /// The keys under it are gone or about to be.
    Lost { lease: i64 },
}

/// Marks `lease` alive on `state`, unless its keep-alive thread already reported it lost.
pub(crate) fn publish_alive(state: &watch::Sender<LeaseState>, lease: i64) {
    state.send_if_modified(|current| {
        let fresh =
            *current != LeaseState::Lost { lease } && *current != LeaseState::Alive { lease };
        if fresh {
            *current = LeaseState::Alive { lease };
        }
        fresh
    });
}

/// What the owner of a lease asks its keep-alive thread to do at the end.
enum Stop {
    /// Revoke the lease (its keys disappear at once) and report how that went.
    Revoke(oneshot::Sender<Result<(), EtcdError>>),
    /// Stop renewing and leave the lease to expire.
    Abandon,
}

/// A lease kept alive by a dedicated thread. Dropping it revokes the lease in the background.
pub(crate) struct Lease {
    id: i64,
    stop: Option<oneshot::Sender<Stop>>,
}

impl Lease {
    /// Grants a lease of `ttl` (rounded up to whole seconds) and starts its keep-alive thread,
    /// which reports a loss on `state`.
    pub(crate) async fn grant(
        etcd: &Etcd,
        ttl: Duration,
        state: watch::Sender<LeaseState>,
    ) -> Result<Lease, EtcdError> {
        let ttl_seconds = whole_seconds(ttl)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let endpoints = etcd.endpoints.clone();
        let rpc_timeout = etcd.rpc_timeout;
        std::thread::Builder::new()
            .name("etcd-lease".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(EtcdError::KeepAliveThread(error)));
                        return;
                    }
                };
                runtime.block_on(keep_alive(
                    endpoints,
                    rpc_timeout,
                    ttl_seconds,
                    ready_tx,
                    stop_rx,
                    state,
                ));
            })
            .map_err(EtcdError::KeepAliveThread)?;
        let id = ready_rx.await.map_err(|_| thread_ended())??;
        Ok(Lease {
            id,
            stop: Some(stop_tx),
        })
    }

    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// Stops the keep-alive and revokes the lease; the keys under it disappear at once. A lease
    /// etcd no longer knows counts as revoked; revoking twice is a no-op.
    pub(crate) async fn revoke(&mut self) -> Result<(), EtcdError> {
        let Some(stop) = self.stop.take() else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        stop.send(Stop::Revoke(reply)).map_err(|_| thread_ended())?;
        answer.await.map_err(|_| thread_ended())?
    }

    /// Stops the keep-alive without revoking: the keys stay until the TTL runs out.
    pub(crate) fn abandon(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Abandon);
        }
    }
}

fn thread_ended() -> EtcdError {
    EtcdError::KeepAliveThread(std::io::Error::other("the keep-alive thread ended early"))
}

fn whole_seconds(ttl: Duration) -> Result<i64, EtcdError> {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    match i64::try_from(seconds) {
        Ok(seconds) if seconds > 0 => Ok(seconds),
        _ => Err(EtcdError::InvalidTtl(ttl)),
    }
}

/// The keep-alive thread's work: grant, open the keep-alive stream with a first renewal, renew
/// until told to stop or the lease is lost, then do what the owner asked (a dropped owner means
/// revoke).
async fn keep_alive(
    endpoints: Vec<String>,
    rpc_timeout: Duration,
    ttl_seconds: i64,
    ready: oneshot::Sender<Result<i64, EtcdError>>,
    mut stop: oneshot::Receiver<Stop>,
    state: watch::Sender<LeaseState>,
) {
    let granted = async {
        let etcd = Etcd::connect(&endpoints, rpc_timeout).await?;
        let grant = etcd
            .call("lease grant", etcd.client().lease_grant(ttl_seconds, None))
            .await?;
        Ok::<_, EtcdError>((etcd, grant.id()))
    }
    .await;
    let (etcd, id) = match granted {
        Ok(granted) => granted,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    if ready.send(Ok(id)).is_err() {
        revoke_quietly(&etcd, id).await;
        return;
    }

    let ttl = Duration::from_secs(ttl_seconds.unsigned_abs());
    let period = ttl / 2;
    let limit = period.min(rpc_timeout);
    let mut stream = None;
    let mut last_renewal = Instant::now();
    let mut wait = Duration::ZERO;
    let command = loop {
        tokio::select! {
            command = &mut stop => break command.ok(),
            () = tokio::time::sleep(wait) => {}
        }
        match renew(&etcd, &mut stream, id, limit).await {
            Ok(Renewal::Renewed) => {
                tracing::trace!(lease = %format!("{id:x}"), "lease renewed");
                last_renewal = Instant::now();
                wait = period;
            }
            Ok(Renewal::Gone) => {
                report_lost(&state, id, "etcd reports it expired or revoked");
                break (&mut stop).await.ok();
            }
            Err(error) => {
                stream = None;
                if last_renewal.elapsed() >= ttl {
                    report_lost(&state, id, "no renewal got through for a whole TTL");
                    break (&mut stop).await.ok();
                }
                tracing::warn!(lease = %format!("{id:x}"), %error, "lease renewal failed; retrying");
                wait = period / 5;
            }
        }
    };
    match command {
        Some(Stop::Abandon) => {}
        Some(Stop::Revoke(reply)) => {
            let _ = reply.send(revoke(&etcd, id).await);
        }
        None => revoke_quietly(&etcd, id).await,
    }
}

enum Renewal {
    Renewed,
    Gone,
}

/// One renewal on the open keep-alive stream, opening it first when there is none.
async fn renew(
    etcd: &Etcd,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    id: i64,
    limit: Duration,
) -> Result<Renewal, EtcdError> {
    let mut client = etcd.client();
    deadline(limit, "lease keep-alive", async {
        match stream.as_mut() {
            Some((keeper, responses)) => {
                keeper.keep_alive().await?;
                match responses.message().await? {
                    Some(response) if response.ttl() > 0 => Ok(Renewal::Renewed),
                    Some(_) => Ok(Renewal::Gone),
                    None => Err(etcd_client::Error::LeaseKeepAliveError(
                        "the keep-alive stream ended".into(),
                    )),
                }
            }
            None => match client.lease_keep_alive(id).await {
                Ok(opened) => {
                    *stream = Some(opened);
                    Ok(Renewal::Renewed)
                }
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(Renewal::Gone),
                Err(error) => Err(error),
            },
        }
    })
    .await
}

fn report_lost(state: &watch::Sender<LeaseState>, lease: i64, why: &str) {
    tracing::warn!(lease = %format!("{lease:x}"), why, "lease lost");
    state.send_if_modified(|current| {
        let superseded = matches!(*current, LeaseState::Alive { lease: newer } if newer != lease);
        let report = !superseded && *current != LeaseState::Lost { lease };
        if report {
            *current = LeaseState::Lost { lease };
        }
        report
    });
}

async fn revoke(etcd: &Etcd, id: i64) -> Result<(), EtcdError> {
    match etcd
        .call("lease revoke", etcd.client().lease_revoke(id))
        .await
    {
        Err(EtcdError::Rpc {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        }) if status.message().contains("lease not found") => Ok(()),
        outcome => outcome.map(drop),
    }
}

async fn revoke_quietly(etcd: &Etcd, id: i64) {
    if let Err(error) = revoke(etcd, id).await {
        tracing::warn!(lease = %format!("{id:x}"), %error, "could not revoke a dropped lease; it will expire");
    }
}

/// An expert node's registration: its record under `nodes/<id>` with a kept-alive lease.
/// Dropping it revokes the lease in the background; [`Registration::deregister`] waits for that.
pub struct Registration {
    etcd: Etcd,
    key: String,
    record: NodeRecord,
    ttl: Duration,
    lease: Lease,
    state: watch::Sender<LeaseState>,
}

impl Registration {
    /// Registers `record` under a fresh lease of `ttl` ([`DEFAULT_TTL`] in production). Fails
    /// with [`EtcdError::NodeIdTaken`] while another live node holds the same id.
    pub async fn register(
        etcd: &Etcd,
        keys: &ClusterKeys,
        record: NodeRecord,
        ttl: Duration,
    ) -> Result<Registration, EtcdError> {
        let key = keys.node(&Name::new("node id", &record.id)?);
        let (state, _) = watch::channel(LeaseState::Lost { lease: 0 });
        let lease = claim(etcd, &key, &record, ttl, &state).await?;
        Ok(Registration {
            etcd: etcd.clone(),
            key,
            record,
            ttl,
            lease,
            state,
        })
    }

    /// The registration's state; it turns [`LeaseState::Lost`] when the lease is lost, and
    /// back to [`LeaseState::Alive`] after a successful [`Registration::reregister`].
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// The etcd key the record lives under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the record (e.g. a new capacity) under the same lease; fails with
    /// [`EtcdError::NotRegistered`] when the key no longer carries this registration's lease.
    pub async fn update(&mut self, record: NodeRecord) -> Result<(), EtcdError> {
        if record.id != self.record.id {
            return Err(EtcdError::IdChanged {
                registered: self.record.id.clone(),
                requested: record.id,
            });
        }
        let lease = self.lease.id();
        let txn = Txn::new()
            .when([Compare::lease(self.key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                self.key.as_str(),
                record.to_json(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = self
            .etcd
            .call("update node record", self.etcd.client().txn(txn))
            .await?;
        if !response.succeeded() {
            return Err(EtcdError::NotRegistered { id: record.id });
        }
        self.record = record;
        Ok(())
    }

    /// Registers again under a fresh lease, typically after the state turned
    /// [`LeaseState::Lost`]. The old lease is revoked first; the same create-if-absent rule
    /// applies, so this fails while another node has taken the id meanwhile.
    pub async fn reregister(&mut self) -> Result<(), EtcdError> {
        self.lease.revoke().await?;
        self.lease = claim(&self.etcd, &self.key, &self.record, self.ttl, &self.state).await?;
        Ok(())
    }

    /// Revokes the lease: the record disappears at once.
    pub async fn deregister(mut self) -> Result<(), EtcdError> {
        self.lease.revoke().await
    }

    /// Stops the keep-alive without revoking, as if the node had died: the record stays until
    /// the lease's TTL runs out.
    pub fn abandon(mut self) {
        self.lease.abandon();
    }
}

/// Grants a lease and puts `record` under `key` with it, only if `key` does not exist.
async fn claim(
    etcd: &Etcd,
    key: &str,
    record: &NodeRecord,
    ttl: Duration,
    state: &watch::Sender<LeaseState>,
) -> Result<Lease, EtcdError> {
    let mut lease = Lease::grant(etcd, ttl, state.clone()).await?;
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            record.to_json(),
            Some(PutOptions::new().with_lease(lease.id())),
        )])
        .or_else([TxnOp::get(key, None)]);
    let response = etcd.call("register node", etcd.client().txn(txn)).await?;
    if response.succeeded() {
        publish_alive(state, lease.id());
        return Ok(lease);
    }
    let holder = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        })
        .unwrap_or_default();
    if let Err(error) = lease.revoke().await {
        tracing::warn!(%error, "could not revoke the unused lease; it will expire");
    }
    Err(EtcdError::NodeIdTaken {
        id: record.id.clone(),
        lease: holder,
    })
}
