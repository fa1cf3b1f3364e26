//! Device signatures and chains under attack (docs/SECURITY.md, "Signatures"): a forged, missing
//! or misplaced signature is refused with nothing stored; a chain with places missing is counted,
//! and filled when they arrive; a cloned phone is flagged as a fork while nothing it made is
//! lost; an app older than signing still syncs, unsigned and shown so. On both stores.

#[macro_use]
mod common;

use base64::Engine;
use common::{capture, phone, District};
use gridwork_core::model::wire::{EnrolRequest, Outcome, PushedChange, PushedRecord, SyncRequest};
use gridwork_core::signing::DeviceKey;
use gridwork_core::store::OutboxKind;
use gridwork_model::signing::{statement, Link, LinkKind};
use gridwork_sync_server::ChainState;

const B64: base64::engine::general_purpose::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn request(changes: Vec<PushedChange>, records: Vec<PushedRecord>) -> SyncRequest {
    gridwork_tests::sync_request(changes, records, None, 1 << 20)
}

fn chain_of(d: &District, device: &str) -> Option<ChainState> {
    d.store.list_devices(0).expect("devices").into_iter().find(|i| i.id == device).and_then(|i| i.chain)
}

fn as_pushed(i: &gridwork_core::store::OutboxItem, link: Option<Link>) -> PushedChange {
    PushedChange { doc: i.doc_id.clone().unwrap_or_default(), bytes: B64.encode(&i.bytes), receipt: None, link }
}

fn a_forged_or_missing_signature_is_refused_and_nothing_of_it_stored(d: District) {
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 2, 1);
    let patrol = w1.store.start_patrol(&"g0".into()).expect("patrol");
    let items = w1.store.outbox_page(usize::MAX).expect("outbox");
    let changes: Vec<_> = items.iter().filter(|i| i.kind == OutboxKind::Change).collect();
    let record = items.iter().find(|i| i.kind == OutboxKind::Record).expect("the patrol's record");
    assert_eq!(record.key, patrol.to_string());
    let (first, second) = (changes[0], changes[1]);
    let link = first.link.clone().expect("the store signed its change");
    assert_eq!((link.seq, link.prev.as_str()), (1, ""), "the first link of a new device");

    // Signed by another key; the right signature on other bytes; no signature; garbage.
    let other = DeviceKey::generate().expect("key");
    let st = statement(&w1.device, link.seq, &link.prev, LinkKind::Change, &first.key, &first.bytes);
    let by_other_key = as_pushed(first, Some(Link { sig: other.sign_b64(&st), ..link.clone() }));
    let on_other_bytes = as_pushed(second, Some(link.clone()));
    let unsigned = as_pushed(first, None);
    let garbage = as_pushed(first, Some(Link { sig: "not base64!".into(), ..link.clone() }));
    // A record whose body was changed after it was signed (the grid it names).
    let body = String::from_utf8(record.bytes.clone()).expect("json");
    assert!(body.contains("\"g0\""), "{body}");
    let tampered = PushedRecord {
        id: record.key.clone(),
        body: serde_json::value::RawValue::from_string(body.replacen("\"g0\"", "\"g1\"", 1)).expect("json"),
        link: record.link.clone(),
    };
    let device = d.store.authenticate(&w1.config.token).expect("token");
    let resp = d
        .store
        .sync(&device, request(vec![by_other_key, on_other_bytes, unsigned, garbage], vec![tampered]), 0)
        .expect("sync");
    let reasons: Vec<(Outcome, String)> =
        resp.results.iter().map(|r| (r.outcome, r.reason.clone().unwrap_or_default())).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for (i, (outcome, reason)) in reasons.iter().enumerate() {
        assert_eq!(*outcome, Outcome::Refused, "item {i}: {reasons:?}");
        let expected = if i == 2 { "unsigned" } else { "signature" };
        assert!(reason.contains(expected), "item {i} says why: {reason}");
    }
    assert_eq!(d.store.counts().expect("counts"), (0, 0, 0), "nothing of it stored");
    assert_eq!(chain_of(&d, &w1.device), Some(ChainState::default()), "no link taken");

    // The phone's own sync, signed as it made them, goes through whole.
    let report = w1.sync(&d.url()).expect("sync");
    assert!(report.refused.is_empty() && report.quarantined.is_empty(), "{report:?}");
    assert_eq!(d.store.counts().expect("counts"), (2, 2, 1));
    assert_eq!(chain_of(&d, &w1.device), Some(ChainState { links: 3, holes: 0, forks: 0 }));
}

fn places_missing_are_counted_then_filled_and_a_resend_is_not_a_fork(d: District) {
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 3, 2);
    let items = w1.store.outbox_page(usize::MAX).expect("outbox");
    let pushed: Vec<PushedChange> = items.iter().map(|i| as_pushed(i, i.link.clone())).collect();
    let places: Vec<u64> = items.iter().filter_map(|i| i.link.as_ref().map(|l| l.seq)).collect();
    assert_eq!(places, [1, 2, 3]);
    let device = d.store.authenticate(&w1.config.token).expect("token");
    // The third alone (the first two held back, say by a request's byte budget).
    let resp = d.store.sync(&device, request(vec![pushed[2].clone()], vec![]), 0).expect("sync");
    assert_eq!(resp.results[0].outcome, Outcome::Accepted, "{resp:?}");
    assert_eq!(chain_of(&d, &w1.device), Some(ChainState { links: 1, holes: 2, forks: 0 }));
    d.store.sync(&device, request(pushed[..2].to_vec(), vec![]), 0).expect("sync");
    assert_eq!(chain_of(&d, &w1.device), Some(ChainState { links: 3, holes: 0, forks: 0 }));
    // The phone never heard the answers: its sync sends all three again.
    let report = w1.sync(&d.url()).expect("sync");
    assert_eq!(report.pushed, 3);
    assert_eq!(chain_of(&d, &w1.device), Some(ChainState { links: 3, holes: 0, forks: 0 }), "a resend is no fork");
}

fn a_cloned_phone_is_flagged_as_a_fork_and_nothing_it_made_is_lost(d: District) {
    let mut w1 = phone(&d, "w1", None);
    capture(&w1, 0, 1, 3);
    w1.sync(&d.url()).expect("sync");
    // A copy of the phone's files, key and token included, opened elsewhere.
    let clone_dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(w1.store.dir()).expect("phone dir").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), clone_dir.path().join(entry.file_name())).expect("copy");
        }
    }
    let mut identity = w1.store.identity().clone();
    identity.signing_key = None; // the copy's store holds the key
    let clone = gridwork_tests::open_device(clone_dir.path(), identity, &gridwork_tests::district(4), None)
        .expect("the clone opens");
    assert_eq!(clone.signing_public_key(), w1.store.signing_public_key(), "the same key");
    capture(&w1, 0, 1, 4);
    let mut rng = gridwork_tests::Rng::new(5);
    clone.capture_case(gridwork_tests::random_case(&mut rng, &gridwork_tests::district(4), 0, 0)).expect("capture");
    w1.sync(&d.url()).expect("the phone syncs");
    let report = clone.sync(&w1.config, &mut |_| {}).expect("the clone syncs");
    assert!(report.refused.is_empty() && report.quarantined.is_empty(), "{report:?}");
    assert_eq!(d.store.counts().expect("counts").1, 3, "every case of both is on the server");
    let chain = chain_of(&d, &w1.device).expect("a signing device");
    assert_eq!((chain.links, chain.forks), (3, 1), "the clone's link at an occupied place is flagged: {chain:?}");
}

fn an_app_older_than_signing_still_syncs_unsigned_and_a_bad_key_is_refused(d: District) {
    // An enrolment that registers no key: the device's work is taken unsigned.
    let (device_id, code) = d.store.enrol_device("w1", 0).expect("enrol");
    let bad = EnrolRequest { code: code.clone(), app_version: "0.1.0".into(), public_key: Some("c2hvcnQ=".into()) };
    assert!(d.store.redeem(&bad, 0).is_err(), "a key that is not 32 bytes is refused");
    let e = d
        .store
        .redeem(&EnrolRequest { code, app_version: "0.0.9".into(), public_key: None }, 0)
        .expect("the code is still good");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = gridwork_tests::open_device(
        dir.path(),
        gridwork_tests::identity_from_enrolment(&e),
        &gridwork_tests::district(4),
        None,
    )
    .expect("store");
    assert_eq!(store.signing_public_key(), None);
    let mut rng = gridwork_tests::Rng::new(9);
    store.capture_case(gridwork_tests::random_case(&mut rng, &gridwork_tests::district(4), 0, 0)).expect("capture");
    assert!(store.outbox_page(usize::MAX).expect("outbox").iter().all(|i| i.link.is_none()));
    let config = gridwork_core::sync::SyncConfig::new(d.url(), e.token);
    let report = store.sync(&config, &mut |_| {}).expect("sync");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(d.store.counts().expect("counts").1, 1);
    assert_eq!(chain_of(&d, &device_id), None, "shown as unsigned, not as a chain");
}

on_every_store!(
    a_forged_or_missing_signature_is_refused_and_nothing_of_it_stored,
    places_missing_are_counted_then_filled_and_a_resend_is_not_a_fork,
    a_cloned_phone_is_flagged_as_a_fork_and_nothing_it_made_is_lost,
    an_app_older_than_signing_still_syncs_unsigned_and_a_bad_key_is_refused,
);
