//! Several server instances against one PostgreSQL database: any instance serves any phone, and
//! a cursor never skips a change however the instances' commits interleave (ADR 21).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::CaseId;
use gridwork_core::sync::{enrol, SyncConfig};
use gridwork_core::Store;
use gridwork_model::access::Scope;
use gridwork_sync_server::store::port::{read, write, ReadTx, WriteTx};
use gridwork_sync_server::{AdminStore, PgStore, RunningServer, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

fn instance(db: &str, dir: &std::path::Path) -> Arc<PgStore> {
    Arc::new(PgStore::open(db, dir).expect("an instance opens the shared database"))
}

/// Instance A takes a sequence number and holds its transaction open; instance B's writer waits
/// (it cannot take a number, so none can commit after a higher one is visible), and readers of
/// either instance keep seeing the last committed number until A commits.
#[test]
fn a_sequence_number_is_never_visible_before_every_lower_one_has_committed() {
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (instance(&db, dir.path()), instance(&db, dir.path()));
    let before = read(b.as_ref(), |tx: &dyn ReadTx| tx.last_seq()).expect("read");

    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let a2 = a.clone();
    let held = std::thread::spawn(move || {
        write(a2.as_ref(), |tx: &dyn WriteTx| {
            let seq = tx.next_seq()?;
            tx.set_meta("probe_a", &seq.to_string())?;
            let _ = started_tx.send(seq);
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            Ok(seq)
        })
        .expect("A commits")
    });
    let seq_a = started.recv_timeout(Duration::from_secs(30)).expect("A took a number");
    assert_eq!(seq_a, before + 1);

    let (done_tx, done) = mpsc::channel();
    let b2 = b.clone();
    let waiting = std::thread::spawn(move || {
        let seq = write(b2.as_ref(), |tx: &dyn WriteTx| {
            let seq = tx.next_seq()?;
            tx.set_meta("probe_b", &seq.to_string())?;
            Ok(seq)
        })
        .expect("B commits");
        let _ = done_tx.send(seq);
        seq
    });
    std::thread::sleep(Duration::from_millis(400));
    assert!(done.try_recv().is_err(), "B committed while A held a lower number uncommitted");
    for store in [&a, &b] {
        let seen = read(store.as_ref(), |tx: &dyn ReadTx| tx.last_seq()).expect("read");
        assert_eq!(seen, before, "a reader saw a number whose predecessor had not committed");
    }
    release.send(()).expect("release A");
    let seq_a = held.join().expect("A");
    let seq_b = waiting.join().expect("B");
    assert_eq!(seq_b, seq_a + 1, "B's number follows A's, in commit order");
    assert_eq!(read(a.as_ref(), |tx: &dyn ReadTx| tx.last_seq()).expect("read"), seq_b);
}

struct Phone {
    _dir: tempfile::TempDir,
    store: Store,
    config: SyncConfig,
}

fn phone(admin: &dyn AdminStore, url: &str, user: &str) -> Phone {
    let (_, code) = admin.enrol_device(user, 0).expect("enrol");
    let e = enrol(url, &code, None, "0.1.0").expect("redeem");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_device(dir.path(), identity_from_enrolment(&e), &district(4), None).expect("device");
    Phone { _dir: dir, store, config: SyncConfig::new(url, e.token) }
}

/// Workers push concurrently through two instances, each sync to whichever instance it likes,
/// while a supervisor pulls again and again through both: at the end it holds every case, and
/// both instances agree on every case's heads.
#[test]
fn phones_sync_through_any_instance_while_commits_interleave_and_nothing_is_skipped() {
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (instance(&db, dir.path()), instance(&db, dir.path()));
    a.import_catalog(&district(4)).expect("catalog");
    for w in 0..4 {
        a.set_user(&format!("w{w}"), Role::Worker, None, &[Scope::Grid(format!("g{w}").as_str().into())])
            .expect("worker");
    }
    a.set_user("s1", Role::Supervisor, None, &[Scope::Community("Community 0".into())]).expect("s1");
    let start = |s: &Arc<PgStore>| -> RunningServer {
        gridwork_sync_server::start(s.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
            .expect("server")
    };
    let (server_a, server_b) = (start(&a), start(&b));
    let urls = [server_a.url(), server_b.url()];
    // b's catalog came from the database when it opened, before the import: it follows.
    let mut supervisor = phone(b.as_ref(), &urls[1], "s1");

    let (done_tx, done_rx) = mpsc::channel::<Vec<CaseId>>();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut p = phone(a.as_ref(), &urls[w % 2], &format!("w{w}"));
            let (urls, done) = (urls.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let catalog = district(4);
                let mut rng = Rng::new(w as u64 + 100);
                let mut mine = vec![];
                for round in 0..6 {
                    for _ in 0..3 {
                        mine.push(p.store.capture_case(random_case(&mut rng, &catalog, w, 0)).expect("capture").id);
                    }
                    p.config.server = urls[(w + round) % 2].clone();
                    p.store.sync(&p.config, &mut |_| {}).expect("worker sync");
                }
                let _ = done.send(mine);
            })
        })
        .collect();
    drop(done_tx);
    // The supervisor pulls all along, alternating instances.
    let mut pulls = 0;
    let mut finished = 0;
    let mut all: Vec<CaseId> = vec![];
    while finished < 4 {
        supervisor.config.server = urls[pulls % 2].clone();
        supervisor.store.sync(&supervisor.config, &mut |_| {}).expect("supervisor sync");
        pulls += 1;
        while let Ok(mine) = done_rx.try_recv() {
            all.extend(mine);
            finished += 1;
        }
    }
    for w in workers {
        w.join().expect("worker");
    }
    // One more pull from each instance: everything committed is now below the cursor.
    for url in &urls {
        supervisor.config.server = url.clone();
        supervisor.store.sync(&supervisor.config, &mut |_| {}).expect("final pull");
    }
    all.sort();
    let mut held = supervisor.store.document_ids().expect("ids");
    held.sort();
    assert_eq!(all.len(), 4 * 6 * 3);
    assert_eq!(held, all, "the supervisor's cursor skipped a change ({pulls} pulls during the pushes)");
    for case in all.iter().take(10) {
        let id = case.to_string();
        assert_eq!(a.doc_heads(&id).expect("a"), b.doc_heads(&id).expect("b"), "the instances agree");
    }
    assert!(pulls > 2, "the supervisor pulled while the workers pushed ({pulls})");
}

/// A PostgreSQL store backed up while serving and restored into a new database gets a new
/// epoch, and a phone's next sync brings back what the server received after the backup.
#[test]
fn a_restored_postgres_store_gets_back_from_the_phones_what_came_after_the_backup() {
    use gridwork_sync_server::store::postgres::backup;
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let (dir, backups) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let store = instance(&db, dir.path());
    store.import_catalog(&district(4)).expect("catalog");
    store.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w1");
    let server = gridwork_sync_server::start(store.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
        .expect("server");
    let mut w1 = phone(store.as_ref(), &server.url(), "w1");
    let catalog = district(4);
    let mut rng = Rng::new(7);
    let mut capture = |p: &Phone, n: usize| {
        for _ in 0..n {
            p.store.capture_case(random_case(&mut rng, &catalog, 0, 0)).expect("capture");
        }
    };
    capture(&w1, 3);
    w1.store.sync(&w1.config, &mut |_| {}).expect("sync");
    let dest = backups.path().join("b1");
    let m = backup::backup(&db, None, dir.path(), &dest).expect("backup while serving");
    assert!(m.last_seq > 0);
    assert!(backup::backup(&db, None, dir.path(), &dest).is_err(), "never into a non-empty directory");
    capture(&w1, 2);
    w1.store.sync(&w1.config, &mut |_| {}).expect("sync after the backup");
    drop(server);

    // Restoring over a database that holds a store is refused; into a new one it works.
    let restored_dir = tempfile::tempdir().expect("tempdir");
    assert!(backup::restore(&dest, &db, None, restored_dir.path()).is_err(), "nothing is overwritten");
    let db2 = gridwork_tests::pg::fresh_database().expect("a second database");
    let r = backup::restore(&dest, &db2, None, restored_dir.path()).expect("restore");
    assert_ne!(r.new_epoch, m.epoch);
    let restored = instance(&db2, restored_dir.path());
    assert_eq!(restored.counts().expect("counts").1, 3, "the backup's moment");
    let server = gridwork_sync_server::start(restored.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("a"))
        .expect("server");
    w1.config.server = server.url();
    let report = w1.store.sync(&w1.config, &mut |_| {}).expect("sync to the restored server");
    assert!(report.reoffered > 0, "{report:?}");
    assert_eq!(restored.counts().expect("counts").1, 5, "the phone brought back what came after the backup");
}

/// A phone enrolled with two addresses of the server keeps syncing when the first instance is
/// gone: the sync goes on with the next address, and nothing is lost or sent twice.
#[test]
fn a_phone_fails_over_to_the_next_address_when_its_instance_is_gone() {
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (instance(&db, dir.path()), instance(&db, dir.path()));
    a.import_catalog(&district(4)).expect("catalog");
    a.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("w1");
    let start = |s: &Arc<PgStore>| {
        gridwork_sync_server::start(s.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
            .expect("server")
    };
    let (server_a, server_b) = (start(&a), start(&b));
    // The enrolment code names both instances; the phone keeps both.
    let (_, code) = a.enrol_device("w1", 0).expect("enrol");
    let uri = gridwork_model::wire::EnrolmentCode {
        server: server_a.url(),
        code,
        ca_fingerprint: None,
        alternates: vec![server_b.url()],
    }
    .to_uri();
    let parsed = gridwork_model::wire::EnrolmentCode::parse(&uri).expect("the code parses");
    let e = enrol(&parsed.server, &parsed.code, None, "0.1.0").expect("redeem");
    let dir_phone = tempfile::tempdir().expect("tempdir");
    let store = open_device(dir_phone.path(), identity_from_enrolment(&e), &district(4), None).expect("device");
    let mut config = SyncConfig::new(parsed.server.clone(), e.token);
    config.alternates = parsed.alternates.clone();
    config.max_attempts = 1;
    let catalog = district(4);
    let mut rng = Rng::new(3);
    for _ in 0..3 {
        store.capture_case(random_case(&mut rng, &catalog, 0, 0)).expect("capture");
    }
    store.sync(&config, &mut |_| {}).expect("first sync, through instance a");
    drop(server_a);
    for _ in 0..2 {
        store.capture_case(random_case(&mut rng, &catalog, 0, 0)).expect("capture");
    }
    let report = store.sync(&config, &mut |_| {}).expect("the sync goes on with instance b");
    assert_eq!(report.accepted, 2, "{report:?}");
    assert_eq!(store.outbox_len().expect("outbox"), 0);
    assert_eq!(b.counts().expect("counts").1, 5, "every case once");
    // Without the other address the same phone cannot sync.
    config.alternates.clear();
    assert!(store.sync(&config, &mut |_| {}).is_err(), "the first instance is gone");
    drop(server_b);
}

/// The store reaches PostgreSQL over TLS when its URL names the CA of the database's
/// certificate, verifying both the CA and the host name; a URL asking for TLS without a CA, a
/// certificate from another CA, and a host name the certificate does not name are refused.
#[test]
fn the_store_reaches_postgresql_over_verified_tls_only() {
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let ca = gridwork_tests::pg::tls_ca().expect("the test server's CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_url = format!("{db}?sslrootcert={}", ca.display());
    let store = PgStore::open(&tls_url, dir.path()).expect("over TLS");
    assert!(store.connection_encrypted().expect("pg_stat_ssl"), "the database sees an encrypted connection");
    store.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("a write over TLS");
    let plain = PgStore::open(&db, dir.path()).expect("plain");
    assert!(!plain.connection_encrypted().expect("pg_stat_ssl"), "no CA, no TLS: the check can tell");

    let refused = |url: &str| match PgStore::open(url, dir.path()) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    };
    let e = refused(&format!("{db}?sslmode=verify-full"));
    assert!(e.contains("sslrootcert"), "{e}");
    let other = tempfile::tempdir().expect("tempdir");
    let other_ca = gridwork_sync_server::tls::TlsFiles { dir: other.path().to_owned() };
    other_ca.init(&["127.0.0.1".to_owned()]).expect("another CA");
    let e = refused(&format!("{db}?sslrootcert={}", other.path().join("ca.pem").display()));
    assert!(e.contains("cannot connect"), "a certificate from another CA: {e}");
    let by_name = tls_url.replace("127.0.0.1", "localhost");
    let e = refused(&by_name);
    assert!(e.contains("cannot connect"), "a host name the certificate does not name: {e}");
}

/// What a write transaction keeps back to send together (ADR 21, `batched.rs`) is seen by every
/// later statement of the transaction, whether answered from what it wrote or from the table.
#[test]
fn writes_kept_back_in_a_transaction_are_seen_by_its_later_reads() {
    use gridwork_sync_server::store::port::StoredChange;
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = instance(&db, dir.path());
    let seq = write(store.as_ref(), |tx: &dyn WriteTx| {
        tx.prefetch(&["h1"], &["doc-1"])?;
        let seq = tx.next_seq()?;
        let change = StoredChange { seq, hash: "h1", doc_id: "doc-1", device_id: "dev", received_ms: 0, bytes: b"x" };
        tx.store_change(&change)?;
        tx.join_scopes("doc-1", &["grid:g0"], seq, "reported")?;
        // Answered from what the transaction wrote of a document the database held nothing of.
        assert_eq!(tx.case_creator("doc-1")?.as_deref(), Some("dev"));
        assert_eq!(tx.memberships("doc-1")?, vec![("grid:g0".to_owned(), seq)]);
        assert_eq!(tx.whereabouts("h1")?.applied, Some(("dev".to_owned(), "doc-1".to_owned())));
        // Answered by the tables, which must hold them by now.
        assert_eq!(tx.counts()?.0, 1, "a read of the table sees the change kept back");
        assert_eq!(tx.docs_in_scope("grid:g0")?, vec!["doc-1".to_owned()]);
        assert_eq!(tx.history_upto("doc-1", i64::MAX)?.len(), 1);
        Ok(seq)
    })
    .expect("write");
    let after = read(store.as_ref(), |tx: &dyn ReadTx| Ok((tx.memberships("doc-1")?, tx.last_seq()?))).expect("read");
    assert_eq!(after, (vec![("grid:g0".to_owned(), seq)], seq), "committed with the transaction");
}

/// A device's sightings wait with a push's rows (ADR 21) and are written in the order they were
/// noted: "seen at" sets the time, "seen at least" never moves it back. Records waiting are in
/// the table for the transaction's next read.
#[test]
fn sightings_and_records_kept_back_keep_their_order() {
    use gridwork_sync_server::store::port::NewRecord;
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = instance(&db, dir.path());
    store.set_user("w1", Role::Worker, None, &[]).expect("user");
    store.enrol_device("w1", 0).expect("device");
    let id = store.list_devices(0).expect("devices")[0].id.clone();
    write(store.as_ref(), |tx: &dyn WriteTx| {
        tx.device_seen(&id, 2_000, "{}")?;
        tx.device_seen_at_least(&id, 1_000, "{}")?;
        let record = NewRecord { id: "r1", device_id: &id, received_ms: 2_000, body: "{}", check_in: None };
        tx.store_records(&[record])?;
        assert_eq!(tx.counts()?.2, 1, "a read of the table sees the record kept back");
        tx.device_seen_at_least(&id, 3_000, r#"{"n":1}"#)?;
        tx.device_seen(&id, 2_500, r#"{"n":2}"#)?;
        Ok(())
    })
    .expect("write");
    let seen = &store.list_devices(10_000).expect("devices")[0];
    assert_eq!(seen.last_seen_ms, Some(2_500), "the later sighting, which sets the time, wins");
    assert_eq!(seen.last_state, Some(serde_json::json!({"n": 2})));
}

/// A city on PostgreSQL: the city centre's backup holds the `public` schema only, and a
/// district's backup that district's schema only; each restores on its own (ADR 22).
#[test]
fn a_city_is_backed_up_one_store_at_a_time() {
    use gridwork_sync_server::city::{DistrictId, StoreKind};
    use gridwork_sync_server::store::postgres::backup;
    let db = gridwork_tests::pg::fresh_database().expect("a PostgreSQL database");
    let dir = tempfile::tempdir().expect("tempdir");
    let kind = StoreKind::Postgres(db.clone());
    let a = DistrictId::parse("a").expect("id");
    kind.add_district(dir.path(), &a).expect("district");
    kind.open(dir.path(), None).expect("centre").admin.set_user("mayor", Role::Administrator, None, &[]).expect("user");
    kind.open(dir.path(), Some(&a)).expect("a").admin.set_user("w1", Role::Worker, None, &[]).expect("user");
    let backups = tempfile::tempdir().expect("tempdir");
    let centre = backups.path().join("centre");
    backup::backup(&db, None, dir.path(), &centre).expect("centre's backup");
    let district = backups.path().join("a");
    backup::backup(&db, Some(&a.schema()), &StoreKind::dir(dir.path(), Some(&a)), &district).expect("a's backup");

    let db2 = gridwork_tests::pg::fresh_database().expect("a second database");
    let restored = tempfile::tempdir().expect("tempdir");
    backup::restore(&centre, &db2, None, restored.path()).expect("centre restored");
    assert_eq!(PgStore::schemas(&db2, "district_").expect("schemas"), Vec::<String>::new(), "no district came with it");
    backup::restore(&district, &db2, Some(&a.schema()), &StoreKind::dir(restored.path(), Some(&a)))
        .expect("a restored");
    let kind2 = StoreKind::Postgres(db2.clone());
    assert_eq!(kind2.districts(restored.path()).expect("districts"), vec![a.clone()]);
    let users = |k: &StoreKind, d: Option<&DistrictId>, user: &str| {
        k.open(restored.path(), d).expect("open").admin.enrol_device(user, 0).is_ok()
    };
    assert!(users(&kind2, None, "mayor") && !users(&kind2, None, "w1"), "the centre's people only");
    assert!(users(&kind2, Some(&a), "w1") && !users(&kind2, Some(&a), "mayor"), "a's people only");
}
