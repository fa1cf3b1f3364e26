//! `gridwork-verify` as an investigator runs it: a bundle of a case a phone signed verifies
//! (exit 0, the timeline printed); one changed byte fails (exit 1, saying where); a file that is
//! not there is exit 2. The server's own exports are checked in tests/tests/bundle.rs.

use std::process::Command;
use std::sync::Arc;

use gridwork_core::model::bundle::{write, Bundle, BundleCase, BundleChange, BundleDevice, BundleLink, BUNDLE_FORMAT};
use gridwork_core::model::catalog::{Catalog, Category, Grid, Role};
use gridwork_core::model::geo::{Location, Polygon};
use gridwork_core::model::ids::{DeviceId, UserId};
use gridwork_core::model::signing::{encode_b64, LinkKind};
use gridwork_core::signing::DeviceKey;
use gridwork_core::store::NewCase;
use gridwork_core::{Identity, OpenOptions, Store};

const EXE: &str = env!("CARGO_BIN_EXE_gridwork-verify");

/// A bundle of one case reported on a phone with a signing key: its one change and link.
fn bundle_of_a_signed_case(dir: &std::path::Path) -> Vec<u8> {
    let key = Arc::new(DeviceKey::generate().expect("key"));
    let identity = Identity {
        user: UserId::from("w1"),
        role: Role::Worker,
        device: DeviceId::from("dev-w1"),
        device_code: "W1".into(),
        department: None,
        signing_key: Some(key.clone()),
    };
    let store = Store::open(OpenOptions::new(dir, &[7; 32], identity)).expect("store");
    let ring = vec![(31.2, 121.4), (31.2, 121.41), (31.21, 121.41), (31.21, 121.4)];
    store
        .import_catalog(&Catalog {
            version: 1,
            grids: vec![Grid {
                id: "g1".into(),
                name: "Grid 1".into(),
                community: "C".into(),
                street: "S".into(),
                boundary: Polygon { ring },
                points: vec![],
            }],
            categories: vec![Category {
                id: "hazard".into(),
                names: Default::default(),
                default_deadline_hours: 24,
                retired: false,
            }],
            departments: vec![],
        })
        .expect("catalog");
    let case = store
        .capture_case(NewCase {
            title: "楼道堆物".into(),
            description: "Bikes charging in the stairwell".into(),
            category: "hazard".into(),
            grid: "g1".into(),
            location: Location::gps(31.205, 121.405, 5.0, 0),
            photos: vec![],
        })
        .expect("capture");
    let item = store.outbox_page(usize::MAX).expect("outbox").remove(0);
    let link = item.link.clone().expect("signed");
    let bundle = Bundle {
        format: BUNDLE_FORMAT.into(),
        case: BundleCase {
            id: case.id.to_string(),
            code: case.code.clone(),
            exported_ms: 0,
            exported_by: "test".into(),
        },
        devices: [(
            "dev-w1".to_owned(),
            BundleDevice { user: "w1".into(), code: "W1".into(), public_key: Some(key.public_key_b64()) },
        )]
        .into(),
        changes: vec![BundleChange {
            hash: item.key.clone(),
            device: "dev-w1".into(),
            bytes: encode_b64(&item.bytes),
            link: Some(link.clone()),
        }],
        chains: [(
            "dev-w1".to_owned(),
            vec![BundleLink {
                seq: link.seq,
                prev: link.prev.clone(),
                sig: link.sig.clone(),
                kind: LinkKind::Change,
                key: item.key.clone(),
                sha256: gridwork_core::model::signing::sha256_hex(&item.bytes),
                flag: None,
            }],
        )]
        .into(),
        photos: vec![],
    };
    write(&bundle).expect("bundle")
}

#[test]
fn a_signed_case_verifies_a_changed_byte_fails_saying_where_and_no_file_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = bundle_of_a_signed_case(&dir.path().join("phone"));
    let path = dir.path().join("case.gridwork-bundle");
    std::fs::write(&path, &bytes).expect("write");
    let ok = Command::new(EXE).arg(&path).output().expect("runs");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(
        out.contains("VERIFIED") && out.contains("report") && out.contains("w1 (worker) on device dev-w1"),
        "{out}"
    );

    // One byte inside the change's bytes.
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let at = text.find("\"bytes\": \"").expect("bytes") + 30;
    let mut bad = bytes.clone();
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, &bad).expect("write");
    let fails = Command::new(EXE).arg(&path).output().expect("runs");
    let out = String::from_utf8_lossy(&fails.stdout);
    assert_eq!(fails.status.code(), Some(1), "{out}");
    assert!(out.contains("NOT VERIFIED") && out.contains("changes[0]"), "{out}");

    let missing = Command::new(EXE).arg(dir.path().join("nothing-here")).output().expect("runs");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    let usage = Command::new(EXE).output().expect("runs");
    assert_eq!(usage.status.code(), Some(2));
}
