//! Wiping a lost phone (docs/SECURITY.md, "Wiping a lost phone"; ADR 26), with real stores on
//! both server stores: the phone's unsynced work — cases, a check-in, a photo held back by the
//! app's photo budget — all reaches the server before the phone destroys anything; afterwards
//! the store cannot be opened, no file of it is left, its wrapped key cannot be unwrapped, and
//! its token is refused. The server confirms only when every place of the phone's chain is
//! held and the phone reported nothing left; a phone past its offline limit asks the server
//! before it opens.

#[macro_use]
mod common;

use std::path::Path;
use std::sync::Arc;

use common::District;
use gridwork_core::clock::FixedClock;
use gridwork_core::store::{CaseQuery, CheckInInput, OpenOptions, TOMBSTONE_FILE};
use gridwork_core::sync::{device_status, enrol, report_wiped, SyncConfig};
use gridwork_core::vault::{KeyVault, SoftwareVault, WRAPPED_KEY_FILE};
use gridwork_core::{CoreError, Identity, Store};
use gridwork_tests::{district, identity_from_enrolment};

const VAULT_KEY: [u8; 32] = [42; 32];

/// A phone whose store key its (software) keystore vault keeps, as the apps open theirs.
struct VaultPhone {
    dir: tempfile::TempDir,
    identity: Identity,
    vault: Arc<SoftwareVault>,
    store: Option<Store>,
    config: SyncConfig,
    device: String,
}

impl VaultPhone {
    fn enrol(d: &District, user: &str) -> VaultPhone {
        let (_, code) = d.store.enrol_device(user, 0).expect("enrol");
        let e = enrol(&d.url(), &code, None, "0.1.0").expect("redeem code");
        let identity = identity_from_enrolment(&e);
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Arc::new(SoftwareVault::from_key(VAULT_KEY));
        let mut p = VaultPhone {
            dir,
            identity,
            vault,
            store: None,
            config: SyncConfig::new(d.url(), e.token),
            device: e.device_id,
        };
        let store = p.open(None, None).expect("open");
        store.import_catalog(&district(4)).expect("catalogue");
        p.store = Some(store);
        p
    }

    fn open(&self, clock: Option<Arc<FixedClock>>, checked_in_ms: Option<i64>) -> Result<Store, CoreError> {
        let mut options = OpenOptions::with_vault(self.dir.path(), self.vault.clone(), self.identity.clone())?;
        if let Some(c) = clock {
            options.clock = c;
        }
        options.offline_limit = Some(std::time::Duration::from_secs(14 * 86_400));
        options.checked_in_ms = checked_in_ms;
        Store::open(options)
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open store")
    }
}

fn status_of(d: &District, device: &str) -> String {
    d.store.list_devices(0).expect("devices").into_iter().find(|i| i.id == device).expect("listed").status
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).expect("inside").display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn a_wipe_with_unsynced_work_loses_nothing_then_leaves_nothing_readable(d: District) {
    let mut w1 = VaultPhone::enrol(&d, "w1");
    let mut s1 = common::phone(&d, "s1", None);
    capture_on(w1.store(), 2, 1);
    w1.config.server = d.url();
    w1.store().sync(&w1.config, &mut |_| {}).expect("first sync");
    assert!(w1.dir.path().join(WRAPPED_KEY_FILE).exists(), "the store key is kept wrapped beside the store");

    // Unsynced work: two cases (one with a photo) and a patrol with a check-in, and an app that
    // keeps photos for later (a budget of none).
    let unsynced = capture_on(w1.store(), 2, 2);
    let photo = gridwork_core::evidence::synthetic::camera_like_jpeg(
        640,
        480,
        &gridwork_core::evidence::synthetic::ExifSpec::default(),
        3,
    );
    w1.store().attach_photo(&unsynced[0], &photo).expect("photo");
    let patrol = w1.store().start_patrol(&"g0".into()).expect("patrol");
    let location = w1.store().get_case(&unsynced[1]).expect("case").case.location.value.clone();
    w1.store()
        .check_in(CheckInInput { patrol, point: None, location, note: "楼道".into(), photo: None })
        .expect("check-in");
    w1.config.photo_budget_bytes = Some(0);
    assert!(w1.store().outbox_len().expect("outbox") > 0);
    let (changes_before, docs_before, records_before) = d.store.counts().expect("counts");
    let blobs_before = d.store.blob_count().expect("blobs");
    let wrapped_before = std::fs::read(w1.dir.path().join(WRAPPED_KEY_FILE)).expect("wrapped key");

    // The order, from the console as from the command line.
    d.store.wipe_device(&w1.device, 0).expect("wipe ordered");
    assert_eq!(status_of(&d, &w1.device), "wipe_ordered");
    let report = w1.store().sync(&w1.config, &mut |_| {}).expect("the wiping sync");
    assert!(report.refused.is_empty() && report.quarantined.is_empty(), "{report:?}");
    assert!(report.wipe_ordered, "{report:?}");
    let shred = report.wiped.clone().expect("wiped after the server confirmed");
    assert!(shred.vault_key_destroyed && shred.files_removed >= 4, "{shred:?}");
    assert!(report.wipe_reported, "{report:?}");
    assert_eq!(report.photos_uploaded, 2, "the held-back photo and its thumbnail went first: {report:?}");

    // Everything reached the server: the two cases, the patrol and its check-in, the photo.
    let (changes, docs, records) = d.store.counts().expect("counts");
    assert_eq!(docs, docs_before + 2, "both unsynced cases");
    assert!(changes > changes_before + 2, "their changes, the photo's included");
    assert_eq!(records, records_before + 2, "the patrol and its check-in");
    assert_eq!(d.store.blob_count().expect("blobs"), blobs_before + 2);
    s1.sync(&d.url()).expect("s1 syncs");
    for case in &unsynced {
        s1.store.get_case(case).expect("the supervisor sees the wiped phone's unsynced case");
    }
    assert_eq!(status_of(&d, &w1.device), "wiped");

    // Nothing left: only the tombstone; the store does not open, the old handle reads nothing,
    // the wrapped key (as flash might keep it) does not unwrap, and the token is refused.
    assert_eq!(files_in(w1.dir.path()), vec![TOMBSTONE_FILE.to_owned()]);
    assert!(w1.store().list_cases(&CaseQuery { limit: 10, ..Default::default() }).is_err());
    let e = w1.open(None, None).expect_err("a wiped store does not open");
    assert!(matches!(e, CoreError::Wiped { reported: true, .. }), "{e}");
    let e =
        Store::open(OpenOptions::new(w1.dir.path(), &[1; 32], w1.identity.clone())).expect_err("nor with a raw key");
    assert!(matches!(e, CoreError::Wiped { .. }), "{e}");
    assert_eq!(files_in(w1.dir.path()), vec![TOMBSTONE_FILE.to_owned()], "opening made nothing");
    assert!(w1.vault.unwrap(&wrapped_before).is_err(), "the vault's key is gone");
    let e = w1.store().sync(&w1.config, &mut |_| {}).expect_err("the old handle syncs nothing");
    assert!(matches!(e, CoreError::Wiped { .. }), "{e}");
    let e = device_status(&w1.config).expect_err("the token is dead");
    assert!(matches!(&e, CoreError::Server { code, .. } if code == "device_wiped"), "{e}");
    // A report repeated (its first answer lost) is fine.
    report_wiped(w1.dir.path(), &w1.config).expect("idempotent");
    w1.store = None;
}

fn the_server_confirms_only_when_it_holds_every_place_and_nothing_is_left(d: District) {
    let mut w1 = VaultPhone::enrol(&d, "w1");
    w1.config.server = d.url();
    capture_on(w1.store(), 0, 3);
    w1.store().sync(&w1.config, &mut |_| {}).expect("sync");
    let device = d.store.authenticate(&w1.config.token).expect("token");
    assert!(!device.wipe);
    // Before any order, a report of a wipe is refused and changes nothing.
    let e = d.store.report_wiped(&w1.config.token, 0).expect_err("not told to");
    assert_eq!(e.status_and_code().1, "not_allowed");
    d.store.wipe_device(&w1.device, 0).expect("order");
    let device = d.store.authenticate(&w1.config.token).expect("token still works until the wipe");
    assert!(device.wipe && device.retired);

    let ask = |outbox: u64, photos: u64, head: i64| {
        let mut req = gridwork_tests::sync_request(vec![], vec![], None, 1 << 20);
        req.state.outbox_items = outbox;
        req.state.photos_pending = photos;
        req.state.chain_head = head;
        d.store.sync(&device, req, 0).expect("sync")
    };
    // The phone made 3 links; the server holds 3. A report of more than it holds (a place lost
    // in transit), of something left in the outbox, of a photo pending, or of no chain at all
    // from a phone with a key: no confirmation.
    for (outbox, photos, head) in [(0, 0, 4), (1, 0, 3), (0, 1, 3), (0, 0, 0)] {
        let r = ask(outbox, photos, head);
        assert!(r.wipe && !r.wipe_now, "outbox {outbox}, photos {photos}, head {head}: {r:?}");
        assert_eq!(status_of(&d, &w1.device), "wipe_ordered");
    }
    assert!(d.store.report_wiped(&w1.config.token, 0).is_err(), "still not told to");
    let r = ask(0, 0, 3);
    assert!(r.wipe_now, "every place held, nothing left: {r:?}");
    assert!(r.docs.is_empty(), "a phone ordered wiped receives nothing");
    assert_eq!(status_of(&d, &w1.device), "wipe_confirmed");
    d.store.report_wiped(&w1.config.token, 0).expect("reported");
    assert_eq!(status_of(&d, &w1.device), "wiped");
    let e = d.store.authenticate(&w1.config.token).expect_err("refused");
    assert_eq!(e.status_and_code(), (403, "device_wiped"));
}

fn a_phone_past_its_offline_limit_asks_the_server_before_it_opens(d: District) {
    let mut w1 = VaultPhone::enrol(&d, "w1");
    w1.config.server = d.url();
    w1.store().sync(&w1.config, &mut |_| {}).expect("sync");
    w1.store = None;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as i64;
    let clock = Arc::new(FixedClock::new(now + 10 * 86_400_000));
    w1.open(Some(clock.clone()), None).expect("10 days away: opens");
    clock.set(now + 15 * 86_400_000);
    let e = w1.open(Some(clock.clone()), None).expect_err("15 days away: asks first");
    assert!(matches!(e, CoreError::CheckInRequired { offline_days: 15 }), "{e}");
    let status = device_status(&w1.config).expect("status");
    assert_eq!((status.device_id.as_str(), status.status.as_str()), (w1.device.as_str(), "active"));
    w1.open(Some(clock.clone()), Some(now + 15 * 86_400_000)).expect("opens after checking in");
    w1.open(Some(clock.clone()), None).expect("the check-in counts as contact");
    // Ordered wiped meanwhile: the status says so; the app opens and syncs, which wipes it.
    d.store.wipe_device(&w1.device, 0).expect("order");
    clock.set(now + 30 * 86_400_000);
    assert!(matches!(w1.open(Some(clock.clone()), None), Err(CoreError::CheckInRequired { .. })));
    let status = device_status(&w1.config).expect("status");
    assert_eq!(status.status, "wipe");
    let store = w1.open(Some(clock), Some(status.server_time_ms)).expect("opens to wipe");
    let report = store.sync(&w1.config, &mut |_| {}).expect("sync");
    assert!(report.wiped.is_some() && report.wipe_reported, "{report:?}");
    let e = device_status(&w1.config).expect_err("a wiped phone has no status");
    assert!(matches!(&e, CoreError::Server { code, .. } if code == "device_wiped"), "{e}");
}

fn capture_on(store: &Store, grid: usize, n: usize) -> Vec<gridwork_core::model::ids::CaseId> {
    let catalog = district(4);
    let mut rng = gridwork_tests::Rng::new(n as u64 + 90);
    (0..n)
        .map(|_| store.capture_case(gridwork_tests::random_case(&mut rng, &catalog, grid, 0)).expect("capture").id)
        .collect()
}

on_every_store!(
    a_wipe_with_unsynced_work_loses_nothing_then_leaves_nothing_readable,
    the_server_confirms_only_when_it_holds_every_place_and_nothing_is_left,
    a_phone_past_its_offline_limit_asks_the_server_before_it_opens,
);
