//! Registration, watching and election against a real etcd (see `common` for the harness).
//! Lease TTLs are 1 to 4 s so that expiry scenarios run in seconds.

use std::time::{Duration, Instant};

use anyhow::Result;
use moe_coordinator::election::{Candidate, PlacementWrite, Role};
use moe_state::etcd::{Etcd, EtcdError};
use moe_state::keys::{ClusterKeys, Name};
use moe_state::lease::LeaseState;
use moe_state::records::{Assignment, Capacity, ExpertCount, GatewayStats, NodeRecord, Placement};
use moe_state::registry::Registration;
use moe_state::watch::{Snapshot, Watcher};
use moe_tests::{Delay, EtcdServer, Proxy, RPC_TIMEOUT};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(2);

fn keys() -> ClusterKeys {
    ClusterKeys::new("test").unwrap()
}

fn name(value: &str) -> Name {
    Name::new("test name", value).unwrap()
}

fn node(id: &str) -> NodeRecord {
    NodeRecord {
        capacity: Capacity {
            ram_disk_bytes: 1 << 30,
            ..Capacity::default()
        },
        epoch: 1,
        ..NodeRecord::new(id, "127.0.0.1:50061")
    }
}

fn placement(epoch: u64) -> Placement {
    Placement {
        epoch,
        model: "tiny".into(),
        layers: 1,
        experts_per_layer: 1,
        assignments: vec![Assignment {
            layer: 0,
            expert: 0,
            nodes: vec!["node-a".into()],
        }],
    }
}

/// Waits until `receiver` holds a value for which `done` is true; panics after `within`.
async fn wait_until<T>(
    receiver: &mut watch::Receiver<T>,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&T) -> bool,
) {
    match tokio::time::timeout(within, receiver.wait_for(|value| done(value))).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("{what}: the channel closed"),
        Err(_) => panic!("{what}: not within {within:?}"),
    }
}

/// The value and lease stored under `key`, if any.
async fn stored(etcd: &Etcd, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
    let response = etcd.client().get(key, None).await?;
    Ok(response
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.lease())))
}

fn is_leader(role: &Role) -> bool {
    matches!(role, Role::Leader(_))
}

fn names<T>(snapshot: &Snapshot<T>) -> Vec<&str> {
    snapshot.entries.keys().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_holds_its_record_under_a_lease_until_deregistered() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let key = keys().node(&name("node-a"));

    let mut registration = Registration::register(&etcd, &keys(), node("node-a"), TTL).await?;
    let lease = registration.lease_id();
    assert_ne!(lease, 0);
    assert_eq!(*registration.state().borrow(), LeaseState::Alive { lease });
    let (value, held_by) = stored(&etcd, &key).await?.expect("the record");
    assert_eq!(NodeRecord::from_json(&value)?, node("node-a"));
    assert_eq!(held_by, lease);
    let granted = etcd.client().lease_time_to_live(lease, None).await?;
    assert_eq!(granted.granted_ttl(), 2);

    let mut bigger = node("node-a");
    bigger.capacity.ram_disk_bytes = 2 << 30;
    registration.update(bigger.clone()).await?;
    let (value, held_by) = stored(&etcd, &key).await?.expect("the record");
    assert_eq!(NodeRecord::from_json(&value)?, bigger);
    assert_eq!(held_by, lease, "an update keeps the lease");
    assert!(matches!(
        registration.update(node("node-b")).await,
        Err(EtcdError::IdChanged { .. })
    ));

    registration.deregister().await?;
    assert_eq!(
        stored(&etcd, &key).await?,
        None,
        "deregistering removes the record at once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_id_is_refused() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let first = Registration::register(&etcd, &keys(), node("node-a"), TTL).await?;

    let refused = Registration::register(&etcd, &keys(), node("node-a"), TTL).await;
    match refused {
        Err(EtcdError::NodeIdTaken { id, lease }) => {
            assert_eq!(id, "node-a");
            assert_eq!(lease, first.lease_id());
        }
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(_) => panic!("a duplicate node id was registered"),
    }
    let (_, held_by) = stored(&etcd, first.key()).await?.expect("the first record");
    assert_eq!(
        held_by,
        first.lease_id(),
        "the refusal left the first record alone"
    );

    first.deregister().await?;
    let again = Registration::register(&etcd, &keys(), node("node-a"), TTL).await?;
    assert_eq!(
        *again.state().borrow(),
        LeaseState::Alive {
            lease: again.lease_id()
        }
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_renewing_disappears_after_its_ttl() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let watcher = Watcher::nodes(&etcd, &keys()).await?;
    let mut nodes = watcher.subscribe();
    let silent = Registration::register(&etcd, &keys(), node("node-a"), TTL).await?;
    let _alive = Registration::register(&etcd, &keys(), node("node-b"), TTL).await?;
    wait_until(&mut nodes, RPC_TIMEOUT, "both nodes listed", |s| {
        s.entries.len() == 2
    })
    .await;

    let stopped = Instant::now();
    silent.abandon();
    wait_until(
        &mut nodes,
        TTL + Duration::from_secs(2),
        "the silent node gone",
        |s| s.get("node-a").is_none(),
    )
    .await;
    let gone_after = stopped.elapsed();
    assert!(
        gone_after >= Duration::from_millis(500),
        "the record went after {gone_after:?}: revoked, not expired"
    );
    assert_eq!(
        names(&watcher.borrow()),
        ["node-b"],
        "the renewing node stays"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_reported_and_the_owner_can_register_again() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let mut registration = Registration::register(&etcd, &keys(), node("node-a"), TTL).await?;
    let mut state = registration.state();
    let old = registration.lease_id();

    etcd.client().lease_revoke(old).await?;
    wait_until(&mut state, TTL, "the loss reported", |s| {
        *s == LeaseState::Lost { lease: old }
    })
    .await;
    assert!(matches!(
        registration.update(node("node-a")).await,
        Err(EtcdError::NotRegistered { .. })
    ));

    registration.reregister().await?;
    let new = registration.lease_id();
    assert_ne!(new, old);
    assert_eq!(*state.borrow_and_update(), LeaseState::Alive { lease: new });
    let (_, held_by) = stored(&etcd, registration.key())
        .await?
        .expect("the record again");
    assert_eq!(held_by, new);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_while_etcd_kept_the_lease_moves_the_record_without_a_gap() -> Result<()>
{
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let mut registration = Registration::register(&etcd, &keys(), node("node-a"), TTL).await?;
    let old = registration.lease_id();
    let mut client = etcd.client();
    let mut events = client.watch(registration.key(), None).await?;

    registration.reregister().await?;
    let new = registration.lease_id();
    assert_ne!(new, old);
    let (_, held_by) = stored(&etcd, registration.key())
        .await?
        .expect("the record throughout");
    assert_eq!(held_by, new);
    assert_eq!(client.lease_time_to_live(old, None).await?.ttl(), -1);
    // Watchers see the record put under the new lease, and never deleted.
    let mut seen = Vec::new();
    while let Ok(Ok(Some(response))) =
        tokio::time::timeout(Duration::from_millis(500), events.message()).await
    {
        seen.extend(response.events().iter().map(|e| e.event_type()));
    }
    assert_eq!(seen, [etcd_client::EventType::Put]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_hangs_while_etcd_is_down() -> Result<()> {
    let mut server = EtcdServer::start().await;
    let etcd = server.connect().await;
    server.stop();

    let started = Instant::now();
    let registered = Registration::register(&etcd, &keys(), node("node-a"), TTL).await;
    assert!(matches!(
        registered,
        Err(EtcdError::Timeout { .. } | EtcdError::Rpc { .. })
    ));
    assert!(Watcher::nodes(&etcd, &keys()).await.is_err());
    assert!(
        Candidate::start(&etcd, &keys(), "coord-a", TTL)
            .await
            .is_err()
    );
    let took = started.elapsed();
    assert!(took < RPC_TIMEOUT * 5, "three failed calls took {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_lists_then_follows_puts_and_deletes() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let keys = keys();
    let mut client = etcd.client();
    client
        .put(keys.node(&name("node-a")), node("node-a").to_json(), None)
        .await?;
    client
        .put(keys.node(&name("garbled")), "{not json", None)
        .await?;
    client
        .put(keys.node(&name("liar")), node("node-z").to_json(), None)
        .await?;
    client
        .put(keys.placement(), placement(1).to_json(), None)
        .await?;

    let watcher = Watcher::nodes(&etcd, &keys).await?;
    let listed_at = watcher.borrow().revision;
    assert_eq!(
        names(&watcher.borrow()),
        ["node-a"],
        "undecodable records are skipped"
    );
    let mut nodes = watcher.subscribe();

    client
        .put(keys.node(&name("node-b")), node("node-b").to_json(), None)
        .await?;
    wait_until(&mut nodes, RPC_TIMEOUT, "node-b put", |s| {
        s.get("node-b").is_some()
    })
    .await;
    client.delete(keys.node(&name("node-a")), None).await?;
    wait_until(&mut nodes, RPC_TIMEOUT, "node-a deleted", |s| {
        s.get("node-a").is_none()
    })
    .await;
    client
        .put(keys.node(&name("node-b")), "garbled now", None)
        .await?;
    wait_until(&mut nodes, RPC_TIMEOUT, "node-b garbled", |s| {
        s.entries.is_empty()
    })
    .await;
    assert!(watcher.borrow().revision > listed_at);

    let placements = Watcher::placement(&etcd, &keys).await?;
    assert_eq!(placements.borrow().single().map(|p| p.epoch), Some(1));

    let report = |gateway: &str| GatewayStats {
        gateway: gateway.into(),
        window_seconds: 60,
        counts: vec![ExpertCount {
            layer: 0,
            expert: 0,
            tokens: 9,
        }],
    };
    client
        .put(keys.stats(&name("gw-1")), report("gw-1").to_json(), None)
        .await?;
    client
        .put(keys.stats(&name("gw-2")), report("gw-9").to_json(), None)
        .await?;
    let stats = Watcher::stats(&etcd, &keys).await?;
    assert_eq!(
        names(&stats.borrow()),
        ["gw-1"],
        "a report under another id is skipped"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_relists_when_its_resume_revision_was_compacted() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let upstream = server.address().parse().expect("etcd's address");
    let proxy = Proxy::start(upstream, Delay::default())?;
    let behind_proxy = Etcd::connect(&[proxy.endpoint()], RPC_TIMEOUT).await?;
    let keys = keys();
    let mut client = etcd.client();

    let watcher = Watcher::nodes(&behind_proxy, &keys).await?;
    let mut nodes = watcher.subscribe();
    client
        .put(keys.node(&name("node-a")), node("node-a").to_json(), None)
        .await?;
    wait_until(&mut nodes, RPC_TIMEOUT, "node-a put", |s| {
        s.get("node-a").is_some()
    })
    .await;

    proxy.cut();
    client
        .put(keys.node(&name("node-b")), node("node-b").to_json(), None)
        .await?;
    client.delete(keys.node(&name("node-a")), None).await?;
    let last = client
        .put(keys.node(&name("node-c")), node("node-c").to_json(), None)
        .await?;
    let revision = last.header().expect("a header").revision();
    client.compact(revision, None).await?;
    proxy.heal();

    wait_until(
        &mut nodes,
        Duration::from_secs(10),
        "the re-listed map",
        |s| s.entries.keys().eq(["node-b", "node-c"]),
    )
    .await;
    assert!(watcher.borrow().revision >= revision);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_etcd_restart_everyone_reconnects() -> Result<()> {
    const LONGER_TTL: Duration = Duration::from_secs(4);
    let mut server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let keys = keys();
    let registration = Registration::register(&etcd, &keys, node("node-a"), LONGER_TTL).await?;
    let mut registration_state = registration.state();
    let watcher = Watcher::nodes(&etcd, &keys).await?;
    let mut nodes = watcher.subscribe();
    let candidate = Candidate::start(&etcd, &keys, "coord-a", LONGER_TTL).await?;
    let mut role = candidate.role();
    wait_until(&mut role, RPC_TIMEOUT, "leadership", is_leader).await;
    let term = candidate.term().expect("a term");

    server.restart().await;
    etcd.client()
        .put(keys.node(&name("node-b")), node("node-b").to_json(), None)
        .await?;
    wait_until(
        &mut nodes,
        Duration::from_secs(10),
        "node-b after the restart",
        |s| s.get("node-b").is_some(),
    )
    .await;

    let lost = tokio::time::timeout(
        LONGER_TTL + Duration::from_secs(1),
        registration_state.wait_for(|s| matches!(s, LeaseState::Lost { .. })),
    )
    .await;
    assert!(
        lost.is_err(),
        "the registration was lost across the restart"
    );
    assert!(
        watcher.borrow().get("node-a").is_some(),
        "node-a is still registered"
    );
    assert_eq!(candidate.term(), Some(term), "the leader kept its term");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_a_ttl_of_the_leaders_silence() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let keys = keys();
    let first = Candidate::start(&etcd, &keys, "coord-a", TTL).await?;
    wait_until(&mut first.role(), RPC_TIMEOUT, "a leader", is_leader).await;
    let second = Candidate::start(&etcd, &keys, "coord-b", TTL).await?;
    let mut second_role = second.role();
    let (holder, _) = stored(&etcd, &keys.leader()).await?.expect("a leader key");
    assert_eq!(holder, b"coord-a");
    assert!(!second.is_leader());

    let silenced = Instant::now();
    first.abandon();
    wait_until(
        &mut second_role,
        TTL + Duration::from_secs(2),
        "a takeover",
        is_leader,
    )
    .await;
    let took = silenced.elapsed();
    assert!(
        took < TTL + Duration::from_millis(1500),
        "the takeover took {took:?}"
    );
    let (holder, _) = stored(&etcd, &keys.leader()).await?.expect("a leader key");
    assert_eq!(holder, b"coord-b");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigning_leader_hands_over_at_once() -> Result<()> {
    const LONG_TTL: Duration = Duration::from_secs(30);
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let keys = keys();
    let first = Candidate::start(&etcd, &keys, "coord-a", LONG_TTL).await?;
    wait_until(&mut first.role(), RPC_TIMEOUT, "a leader", is_leader).await;
    let second = Candidate::start(&etcd, &keys, "coord-b", LONG_TTL).await?;

    first.resign().await?;
    wait_until(&mut second.role(), RPC_TIMEOUT, "a takeover", is_leader).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_leader_writes_placement_and_epochs_only_grow() -> Result<()> {
    let server = EtcdServer::start().await;
    let etcd = server.connect().await;
    let keys = keys();
    let placements = Watcher::placement(&etcd, &keys).await?;
    let mut seen = placements.subscribe();
    let first = Candidate::start(&etcd, &keys, "coord-a", TTL).await?;
    wait_until(&mut first.role(), RPC_TIMEOUT, "a leader", is_leader).await;
    let old_term = first.term().expect("a term");

    let empty = old_term.read_placement(&etcd).await?;
    assert_eq!((empty.placement.as_ref(), empty.mod_revision), (None, 0));
    let written = old_term
        .write_placement(&etcd, &empty, &placement(1))
        .await?;
    assert!(matches!(written, PlacementWrite::Written { .. }));
    wait_until(&mut seen, RPC_TIMEOUT, "epoch 1", |s| {
        s.single().map(|p| p.epoch) == Some(1)
    })
    .await;
    let stale = old_term
        .write_placement(&etcd, &empty, &placement(2))
        .await?;
    assert!(
        matches!(stale, PlacementWrite::Conflict { .. }),
        "{stale:?}"
    );
    let base = old_term.read_placement(&etcd).await?;
    assert!(matches!(
        old_term.write_placement(&etcd, &base, &placement(1)).await,
        Err(EtcdError::EpochNotIncreasing {
            stored: 1,
            proposed: 1
        })
    ));

    let second = Candidate::start(&etcd, &keys, "coord-b", TTL).await?;
    first.abandon();
    wait_until(
        &mut second.role(),
        TTL + Duration::from_secs(2),
        "a takeover",
        is_leader,
    )
    .await;
    let new_term = second.term().expect("a term");
    assert!(new_term.create_revision() > old_term.create_revision());

    let deposed = old_term
        .write_placement(&etcd, &base, &placement(2))
        .await?;
    assert_eq!(deposed, PlacementWrite::NotLeader);
    let base = new_term.read_placement(&etcd).await?;
    assert_eq!(
        base.epoch(),
        1,
        "the deposed leader's write left nothing behind"
    );
    let written = new_term
        .write_placement(&etcd, &base, &placement(2))
        .await?;
    assert!(matches!(written, PlacementWrite::Written { .. }));
    wait_until(&mut seen, RPC_TIMEOUT, "epoch 2", |s| {
        s.single().map(|p| p.epoch) == Some(2)
    })
    .await;
    Ok(())
}
