//! The dispatcher's parts, and a layer through them.
use moe_proto::expert::{LayerReply, Precision as WirePrecision};
use moe_proto::tensor::{self, WireDtype};
use moe_state::records::Assignment;

use super::wire::{Sums, merge_reply};
use super::*;
use crate::links::Health;

fn nodes(epochs: &[(&str, u64)]) -> Snapshot<NodeRecord> {
    let record = |id: &str, epoch| NodeRecord {
        epoch,
        ..NodeRecord::new(id, format!("{id}:1"))
    };
    Snapshot {
        revision: 1,
        entries: epochs
            .iter()
            .map(|&(id, epoch)| (id.to_string(), record(id, epoch)))
            .collect(),
    }
}

#[test]
fn dispatch_errors_say_whether_a_retry_may_succeed() {
    use crate::node_client::CallError;
    let unavailable = [
        DispatchError::NoPlacement,
        DispatchError::NoReplica {
            layer: 0,
            expert: 1,
            last: "timeout".into(),
        },
        DispatchError::Call(CallError::Connect {
            address: "a".into(),
            reason: "refused".into(),
        }),
    ];
    for e in unavailable {
        assert!(matches!(e.kind(), RoutedError::Unavailable(_)), "{e}");
    }
    let bugs = [
        DispatchError::BadReply {
            node: "node-0".into(),
            reason: "short".into(),
        },
        DispatchError::Call(CallError::Refused {
            address: "a".into(),
            code: tonic::Code::InvalidArgument,
            message: "bad rows".into(),
        }),
    ];
    for e in bugs {
        assert!(matches!(e.kind(), RoutedError::Internal(_)), "{e}");
    }
}

/// A watch's read guard held across an await would make a layer's future not `Send`, and
/// could block a runtime worker on the watch's writer until the await ends (with every
/// worker so blocked, it never does): the future must stay `Send`.
#[test]
fn running_a_layer_holds_no_watch_guard_across_an_await() {
    fn is_send<T: Send>(_: &T) {}
    let (_, placement) = watch::channel(Snapshot {
        revision: 1,
        entries: BTreeMap::new(),
    });
    let (_, nodes) = watch::channel(nodes(&[("a", 1)]));
    let dispatcher = Dispatcher::new(
        placement,
        nodes,
        4,
        Duration::from_secs(1),
        Limits::default(),
    );
    let layer = dispatcher.run_layer(0, &[], (&[], None), Precision::Auto);
    is_send(&layer);
}

/// Epoch 2 of a one-expert model whose expert is on nodes a, b and c, in that order.
fn one_expert_on_abc() -> Placement {
    Placement {
        epoch: 2,
        model: "m".into(),
        layers: 1,
        experts_per_layer: 1,
        assignments: vec![Assignment {
            layer: 0,
            expert: 0,
            nodes: vec!["a".into(), "b".into(), "c".into()],
        }],
    }
}

#[test]
fn replicas_are_chosen_by_loading_health_load_and_order() {
    let placement = one_expert_on_abc();
    let pick = |nodes: &Snapshot<NodeRecord>, health: &[(&str, usize, bool)], excluded: &[&str]| {
        let excluded = excluded.iter().map(|&n| n.into()).collect();
        let health = |n: &str| {
            health.iter().find(|(id, _, _)| *id == n).map_or(
                Health::default(),
                |&(_, in_flight, failed_recently)| Health {
                    in_flight,
                    failed_recently,
                    ..Health::default()
                },
            )
        };
        replica((&placement, None), nodes, &health, 0, 0, &excluded)
    };
    let loaded = nodes(&[("a", 2), ("b", 2), ("c", 2)]);
    assert_eq!(pick(&loaded, &[], &[]).as_deref(), Some("a"));
    assert_eq!(pick(&loaded, &[("a", 1, false)], &[]).as_deref(), Some("b"));
    assert_eq!(pick(&loaded, &[("a", 0, true)], &[]).as_deref(), Some("b"));
    assert_eq!(
        pick(
            &loaded,
            &[("a", 0, true), ("b", 3, false), ("c", 1, false)],
            &[]
        )
        .as_deref(),
        Some("c")
    );
    // a has not loaded epoch 2 yet: b serves, then c when b is out.
    let loading = nodes(&[("a", 1), ("b", 2), ("c", 2)]);
    assert_eq!(pick(&loading, &[], &[]).as_deref(), Some("b"));
    assert_eq!(pick(&loading, &[("b", 0, true)], &[]).as_deref(), Some("c"));
    assert_eq!(pick(&loading, &[], &["b"]).as_deref(), Some("c"));
    // Nobody has loaded it: the first replica left; none left: none.
    let stale = nodes(&[("a", 1), ("b", 1), ("c", 1)]);
    assert_eq!(pick(&stale, &[], &["a"]).as_deref(), Some("b"));
    assert_eq!(pick(&stale, &[], &["a", "b", "c"]), None);
}

#[test]
fn while_new_replicas_load_the_previous_holders_serve() {
    let previous = one_expert_on_abc();
    let placement = Placement {
        epoch: 3,
        assignments: vec![Assignment {
            layer: 0,
            expert: 0,
            nodes: vec!["d".into(), "e".into()],
        }],
        ..previous.clone()
    };
    let pick = |nodes: &Snapshot<NodeRecord>, excluded: &[&str]| {
        let excluded = excluded.iter().map(|&n| n.into()).collect();
        let health = |_: &str| Health::default();
        let placements = (&placement, Some(&previous));
        replica(placements, nodes, &health, 0, 0, &excluded)
    };
    // d and e still load epoch 3; a is gone, b and c held the expert at epoch 2.
    let loading = nodes(&[("b", 2), ("c", 3), ("d", 2), ("e", 2)]);
    assert_eq!(pick(&loading, &[]).as_deref(), Some("b"));
    assert_eq!(pick(&loading, &["b"]).as_deref(), Some("c"));
    assert_eq!(pick(&loading, &["b", "c"]).as_deref(), Some("d"));
    // Once e has loaded epoch 3 it comes first.
    let loaded = nodes(&[("b", 2), ("c", 3), ("d", 2), ("e", 3)]);
    assert_eq!(pick(&loaded, &[]).as_deref(), Some("e"));
    // Without a previous placement only the current replicas are candidates.
    let health = |_: &str| Health::default();
    let alone = replica(
        (&placement, None),
        &loading,
        &health,
        0,
        0,
        &BTreeSet::new(),
    );
    assert_eq!(alone.as_deref(), Some("d"));
}

#[test]
fn low_pairs_are_rerouted_from_a_downgrading_link_to_the_least_loaded_healthy_replica() {
    let placement = one_expert_on_abc();
    let loaded = nodes(&[("a", 2), ("b", 2), ("c", 2)]);
    let target = |nodes: &Snapshot<NodeRecord>, links: &[(&str, Rung, usize, bool)]| {
        let health = |n: &str| {
            links.iter().find(|(id, ..)| *id == n).map_or(
                Health::default(),
                |&(_, rung, in_flight, failed_recently)| Health {
                    in_flight,
                    rung,
                    failed_recently,
                    // In these cases a link is crowded exactly when it has calls in flight
                    // beyond two.
                    crowded: in_flight > 2,
                },
            )
        };
        reroute_target(&placement, nodes, &health, (0, 0), "a", &BTreeSet::new()).cloned()
    };
    // a's link only sends int8 activations: nothing to reroute.
    assert_eq!(target(&loaded, &[("a", Rung::Int8Wire, 0, false)]), None);
    // a downgrades pairs: they go to b, the first replica with a calm link.
    let a_low = ("a", Rung::LowWeights, 0, false);
    assert_eq!(target(&loaded, &[a_low]).as_deref(), Some("b"));
    // The lowest rung first, then the fewest calls in flight.
    let busy_b = [a_low, ("b", Rung::Int8Wire, 0, false)];
    assert_eq!(target(&loaded, &busy_b).as_deref(), Some("c"));
    let b_in_flight = [
        a_low,
        ("b", Rung::Full, 2, false),
        ("c", Rung::Full, 1, false),
    ];
    assert_eq!(target(&loaded, &b_in_flight).as_deref(), Some("c"));
    // Never to a replica that downgrades itself, failed lately or has not loaded the
    // placement.
    let others_down = [
        a_low,
        ("b", Rung::LowWeights, 0, false),
        ("c", Rung::Full, 0, true),
    ];
    assert_eq!(target(&loaded, &others_down), None);
    let loading = nodes(&[("a", 2), ("b", 1), ("c", 1)]);
    assert_eq!(target(&loading, &[a_low]), None);
    // Links as loaded as a's, only a rung lower for now, have no room: the pairs stay.
    let equally_loaded = [
        a_low,
        ("b", Rung::Int8Wire, 3, false),
        ("c", Rung::Full, 3, false),
    ];
    assert_eq!(target(&loaded, &equally_loaded), None);
}

#[test]
fn a_failed_nodes_shares_of_both_layers_wait_for_a_replica_and_both_sums_come_back() {
    use super::layer::ExpertPairs;
    let (hidden, limits) = (2, Limits::default());
    let pair = |token| Pair {
        token,
        weight: 1.0,
        unimportance: 0.0,
    };
    let now: ExpertPairs = [(1, vec![pair(0)])].into_iter().collect();
    let later: ExpertPairs = [(4, vec![pair(1)])].into_iter().collect();
    let mut run = LayerRun::new((3, &now), Some((5, &later)), 2 * hidden, false);
    let units: Vec<Unit> = run.remaining.keys().copied().collect();
    let keys: Vec<(usize, usize)> = units.iter().map(|u| (u.layer, u.expert)).collect();
    assert_eq!(keys, [(3, 1), (5, 4)]);
    let work = run.work(&units);
    let node = NodeId::from("a");
    let lost = Err(CallError::Closed {
        address: "a".into(),
        reason: "reset".into(),
    });
    let answer = run.answer((&node, &units), lost, (&work, &[0, 1]), (hidden, &limits));
    assert_eq!(answer, Ok(Answer::Retry));
    assert_eq!(
        run.remaining.len(),
        2,
        "both layers' shares wait for a replica"
    );
    assert!(run.excluded.contains(&node));

    let rows = |v: f32| tensor::encode(&[v; 4], 2, hidden, WireDtype::F32).unwrap();
    let reply = LayerReply {
        output: Some(rows(1.0)),
        ahead_output: Some(rows(2.0)),
        ..LayerReply::default()
    };
    let replica = NodeId::from("b");
    let answer = run.answer(
        (&replica, &units),
        Ok(reply),
        (&work, &[0, 1]),
        (hidden, &limits),
    );
    assert_eq!(answer, Ok(Answer::Merged));
    assert!(run.remaining.is_empty());
    let (sums, ahead) = run.finish(&now, hidden);
    assert_eq!((sums, ahead), (vec![1.0; 4], vec![2.0; 4]));
}

#[test]
fn a_message_carrying_rerouted_pairs_travels_as_int8_at_least() {
    let unit = |rerouted| Unit {
        layer: 0,
        expert: 3,
        rerouted,
    };
    let own = [unit(false)];
    let with_rerouted = [unit(false), unit(true)];
    assert_eq!(message_rung(Rung::Full, &own), Rung::Full);
    assert_eq!(message_rung(Rung::Full, &with_rerouted), Rung::Int8Wire);
    assert_eq!(message_rung(Rung::Skip, &with_rerouted), Rung::Skip);
}

#[test]
fn unimportance_is_the_normalised_mass_of_heavier_experts() {
    let routes = [
        Route {
            experts: vec![3, 1],
            weights: vec![0.6, 0.2],
        },
        Route {
            experts: vec![1],
            weights: vec![1.0],
        },
    ];
    let pairs = pairs_by_expert(&routes);
    let of = |e: usize| -> Vec<(usize, f32, f32)> {
        pairs[&e]
            .iter()
            .map(|p| (p.token, p.weight, p.unimportance))
            .collect()
    };
    assert_eq!(of(3), [(0, 0.6, 0.0)]);
    assert_eq!(of(1), [(0, 0.2, 0.75), (1, 1.0, 0.0)]);
}

#[test]
fn a_request_carries_each_needed_row_once() {
    let hidden = 2;
    let h: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let a = [
        Pair {
            token: 3,
            weight: 0.5,
            unimportance: 0.0,
        },
        Pair {
            token: 1,
            weight: 0.25,
            unimportance: 0.5,
        },
    ];
    let b = [Pair {
        token: 3,
        weight: 0.75,
        unimportance: 0.25,
    }];
    let full = (Rung::Full, Thresholds::default());
    let work: [(LayerExpert, &[Pair]); 2] = [((4, 5), &a), ((4, 6), &b)];
    let (req, tokens, planned) = request((4, 9), &h, hidden, &work, true, full);
    assert_eq!(planned, PairCounts::new(3, 0, 0));
    assert!(req.per_pair);
    assert_eq!(req.reply_dtype, WireDtype::F32.proto() as i32);
    assert_eq!(tokens, [1, 3]);
    assert_eq!((req.layer, req.epoch), (4, 9));
    let rows = tensor::decode(req.tokens.as_ref().unwrap(), hidden, &Limits::default()).unwrap();
    assert_eq!(rows.data, [2.0, 3.0, 6.0, 7.0]);
    assert_eq!(req.experts[0].rows, [1, 0]);
    assert_eq!(req.experts[1].rows, [1]);
    assert!(req.experts[0].unimportance.is_empty(), "exact: no scores");
    let (req, _, _) = request((4, 9), &h, hidden, &work, false, full);
    assert_eq!(req.experts[0].unimportance, [0.0, 0.5]);
    assert!(req.ahead.is_none());
}

#[test]
fn a_later_layers_pairs_travel_as_ahead_work_on_the_same_rows() {
    let hidden = 2;
    let h: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let pair = |token| Pair {
        token,
        weight: 0.5,
        unimportance: 0.0,
    };
    let (a, b, c) = ([pair(3)], [pair(1), pair(3)], [pair(0)]);
    let work: [(LayerExpert, &[Pair]); 3] = [((4, 5), &a), ((6, 2), &b), ((6, 7), &c)];
    let full = (Rung::Full, Thresholds::default());
    let (req, tokens, planned) = request((4, 9), &h, hidden, &work, false, full);
    assert_eq!(planned, PairCounts::new(4, 0, 0));
    assert_eq!(tokens, [0, 1, 3], "every row either layer needs, once");
    assert_eq!(req.experts.len(), 1);
    assert_eq!(req.experts[0].rows, [2]);
    let ahead = req.ahead.as_ref().expect("ahead work");
    assert_eq!(ahead.layer, 6);
    let experts: Vec<(u32, Vec<u32>)> = ahead
        .experts
        .iter()
        .map(|e| (e.expert, e.rows.clone()))
        .collect();
    assert_eq!(experts, [(2, vec![1, 2]), (7, vec![0])]);

    // Only the later layer's pairs for this node: the layer's own work is empty.
    let (req, tokens, _) = request((4, 9), &h, hidden, &work[1..], false, full);
    assert!(req.experts.is_empty() && req.ahead.is_some());
    assert_eq!(tokens, [0, 1, 3]);

    // The reply's two outputs add into the two sums, row by row.
    let out = |scale: f32| {
        let rows: Vec<f32> = (0..6).map(|v| scale * v as f32).collect();
        tensor::encode(&rows, 3, hidden, WireDtype::F32).unwrap()
    };
    let reply = LayerReply {
        output: Some(out(1.0)),
        ahead_output: Some(out(10.0)),
        ..LayerReply::default()
    };
    let owned: Vec<(LayerExpert, Vec<Pair>)> = work.iter().map(|(k, p)| (*k, p.to_vec())).collect();
    let mut sums = Sums {
        now: vec![0.0; 8],
        ahead: vec![0.0; 8],
        ..Sums::default()
    };
    let shape = (hidden, &Limits::default(), false);
    merge_reply(&reply, (4, &owned, &tokens), shape, &mut sums).unwrap();
    assert_eq!(sums.now, [0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 4.0, 5.0]);
    assert_eq!(sums.ahead, [0.0, 10.0, 20.0, 30.0, 0.0, 0.0, 40.0, 50.0]);
    let without = LayerReply {
        ahead_output: None,
        ..reply
    };
    let refused = merge_reply(&without, (4, &owned, &tokens), shape, &mut sums).unwrap_err();
    assert!(refused.contains("ahead"), "{refused}");
}

#[test]
fn an_expert_is_staged_low_only_when_every_predicted_pair_would_run_low() {
    let pair = |unimportance| Pair {
        token: 0,
        weight: 0.5,
        unimportance,
    };
    let t = Thresholds::default();
    let unimportant = [pair(0.7), pair(0.8)];
    assert_eq!(
        hint_precision(&unimportant, Rung::LowWeights, t),
        WirePrecision::Low
    );
    assert_eq!(
        hint_precision(&unimportant, Rung::Int8Wire, t),
        WirePrecision::High
    );
    let mixed = [pair(0.7), pair(0.0)];
    assert_eq!(hint_precision(&mixed, Rung::Skip, t), WirePrecision::High);
}

#[test]
fn a_links_rung_sets_the_wire_dtype_and_each_pairs_precision() {
    let hidden = 4;
    let h: Vec<f32> = (0..12).map(|v| v as f32 - 5.0).collect();
    let pair = |token, unimportance| Pair {
        token,
        weight: 0.5,
        unimportance,
    };
    let a = [pair(0, 0.0), pair(1, 0.7)];
    let b = [pair(2, 0.95)];
    let thresholds = Thresholds::default();
    let high = WirePrecision::High as i32;
    let low = WirePrecision::Low as i32;
    let work: [(LayerExpert, &[Pair]); 2] = [((0, 0), &a), ((0, 1), &b)];

    let (req, tokens, planned) = request(
        (0, 1),
        &h,
        hidden,
        &work,
        false,
        (Rung::Int8Wire, thresholds),
    );
    assert_eq!(planned, PairCounts::new(3, 0, 0));
    assert_eq!(tokens, [0, 1, 2]);
    let rows = req.tokens.as_ref().unwrap();
    assert_eq!(rows.dtype, WireDtype::I8RowScaled.proto() as i32);
    assert_eq!(req.reply_dtype, WireDtype::I8RowScaled.proto() as i32);
    let decoded = tensor::decode(rows, hidden, &Limits::default()).unwrap();
    for (got, want) in decoded.data.iter().zip(&h) {
        assert!((got - want).abs() <= 5.0 / 127.0, "{got} vs {want}");
    }
    assert_eq!(req.experts[0].precisions, [high, high]);

    let (req, _, planned) = request(
        (0, 1),
        &h,
        hidden,
        &work,
        false,
        (Rung::LowWeights, thresholds),
    );
    assert_eq!(planned, PairCounts::new(1, 2, 0));
    assert_eq!(req.experts[0].precisions, [high, low]);
    assert_eq!(req.experts[1].precisions, [low]);

    // Skipping leaves out expert 1 (its only pair) and token 2's row.
    let (req, tokens, planned) =
        request((0, 1), &h, hidden, &work, false, (Rung::Skip, thresholds));
    assert_eq!(planned, PairCounts::new(1, 1, 1));
    assert_eq!(tokens, [0, 1]);
    assert_eq!(req.experts.len(), 1);
    assert_eq!(req.experts[0].expert, 0);
}
