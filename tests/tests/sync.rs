//! End to end through the real sync server on a random loopback port, with real device stores.

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::sync::Arc;

use base64::Engine;
use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::model::wire::{DeviceState, Outcome, PushedChange, PushedRecord, SyncRequest, SyncResponse};
use gridwork_core::store::CaseQuery;
use gridwork_core::sync::{enrol, SyncConfig, SyncReport};
use gridwork_core::CoreError;
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

mod common;
use common::{capture, phone, District, Phone};

/// A sync request pushing `changes` and `records`, for tests that talk to the store directly.
fn push_request(changes: Vec<PushedChange>, records: Vec<PushedRecord>) -> SyncRequest {
    gridwork_tests::sync_request(changes, records, None, 1 << 20)
}

fn ids(p: &Phone) -> Vec<CaseId> {
    let mut v = p.store.document_ids().expect("ids");
    v.sort();
    v
}

#[test]
fn offline_work_converges_through_the_server_within_each_scope() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut w2 = phone(&d, "w2", None);
    let mut s1 = phone(&d, "s1", None);
    let mut h1 = phone(&d, "h1", None);
    let mine = capture(&w1, 0, 3, 1);
    let theirs = capture(&w2, 1, 2, 2);

    let r = w1.sync(&d.url()).expect("w1 sync");
    assert_eq!((r.pushed, r.accepted), (3, 3));
    assert_eq!(w1.store.outbox_len().expect("outbox"), 0, "acknowledged items leave the outbox");
    w2.sync(&d.url()).expect("w2 sync");
    w1.sync(&d.url()).expect("w1 again");
    assert_eq!(
        ids(&w1),
        {
            let mut m = mine.clone();
            m.sort();
            m
        },
        "w1 sees grid g0 only"
    );

    s1.sync(&d.url()).expect("s1 sync");
    let mut all = mine.clone();
    all.extend(&theirs);
    all.sort();
    assert_eq!(ids(&s1), all, "the community supervisor sees both grids");

    // The supervisor dispatches one case to the police; the handler receives it whole.
    let case = mine[0];
    s1.store.record_event(&case, EventKind::Accept { note: String::new() }).expect("accept");
    s1.store
        .record_event(&case, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: i64::MAX / 2 })
        .expect("dispatch");
    s1.sync(&d.url()).expect("s1 push");
    h1.sync(&d.url()).expect("h1 pull");
    assert_eq!(ids(&h1), vec![case], "only the dispatched case enters the department's scope");
    let got = h1.store.get_case(&case).expect("whole history arrived");
    assert_eq!(got.case.timeline.entries.len(), 3);
    h1.store.record_event(&case, EventKind::Start { department: "police".into() }).expect("start");
    h1.store
        .record_event(
            &case,
            EventKind::HandlerReport { department: "police".into(), note: "done".into(), evidence: vec![] },
        )
        .expect("report");
    h1.sync(&d.url()).expect("h1 push");
    w1.sync(&d.url()).expect("w1 pull");
    let mine_now =
        w1.store.list_cases(&CaseQuery { assigned_to_me: true, limit: 10, ..Default::default() }).expect("list");
    assert_eq!(mine_now.items.len(), 1, "the handled case awaits the reporter's follow-up");
    assert_eq!(mine_now.items[0].status, "handled");

    // Every replica that holds the case has the server's heads.
    let heads = d.store.doc_heads(&case.to_string()).expect("server heads");
    for p in [&w1, &s1, &h1] {
        p.store.clone().sync(&p.config, &mut |_| {}).expect("settle");
        let mut h = p.store.get_case(&case).expect("get").heads;
        h.sort();
        assert_eq!(h, heads);
    }
}

#[test]
fn the_same_batch_twice_is_stored_once() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    capture(&w1, 0, 2, 3);
    let device = d.store.authenticate(&w1.config.token).expect("token");
    let changes: Vec<PushedChange> = w1
        .store
        .outbox_page(usize::MAX)
        .expect("outbox")
        .into_iter()
        .map(|i| PushedChange {
            doc: i.doc_id.unwrap_or_default(),
            bytes: base64::engine::general_purpose::STANDARD.encode(i.bytes),
            receipt: None,
            link: i.link,
        })
        .collect();
    let req = push_request(changes.iter().chain(changes.iter()).cloned().collect(), vec![]);
    let first = d.store.sync(&device, req.clone(), 0).expect("first");
    assert!(first.results.iter().all(|r| r.outcome == Outcome::Accepted));
    let counts = d.store.counts().expect("counts");
    let again = d.store.sync(&device, req, 0).expect("again");
    assert!(again.results.iter().all(|r| r.outcome == Outcome::Accepted));
    assert_eq!(d.store.counts().expect("counts"), counts, "nothing stored twice");
    assert_eq!(counts.0, 2);
}

#[test]
fn forged_roles_and_users_are_quarantined_and_the_rest_of_the_batch_is_unaffected() {
    let d = District::new();
    let mut honest = phone(&d, "w1", None);
    let mut forged_role = phone(&d, "w1", Some(("w1", Role::Supervisor)));
    let mut forged_user = phone(&d, "w2", Some(("s1", Role::Supervisor)));
    capture(&honest, 0, 1, 4);
    capture(&forged_role, 0, 1, 5);
    capture(&forged_user, 1, 1, 6);
    assert_eq!(honest.sync(&d.url()).expect("honest").accepted, 1);
    let r = forged_role.sync(&d.url()).expect("forged role");
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    assert!(r.quarantined[0].1.contains("Supervisor"), "{:?}", r.quarantined);
    assert_eq!(
        forged_role.store.outbox_len().expect("outbox"),
        0,
        "quarantined is kept on the server, so the device stops resending"
    );
    assert_eq!(forged_user.sync(&d.url()).expect("forged user").quarantined.len(), 1);
    let q = d.store.quarantined().expect("list");
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|i| i.status == "pending"));
    let (changes, docs, _) = d.store.counts().expect("counts");
    assert_eq!((changes, docs), (1, 1), "only the honest case is in any scope");

    let mut s1 = phone(&d, "s1", None);
    s1.sync(&d.url()).expect("s1");
    assert_eq!(ids(&s1).len(), 1, "the supervisor sees only the honest case");

    // An administrator releases one (it enters its case's scopes) and rejects the other.
    let role_case = q.iter().find(|i| i.reason.contains("w1")).expect("the forged-role change");
    let user_case = q.iter().find(|i| i.reason.contains("s1")).expect("the forged-user change");
    d.store.release_quarantined(&role_case.key, 0).expect("release");
    d.store.reject_quarantined(&user_case.key).expect("reject");
    assert!(d.store.reject_quarantined(&user_case.key).is_err(), "already decided");
    assert_eq!(d.store.counts().expect("counts").1, 2, "the released change is applied");
    let r = s1.sync(&d.url()).expect("s1 again");
    assert_eq!(ids(&s1).len(), 2, "the released case arrived: {r:?}");
    let statuses: Vec<String> = d.store.quarantined().expect("list").into_iter().map(|i| i.status).collect();
    assert!(statuses.contains(&"released".to_owned()) && statuses.contains(&"rejected".to_owned()));
}

#[test]
fn a_revoked_device_is_refused_and_what_it_synced_stays() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 2, 7);
    w1.sync(&d.url()).expect("sync");
    let device = d.store.list_devices(0).expect("devices").into_iter().find(|x| x.user == "w1").expect("w1 device");
    d.store.revoke_device(&device.id).expect("revoke");
    capture(&w1, 0, 1, 8);
    match w1.sync(&d.url()) {
        Err(CoreError::Server { status: 403, code, .. }) => assert_eq!(code, "device_revoked"),
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(w1.store.outbox_len().expect("outbox"), 1, "the unsynced case stays on the phone");
    assert_eq!(d.store.counts().expect("counts").1, 2, "synced cases stay on the server");
}

#[test]
fn a_moved_worker_keeps_unsynced_work_and_receives_the_new_grid() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut w2 = phone(&d, "w2", None);
    let theirs = capture(&w2, 1, 2, 9);
    w2.sync(&d.url()).expect("w2");
    let mine = capture(&w1, 0, 2, 10);
    w1.sync(&d.url()).expect("w1 before the move");
    let later = capture(&w1, 0, 1, 11);
    d.store.set_user("w1", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("move to g1");
    let r = w1.sync(&d.url()).expect("after the move");
    assert_eq!(r.accepted, 1, "unsynced work from the old grid is accepted");
    let mut expected: Vec<CaseId> = mine.iter().chain(&later).chain(&theirs).copied().collect();
    expected.sort();
    assert_eq!(ids(&w1), expected, "the new grid's cases arrived; own cases stay");
    assert_eq!(r.left_scope, 0, "own reports stay in the reporter's scope");
}

#[test]
fn server_restart_between_syncs_loses_nothing() {
    let mut d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    capture(&w1, 0, 2, 12);
    w1.sync(&d.url()).expect("w1");
    s1.sync(&d.url()).expect("s1");
    d.restart();
    capture(&w1, 0, 1, 13);
    w1.sync(&d.url()).expect("w1 after restart");
    let r = s1.sync(&d.url()).expect("s1 after restart");
    assert_eq!(r.pulled_docs, 1, "only what is new since the cursor");
    assert_eq!(ids(&s1), ids(&w1));
}

#[test]
fn an_old_app_is_told_to_upgrade_and_its_push_is_still_accepted() {
    let d = District::new();
    d.store.set_min_app_version("9.0.0").expect("min");
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 1, 14);
    let r = w1.sync(&d.url()).expect("sync");
    assert!(r.upgrade_required);
    assert_eq!(r.accepted, 1);
}

#[test]
fn bad_requests_get_a_json_4xx_and_change_nothing() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .build()
        .expect("client");
    let url = format!("{}/v1/sync", d.url());
    let check = |resp: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().expect("body")).expect("json body");
        assert_eq!(body["error"], code, "{body}");
    };
    check(client.post(&url).body("{}").send().expect("send"), 401, "unauthenticated");
    check(client.post(&url).bearer_auth("nope").body("{}").send().expect("send"), 401, "unauthenticated");
    let json = |body: String| {
        client.post(&url).bearer_auth(&w1.config.token).header("content-type", "application/json").body(body)
    };
    check(
        client.post(&url).bearer_auth(&w1.config.token).body("{}").send().expect("send"),
        415,
        "unsupported_media_type",
    );
    check(json("not json".into()).send().expect("send"), 400, "bad_request");
    let future = serde_json::json!({
        "protocol": 99, "app_version": "9", "doc_schema": 1, "cursor": null,
        "state": DeviceState::default(), "changes": [], "records": [], "max_pull_bytes": 100
    });
    check(json(future.to_string()).send().expect("send"), 400, "protocol_unsupported");
    let garbage = serde_json::json!({
        "protocol": 1, "app_version": "0.1.0", "doc_schema": 1, "cursor": null,
        "state": DeviceState::default(), "changes": [{"doc": "x", "bytes": "Z2FyYmFnZQ=="}], "records": [], "max_pull_bytes": 100
    });
    let resp = json(garbage.to_string()).send().expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().expect("body")).expect("json");
    assert_eq!(body["results"][0]["outcome"], "refused");
    // Too large, declared up front: refused from the headers alone, before any body is read.
    let limit = gridwork_sync_server::http::MAX_BODY_BYTES;
    let (status, body) =
        raw_post(&d.url(), &w1.config.token, &format!("content-length: {}\r\n", limit + 1), Vec::new());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too_large"), "{body}");
    // Too large, undeclared (chunked): refused once the limit is crossed. The server closes
    // without reading the rest, so the writer's errors are expected and the answer is read
    // concurrently rather than after the whole body was sent.
    let mut chunked = Vec::new();
    for _ in 0..(limit / (1 << 20) + 2) {
        chunked.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 1 << 20));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_post(&d.url(), &w1.config.token, "transfer-encoding: chunked\r\n", chunked);
    assert_eq!(status, 413, "{body}");
    check(
        client
            .post(format!("{}/v1/enrol", d.url()))
            .header("content-type", "application/json")
            .body(r#"{"code":"used","app_version":"1"}"#)
            .send()
            .expect("send"),
        403,
        "bad_enrolment_code",
    );
    assert_eq!(d.store.counts().expect("counts"), (0, 0, 0));
}

/// Sends a POST to /v1/sync over a bare socket, writing `body` from another thread while the
/// answer is read: a server that refuses early must still be heard, whatever the writer meets.
fn raw_post(base: &str, token: &str, framing: &str, body: Vec<u8>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\n{framing}\r\n"
    );
    stream.write_all(head.as_bytes()).expect("headers");
    let mut writer = stream.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        // A refused body ends in a reset or a broken pipe: both are the server's right.
        let _ = writer.write_all(&body);
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn a_worker_and_a_supervisor_editing_the_same_case_offline_both_stay_visible() {
    use gridwork_core::model::doc::CasePatch;
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let case = capture(&w1, 0, 1, 20)[0];
    w1.sync(&d.url()).expect("w1");
    s1.sync(&d.url()).expect("s1");
    w1.store
        .edit_case(&case, CasePatch { title: Some("worker: 3号楼漏水".into()), ..Default::default() })
        .expect("edit");
    s1.store
        .edit_case(&case, CasePatch { title: Some("supervisor: 漏水已派单".into()), ..Default::default() })
        .expect("edit");
    s1.store.record_event(&case, EventKind::Accept { note: String::new() }).expect("accept");
    w1.sync(&d.url()).expect("w1 push");
    s1.sync(&d.url()).expect("s1 push and pull");
    w1.sync(&d.url()).expect("w1 pull");
    for p in [&w1, &s1] {
        let c = p.store.get_case(&case).expect("get").case;
        assert_eq!(c.title.conflicts.len(), 2, "both titles stay readable until someone chooses");
        assert_eq!(c.timeline.state.status.label(), "accepted");
    }
}

mod random_orders {
    use super::*;
    use gridwork_core::model::doc::CasePatch;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Capture(usize),
        Edit(usize, usize, u8),
        Accept(usize),
        Sync(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..2usize).prop_map(Step::Capture),
            (0..3usize, any::<usize>(), 0..4u8).prop_map(|(p, c, v)| Step::Edit(p, c, v)),
            any::<usize>().prop_map(Step::Accept),
            (0..3usize).prop_map(Step::Sync),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        /// Two workers and their supervisor work offline and sync in random orders; after everyone
        /// syncs twice, every phone holds exactly its scope with the server's heads.
        #[test]
        fn phones_converge_through_the_server_whatever_the_sync_order(steps in prop::collection::vec(step(), 1..25)) {
            let d = District::new();
            let mut phones = [phone(&d, "w1", None), phone(&d, "w2", None), phone(&d, "s1", None)];
            let mut cases: Vec<CaseId> = vec![];
            let url = d.url();
            for (i, s) in steps.iter().enumerate() {
                match s {
                    Step::Capture(p) => cases.extend(capture(&phones[*p], *p, 1, i as u64 + 100)),
                    Step::Edit(p, c, v) if !cases.is_empty() => {
                        let id = cases[c % cases.len()];
                        match phones[*p].store.edit_case(&id, CasePatch { title: Some(format!("t{v}")), ..Default::default() }) {
                            Ok(_) | Err(CoreError::UnknownCase { .. }) | Err(CoreError::NothingToChange) => {}
                            Err(e) => prop_assert!(false, "edit: {e}"),
                        }
                    }
                    Step::Accept(c) if !cases.is_empty() => {
                        let id = cases[c % cases.len()];
                        match phones[2].store.record_event(&id, EventKind::Accept { note: String::new() }) {
                            Ok(_) | Err(CoreError::UnknownCase { .. }) | Err(CoreError::TransitionNotAllowed { .. }) => {}
                            Err(e) => prop_assert!(false, "accept: {e}"),
                        }
                    }
                    Step::Sync(p) => {
                        phones[*p].sync(&url).expect("sync");
                    }
                    _ => {}
                }
            }
            for _ in 0..2 {
                for p in phones.iter_mut() {
                    p.sync(&url).expect("final sync");
                }
            }
            for (p, user) in phones.iter().zip(["w1", "w2", "s1"]) {
                let held: Vec<String> = ids(p).iter().map(|i| i.to_string()).collect();
                prop_assert_eq!(&held, &d.store.docs_in_scope(user).expect("scope"), "{} holds its scope", user);
                for id in ids(p) {
                    let mut h = p.store.get_case(&id).expect("get").heads;
                    h.sort();
                    prop_assert_eq!(h, d.store.doc_heads(&id.to_string()).expect("heads"));
                }
                prop_assert_eq!(p.store.outbox_len().expect("outbox"), 0);
            }
            prop_assert_eq!(d.store.counts().expect("counts").1 as usize, cases.len(), "nothing lost, nothing duplicated");
        }
    }
}

#[test]
fn cases_reported_outside_the_grid_and_from_a_skewed_clock_are_flagged_and_routed() {
    let d = District::new();
    let catalog = district(4);
    // w1 works grid g0, but this case lies in g1; the phone's clock is a day behind.
    let (_, code) = d.store.enrol_device("w1", 0).expect("enrol");
    let e = enrol(&d.url(), &code, None, "0.1.0").expect("redeem");
    let identity = identity_from_enrolment(&e);
    let dir = tempfile::tempdir().expect("tempdir");
    let real_now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let clock = Arc::new(gridwork_core::clock::FixedClock::new(real_now - 86_400_000));
    let store = open_device(dir.path(), identity, &catalog, Some(clock)).expect("store");
    let mut case = random_case(&mut Rng::new(30), &catalog, 0, 0);
    let (lat, lon) = gridwork_tests::grid_centre(&catalog, 1);
    case.location = gridwork_core::model::geo::Location::gps(lat, lon, 5.0, 0);
    let id = store.capture_case(case).expect("capture").id;
    let r = store.sync(&SyncConfig::new(d.url(), e.token), &mut |_| {}).expect("sync");
    assert_eq!(r.accepted, 1, "accepted, not refused");
    let flags = d.store.doc_flags(&id.to_string()).expect("flags");
    assert!(flags.contains(&"outside_grid".to_owned()), "{flags:?}");
    assert!(flags.contains(&"device_clock_skew".to_owned()), "{flags:?}");
    let mut w2 = phone(&d, "w2", None);
    w2.sync(&d.url()).expect("w2");
    assert_eq!(ids(&w2), vec![id], "routed to the grid it lies in");
}

#[test]
fn concurrent_pushes_share_commits_and_each_gets_its_own_answer() {
    // Pushes arriving together are committed as one batch by whichever request holds the writer;
    // each must still get exactly its own results, and a forged push must not taint the others.
    let d = District::new();
    let mut phones: Vec<(Phone, usize)> =
        (0..8).map(|i| (phone(&d, if i % 2 == 0 { "w1" } else { "w2" }, None), i)).collect();
    phones.push((phone(&d, "w1", Some(("w2", Role::Worker))), 8));
    let mut expected = vec![];
    for (p, i) in &phones {
        expected.extend(capture(p, i % 2, 5, 100 + *i as u64));
    }
    let url = d.url();
    let reports: Vec<(usize, Result<SyncReport, CoreError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = phones
            .iter_mut()
            .map(|(p, i)| {
                let url = url.clone();
                let i = *i;
                s.spawn(move || (i, p.sync(&url)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for (i, r) in reports {
        let r = r.expect("every push is answered");
        if i == 8 {
            assert_eq!((r.pushed, r.quarantined.len()), (5, 5), "the forged phone's own cases are quarantined");
        } else {
            assert_eq!((r.pushed, r.accepted, r.quarantined.len()), (5, 5, 0), "phone {i} got its own answer");
        }
    }
    let (changes, docs, _) = d.store.counts().expect("counts");
    assert_eq!(docs, 40, "eight honest phones' cases are all stored");
    assert_eq!(changes, 40);
    assert_eq!(d.store.quarantined().expect("quarantine").len(), 5);
    expected.sort();
    expected.dedup();
    assert_eq!(expected.len(), 45, "case ids are unique across phones");
}

#[test]
fn cases_that_leave_a_scope_are_hidden_but_kept_and_unsynced_work_on_them_still_goes_out() {
    let d = District::new();
    d.store.set_user("w3", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w3");
    let mut w1 = phone(&d, "w1", None);
    let mut w3 = phone(&d, "w3", None);
    let theirs = capture(&w3, 0, 1, 21)[0];
    w3.sync(&d.url()).expect("w3");
    w1.sync(&d.url()).expect("w1 receives g0");
    let listed = |p: &Phone, all: bool| {
        let q = CaseQuery { limit: 50, include_out_of_scope: all, ..Default::default() };
        p.store.list_cases(&q).expect("list").items.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    assert_eq!(listed(&w1, false), vec![theirs]);
    // Offline, w1 notes something on w3's case; then w1 is moved to g1.
    w1.store.record_event(&theirs, EventKind::Note { text: "gate still open".into() }).expect("note");
    d.store.set_user("w1", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("move");
    let r = w1.sync(&d.url()).expect("after the move");
    assert_eq!(r.left_scope, 1, "the server says w3's case left w1's scope");
    assert_eq!(r.pushed, 1);
    assert_eq!(w1.store.outbox_len().expect("outbox"), 0, "the note was answered, not dropped");
    assert!(listed(&w1, false).is_empty(), "out of scope: not listed");
    assert_eq!(listed(&w1, true), vec![theirs], "but kept on the device");
    assert!(ids(&w1).contains(&theirs));
    // w1 no longer holds g0, so the note is kept in quarantine as a late change (docs/SECURITY.md)
    // until an administrator releases it; then w3 receives it.
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    let q = d.store.quarantined().expect("quarantine");
    assert!(q[0].reason.starts_with("late change"), "{}", q[0].reason);
    d.store.release_quarantined(&q[0].key, 0).expect("release");
    w3.sync(&d.url()).expect("w3 again");
    let timeline = w3.store.get_case(&theirs).expect("case").case.timeline;
    assert!(timeline
        .entries
        .iter()
        .any(|t| matches!(&t.event.kind, EventKind::Note { text } if text == "gate still open")));
}

/// A community sees its cases through the grids placed in it (schema 6). When the catalog moves
/// a grid to another community, the new community's phones receive the grid's cases whole on
/// their next sync, the old community's phones hear that they left, and later cases follow the
/// grid.
#[test]
fn a_grid_moved_to_another_community_takes_its_cases_along() {
    let d = District::new();
    d.store.set_user("s9", Role::Supervisor, None, &[Scope::Community("Community 9".into())]).expect("s9");
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let mut s9 = phone(&d, "s9", None);
    let mut before = capture(&w1, 0, 2, 51);
    before.sort();
    w1.sync(&d.url()).expect("w1 pushes");
    s1.sync(&d.url()).expect("s1");
    s9.sync(&d.url()).expect("s9");
    let listed = |p: &Phone| {
        let q = CaseQuery { limit: 50, ..Default::default() };
        let mut v: Vec<CaseId> = p.store.list_cases(&q).expect("list").items.into_iter().map(|c| c.id).collect();
        v.sort();
        v
    };
    assert_eq!(listed(&s1), before, "g0 lies in Community 0");
    assert!(listed(&s9).is_empty());

    let mut moved = district(4);
    moved.grids[0].community = "Community 9".into();
    d.store.import_catalog(&moved).expect("catalog");
    let r9 = s9.sync(&d.url()).expect("s9 after the move");
    assert_eq!(listed(&s9), before, "the moved grid's cases arrive whole");
    assert_eq!(r9.left_scope, 0);
    let r1 = s1.sync(&d.url()).expect("s1 after the move");
    assert_eq!(r1.left_scope, 2, "Community 0's phone hears the cases left");
    assert!(listed(&s1).is_empty());
    assert_eq!(d.store.docs_in_scope("s9").expect("scope"), before.iter().map(|c| c.to_string()).collect::<Vec<_>>());

    let later = capture(&w1, 0, 1, 52)[0];
    w1.sync(&d.url()).expect("w1 again");
    s1.sync(&d.url()).expect("s1 again");
    s9.sync(&d.url()).expect("s9 again");
    assert!(listed(&s1).is_empty(), "a later case in g0 is not Community 0's");
    assert!(listed(&s9).contains(&later));
    // Moving nothing changes nothing: no placement gets a new moment.
    let head = d.store.sync(&d.store.authenticate(&s9.config.token).expect("token"), push_request(vec![], vec![]), 0);
    d.store.import_catalog(&moved).expect("same catalog");
    let again = d.store.sync(&d.store.authenticate(&s9.config.token).expect("token"), push_request(vec![], vec![]), 0);
    assert_eq!(head.expect("pull").cursor, again.expect("pull").cursor, "no new sequence number");
}

/// An `admin` command may write the store while the server runs (another process, its own
/// `SqliteStore`). Sequence numbers come from the store under its write lock, not from a count
/// the server keeps: a number the admin took is never handed out again, so no cursor passing it
/// can skip a change.
#[test]
fn an_admin_writing_the_store_while_the_server_runs_never_shares_a_sequence_number() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 2, 61);
    w1.sync(&d.url()).expect("first push");
    let admin = gridwork_sync_server::SqliteStore::open(d.dir.path()).expect("admin opens the store");
    admin.set_user("w9", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("admin grants");
    drop(admin);
    capture(&w1, 0, 1, 62);
    w1.sync(&d.url()).expect("second push");
    let conn = rusqlite::Connection::open(d.dir.path().join("server.db")).expect("open");
    let granted: i64 =
        conn.query_row("SELECT granted_seq FROM user_scopes WHERE user_id = 'w9'", [], |r| r.get(0)).expect("grant");
    let (shared, after): (i64, i64) = conn
        .query_row(
            "SELECT count(*) FILTER (WHERE seq = ?1), count(*) FILTER (WHERE seq > ?1) FROM changes",
            [granted],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("changes");
    assert_eq!(shared, 0, "no change numbered like the grant");
    assert_eq!(after, 1, "the later push comes after the grant");
    let last: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| r.get(0)).expect("last_seq");
    let max: i64 = conn.query_row("SELECT max(seq) FROM changes", [], |r| r.get(0)).expect("max");
    assert_eq!(last.parse::<i64>().expect("number"), max, "meta holds the last number taken");
}

#[test]
fn a_record_claiming_another_device_is_quarantined_and_kept_as_sent() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    let device = d.store.authenticate(&w1.config.token).expect("token");
    let own = format!(
        r#"{{"kind":"note","actor":{{"device":"{}","user":"w1","role":"worker"}},"text":"门\"锁\"坏了"}}"#,
        device.id
    );
    let forged = r#"{"kind":"note","actor":{"device":"someone-else","user":"w1","role":"worker"}}"#.to_owned();
    // A check-in from a newer build whose fields this server reads differently: still its sender's.
    let odd = format!(
        r#"{{"type":"check_in","grid":"g0","inside_grid":"yes","actor":{{"device":"{}","user":"w1"}}}}"#,
        device.id
    );
    let req = push_request(
        vec![],
        vec![w1.signed_record("r-own", own), w1.signed_record("r-forged", forged), w1.signed_record("r-odd", odd)],
    );
    let resp = d.store.sync(&device, req, 0).expect("sync");
    let outcome = |k: &str| resp.results.iter().find(|r| r.key == k).map(|r| r.outcome);
    assert_eq!(outcome("r-own"), Some(Outcome::Accepted), "an escaped quote in the body does not confuse the claim");
    assert_eq!(outcome("r-forged"), Some(Outcome::Quarantined));
    assert_eq!(outcome("r-odd"), Some(Outcome::Accepted), "a field of another type does not hide the claim");
    let q = d.store.quarantined().expect("quarantine");
    assert_eq!(q.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), vec!["r-forged"]);
    assert_eq!(d.store.counts().expect("counts").2, 2, "only the honest records are stored");
}

#[test]
fn metrics_show_syncs_refusals_latency_and_devices_by_unsynced_age() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 3, 50);
    let trips = w1.sync(&d.url()).expect("sync").round_trips as f64;
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .build()
        .expect("client");
    let refused = client.post(format!("{}/v1/sync", d.url())).body("{}").send().expect("send");
    assert_eq!(refused.status().as_u16(), 401);

    let metrics = d.server.as_ref().and_then(|s| s.metrics_url()).expect("the metrics listener");
    let resp = client.get(metrics).send().expect("metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().expect("text");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value("gridwork_syncs_total"), trips);
    assert_eq!(value("gridwork_items_total{outcome=\"Accepted\"}"), 3.0);
    assert_eq!(value("gridwork_errors_total{code=\"unauthenticated\"}"), 1.0);
    assert!(value("gridwork_sync_bytes_total{direction=\"Up\"}") > 0.0);
    assert_eq!(value("gridwork_quarantine_pending"), 0.0);
    assert_eq!(value("gridwork_request_duration_seconds_count{endpoint=\"/v1/sync\",status=\"2xx\"}"), trips);
    assert_eq!(value("gridwork_devices_by_unsynced_age{age=\"nothing_pending\"}"), 1.0);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
}

#[test]
fn a_retired_phone_sends_what_it_holds_receives_nothing_and_a_revoked_one_is_refused() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let device =
        |user: &str| d.store.list_devices(0).expect("devices").into_iter().find(|x| x.user == user).expect("device");
    w1.sync(&d.url()).expect("first sync");
    // The worker leaves with three reports still on the phone; a supervisor reports one in g0.
    let held = capture(&w1, 0, 3, 60);
    capture(&s1, 0, 1, 61);
    s1.sync(&d.url()).expect("s1");
    d.store.retire_device(&device("w1").id, 0).expect("retire");
    assert_eq!(device("w1").status, "retired");

    let r = w1.sync(&d.url()).expect("a retired phone may still push");
    assert!(r.retired, "the phone is told");
    assert_eq!(r.accepted, 3, "everything it held went through");
    assert_eq!((r.pulled_docs, r.pulled_changes), (0, 0), "it receives nothing new");
    assert_eq!(w1.store.outbox_len().expect("outbox"), 0);
    for id in &held {
        assert!(!d.store.doc_heads(&id.to_string()).expect("heads").is_empty(), "on the server");
    }
    assert_eq!(device("w1").status, "retired_drained", "it said it is empty");
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .build()
        .expect("client");
    let blob = client
        .get(format!("{}/v1/blobs/{}", d.url(), "0".repeat(64)))
        .bearer_auth(&w1.config.token)
        .send()
        .expect("send");
    assert_eq!(blob.status().as_u16(), 403);
    let body: serde_json::Value = serde_json::from_slice(&blob.bytes().expect("body")).expect("json");
    assert_eq!(body["error"], "device_retired");

    // A lost phone: revoked, refused, and nothing it sends is stored; what it synced stays.
    d.store.revoke_device(&device("s1").id).expect("revoke");
    let late = capture(&s1, 0, 1, 62);
    match s1.sync(&d.url()) {
        Err(CoreError::Server { status: 403, code, .. }) => assert_eq!(code, "device_revoked"),
        other => panic!("expected device_revoked, got {other:?}"),
    }
    assert_eq!(s1.store.outbox_len().expect("outbox"), 1, "the phone keeps what it could not send");
    assert!(d.store.doc_heads(&late[0].to_string()).expect("heads").is_empty());
    assert_eq!(d.store.docs_in_scope("s1").expect("docs").len(), 4, "what it synced before stays");
}

#[test]
fn a_finished_case_leaves_the_phone_and_comes_back_whole_when_it_changes_again() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    // Removed as soon as the server confirmed it, so the test needs no clock (the days are
    // counted in gridwork-core's own test).
    w1.config.keep_finished_cases = Some(std::time::Duration::ZERO);
    let mut sa = phone(&d, "s1", None);
    let mut sb = phone(&d, "s1", None);
    let case = capture(&w1, 0, 1, 77)[0];
    let kept = capture(&w1, 0, 1, 78)[0];
    w1.sync(&d.url()).expect("w1 pushes");
    sa.sync(&d.url()).expect("sa pulls");
    sb.sync(&d.url()).expect("sb pulls");

    // One supervisor rejects it; the other, offline, accepts it without having seen that.
    sa.store
        .record_event(
            &case,
            EventKind::Reject {
                reason: gridwork_core::model::lifecycle::RejectReason::Duplicate,
                duplicate_of: None,
                note: String::new(),
            },
        )
        .expect("reject");
    sb.store.record_event(&case, EventKind::Accept { note: String::new() }).expect("accept offline");
    sa.sync(&d.url()).expect("sa pushes");

    let r = w1.sync(&d.url()).expect("w1 pulls the rejection");
    assert_eq!(r.finished_cases_removed, 1, "{r:?}");
    assert!(matches!(w1.store.get_case(&case), Err(CoreError::UnknownCase { .. })));
    assert!(w1.store.get_case(&kept).is_ok(), "an open case stays");
    assert_eq!(w1.store.removed_case_count().expect("count"), 1);
    assert_eq!(d.store.doc_heads(&case.to_string()).expect("heads").len(), 1, "the server keeps it");

    // The offline acceptance arrives: the phone holds only that change, asks for the whole
    // document in the same sync, and the case is back, contested, until a person settles it.
    sb.sync(&d.url()).expect("sb pushes");
    let r = w1.sync(&d.url()).expect("w1 pulls the late change");
    assert_eq!(r.asked_whole, 1, "{r:?}");
    assert_eq!(r.finished_cases_removed, 0);
    let back = w1.store.get_case(&case).expect("back on the phone");
    assert_eq!(back.case.timeline.state.status.label(), "contested");
    assert_eq!(w1.store.removed_case_count().expect("count"), 0);
    let again = w1.sync(&d.url()).expect("next sync");
    assert_eq!((again.asked_whole, again.pulled_changes), (0, 0), "nothing left waiting: {again:?}");
}

#[test]
fn an_idle_sync_is_seen_without_a_write_of_its_own_and_the_sighting_survives_a_restart() {
    let mut d = District::new();
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 2, 70);
    w1.sync(&d.url()).expect("push");
    let seen = |d: &District| {
        d.store
            .list_devices(0)
            .expect("devices")
            .into_iter()
            .find(|x| x.user == "w1")
            .and_then(|x| x.last_seen_ms)
            .expect("w1 was seen")
    };
    let after_push = seen(&d);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let idle = w1.sync(&d.url()).expect("idle sync");
    assert_eq!((idle.accepted, idle.pulled_changes), (0, 0), "nothing to send or receive");
    let after_idle = seen(&d);
    assert!(after_idle > after_push, "listing the devices shows the idle sync: {after_idle} > {after_push}");
    // A sighting not yet written when the server stops is written on the way out.
    std::thread::sleep(std::time::Duration::from_millis(20));
    w1.sync(&d.url()).expect("another idle sync");
    d.restart();
    assert!(seen(&d) > after_idle, "the last idle sync outlived the restart");
}

#[test]
fn a_long_history_reaches_a_device_far_behind_as_one_compacted_document() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 80).remove(0);
    for i in 0..40 {
        let patch = gridwork_core::model::doc::CasePatch { title: Some(format!("标题 {i}")), ..Default::default() };
        w1.store.edit_case(&case, patch).expect("edit");
    }
    w1.sync(&d.url()).expect("push");
    let heads = d.store.doc_heads(&case.to_string()).expect("server heads");

    // What the server answers a supervisor's new phone, asked as this app asks and as an old app.
    let s1 = phone(&d, "s1", None);
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .build()
        .expect("client");
    let ask = |accept_compacted: bool| -> SyncResponse {
        let req = SyncRequest { accept_compacted, ..push_request(vec![], vec![]) };
        let resp = client
            .post(format!("{}/v1/sync", d.url()))
            .bearer_auth(&s1.config.token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&req).expect("request"))
            .send()
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        serde_json::from_slice(&resp.bytes().expect("body")).expect("json")
    };
    let old = ask(false);
    let old_doc = old.docs.iter().find(|x| x.doc == case.to_string()).expect("the case, for an old app");
    assert_eq!((old_doc.changes.len(), old_doc.compacted.is_some()), (41, false), "an old app gets the changes");
    let new = ask(true);
    let new_doc = new.docs.iter().find(|x| x.doc == case.to_string()).expect("the case");
    let compacted = new_doc.compacted.as_ref().expect("compacted for a device that accepts it");
    assert!(new_doc.changes.is_empty(), "the history is in the compacted document, not beside it");
    let listed: usize = old_doc.changes.iter().map(String::len).sum();
    assert!(compacted.len() * 2 < listed, "compacted {} bytes against {listed} in changes", compacted.len());

    // The phone itself: the whole history, the server's heads, the last title.
    let mut s1 = s1;
    s1.sync(&d.url()).expect("pull");
    let got = s1.store.get_case(&case).expect("the case is on the supervisor's phone");
    let mut h = got.heads.clone();
    h.sort();
    assert_eq!(h, heads);
    assert_eq!(s1.store.export_changes(&case).expect("changes").len(), 41, "every change, none twice");
    assert_eq!(got.case.title.value, "标题 39");
}
