//! A lease kept alive by a dedicated OS thread with its own current-thread runtime and its own
//! etcd client, so that a caller's runtime busy with other work cannot starve it: it renews every
//! TTL/2, retries a failed renewal every TTL/10, and reports the lease [`LeaseState::Lost`] when
//! etcd says the lease is gone or no renewal got through for a whole TTL.

use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{oneshot, watch};

use crate::etcd::{Etcd, EtcdError, deadline};

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
pub fn publish_alive(state: &watch::Sender<LeaseState>, lease: i64) {
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
pub struct Lease {
    id: i64,
    stop: Option<oneshot::Sender<Stop>>,
}

impl Lease {
    /// Grants a lease of `ttl` (rounded up to whole seconds) and starts its keep-alive thread,
    /// which reports a loss on `state`.
    pub async fn grant(
        etcd: &Etcd,
        ttl: Duration,
        state: watch::Sender<LeaseState>,
    ) -> Result<Lease, EtcdError> {
        let ttl_seconds = whole_seconds(ttl)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let endpoints = etcd.endpoints().to_vec();
        let tls = etcd.tls().cloned();
        let rpc_timeout = etcd.rpc_timeout();
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
                    tls,
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

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Stops the keep-alive and revokes the lease; the keys under it disappear at once. A lease
    /// etcd no longer knows counts as revoked; revoking twice is a no-op.
    pub async fn revoke(&mut self) -> Result<(), EtcdError> {
        let Some(stop) = self.stop.take() else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        stop.send(Stop::Revoke(reply)).map_err(|_| thread_ended())?;
        answer.await.map_err(|_| thread_ended())?
    }

    /// Stops the keep-alive without revoking: the keys stay until the TTL runs out.
    pub fn abandon(&mut self) {
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
    tls: Option<etcd_client::TlsOptions>,
    rpc_timeout: Duration,
    ttl_seconds: i64,
    ready: oneshot::Sender<Result<i64, EtcdError>>,
    mut stop: oneshot::Receiver<Stop>,
    state: watch::Sender<LeaseState>,
) {
    let granted = async {
        let etcd = Etcd::connect_with(&endpoints, tls, rpc_timeout).await?;
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
