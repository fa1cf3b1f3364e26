//! TLS with the district's own CA, pinned by the fingerprint the enrolment code carries.

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::sync::Arc;

use gridwork_core::model::catalog::Role;
use gridwork_core::model::wire::EnrolmentCode;
use gridwork_core::sync::{enrol, SyncConfig};
use gridwork_core::CoreError;
use gridwork_sync_server::tls::TlsFiles;
use gridwork_sync_server::{SqliteStore, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

fn server(dir: &std::path::Path) -> (Arc<SqliteStore>, String) {
    let store = Arc::new(SqliteStore::open(dir).expect("store"));
    store.import_catalog(&district(2)).expect("catalog");
    store.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).expect("user");
    let fp = TlsFiles::in_data_dir(dir).init(&["127.0.0.1".into(), "localhost".into()]).expect("init-tls");
    (store, fp)
}

#[test]
fn a_phone_enrols_and_syncs_over_tls_trusting_only_the_pinned_district_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, fp) = server(dir.path());
    let files = TlsFiles::in_data_dir(dir.path());
    let config = files.server_config().expect("server config");
    let running = gridwork_sync_server::start_with(
        store.clone() as Arc<dyn SyncStore>,
        "127.0.0.1:0".parse().expect("addr"),
        Some(config),
    )
    .expect("serve TLS");
    let url = running.url();
    assert!(url.starts_with("https://"), "{url}");

    // Another district's CA: same server name, different fingerprint. Refused, typed, not retried.
    let other = tempfile::tempdir().expect("tempdir");
    let other_fp = TlsFiles::in_data_dir(other.path()).init(&["127.0.0.1".into()]).expect("other CA");
    let (_, code) = store.enrol_device("w1", 0).expect("code");
    match enrol(&url, &code, Some(&other_fp), "0.1.0") {
        Err(CoreError::UntrustedServer { .. }) => {}
        other => panic!("a server outside the pinned CA must be refused, got {other:?}"),
    }
    // HTTPS with no pin, and plain HTTP to another machine, are refused before any connection.
    assert!(matches!(enrol(&url, &code, None, "0.1.0"), Err(CoreError::InvalidConfig { .. })));
    assert!(matches!(enrol("http://10.0.0.1:8080", &code, None, "0.1.0"), Err(CoreError::InvalidConfig { .. })));

    // The code was not spent by the refused attempts; the right pin works, from the scanned text.
    let scanned =
        EnrolmentCode { server: url.clone(), code, ca_fingerprint: Some(fp.clone()), alternates: vec![] }.to_uri();
    let parsed = EnrolmentCode::parse(&scanned).expect("parse");
    let e = enrol(&parsed.server, &parsed.code, parsed.ca_fingerprint.as_deref(), "0.1.0").expect("enrol over TLS");
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let phone = open_device(phone_dir.path(), identity_from_enrolment(&e), &district(2), None).expect("phone");
    let mut rng = Rng::new(7);
    phone.capture_case(random_case(&mut rng, &district(2), 0, 0)).expect("capture");
    let mut cfg = SyncConfig::new(url, e.token.clone());
    cfg.ca_fingerprint = Some(fp.clone());
    let report = phone.sync(&cfg, &mut |_| {}).expect("sync over TLS");
    assert_eq!((report.pushed, report.accepted), (1, 1));
    drop(running);

    // Renewing the server certificate keeps the CA: the phone's pin still holds.
    let fp_again = files.init(&["127.0.0.1".into()]).expect("renew");
    assert_eq!(fp_again, fp);
    let running = gridwork_sync_server::start_with(
        store as Arc<dyn SyncStore>,
        "127.0.0.1:0".parse().expect("addr"),
        Some(files.server_config().expect("renewed config")),
    )
    .expect("serve renewed");
    cfg.server = running.url();
    phone.capture_case(random_case(&mut rng, &district(2), 0, 0)).expect("capture");
    let report = phone.sync(&cfg, &mut |_| {}).expect("sync after renewal");
    assert_eq!((report.pushed, report.accepted), (1, 1));
}

#[test]
fn plain_http_is_served_on_loopback_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let err = gridwork_sync_server::start(store as Arc<dyn SyncStore>, "0.0.0.0:0".parse().expect("addr"))
        .expect_err("plain HTTP on every interface must be refused");
    assert!(err.to_string().contains("init-tls"), "{err}");
}
