//! Attacks on the real server, one per rule of docs/SECURITY.md: a client written from
//! docs/PROTOCOL.md alone, holding a real device token, tries what the rules forbid.

use gridwork_model::access::Scope;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use base64::Engine;
use gridwork_core::model::catalog::Role;
use gridwork_core::model::doc::{keys, CasePatch};
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::wire::{PushedChange, SyncRequest};
use gridwork_core::CoreError;
use gridwork_sync_server::serve::ServeLimits;
use gridwork_sync_server::{ServeOptions, SyncStore};

mod common;
use common::{capture, phone, District, Phone};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn request(changes: Vec<PushedChange>, cursor: Option<String>) -> SyncRequest {
    gridwork_tests::sync_request(changes, vec![], cursor, 1 << 20)
}

/// Posts a sync as the device holding `token`: (status, body as JSON).
fn post_sync(d: &District, token: &str, req: &SyncRequest) -> (u16, serde_json::Value) {
    let resp = client()
        .post(format!("{}/v1/sync", d.url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(req).expect("json"))
        .send()
        .expect("send");
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().expect("body")).unwrap_or(serde_json::Value::Null))
}

/// A change to case `id` written by a fresh actor: on top of `history` when given (the attacker
/// knows the case's heads), or from nothing (it knows only the id).
fn forged_change(id: &CaseId, history: Option<Vec<Vec<u8>>>, title: &str) -> Vec<u8> {
    let mut doc = AutoCommit::new();
    if let Some(changes) = history {
        let parsed: Vec<automerge::Change> =
            changes.into_iter().map(|b| automerge::Change::from_bytes(b).expect("change")).collect();
        doc.apply_changes(parsed).expect("history");
    } else {
        doc.put(ROOT, keys::ID, id.to_string()).expect("id");
    }
    doc.put(ROOT, keys::TITLE, title).expect("title");
    doc.commit();
    doc.get_last_local_change().expect("a change").raw_bytes().to_vec()
}

fn title(p: &Phone, id: &CaseId) -> String {
    p.store.get_case(id).expect("case").case.title.value
}

#[test]
fn a_worker_cannot_change_a_case_in_another_grid_with_or_without_its_heads() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let w2 = phone(&d, "w2", None);
    let victim = capture(&w1, 0, 1, 1)[0];
    w1.sync(&d.url()).expect("w1 reports in g0");
    let original = title(&w1, &victim);
    let history = w1.store.export_changes(&victim).expect("history");

    // w2 (grid g1) sends two changes to w1's case and one to a case of its own, in one batch.
    let blind = forged_change(&victim, None, "rewritten blind");
    let informed = forged_change(&victim, Some(history), "rewritten on top");
    let own = capture(&w2, 1, 1, 2)[0];
    let own_change = w2.store.export_changes(&own).expect("own")[0].clone();
    let (status, body) = post_sync(
        &d,
        &w2.config.token,
        &request(vec![w2.signed(&victim, &blind), w2.signed(&victim, &informed), w2.signed(&own, &own_change)], None),
    );
    assert_eq!(status, 200, "{body}");
    let outcomes: Vec<&str> =
        body["results"].as_array().expect("results").iter().map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["quarantined", "quarantined", "accepted"], "{body}");
    let told = body["results"][0]["reason"].as_str().unwrap_or("");
    assert!(!told.contains("g0") && !told.contains("w1"), "the device learns nothing of the case: {told}");

    // Nothing reached the owner or the server's view of the case.
    w1.sync(&d.url()).expect("w1 again");
    assert_eq!(title(&w1, &victim), original);
    assert_eq!(d.store.doc_heads(&victim.to_string()).expect("heads").len(), 1, "only w1's change is applied");
    let q = d.store.quarantined().expect("quarantine");
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|i| i.reason.starts_with("out of scope") && i.reason.contains("grid:g0")), "{q:?}");
}

/// A relay (another device's change offered again after a restore) goes in as its owner's only
/// with the server's receipt for exactly those bytes: a receipt borrowed from another change, or
/// rewritten, gets a forged change nowhere.
#[test]
fn a_relay_needs_the_servers_receipt_for_exactly_those_bytes() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let w2 = phone(&d, "w2", None);
    let victim = capture(&w1, 0, 1, 7)[0];
    w1.sync(&d.url()).expect("w1");
    let original = title(&w1, &victim);
    let genuine = w1.store.export_changes(&victim).expect("history");
    // The server's receipt for w1's change (sent again: it is stored already).
    let (_, body) = post_sync(&d, &w1.config.token, &request(vec![w1.signed(&victim, &genuine[0])], None));
    let receipt = body["results"][0]["receipt"].as_str().expect("a receipt").to_owned();
    let (_, rest) = receipt.split_once(':').expect("HASH:OWNER:MAC");

    let borrowed = forged_change(&victim, Some(genuine.clone()), "rewritten under a borrowed receipt");
    let rewritten = forged_change(&victim, Some(genuine.clone()), "rewritten under a rewritten receipt");
    let rewritten_hash = automerge::Change::from_bytes(rewritten.clone()).expect("change").hash().to_string();
    let with = |bytes: &[u8], r: String| PushedChange { receipt: Some(r), ..w2.signed(&victim, bytes) };
    let (status, body) = post_sync(
        &d,
        &w2.config.token,
        &request(
            vec![
                // w1's receipt on other bytes; a receipt rewritten for other bytes; and w1's own
                // change relayed with its receipt, which the server holds already.
                with(&borrowed, receipt.clone()),
                with(&rewritten, format!("{rewritten_hash}:{rest}")),
                with(&genuine[0], receipt.clone()),
            ],
            None,
        ),
    );
    assert_eq!(status, 200, "{body}");
    let outcomes: Vec<&str> =
        body["results"].as_array().expect("results").iter().map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["quarantined", "quarantined", "accepted"], "{body}");
    w1.sync(&d.url()).expect("w1 again");
    assert_eq!(title(&w1, &victim), original, "the forged titles reached nobody");
    assert_eq!(d.store.doc_heads(&victim.to_string()).expect("heads").len(), 1);
    assert_eq!(d.store.quarantined().expect("quarantine").len(), 2, "both forged changes, as w2's");
}

/// Two changes of one actor with one sequence number make a case unloadable everywhere
/// (Automerge: "duplicate seq"); the second is quarantined as damaged and the case still loads.
/// The console's actor did this after a restore (chaos seed 2, ADR 18).
#[test]
fn a_change_reusing_its_actors_sequence_number_is_quarantined_and_the_case_still_loads() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 9)[0];
    w1.sync(&d.url()).expect("w1");
    let history = w1.store.export_changes(&case).expect("history");
    let actor = automerge::Change::from_bytes(history[0].clone()).expect("change").actor_id().clone();
    // Two forks of the case by the same actor, each making its next change differently.
    let fork = |title: &str| {
        let changes = history.iter().map(|b| automerge::Change::from_bytes(b.clone()).expect("change"));
        let mut doc = AutoCommit::new().with_actor(actor.clone());
        doc.apply_changes(changes).expect("history");
        doc.put(ROOT, keys::TITLE, title).expect("title");
        doc.commit();
        doc.get_last_local_change().expect("a change").raw_bytes().to_vec()
    };
    let (first, second) = (fork("先写的标题"), fork("后写的标题"));
    let (status, body) = post_sync(&d, &w1.config.token, &request(vec![w1.signed(&case, &first)], None));
    assert_eq!((status, body["results"][0]["outcome"].as_str()), (200, Some("accepted")), "{body}");
    let (status, body) = post_sync(&d, &w1.config.token, &request(vec![w1.signed(&case, &second)], None));
    assert_eq!((status, body["results"][0]["outcome"].as_str()), (200, Some("quarantined")), "{body}");
    let q = d.store.quarantined().expect("quarantine");
    assert!(q.iter().any(|i| i.reason.contains("already made change 2")), "{q:?}");
    assert_eq!(d.store.doc_heads(&case.to_string()).expect("the case loads").len(), 1);
}

/// A device that pushes another device's change first (the bytes of a phone's work it pulled
/// before a restore, say) gets it quarantined as its own, and takes nothing from the author: not
/// the actor, and not the change, which the author's own push then stores (the quarantine row is
/// marked released).
#[test]
fn a_change_pushed_first_by_another_device_claims_nothing_from_its_author() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let w2 = phone(&d, "w2", None);
    // Not synced yet: the server knows neither the case nor w1's actor.
    let case = capture(&w1, 0, 1, 12)[0];
    let taken = w1.store.export_changes(&case).expect("history");
    let (status, body) =
        post_sync(&d, &w2.config.token, &request(taken.iter().map(|b| w2.signed(&case, b)).collect(), None));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"].as_str(), Some("quarantined"), "its events name w1: {body}");
    let r = w1.sync(&d.url()).expect("w1");
    assert_eq!((r.accepted, r.quarantined.len()), (1, 0), "{r:?}");
    assert_eq!(d.store.doc_heads(&case.to_string()).expect("heads").len(), 1);
    let q = d.store.quarantined().expect("quarantine");
    assert!(q.iter().all(|i| i.status != "pending"), "resolved by its author's push: {q:?}");
    // w1's next change, with the same actor, is w1's.
    w1.store.edit_case(&case, CasePatch { title: Some("已派单".into()), ..Default::default() }).expect("edit");
    let r = w1.sync(&d.url()).expect("w1 again");
    assert_eq!((r.accepted, r.quarantined.len()), (1, 0), "{r:?}");
}

#[test]
fn a_change_replacing_a_cases_events_map_is_quarantined_even_in_scope() {
    let d = District::new();
    d.store.set_user("w3", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w3");
    let mut w1 = phone(&d, "w1", None);
    let w3 = phone(&d, "w3", None);
    let case = capture(&w1, 0, 1, 12)[0];
    w1.sync(&d.url()).expect("w1");
    // w3 shares the grid, so it may change the case, but not swap its history for its own.
    let mut doc = AutoCommit::new();
    let history: Vec<automerge::Change> = w1
        .store
        .export_changes(&case)
        .expect("history")
        .into_iter()
        .map(|b| automerge::Change::from_bytes(b).expect("change"))
        .collect();
    doc.apply_changes(history).expect("apply");
    let events = doc.put_object(ROOT, keys::EVENTS, automerge::ObjType::Map).expect("new map");
    doc.put(&events, "forged", "{}").expect("forged event");
    doc.commit();
    let swap = doc.get_last_local_change().expect("change").raw_bytes().to_vec();
    let (status, body) = post_sync(&d, &w3.config.token, &request(vec![w3.signed(&case, &swap)], None));
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["outcome"], "quarantined", "{body}");
    assert!(d.store.quarantined().expect("q")[0].reason.contains("events map"));
}

#[test]
fn a_late_change_from_a_moved_worker_is_quarantined_as_late_and_an_administrator_can_release_it() {
    let d = District::new();
    d.store.set_user("w3", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w3");
    let mut w1 = phone(&d, "w1", None);
    let mut w3 = phone(&d, "w3", None);
    let theirs = capture(&w3, 0, 1, 3)[0];
    w3.sync(&d.url()).expect("w3");
    w1.sync(&d.url()).expect("w1 receives g0");
    assert_eq!(w1.store.get_case(&theirs).expect("case").read_only, None, "in w1's grid: editable");
    // Offline, w1 retitles w3's case; then w1 is moved to g1 before syncing.
    w1.store.edit_case(&theirs, CasePatch { title: Some("gate broken".into()), ..Default::default() }).expect("edit");
    d.store.set_user("w1", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("move");
    let r = w1.sync(&d.url()).expect("after the move");
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    assert_eq!(w1.store.outbox_len().expect("outbox"), 0, "kept on the server, not resent");
    let q = d.store.quarantined().expect("quarantine");
    assert!(q[0].reason.starts_with("late change"), "told apart from an attack: {}", q[0].reason);

    // The phone now shows the case read-only, and refuses to change it.
    let detail = w1.store.get_case(&theirs).expect("case");
    assert!(detail.read_only.is_some());
    let refused = w1.store.edit_case(&theirs, CasePatch { title: Some("again".into()), ..Default::default() });
    assert!(matches!(refused, Err(CoreError::ReadOnlyCase { .. })), "{refused:?}");

    // Released, the edit reaches w3: nothing a worker recorded is lost.
    d.store.release_quarantined(&q[0].key, 0).expect("release");
    w3.sync(&d.url()).expect("w3 again");
    assert_eq!(title(&w3, &theirs), "gate broken");
}

#[test]
fn the_phone_makes_a_case_it_may_not_change_read_only_before_anyone_edits_it() {
    let d = District::new();
    let mut s1 = phone(&d, "s1", None);
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 4)[0];
    w1.sync(&d.url()).expect("w1");
    s1.sync(&d.url()).expect("s1 receives its community");
    assert_eq!(s1.store.get_case(&case).expect("case").read_only, None);
    // The supervisor loses the community: the scopes the server sends say so at once.
    d.store.set_user("s1", Role::Supervisor, None, &[Scope::Community("Community 1".into())]).expect("re-scope");
    s1.sync(&d.url()).expect("s1 again");
    let reason = s1.store.get_case(&case).expect("case").read_only.expect("read-only now");
    assert!(!reason.is_empty());
    let before = s1.store.outbox_len().expect("outbox");
    assert!(matches!(
        s1.store.record_event(&case, gridwork_core::model::lifecycle::EventKind::Note { text: "x".into() }),
        Err(CoreError::ReadOnlyCase { .. })
    ));
    assert_eq!(s1.store.outbox_len().expect("outbox"), before, "nothing was written");
}

#[test]
fn a_cursor_the_server_never_issued_is_refused_and_the_phone_starts_its_scope_over() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    let (_, first) = post_sync(&d, &w1.config.token, &request(vec![], None));
    let cursor = first["cursor"].as_str().expect("cursor").to_owned();
    let (epoch, seq) = cursor.split_once(':').expect("epoch:seq");
    let ahead = format!("{epoch}:{}", seq.parse::<i64>().expect("seq") + 1000);
    for bad in [ahead.as_str(), "nonsense", "abc:-1", "zz:1", &format!("{epoch}:1e3"), &format!("{epoch}: 5")] {
        let (status, body) = post_sync(&d, &w1.config.token, &request(vec![], Some(bad.to_owned())));
        assert_eq!((status, body["error"].as_str()), (409, Some("cursor_unknown")), "{bad}: {body}");
    }
}

/// A server put back from a disk snapshot keeps its epoch but not what came after the snapshot;
/// a phone's cursor is then ahead of it. The phone hears `cursor_unknown`, pulls its scope from
/// the start and offers everything again: the server gets back what it lost.
#[test]
fn a_server_rolled_back_under_the_same_epoch_gets_everything_back_from_the_phones() {
    let mut d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut w3 = {
        d.store.set_user("w3", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w3");
        phone(&d, "w3", None)
    };
    let early = capture(&w1, 0, 1, 5);
    w1.sync(&d.url()).expect("first");
    let snapshot = tempfile::tempdir().expect("snapshot dir");
    gridwork_sync_server::backup::backup(d.dir.path(), snapshot.path()).expect("snapshot");
    let late = capture(&w1, 0, 2, 6);
    w1.sync(&d.url()).expect("second");
    w3.sync(&d.url()).expect("w3 before the rollback");

    // The disk is put back as it was at the snapshot, epoch and all.
    d.server = None;
    d.store = Arc::new(gridwork_sync_server::SqliteStore::open(snapshot.path()).expect("open snapshot"));
    d.server = Some(
        gridwork_sync_server::start(d.store.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
            .expect("start on the snapshot"),
    );
    assert!(d.store.docs_in_scope("w1").expect("docs").len() < 3, "the snapshot lacks the later cases");
    let r = w1.sync(&d.url()).expect("sync against the rolled-back server");
    assert!(r.cursor_restarted, "{r:?}");
    let mut all: Vec<String> = early.iter().chain(&late).map(|c| c.to_string()).collect();
    all.sort();
    assert_eq!(d.store.docs_in_scope("w1").expect("docs"), all, "every case is back");
    // And the phone's new cursor works: a case made elsewhere reaches it.
    let more = capture(&w3, 0, 1, 7)[0];
    w3.sync(&d.url()).expect("w3 after");
    w1.sync(&d.url()).expect("w1 after");
    assert!(w1.store.document_ids().expect("ids").contains(&more));
}

#[test]
fn malformed_documents_and_damaged_changes_are_refused_per_item_with_a_reason() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    let good = capture(&w1, 0, 1, 8)[0];
    let good_change = w1.store.export_changes(&good).expect("changes")[0].clone();
    let mut corrupted = good_change.clone();
    corrupted[5] ^= 0xff; // the checksum
    let other = CaseId::generate();
    let wrong_id = forged_change(&other, None, "t");
    let mut bad_location = AutoCommit::new();
    let new_id = CaseId::generate();
    bad_location.put(ROOT, keys::ID, new_id.to_string()).expect("id");
    let mut location = serde_json::to_value(w1.store.get_case(&good).expect("case").case.location.value).expect("json");
    location["lat"] = serde_json::json!(123.0);
    bad_location.put(ROOT, keys::LOCATION, location.to_string()).expect("loc");
    bad_location.commit();
    let bad_location = bad_location.get_last_local_change().expect("change").raw_bytes().to_vec();
    let changes = vec![
        PushedChange { doc: "not-a-uuid".into(), bytes: B64.encode(&wrong_id), receipt: None, link: None },
        w1.signed(&good, &corrupted),
        w1.signed(&good, &wrong_id),
        w1.signed(&new_id, &bad_location),
        w1.signed(&good, &good_change),
    ];
    let (status, body) = post_sync(&d, &w1.config.token, &request(changes, None));
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    let reasons: Vec<String> = results.iter().map(|r| r["reason"].as_str().unwrap_or("").to_owned()).collect();
    let outcomes: Vec<&str> = results.iter().map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["refused", "refused", "refused", "refused", "accepted"], "{reasons:?}");
    assert!(reasons[0].contains("not a case id"), "{}", reasons[0]);
    assert!(reasons[1].contains("checksum"), "{}", reasons[1]);
    assert!(reasons[2].contains("filed under"), "{}", reasons[2]);
    assert!(reasons[3].contains("coordinates") || reasons[3].contains("lat"), "{}", reasons[3]);
    assert_eq!(d.store.counts().expect("counts").1, 1, "only the good case is stored");
}

#[test]
fn requests_over_their_bounds_are_refused_before_they_cost_anything() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    let url = format!("{}/v1/sync", d.url());
    let c = client();
    // Not JSON.
    let resp = c.post(&url).bearer_auth(&w1.config.token).header("content-type", "text/plain").body("{}").send();
    assert_eq!(resp.expect("send").status().as_u16(), 415);
    // Too many items.
    let item = PushedChange { doc: CaseId::generate().to_string(), bytes: "AA==".into(), receipt: None, link: None };
    let many = request(vec![item; gridwork_core::model::wire::MAX_ITEMS_PER_REQUEST + 1], None);
    let (status, body) = post_sync(&d, &w1.config.token, &many);
    assert_eq!((status, body["error"].as_str()), (413, Some("too_many_items")), "{body}");
    // A change that inflates past its bound is refused without being inflated whole.
    let mut big = AutoCommit::new();
    let id = CaseId::generate();
    big.put(ROOT, keys::ID, id.to_string()).expect("id");
    big.put(ROOT, "padding", "x".repeat(gridwork_sync_server::ingest::MAX_CHANGE_BYTES + 10)).expect("pad");
    big.commit();
    let bytes = big.get_last_local_change().expect("change").bytes().into_owned();
    assert!(bytes.len() < 1 << 20, "compressed on the wire: {}", bytes.len());
    let (status, body) = post_sync(&d, &w1.config.token, &request(vec![w1.signed(&id, &bytes)], None));
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["outcome"], "refused", "{body}");
    assert!(body["results"][0]["reason"].as_str().unwrap_or("").contains("limit"), "{body}");
    assert_eq!(d.store.counts().expect("counts"), (0, 0, 0));
    // A device asking for a pull larger than the server allows gets at most the server's page.
    let mut greedy = request(vec![], None);
    greedy.max_pull_bytes = u64::MAX;
    let (status, _) = post_sync(&d, &w1.config.token, &greedy);
    assert_eq!(status, 200);
}

#[test]
fn a_blobs_status_tells_an_outsider_nothing() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let w2 = phone(&d, "w2", None);
    let case = capture(&w1, 0, 1, 9)[0];
    let photo = gridwork_core::evidence::synthetic::camera_like_jpeg(640, 480, &Default::default(), 1);
    let evidence = w1.store.attach_photo(&case, &photo).expect("photo");
    w1.sync(&d.url()).expect("sync with the photo");
    let c = client();
    let status = |token: &str, sha: &str, owner: Option<&str>| {
        let mut url = format!("{}/v1/blobs/{sha}/status", d.url());
        if let Some(o) = owner {
            url.push_str(&format!("?owner={o}"));
        }
        let resp = c.get(url).bearer_auth(token).send().expect("send");
        let code = resp.status().as_u16();
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().expect("body")).unwrap_or_default();
        (code, body["error"].as_str().unwrap_or("").to_owned())
    };
    let absent = "0".repeat(64);
    assert_eq!(status(&w1.config.token, &evidence.sha256, None).0, 200, "the owner sees it");
    let outsider = status(&w2.config.token, &evidence.sha256, None);
    assert_eq!(outsider, (403, "not_in_scope".to_owned()));
    assert_eq!(status(&w2.config.token, &absent, None), outsider, "the same answer as for nothing at all");
    let own_case = capture(&w2, 1, 1, 10)[0];
    let mut w2 = w2;
    w2.sync(&d.url()).expect("w2 syncs its case");
    // Naming a case of one's own shows an upload's progress: the phone's resumable upload.
    assert_eq!(status(&w2.config.token, &absent, Some(&format!("case:{own_case}"))).0, 200);
    // Naming someone else's case does not.
    assert_eq!(status(&w2.config.token, &evidence.sha256, Some(&format!("case:{case}"))), outsider);
}

#[test]
fn metrics_answer_on_their_own_loopback_listener_only() {
    let d = District::new();
    let c = client();
    let on_sync = c.get(format!("{}/metrics", d.url())).send().expect("send");
    assert_eq!(on_sync.status().as_u16(), 404);
    let url = d.server.as_ref().and_then(|s| s.metrics_url()).expect("metrics listener");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(c.get(url).send().expect("send").status().as_u16(), 200);
}

#[test]
fn enrolment_codes_cannot_be_guessed_quickly_but_a_team_enrols_at_once() {
    let d = District::new();
    // Fifteen phones enrolled from one office address: successes are never held back.
    for _ in 0..15 {
        let (_, code) = d.store.enrol_device("w1", 0).expect("code");
        gridwork_core::sync::enrol(&d.url(), &code, None, "0.1.0").expect("enrols at once");
    }
    let c = client();
    let statuses: Vec<u16> = (0..30)
        .map(|i| {
            c.post(format!("{}/v1/enrol", d.url()))
                .header("content-type", "application/json")
                .body(format!(r#"{{"code":"guess{i:04}","app_version":"1"}}"#))
                .send()
                .expect("send")
                .status()
                .as_u16()
        })
        .collect();
    assert!(statuses[..10].iter().all(|s| *s == 403), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let resp = c
        .post(format!("{}/v1/enrol", d.url()))
        .header("content-type", "application/json")
        .body(r#"{"code":"one-more","app_version":"1"}"#)
        .send()
        .expect("send");
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
}

/// A server with short timeouts and two connection slots, for the tests of the accept loop.
fn tight_server(d: &District) -> gridwork_sync_server::RunningServer {
    let limits = ServeLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(700),
        body_timeout: Duration::from_millis(700),
    };
    gridwork_sync_server::start_serving(
        d.store.clone() as Arc<dyn SyncStore>,
        "127.0.0.1:0".parse().expect("addr"),
        ServeOptions { limits, metrics: None, tls: None, metrics_token: None, upkeep: None },
    )
    .expect("tight server")
}

/// Whether the server closed `stream` within `within` (it reads an answer or end of stream).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer, then the close
            Err(_) => return start.elapsed() < within,
        }
    }
}

#[test]
fn slow_headers_and_slow_bodies_are_cut_off() {
    let d = District::new();
    let w1 = phone(&d, "w1", None);
    let server = tight_server(&d);
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr).expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(5)), "an idle connection is closed");
    // Headers that never finish.
    let mut slow_headers = TcpStream::connect(server.addr).expect("connect");
    slow_headers.write_all(b"POST /v1/sync HTTP/1.1\r\nHost: x\r\n").expect("write");
    assert!(closed_within(&mut slow_headers, Duration::from_secs(5)), "a header read timeout");
    // A body that trickles.
    let mut slow_body = TcpStream::connect(server.addr).expect("connect");
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        w1.config.token
    );
    slow_body.write_all(head.as_bytes()).expect("write");
    slow_body.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut answer = String::new();
    let _ = slow_body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let d = District::new();
    let limits = ServeLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
    };
    let server = gridwork_sync_server::start_serving(
        d.store.clone() as Arc<dyn SyncStore>,
        "127.0.0.1:0".parse().expect("addr"),
        ServeOptions { limits, metrics: None, tls: None, metrics_token: None, upkeep: None },
    )
    .expect("server");
    let idle_a = TcpStream::connect(server.addr).expect("a");
    let _idle_b = TcpStream::connect(server.addr).expect("b");
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(server.addr).expect("c (in the kernel's queue)");
    third.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    third.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "no answer while both slots are held");
    drop(idle_a);
    third.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "answered once a slot freed: {answer}");
}

/// A change by a fresh actor on top of `history`, passed through `edit` as Automerge's expanded
/// form and re-encoded: how an attacker writes a change no Automerge API would.
fn reencoded(history: Vec<Vec<u8>>, edit: impl FnOnce(&mut automerge::ExpandedChange)) -> Vec<u8> {
    let base = forged_change(&CaseId::generate(), Some(history), "forged");
    let mut expanded = automerge::Change::from_bytes(base).expect("change").decode();
    edit(&mut expanded);
    expanded.hash = None;
    automerge::Change::from(expanded).raw_bytes().to_vec()
}

#[test]
fn changes_automerge_would_panic_on_are_refused_or_quarantined_and_every_replica_still_syncs() {
    use automerge::marks::{ExpandMark, Mark};
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let case = capture(&w1, 0, 1, 9)[0];
    w1.sync(&d.url()).expect("w1 reports");
    s1.sync(&d.url()).expect("s1 pulls");
    let history = w1.store.export_changes(&case).expect("history");
    let load = || {
        let parsed: Vec<automerge::Change> =
            history.iter().map(|b| automerge::Change::from_bytes(b.clone()).expect("change")).collect();
        let mut doc = AutoCommit::new();
        doc.apply_changes(parsed).expect("history");
        doc
    };

    // A text mark on the description: Automerge's own API writes it; no Gridwork app does.
    let mut marked = load();
    let text = match automerge::ReadDoc::get(&marked, ROOT, keys::DESCRIPTION) {
        Ok(Some((_, id))) => id,
        other => panic!("no description: {other:?}"),
    };
    marked.mark(&text, Mark::new("bold".into(), true, 0, 2), ExpandMark::None).expect("mark");
    marked.commit();
    let mark = marked.get_last_local_change().expect("change").raw_bytes().to_vec();
    // An empty change: Automerge drops its actor, so the actor's next change names an unknown one.
    let mut empty = load();
    empty.empty_change(Default::default());
    let empty = empty.get_last_local_change().expect("change").raw_bytes().to_vec();
    // A fresh actor's "second" change, whose first the case never held.
    let second = reencoded(history.clone(), |c| c.seq = 2);
    // A change whose operation names, as its predecessor, an operation of an actor the case
    // never held.
    let stranger = automerge::ActorId::random();
    let pointing = reencoded(history.clone(), |c| {
        c.operations[0].pred = vec![automerge::legacy::OpId(1, stranger.clone())].into();
    });
    // A put under a map key flagged as a list insert.
    let inserted = reencoded(history.clone(), |c| c.operations[0].insert = true);

    let items = [&mark, &empty, &second, &pointing, &inserted].map(|b| w1.signed(&case, b)).to_vec();
    let (status, body) = post_sync(&d, &w1.config.token, &request(items, None));
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    let outcomes: Vec<&str> = results.iter().map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    let reasons: Vec<&str> = results.iter().map(|r| r["reason"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["refused", "refused", "quarantined", "quarantined", "refused"], "{reasons:?}");
    assert!(reasons[0].contains("text mark"), "{}", reasons[0]);
    assert!(reasons[1].contains("empty change"), "{}", reasons[1]);
    assert!(reasons[4].contains("insert under a map key"), "{}", reasons[4]);
    let q = d.store.quarantined().expect("quarantine");
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(q.iter().any(|i| i.reason.contains("earlier changes the case does not hold")), "{q:?}");
    assert!(q.iter().any(|i| i.reason.contains(&stranger.to_hex_string())), "{q:?}");

    // Nothing reached the case: it still loads, on the server, the console and both phones.
    assert_eq!(d.store.doc_heads(&case.to_string()).expect("heads").len(), 1);
    w1.sync(&d.url()).expect("w1 syncs");
    s1.sync(&d.url()).expect("s1 syncs");
    for p in [&w1, &s1] {
        assert!(p.store.get_case(&case).is_ok());
    }
    // And the phone's own next change (its actor's second in the case) is still accepted.
    w1.store.edit_case(&case, CasePatch { title: Some("楼道堆物已清".into()), ..Default::default() }).expect("edit");
    let r = w1.sync(&d.url()).expect("w1 pushes an edit");
    assert_eq!((r.accepted, r.quarantined.len()), (1, 0), "{r:?}");
}

#[test]
fn a_store_from_before_schema_8_learns_its_cases_actors_when_opened() {
    let mut d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 10)[0];
    w1.sync(&d.url()).expect("w1 reports");
    // The store as schema 7 left it: no actors table, no `vouched` column on parked changes, and
    // nothing of schemas 10 to 14 (signatures, mock fixes, clock flags, wiping, search, escalation,
    // overview).
    {
        let db = rusqlite::Connection::open(d.dir.path().join("server.db")).expect("open the store");
        db.execute_batch(
            "DROP TABLE doc_actors; ALTER TABLE parked DROP COLUMN vouched;
             DROP TABLE chain_links; ALTER TABLE devices DROP COLUMN public_key; DROP TABLE clock_flags;
             ALTER TABLE devices DROP COLUMN wipe_ordered_ms; ALTER TABLE devices DROP COLUMN wipe_confirmed_ms;
             ALTER TABLE devices DROP COLUMN wiped_ms; DROP TABLE device_boots;
             DROP TABLE case_terms; DROP TABLE search_docs; DROP TABLE escalation_due;
             DROP TABLE case_facts; DROP TABLE department_facts;
             DROP VIEW check_ins; ALTER TABLE records DROP COLUMN mock;
             CREATE VIEW check_ins (id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m) AS
                SELECT id, grid_id, point_id, user_id, device_id, at_ms, day, inside_grid, distance_m
                FROM records WHERE grid_id IS NOT NULL;
             PRAGMA user_version = 7;",
        )
        .expect("downgrade");
    }
    d.restart();
    // Filled from the stored changes: the phone's next change (seq 2 of a known actor) goes in.
    w1.store.edit_case(&case, CasePatch { title: Some("已转物业".into()), ..Default::default() }).expect("edit");
    let r = w1.sync(&d.url()).expect("w1 pushes an edit");
    assert_eq!((r.accepted, r.quarantined.len()), (1, 0), "{r:?}");
}

#[test]
fn a_scope_granted_at_once_arrives_over_pages_split_inside_its_sequence_number() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let cases: std::collections::BTreeSet<String> = capture(&w1, 0, 24, 11).iter().map(|c| c.to_string()).collect();
    w1.sync(&d.url()).expect("w1 reports");
    // A supervisor given the grid now: its 24 cases join their view at one sequence number.
    d.store.set_user("s9", Role::Supervisor, None, &[Scope::Grid("g0".into())]).expect("grant");
    let s9 = phone(&d, "s9", None);
    let mut seen: Vec<String> = vec![];
    let mut cursor = None;
    let mut split = 0;
    for round in 0.. {
        assert!(round < 200, "the pull never ended");
        let mut req = request(vec![], cursor.clone());
        req.max_pull_bytes = 2_500; // about one case's history per page
        let (status, body) = post_sync(&d, &s9.config.token, &req);
        assert_eq!(status, 200, "{body}");
        for doc in body["docs"].as_array().expect("docs") {
            seen.push(doc["doc"].as_str().expect("doc id").to_owned());
        }
        let next = body["cursor"].as_str().expect("cursor").to_owned();
        split += usize::from(next.matches(':').count() == 2);
        cursor = Some(next);
        if body["more"] != true {
            break;
        }
    }
    let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique, cases, "every case of the grid, and nothing else");
    assert_eq!(seen.len(), cases.len(), "no case twice: {seen:?}");
    assert!(split > 5, "the pages were split inside the sequence number ({split} split cursors)");
    // A cursor naming something that is not a case id is one the server never issued.
    let epoch = cursor.expect("cursor").split(':').next().expect("epoch").to_owned();
    let (status, body) = post_sync(&d, &s9.config.token, &request(vec![], Some(format!("{epoch}:0:not-a-case"))));
    assert_eq!((status, body["error"].as_str()), (409, Some("cursor_unknown")), "{body}");
}

#[test]
fn a_change_that_retypes_a_cases_field_is_refused_and_an_unknown_field_passes() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 12)[0];
    w1.sync(&d.url()).expect("w1 reports");
    let history = w1.store.export_changes(&case).expect("history");
    let edit = |f: &dyn Fn(&mut AutoCommit)| {
        let parsed: Vec<automerge::Change> =
            history.iter().map(|b| automerge::Change::from_bytes(b.clone()).expect("change")).collect();
        let mut doc = AutoCommit::new();
        doc.apply_changes(parsed).expect("history");
        f(&mut doc);
        doc.commit();
        doc.get_last_local_change().expect("change").raw_bytes().to_vec()
    };
    let number = edit(&|d| d.put(ROOT, keys::LOCATION, 31.2).expect("put"));
    let map_title = edit(&|d| {
        d.put_object(ROOT, keys::TITLE, automerge::ObjType::Map).expect("put");
    });
    let events_scalar = edit(&|d| d.put(ROOT, keys::EVENTS, "none").expect("put"));
    let unknown = edit(&|d| d.put(ROOT, "weather", 21).expect("put"));
    let items = [&number, &map_title, &events_scalar, &unknown].map(|b| w1.signed(&case, b)).to_vec();
    let (status, body) = post_sync(&d, &w1.config.token, &request(items, None));
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    let outcomes: Vec<&str> = results.iter().map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    let reasons: Vec<&str> = results.iter().map(|r| r["reason"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["refused", "refused", "refused", "accepted"], "{reasons:?}");
    assert!(reasons[..3].iter().all(|r| r.contains("wrong kind")), "{reasons:?}");
    // The case still reads everywhere, with the field a newer app may write.
    w1.sync(&d.url()).expect("w1 syncs");
    assert!(w1.store.get_case(&case).is_ok());
}
