//! The store conformance suite: one set of scenarios, written against `SyncStore` and
//! `AdminStore` only, run on every backend (`conformance!` below, after matrix-rust-sdk's store
//! integration-test macro): the embedded SQLite store and PostgreSQL (a real server started by
//! `gridwork_tests::pg`, or the one `GRIDWORK_PG_URL` names). Real phone stores sync through the
//! real HTTP server. The console's scenarios run on both stores in tests/console.rs, a city's
//! districts in tests/city.rs.

use std::sync::Arc;

use base64::Engine;
use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::{CaseId, UserId};
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::store::NewCase;
use gridwork_core::sync::{enrol, SyncConfig};
use gridwork_core::Store;
use gridwork_model::access::Scope;
use gridwork_model::wire::{Outcome, PushedChange, SyncRequest};
use gridwork_sync_server::error::ServerError;
use gridwork_sync_server::{AdminStore, PgStore, RunningServer, SqliteStore, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

/// A backend under test: its two faces, and how to open it again on the same data.
struct Opened {
    sync: Arc<dyn SyncStore>,
    admin: Arc<dyn AdminStore>,
}

type Open = fn(&std::path::Path, &str) -> Opened;

fn open_sqlite(dir: &std::path::Path, _db: &str) -> Opened {
    let s = Arc::new(SqliteStore::open(dir).expect("sqlite store"));
    Opened { sync: s.clone(), admin: s }
}

fn open_postgres(dir: &std::path::Path, db: &str) -> Opened {
    let s = Arc::new(PgStore::open(db, dir).expect("postgres store"));
    Opened { sync: s.clone(), admin: s }
}

struct District {
    dir: tempfile::TempDir,
    db: String,
    open: Open,
    sync: Arc<dyn SyncStore>,
    admin: Arc<dyn AdminStore>,
    server: Option<RunningServer>,
}

impl District {
    fn new(open: Open, db: String) -> District {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { sync, admin } = open(dir.path(), &db);
        admin.import_catalog(&district(4)).expect("catalog");
        admin.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w1");
        admin.set_user("w2", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("w2");
        admin.set_user("s1", Role::Supervisor, None, &[Scope::Community("Community 0".into())]).expect("s1");
        admin
            .set_user("h1", Role::DepartmentHandler, Some("police"), &[Scope::Department("police".into())])
            .expect("h1");
        let server = gridwork_sync_server::start(sync.clone(), "127.0.0.1:0".parse().expect("addr")).expect("server");
        District { dir, db, open, sync, admin, server: Some(server) }
    }

    fn url(&self) -> String {
        self.server.as_ref().map(|s| s.url()).expect("running")
    }

    /// Another server on the same data (the same database): a restart, or a second instance.
    fn another_instance(&self) -> (Opened, RunningServer) {
        let o = (self.open)(self.dir.path(), &self.db);
        let server = gridwork_sync_server::start(o.sync.clone(), "127.0.0.1:0".parse().expect("addr")).expect("server");
        (o, server)
    }
}

struct Phone {
    _dir: tempfile::TempDir,
    store: Store,
    config: SyncConfig,
}

impl Phone {
    fn sync(&mut self, url: &str) -> gridwork_core::sync::SyncReport {
        self.config.server = url.to_owned();
        self.store.sync(&self.config, &mut |_| {}).expect("sync")
    }

    fn ids(&self) -> Vec<CaseId> {
        let mut v = self.store.document_ids().expect("ids");
        v.sort();
        v
    }
}

fn phone(d: &District, user: &str, claim: Option<(&str, Role)>) -> Phone {
    let (_, code) = d.admin.enrol_device(user, 0).expect("enrol");
    let e = enrol(&d.url(), &code, None, "0.1.0").expect("redeem code");
    let mut identity = identity_from_enrolment(&e);
    if let Some((u, r)) = claim {
        identity.user = UserId::from(u);
        identity.role = r;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_device(dir.path(), identity, &district(4), None).expect("device store");
    Phone { _dir: dir, store, config: SyncConfig::new(d.url(), e.token) }
}

fn capture(p: &Phone, grid: usize, n: usize, seed: u64) -> Vec<CaseId> {
    let catalog = district(4);
    let mut rng = Rng::new(seed);
    let mut ids: Vec<CaseId> =
        (0..n).map(|_| p.store.capture_case(random_case(&mut rng, &catalog, grid, 0)).expect("capture").id).collect();
    ids.sort();
    ids
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn empty_request(cursor: Option<&str>) -> SyncRequest {
    gridwork_tests::sync_request(vec![], vec![], cursor.map(str::to_owned), 1 << 20)
}

/// Scenarios, each a function of the backend.
mod scenarios {
    use super::*;

    pub fn offline_work_converges_within_each_scope(d: District) {
        let (mut w1, mut w2, mut s1, mut h1) =
            (phone(&d, "w1", None), phone(&d, "w2", None), phone(&d, "s1", None), phone(&d, "h1", None));
        let mine = capture(&w1, 0, 3, 1);
        let theirs = capture(&w2, 1, 2, 2);
        let r = w1.sync(&d.url());
        assert_eq!((r.pushed, r.accepted), (3, 3));
        w2.sync(&d.url());
        w1.sync(&d.url());
        assert_eq!(w1.ids(), mine, "w1 sees grid g0 only");
        s1.sync(&d.url());
        let mut all = [mine.clone(), theirs].concat();
        all.sort();
        assert_eq!(s1.ids(), all, "the community supervisor sees both grids");
        let case = mine[0];
        s1.store.record_event(&case, EventKind::Accept { note: String::new() }).expect("accept");
        s1.store
            .record_event(&case, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: i64::MAX / 2 })
            .expect("dispatch");
        s1.sync(&d.url());
        h1.sync(&d.url());
        assert_eq!(h1.ids(), vec![case], "only the dispatched case enters the department's scope");
        let heads = d.admin.doc_heads(&case.to_string()).expect("heads");
        for p in [&mut w1, &mut s1, &mut h1] {
            p.sync(&d.url());
            let mut h = p.store.get_case(&case).expect("case").heads;
            h.sort();
            assert_eq!(h, heads, "every replica holding the case has the server's heads");
        }
        assert_eq!(d.admin.docs_in_scope("w1").expect("scope"), mine.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    }

    pub fn the_same_push_twice_is_stored_once(d: District) {
        let w1 = phone(&d, "w1", None);
        capture(&w1, 0, 4, 3);
        let device = d.sync.authenticate(&w1.config.token).expect("token");
        let changes: Vec<PushedChange> = w1
            .store
            .outbox_page(usize::MAX)
            .expect("outbox")
            .into_iter()
            .map(|i| PushedChange {
                doc: i.doc_id.unwrap_or_default(),
                bytes: B64.encode(i.bytes),
                receipt: None,
                link: i.link,
            })
            .collect();
        // The same changes twice in one request, then the request again (an answer lost).
        let req =
            SyncRequest { changes: changes.iter().chain(changes.iter()).cloned().collect(), ..empty_request(None) };
        let first = d.sync.sync(&device, req.clone(), 0).expect("first");
        assert!(first.results.iter().all(|r| r.outcome == Outcome::Accepted), "{:?}", first.results);
        let before = d.admin.counts().expect("counts");
        let again = d.sync.sync(&device, req, 0).expect("again");
        assert!(again.results.iter().all(|r| r.outcome == Outcome::Accepted && r.receipt.is_some()));
        assert_eq!(d.admin.counts().expect("counts"), before, "nothing stored twice");
        assert_eq!(before.0, 4);
    }

    pub fn forged_claims_are_quarantined_and_an_administrator_decides(d: District) {
        // A worker's phone whose events claim a supervisor.
        let mut forger = phone(&d, "w1", Some(("s1", Role::Supervisor)));
        let honest = phone(&d, "w1", None);
        let forged = capture(&forger, 0, 2, 4);
        let mine = capture(&honest, 0, 1, 5);
        let r = forger.sync(&d.url());
        assert_eq!(r.quarantined.len(), 2, "{r:?}");
        let q = d.admin.quarantined().expect("quarantine");
        assert_eq!(q.len(), 2);
        assert!(q.iter().all(|i| i.reason.contains("event claims user s1") && i.status == "pending"), "{q:?}");
        assert!(forged.iter().all(|c| !d.admin.docs_in_scope("s1").expect("scope").contains(&c.to_string())));
        // Released: it enters its case's scopes; rejected: it stays stored, out of every scope.
        d.admin.release_quarantined(&q[0].key, 1).expect("release");
        d.admin.reject_quarantined(&q[1].key).expect("reject");
        assert!(matches!(d.admin.reject_quarantined(&q[1].key), Err(ServerError::NotFound(_))));
        assert!(matches!(d.admin.release_quarantined(&q[1].key, 1), Err(ServerError::BadRequest(_))));
        let statuses: Vec<String> = d.admin.quarantined().expect("q").into_iter().map(|i| i.status).collect();
        assert_eq!(statuses, ["released", "rejected"]);
        let visible = d.admin.docs_in_scope("s1").expect("scope");
        assert_eq!(forged.iter().filter(|c| visible.contains(&c.to_string())).count(), 1);
        let _ = mine;
    }

    pub fn re_scoping_moves_cases_and_keeps_unsynced_work(d: District) {
        let (mut w1, mut w2) = (phone(&d, "w1", None), phone(&d, "w2", None));
        let old = capture(&w1, 0, 2, 6);
        let theirs = capture(&w2, 1, 2, 7);
        w1.sync(&d.url());
        w2.sync(&d.url());
        // Offline work on an old case, then w1 moves to grid g1.
        w1.store.record_event(&old[0], EventKind::Note { text: "visited again".into() }).expect("comment");
        d.admin.set_user("w1", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("move");
        let r = w1.sync(&d.url());
        assert!(r.quarantined.is_empty(), "w1 reported these cases: its reporter scope still covers them: {r:?}");
        assert_eq!(w1.store.outbox_len().expect("outbox"), 0, "the offline work went out");
        let ids = w1.ids();
        assert!(theirs.iter().all(|c| ids.contains(c)), "the new grid's cases arrive");
        assert!(d.admin.docs_in_scope("w1").expect("scope").len() >= theirs.len());
        assert!(matches!(
            d.admin.set_user("w1", Role::Worker, None, &[Scope::User("w2".into())]),
            Err(ServerError::BadRequest(_))
        ));
    }

    pub fn cursors_page_through_a_large_scope_and_refuse_what_was_never_issued(d: District) {
        let mut w1 = phone(&d, "w1", None);
        let all = capture(&w1, 0, 40, 8);
        w1.sync(&d.url());
        // A supervisor with a small page: many pulls, nothing skipped.
        let mut s1 = phone(&d, "s1", None);
        s1.config.max_pull_bytes = 4_000;
        let r = s1.sync(&d.url());
        assert!(r.round_trips > 2, "the small page took several pulls ({r:?})");
        assert_eq!(s1.ids(), all);
        // A cursor this server never issued is refused, never answered from a guess.
        let device = d.sync.authenticate(&s1.config.token).expect("token");
        let req = |cursor: &str| empty_request(Some(cursor));
        let answer = d.sync.sync(&device, req("00000000:0"), 1).expect("another epoch");
        assert!(answer.reoffer, "a cursor from another epoch starts over and asks for a re-offer");
        let epoch = answer.cursor.split(':').next().unwrap_or_default().to_owned();
        let past_end = d.sync.sync(&device, req(&format!("{epoch}:99999999")), 1);
        assert!(matches!(past_end, Err(ServerError::CursorUnknown { .. })), "{past_end:?}");
    }

    pub fn evidence_is_uploaded_once_and_seen_only_in_scope(d: District) {
        let mut w1 = phone(&d, "w1", None);
        let mut w2 = phone(&d, "w2", None);
        let photo = camera_like_jpeg(800, 600, &ExifSpec::default(), 9);
        let mut rng = Rng::new(10);
        let case = random_case(&mut rng, &district(4), 0, 0);
        let id = w1.store.capture_case(NewCase { photos: vec![photo], ..case }).expect("capture").id;
        let mut rounds = 0;
        while w1.sync(&d.url()).photos_pending > 0 && rounds < 10 {
            rounds += 1;
        }
        assert_eq!(d.admin.blob_count().expect("blobs"), 2, "the photo and its thumbnail");
        let evidence = w1.store.get_case(&id).expect("case").case.evidence;
        let sha = &evidence.first().expect("evidence").sha256;
        w2.sync(&d.url());
        let outsider = d.sync.authenticate(&w2.config.token).expect("w2");
        assert!(matches!(d.sync.get_blob(&outsider, sha), Err(ServerError::NotInScope(_))));
        let s1 = phone(&d, "s1", None);
        let supervisor = d.sync.authenticate(&s1.config.token).expect("s1");
        assert!(!d.sync.get_blob(&supervisor, sha).expect("in scope").is_empty());
    }

    pub fn devices_are_enrolled_once_retired_and_revoked(d: District) {
        let (id, code) = d.admin.enrol_device("w1", 0).expect("enrol");
        let req =
            gridwork_model::wire::EnrolRequest { code: code.clone(), app_version: "0.1.0".into(), public_key: None };
        let e = d.sync.redeem(&req, 1).expect("redeem");
        assert_eq!((e.device_id.as_str(), e.user.as_str()), (id.as_str(), "w1"));
        assert!(matches!(d.sync.redeem(&req, 2), Err(ServerError::BadEnrolmentCode)), "a code works once");
        assert!(matches!(d.admin.enrol_device("nobody", 0), Err(ServerError::NotFound(_))));
        d.admin.retire_device(&id, 3).expect("retire");
        assert!(d.sync.authenticate(&e.token).expect("still let in").retired);
        d.admin.revoke_device(&id).expect("revoke");
        assert!(matches!(d.sync.authenticate(&e.token), Err(ServerError::DeviceRevoked)));
        assert!(matches!(d.sync.authenticate("no such token"), Err(ServerError::Unauthenticated)));
        let listed = d.admin.list_devices(4).expect("list");
        assert!(listed.iter().any(|x| x.id == id && x.status == "revoked"), "{listed:?}");
    }

    pub fn a_restarted_server_loses_nothing(d: District) {
        let mut w1 = phone(&d, "w1", None);
        let first = capture(&w1, 0, 3, 11);
        w1.sync(&d.url());
        let (o, server) = d.another_instance();
        let url = server.url();
        let later = capture(&w1, 0, 2, 12);
        w1.sync(&url);
        let mut s1 = phone(&d, "s1", None);
        s1.sync(&url);
        let mut all = [first, later].concat();
        all.sort();
        assert_eq!(s1.ids(), all);
        assert_eq!(o.admin.counts().expect("counts").1, 5);
    }
}

macro_rules! conformance {
    ($backend:ident, $open:expr, $db:expr) => {
        mod $backend {
            use super::*;

            fn district() -> District {
                District::new($open, $db)
            }

            #[test]
            fn offline_work_converges_within_each_scope() {
                scenarios::offline_work_converges_within_each_scope(district())
            }

            #[test]
            fn the_same_push_twice_is_stored_once() {
                scenarios::the_same_push_twice_is_stored_once(district())
            }

            #[test]
            fn forged_claims_are_quarantined_and_an_administrator_decides() {
                scenarios::forged_claims_are_quarantined_and_an_administrator_decides(district())
            }

            #[test]
            fn re_scoping_moves_cases_and_keeps_unsynced_work() {
                scenarios::re_scoping_moves_cases_and_keeps_unsynced_work(district())
            }

            #[test]
            fn cursors_page_through_a_large_scope_and_refuse_what_was_never_issued() {
                scenarios::cursors_page_through_a_large_scope_and_refuse_what_was_never_issued(district())
            }

            #[test]
            fn evidence_is_uploaded_once_and_seen_only_in_scope() {
                scenarios::evidence_is_uploaded_once_and_seen_only_in_scope(district())
            }

            #[test]
            fn devices_are_enrolled_once_retired_and_revoked() {
                scenarios::devices_are_enrolled_once_retired_and_revoked(district())
            }

            #[test]
            fn a_restarted_server_loses_nothing() {
                scenarios::a_restarted_server_loses_nothing(district())
            }
        }
    };
}

conformance!(sqlite, open_sqlite, String::new());
conformance!(
    postgres,
    open_postgres,
    gridwork_tests::pg::fresh_database().expect("a PostgreSQL database for the suite")
);
