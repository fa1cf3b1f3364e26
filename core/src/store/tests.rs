//! Store tests through the public API (plus a peek at SQLite where a test must prove that
//! nothing changed).

use std::sync::Arc;

use gridwork_model::catalog::{Catalog, Category, Department, Grid, PatrolPoint, Role};
use gridwork_model::doc::CasePatch;
use gridwork_model::geo::{wgs84_to_gcj02, Datum, Location, Polygon};
use gridwork_model::ids::{CaseId, CategoryId, DepartmentId, DeviceId, GridId, PointId, UserId};
use gridwork_model::lifecycle::{EventKind, RejectReason, Status};

use super::*;
use crate::clock::FixedClock;
use crate::evidence::synthetic::{camera_like_jpeg, ExifSpec};

const KEY: [u8; 32] = [7; 32];
/// 2026-11-26 10:00 in Shanghai.
const NOW: i64 = 1_795_658_400_000;

pub(crate) fn catalog() -> Catalog {
    let square = |lat: f64, lon: f64| Polygon {
        ring: vec![(lat, lon), (lat, lon + 0.01), (lat + 0.01, lon + 0.01), (lat + 0.01, lon)],
    };
    Catalog {
        version: 3,
        grids: vec![
            Grid {
                id: "g1".into(),
                name: "Grid 1".into(),
                community: "Lotus".into(),
                street: "East".into(),
                boundary: square(31.20, 121.40),
                points: vec![
                    PatrolPoint { id: "p1".into(), name: "Gate".into(), lat: 31.201, lon: 121.401 },
                    PatrolPoint { id: "p2".into(), name: "Boiler room".into(), lat: 31.205, lon: 121.405 },
                ],
            },
            Grid {
                id: "g2".into(),
                name: "Grid 2".into(),
                community: "Lotus".into(),
                street: "East".into(),
                boundary: square(31.21, 121.40),
                points: vec![],
            },
        ],
        categories: vec![
            Category {
                id: "hazard".into(),
                names: [("zh".to_owned(), "安全隐患".to_owned())].into(),
                default_deadline_hours: 24,
                retired: false,
            },
            Category { id: "noise".into(), names: Default::default(), default_deadline_hours: 72, retired: false },
            Category { id: "old".into(), names: Default::default(), default_deadline_hours: 72, retired: true },
        ],
        departments: vec![
            Department { id: "police".into(), name: "Police".into() },
            Department { id: "housing".into(), name: "Housing".into() },
        ],
    }
}

pub(crate) fn identity(user: &str, role: Role) -> Identity {
    Identity {
        user: UserId::from(user),
        role,
        device: DeviceId::from(format!("dev-{user}").as_str()),
        device_code: user.to_uppercase(),
        department: (role == Role::DepartmentHandler).then(|| DepartmentId::from("police")),
        signing_key: None,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<FixedClock>,
}

fn open_in(dir: &std::path::Path, user: &str, role: Role, clock: Arc<FixedClock>) -> Store {
    let mut o = OpenOptions::new(dir, &KEY, identity(user, role));
    o.clock = clock;
    let store = Store::open(o).expect("open");
    store.import_catalog(&catalog()).expect("catalog");
    store
}

fn fixture(user: &str, role: Role) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(NOW));
    let store = open_in(dir.path(), user, role, clock.clone());
    Fixture { _dir: dir, store, clock }
}

fn new_case(title: &str) -> NewCase {
    NewCase {
        title: title.into(),
        description: "E-bike charging in the stairwell".into(),
        category: "hazard".into(),
        grid: "g1".into(),
        location: Location::gps(31.203, 121.403, 6.0, NOW),
        photos: vec![],
    }
}

/// Everything the store holds, as text: what "nothing changed" is checked against.
fn snapshot(store: &Store) -> Vec<String> {
    let conn = store.reader();
    let mut out = vec![];
    for table in [
        "cases",
        "documents",
        "doc_chunks",
        "outbox",
        "evidence_files",
        "evidence_links",
        "records",
        "patrols",
        "case_assignees",
    ] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).expect("table");
        let cols = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut row = vec![table.to_owned()];
                for i in 0..cols {
                    row.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(row.join("|"))
            })
            .expect("query");
        out.extend(rows.map(|r| r.expect("row")));
    }
    out.sort();
    out
}

#[test]
fn captured_case_is_stored_with_document_index_outbox_and_photo() {
    let f = fixture("w1", Role::Worker);
    let photo = camera_like_jpeg(1200, 900, &ExifSpec::default(), 1);
    let summary =
        f.store.capture_case(NewCase { photos: vec![photo], ..new_case("Blocked fire exit") }).expect("capture");
    assert_eq!(summary.code, "W1-0001");
    assert_eq!(summary.status, "reported");
    assert!(summary.flags.is_empty(), "{:?}", summary.flags);

    let detail = f.store.get_case(&summary.id).expect("get");
    assert_eq!(detail.case.title.value, "Blocked fire exit");
    assert_eq!(detail.case.timeline.entries.len(), 1);
    let ev = &detail.case.timeline.entries[0].event;
    assert_eq!((ev.actor.user.as_str(), ev.actor.role, ev.actor.device.as_str()), ("w1", Role::Worker, "dev-w1"));
    assert_eq!(ev.clock.device_ms, NOW);
    assert_eq!(detail.case.evidence.len(), 1);
    let photo = &detail.case.evidence[0];
    let stored = f.store.read_evidence(&photo.sha256).expect("decrypts");
    assert_eq!(crate::evidence::sha256_hex(&stored), photo.sha256);
    // Files on disk are encrypted: the JPEG magic is nowhere in them.
    let raw = std::fs::read(f.store.dir().join("evidence").join(&photo.sha256)).expect("file");
    assert!(!raw.starts_with(&[0xFF, 0xD8]));

    assert_eq!(f.store.outbox_len().expect("outbox"), 1);
    let item = &f.store.outbox_page(1 << 20).expect("page")[0];
    assert_eq!(item.kind, OutboxKind::Change);
    assert_eq!(item.doc_id.as_deref(), Some(summary.id.to_string().as_str()));

    let second = f.store.capture_case(new_case("Second")).expect("capture");
    assert_eq!(second.code, "W1-0002");
}

/// A photo whose own GPS is more than a kilometre from its report's fix is flagged (never
/// refused: a supervisor decides), on a new case, an attached photo and a check-in alike.
#[test]
fn a_photo_taken_far_from_its_reports_fix_is_flagged() {
    let f = fixture("w1", Role::Worker);
    let at =
        |gps: (f64, f64), seed| camera_like_jpeg(320, 240, &ExifSpec { gps: Some(gps), ..ExifSpec::default() }, seed);
    // The fix is at (31.203, 121.403): one photo a few metres off, one about 5.5 km north.
    let (near, far) = (at((31.2031, 121.4031), 1), at((31.253, 121.403), 2));
    let s =
        f.store.capture_case(NewCase { photos: vec![near, far.clone()], ..new_case("Two photos") }).expect("capture");
    let evidence = f.store.get_case(&s.id).expect("get").case.evidence;
    let mut offs: Vec<(u32, bool)> =
        evidence.iter().map(|e| (e.exif_gps_off_m.expect("compared with the fix"), e.exif_gps_far())).collect();
    offs.sort_unstable();
    assert!(offs[0].0 < 50 && !offs[0].1, "the near photo: {offs:?}");
    assert!((5_000..6_000).contains(&offs[1].0) && offs[1].1, "the far photo: {offs:?}");

    let other = f.store.capture_case(new_case("Attached later")).expect("capture");
    let attached = f.store.attach_photo(&other.id, &at((31.253, 121.404), 3)).expect("attach");
    assert!(attached.exif_gps_far(), "{:?}", attached.exif_gps_off_m);
    // Without a position in the photo there is nothing to compare.
    let plain = f.store.attach_photo(&other.id, &camera_like_jpeg(320, 240, &ExifSpec::default(), 4)).expect("attach");
    assert_eq!(plain.exif_gps_off_m, None);
}

#[test]
fn gcj02_location_is_converted_on_capture() {
    let f = fixture("w1", Role::Worker);
    let (glat, glon) = wgs84_to_gcj02(31.203, 121.403);
    let mut loc = Location::gps(glat, glon, 5.0, NOW);
    loc.datum = Datum::Gcj02;
    let s = f.store.capture_case(NewCase { location: loc, ..new_case("GCJ") }).expect("capture");
    let got = f.store.get_case(&s.id).expect("get").case.location.value;
    assert_eq!(got.datum, Datum::Wgs84);
    assert_eq!(got.converted_from, Some(Datum::Gcj02));
    assert!((got.lat - 31.203).abs() < 1e-7 && (got.lon - 121.403).abs() < 1e-7);
}

#[test]
fn wrong_key_is_refused_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(NOW));
    let store = open_in(dir.path(), "w1", Role::Worker, clock);
    store.capture_case(new_case("Keep me")).expect("capture");
    drop(store);
    let db = dir.path().join("gridwork.db");
    let before = std::fs::read(&db).expect("db");
    assert!(!before.starts_with(b"SQLite format 3"), "the database is encrypted at rest");
    let err = Store::open(OpenOptions::new(dir.path(), &[9; 32], identity("w1", Role::Worker))).expect_err("wrong key");
    assert!(matches!(err, CoreError::WrongKey { .. }), "{err}");
    assert!(matches!(
        Store::open(OpenOptions::new(dir.path(), &[9; 16], identity("w1", Role::Worker))),
        Err(CoreError::BadKeyLength { len: 16 })
    ));
    assert_eq!(std::fs::read(&db).expect("db"), before, "the file was not modified");
    let reopened = Store::open(OpenOptions::new(dir.path(), &KEY, identity("w1", Role::Worker))).expect("right key");
    assert_eq!(reopened.list_cases(&CaseQuery { limit: 10, ..Default::default() }).expect("list").items.len(), 1);
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let f = fixture("w1", Role::Worker);
    let case = f.store.capture_case(new_case("Existing")).expect("capture");
    let before = snapshot(&f.store);
    let long = "字".repeat(10_001);
    let attempts: Vec<(&str, Result<CaseSummary>)> = vec![
        ("nan", f.store.capture_case(NewCase { location: Location::gps(f64::NAN, 121.0, 5.0, NOW), ..new_case("x") })),
        ("range", f.store.capture_case(NewCase { location: Location::gps(31.0, 181.0, 5.0, NOW), ..new_case("x") })),
        ("empty title", f.store.capture_case(new_case("   "))),
        ("long title", f.store.capture_case(new_case(&long))),
        ("long description", f.store.capture_case(NewCase { description: long.clone(), ..new_case("x") })),
        ("unknown category", f.store.capture_case(NewCase { category: "nope".into(), ..new_case("x") })),
        ("retired category", f.store.capture_case(NewCase { category: "old".into(), ..new_case("x") })),
        ("unknown grid", f.store.capture_case(NewCase { grid: "g9".into(), ..new_case("x") })),
        (
            "corrupt photo",
            f.store.capture_case(NewCase { photos: vec![vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]], ..new_case("x") }),
        ),
        ("worker accepts", f.store.record_event(&case.id, EventKind::Accept { note: String::new() })),
        ("unknown case", f.store.record_event(&CaseId::generate(), EventKind::Note { text: "x".into() })),
        (
            "empty edit title",
            f.store.edit_case(&case.id, CasePatch { title: Some(String::new()), ..Default::default() }),
        ),
        (
            "edit to unknown grid",
            f.store.edit_case(&case.id, CasePatch { grid: Some("zz".into()), ..Default::default() }),
        ),
    ];
    for (what, result) in attempts {
        let err = result.expect_err(what);
        let expected = match what {
            "nan" | "range" => matches!(err, CoreError::Invalid(ModelError::InvalidCoordinates { .. })),
            "empty title" | "empty edit title" => matches!(err, CoreError::Invalid(ModelError::EmptyTitle)),
            "long title" | "long description" => {
                matches!(err, CoreError::Invalid(ModelError::TextTooLong { chars: 10_001, .. }))
            }
            "unknown category" => matches!(err, CoreError::UnknownCategory { .. }),
            "retired category" => matches!(err, CoreError::RetiredCategory { .. }),
            "unknown grid" | "edit to unknown grid" => matches!(err, CoreError::UnknownGrid { .. }),
            "corrupt photo" => matches!(err, CoreError::Evidence(_)),
            "worker accepts" => matches!(err, CoreError::TransitionNotAllowed { .. }),
            "unknown case" => matches!(err, CoreError::UnknownCase { .. }),
            _ => false,
        };
        assert!(expected, "{what}: unexpected error {err:?}");
    }
    assert!(matches!(f.store.attach_photo(&case.id, b"not an image"), Err(CoreError::Evidence(_))));
    assert!(matches!(f.store.receive_changes(&case.id, &[b"garbage".to_vec()]), Err(CoreError::BadChange { .. })));
    assert_eq!(snapshot(&f.store), before, "a refused action left a trace");
}

use gridwork_model::ModelError;

fn exchange(a: &Store, b: &Store) {
    for id in a.document_ids().expect("ids") {
        b.receive_changes(&id, &a.export_changes(&id).expect("export")).expect("receive");
    }
    for id in b.document_ids().expect("ids") {
        a.receive_changes(&id, &b.export_changes(&id).expect("export")).expect("receive");
    }
}

#[test]
fn unrelated_edit_keeps_open_conflict() {
    let w = fixture("w1", Role::Worker);
    let s = fixture("s1", Role::Supervisor);
    let case = w.store.capture_case(new_case("Original")).expect("capture");
    exchange(&w.store, &s.store);
    w.store
        .edit_case(&case.id, CasePatch { title: Some("Worker's title".into()), ..Default::default() })
        .expect("edit");
    s.store
        .edit_case(&case.id, CasePatch { title: Some("Supervisor's title".into()), ..Default::default() })
        .expect("edit");
    exchange(&w.store, &s.store);
    let detail = w.store.get_case(&case.id).expect("get");
    let mut values = detail.case.title.conflicts.clone();
    values.sort();
    assert_eq!(values, vec!["Supervisor's title".to_owned(), "Worker's title".to_owned()]);
    assert!(w.store.list_cases(&CaseQuery { limit: 5, ..Default::default() }).expect("list").items[0].has_conflicts);

    // An edit of another field — and a patch that repeats the standing value — keeps it open.
    let shown = detail.case.title.value.clone();
    w.store
        .edit_case(&case.id, CasePatch { description: Some("more detail".into()), title: None, ..Default::default() })
        .expect("edit");
    w.store.record_event(&case.id, EventKind::Note { text: "still there".into() }).expect("note");
    exchange(&w.store, &s.store);
    for store in [&w.store, &s.store] {
        let d = store.get_case(&case.id).expect("get");
        assert_eq!(d.case.title.conflicts.len(), 2, "the unrelated edit must not resolve the conflict");
        assert_eq!(d.case.description, "more detail");
    }

    // Choosing a value is a normal change that resolves it everywhere.
    let _ = shown;
    s.store
        .edit_case(&case.id, CasePatch { title: Some("Worker's title".into()), ..Default::default() })
        .expect("resolve");
    exchange(&w.store, &s.store);
    for store in [&w.store, &s.store] {
        let d = store.get_case(&case.id).expect("get");
        assert!(!d.case.title.in_conflict());
        assert_eq!(d.case.title.value, "Worker's title");
    }
}

#[test]
fn lifecycle_through_the_store_with_roles_and_overdue() {
    let w = fixture("w1", Role::Worker);
    let s = fixture("s1", Role::Supervisor);
    let h = fixture("h1", Role::DepartmentHandler);
    let case = w.store.capture_case(new_case("Gas smell")).expect("capture");
    exchange(&w.store, &s.store);
    s.store.record_event(&case.id, EventKind::Accept { note: String::new() }).expect("accept");
    let deadline = NOW + 3_600_000;
    let err = s.store.record_event(
        &case.id,
        EventKind::Dispatch { departments: vec!["fire-brigade".into()], deadline_ms: deadline },
    );
    assert!(matches!(err, Err(CoreError::UnknownDepartment { .. })));
    s.store
        .record_event(&case.id, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: deadline })
        .expect("dispatch");
    exchange(&s.store, &h.store);
    let mine = h.store.list_cases(&CaseQuery { assigned_to_me: true, limit: 10, ..Default::default() }).expect("list");
    assert_eq!(mine.items.len(), 1, "dispatched to my department");
    h.store.record_event(&case.id, EventKind::Start { department: "police".into() }).expect("start");

    h.clock.set(deadline + 1);
    let overdue = h.store.list_cases(&CaseQuery { overdue: true, limit: 10, ..Default::default() }).expect("list");
    assert_eq!(overdue.items.len(), 1);
    assert!(overdue.items[0].overdue);
    assert!(h.store.get_case(&case.id).expect("get").overdue);

    h.store
        .record_event(
            &case.id,
            EventKind::HandlerReport { department: "police".into(), note: "ventilated".into(), evidence: vec![] },
        )
        .expect("report");
    assert!(h
        .store
        .list_cases(&CaseQuery { overdue: true, limit: 10, ..Default::default() })
        .expect("list")
        .items
        .is_empty());
    exchange(&h.store, &w.store);
    let awaiting =
        w.store.list_cases(&CaseQuery { assigned_to_me: true, limit: 10, ..Default::default() }).expect("list");
    assert_eq!(awaiting.items.len(), 1, "my report awaits my follow-up visit");
    assert_eq!(awaiting.items[0].status, "handled");
    assert!(matches!(
        w.store.record_event(&case.id, EventKind::FollowUp { satisfaction: 6, note: String::new() }),
        Err(CoreError::Invalid(ModelError::InvalidSatisfaction { value: 6 }))
    ));
    w.store.record_event(&case.id, EventKind::FollowUp { satisfaction: 5, note: "thanks".into() }).expect("visit");
    exchange(&w.store, &s.store);
    let closed = s.store.record_event(&case.id, EventKind::Close { note: String::new() }).expect("close");
    assert_eq!(closed.status, Status::Closed.as_str());
}

#[test]
fn lists_filter_sort_page_and_search_chinese() {
    let f = fixture("w1", Role::Worker);
    let titles = ["楼道漏水", "广场舞噪音", "电动车楼道充电", "Illegal parking", "垃圾堆放", "水管破裂漏水严重"];
    let mut ids = vec![];
    for (i, t) in titles.iter().enumerate() {
        f.clock.set(NOW + i as i64 * 1000);
        let grid = if i % 2 == 0 { "g1" } else { "g2" };
        let loc = if i % 2 == 0 {
            Location::gps(31.203, 121.403, 5.0, NOW)
        } else {
            Location::gps(31.213, 121.403, 5.0, NOW)
        };
        let category = if t.contains("噪音") { "noise" } else { "hazard" };
        ids.push(
            f.store
                .capture_case(NewCase { grid: grid.into(), location: loc, category: category.into(), ..new_case(t) })
                .expect("capture")
                .id,
        );
    }
    let list = |q: CaseQuery| {
        f.store.list_cases(&CaseQuery { limit: if q.limit == 0 { 50 } else { q.limit }, ..q }).expect("list").items
    };

    let leaks = list(CaseQuery { text: Some("漏水".into()), ..Default::default() });
    let mut got: Vec<&str> = leaks.iter().map(|c| c.title.as_str()).collect();
    got.sort();
    assert_eq!(got, vec!["楼道漏水", "水管破裂漏水严重"], "a two-character Chinese query");
    assert_eq!(list(CaseQuery { text: Some("噪音".into()), ..Default::default() }).len(), 1);
    assert_eq!(list(CaseQuery { text: Some("楼道".into()), ..Default::default() }).len(), 2);
    assert_eq!(list(CaseQuery { text: Some("park".into()), ..Default::default() }).len(), 1, "word prefix");
    assert_eq!(
        list(CaseQuery { text: Some("stairwell".into()), ..Default::default() }).len(),
        6,
        "description is searched"
    );
    assert!(list(CaseQuery { text: Some("消防".into()), ..Default::default() }).is_empty());

    assert_eq!(list(CaseQuery { grid: Some("g2".into()), ..Default::default() }).len(), 3);
    assert_eq!(list(CaseQuery { category: Some("noise".into()), ..Default::default() }).len(), 1);
    assert_eq!(list(CaseQuery { statuses: vec![Status::Reported], ..Default::default() }).len(), 6);
    assert!(list(CaseQuery { statuses: vec![Status::Closed], ..Default::default() }).is_empty());

    // Newest first, paged two at a time, every case exactly once.
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page =
            f.store.list_cases(&CaseQuery { limit: 2, after: after.clone(), ..Default::default() }).expect("page");
        seen.extend(page.items.iter().map(|c| c.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    assert!(matches!(
        f.store.list_cases(&CaseQuery { limit: 2, after: Some("garbage".into()), ..Default::default() }),
        Err(CoreError::InvalidPageToken)
    ));
}

#[test]
fn patrol_check_ins_are_flagged_outside_the_grid_and_counted_per_day() {
    let f = fixture("w1", Role::Worker);
    let patrol = f.store.start_patrol(&GridId::from("g1")).expect("start");
    let near_gate = Location::gps(31.2011, 121.4011, 5.0, NOW);
    let c1 = f
        .store
        .check_in(CheckInInput {
            patrol,
            point: Some(PointId::from("p1")),
            location: near_gate,
            note: "gate ok".into(),
            photo: None,
        })
        .expect("check in");
    assert!(c1.inside_grid);
    assert!(c1.distance_to_point_m.is_some_and(|d| d < 20.0));
    let outside = Location::gps(31.30, 121.50, 5.0, NOW);
    let photo = camera_like_jpeg(640, 480, &ExifSpec::default(), 2);
    let c2 = f
        .store
        .check_in(CheckInInput { patrol, point: None, location: outside, note: String::new(), photo: Some(photo) })
        .expect("outside is accepted");
    assert!(!c2.inside_grid, "flagged, not refused");
    assert!(c2.photo.is_some());
    assert!(matches!(
        f.store.check_in(CheckInInput {
            patrol,
            point: Some("p9".into()),
            location: Location::gps(31.2, 121.4, 5.0, NOW),
            note: String::new(),
            photo: None
        }),
        Err(CoreError::UnknownPoint { .. })
    ));
    f.store.finish_patrol(&patrol).expect("finish");
    assert!(matches!(
        f.store.check_in(CheckInInput {
            patrol,
            point: None,
            location: Location::gps(31.2, 121.4, 5.0, NOW),
            note: String::new(),
            photo: None
        }),
        Err(CoreError::PatrolFinished { .. })
    ));
    assert!(matches!(f.store.finish_patrol(&patrol), Err(CoreError::PatrolFinished { .. })));

    let today = f.store.day_of(NOW);
    assert_eq!(today, "2026-11-26");
    let checkins = f.store.checkins_for_day(&GridId::from("g1"), &today).expect("day");
    assert_eq!(checkins.iter().map(|c| c.id).collect::<Vec<_>>(), vec![c1.id, c2.id]);
    assert!(f.store.checkins_for_day(&GridId::from("g1"), "2026-11-25").expect("day").is_empty());
    let coverage = f.store.patrol_coverage(&GridId::from("g1"), &today).expect("coverage");
    assert_eq!(coverage.len(), 2);
    assert_eq!(coverage[0].visits.len(), 1);
    assert_eq!(coverage[0].visits[0].0, UserId::from("w1"));
    assert!(coverage[1].visits.is_empty(), "the boiler room was missed");
    // start + 2 check-ins + finish
    assert_eq!(f.store.outbox_len().expect("outbox"), 4);
}

#[test]
fn every_open_gets_a_fresh_actor_and_the_counter_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(NOW));
    let a = open_in(dir.path(), "w1", Role::Worker, clock.clone());
    let first = a.actor_id();
    a.capture_case(new_case("one")).expect("capture");
    drop(a);
    let b = open_in(dir.path(), "w1", Role::Worker, clock);
    assert_ne!(b.actor_id(), first);
    assert_eq!(b.capture_case(new_case("two")).expect("capture").code, "W1-0002");
    assert_eq!(b.open_report().migrated_from, schema::CURRENT_VERSION);
}

#[test]
fn unreferenced_evidence_files_are_moved_aside_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(NOW));
    let a = open_in(dir.path(), "w1", Role::Worker, clock.clone());
    let photo = camera_like_jpeg(320, 240, &ExifSpec::default(), 5);
    a.capture_case(NewCase { photos: vec![photo], ..new_case("with photo") }).expect("capture");
    drop(a);
    // A crash between writing a file and committing its transaction leaves this behind.
    std::fs::write(dir.path().join("evidence").join("deadbeef"), b"orphan").expect("write");
    let b = open_in(dir.path(), "w1", Role::Worker, clock);
    assert_eq!(b.open_report().unreferenced_files_moved, 1);
    assert!(dir.path().join("evidence-unreferenced").join("deadbeef").exists());
    let case = &b.list_cases(&CaseQuery { limit: 1, ..Default::default() }).expect("list").items[0];
    let detail = b.get_case(&case.id).expect("get");
    assert!(b.read_evidence(&detail.case.evidence[0].sha256).is_ok(), "referenced files stay");
}

#[test]
fn many_edits_compact_the_document_without_losing_anything() {
    let f = fixture("w1", Role::Worker);
    let case = f.store.capture_case(new_case("v0")).expect("capture");
    for i in 1..=80 {
        f.store.edit_case(&case.id, CasePatch { title: Some(format!("v{i}")), ..Default::default() }).expect("edit");
    }
    let chunks: i64 = f
        .store
        .reader()
        .query_row("SELECT count(*) FROM doc_chunks WHERE doc_id = ?1", [case.id.to_string()], |r| r.get(0))
        .expect("count");
    assert!(chunks <= documents::COMPACT_AFTER + 1, "{chunks} chunks");
    assert_eq!(f.store.get_case(&case.id).expect("get").case.title.value, "v80");
    assert_eq!(f.store.export_changes(&case.id).expect("changes").len(), 81);
    assert_eq!(f.store.outbox_len().expect("outbox"), 81, "compaction never touches the outbox");
}

#[test]
fn receiving_the_same_changes_twice_stores_them_once() {
    let a = fixture("w1", Role::Worker);
    let b = fixture("s1", Role::Supervisor);
    let case = a.store.capture_case(new_case("dup")).expect("capture");
    let changes = a.store.export_changes(&case.id).expect("export");
    let first = b.store.receive_changes(&case.id, &changes).expect("receive");
    let again = b.store.receive_changes(&case.id, &changes).expect("receive");
    assert_eq!((first.new_changes, first.duplicates), (1, 0));
    assert_eq!((again.new_changes, again.duplicates), (0, 1));
    assert_eq!(b.store.outbox_len().expect("outbox"), 0, "received changes are not ours to send");
}

#[test]
fn store_is_send_and_sync_and_serves_threads_at_once() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let f = fixture("w1", Role::Worker);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = f.store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    store.capture_case(new_case(&format!("t{t}-{i}"))).expect("capture");
                    store.list_cases(&CaseQuery { limit: 5, ..Default::default() }).expect("list");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let all = f.store.list_cases(&CaseQuery { limit: 100, ..Default::default() }).expect("list");
    assert_eq!(all.items.len(), 40);
    let mut codes: Vec<_> = all.items.iter().map(|c| c.code.clone()).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 40, "case codes are unique");
}

#[test]
fn every_old_schema_upgrades_to_the_current_one() {
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = open_in(fresh_dir.path(), "w1", Role::Worker, Arc::new(FixedClock::new(NOW)));
    let schema_of = |conn: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
            .expect("master");
        let rows = stmt
            .query_map([], |r| {
                Ok(format!("{}|{}|{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .expect("q");
        rows.map(|r| r.expect("row").split_whitespace().collect::<Vec<_>>().join(" ")).collect()
    };
    let expected = schema_of(&fresh.reader());

    for old in 0..schema::CURRENT_VERSION {
        // Build a store at version `old`, with a case in it when the schema has cases.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DB_FILE);
        {
            let mut conn = open_connection(&path, &KEY, 1024).expect("conn");
            schema::migrate_to(&mut conn, old).expect("old schema");
            if old >= 1 {
                let mut am = automerge::Automerge::new();
                let new_doc = gridwork_model::doc::NewCaseDoc {
                    id: CaseId::generate(),
                    code: "OLD-0001".into(),
                    created_ms: NOW,
                    reporter: "w1".into(),
                    title: "旧的漏水".into(),
                    description: "from an old app".into(),
                    category: CategoryId::from("hazard"),
                    grid: GridId::from("g1"),
                    location: Location::gps(31.203, 121.403, 5.0, NOW),
                };
                let report = gridwork_model::lifecycle::Event {
                    id: gridwork_model::ids::EventId::generate(),
                    parents: vec![],
                    lamport: 1,
                    actor: identity("w1", Role::Worker).actor(),
                    clock: Default::default(),
                    kind: EventKind::Report,
                };
                am.transact::<_, _, ModelError>(|t| gridwork_model::doc::init_case(t, &new_doc, &report)).expect("doc");
                let id = new_doc.id.to_string();
                // As version 1 wrote a document (today's `documents::append` knows later columns).
                conn.execute("INSERT INTO documents (doc_id, chunk_count, heads) VALUES (?1, 1, '')", [&id])
                    .expect("v1 document row");
                conn.execute(
                    "INSERT INTO doc_chunks (doc_id, seq, bytes) VALUES (?1, 0, ?2)",
                    rusqlite::params![id, am.save()],
                )
                .expect("v1 chunk");
                conn.execute(
                    "INSERT INTO cases (id, code, title, status, grid_id, category_id, reporter, created_ms, updated_ms)
                     VALUES (?1, 'OLD-0001', '旧的漏水', 'reported', 'g1', 'hazard', 'w1', ?2, ?2)",
                    rusqlite::params![id, NOW],
                )
                .expect("v1 index row");
                if old >= 2 {
                    // From version 2 on, the app also wrote the search index.
                    let rowid = conn.last_insert_rowid();
                    search::index(&conn, rowid, "旧的漏水", "from an old app").expect("v2 search row");
                }
            }
        }
        let store = open_in(dir.path(), "w1", Role::Worker, Arc::new(FixedClock::new(NOW)));
        assert_eq!(store.open_report().migrated_from, old);
        assert_eq!(schema_of(&store.reader()), expected, "schema upgraded from version {old} differs from a fresh one");
        if old >= 1 {
            let hits = store
                .list_cases(&CaseQuery { text: Some("漏水".into()), limit: 5, ..Default::default() })
                .expect("search");
            assert_eq!(hits.items.len(), 1, "data from version {old} is searchable after the upgrade");
            let d = store.get_case(&hits.items[0].id).expect("get");
            assert_eq!(d.case.description, "from an old app");
        }
    }

    // A store from a newer app is refused, untouched.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB_FILE);
    {
        let conn = open_connection(&path, &KEY, 1024).expect("conn");
        conn.pragma_update(None, "user_version", schema::CURRENT_VERSION + 1).expect("bump");
    }
    let err = Store::open(OpenOptions::new(dir.path(), &KEY, identity("w1", Role::Worker))).expect_err("newer");
    assert!(matches!(err, CoreError::NewerSchema { .. }), "{err}");
}

#[test]
fn confirmed_photos_can_be_evicted_and_thumbnails_stay() {
    let f = fixture("w1", Role::Worker);
    let photo = camera_like_jpeg(800, 600, &ExifSpec::default(), 4);
    let case = f.store.capture_case(NewCase { photos: vec![photo], ..new_case("evict") }).expect("capture");
    let ev = f.store.get_case(&case.id).expect("get").case.evidence[0].clone();
    let thumb = ev.thumb_sha256.clone().expect("thumb");
    // Nothing is evicted before the server confirms it.
    assert_eq!(f.store.evict_confirmed_photos().expect("evict").files, 0);
    assert_eq!(f.store.confirm_evidence(&[ev.sha256.clone(), thumb.clone()]).expect("confirm"), 2);
    let report = f.store.evict_confirmed_photos().expect("evict");
    assert_eq!(report.files, 1, "only the full-size photo leaves");
    assert!(report.bytes > ev.size, "encrypted file is larger than the plaintext");
    assert!(matches!(f.store.read_evidence(&ev.sha256), Err(CoreError::EvidenceEvicted { .. })));
    assert!(f.store.read_evidence(&thumb).is_ok());
    assert_eq!(f.store.get_case(&case.id).expect("get").case.evidence.len(), 1, "the reference stays");
}

#[test]
fn needs_you_counts_what_each_role_does_next() {
    let w = fixture("w1", Role::Worker);
    let s = fixture("s1", Role::Supervisor);
    let h = fixture("h1", Role::DepartmentHandler);
    let a = w.store.capture_case(new_case("one")).expect("capture");
    w.store.capture_case(new_case("two")).expect("capture");
    exchange(&w.store, &s.store);
    let need = |st: &Store, what: &str| st.needs_you().expect("needs").iter().find(|n| n.what == what).map(|n| n.count);
    assert_eq!((need(&s.store, "to_triage"), need(&s.store, "to_dispatch")), (Some(2), Some(0)));
    assert_eq!(need(&w.store, "to_triage"), None, "a worker does not triage");
    s.store.record_event(&a.id, EventKind::Accept { note: String::new() }).expect("accept");
    assert_eq!((need(&s.store, "to_triage"), need(&s.store, "to_dispatch")), (Some(1), Some(1)));
    // Dispatched with a deadline an hour away; two hours later it is overdue for the police.
    let deadline_ms = NOW + 3_600_000;
    s.store
        .record_event(&a.id, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms })
        .expect("dispatch");
    exchange(&s.store, &h.store);
    assert_eq!((need(&h.store, "to_start"), need(&h.store, "overdue")), (Some(1), Some(0)));
    h.clock.advance(2 * 3_600_000);
    assert_eq!(need(&h.store, "overdue"), Some(1));
    assert_eq!(need(&w.store, "to_follow_up"), Some(0), "nothing handled yet");
}

/// A keystore that wraps but cannot destroy its key (a keystore error at the worst moment).
struct StubbornVault(crate::vault::SoftwareVault);

impl crate::vault::KeyVault for StubbornVault {
    fn wrap(&self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.wrap(plain)
    }
    fn unwrap(&self, wrapped: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.0.unwrap(wrapped)
    }
    fn destroy(&self) -> std::result::Result<(), String> {
        Err("keystore busy".into())
    }
}

#[test]
fn a_shred_removes_every_file_even_when_the_keystore_cannot_destroy_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Arc::new(StubbornVault(crate::vault::SoftwareVault::from_key([3; 32])));
    let mut o = OpenOptions::with_vault(dir.path(), vault, identity("w1", Role::Worker)).expect("options");
    o.clock = Arc::new(FixedClock::new(NOW));
    let store = Store::open(o).expect("open");
    store.import_catalog(&catalog()).expect("catalog");
    let photo = camera_like_jpeg(320, 240, &ExifSpec::default(), 8);
    store.capture_case(NewCase { photos: vec![photo], ..new_case("to shred") }).expect("capture");
    let report = store.shred().expect("shred");
    assert_eq!(report.vault_error.as_deref(), Some("keystore busy"));
    assert!(!report.vault_key_destroyed && report.files_removed >= 4, "{report:?}");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [TOMBSTONE_FILE], "the database, its WAL, the photos and the wrapped key are gone");
    let again = Store::open(OpenOptions::new(dir.path(), &KEY, identity("w1", Role::Worker))).expect_err("wiped");
    assert!(matches!(again, CoreError::Wiped { reported: false, .. }), "{again}");
}

#[test]
fn a_photo_known_only_from_another_phone_is_readable_once_this_phone_takes_it_too() {
    // Found by the Kotlin suite: a worker's phone pulled a colleague's case whose photo had the
    // same bytes as one it then took (a forwarded picture); its own copy read as "evicted".
    let w = fixture("w1", Role::Worker);
    let s = fixture("s1", Role::Supervisor);
    let photo = camera_like_jpeg(640, 480, &ExifSpec::default(), 9);
    w.store.capture_case(NewCase { photos: vec![photo.clone()], ..new_case("theirs") }).expect("capture");
    exchange(&w.store, &s.store);
    let mine = s.store.capture_case(NewCase { photos: vec![photo], ..new_case("mine") }).expect("capture");
    let ev = s.store.get_case(&mine.id).expect("get").case.evidence[0].clone();
    assert!(s.store.read_evidence(&ev.sha256).is_ok(), "this phone holds the bytes it took");
    assert!(s.store.read_evidence(&ev.thumb_sha256.expect("thumb")).is_ok());
}

#[test]
fn a_transition_the_state_does_not_allow_is_refused_and_changes_nothing() {
    let w = fixture("w1", Role::Worker);
    let s = fixture("s1", Role::Supervisor);
    let case = w.store.capture_case(new_case("Fresh")).expect("capture");
    exchange(&w.store, &s.store);
    let before = snapshot(&s.store);
    for kind in [
        EventKind::Close { note: String::new() },
        EventKind::Return { reason: "no".into() },
        EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: NOW },
        EventKind::Settle { chosen: gridwork_model::ids::EventId::generate() },
    ] {
        let err = s.store.record_event(&case.id, kind).expect_err("not from reported");
        assert!(matches!(&err, CoreError::TransitionNotAllowed { from, .. } if from == "reported"), "{err}");
    }
    assert_eq!(snapshot(&s.store), before);
}

/// Marks everything in `store`'s outbox acknowledged and its photos confirmed, as a sync would.
fn as_if_synced(store: &Store) {
    let seqs: Vec<i64> = store.outbox_page(usize::MAX).expect("outbox").iter().map(|i| i.seq).collect();
    store.acknowledge(&seqs).expect("ack");
    let shas: Vec<String> = store
        .reader()
        .prepare("SELECT sha256 FROM evidence_files")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    store.confirm_evidence(&shas).expect("confirm");
}

#[test]
fn a_finished_case_leaves_the_phone_days_after_the_server_confirmed_it_and_comes_back_if_it_changes() {
    const DAY: i64 = 86_400_000;
    let keep = std::time::Duration::from_secs(30 * 86_400);
    let w = fixture("w1", Role::Worker);
    let s = fixture("s1", Role::Supervisor);
    let s2 = fixture("s2", Role::Supervisor);
    let photo = camera_like_jpeg(320, 240, &ExifSpec::default(), 9);
    let done = w.store.capture_case(NewCase { photos: vec![photo], ..new_case("楼道堆物 done") }).expect("capture");
    let open = w.store.capture_case(new_case("still open")).expect("capture");
    exchange(&w.store, &s.store);
    exchange(&w.store, &s2.store);
    s.store
        .record_event(
            &done.id,
            EventKind::Reject { reason: RejectReason::Duplicate, duplicate_of: None, note: "".into() },
        )
        .expect("reject");
    exchange(&s.store, &w.store);
    assert_eq!(w.store.get_case(&done.id).expect("get").case.timeline.state.status.label(), "rejected");

    // Unsent changes and an unconfirmed photo hold the case on the phone, however long.
    assert_eq!(w.store.mark_settled().expect("mark"), 0);
    w.clock.set(NOW + 400 * DAY);
    assert_eq!(w.store.remove_settled_cases(keep).expect("retention").cases, 0);

    w.clock.set(NOW);
    as_if_synced(&w.store);
    assert_eq!(w.store.mark_settled().expect("mark"), 1, "only the finished case settles");
    w.clock.set(NOW + 30 * DAY - 1);
    assert_eq!(w.store.remove_settled_cases(keep).expect("retention").cases, 0, "not before its days");
    let photo_sha = w.store.get_case(&done.id).expect("get").case.evidence[0].sha256.clone();
    w.clock.set(NOW + 30 * DAY);
    let removed = w.store.remove_settled_cases(keep).expect("retention");
    assert_eq!((removed.cases, removed.files), (1, 2), "the case, its photo and its thumbnail");
    assert!(removed.bytes > 0);
    assert!(matches!(w.store.get_case(&done.id), Err(CoreError::UnknownCase { .. })));
    assert!(w.store.read_evidence(&photo_sha).is_err());
    let listed = w.store.list_cases(&CaseQuery { limit: 10, ..Default::default() }).expect("list");
    assert_eq!(listed.items.iter().map(|c| c.id).collect::<Vec<_>>(), vec![open.id], "the open case stays");
    let found = w.store.list_cases(&CaseQuery { text: Some("堆物".into()), limit: 10, ..Default::default() });
    assert!(found.expect("search").items.is_empty(), "gone from search too");
    assert_eq!(w.store.removed_case_count().expect("count"), 1);
    assert!(w.store.waiting_documents().expect("waiting").is_empty());

    // A second supervisor accepted it offline, before the rejection reached them. That change
    // alone cannot be applied on the phone; it waits, and the phone knows to ask for the rest.
    s2.store.record_event(&done.id, EventKind::Accept { note: String::new() }).expect("accept");
    let late: Vec<Vec<u8>> = s2.store.outbox_page(usize::MAX).expect("outbox").into_iter().map(|i| i.bytes).collect();
    let r = w.store.receive_changes(&done.id, &late).expect("receive");
    assert_eq!(r.waiting_for_dependencies, 1);
    assert_eq!(w.store.waiting_documents().expect("waiting"), vec![done.id.to_string()]);
    exchange(&s2.store, &w.store);
    exchange(&s.store, &w.store);
    let back = w.store.get_case(&done.id).expect("back on the phone");
    assert_eq!(back.case.timeline.state.status.label(), "contested", "the conflict is shown, not hidden");
    assert!(w.store.waiting_documents().expect("waiting").is_empty());
    assert_eq!(w.store.removed_case_count().expect("count"), 0);
    assert_eq!(w.store.mark_settled().expect("mark"), 0, "a contested case is not finished");
}

#[test]
fn a_photo_linked_to_a_case_and_a_check_in_is_offered_with_an_owner_that_exists() {
    let f = fixture("w1", Role::Worker);
    let patrol = f.store.start_patrol(&GridId::from("g1")).expect("start");
    // "case" sorts before "check_in", and a check-in made before the case has the smaller
    // (time-ordered) id: each column's minimum picked separately paired the one's kind with the
    // other's id.
    let mut owners: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for seed in 0..8 {
        // Sizes differ so every photo is a file of its own (thumbnails may still coincide).
        let photo = camera_like_jpeg(320 + 16 * seed, 240, &ExifSpec::default(), u64::from(seed));
        // The check-in first: its id (time-ordered) sorts before the case's.
        let check_in = f
            .store
            .check_in(CheckInInput {
                patrol,
                point: None,
                location: Location::gps(31.2011, 121.4011, 5.0, NOW),
                note: String::new(),
                photo: Some(photo.clone()),
            })
            .expect("check in");
        let mut case = new_case("same picture twice");
        case.photos = vec![photo.clone()];
        let case = f.store.capture_case(case).expect("capture");
        let photo = check_in.photo.expect("photo");
        for sha in std::iter::once(photo.sha256).chain(photo.thumb_sha256) {
            let links = owners.entry(sha).or_default();
            links.push(format!("case {}", case.id));
            links.push(format!("check_in {}", check_in.id));
        }
    }
    // The server has every change and record: the files may go.
    let seqs: Vec<i64> = f.store.outbox_page(usize::MAX).expect("outbox").iter().map(|i| i.seq).collect();
    f.store.acknowledge(&seqs).expect("ack");
    let blobs = f.store.uploadable_blobs().expect("uploadable");
    assert_eq!(blobs.len(), owners.len(), "each file offered once: {blobs:?}");
    for b in blobs {
        let owner = match &b.owner {
            gridwork_model::wire::BlobOwner::Case(id) => format!("case {id}"),
            gridwork_model::wire::BlobOwner::CheckIn(id) => format!("check_in {id}"),
        };
        assert!(owners[&b.sha256].contains(&owner), "{b:?} is offered with an owner it is not linked to");
    }
}

#[test]
fn the_device_key_is_kept_by_the_store_and_its_chain_runs_on_across_opens_and_a_reoffer() {
    use gridwork_model::signing::{link_hash, statement, verify, LinkKind};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Arc::new(crate::signing::DeviceKey::generate().expect("key"));
    let mut who = identity("w1", Role::Worker);
    who.signing_key = Some(key.clone());
    let store = Store::open(OpenOptions::new(dir.path(), &KEY, who.clone())).expect("open");
    store.import_catalog(&catalog()).expect("catalog");
    store.capture_case(new_case("first")).expect("capture");
    drop(store);
    // Opened again without the key (the app passes it only after enrolment): the store's is used.
    who.signing_key = None;
    let store = Store::open(OpenOptions::new(dir.path(), &KEY, who.clone())).expect("reopen");
    assert_eq!(store.signing_public_key(), Some(key.public_key_b64()));
    let patrol = store.start_patrol(&GridId::from("g1")).expect("patrol");
    store.capture_case(new_case("second")).expect("capture");
    let check = |items: &[OutboxItem]| {
        let mut prev = String::new();
        for (i, item) in items.iter().enumerate() {
            let link = item.link.clone().expect("every item signed");
            assert_eq!(link.seq, i as u64 + 1, "places in the order made");
            assert_eq!(link.prev, prev, "each names the one before");
            let kind = if item.kind == OutboxKind::Record { LinkKind::Record } else { LinkKind::Change };
            let st = statement(&who.device.0, link.seq, &link.prev, kind, &item.key, &item.bytes);
            verify(&key.public_key_b64(), &st, &link.sig).expect("the signature covers the bytes queued");
            prev = link_hash(&st);
        }
    };
    let items = store.outbox_page(usize::MAX).expect("outbox");
    assert_eq!(items.len(), 3);
    assert_eq!(items[1].key, patrol.to_string());
    check(&items);
    // Acknowledged, then offered again to a server restored from a backup: the same links, in
    // chain order (changes and records interleaved as they were made).
    store.acknowledge(&items.iter().map(|i| i.seq).collect::<Vec<_>>()).expect("ack");
    {
        let mut conn = store.writer();
        let tx = conn.transaction().expect("tx");
        store.reoffer_in(&tx).expect("reoffer");
        tx.commit().expect("commit");
    }
    let again = store.outbox_page(usize::MAX).expect("outbox");
    assert_eq!(
        again.iter().map(|i| i.link.clone()).collect::<Vec<_>>(),
        items.iter().map(|i| i.link.clone()).collect::<Vec<_>>()
    );
    check(&again);
}
