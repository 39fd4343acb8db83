use super::*;
use moe_state::records::{ExpertCount, NodeId};

const EXPERT_BYTES: u64 = 1_000;

/// xorshift64*: enough randomness for property tests, seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

fn shape(layers: u32, moe_layers: Vec<u32>, experts: u32) -> ModelShape {
    ModelShape {
        model: "test-moe".into(),
        layers,
        moe_layers,
        experts_per_layer: experts,
        expert_bytes: EXPERT_BYTES,
    }
}

fn random_shape(rng: &mut Rng) -> ModelShape {
    let layers = rng.range(1, 6) as u32;
    let mut moe: Vec<u32> = (0..layers).filter(|_| rng.range(0, 3) > 0).collect();
    if moe.is_empty() {
        moe.push(layers - 1);
    }
    shape(layers, moe, rng.range(1, 12) as u32)
}

fn experts(shape: &ModelShape) -> usize {
    shape.moe_layers.len() * shape.experts_per_layer as usize
}

/// `count` nodes `n00..` of `slots` slots each, plus a remainder below one expert.
fn uniform_nodes(count: usize, slots: usize) -> Vec<NodeSpace> {
    (0..count)
        .map(|i| node(&format!("n{i:02}"), slots))
        .collect()
}

fn node(id: &str, slots: usize) -> NodeSpace {
    NodeSpace::new(id, slots as u64 * EXPERT_BYTES + EXPERT_BYTES / 2)
}

/// Zipf-like tokens over the experts in a random order.
fn skewed(rng: &mut Rng, shape: &ModelShape) -> Popularity {
    let mut popularity = Popularity::default();
    for &layer in &shape.moe_layers {
        for expert in 0..shape.experts_per_layer {
            let rank = rng.range(1, 64) as u64;
            popularity.add(layer, expert, 1_000_000 / (rank * rank));
        }
    }
    popularity
}

fn request<'a>(
    nodes: &'a [NodeSpace],
    shape: &'a ModelShape,
    popularity: &'a Popularity,
    replication: u32,
    previous: Option<&'a Placement>,
) -> PlanRequest<'a> {
    PlanRequest {
        nodes,
        shape,
        popularity,
        replication,
        previous,
        epoch: previous.map_or(1, |p| p.epoch + 1),
        balance_moves: 0,
    }
}

/// Coverage, distinct replicas, capacity, the report's figures and the document's own check.
fn assert_valid(plan: &Plan, nodes: &[NodeSpace], shape: &ModelShape) {
    let placement = &plan.placement;
    assert_eq!(placement.assignments.len(), experts(shape));
    let mut moe = shape.moe_layers.clone();
    moe.sort_unstable();
    moe.dedup();
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, a) in placement.assignments.iter().enumerate() {
        let per_layer = shape.experts_per_layer as usize;
        assert_eq!(
            (a.layer, a.expert),
            (moe[i / per_layer], (i % per_layer) as u32)
        );
        assert!(!a.nodes.is_empty(), "{a:?} unserved");
        let mut ids = a.nodes.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.nodes.len(), "{a:?} has a node twice");
        for id in &a.nodes {
            *held.entry(id.as_str()).or_default() += shape.expert_bytes;
        }
    }
    for (id, bytes) in &held {
        let node = nodes
            .iter()
            .find(|n| n.id == *id)
            .expect("placed on a listed node");
        assert!(
            *bytes <= node.capacity_bytes,
            "{id}: {bytes} > {}",
            node.capacity_bytes
        );
    }
    let copies: usize = placement.assignments.iter().map(|a| a.nodes.len()).sum();
    assert_eq!(plan.report.copies, copies);
    assert_eq!(
        plan.report.nodes.iter().map(|n| n.copies).sum::<usize>(),
        copies
    );
    assert_eq!(
        Placement::from_json(&placement.to_json()).as_ref(),
        Ok(placement)
    );
}

fn replicas(placement: &Placement) -> Vec<usize> {
    placement
        .assignments
        .iter()
        .map(|a| a.nodes.len())
        .collect()
}

fn copies_on(placement: &Placement, id: &str) -> usize {
    placement.experts_of(id).count()
}

#[test]
fn every_moe_expert_is_served_and_dense_layers_are_not() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let nodes = uniform_nodes(rng.range(1, 8), experts(&shape));
        let plan = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
        assert_valid(&plan, &nodes, &shape);
        for layer in (0..shape.layers).filter(|l| !shape.moe_layers.contains(l)) {
            assert!(plan.placement.assignments.iter().all(|a| a.layer != layer));
        }
        assert_eq!(plan.placement.epoch, 1);
        assert_eq!(plan.placement.layers, shape.layers);
    }
}

#[test]
fn capacity_is_never_exceeded() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut planned = 0;
    for _ in 0..300 {
        let shape = random_shape(&mut rng);
        let x = experts(&shape);
        let mut nodes: Vec<NodeSpace> = (0..rng.range(1, 10))
            .map(|i| {
                NodeSpace::new(
                    format!("n{i}"),
                    rng.range(0, x * EXPERT_BYTES as usize) as u64,
                )
            })
            .collect();
        let replication = rng.range(1, 4) as u32;
        let mut popularity = skewed(&mut rng, &shape);
        let mut previous: Option<Placement> = None;
        for step in 0..4 {
            let slots: u64 = nodes
                .iter()
                .map(|n| (n.capacity_bytes / EXPERT_BYTES).min(x as u64))
                .sum();
            match plan(&request(
                &nodes,
                &shape,
                &popularity,
                replication,
                previous.as_ref(),
            )) {
                Ok(plan) => {
                    assert!(slots >= x as u64);
                    assert_valid(&plan, &nodes, &shape);
                    previous = Some(plan.placement);
                    planned += 1;
                }
                Err(PlanError::InsufficientCapacity {
                    unassigned,
                    missing_bytes,
                    ..
                }) => {
                    assert_eq!(unassigned as u64, x as u64 - slots);
                    assert_eq!(missing_bytes, unassigned as u64 * EXPERT_BYTES);
                }
                Err(e) => panic!("{e}"),
            }
            match step {
                0 if nodes.len() > 1 => {
                    let gone = rng.range(0, nodes.len() - 1);
                    nodes.remove(gone);
                }
                1 => nodes.push(NodeSpace::new(
                    "joined",
                    rng.range(0, x * EXPERT_BYTES as usize) as u64,
                )),
                _ => popularity = skewed(&mut rng, &shape),
            }
        }
    }
    assert!(planned > 300, "only {planned} instances had room");
}

/// Copies of each layer on each node against `ceil(C_l / N) + slack`.
fn assert_spread(placement: &Placement, nodes: usize, slack: usize) {
    let mut per_layer: BTreeMap<u32, (usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for a in &placement.assignments {
        let (copies, on) = per_layer.entry(a.layer).or_default();
        *copies += a.nodes.len();
        for id in &a.nodes {
            *on.entry(id.as_str()).or_default() += 1;
        }
    }
    for (layer, (copies, on)) in per_layer {
        let most = on.values().copied().max().unwrap_or(0);
        assert!(
            most <= copies.div_ceil(nodes) + slack,
            "layer {layer}: {most} of {copies} copies on one of {nodes} nodes"
        );
    }
}

#[test]
fn each_layer_is_spread_across_nodes() {
    let mut rng = Rng(0x5eed_0000_0000_0001);
    for _ in 0..300 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let count = rng.range(1, 12);
        let replication = rng.range(1, 4) as u32;
        let copies_per_layer = shape.experts_per_layer as usize * (replication as usize).min(count);
        let room = shape.moe_layers.len() * copies_per_layer.div_ceil(count);
        let nodes = uniform_nodes(count, room);
        let plan = plan(&request(&nodes, &shape, &popularity, replication, None)).unwrap();
        assert_valid(&plan, &nodes, &shape);
        assert_spread(&plan.placement, count, 0);
    }
}

#[test]
fn with_room_every_expert_gets_at_least_min_r_replicas() {
    let mut rng = Rng(0x7777_1234_0000_0002);
    for round in 0..200 {
        let shape = random_shape(&mut rng);
        let even = round % 2 == 0;
        let popularity = if even {
            Popularity::default()
        } else {
            skewed(&mut rng, &shape)
        };
        let count = rng.range(1, 9);
        let replication = rng.range(1, 5);
        let floor = replication.min(count);
        let nodes = uniform_nodes(count, experts(&shape));
        let plan = plan(&request(
            &nodes,
            &shape,
            &popularity,
            replication as u32,
            None,
        ))
        .unwrap();
        assert_valid(&plan, &nodes, &shape);
        let counts = replicas(&plan.placement);
        assert!(counts.iter().all(|&r| r >= floor));
        assert_eq!(
            plan.report.replicas_min,
            counts.iter().copied().min().unwrap()
        );
        if even {
            assert!(counts.iter().all(|&r| r == floor), "{counts:?}");
        }
    }
}

#[test]
fn with_tight_room_hotter_experts_have_at_least_as_many_replicas() {
    let mut rng = Rng(0xdead_beef_0000_0003);
    for _ in 0..300 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let x = experts(&shape);
        let nodes: Vec<NodeSpace> = (0..rng.range(2, 8))
            .map(|i| node(&format!("n{i}"), rng.range(x / 8, x / 2 + 1)))
            .collect();
        let Ok(plan) = plan(&request(&nodes, &shape, &popularity, 3, None)) else {
            continue;
        };
        assert_valid(&plan, &nodes, &shape);
        let tokens: Vec<u64> = plan
            .placement
            .assignments
            .iter()
            .map(|a| popularity.tokens(a.layer, a.expert))
            .collect();
        let counts = replicas(&plan.placement);
        for a in 0..x {
            for b in 0..x {
                assert!(
                    tokens[a] <= tokens[b] || counts[a] >= counts[b],
                    "{} tokens: {} replicas, {} tokens: {}",
                    tokens[a],
                    counts[a],
                    tokens[b],
                    counts[b]
                );
            }
        }
    }
}

#[test]
fn a_leaving_node_moves_only_its_copies_and_what_new_counts_need() {
    let mut rng = Rng(0x1eaf_0000_0000_0004);
    for round in 0..200 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let x = experts(&shape);
        let count = rng.range(3, 10);
        let tight = round % 2 == 1;
        let slots = if tight {
            x.div_ceil(count - 1) + 1
        } else {
            2 * x
        };
        let mut nodes = uniform_nodes(count, slots);
        let before = plan(&request(&nodes, &shape, &popularity, 2, None))
            .unwrap()
            .placement;
        let gone = nodes.remove(rng.range(0, count - 1));
        let lost = copies_on(&before, &gone.id);
        let after = plan(&request(&nodes, &shape, &popularity, 2, Some(&before))).unwrap();
        assert_valid(&after, &nodes, &shape);
        assert_eq!(after.placement.epoch, before.epoch + 1);
        let moved = after.report.moved;
        assert!(moved <= 2 * lost, "{moved} moved, {lost} lost");
        if tight {
            continue;
        }
        // Counts only fall when a node leaves; an expert keeps its copies on the nodes that
        // stay up to its new count, and only the copies its new count lacks are placed.
        let mut wanted = 0;
        for (old, new) in before.assignments.iter().zip(&after.placement.assignments) {
            let stayed: Vec<&NodeId> = old
                .nodes
                .iter()
                .filter(|id| id.as_str() != gone.id)
                .collect();
            assert!(new.nodes.len() <= old.nodes.len(), "{old:?} -> {new:?}");
            let kept = stayed.iter().filter(|id| new.nodes.contains(id)).count();
            assert_eq!(
                kept,
                stayed.len().min(new.nodes.len()),
                "{old:?} -> {new:?}"
            );
            wanted += new.nodes.len() - kept;
        }
        assert_eq!(moved, wanted);
        assert!(moved <= lost, "{moved} moved, {lost} lost");
    }
}

#[test]
fn a_joining_node_takes_its_fair_share_with_bounded_moves() {
    let mut rng = Rng(0x0101_0000_0000_0005);
    for _ in 0..200 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let count = rng.range(1, 9);
        let mut nodes = uniform_nodes(count, 2 * experts(&shape));
        let before = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
        nodes.push(node("new", 2 * experts(&shape)));
        let after = plan(&request(
            &nodes,
            &shape,
            &popularity,
            2,
            Some(&before.placement),
        ))
        .unwrap();
        assert_valid(&after, &nodes, &shape);
        let copies = after.report.copies;
        let share = copies.div_ceil(count + 1);
        let joined = copies_on(&after.placement, "new");
        // Counts only rise when a node joins: the new copies are placed, and at most the
        // joining node's share of the others moves to it.
        let added = copies - before.report.copies;
        assert_eq!(after.report.moved, after.report.removed + added);
        if count == 1 {
            assert!(replicas(&after.placement).iter().all(|&r| r == 2));
            assert_eq!(
                joined,
                experts(&shape),
                "the second node takes a copy of each"
            );
        } else {
            assert!(
                after.report.moved <= share + added,
                "{} moved, share {share}, {added} added",
                after.report.moved
            );
            assert!(after.report.removed <= share);
            assert!(joined <= after.report.moved);
            assert!(
                joined >= copies / (count + 1) / 2,
                "joined with {joined} of {copies}"
            );
        }
    }
}

#[test]
fn planning_is_deterministic_and_ignores_node_order() {
    let mut rng = Rng(0xabcd_0000_0000_0006);
    for _ in 0..50 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let x = experts(&shape);
        let nodes: Vec<NodeSpace> = (0..rng.range(2, 9))
            .map(|i| node(&format!("n{i}"), rng.range(x / 2 + 1, 2 * x)))
            .collect();
        let first = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
        let mut shuffled = nodes.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.range(0, i));
        }
        let second = plan(&request(&shuffled, &shape, &popularity, 2, None)).unwrap();
        assert_eq!(first, second);
        let again = plan(&request(
            &nodes,
            &shape,
            &popularity,
            2,
            Some(&first.placement),
        ))
        .unwrap();
        assert_eq!(again.placement.assignments, first.placement.assignments);
        assert_eq!((again.report.moved, again.report.removed), (0, 0));
    }
}

#[test]
fn insufficient_capacity_states_the_missing_bytes() {
    let shape = shape(3, vec![0, 2], 4);
    let nodes = uniform_nodes(3, 2);
    let err = plan(&request(&nodes, &shape, &Popularity::default(), 2, None)).unwrap_err();
    assert_eq!(
        err,
        PlanError::InsufficientCapacity {
            experts: 8,
            unassigned: 2,
            missing_bytes: 2 * EXPERT_BYTES,
        }
    );
    assert!(err.to_string().contains("2000 bytes missing"), "{err}");
    let err = plan(&request(&[], &shape, &Popularity::default(), 2, None)).unwrap_err();
    assert!(matches!(
        err,
        PlanError::InsufficientCapacity { unassigned: 8, .. }
    ));
}

#[test]
fn bad_requests_are_refused() {
    let popularity = Popularity::default();
    let nodes = uniform_nodes(2, 8);
    let good = shape(2, vec![1], 4);
    assert_eq!(
        plan(&request(&nodes, &good, &popularity, 0, None)).unwrap_err(),
        PlanError::ZeroReplication
    );
    let twice = vec![node("a", 8), node("a", 8)];
    assert_eq!(
        plan(&request(&twice, &good, &popularity, 2, None)).unwrap_err(),
        PlanError::DuplicateNode("a".into())
    );
    let outside = shape(2, vec![2], 4);
    assert!(matches!(
        plan(&request(&nodes, &outside, &popularity, 2, None)),
        Err(PlanError::InvalidShape(_))
    ));
}

#[test]
fn popularity_sums_gateway_reports() {
    let report = |gateway: &str, tokens| GatewayStats {
        gateway: gateway.into(),
        window_seconds: 60,
        counts: vec![ExpertCount {
            layer: 1,
            expert: 2,
            tokens,
        }],
    };
    let popularity = Popularity::from_stats(&[report("a", 5), report("b", 7)]);
    assert_eq!(popularity.tokens(1, 2), 12);
    assert_eq!(popularity.tokens(0, 2), 0);
}

/// Popularity that makes every expert held by `hot` node far hotter than the rest.
fn hot_on(placement: &Placement, hot: &str) -> Popularity {
    let mut popularity = Popularity::default();
    for a in &placement.assignments {
        let tokens = if a.nodes.iter().any(|n| n == hot) {
            1_000
        } else {
            10
        };
        popularity.add(a.layer, a.expert, tokens);
    }
    popularity
}

#[test]
fn balancing_moves_lower_imbalance_within_budget() {
    let shape = shape(8, (0..8).collect(), 16);
    let nodes = uniform_nodes(8, 64);
    let before = plan(&request(&nodes, &shape, &Popularity::default(), 2, None)).unwrap();
    let shifted = hot_on(&before.placement, "n03");
    let stale = imbalance(&node_loads(
        &before.placement,
        &nodes,
        EXPERT_BYTES,
        &shifted,
    ));
    let mut previous = before.placement.clone();
    let mut last = stale;
    for budget in [4, 16, 64] {
        let after = plan(&PlanRequest {
            balance_moves: budget,
            ..request(&nodes, &shape, &shifted, 2, Some(&previous))
        })
        .unwrap();
        assert_valid(&after, &nodes, &shape);
        // The hot experts' redundant copies are placed first; then at most `budget` move.
        let added = after.report.copies - replicas(&previous).iter().sum::<usize>();
        assert!(after.report.moved <= budget + added);
        assert!(after.report.removed <= budget);
        assert!(
            after.report.imbalance < last,
            "{} after {last}",
            after.report.imbalance
        );
        last = after.report.imbalance;
        previous = after.placement;
    }
    let fresh = plan(&request(&nodes, &shape, &shifted, 2, None)).unwrap();
    let settled = plan(&PlanRequest {
        balance_moves: 64,
        ..request(&nodes, &shape, &shifted, 2, Some(&previous))
    })
    .unwrap();
    assert!(
        settled.report.imbalance <= fresh.report.imbalance * 1.05,
        "stale {stale}, balanced {}, fresh {}",
        settled.report.imbalance,
        fresh.report.imbalance
    );
}

#[test]
fn replans_only_when_popularity_unbalances_the_placement() {
    let shape = shape(8, (0..8).collect(), 16);
    let nodes = uniform_nodes(8, 64);
    let even = Popularity::default();
    let current = plan(&request(&nodes, &shape, &even, 2, None))
        .unwrap()
        .placement;
    let same = replan_advice(
        &current,
        &request(&nodes, &shape, &even, 2, None),
        Hysteresis::default(),
    );
    assert!(matches!(same, Ok(ReplanAdvice::Keep { .. })), "{same:?}");
    let shifted = hot_on(&current, "n05");
    let advice = replan_advice(
        &current,
        &request(&nodes, &shape, &shifted, 2, None),
        Hysteresis::default(),
    );
    let Ok(ReplanAdvice::Replan {
        current: now,
        fresh,
    }) = advice
    else {
        panic!("{advice:?}");
    };
    assert!(now > 1.25 && fresh * 1.1 < now, "{now} vs {fresh}");
    let lenient = Hysteresis {
        threshold: now,
        margin: 1.1,
    };
    let advice = replan_advice(
        &current,
        &request(&nodes, &shape, &shifted, 2, None),
        lenient,
    );
    assert!(
        matches!(advice, Ok(ReplanAdvice::Keep { .. })),
        "{advice:?}"
    );
}

#[test]
fn experts_a_node_cannot_hold_go_to_nodes_that_can() {
    let shape = shape(2, vec![0, 1], 8);
    let popularity = Popularity::default();
    let mut nodes = uniform_nodes(3, 16);
    let first = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    let on_a: Vec<(u32, u32)> = first.placement.experts_of("n00").collect();
    assert!(!on_a.is_empty());
    nodes[0].cannot_hold = on_a[..3].iter().copied().collect();
    let again = plan(&request(
        &nodes,
        &shape,
        &popularity,
        2,
        Some(&first.placement),
    ))
    .unwrap();
    assert_valid(&again, &nodes, &shape);
    for &(layer, expert) in &on_a[..3] {
        let holders = again.placement.nodes(layer, expert);
        assert!(
            !holders.iter().any(|n| n == "n00"),
            "{layer}/{expert}: {holders:?}"
        );
        assert_eq!(
            holders.len(),
            2,
            "{layer}/{expert} keeps its two copies elsewhere"
        );
    }
    assert_eq!(again.report.moved, 3, "only the unloadable copies move");

    // Fresh plans, and an expert that no node can hold still gets one.
    let fresh = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    assert!(
        on_a[..3]
            .iter()
            .all(|&(l, e)| !fresh.placement.nodes(l, e).iter().any(|n| n == "n00"))
    );
    for node in &mut nodes {
        node.cannot_hold.insert((1, 7));
    }
    let nowhere = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    assert_valid(&nowhere, &nodes, &shape);
    assert_eq!(nowhere.placement.nodes(1, 7).len(), 1);
}

#[test]
fn a_node_without_room_keeps_what_it_loaded_and_gets_nothing_more() {
    use moe_state::records::{Capacity, LoadFailure, NodeRecord};
    let shape = shape(1, vec![0], 8);
    let popularity = Popularity::default();
    let nodes = uniform_nodes(2, 8);
    let first = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    let record = NodeRecord {
        capacity: Capacity {
            ram_disk_bytes: 8 * EXPERT_BYTES,
            ..Capacity::default()
        },
        epoch: first.placement.epoch,
        unloadable: vec![LoadFailure {
            cause: "no space".into(),
            no_room: true,
            experts: vec![(0, 6), (0, 7)],
        }],
        ..NodeRecord::new("n00", "127.0.0.1:1")
    };
    let full = NodeSpace::of(&record, Some(&first.placement), EXPERT_BYTES);
    assert_eq!(full.capacity_bytes, 6 * EXPERT_BYTES);
    assert_eq!(full.cannot_hold.len(), 2);
    let spaces = [full, nodes[1].clone()];
    let again = plan(&request(
        &spaces,
        &shape,
        &popularity,
        2,
        Some(&first.placement),
    ))
    .unwrap();
    assert_valid(&again, &spaces, &shape);
    assert_eq!(again.placement.experts_of("n00").count(), 6);
    assert!(again.placement.nodes(0, 7) == ["n01"]);
    let roomy = NodeRecord {
        unloadable: Vec::new(),
        ..record
    };
    let back = NodeSpace::of(&roomy, Some(&first.placement), EXPERT_BYTES);
    assert_eq!(back.capacity_bytes, 8 * EXPERT_BYTES);
}

/// One MoE layer of `tokens.len()` experts with these tokens.
fn one_layer(tokens: &[u64]) -> (ModelShape, Popularity) {
    let mut popularity = Popularity::default();
    for (expert, &t) in tokens.iter().enumerate() {
        popularity.add(0, expert as u32, t);
    }
    (shape(1, vec![0], tokens.len() as u32), popularity)
}

#[test]
fn hot_experts_get_copies_in_proportion_to_their_load() {
    // 680 tokens over 16 nodes: the grain is 680 / (16 * 16) = 2.66 tokens a copy.
    let mut tokens = vec![40, 20];
    tokens.extend([10; 62]);
    let (shape, popularity) = one_layer(&tokens);
    let nodes = uniform_nodes(16, 32);
    let plan = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    assert_valid(&plan, &nodes, &shape);
    let counts = replicas(&plan.placement);
    assert_eq!(&counts[..3], [16, 8, 4]);
    assert!(counts[2..].iter().all(|&r| r == 4));
    assert!(
        plan.report.imbalance < 1.0 + 1e-9,
        "{}",
        plan.report.imbalance
    );
}

#[test]
fn redundant_copies_stay_within_the_slots_after_the_floor() {
    // 20 slots: the floor takes 16, the three hot experts share the 4 left.
    let (shape, popularity) = one_layer(&[1_000, 1_000, 1_000, 1, 1, 1, 1, 1]);
    let nodes = uniform_nodes(4, 5);
    let tight = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    assert_valid(&tight, &nodes, &shape);
    assert_eq!(replicas(&tight.placement), [4, 3, 3, 2, 2, 2, 2, 2]);

    let mut rng = Rng(0xeb1b_0000_0000_0007);
    for _ in 0..300 {
        let shape = random_shape(&mut rng);
        let popularity = skewed(&mut rng, &shape);
        let x = experts(&shape);
        let nodes: Vec<NodeSpace> = (0..rng.range(2, 10))
            .map(|i| node(&format!("n{i}"), rng.range(x / 4, x + 1)))
            .collect();
        let replication = rng.range(1, 3);
        let Ok(plan) = plan(&request(
            &nodes,
            &shape,
            &popularity,
            replication as u32,
            None,
        )) else {
            continue;
        };
        assert_valid(&plan, &nodes, &shape);
        let floor = replication.min(nodes.len());
        let counts = replicas(&plan.placement);
        if counts.iter().any(|&r| r > floor) {
            assert!(counts.iter().all(|&r| r >= floor), "{counts:?}");
        }
        let tokens: Vec<u64> = plan
            .placement
            .assignments
            .iter()
            .map(|a| popularity.tokens(a.layer, a.expert))
            .collect();
        for a in 0..x {
            for b in 0..x {
                assert!(tokens[a] <= tokens[b] || counts[a] >= counts[b]);
            }
        }
    }
}

/// Zipf 1.1 within each layer, ranks rotated per layer.
fn zipf(shape: &ModelShape) -> Popularity {
    let mut popularity = Popularity::default();
    let per_layer = shape.experts_per_layer;
    for &layer in &shape.moe_layers {
        for expert in 0..per_layer {
            let rank = (expert + 7 * layer) % per_layer + 1;
            let tokens = 1e6 / f64::from(rank).powf(1.1);
            popularity.add(layer, expert, tokens as u64);
        }
    }
    popularity
}

#[test]
fn leaves_and_joins_stay_balanced_and_a_join_moves_little() {
    let shape = shape(16, (0..16).collect(), 32);
    let popularity = zipf(&shape);
    // Room for 1.25 or 1.5 times two copies of each expert, and at 48 nodes also for 1.1 times:
    // then the redundant copies fill every slot.
    for (count, headroom) in [(16, 125), (24, 125), (48, 150), (48, 110)] {
        let slots = (experts(&shape) * 2 * headroom / 100).div_ceil(count);
        let mut nodes = uniform_nodes(count, slots);
        let fresh = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
        assert!(fresh.report.replicas_max > 2);
        assert_eq!(fresh.report.copies == count * slots, headroom == 110);
        nodes.remove(count / 3);
        let left = plan(&request(
            &nodes,
            &shape,
            &popularity,
            2,
            Some(&fresh.placement),
        ))
        .unwrap();
        nodes.push(node("new", slots));
        let joined = plan(&request(
            &nodes,
            &shape,
            &popularity,
            2,
            Some(&left.placement),
        ))
        .unwrap();
        assert_valid(&joined, &nodes, &shape);
        for (what, p) in [("fresh", &fresh), ("leave", &left), ("join", &joined)] {
            assert!(
                p.report.imbalance <= 1.1,
                "{count} nodes, {what}: {}",
                p.report.imbalance
            );
        }
        let moved = joined.report.moved as f64 / joined.report.copies as f64;
        assert!(moved <= 1.5 / count as f64, "{count} nodes: {moved}");
    }
}

#[test]
fn counts_follow_popularity_beyond_a_tolerance() {
    let mut tokens = vec![40, 20];
    tokens.extend([10; 62]);
    let (shape, popularity) = one_layer(&tokens);
    let nodes = uniform_nodes(16, 32);
    let first = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    let warmer = |factor: f64| {
        let mut changed = tokens.clone();
        changed[1] = (changed[1] as f64 * factor) as u64;
        one_layer(&changed).1
    };
    // 10% more tokens for the second expert: its 8 copies stay, nothing moves.
    let slightly = warmer(1.1);
    let again = plan(&request(
        &nodes,
        &shape,
        &slightly,
        2,
        Some(&first.placement),
    ))
    .unwrap();
    assert_eq!(replicas(&again.placement), replicas(&first.placement));
    assert_eq!(again.report.moved, 0);
    // Twice the tokens: it gets copies again in proportion; only those are placed.
    let doubled = warmer(2.0);
    let more = plan(&request(
        &nodes,
        &shape,
        &doubled,
        2,
        Some(&first.placement),
    ))
    .unwrap();
    assert_valid(&more, &nodes, &shape);
    let counts = replicas(&more.placement);
    assert!(counts[1] > 8 && counts[1] <= 16, "{counts:?}");
    assert_eq!(more.report.removed, 0);
    assert_eq!(more.report.moved, counts[1] - 8);
}

#[test]
fn redundant_copies_go_only_to_nodes_that_can_hold_them() {
    let mut tokens = vec![1_000];
    tokens.extend([10; 15]);
    let (shape, popularity) = one_layer(&tokens);
    let mut nodes = uniform_nodes(8, 16);
    for node in &mut nodes[..5] {
        node.cannot_hold.insert((0, 0));
    }
    let first = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
    assert_valid(&first, &nodes, &shape);
    assert_eq!(first.placement.nodes(0, 0), ["n05", "n06", "n07"]);
    assert_eq!(first.report.replicas_max, 3);
    nodes.remove(6);
    let after = plan(&request(
        &nodes,
        &shape,
        &popularity,
        2,
        Some(&first.placement),
    ))
    .unwrap();
    assert_valid(&after, &nodes, &shape);
    assert_eq!(after.placement.nodes(0, 0), ["n05", "n07"]);
}
