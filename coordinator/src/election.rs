//! Coordinator leadership and the placement writes only a leader may make. It does not choose
//! placements (the planner does) and does not follow them (a `watch::Watcher` does).
//!
//! A [`Candidate`] holds its own lease (kept alive on a dedicated thread, as node registrations
//! are) and campaigns by creating the `leader` key, holding its id, under that lease only if the
//! key does not exist. A standby watches the key and campaigns again as soon as it is deleted,
//! so it takes over within one TTL of the leader's death. Winning gives a [`Term`]: the leader
//! key's create revision. Every placement write checks, in the same transaction, that the leader
//! key still is that term's and that the placement did not change since it was read, and the
//! new epoch must exceed the read one — so a deposed leader's write fails and epochs only grow.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetResponse, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tracing::Instrument;

use moe_state::etcd::{Etcd, EtcdError};
use moe_state::keys::{ClusterKeys, Name};
use moe_state::lease::{Lease, LeaseState, publish_alive};
use moe_state::records::Placement;
use moe_state::watch::Backoff;

/// The lease TTL of a coordinator candidate unless configured otherwise: a dead leader is
/// replaced within this time.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// What a candidate is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Another candidate leads (or etcd has not answered yet); campaigning again when it goes.
    Standby,
    /// This candidate leads, for the given term. While etcd is unreachable it stays so until
    /// its lease is reported lost; its placement writes are fenced by the term either way.
    Leader(Term),
    /// The candidate's lease is gone; it will never lead again. Start a new candidate.
    Lost,
}

/// One leadership: who won and the revision the leader key was created at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    keys: ClusterKeys,
    candidate: Name,
    create_revision: i64,
}

/// The placement as a leader read it: what a write must build on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBase {
    /// The stored placement; `None` when none was ever written.
    pub placement: Option<Placement>,
    /// The placement key's mod revision, 0 when absent.
    pub mod_revision: i64,
}

impl PlacementBase {
    /// The stored epoch, 0 when there is no placement.
    pub fn epoch(&self) -> u64 {
        self.placement.as_ref().map_or(0, |p| p.epoch)
    }
}

/// How a placement write ended, when etcd answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementWrite {
    /// Stored at this etcd revision.
    Written { revision: i64 },
    /// The leader key is gone or belongs to another term: this candidate is no longer leader.
    NotLeader,
    /// Still leader, but the placement changed since it was read (its mod revision now given):
    /// read again and re-plan.
    Conflict { mod_revision: i64 },
}

impl Term {
    pub fn candidate(&self) -> &Name {
        &self.candidate
    }

    /// The revision the leader key was created at; later terms have larger ones.
    pub fn create_revision(&self) -> i64 {
        self.create_revision
    }

    /// Reads the stored placement to build the next one on.
    pub async fn read_placement(&self, etcd: &Etcd) -> Result<PlacementBase, EtcdError> {
        let key = self.keys.placement();
        let response = etcd
            .call("read placement", etcd.client().get(key.as_str(), None))
            .await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(PlacementBase {
                placement: None,
                mod_revision: 0,
            });
        };
        let placement =
            Placement::from_json(kv.value()).map_err(|source| EtcdError::Record { key, source })?;
        Ok(PlacementBase {
            placement: Some(placement),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Writes `next` over `base` if this term still leads and the placement is still `base`:
    /// one transaction comparing the leader key's create revision and value with this term's
    /// and the placement key's mod revision with `base`'s. `next.epoch` must exceed
    /// `base.epoch()`, and `next` must be a placement readers accept.
    pub async fn write_placement(
        &self,
        etcd: &Etcd,
        base: &PlacementBase,
        next: &Placement,
    ) -> Result<PlacementWrite, EtcdError> {
        let key = self.keys.placement();
        if next.epoch <= base.epoch() {
            return Err(EtcdError::EpochNotIncreasing {
                stored: base.epoch(),
                proposed: next.epoch,
            });
        }
        let json = next.to_json();
        Placement::from_json(&json).map_err(|source| EtcdError::Record {
            key: key.clone(),
            source,
        })?;
        let leader = self.keys.leader();
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader.as_str(), CompareOp::Equal, self.create_revision),
                Compare::value(leader.as_str(), CompareOp::Equal, self.candidate.as_str()),
                Compare::mod_revision(key.as_str(), CompareOp::Equal, base.mod_revision),
            ])
            .and_then([TxnOp::put(key.as_str(), json, None)])
            .or_else([TxnOp::get(leader, None), TxnOp::get(key, None)]);
        let response = etcd.call("write placement", etcd.client().txn(txn)).await?;
        if response.succeeded() {
            return Ok(PlacementWrite::Written {
                revision: response.header().map_or(0, |h| h.revision()),
            });
        }
        let mut found = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => first_kv(get),
            _ => None,
        });
        let leader_kv = found.next().flatten();
        let placement_kv = found.next().flatten();
        let still_leads = leader_kv.is_some_and(|kv| {
            kv.create_revision() == self.create_revision
                && kv.value() == self.candidate.as_str().as_bytes()
        });
        Ok(if still_leads {
            PlacementWrite::Conflict {
                mod_revision: placement_kv.map_or(0, |kv| kv.mod_revision()),
            }
        } else {
            PlacementWrite::NotLeader
        })
    }
}

fn first_kv(mut get: GetResponse) -> Option<KeyValue> {
    get.take_kvs().into_iter().next()
}

/// A coordinator taking part in the election. Dropping it revokes its lease in the background
/// (giving up leadership at once); [`Candidate::resign`] waits for that.
pub struct Candidate {
    id: Name,
    lease: Lease,
    role: watch::Receiver<Role>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Candidate {
    /// Grants the candidate's lease of `ttl` ([`DEFAULT_TTL`] in production) and starts
    /// campaigning in a task on the current runtime; the role starts as [`Role::Standby`].
    pub async fn start(
        etcd: &Etcd,
        keys: &ClusterKeys,
        id: &str,
        ttl: Duration,
    ) -> Result<Candidate, EtcdError> {
        let id = Name::new("coordinator id", id)?;
        let (lease_state, lease_watch) = watch::channel(LeaseState::Lost { lease: 0 });
        let lease = Lease::grant(etcd, ttl, lease_state.clone()).await?;
        publish_alive(&lease_state, lease.id());
        let (role_tx, role) = watch::channel(Role::Standby);
        let campaign = Campaign {
            etcd: etcd.clone(),
            keys: keys.clone(),
            id: id.clone(),
            lease: lease.id(),
            lease_state: lease_watch,
            role: role_tx,
        };
        let span = tracing::info_span!("election", candidate = %id);
        let task = tokio::spawn(campaign.run().instrument(span));
        Ok(Candidate {
            id,
            lease,
            role,
            task,
        })
    }

    pub fn id(&self) -> &Name {
        &self.id
    }

    /// A receiver of the candidate's role, updated as it wins, loses or stands by.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader(_))
    }

    /// The current term, while leading.
    pub fn term(&self) -> Option<Term> {
        match &*self.role.borrow() {
            Role::Leader(term) => Some(term.clone()),
            Role::Standby | Role::Lost => None,
        }
    }

    /// Stops campaigning and revokes the lease: the leader key, if held, disappears at once and
    /// a standby takes over.
    pub async fn resign(mut self) -> Result<(), EtcdError> {
        self.task.abort();
        self.lease.revoke().await
    }

    /// Stops campaigning and keeping the lease alive without revoking it, as if the process had
    /// hung or died: the leader key, if held, stays until the TTL runs out.
    pub fn abandon(mut self) {
        self.task.abort();
        self.lease.abandon();
    }
}

/// The campaign task's state.
struct Campaign {
    etcd: Etcd,
    keys: ClusterKeys,
    id: Name,
    lease: i64,
    lease_state: watch::Receiver<LeaseState>,
    role: watch::Sender<Role>,
}

/// Why a round of campaigning ended.
enum Round {
    /// The leader key changed (or its watch ended): look again.
    Again,
    /// The candidate's lease is gone.
    LeaseLost,
}

impl Campaign {
    async fn run(self) {
        let mut backoff = Backoff::default();
        loop {
            let round = tokio::select! {
                round = self.round() => round,
                () = lease_lost(self.lease_state.clone()) => Ok(Round::LeaseLost),
            };
            match round {
                Ok(Round::Again) => backoff.reset(),
                Ok(Round::LeaseLost) => {
                    tracing::warn!("the candidate's lease is lost; it can no longer lead");
                    self.role.send_replace(Role::Lost);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "campaign round failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Takes the leader key if it is free (or sees that it already holds it), publishes the
    /// role, then waits for the key to change.
    async fn round(&self) -> Result<Round, EtcdError> {
        let leader = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                leader.as_str(),
                self.id.as_str(),
                Some(PutOptions::new().with_lease(self.lease)),
            )])
            .or_else([TxnOp::get(leader.as_str(), None)]);
        let response = self
            .etcd
            .call("campaign", self.etcd.client().txn(txn))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let won_at = if response.succeeded() {
            Some(revision)
        } else {
            let holder = response.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => first_kv(get),
                _ => None,
            });
            holder
                .filter(|kv| kv.lease() == self.lease && kv.value() == self.id.as_str().as_bytes())
                .map(|kv| kv.create_revision())
        };
        let role = match won_at {
            Some(create_revision) => Role::Leader(Term {
                keys: self.keys.clone(),
                candidate: self.id.clone(),
                create_revision,
            }),
            None => Role::Standby,
        };
        self.role.send_if_modified(|current| {
            let changed = *current != role;
            if changed {
                match &role {
                    Role::Leader(term) => {
                        tracing::info!(create_revision = term.create_revision, "leading");
                    }
                    Role::Standby | Role::Lost => tracing::info!("standing by"),
                }
                *current = role;
            }
            changed
        });
        self.leader_key_changes(&leader, revision + 1).await
    }

    /// Waits for any change to the leader key from `from` on.
    async fn leader_key_changes(&self, leader: &str, from: i64) -> Result<Round, EtcdError> {
        let mut client = self.etcd.client();
        let mut stream = self
            .etcd
            .call(
                "watch leader",
                client.watch(leader, Some(WatchOptions::new().with_start_revision(from))),
            )
            .await?;
        loop {
            match stream.message().await {
                Ok(Some(response)) if response.canceled() || !response.events().is_empty() => {
                    return Ok(Round::Again);
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Round::Again),
                Err(source) => {
                    return Err(EtcdError::Rpc {
                        op: "watch leader",
                        source,
                    });
                }
            }
        }
    }
}

/// Resolves once the lease is reported lost (or its keep-alive thread is gone).
async fn lease_lost(mut state: watch::Receiver<LeaseState>) {
    let _ = state
        .wait_for(|state| matches!(state, LeaseState::Lost { .. }))
        .await;
}
