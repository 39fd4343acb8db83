//! The connection to etcd that every part of the crate shares: a client with a deadline on each
//! call ([`Etcd`]) and the one error type of etcd operations ([`EtcdError`]).

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, TlsOptions};

use crate::keys::KeyError;
use crate::records::RecordError;

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
    tls: Option<TlsOptions>,
    rpc_timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field("rpc_timeout", &self.rpc_timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// The deadline of one etcd call unless configured otherwise.
    pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client of the etcd cluster at `endpoints` (`http://host:port`), in plaintext.
    /// Connections are made lazily: an unreachable etcd shows up as the first call's timeout,
    /// not here.
    pub async fn connect(endpoints: &[String], rpc_timeout: Duration) -> Result<Etcd, EtcdError> {
        Etcd::connect_with(endpoints, None, rpc_timeout).await
    }

    /// A client of the etcd cluster at `endpoints`, over TLS with `tls` (`https://` endpoints)
    /// or in plaintext without.
    pub async fn connect_with(
        endpoints: &[String],
        tls: Option<TlsOptions>,
        rpc_timeout: Duration,
    ) -> Result<Etcd, EtcdError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(rpc_timeout)
            .with_keep_alive(HTTP2_PING_INTERVAL, rpc_timeout)
            .with_keep_alive_while_idle(false);
        if let Some(tls) = tls.clone() {
            options = options.with_tls(tls);
        }
        let client = deadline(
            rpc_timeout,
            "connect",
            Client::connect(endpoints, Some(options)),
        )
        .await?;
        Ok(Etcd {
            client,
            endpoints: endpoints.to_vec(),
            tls,
            rpc_timeout,
        })
    }

    /// Connects (over TLS with `tls`) and waits until etcd answers, saying every few seconds
    /// where it was looked for and how to get one; for programs that cannot work without it.
    pub async fn connect_patiently(
        endpoints: &[String],
        tls: Option<TlsOptions>,
        rpc_timeout: Duration,
    ) -> Etcd {
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            let reached = match Etcd::connect_with(endpoints, tls.clone(), rpc_timeout).await {
                Ok(etcd) => match etcd.call("status", etcd.client().status()).await {
                    Ok(_) => return etcd,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if attempt.is_multiple_of(10) {
                tracing::warn!(
                    error = %moe_service::causes(&reached),
                    ?endpoints,
                    "waiting for etcd: start it, or point --etcd / MOE_ETCD at a running one \
                     (Debian: apt-get install etcd-server); with TLS, check --etcd-ca, \
                     --etcd-cert and --etcd-key"
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

    /// The TLS configuration of the connection, `None` for plaintext.
    pub fn tls(&self) -> Option<&TlsOptions> {
        self.tls.as_ref()
    }

    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    /// Runs one etcd call under this connection's deadline; `op` names it in errors.
    pub async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        deadline(self.rpc_timeout, op, call).await
    }
}

pub async fn deadline<T>(
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
