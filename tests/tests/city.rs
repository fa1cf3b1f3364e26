//! A city of districts (ADR 22): one deployment, every district a store of its own, requests
//! routed by what they carry. Each district here has the same catalog — the same grid ids,
//! people of the same names — so that anything that crossed districts by a shared name would
//! show. Phones and console people go through the real HTTP server, on both backends.

use std::sync::Arc;

use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::CaseId;
use gridwork_core::sync::{enrol, SyncConfig};
use gridwork_core::Store;
use gridwork_model::access::Scope;
use gridwork_model::lifecycle::EventKind;
use gridwork_model::wire::EnrolRequest;
use gridwork_sync_server::city::{City, DistrictAdmin, DistrictId, Member, StoreKind};
use gridwork_sync_server::error::ServerError;
use gridwork_sync_server::store::console::{CaseFilter, ConsoleAction, ConsoleStore};
use gridwork_sync_server::store::port::{read, write, Backend, ReadTx, WriteTx};
use gridwork_sync_server::{PgStore, RunningServer, SqliteStore, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

const PASSWORD: &str = "correct horse battery";

struct Deployment {
    _dir: tempfile::TempDir,
    city: Arc<City>,
    members: Vec<(Option<DistrictId>, Member)>,
    server: RunningServer,
}

impl Deployment {
    /// The city centre and districts `a` and `b`, each with the same catalog and people.
    fn new(kind: StoreKind) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = [DistrictId::parse("a").expect("a"), DistrictId::parse("b").expect("b")];
        for d in &ids {
            assert!(kind.add_district(dir.path(), d).expect("add district"), "new");
            assert!(!kind.add_district(dir.path(), d).expect("add again"), "adding twice changes nothing");
        }
        assert_eq!(kind.districts(dir.path()).expect("list"), ids.to_vec());
        let mut members = vec![(None, kind.open(dir.path(), None).expect("city centre"))];
        for d in &ids {
            members.push((Some(d.clone()), kind.open(dir.path(), Some(d)).expect("district")));
        }
        let missing = DistrictId::parse("c").expect("c");
        assert!(matches!(kind.open(dir.path(), Some(&missing)), Err(ServerError::NotFound(_))), "never made on open");
        for (d, m) in &members {
            m.admin.import_catalog(&district(4)).expect("catalog");
            m.admin.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w1");
            m.admin.set_user("s1", Role::Supervisor, None, &[Scope::Community("Community 0".into())]).expect("s1");
            m.admin.set_user("boss", Role::Administrator, None, &[]).expect("boss");
            if let Some(console) = m.sync.console() {
                for who in ["s1", "boss"] {
                    console.set_password(who, PASSWORD, 0).expect("password");
                }
            }
            let _ = d;
        }
        let city = Arc::new(City::new(
            members[0].1.clone(),
            members[1..].iter().map(|(d, m)| (d.clone().expect("district"), m.clone())),
        ));
        let server = gridwork_sync_server::start(city.clone(), "127.0.0.1:0".parse().expect("addr")).expect("server");
        Deployment { _dir: dir, city, members, server }
    }

    fn member(&self, district: Option<&str>) -> &Member {
        &self.members.iter().find(|(d, _)| d.as_ref().map(DistrictId::as_str) == district).expect("member").1
    }

    /// An enrolment code as `admin enrol-device --district` prints it.
    fn code(&self, district: Option<&str>, user: &str) -> String {
        let admin = DistrictAdmin {
            district: district.map(|d| DistrictId::parse(d).expect("id")),
            store: self.member(district).admin.clone(),
        };
        admin.enrol_device(user, 0).expect("enrol").1
    }

    fn phone(&self, in_district: Option<&str>, user: &str) -> Phone {
        let code = self.code(in_district, user);
        let e = enrol(&self.server.url(), &code, None, "0.1.0").expect("redeem code");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_device(dir.path(), identity_from_enrolment(&e), &district(4), None).expect("device store");
        Phone { _dir: dir, store, config: SyncConfig::new(self.server.url(), e.token) }
    }
}

struct Phone {
    _dir: tempfile::TempDir,
    store: Store,
    config: SyncConfig,
}

impl Phone {
    fn sync(&mut self) -> gridwork_core::sync::SyncReport {
        self.store.sync(&self.config, &mut |_| {}).expect("sync")
    }

    fn ids(&self) -> Vec<CaseId> {
        let mut v = self.store.document_ids().expect("ids");
        v.sort();
        v
    }

    fn capture(&self, n: usize, seed: u64) -> Vec<CaseId> {
        let catalog = district(4);
        let mut rng = Rng::new(seed);
        let mut ids: Vec<CaseId> = (0..n)
            .map(|_| self.store.capture_case(random_case(&mut rng, &catalog, 0, 0)).expect("capture").id)
            .collect();
        ids.sort();
        ids
    }
}

fn strings(ids: &[CaseId]) -> Vec<String> {
    ids.iter().map(CaseId::to_string).collect()
}

mod scenarios {
    use super::*;

    /// Phones of two districts with the same grid and people's names each see their own
    /// district's cases only, and a district's token or code means nothing in another.
    pub fn phones_see_their_own_district_only(d: Deployment) {
        let (mut wa, mut wb, mut sa) = (d.phone(Some("a"), "w1"), d.phone(Some("b"), "w1"), d.phone(Some("a"), "s1"));
        assert!(wa.config.token.starts_with("a.") && wb.config.token.starts_with("b."), "tokens name their district");
        let in_a = wa.capture(3, 1);
        let in_b = wb.capture(2, 2);
        assert_eq!(wa.sync().accepted, 3);
        assert_eq!(wb.sync().accepted, 2);
        wa.sync();
        wb.sync();
        sa.sync();
        assert_eq!(wa.ids(), in_a, "district a's worker on grid g0 sees a's g0 only");
        assert_eq!(wb.ids(), in_b, "district b's worker on grid g0 sees b's g0 only");
        assert_eq!(sa.ids(), in_a, "a's community supervisor sees nothing of b");
        assert_eq!(d.member(Some("a")).admin.docs_in_scope("w1").expect("scope"), strings(&in_a));
        assert_eq!(d.member(Some("b")).admin.docs_in_scope("w1").expect("scope"), strings(&in_b));
        assert_eq!(d.member(None).admin.counts().expect("counts").1, 0, "nothing reached the city centre");
        assert_eq!(d.member(Some("a")).admin.counts().expect("counts").1, 3);
        assert_eq!(d.member(Some("b")).admin.counts().expect("counts").1, 2);

        // A's token under b's name, with no district, or under one that does not exist.
        let secret = wa.config.token.strip_prefix("a.").expect("prefix").to_owned();
        for forged in [format!("b.{secret}"), secret.clone(), format!("zz.{secret}"), format!("a.{secret}x")] {
            assert!(
                matches!(d.city.authenticate(&forged), Err(ServerError::Unauthenticated)),
                "{forged} authenticated"
            );
            let mut config = wa.config.clone();
            config.token = forged.clone();
            assert!(wa.store.sync(&config, &mut |_| {}).is_err(), "{forged} synced");
        }
        assert_eq!(d.city.authenticate(&wa.config.token).expect("a's token").district.as_deref(), Some("a"));

        // A code made in a redeemed in b (or with its district cut off) is refused and stays unused.
        let code = d.code(Some("a"), "w1");
        let secret = code.strip_prefix("a.").expect("prefix");
        for wrong in [format!("b.{secret}"), secret.to_owned()] {
            let req = EnrolRequest { code: wrong.clone(), app_version: "0.1.0".into(), public_key: None };
            assert!(matches!(d.city.redeem(&req, 0), Err(ServerError::BadEnrolmentCode)), "{wrong} redeemed");
        }
        let ok = d
            .city
            .redeem(&EnrolRequest { code, app_version: "0.1.0".into(), public_key: None }, 0)
            .expect("redeem in a");
        assert!(ok.token.starts_with("a."));
    }

    /// The city centre's own store keeps working for the phones enrolled there before any
    /// district was added (tokens without a district).
    pub fn the_city_centre_still_serves_its_own_phones(d: Deployment) {
        let mut home = d.phone(None, "w1");
        assert!(!home.config.token.contains('.'));
        let mine = home.capture(2, 3);
        home.sync();
        home.sync();
        assert_eq!(home.ids(), mine);
        assert_eq!(d.member(Some("a")).admin.counts().expect("counts").1, 0);
    }

    /// The console: a district's people sign in as `name@district` and see its cases only; the
    /// city centre's administrator may look at any district and change none.
    pub fn console_people_stay_in_their_district(d: Deployment) {
        let (mut wa, mut wb) = (d.phone(Some("a"), "w1"), d.phone(Some("b"), "w1"));
        let in_a = wa.capture(2, 4);
        let in_b = wb.capture(3, 5);
        wa.sync();
        wb.sync();
        let console: &dyn ConsoleStore = d.city.console().expect("console");
        let all = CaseFilter::default();

        let (token, s) = console.sign_in("s1@a", PASSWORD, 0).expect("s1 of a");
        assert!(token.starts_with("a.") && s.user.district.as_deref() == Some("a") && !s.user.city_level);
        let queue = console.case_queue(&s.user, &all, 0).expect("queue");
        let mut seen: Vec<String> = queue.rows.iter().map(|r| r.id.clone()).collect();
        seen.sort();
        assert_eq!(seen, strings(&in_a), "a's supervisor sees a's cases");
        assert!(console.case_view(&s.user, &in_b[0].to_string()).is_err(), "and never b's, even by id");
        assert_eq!(console.session(&token, 0).expect("session").user.district.as_deref(), Some("a"));
        let secret = token.strip_prefix("a.").expect("prefix");
        assert!(console.session(&format!("b.{secret}"), 0).is_err(), "a's session means nothing in b");
        assert!(matches!(console.districts(&s.user), Err(ServerError::Forbidden(_))));

        // A district's administrator: all of their district, nothing of the other.
        let (_, boss_a) = console.sign_in("boss@a", PASSWORD, 0).expect("boss of a");
        assert!(!boss_a.user.city_level, "a district's administrator is not city-level");
        assert_eq!(console.case_queue(&boss_a.user, &all, 0).expect("queue").total, 2);
        assert!(console.case_view(&boss_a.user, &in_b[0].to_string()).is_err());
        let accept = ConsoleAction::Event(EventKind::Accept { note: String::new() });
        console.act(&s.user, &in_a[0].to_string(), accept.clone(), 1).expect("a's supervisor acts in a");
        let refused = console.act(&s.user, &in_b[0].to_string(), accept.clone(), 1);
        assert!(refused.is_err(), "never in b: there is no such case in a");
        assert!(
            d.member(Some("b")).admin.doc_heads(&in_b[0].to_string()).expect("heads").len() == 1,
            "b's case unchanged"
        );
        let (_, code) = console.enrol(&boss_a.user, "w1", 1).expect("enrol from the console");
        assert!(code.starts_with("a."), "a console enrolment code names its district: {code}");

        // The city centre's administrator: city-level, looks at either district, changes none.
        let (token, mayor) = console.sign_in("boss", PASSWORD, 0).expect("city centre");
        assert!(!token.contains('.') && mayor.user.city_level && mayor.user.district.is_none());
        assert_eq!(console.districts(&mayor.user).expect("districts"), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(console.case_queue(&mayor.user, &all, 0).expect("centre").total, 0);
        let mut in_b_view = mayor.user.clone();
        in_b_view.district = Some("b".into());
        assert_eq!(console.case_queue(&in_b_view, &all, 0).expect("b").total, 3);
        assert!(console.case_view(&in_b_view, &in_b[0].to_string()).is_ok());
        assert!(matches!(console.act(&in_b_view, &in_b[0].to_string(), accept, 1), Err(ServerError::Forbidden(_))));
        let mut nowhere = mayor.user.clone();
        nowhere.district = Some("zz".into());
        assert!(matches!(console.case_queue(&nowhere, &all, 0), Err(ServerError::NotFound(_))));

        // A person's name never chooses the district: the city centre's administrator cannot
        // make a person `boss@b` at the centre, nor set district b's administrator's password.
        let person = gridwork_sync_server::store::console::PersonView {
            id: "boss@b".into(),
            role: Role::Administrator,
            department: None,
            scopes: vec![],
            has_password: false,
        };
        assert!(console.set_person(&mayor.user, &person).is_err(), "a name with @ is refused");
        assert!(console.set_person_password(&mayor.user, "boss@b", "a new password!", 1).is_err());
        assert!(console.set_person_password(&in_b_view, "boss", "a new password!", 1).is_err(), "read-only in b");
        assert!(console.sign_in("boss@b", "a new password!", 2).is_err());
        console.sign_in("boss@b", PASSWORD, 2).expect("b's administrator keeps their password");
        // A district's administrator sets passwords in their own district only.
        console.set_person_password(&boss_a.user, "s1", "another password", 3).expect("in a");
        console.sign_in("s1@a", "another password", 4).expect("s1 of a has it");
        console.sign_in("s1@b", PASSWORD, 4).expect("s1 of b keeps theirs");

        // A name without a district is the city centre's: s1 of a is not s1 there.
        assert!(console.sign_in("s1@zz", PASSWORD, 0).is_err(), "no district zz, and no person `s1@zz` at the centre");
    }

    /// Through the pages: the district cookie moves only a city-level person.
    pub fn console_pages_route_by_session(d: Deployment) {
        let mut wb = d.phone(Some("b"), "w1");
        let in_b = wb.capture(1, 6);
        wb.sync();
        let base = d.server.url();
        let case = format!("{base}/console/cases/{}", in_b[0]);

        let mut s1 = gridwork_tests::console_client::ConsoleClient::new().expect("client");
        assert!(s1.sign_in(&base, "s1@a", PASSWORD).expect("sign in"));
        assert_ne!(s1.get(&case).expect("case").status, 200, "b's case from a's session");
        let page = s1.get(&format!("{base}/console/districts")).expect("districts");
        assert_eq!(page.status, 403, "only city-level people list districts");
        // Choosing a district is refused, and the cookie set by hand changes nothing.
        let csrf = s1.get(&format!("{base}/console/cases")).expect("queue").csrf().expect("csrf");
        let chose = s1.post(&format!("{base}/console/districts"), &[("csrf", &csrf), ("district", "b")]).expect("post");
        assert_eq!(chose.status, 403);
        s1.set_cookie("gw_district", "b");
        assert_ne!(s1.get(&case).expect("case").status, 200, "still not b's case");

        let mut mayor = gridwork_tests::console_client::ConsoleClient::new().expect("client");
        assert!(mayor.sign_in(&base, "boss", PASSWORD).expect("sign in"));
        let list = mayor.get(&format!("{base}/console/districts")).expect("districts");
        assert!(list.status == 200 && list.body.contains("id=\"district-b\""), "{}", list.body);
        let csrf = list.csrf().expect("csrf");
        let chose = mayor.post(&format!("{base}/console/districts"), &[("csrf", &csrf), ("district", "b")]).expect("b");
        assert_eq!(chose.status, 303);
        let page = mayor.get(&case).expect("case");
        assert_eq!(page.status, 200, "the city-level person looks at b's case");
        let refused = mayor.act(&base, &in_b[0].to_string(), &[("action", "accept")]).expect("act");
        assert_eq!(refused.status, 403, "and changes nothing there");
        let bad = mayor.post(&format!("{base}/console/districts"), &[("csrf", &csrf), ("district", "zz")]).expect("zz");
        assert_eq!(bad.status, 404);
    }
}

macro_rules! city {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            use super::*;

            fn deployment() -> Deployment {
                Deployment::new($kind)
            }

            #[test]
            fn phones_see_their_own_district_only() {
                scenarios::phones_see_their_own_district_only(deployment());
            }

            #[test]
            fn the_city_centre_still_serves_its_own_phones() {
                scenarios::the_city_centre_still_serves_its_own_phones(deployment());
            }

            #[test]
            fn console_people_stay_in_their_district() {
                scenarios::console_people_stay_in_their_district(deployment());
            }

            #[test]
            fn console_pages_route_by_session() {
                scenarios::console_pages_route_by_session(deployment());
            }
        }
    };
}

city!(sqlite, StoreKind::Sqlite);
city!(
    postgres,
    StoreKind::Postgres(gridwork_tests::pg::fresh_database().expect("a PostgreSQL database for the suite"))
);
/// District a's writer holds a write transaction open (on PostgreSQL, its `seq_counter` row
/// lock); district b's write commits meanwhile: one district's storm never queues another's
/// writes behind it, as one store's writers queue behind each other (tests/instances.rs).
fn one_districts_writer_never_waits_for_anothers<B: Backend>(a: Arc<B>, b: Arc<B>) {
    use std::sync::mpsc;
    use std::time::Duration;
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        write(a.as_ref(), |tx: &dyn WriteTx| {
            let seq = tx.next_seq()?;
            tx.set_meta("probe", &seq.to_string())?;
            let _ = started_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            Ok(())
        })
        .expect("a commits")
    });
    started.recv_timeout(Duration::from_secs(30)).expect("a holds its transaction");
    let (done_tx, done) = mpsc::channel();
    let b2 = b.clone();
    let other = std::thread::spawn(move || {
        let r = write(b2.as_ref(), |tx: &dyn WriteTx| {
            let seq = tx.next_seq()?;
            tx.set_meta("probe", &seq.to_string())
        });
        let _ = done_tx.send(r.is_ok());
    });
    let committed = done.recv_timeout(Duration::from_secs(10));
    release.send(()).expect("release a");
    held.join().expect("a");
    other.join().expect("b");
    assert_eq!(committed, Ok(true), "b's write waited for a's transaction");
    assert!(read(b.as_ref(), |tx: &dyn ReadTx| tx.meta("probe")).expect("read").is_some());
}

#[test]
fn sqlite_districts_write_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kind = StoreKind::Sqlite;
    let open = |name: &str| {
        let d = DistrictId::parse(name).expect("id");
        kind.add_district(dir.path(), &d).expect("add");
        Arc::new(SqliteStore::open(&StoreKind::dir(dir.path(), Some(&d))).expect("open"))
    };
    one_districts_writer_never_waits_for_anothers(open("a"), open("b"));
}

#[test]
fn postgres_districts_write_side_by_side() {
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let kind = StoreKind::Postgres(db.clone());
    let open = |name: &str| {
        let d = DistrictId::parse(name).expect("id");
        kind.add_district(dir.path(), &d).expect("add");
        let files = StoreKind::dir(dir.path(), Some(&d));
        Arc::new(PgStore::open_in(&db, Some(&d.schema()), &files).expect("open"))
    };
    one_districts_writer_never_waits_for_anothers(open("a"), open("b"));
}
