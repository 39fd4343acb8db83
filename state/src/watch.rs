//! List-then-watch of an etcd prefix (or one key), published as [`Snapshot`]s on a
//! `tokio::sync::watch` channel so that request paths only borrow the current map. It does not
//! write anything, and it does not judge what the values mean beyond decoding them.
//!
//! A [`Watcher`] lists the range, then watches it from the listed revision + 1. When the watch
//! breaks (etcd restarted, connection lost) it reconnects with jittered exponential backoff
//! (100 ms doubling to 5 s) and resumes after the last revision it applied; when etcd says that
//! revision was compacted away, it lists again and carries on from there. Values that do not
//! decode are logged and left out of the map.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::Duration;

use etcd_client::{Event, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tracing::Instrument;

use crate::etcd::{Etcd, EtcdError};
use crate::keys::{ClusterKeys, Name};
use crate::records::{GatewayStats, NodeRecord, Placement};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a watcher follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every key starting with the prefix; entries are named by the rest of the key.
    Prefix(String),
    /// Exactly one key; its entry is named `""`.
    Key(String),
}

impl Scope {
    fn base(&self) -> &str {
        match self {
            Scope::Prefix(prefix) => prefix,
            Scope::Key(key) => key,
        }
    }

    fn get_options(&self) -> Option<GetOptions> {
        match self {
            Scope::Prefix(_) => Some(GetOptions::new().with_prefix()),
            Scope::Key(_) => None,
        }
    }

    fn watch_options(&self, start_revision: i64) -> WatchOptions {
        let options = WatchOptions::new().with_start_revision(start_revision);
        match self {
            Scope::Prefix(_) => options.with_prefix(),
            Scope::Key(_) => options,
        }
    }

    /// The entry name of `key`: the part after the prefix.
    fn name_of<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        std::str::from_utf8(key).ok()?.strip_prefix(self.base())
    }
}

/// The decoded contents of a watched range at one etcd revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<T> {
    /// The etcd revision the entries reflect.
    pub revision: i64,
    /// Decoded values by entry name (the key minus the watched prefix).
    pub entries: BTreeMap<String, T>,
}

impl<T> Snapshot<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.entries.get(name)
    }

    /// The value of a single-key watch ([`Scope::Key`]), if the key exists and decoded.
    pub fn single(&self) -> Option<&T> {
        self.entries.values().next()
    }
}

/// Turns one stored value, given its entry name, into `T`, or says why not.
type Decode<T> = Box<dyn Fn(&str, &[u8]) -> Result<T, String> + Send + Sync>;

/// A background list-then-watch of one [`Scope`]; the watch stops when this is dropped.
pub struct Watcher<T> {
    snapshots: watch::Receiver<Snapshot<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Watcher<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Send + Sync + 'static> Watcher<T> {
    /// Lists `scope` (failing if etcd does not answer within its deadline), then follows it in
    /// a task on the current runtime. `decode` gets each value's entry name and bytes.
    pub async fn start(
        etcd: &Etcd,
        scope: Scope,
        decode: impl Fn(&str, &[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Watcher<T>, EtcdError> {
        let feed = Feed {
            etcd: etcd.clone(),
            scope,
            decode: Box::new(decode),
        };
        let first = feed.list().await?;
        let (publish, snapshots) = watch::channel(first);
        let span = tracing::info_span!("watch", range = feed.scope.base());
        let task = tokio::spawn(feed.run(publish).instrument(span));
        Ok(Watcher { snapshots, task })
    }

    /// A receiver of every snapshot from now on.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot<T>> {
        self.snapshots.clone()
    }

    /// The current snapshot; hold the borrow briefly, it delays the next update.
    pub fn borrow(&self) -> watch::Ref<'_, Snapshot<T>> {
        self.snapshots.borrow()
    }
}

impl Watcher<NodeRecord> {
    /// Every registered node record, by node id.
    pub async fn nodes(etcd: &Etcd, keys: &ClusterKeys) -> Result<Self, EtcdError> {
        Watcher::start(etcd, Scope::Prefix(keys.nodes_prefix()), |name, bytes| {
            Name::new("node id", name).map_err(|e| e.to_string())?;
            let record = NodeRecord::from_json(bytes).map_err(|e| e.to_string())?;
            if record.id != name {
                return Err(format!("the record names node {:?}", record.id));
            }
            Ok(record)
        })
        .await
    }
}

impl Watcher<Placement> {
    /// The placement document; [`Snapshot::single`] is `None` until one is written.
    pub async fn placement(etcd: &Etcd, keys: &ClusterKeys) -> Result<Self, EtcdError> {
        Watcher::start(etcd, Scope::Key(keys.placement()), |_, bytes| {
            Placement::from_json(bytes).map_err(|e| e.to_string())
        })
        .await
    }
}

impl Watcher<GatewayStats> {
    /// Every gateway's popularity report, by gateway id.
    pub async fn stats(etcd: &Etcd, keys: &ClusterKeys) -> Result<Self, EtcdError> {
        Watcher::start(etcd, Scope::Prefix(keys.stats_prefix()), |name, bytes| {
            Name::new("gateway id", name).map_err(|e| e.to_string())?;
            let stats = GatewayStats::from_json(bytes).map_err(|e| e.to_string())?;
            if stats.gateway != name {
                return Err(format!("the report names gateway {:?}", stats.gateway));
            }
            Ok(stats)
        })
        .await
    }
}

/// The watcher's task state: where to read and how to decode.
struct Feed<T> {
    etcd: Etcd,
    scope: Scope,
    decode: Decode<T>,
}

/// Why a watch stream ended.
enum End {
    /// etcd compacted away the revision to resume from (the oldest it still has is given).
    Compacted(i64),
    /// The stream broke or could not be opened.
    Broken(String),
}

impl<T> Feed<T> {
    /// The whole range as it is now.
    async fn list(&self) -> Result<Snapshot<T>, EtcdError> {
        let response = self
            .etcd
            .call(
                "list",
                self.etcd
                    .client()
                    .get(self.scope.base(), self.scope.get_options()),
            )
            .await?;
        let mut snapshot = Snapshot {
            revision: response.header().map_or(0, |header| header.revision()),
            entries: BTreeMap::new(),
        };
        for kv in response.kvs() {
            self.store(&mut snapshot, kv.key(), kv.value());
        }
        Ok(snapshot)
    }

    /// Follows the range forever, re-listing after compaction and reconnecting after errors.
    async fn run(self, publish: watch::Sender<Snapshot<T>>) {
        let mut backoff = Backoff::default();
        let mut relist = false;
        loop {
            if relist {
                match self.list().await {
                    Ok(snapshot) => {
                        publish.send_replace(snapshot);
                        relist = false;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "re-listing failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let from = publish.borrow().revision + 1;
            match self.follow(from, &publish, &mut backoff).await {
                End::Compacted(oldest) => {
                    tracing::info!(from, oldest, "watch start revision compacted; re-listing");
                    relist = true;
                }
                End::Broken(error) => {
                    tracing::warn!(from, %error, "watch broke; reconnecting");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// One watch stream from `from`, applying its events until it ends.
    async fn follow(
        &self,
        from: i64,
        publish: &watch::Sender<Snapshot<T>>,
        backoff: &mut Backoff,
    ) -> End {
        let mut client = self.etcd.client();
        let opened = self
            .etcd
            .call(
                "watch",
                client.watch(self.scope.base(), Some(self.scope.watch_options(from))),
            )
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(error) => return End::Broken(error.to_string()),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return End::Broken("etcd closed the watch stream".into()),
                Err(error) => return End::Broken(error.to_string()),
            };
            if response.compact_revision() > 0 {
                return End::Compacted(response.compact_revision());
            }
            if response.canceled() {
                return End::Broken(format!("watch canceled: {}", response.cancel_reason()));
            }
            if response.created() {
                backoff.reset();
            }
            if !response.events().is_empty() {
                publish.send_modify(|snapshot| self.apply(snapshot, response.events()));
            }
        }
    }

    fn apply(&self, snapshot: &mut Snapshot<T>, events: &[Event]) {
        for event in events {
            let Some(kv) = event.kv() else { continue };
            snapshot.revision = snapshot.revision.max(kv.mod_revision());
            match event.event_type() {
                EventType::Put => self.store(snapshot, kv.key(), kv.value()),
                EventType::Delete => {
                    if let Some(name) = self.scope.name_of(kv.key()) {
                        snapshot.entries.remove(name);
                    }
                }
            }
        }
    }

    /// Puts the decoded value of `key` into the map, or, when it does not decode, logs that
    /// and drops whatever the map held for it.
    fn store(&self, snapshot: &mut Snapshot<T>, key: &[u8], value: &[u8]) {
        let Some(name) = self.scope.name_of(key) else {
            tracing::warn!(key = %String::from_utf8_lossy(key), "skipping a key outside the range");
            return;
        };
        match (self.decode)(name, value) {
            Ok(decoded) => {
                snapshot.entries.insert(name.to_string(), decoded);
            }
            Err(error) => {
                tracing::warn!(key = %String::from_utf8_lossy(key), %error, "skipping an undecodable value");
                snapshot.entries.remove(name);
            }
        }
    }
}

/// Jittered exponential backoff between reconnection attempts.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt: between half and all of the current step, which
    /// then doubles up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_MAX);
        let fraction = (RandomState::new().build_hasher().finish() % 1024) as u32;
        step / 2 + step / 2 * fraction / 1024
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let mut step = BACKOFF_MIN;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(backoff.next, BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_MIN);
    }

    #[test]
    fn entry_names_are_the_key_after_the_range() {
        let prefix = Scope::Prefix("/moe/v1/c/nodes/".into());
        assert_eq!(prefix.name_of(b"/moe/v1/c/nodes/a"), Some("a"));
        assert_eq!(prefix.name_of(b"/moe/v1/c/stats/a"), None);
        assert_eq!(prefix.name_of(b"/moe/v1/c/nodes/\xff"), None);
        let key = Scope::Key("/moe/v1/c/placement".into());
        assert_eq!(key.name_of(b"/moe/v1/c/placement"), Some(""));
    }
}
