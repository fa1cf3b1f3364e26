//! Stores exchanging changes directly (no server yet) converge, whatever the operations and the
//! order changes arrive in; concurrent conflicting transitions stay visible as contested.

use std::collections::BTreeSet;

use gridwork_core::model::catalog::Role;
use gridwork_core::model::doc::CasePatch;
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::lifecycle::{EventKind, RejectReason, StatusView};
use gridwork_core::store::CaseQuery;
use gridwork_core::{CoreError, Store};
use gridwork_tests::{district, identity, open_device, random_case, Rng};
use proptest::prelude::*;

fn deliver(from: &Store, to: &Store, id: &CaseId) {
    if let Ok(changes) = from.export_changes(id) {
        to.receive_changes(id, &changes).expect("receive");
    }
}

fn deliver_all(from: &Store, to: &Store) {
    for id in from.document_ids().expect("ids") {
        deliver(from, to, &id);
    }
}

/// Everything a replica shows of its cases: documents read in full, heads, and list status.
fn view(store: &Store) -> Vec<String> {
    let mut out = vec![];
    for id in store.document_ids().expect("ids") {
        let mut d = store.get_case(&id).expect("get");
        d.heads.sort();
        // `overdue` and `flags` depend on the local clock and catalogue only; both are shared here.
        out.push(serde_json::to_string(&d).expect("json"));
    }
    let list = store.list_cases(&CaseQuery { limit: 500, ..Default::default() }).expect("list");
    let mut statuses: Vec<String> = list.items.iter().map(|c| format!("{}={}", c.id, c.status)).collect();
    statuses.sort();
    out.extend(statuses);
    out
}

struct Replicas {
    _dirs: Vec<tempfile::TempDir>,
    stores: Vec<Store>,
}

fn replicas(roles: &[(&str, Role, Option<&str>)]) -> Replicas {
    let catalog = district(4);
    let dirs: Vec<tempfile::TempDir> = roles.iter().map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let stores = roles
        .iter()
        .zip(&dirs)
        .map(|((u, r, d), dir)| open_device(dir.path(), identity(u, *r, *d), &catalog, None).expect("open"))
        .collect();
    Replicas { _dirs: dirs, stores }
}

#[test]
fn concurrent_transitions_converge_in_any_order() {
    let r = replicas(&[("w1", Role::Worker, None), ("s1", Role::Supervisor, None), ("s2", Role::Supervisor, None)]);
    let (w, s1, s2) = (&r.stores[0], &r.stores[1], &r.stores[2]);
    let catalog = district(4);
    let case = w.capture_case(random_case(&mut Rng::new(1), &catalog, 0, 0)).expect("capture").id;
    deliver(w, s1, &case);
    deliver(w, s2, &case);
    // Offline at the same time: one supervisor accepts, the other rejects; both retitle it, and
    // the worker adds a note and edits the description.
    s1.record_event(&case, EventKind::Accept { note: String::new() }).expect("accept");
    s2.record_event(
        &case,
        EventKind::Reject { reason: RejectReason::OutOfScope, duplicate_of: None, note: String::new() },
    )
    .expect("reject");
    s1.edit_case(&case, CasePatch { title: Some("标题一".into()), ..Default::default() }).expect("edit");
    s2.edit_case(&case, CasePatch { title: Some("标题二".into()), ..Default::default() }).expect("edit");
    w.record_event(&case, EventKind::Note { text: "居民已通知".into() }).expect("note");
    w.edit_case(&case, CasePatch { description: Some("更新的描述".into()), ..Default::default() }).expect("edit");

    let sources = [w, s1, s2];
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let mut views = BTreeSet::new();
    for order in orders {
        let fresh = replicas(&[("s9", Role::Supervisor, None)]);
        for i in order {
            deliver(sources[i], &fresh.stores[0], &case);
        }
        let d = fresh.stores[0].get_case(&case).expect("get");
        assert!(matches!(d.case.timeline.state.status, StatusView::Contested { .. }), "accept vs reject stays visible");
        assert_eq!(d.case.title.conflicts.len(), 2, "both titles stay readable");
        assert_eq!(d.case.description, "更新的描述");
        views.insert(view(&fresh.stores[0]));
    }
    assert_eq!(views.len(), 1, "every delivery order gives the same case");

    // A supervisor who has seen both settles the contest; everyone converges on it.
    for a in &sources {
        for b in &sources {
            deliver_all(a, b);
        }
    }
    let StatusView::Contested { candidates } = s1.get_case(&case).expect("get").case.timeline.state.status else {
        panic!("contested")
    };
    let accept = candidates.iter().find(|c| c.status.as_str() == "accepted").expect("accept candidate").event;
    s1.record_event(&case, EventKind::Settle { chosen: accept }).expect("settle");
    for a in &sources {
        for b in &sources {
            deliver_all(a, b);
        }
    }
    for s in &sources {
        assert_eq!(
            s.list_cases(&CaseQuery { limit: 5, ..Default::default() }).expect("list").items[0].status,
            "accepted"
        );
    }
    assert_eq!(view(w), view(s1));
    assert_eq!(view(w), view(s2));
}

#[derive(Debug, Clone)]
enum Op {
    Capture { store: usize },
    Title { store: usize, case: usize, value: u8 },
    Description { store: usize, case: usize, value: u8 },
    Event { store: usize, case: usize, kind: u8 },
    Deliver { from: usize, to: usize, case: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..2usize).prop_map(|store| Op::Capture { store }),
        2 => (0..3usize, any::<usize>(), 0..4u8).prop_map(|(store, case, value)| Op::Title { store, case, value }),
        1 => (0..3usize, any::<usize>(), 0..4u8).prop_map(|(store, case, value)| Op::Description { store, case, value }),
        4 => (0..3usize, any::<usize>(), 0..8u8).prop_map(|(store, case, kind)| Op::Event { store, case, kind }),
        3 => (0..3usize, 0..3usize, any::<usize>()).prop_map(|(from, to, case)| Op::Deliver { from, to, case }),
    ]
}

/// The event a replica's role would try; refused ones (role table) are expected and skipped.
fn event_for(store: &Store, case: &CaseId, role: Role, kind: u8) -> Option<EventKind> {
    Some(match (role, kind % 4) {
        (Role::Worker, 0 | 1) => EventKind::Note { text: format!("n{kind}") },
        (Role::Worker, _) => EventKind::FollowUp { satisfaction: 1 + kind % 5, note: String::new() },
        (Role::Supervisor, _) => match kind {
            0 => EventKind::Accept { note: String::new() },
            1 => EventKind::Reject { reason: RejectReason::Duplicate, duplicate_of: None, note: String::new() },
            2 => EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: 1_000 },
            3 => EventKind::Close { note: String::new() },
            4 => EventKind::Return { reason: "again".into() },
            5 => EventKind::Urge { note: String::new() },
            _ => match store.get_case(case).ok()?.case.timeline.state.status {
                StatusView::Contested { candidates } => {
                    EventKind::Settle { chosen: candidates[kind as usize % candidates.len()].event }
                }
                _ => EventKind::Escalate { to: gridwork_core::model::lifecycle::Level::Street, note: String::new() },
            },
        },
        (_, 0 | 1) => EventKind::Start { department: "police".into() },
        (_, _) => EventKind::HandlerReport { department: "police".into(), note: String::new(), evidence: vec![] },
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn three_replicas_converge_under_random_operations_and_delivery_orders(ops in prop::collection::vec(op(), 1..40), seed in any::<u64>()) {
        let roles = [("w1", Role::Worker, None), ("s1", Role::Supervisor, None), ("h1", Role::DepartmentHandler, Some("police"))];
        let r = replicas(&roles);
        let catalog = district(4);
        let mut rng = Rng::new(seed);
        let mut cases: Vec<CaseId> = vec![];
        for op in &ops {
            let pick = |i: usize| if cases.is_empty() { None } else { Some(cases[i % cases.len()]) };
            let result: Result<(), CoreError> = match op {
                Op::Capture { store } => {
                    let grid = rng.below(4);
                    r.stores[*store].capture_case(random_case(&mut rng, &catalog, grid, 0)).map(|s| cases.push(s.id))
                }
                Op::Title { store, case, value } => match pick(*case) {
                    Some(c) => r.stores[*store].edit_case(&c, CasePatch { title: Some(format!("标题{value}")), ..Default::default() }).map(|_| ()),
                    None => Ok(()),
                },
                Op::Description { store, case, value } => match pick(*case) {
                    Some(c) => r.stores[*store].edit_case(&c, CasePatch { description: Some(format!("描述 {value} text")), ..Default::default() }).map(|_| ()),
                    None => Ok(()),
                },
                Op::Event { store, case, kind } => match pick(*case).and_then(|c| event_for(&r.stores[*store], &c, roles[*store].1, *kind).map(|k| (c, k))) {
                    Some((c, k)) => r.stores[*store].record_event(&c, k).map(|_| ()),
                    None => Ok(()),
                },
                Op::Deliver { from, to, case } => {
                    if let Some(c) = pick(*case) {
                        deliver(&r.stores[*from], &r.stores[*to], &c);
                    }
                    Ok(())
                }
            };
            match result {
                Ok(()) | Err(CoreError::UnknownCase { .. }) | Err(CoreError::TransitionNotAllowed { .. }) | Err(CoreError::NothingToChange) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
        // Everyone meets everyone, in a random order, until nothing new flows.
        let mut pairs: Vec<(usize, usize)> = (0..3).flat_map(|a| (0..3).map(move |b| (a, b))).filter(|(a, b)| a != b).collect();
        for _ in 0..2 {
            for i in (1..pairs.len()).rev() {
                pairs.swap(i, rng.below(i + 1));
            }
            for (a, b) in &pairs {
                deliver_all(&r.stores[*a], &r.stores[*b]);
            }
        }
        let v0 = view(&r.stores[0]);
        prop_assert_eq!(&v0, &view(&r.stores[1]));
        prop_assert_eq!(&v0, &view(&r.stores[2]));
        prop_assert_eq!(r.stores[0].document_ids().expect("ids").len(), cases.len(), "no case lost or duplicated");
    }
}
