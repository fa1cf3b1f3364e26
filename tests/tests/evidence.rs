//! Evidence upload end to end: photos go after the records that reference them, in chunks that
//! resume where the server stopped; a case counts as synced only once its photos are on the
//! server; the same photo is stored once; bad uploads get a JSON 4xx and change nothing.

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::wire::BlobStatus;
use gridwork_core::store::NewCase;
use gridwork_tests::{district, random_case, Rng};

mod common;
use common::{capture, phone, District, Phone};

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .build()
        .expect("client")
}

/// A case with one camera-sized photo, captured offline on `p` in grid `grid`.
fn capture_with_photo(p: &Phone, grid: usize, photo: &[u8], seed: u64) -> CaseId {
    let case = random_case(&mut Rng::new(seed), &district(4), grid, 0);
    p.store.capture_case(NewCase { photos: vec![photo.to_vec()], ..case }).expect("capture").id
}

/// (full-size sha, size, thumbnail sha, size) of the case's one photo.
fn photo_of(p: &Phone, id: &CaseId) -> (String, u64, String, u64) {
    let detail = p.store.get_case(id).expect("case");
    let e = detail.case.evidence.first().expect("one photo").clone();
    let thumb = e.thumb_sha256.expect("a thumbnail");
    let thumb_size = p.store.read_evidence(&thumb).expect("thumb").len() as u64;
    (e.sha256, e.size, thumb, thumb_size)
}

/// The server's status of a blob, asked as the phone uploading it for case `owner` asks.
fn status(d: &District, token: &str, sha: &str, owner: &CaseId) -> BlobStatus {
    let url = format!("{}/v1/blobs/{sha}/status?owner=case:{owner}", d.url());
    let resp = client().get(url).bearer_auth(token).send().expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_slice(&resp.bytes().expect("body")).expect("status json")
}

#[test]
fn a_cut_upload_resumes_where_the_server_stopped_and_the_case_is_synced_only_then() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let photo = camera_like_jpeg(1600, 1200, &ExifSpec::default(), 11);
    let id = capture_with_photo(&w1, 0, &photo, 1);
    let (full, full_size, thumb, thumb_size) = photo_of(&w1, &id);
    assert!(full_size > 3 * 64 * 1024, "the photo spans several chunks ({full_size} bytes)");

    // The link gives out after the thumbnail and two chunks of the photo.
    w1.config.chunk_bytes = 64 * 1024;
    w1.config.photo_budget_bytes = Some(thumb_size + 2 * 64 * 1024);
    let first = w1.sync(&d.url()).expect("sync");
    assert_eq!(first.accepted, 1, "the case itself went through");
    assert!(first.photo_errors.is_empty(), "{:?}", first.photo_errors);
    assert_eq!(first.photos_uploaded, 1, "the thumbnail, smallest first");
    assert_eq!(first.photos_pending, 1, "the full-size photo is still only on the phone");
    let state = w1.store.case_sync_state(&id.to_string()).expect("state");
    assert_eq!(state.unsynced_changes, 0);
    assert!(!state.is_synced(), "a case is not synced while its photo is missing: {state:?}");
    assert_eq!(status(&d, &w1.config.token, &full, &id).offset, 2 * 64 * 1024, "the server holds two chunks");
    assert!(status(&d, &w1.config.token, &thumb, &id).complete);

    // The next sync resumes from the server's offset: nothing already received is sent again.
    w1.config.photo_budget_bytes = None;
    let second = w1.sync(&d.url()).expect("sync");
    assert_eq!(second.photos_uploaded, 1);
    assert_eq!(second.photos_pending, 0);
    assert_eq!(first.photo_bytes_up + second.photo_bytes_up, thumb_size + full_size, "no byte sent twice");
    assert_eq!(d.store.blob_bytes_received(&full), full_size, "the server received each byte once");
    assert!(w1.store.case_sync_state(&id.to_string()).expect("state").is_synced());
    let done = status(&d, &w1.config.token, &full, &id);
    assert!(done.complete && done.offset == full_size, "{done:?}");
    assert_eq!(d.store.blob_count().expect("count"), 2);

    // A supervisor of the community downloads it; it is the phone's file, byte for byte.
    let s1 = phone(&d, "s1", None);
    let resp = client().get(format!("{}/v1/blobs/{full}", d.url())).bearer_auth(&s1.config.token).send().expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().expect("bytes").to_vec(), w1.store.read_evidence(&full).expect("local"));
}

#[test]
fn the_same_photo_from_two_phones_is_stored_once() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut w2 = phone(&d, "w2", None);
    let photo = camera_like_jpeg(800, 600, &ExifSpec::default(), 12);
    let a = capture_with_photo(&w1, 0, &photo, 2);
    let b = capture_with_photo(&w2, 1, &photo, 3);
    let (full, full_size, _, thumb_size) = photo_of(&w1, &a);
    assert_eq!(photo_of(&w2, &b).0, full, "processing is deterministic: the same bytes, the same name");

    let first = w1.sync(&d.url()).expect("w1");
    assert_eq!(first.photo_bytes_up, full_size + thumb_size);
    let second = w2.sync(&d.url()).expect("w2");
    assert_eq!(second.photos_uploaded, 2, "confirmed without sending");
    assert_eq!(second.photo_bytes_up, 0, "the server already had it");
    assert_eq!(d.store.blob_count().expect("count"), 2, "stored once");
    assert!(w2.store.case_sync_state(&b.to_string()).expect("state").is_synced());

    // Each worker can download it through their own case.
    for p in [&w1, &w2] {
        let resp =
            client().get(format!("{}/v1/blobs/{full}", d.url())).bearer_auth(&p.config.token).send().expect("get");
        assert_eq!(resp.status().as_u16(), 200);
    }
}

#[test]
fn bad_uploads_and_downloads_get_a_json_4xx_and_change_nothing() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let w2 = phone(&d, "w2", None);
    let photo = camera_like_jpeg(320, 240, &ExifSpec::default(), 13);
    let id = capture_with_photo(&w1, 0, &photo, 4);
    w1.config.photo_budget_bytes = Some(0);
    w1.sync(&d.url()).expect("the case, not its photo");
    let (full, full_size, _, _) = photo_of(&w1, &id);
    let bytes = w1.store.read_evidence(&full).expect("local");
    let owner = format!("case:{id}");
    let token = w1.config.token.clone();
    let blobs = format!("{}/v1/blobs", d.url());
    let c = client();
    let check = |resp: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(resp.status().as_u16(), status, "expected {code}");
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().expect("body")).expect("json body");
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    };
    let put = |sha: &str, offset: u64, total: u64, owner: &str, body: Vec<u8>, token: &str| {
        c.put(format!("{blobs}/{sha}?offset={offset}&total={total}&owner={owner}"))
            .bearer_auth(token)
            .body(body)
            .send()
            .expect("send")
    };

    check(put(&full, 0, full_size, &owner, bytes[..100].to_vec(), "nope"), 401, "unauthenticated");
    check(put("not-a-hash", 0, 10, &owner, vec![0; 10], &token), 400, "bad_request");
    check(put(&full, 0, full_size, "case", vec![0; 10], &token), 400, "bad_request");
    check(put(&full, 0, 30 * 1024 * 1024, &owner, vec![0; 10], &token), 413, "too_large");
    // A chunk that skips ahead, and one past the announced end.
    check(put(&full, 10, full_size, &owner, bytes[10..20].to_vec(), &token), 409, "wrong_offset");
    check(put(&full, 0, 10, &owner, bytes[..20].to_vec(), &token), 400, "past_end");
    // Someone else's case: w2 cannot upload evidence for it.
    check(put(&full, 0, full_size, &owner, bytes[..100].to_vec(), &w2.config.token), 403, "not_in_scope");
    assert_eq!(status(&d, &token, &full, &id).offset, 0, "nothing of those was stored");

    // A complete upload whose bytes are not the named photo: refused, set aside, not stored.
    let mut wrong = bytes.clone();
    wrong[500] ^= 0xff;
    check(put(&full, 0, full_size, &owner, wrong, &token), 422, "hash_mismatch");
    let after = status(&d, &token, &full, &id);
    assert!(!after.complete && after.offset == 0, "{after:?}");
    assert_eq!(std::fs::read_dir(d.dir.path().join("blobs/rejected")).expect("rejected dir").count(), 1);
    assert_eq!(d.store.blob_count().expect("count"), 0);

    // The phone's own sync then delivers the real bytes.
    w1.config.photo_budget_bytes = None;
    let r = w1.sync(&d.url()).expect("sync");
    assert_eq!((r.photos_uploaded, r.photos_pending), (2, 0), "{:?}", r.photo_errors);

    // Downloads: outside the caller's scope, and a blob nobody uploaded, look the same.
    let get = |sha: &str, token: &str| c.get(format!("{blobs}/{sha}")).bearer_auth(token).send().expect("send");
    check(get(&full, &w2.config.token), 403, "not_in_scope");
    check(get(&"0".repeat(64), &token), 403, "not_in_scope");
    assert_eq!(get(&full, &token).status().as_u16(), 200);
    assert_eq!(d.store.blob_count().expect("count"), 2);
}

/// Yields `limit` bytes of `data`, then fails: a connection that drops in the middle of a request.
struct CutAfter {
    data: Vec<u8>,
    pos: usize,
    limit: usize,
}

impl std::io::Read for CutAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.limit {
            // Give the server time to store what it received before the connection goes.
            std::thread::sleep(std::time::Duration::from_millis(300));
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "signal lost"));
        }
        let n = buf.len().min(self.limit - self.pos).min(8 * 1024);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_request_cut_mid_body_keeps_what_arrived_and_the_phone_resumes_from_there() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let photo = camera_like_jpeg(1600, 1200, &ExifSpec::default(), 14);
    let id = capture_with_photo(&w1, 0, &photo, 5);
    w1.config.photo_budget_bytes = Some(0);
    w1.sync(&d.url()).expect("the case first");
    let (full, full_size, thumb, thumb_size) = photo_of(&w1, &id);
    let bytes = w1.store.read_evidence(&full).expect("local");

    // One request meant to carry the whole photo; the signal goes after 100,000 bytes.
    let cut = 100_000;
    let body = reqwest::blocking::Body::sized(CutAfter { data: bytes.clone(), pos: 0, limit: cut }, full_size);
    let sent = client()
        .put(format!("{}/v1/blobs/{full}?offset=0&total={full_size}&owner=case:{id}", d.url()))
        .bearer_auth(&w1.config.token)
        .body(body)
        .send();
    assert!(sent.is_err(), "the request was cut");
    let kept = status(&d, &w1.config.token, &full, &id);
    assert_eq!(kept.offset, cut as u64, "the server kept every byte that arrived");

    w1.config.photo_budget_bytes = None;
    let r = w1.sync(&d.url()).expect("resume");
    assert_eq!((r.photos_uploaded, r.photos_pending), (2, 0), "{:?}", r.photo_errors);
    assert_eq!(r.photo_bytes_up, full_size - cut as u64 + thumb_size, "only the rest was sent");
    assert_eq!(d.store.blob_bytes_received(&full), full_size, "no byte received twice");
    assert!(status(&d, &w1.config.token, &thumb, &id).complete);
}

#[test]
fn a_restore_from_backup_recovers_what_phones_sent_after_it() {
    let mut d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let before = capture(&w1, 0, 2, 40);
    let photo = camera_like_jpeg(640, 480, &ExifSpec::default(), 15);
    let with_photo = capture_with_photo(&w1, 0, &photo, 41);
    w1.sync(&d.url()).expect("sync before the backup");

    // The backup is taken while the server runs.
    let backup = tempfile::tempdir().expect("tempdir");
    let dest = backup.path().join("b1");
    let manifest = gridwork_sync_server::backup::backup(d.dir.path(), &dest).expect("backup");
    assert_eq!(manifest.blobs, 2, "the photo and its thumbnail");

    // After the backup: more cases, and a supervisor's decision, reach the server…
    let after = capture(&w1, 0, 3, 42);
    w1.sync(&d.url()).expect("w1 after the backup");
    s1.sync(&d.url()).expect("s1 pulls");
    s1.store
        .record_event(&before[0], gridwork_core::model::lifecycle::EventKind::Accept { note: "核实".into() })
        .expect("accept");
    s1.sync(&d.url()).expect("s1 pushes");
    let heads_before_disaster: Vec<_> =
        before.iter().chain(&after).map(|id| d.store.doc_heads(&id.to_string()).expect("heads")).collect();

    // …then the server's disk is lost and the backup restored.
    d.server = None;
    let restored = gridwork_sync_server::backup::restore(&dest, d.dir.path()).expect("restore");
    assert!(restored.moved_aside.is_some(), "the lost store's directory was moved aside, not deleted");
    assert_ne!(restored.new_epoch, manifest.epoch);
    d.restart();
    for id in &after {
        assert!(d.store.doc_heads(&id.to_string()).expect("heads").is_empty(), "not in the backup");
    }

    // Each phone's next sync re-offers what it holds.
    let r1 = w1.sync(&d.url()).expect("w1 after the restore");
    assert!(r1.reoffered > 0 && r1.refused.is_empty(), "{r1:?}");
    let r2 = s1.sync(&d.url()).expect("s1 after the restore");
    assert!(r2.reoffered > 0 && r2.refused.is_empty(), "{r2:?}");
    let heads_now: Vec<_> =
        before.iter().chain(&after).map(|id| d.store.doc_heads(&id.to_string()).expect("heads")).collect();
    assert_eq!(heads_now, heads_before_disaster, "every change made after the backup is back");
    assert!(w1.store.case_sync_state(&with_photo.to_string()).expect("state").is_synced());
    assert_eq!(d.store.blob_count().expect("count"), 2);

    // The supervisor's decision, re-offered by the supervisor's phone, reaches the worker…
    let news = w1.sync(&d.url()).expect("w1 pulls");
    assert_eq!((news.reoffered, news.pushed, news.pulled_changes), (0, 0, 1), "{news:?}");
    // …and nothing was duplicated: one more round moves nothing.
    let again = w1.sync(&d.url()).expect("again");
    assert_eq!((again.reoffered, again.pushed, again.pulled_changes), (0, 0, 0), "{again:?}");
}

/// After a restore, what only other phones still hold comes back through them: a supervisor's
/// change whose phone is gone and a console action, each offered again by a worker's phone with
/// the server's receipt, and stored as its author's (docs/PROTOCOL.md, "Restores"). A receipt
/// that does not belong to the bytes gets nothing in.
#[test]
fn after_a_restore_a_phone_brings_back_other_authors_changes_with_their_receipts() {
    use gridwork_core::model::lifecycle::EventKind;
    let mut d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let cases = capture(&w1, 0, 2, 60);
    w1.sync(&d.url()).expect("w1");
    let backup = tempfile::tempdir().expect("tempdir");
    let dest = backup.path().join("b1");
    gridwork_sync_server::backup::backup(d.dir.path(), &dest).expect("backup");

    // After the backup: the supervisor's phone accepts a case, the console adds a note, and the
    // worker's phone pulls both. Then the supervisor's phone is lost.
    s1.sync(&d.url()).expect("s1 pulls");
    s1.store.record_event(&cases[0], EventKind::Accept { note: "核实".into() }).expect("accept");
    s1.sync(&d.url()).expect("s1 pushes");
    gridwork_sync_server::store::ConsoleStore::set_password(d.store.as_ref(), "s1", "chaos password 1", 0)
        .expect("password");
    let mut console = gridwork_tests::console_client::ConsoleClient::new().expect("client");
    assert!(console.sign_in(&d.url(), "s1", "chaos password 1").expect("sign in"));
    let noted =
        console.act(&d.url(), &cases[1].to_string(), &[("action", "note"), ("note", "来电已回复")]).expect("note");
    assert_eq!(noted.status, 303, "{}", noted.body);
    w1.sync(&d.url()).expect("w1 pulls the accept and the note");
    let heads: Vec<_> = cases.iter().map(|c| d.store.doc_heads(&c.to_string()).expect("heads")).collect();
    drop(s1);

    d.server = None;
    gridwork_sync_server::backup::restore(&dest, d.dir.path()).expect("restore");
    d.restart();
    let r = w1.sync(&d.url()).expect("w1 after the restore");
    assert!(r.reoffered > 0 && r.quarantined.is_empty() && r.refused.is_empty(), "{r:?}");
    let now: Vec<_> = cases.iter().map(|c| d.store.doc_heads(&c.to_string()).expect("heads")).collect();
    assert_eq!(now, heads, "the accept and the note are back");
    assert!(d.store.quarantined().expect("quarantine").is_empty(), "nothing honest was quarantined");

    // Each is its author's again: the supervisor's device and the console, not the worker's.
    let db = rusqlite::Connection::open(d.dir.path().join("server.db")).expect("db");
    let by: Vec<String> = db
        .prepare("SELECT device_id FROM changes WHERE doc_id IN (?1, ?2) ORDER BY seq")
        .expect("query")
        .query_map([cases[0].to_string(), cases[1].to_string()], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("devices");
    assert!(by.iter().any(|d| d == "console-s1"), "{by:?}");
    assert_eq!(
        by.iter().filter(|d| d.starts_with("dev-")).collect::<std::collections::BTreeSet<_>>().len(),
        2,
        "{by:?}"
    );
}

#[test]
fn other_phones_get_the_thumbnail_after_their_sync_and_the_photo_on_demand() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let mut s1 = phone(&d, "s1", None);
    let photo = camera_like_jpeg(1200, 900, &ExifSpec::default(), 16);
    let id = capture_with_photo(&w1, 0, &photo, 6);
    let (full, _, thumb, _) = photo_of(&w1, &id);

    // The case arrives before its photo: the supervisor sees it, the thumbnail comes later.
    w1.config.photo_budget_bytes = Some(0);
    w1.sync(&d.url()).expect("the case");
    let early = s1.sync(&d.url()).expect("s1");
    assert_eq!((early.pulled_docs, early.thumbnails_fetched), (1, 0), "{early:?}");
    assert!(early.photo_errors.is_empty(), "not uploaded yet is not an error: {:?}", early.photo_errors);
    assert!(matches!(s1.store.read_evidence(&thumb), Err(gridwork_core::CoreError::EvidenceEvicted { .. })));
    assert_eq!(s1.store.photos_pending().expect("pending"), 0, "another phone's photos are not this phone's to send");

    w1.config.photo_budget_bytes = None;
    w1.sync(&d.url()).expect("the photo");
    let later = s1.sync(&d.url()).expect("s1 again");
    assert_eq!(later.thumbnails_fetched, 1);
    assert_eq!(s1.store.read_evidence(&thumb).expect("thumbnail here"), w1.store.read_evidence(&thumb).expect("w1"));
    assert!(matches!(s1.store.read_evidence(&full), Err(gridwork_core::CoreError::EvidenceEvicted { .. })));

    // The full-size photo when the supervisor opens it; kept afterwards.
    let fetched = s1.store.fetch_evidence(&s1.config, &full).expect("fetch");
    assert_eq!(fetched, w1.store.read_evidence(&full).expect("w1"));
    assert_eq!(s1.store.read_evidence(&full).expect("now local"), fetched);

    // A worker of another grid has no such case, and the server refuses the bytes.
    let w2 = phone(&d, "w2", None);
    match w2.store.fetch_evidence(&w2.config, &full) {
        Err(gridwork_core::CoreError::Server { status: 403, code, .. }) => assert_eq!(code, "not_in_scope"),
        other => panic!("expected not_in_scope, got {other:?}"),
    }
}

#[test]
fn a_confirmed_photo_evicted_for_space_comes_back_from_the_server() {
    let d = District::new();
    let mut w1 = phone(&d, "w1", None);
    let photo = camera_like_jpeg(1200, 900, &ExifSpec::default(), 17);
    let id = capture_with_photo(&w1, 0, &photo, 7);
    let (full, full_size, thumb, _) = photo_of(&w1, &id);
    let original = w1.store.read_evidence(&full).expect("local");

    // Not confirmed yet: nothing may go.
    assert_eq!(w1.store.evict_confirmed_photos().expect("evict").files, 0);
    w1.sync(&d.url()).expect("upload");
    let freed = w1.store.evict_confirmed_photos().expect("evict");
    assert_eq!((freed.files, freed.bytes > full_size), (1, true), "{freed:?}");
    assert!(matches!(w1.store.read_evidence(&full), Err(gridwork_core::CoreError::EvidenceEvicted { .. })));
    assert!(w1.store.read_evidence(&thumb).is_ok(), "the thumbnail stays");
    assert!(w1.store.case_sync_state(&id.to_string()).expect("state").is_synced());

    assert_eq!(w1.store.fetch_evidence(&w1.config, &full).expect("back"), original);
    let again = w1.sync(&d.url()).expect("sync");
    assert_eq!((again.photos_uploaded, again.photos_pending), (0, 0), "nothing to send again");
}
