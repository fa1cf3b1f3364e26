//! The evidence bundle (`gridwork_model::bundle`, ADR 25): a case exported from the server
//! verifies with nothing but the file, and changing any byte of it makes it fail, saying where.
//! On both stores.

#[macro_use]
mod common;

use common::{capture, phone, District};
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::store::CaseQuery;
use gridwork_model::bundle::verify;

/// A case reported with a photo by a worker and accepted by a supervisor, each from a phone, with
/// a patrol record of the worker's between the two changes of its chain.
fn reported_and_accepted(d: &District) -> (String, Vec<u8>) {
    let mut w1 = phone(d, "w1", None);
    let mut s1 = phone(d, "s1", None);
    let case = capture(&w1, 0, 1, 21)[0];
    w1.store.start_patrol(&"g0".into()).expect("patrol");
    let photo = gridwork_core::evidence::synthetic::camera_like_jpeg(
        640,
        480,
        &gridwork_core::evidence::synthetic::ExifSpec::default(),
        7,
    );
    w1.store.attach_photo(&case, &photo).expect("photo");
    let report = w1.sync(&d.url()).expect("w1 syncs");
    assert_eq!(report.photos_uploaded, 2, "the photo and its thumbnail: {report:?}");
    s1.sync(&d.url()).expect("s1 syncs");
    let listed = s1.store.list_cases(&CaseQuery { limit: 10, ..Default::default() }).expect("list");
    assert_eq!(listed.items.len(), 1);
    s1.store.record_event(&case, EventKind::Accept { note: "受理".into() }).expect("accept");
    s1.sync(&d.url()).expect("s1 sends");
    let bundle = d.store.export_case(&case.to_string(), "admin", 0).expect("export");
    (case.to_string(), bundle)
}

fn an_exported_case_verifies_and_any_changed_byte_fails_saying_where(d: District) {
    let (_, bundle) = reported_and_accepted(&d);
    let report = verify(&bundle);
    assert!(report.verified(), "{:?}", report.problems);
    assert!(report.notes.iter().all(|n| !n.contains("fork")), "{:?}", report.notes);
    let kinds: Vec<&str> = report.timeline.iter().map(|l| l.split_whitespace().nth(2).unwrap_or("")).collect();
    assert_eq!(kinds, ["report", "accept"], "{:?}", report.timeline);
    assert!(report.timeline.iter().all(|l| l.ends_with("[verified]")), "{:?}", report.timeline);
    assert!(report.timeline[0].contains("w1 (worker)") && report.timeline[1].contains("s1 (supervisor)"));
    assert_eq!(report.photos.len(), 2, "{:?}", report.photos);

    // Where a change lands, the verifier must say where. Targets by what they are, then a byte
    // every few hundred across the whole file.
    let text = String::from_utf8(bundle.clone()).expect("utf-8");
    let at = |needle: &str, skip: usize| text.find(needle).map(|i| i + needle.len() + skip).expect(needle);
    let targeted = [
        (at("\"bytes\": \"", 40), "changes[0]"),
        (at("\"sig\": \"", 10), "signature"),
        (at("\"public_key\": \"", 5), "signature"),
        (at("\"exported_by\": \"", 0), "case"),
        (at("\"user\": \"", 0), "devices"),
        (text.rfind("\"bytes\": \"").map(|i| i + 10 + 100).expect("a photo"), "photos["),
        (text.find("\n  ").map(|i| i + 1).expect("indentation"), "line"),
        (text.rfind("gridwork-bundle-digest").map(|i| i + 40).expect("digest"), "changed after export"),
    ];
    for (pos, says) in targeted {
        let mut bad = bundle.clone();
        bad[pos] = if bad[pos] == b'A' {
            b'B'
        } else if bad[pos] == b' ' {
            b'\t'
        } else {
            b'A'
        };
        let r = verify(&bad);
        assert!(!r.verified(), "byte {pos} changed and the bundle still verifies");
        assert!(r.problems.iter().any(|p| p.contains(says)), "byte {pos}: expected {says:?} in {:?}", r.problems);
    }
    let step = (bundle.len() / 300).max(1);
    for pos in (0..bundle.len()).step_by(step) {
        let mut bad = bundle.clone();
        bad[pos] ^= 0x01;
        let r = verify(&bad);
        assert!(!r.verified(), "byte {pos} of {} changed and the bundle still verifies", bundle.len());
        assert!(!r.problems.is_empty());
    }
}

fn the_console_hands_the_bundle_to_whoever_sees_the_case_only(d: District) {
    use gridwork_core::model::access::Scope;
    use gridwork_core::model::catalog::Role;
    use gridwork_sync_server::store::ConsoleStore;
    let (case, _) = reported_and_accepted(&d);
    d.store.set_user("s2", Role::Supervisor, None, &[Scope::Community("Community 9".into())]).expect("s2");
    let console: &dyn ConsoleStore = d.store.as_ref();
    for u in ["s1", "s2"] {
        console.set_password(u, "correct horse battery", 0).expect("password");
    }
    let base = d.url();
    let mut s1 = gridwork_tests::console_client::ConsoleClient::new().expect("client");
    assert!(s1.sign_in(&base, "s1", "correct horse battery").expect("sign in"));
    let page = s1.get(&format!("{base}/console/cases/{case}")).expect("case page");
    assert!(page.body.contains(&format!("/console/cases/{case}/bundle")), "the case page offers the bundle");
    let resp = s1.get_raw(&format!("{base}/console/cases/{case}/bundle")).expect("bundle");
    assert_eq!(resp.status().as_u16(), 200);
    let disposition = resp.headers().get("content-disposition").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(disposition.contains(".gridwork-bundle"), "{disposition}");
    let bytes = resp.bytes().expect("body");
    let report = verify(&bytes);
    assert!(report.verified(), "{:?}", report.problems);
    // A supervisor of another community gets what a case that does not exist gets.
    let mut s2 = gridwork_tests::console_client::ConsoleClient::new().expect("client");
    assert!(s2.sign_in(&base, "s2", "correct horse battery").expect("sign in"));
    let other = s2.get_raw(&format!("{base}/console/cases/{case}/bundle")).expect("bundle");
    assert_eq!(other.status().as_u16(), 404);
}

fn a_case_nobody_has_cannot_be_exported(d: District) {
    let err = d.store.export_case("0190b7c4-0000-7000-8000-000000000000", "admin", 0);
    assert!(err.is_err(), "an unknown case is an error, not an empty bundle");
}

on_every_store!(
    an_exported_case_verifies_and_any_changed_byte_fails_saying_where,
    the_console_hands_the_bundle_to_whoever_sees_the_case_only,
    a_case_nobody_has_cannot_be_exported,
);
