//! What the console shows of evidence (issue 18): events made on a signing device are marked
//! verified and console actions unsigned; a fix the phone's OS marked mock is flagged on the case
//! and counted apart in patrol coverage (a point visited only with a mock fix is not covered).
//! Flagged, never refused. On both stores.

#[macro_use]
mod common;

use common::{phone, District};
use gridwork_core::model::geo::Location;
use gridwork_core::store::{CheckInInput, NewCase};
use gridwork_sync_server::store::ConsoleStore;
use gridwork_tests::console_client::ConsoleClient;

const PASSWORD: &str = "correct horse battery";

/// The `<tr>` of the first row whose opening tag contains `marker`.
fn row<'a>(body: &'a str, marker: &str) -> &'a str {
    let start = body.find(marker).unwrap_or_else(|| panic!("no {marker} in {body}"));
    let end = body[start..].find("</tr>").map_or(body.len(), |e| start + e);
    &body[start..end]
}

fn mock(lat: f64, lon: f64) -> Location {
    Location { mock: true, provider: "gps".into(), ..Location::gps(lat, lon, 4.0, 0) }
}

fn mock_fixes_are_flagged_and_signed_events_marked_verified(d: District) {
    let catalog = gridwork_tests::district(4);
    let mut w1 = phone(&d, "w1", None);
    let (lat, lon) = gridwork_tests::grid_centre(&catalog, 0);
    let case = w1
        .store
        .capture_case(NewCase {
            title: "电动车楼道充电".into(),
            description: "报告时定位为模拟".into(),
            category: catalog.categories[0].id.clone(),
            grid: catalog.grids[0].id.clone(),
            location: mock(lat, lon),
            photos: vec![],
        })
        .expect("capture");
    let patrol = w1.store.start_patrol(&catalog.grids[0].id).expect("patrol");
    let points = &catalog.grids[0].points;
    for (i, fix) in [mock(points[0].lat, points[0].lon), Location::gps(points[1].lat, points[1].lon, 4.0, 0)]
        .into_iter()
        .enumerate()
    {
        w1.store
            .check_in(CheckInInput {
                patrol,
                point: Some(points[i].id.clone()),
                location: fix,
                note: String::new(),
                photo: None,
            })
            .expect("check in");
    }
    let report = w1.sync(&d.url()).expect("sync");
    assert!(report.refused.is_empty() && report.quarantined.is_empty(), "flagged, never refused: {report:?}");
    assert!(d.store.doc_flags(&case.id.to_string()).expect("flags").contains(&"mock_location".to_owned()));

    let console: &dyn ConsoleStore = d.store.as_ref();
    console.set_password("s1", PASSWORD, 0).expect("password");
    let base = d.url();
    let mut s1 = ConsoleClient::new().expect("client");
    assert!(s1.sign_in(&base, "s1", PASSWORD).expect("sign in"));
    // A console action: the server makes it for the person, unsigned by any device.
    let page = s1.get(&format!("{base}/console/cases/{}", case.id)).expect("case");
    let csrf = page.csrf().expect("form");
    let acted = s1
        .post(&format!("{base}/console/cases/{}/act", case.id), &[("csrf", &csrf), ("action", "accept"), ("note", "")])
        .expect("accept");
    assert_eq!(acted.status, 303, "{}", acted.body);
    let page = s1.get(&format!("{base}/console/cases/{}", case.id)).expect("case");
    assert!(row(&page.body, "data-kind=\"report\"").contains("badge verified"), "the phone's report is verified");
    let accept = row(&page.body, "data-kind=\"accept\"");
    assert!(!accept.contains("badge verified"), "a console action is not device signed: {accept}");

    let day = gridwork_core::model::time::DistrictCalendar::default().day_of(gridwork_sync_server::clock::now_ms());
    let coverage = s1.get(&format!("{base}/console/coverage?day={day}")).expect("coverage");
    let g0 = row(&coverage.body, "data-grid=\"g0\"");
    assert!(g0.contains("class=\"mock\"><span class=\"badge flag\">1</span>"), "one mock check-in counted apart: {g0}");
    let csv = s1.get(&format!("{base}/console/coverage.csv?day={day}")).expect("csv");
    let line = csv.body.lines().find(|l| l.contains("Grid 0")).expect("g0 in the CSV");
    let cells: Vec<&str> = line.split(',').collect();
    // day, grid, points, covered, missed, check_ins, outside_grid, mock_location
    assert_eq!(cells[3], "1", "the point visited only with a mock fix is not covered: {line}");
    assert_eq!(cells[5], "2", "{line}");
    assert_eq!(cells.last().copied(), Some("1"), "{line}");
}

/// A phone clock whose wall time can be set back while its time since boot runs on, as a
/// worker's phone when its clock is changed by hand.
#[derive(Debug)]
struct HandSetClock {
    booted: std::time::Instant,
    wall_offset_ms: std::sync::atomic::AtomicI64,
}

impl gridwork_core::clock::DeviceClock for HandSetClock {
    fn now(&self) -> gridwork_core::clock::ClockReading {
        let since_boot_ms = 3_600_000 + self.booted.elapsed().as_millis() as i64;
        let wall_ms =
            gridwork_sync_server::clock::now_ms() + self.wall_offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        gridwork_core::clock::ClockReading { wall_ms, since_boot_ms, boot_id: "boot-1".into() }
    }
}

/// w1's phone, enrolled, its store on `clock`.
fn w1_with_clock(
    d: &District,
    catalog: &gridwork_core::model::catalog::Catalog,
    clock: std::sync::Arc<dyn gridwork_core::clock::DeviceClock>,
) -> (tempfile::TempDir, gridwork_core::Store, gridwork_core::sync::SyncConfig) {
    let (_, code) = d.store.enrol_device("w1", 0).expect("enrol");
    let e = gridwork_core::sync::enrol(&d.url(), &code, None, "0.1.0").expect("redeem");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        gridwork_tests::open_device(dir.path(), gridwork_tests::identity_from_enrolment(&e), catalog, Some(clock))
            .expect("store");
    (dir, store, gridwork_core::sync::SyncConfig::new(d.url(), e.token))
}

fn a_clock_set_back_to_cover_a_missed_patrol_is_flagged(d: District) {
    let catalog = gridwork_tests::district(4);
    let clock = std::sync::Arc::new(HandSetClock {
        booted: std::time::Instant::now(),
        wall_offset_ms: std::sync::atomic::AtomicI64::new(0),
    });
    let (_dir, store, config) = w1_with_clock(&d, &catalog, clock.clone());
    let mut rng = gridwork_tests::Rng::new(3);
    let honest = store.capture_case(gridwork_tests::random_case(&mut rng, &catalog, 0, 0)).expect("capture");
    store.sync(&config, &mut |_| {}).expect("sync");
    // Two hours back, a report and a patrol "made then", and the clock put right before syncing.
    clock.wall_offset_ms.store(-2 * 3_600_000, std::sync::atomic::Ordering::SeqCst);
    let backdated = store.capture_case(gridwork_tests::random_case(&mut rng, &catalog, 0, 0)).expect("capture");
    store.start_patrol(&catalog.grids[0].id).expect("patrol");
    clock.wall_offset_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let report = store.sync(&config, &mut |_| {}).expect("sync");
    assert!(report.refused.is_empty() && report.quarantined.is_empty(), "flagged, never refused: {report:?}");
    assert!(!d.store.doc_flags(&honest.id.to_string()).expect("flags").contains(&"event_clock_off".to_owned()));
    assert!(d.store.doc_flags(&backdated.id.to_string()).expect("flags").contains(&"event_clock_off".to_owned()));

    let console: &dyn ConsoleStore = d.store.as_ref();
    console.set_password("s1", PASSWORD, 0).expect("password");
    let base = d.url();
    let mut s1 = ConsoleClient::new().expect("client");
    assert!(s1.sign_in(&base, "s1", PASSWORD).expect("sign in"));
    let page = s1.get(&format!("{base}/console/cases/{}", backdated.id)).expect("case");
    let reported = row(&page.body, "data-kind=\"report\"");
    assert!(
        reported.contains("data-clock-off=\"−1 h 59 min\"") || reported.contains("data-clock-off=\"−2 h 00 min\""),
        "{reported}"
    );
    let page = s1.get(&format!("{base}/console/cases/{}", honest.id)).expect("case");
    assert!(!page.body.contains("data-clock-off"), "an honest clock is not flagged");
    let csv = s1.get(&format!("{base}/console/assessment.csv")).expect("assessment");
    let line = csv.body.lines().find(|l| l.starts_with("w1,")).unwrap_or_else(|| panic!("w1 in {}", csv.body));
    assert_eq!(line.rsplit(',').next(), Some("2"), "the report and the patrol record: {line}");
}

/// A phone clock that can be set by hand and rebooted (a new boot id, time since boot from zero).
#[derive(Debug)]
struct RebootableClock {
    boot: std::sync::Mutex<(String, std::time::Instant)>,
    wall_offset_ms: std::sync::atomic::AtomicI64,
}

impl RebootableClock {
    fn reboot(&self, id: &str) {
        *self.boot.lock().expect("boot") = (id.to_owned(), std::time::Instant::now());
    }
    fn set_back_ms(&self, ms: i64) {
        self.wall_offset_ms.store(-ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl gridwork_core::clock::DeviceClock for RebootableClock {
    fn now(&self) -> gridwork_core::clock::ClockReading {
        let (boot_id, since) = self.boot.lock().map(|b| (b.0.clone(), b.1.elapsed())).expect("boot");
        let wall_ms =
            gridwork_sync_server::clock::now_ms() + self.wall_offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        gridwork_core::clock::ClockReading { wall_ms, since_boot_ms: 1_000 + since.as_millis() as i64, boot_id }
    }
}

fn a_clock_set_back_in_a_boot_that_ended_before_the_sync_is_flagged(d: District) {
    let catalog = gridwork_tests::district(4);
    let clock = std::sync::Arc::new(RebootableClock {
        boot: std::sync::Mutex::new(("boot-a".into(), std::time::Instant::now())),
        wall_offset_ms: std::sync::atomic::AtomicI64::new(0),
    });
    let (_dir, store, config) = w1_with_clock(&d, &catalog, clock.clone());
    let mut rng = gridwork_tests::Rng::new(5);
    let mut capture = || store.capture_case(gridwork_tests::random_case(&mut rng, &catalog, 0, 0)).expect("capture").id;
    let clock_off = |case: &gridwork_core::model::ids::CaseId| {
        d.store.doc_flags(&case.to_string()).expect("flags").contains(&"event_clock_off".to_owned())
    };

    // Boot a: the phone syncs in it (the server learns when it began), then the clock is set back
    // two hours for a report, and the phone reboots (clock right again) before it syncs.
    store.sync(&config, &mut |_| {}).expect("sync in boot a");
    clock.set_back_ms(2 * 3_600_000);
    let in_known_boot = capture();
    clock.set_back_ms(0);
    clock.reboot("boot-b");
    // Boot b is never synced in: an honest report, then the clock set back for another, then a
    // reboot into boot c before the sync.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let honest = capture();
    clock.set_back_ms(2 * 3_600_000);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let in_unknown_boot = capture();
    clock.set_back_ms(0);
    clock.reboot("boot-c");
    let report = store.sync(&config, &mut |_| {}).expect("sync in boot c");
    assert!(report.refused.is_empty() && report.quarantined.is_empty(), "flagged, never refused: {report:?}");

    assert!(clock_off(&in_known_boot), "set back in a boot the server knew the start of");
    assert!(clock_off(&in_unknown_boot), "changed within a boot the phone never synced in");
    assert!(!clock_off(&honest), "the honest report of that boot is not flagged");
    let console: &dyn ConsoleStore = d.store.as_ref();
    console.set_password("s1", PASSWORD, 0).expect("password");
    let base = d.url();
    let mut s1 = ConsoleClient::new().expect("client");
    assert!(s1.sign_in(&base, "s1", PASSWORD).expect("sign in"));
    for case in [&in_known_boot, &in_unknown_boot] {
        let page = s1.get(&format!("{base}/console/cases/{case}")).expect("case");
        let reported = row(&page.body, "data-kind=\"report\"");
        assert!(
            reported.contains("data-clock-off=\"−1 h 59 min\"") || reported.contains("data-clock-off=\"−2 h 00 min\""),
            "{reported}"
        );
    }
}

on_every_store!(
    mock_fixes_are_flagged_and_signed_events_marked_verified,
    a_clock_set_back_to_cover_a_missed_patrol_is_flagged,
    a_clock_set_back_in_a_boot_that_ended_before_the_sync_is_flagged,
);
