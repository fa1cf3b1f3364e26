//! `gridwork-bench device --year`: a worker's phone as a year in the field leaves it.
//!
//! One grid, one year of weeks on a clock that starts a year ago. Each week the worker checks in
//! on patrol, reports cases (some with photos, some check-ins with photos), and visits the
//! residents of handled cases; colleagues report more cases in the same grid; the community
//! supervisor triages and closes; the police start and finish what is dispatched to them. Every
//! phone syncs weekly with a real server, so the worker's store holds its own work, the scope's
//! other cases pulled, and finished cases leaving 30 days after they settle — through the same
//! code a phone runs, not rows written behind its back.
//!
//! The last week the worker is offline. Its first sync after that week runs in a fresh child
//! process (`device-year-phone`), so the peak memory reported is the phone process's own: the
//! server stays in this one. Then the store is measured as it stands: size on disk, open time,
//! list and search latency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use gridwork_core::clock::FixedClock;
use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::access::Scope;
use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::{CaseId, DepartmentId, DeviceId, UserId};
use gridwork_core::model::lifecycle::{EventKind, RejectReason, Status};
use gridwork_core::store::{CaseQuery, CheckInInput, Identity, SortOrder, Store};
use gridwork_core::sync::{enrol, SyncConfig, SyncReport};
use gridwork_sync_server::{AdminStore, SqliteStore, SyncStore};
use gridwork_tests::{district, grid_centre, identity_from_enrolment, open_device, random_case, Rng};

use super::{counting_alloc, line, ms_since, progress, round3, stats};

const DAY_MS: i64 = 24 * 3_600_000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// A year's work, per week. A year is about 5,000 cases seen in the grid (30 the worker's own,
/// 70 the colleagues'), 12,000 check-ins and 1,000 photos.
pub struct YearArgs {
    pub weeks: usize,
    pub own_cases: usize,
    pub others_cases: usize,
    pub checkins: usize,
    pub case_photos: usize,
    pub checkin_photos: usize,
}

impl Default for YearArgs {
    fn default() -> Self {
        YearArgs { weeks: 52, own_cases: 30, others_cases: 70, checkins: 240, case_photos: 15, checkin_photos: 5 }
    }
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<YearArgs, String> {
    let mut a = YearArgs::default();
    while let Some(flag) = it.next() {
        let mut number = || -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--year" => {}
            "--weeks" => a.weeks = number()?.max(2),
            "--own-cases" => a.own_cases = number()?,
            "--others-cases" => a.others_cases = number()?,
            "--checkins" => a.checkins = number()?,
            "--case-photos" => a.case_photos = number()?,
            "--checkin-photos" => a.checkin_photos = number()?,
            other => return Err(format!("unknown flag {other} (device --year takes --weeks, --own-cases, --others-cases, --checkins, --case-photos, --checkin-photos)")),
        }
    }
    Ok(a)
}

struct Phone {
    name: &'static str,
    store: Store,
    config: SyncConfig,
    token: String,
    identity: Identity,
}

impl Phone {
    fn sync(&self) -> Result<SyncReport, String> {
        let r = self.store.sync(&self.config, &mut |_| {}).map_err(|e| format!("{} sync: {e}", self.name))?;
        if !r.refused.is_empty() || !r.quarantined.is_empty() || !r.photo_errors.is_empty() {
            return Err(format!(
                "{}: the server refused {:?}, quarantined {:?}, photo errors {:?}",
                self.name, r.refused, r.quarantined, r.photo_errors
            ));
        }
        Ok(r)
    }

    fn act(&self, id: &CaseId, kind: EventKind) -> Result<(), String> {
        self.store.record_event(id, kind).map(drop).map_err(|e| format!("{}: {e}", self.name))
    }

    /// Every case this phone holds in `status`, page by page as the app lists them.
    fn cases_in(&self, status: Status) -> Result<Vec<CaseId>, String> {
        let mut out = vec![];
        let mut q = CaseQuery { statuses: vec![status], limit: 200, sort: SortOrder::Updated, ..Default::default() };
        loop {
            let page = self.store.list_cases(&q).map_err(|e| e.to_string())?;
            out.extend(page.items.into_iter().map(|c| c.id));
            match page.next {
                Some(n) => q.after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

/// A fate decided by the case, so it stays the same week after week: one case in ten is
/// rejected, one in ten waits on the department all year, the rest go through to closure.
fn fate(id: &CaseId) -> u64 {
    id.to_string().bytes().fold(1469598103934665603u64, |h, b| (h ^ u64::from(b)).wrapping_mul(1099511628211)) % 10
}

fn enrol_phone(
    server: &SqliteStore,
    url: &str,
    name: &'static str,
    dir: &Path,
    catalog: &Catalog,
    clock: &Arc<FixedClock>,
) -> Result<Phone, String> {
    let (_, code) = server.enrol_device(name, 0).map_err(|e| e.to_string())?;
    let e = enrol(url, &code, None, "0.1.0").map_err(|e| format!("enrolling {name}: {e}"))?;
    let identity = identity_from_enrolment(&e);
    let store = open_device(dir, identity.clone(), catalog, Some(clock.clone())).map_err(|e| e.to_string())?;
    Ok(Phone { name, store, config: SyncConfig::new(url, e.token.clone()), token: e.token, identity })
}

/// Bytes of every file under `dir` (database, its journal, photo files).
fn size_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_on_disk(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// This process's peak and current resident memory, from /proc (Linux).
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub fn run(args: YearArgs) -> Result<(), String> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let catalog = district(100);
    let year_ago = gridwork_sync_server::clock::now_ms() - i64::try_from(args.weeks).unwrap_or(52) * WEEK_MS;
    let clock = Arc::new(FixedClock::new(year_ago));

    let server = Arc::new(SqliteStore::open(&dir.path().join("server")).map_err(|e| e.to_string())?);
    server.import_catalog(&catalog).map_err(|e| e.to_string())?;
    let g0 = catalog.grids[0].clone();
    for user in ["worker", "colleague"] {
        server.set_user(user, Role::Worker, None, &[Scope::Grid(g0.id.clone())]).map_err(|e| e.to_string())?;
    }
    server
        .set_user("supervisor", Role::Supervisor, None, &[Scope::Community(g0.community.clone())])
        .map_err(|e| e.to_string())?;
    server
        .set_user("police", Role::DepartmentHandler, Some("police"), &[Scope::Department("police".into())])
        .map_err(|e| e.to_string())?;
    let running =
        gridwork_sync_server::start(server.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().map_err(|_| "addr")?)
            .map_err(|e| e.to_string())?;
    let url = running.url();
    let phones = dir.path().join("phones");
    let worker_dir = phones.join("worker");
    let worker = enrol_phone(&server, &url, "worker", &worker_dir, &catalog, &clock)?;
    let colleague = enrol_phone(&server, &url, "colleague", &phones.join("colleague"), &catalog, &clock)?;
    let supervisor = enrol_phone(&server, &url, "supervisor", &phones.join("supervisor"), &catalog, &clock)?;
    let police = enrol_phone(&server, &url, "police", &phones.join("police"), &catalog, &clock)?;

    progress(&format!(
        "a year in the field: {} weeks; each week the worker checks in {} times, reports {} cases ({} with a photo, {} check-ins with one), colleagues report {}",
        args.weeks, args.checkins, args.own_cases, args.case_photos, args.checkin_photos, args.others_cases
    ));
    let (lat, lon) = grid_centre(&catalog, 0);
    let mut rng = Rng::new(2026);
    let mut photo_seed = 0u64;
    let mut photo = |rng: &mut Rng| {
        photo_seed += 1;
        // A distinct picture each time (the store keeps one file per distinct photo), at a
        // size whose stored JPEG is what a 12 MP capture stores: 1600 px on the long edge.
        camera_like_jpeg(
            1600,
            1200,
            &ExifSpec {
                orientation: Some(1),
                time: Some("2026:06:01 10:00:00".into()),
                gps: Some((lat + (rng.unit() - 0.5) * 1e-3, lon + (rng.unit() - 0.5) * 1e-3)),
                ..Default::default()
            },
            // `camera_like_rgb` starts its noise at `seed | 1`: odd seeds only, or pairs coincide.
            2 * photo_seed + 1,
        )
    };
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    let mut offline_work_ms = 0.0;
    let mut removed = 0usize;
    let last = args.weeks - 1;
    for week in 0..args.weeks {
        let week_start = year_ago + i64::try_from(week).unwrap_or(0) * WEEK_MS;
        clock.set(week_start + 8 * 3_600_000);
        let t = Instant::now();

        // The worker's week, offline until the weekly sync: patrols, reports, visits.
        let patrol = worker.store.start_patrol(&g0.id).map_err(|e| e.to_string())?;
        for i in 0..args.checkins {
            clock.advance(60_000);
            let pt = &g0.points[i % g0.points.len()];
            let with_photo = i < args.checkin_photos;
            worker
                .store
                .check_in(CheckInInput {
                    patrol,
                    point: Some(pt.id.clone()),
                    location: Location::gps(
                        pt.lat + (rng.unit() - 0.5) * 1e-4,
                        pt.lon + (rng.unit() - 0.5) * 1e-4,
                        5.0,
                        clock_now(&clock),
                    ),
                    note: String::new(),
                    photo: with_photo.then(|| photo(&mut rng)),
                })
                .map_err(|e| format!("check-in: {e}"))?;
            *totals.entry("checkins").or_default() += 1;
            *totals.entry("photos").or_default() += usize::from(with_photo);
        }
        worker.store.finish_patrol(&patrol).map_err(|e| e.to_string())?;
        for i in 0..args.own_cases {
            clock.advance(600_000);
            let mut case = random_case(&mut rng, &catalog, 0, clock_now(&clock));
            if i < args.case_photos {
                case.photos = vec![photo(&mut rng)];
                *totals.entry("photos").or_default() += 1;
            }
            worker.store.capture_case(case).map_err(|e| format!("capture: {e}"))?;
            *totals.entry("own_cases").or_default() += 1;
        }
        for id in worker.cases_in(Status::Handled)? {
            clock.advance(60_000);
            worker.act(&id, EventKind::FollowUp { satisfaction: 4, note: "回访居民".into() })?;
        }
        if week == last {
            offline_work_ms = ms_since(t);
        }

        // Colleagues report in the same grid.
        clock.set(week_start + 2 * DAY_MS);
        for _ in 0..args.others_cases {
            clock.advance(600_000);
            colleague
                .store
                .capture_case(random_case(&mut rng, &catalog, 0, clock_now(&clock)))
                .map_err(|e| format!("colleague capture: {e}"))?;
            *totals.entry("others_cases").or_default() += 1;
        }
        colleague.sync()?;

        // The worker's weekly sync (all but the last week, which stays offline).
        clock.set(week_start + 3 * DAY_MS);
        if week != last {
            removed += worker.sync()?.finished_cases_removed;
        }

        // The supervisor triages and closes; the police handle what is dispatched.
        clock.set(week_start + 4 * DAY_MS);
        supervisor.sync()?;
        for id in supervisor.cases_in(Status::Reported)? {
            clock.advance(30_000);
            if fate(&id) == 1 {
                supervisor.act(
                    &id,
                    EventKind::Reject {
                        reason: RejectReason::Duplicate, duplicate_of: None, note: "重复上报".into()
                    },
                )?;
            } else {
                supervisor.act(&id, EventKind::Accept { note: "已受理".into() })?;
                supervisor.act(
                    &id,
                    EventKind::Dispatch {
                        departments: vec![DepartmentId::from("police")],
                        deadline_ms: clock_now(&clock) + 5 * DAY_MS,
                    },
                )?;
            }
        }
        for id in supervisor.cases_in(Status::FollowedUp)? {
            clock.advance(30_000);
            supervisor.act(&id, EventKind::Close { note: "核查属实".into() })?;
        }
        supervisor.sync()?;
        clock.set(week_start + 5 * DAY_MS);
        police.sync()?;
        for id in police.cases_in(Status::Dispatched)? {
            if fate(&id) == 2 {
                continue;
            }
            clock.advance(30_000);
            let dept = DepartmentId::from("police");
            police.act(&id, EventKind::Start { department: dept.clone() })?;
            police.act(&id, EventKind::HandlerReport { department: dept, note: "已处置".into(), evidence: vec![] })?;
        }
        police.sync()?;
        if (week + 1) % 4 == 0 || week == last {
            progress(&format!(
                "  week {} / {}: {} cases in the grid, {} check-ins, {} photos, {} finished cases left the phone ({:.0} s)",
                week + 1,
                args.weeks,
                totals.get("own_cases").unwrap_or(&0) + totals.get("others_cases").unwrap_or(&0),
                totals.get("checkins").unwrap_or(&0),
                totals.get("photos").unwrap_or(&0),
                removed,
                started.elapsed().as_secs_f64()
            ));
        }
    }

    // The first sync after the offline week, in a phone process of its own.
    clock.set(year_ago + i64::try_from(args.weeks).unwrap_or(52) * WEEK_MS);
    let now = clock_now(&clock);
    let identity = worker.identity.clone();
    let token = worker.token.clone();
    let outbox = worker.store.outbox_len().map_err(|e| e.to_string())?;
    drop(worker);
    progress(&format!(
        "the worker comes back after a week offline ({outbox} changes and records waiting); syncing in a fresh phone process"
    ));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("device-year-phone")
        .arg(&worker_dir)
        .args([
            url.as_str(),
            token.as_str(),
            &now.to_string(),
            &identity.user.0,
            &identity.device.0,
            &identity.device_code,
        ])
        .output()
        .map_err(|e| format!("cannot start the phone process: {e}"))?;
    if !out.status.success() {
        return Err(format!("the phone process failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let child: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the phone process printed no result ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
    let mut sync_line =
        serde_json::json!({ "bench": "device_year_week_offline_sync", "offline_work_ms": round3(offline_work_ms) });
    if let (Some(m), Some(c)) = (sync_line.as_object_mut(), child.as_object()) {
        m.extend(c.clone());
    }
    println!("{sync_line}");

    // The store as the year left it.
    let store = open_device(&worker_dir, identity.clone(), &catalog, Some(clock.clone())).map_err(|e| e.to_string())?;
    let held = store.document_ids().map_err(|e| e.to_string())?.len();
    let removed_total = store.removed_case_count().map_err(|e| e.to_string())?;
    drop(store);
    let mut opens = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        let s = open_device(&worker_dir, identity.clone(), &catalog, Some(clock.clone())).map_err(|e| e.to_string())?;
        opens.push(ms_since(t));
        drop(s);
    }
    let store = open_device(&worker_dir, identity.clone(), &catalog, Some(clock.clone())).map_err(|e| e.to_string())?;
    let (list, search) = list_and_search(&store)?;
    let (db_bytes, all_bytes) = (size_on_disk_matching(&worker_dir, false), size_on_disk(&worker_dir));
    line(
        "device_year_store",
        &stats(opens),
        &[
            ("what", "open_ms".into()),
            ("store_mb", round3(all_bytes as f64 / 1048576.0).into()),
            ("database_mb", round3(db_bytes as f64 / 1048576.0).into()),
            ("photo_files_mb", round3(all_bytes.saturating_sub(db_bytes) as f64 / 1048576.0).into()),
            ("photo_files", count_files(&worker_dir).saturating_sub(count_db_files(&worker_dir)).into()),
            ("cases_held", held.into()),
            ("cases_removed_by_retention", removed_total.into()),
            ("cases_seen", (totals.get("own_cases").unwrap_or(&0) + totals.get("others_cases").unwrap_or(&0)).into()),
            ("checkins", (*totals.get("checkins").unwrap_or(&0)).into()),
            ("photos", (*totals.get("photos").unwrap_or(&0)).into()),
            ("weeks", args.weeks.into()),
            ("build_s", round3(started.elapsed().as_secs_f64()).into()),
        ],
    );
    line("device_year_list", &list.0, &[("p50_p99_ms_by_shape", list.1.into()), ("cases_held", held.into())]);
    line("device_year_search", &search.0, &[("p50_p99_ms_by_shape", search.1.into()), ("cases_held", held.into())]);
    drop(running);
    Ok(())
}

fn clock_now(clock: &FixedClock) -> i64 {
    use gridwork_core::clock::DeviceClock;
    clock.now().wall_ms
}

/// Files under `dir`, at any depth.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// The database's own files (database, journal, shared memory) in a phone's directory.
fn count_db_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().contains(".db")).count())
        .unwrap_or(0)
}

/// Bytes of the database files alone (`photo_files == false`) under a phone's directory.
fn size_on_disk_matching(dir: &Path, photo_files: bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m)))
        .filter(|(_, m)| m.is_file())
        .filter(|(p, _)| photo_files != p.file_name().is_some_and(|n| n.to_string_lossy().contains(".db")))
        .map(|(_, m)| m.len())
        .sum()
}

type Timings = (super::Stats, serde_json::Map<String, serde_json::Value>);

/// The app's list shapes and its searches, first and second pages, on the year's store.
fn list_and_search(store: &Store) -> Result<(Timings, Timings), String> {
    let lists: Vec<(&str, CaseQuery)> = vec![
        ("all_by_updated", CaseQuery { limit: 50, ..Default::default() }),
        ("assigned_to_me", CaseQuery { assigned_to_me: true, limit: 50, ..Default::default() }),
        ("overdue", CaseQuery { overdue: true, limit: 50, ..Default::default() }),
        (
            "status_dispatched_by_deadline",
            CaseQuery {
                statuses: vec![Status::Dispatched],
                sort: SortOrder::Deadline,
                limit: 50,
                ..Default::default()
            },
        ),
        ("status_handled", CaseQuery { statuses: vec![Status::Handled], limit: 50, ..Default::default() }),
    ];
    let searches: Vec<(&str, CaseQuery)> = vec![
        ("two_characters_漏水", CaseQuery { text: Some("漏水".into()), limit: 50, ..Default::default() }),
        ("word_block", CaseQuery { text: Some("block".into()), limit: 50, ..Default::default() }),
        ("phrase_巡查发现", CaseQuery { text: Some("巡查发现".into()), limit: 50, ..Default::default() }),
        (
            "text_and_status",
            CaseQuery {
                text: Some("噪音".into()),
                statuses: vec![Status::Dispatched],
                limit: 50,
                ..Default::default()
            },
        ),
        ("no_match", CaseQuery { text: Some("长颈鹿".into()), limit: 50, ..Default::default() }),
    ];
    let time = |shapes: &[(&str, CaseQuery)]| -> Result<Timings, String> {
        let mut all = vec![];
        let mut by_shape = serde_json::Map::new();
        for (name, q) in shapes {
            let mut samples = vec![];
            for round in 0..100 {
                let mut q = q.clone();
                // Second pages too: keyset paging must cost what the first page costs.
                if round % 2 == 1 {
                    q.after = store.list_cases(&q).map_err(|e| e.to_string())?.next;
                }
                let t = Instant::now();
                std::hint::black_box(store.list_cases(&q).map_err(|e| e.to_string())?);
                samples.push(ms_since(t));
            }
            all.extend(samples.iter().copied());
            let st = stats(samples);
            by_shape.insert((*name).to_owned(), serde_json::json!([round3(st.p50), round3(st.p99)]));
        }
        Ok((stats(all), by_shape))
    };
    Ok((time(&lists)?, time(&searches)?))
}

/// The child: open the worker's store in a fresh process and sync once, printing one JSON object.
pub fn phone_child(mut args: impl Iterator<Item = String>) -> Result<(), String> {
    let mut next = |what: &str| args.next().ok_or(format!("device-year-phone needs {what}"));
    let dir = PathBuf::from(next("DIR")?);
    let url = next("URL")?;
    let token = next("TOKEN")?;
    let now: i64 = next("NOW_MS")?.parse().map_err(|_| "NOW_MS takes a number")?;
    let identity = Identity {
        user: UserId(next("USER")?),
        role: Role::Worker,
        device: DeviceId(next("DEVICE")?),
        device_code: next("DEVICE_CODE")?,
        department: None,
        // The store kept the key it was first opened with.
        signing_key: None,
    };
    let (_, rss_start) = rss_kb();
    let clock = Arc::new(FixedClock::new(now));
    let t = Instant::now();
    let store = open_device(&dir, identity, &district(100), Some(clock)).map_err(|e| e.to_string())?;
    let open_ms = ms_since(t);
    let (_, rss_open) = rss_kb();
    let config = SyncConfig::new(url, token);
    let baseline = counting_alloc::reset();
    let t = Instant::now();
    let r = store.sync(&config, &mut |_| {}).map_err(|e| e.to_string())?;
    let sync_ms = ms_since(t);
    let heap_peak = counting_alloc::peak_since(baseline);
    let (hwm, _) = rss_kb();
    let pages_at_least =
        (r.bytes_up.div_ceil(config.max_push_bytes as u64)).max(r.bytes_down.div_ceil(config.max_pull_bytes));
    println!(
        "{}",
        serde_json::json!({
            "first_open_ms": round3(open_ms),
            "sync_ms": round3(sync_ms),
            "round_trips": r.round_trips,
            "pages_at_least": pages_at_least,
            "pushed": r.pushed,
            "pulled_docs": r.pulled_docs,
            "pulled_changes": r.pulled_changes,
            "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down,
            "photos_uploaded": r.photos_uploaded,
            "photo_bytes_up": r.photo_bytes_up,
            "thumbnails_fetched": r.thumbnails_fetched,
            "finished_cases_removed": r.finished_cases_removed,
            "refused": r.refused.len(),
            "heap_peak_mb": round3(heap_peak as f64 / 1048576.0),
            "rss_peak_mb": round3(hwm as f64 / 1024.0),
            "rss_before_open_mb": round3(rss_start as f64 / 1024.0),
            "rss_after_open_mb": round3(rss_open as f64 / 1024.0),
        })
    );
    Ok(())
}
