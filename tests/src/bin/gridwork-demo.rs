//! The demo: a simulated district capturing cases offline.
//!
//!   gridwork-demo [--devices N] [--cases N] [--checkins N] [--data-dir DIR]
//!
//! Each simulated worker has a real gridwork-core store on disk (encrypted SQLite + evidence
//! files). Every worker patrols their grid and reports cases with photos, with no network. Then,
//! until the sync server exists, a supervisor's device receives every worker's changes directly
//! and shows what a supervisor sees. The last line is JSON:
//! `{"devices":…,"cases":…,"checkins":…,"photos":…,"converged":…,"lost":0,"duplicated":0,"elapsed_s":…}`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::Role;
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::{CaseId, GridId};
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::store::{CaseQuery, CheckInInput};
use gridwork_core::Store;
use gridwork_tests::{district, identity, open_device, random_case, Rng};

struct Args {
    devices: usize,
    cases: usize,
    checkins: usize,
    data_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { devices: 40, cases: 20, checkins: 8, data_dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| format!("{flag} takes a number, got {v:?}"));
        match flag.as_str() {
            "--devices" => a.devices = number(value()?)?,
            "--cases" => a.cases = number(value()?)?,
            "--checkins" => a.checkins = number(value()?)?,
            "--data-dir" => a.data_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(
                "usage: gridwork-demo [--devices N] [--cases N per device] [--checkins N per device] [--data-dir DIR]"
                    .into(),
            ),
            other => return Err(format!("unknown flag {other}; try --help")),
        }
    }
    if a.devices == 0 {
        return Err("--devices must be at least 1".into());
    }
    Ok(a)
}

fn main() {
    match parse_args().and_then(run) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("gridwork-demo: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let (data_dir, _keep) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("gridwork-demo-").tempdir().map_err(|e| e.to_string())?;
            (t.path().to_owned(), Some(t))
        }
    };
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    eprintln!("gridwork-demo: data in {}", data_dir.display());
    let grids = args.devices.max(1);
    let catalog = district(grids);
    eprintln!(
        "gridwork-demo: district of {} grids in {} communities; {} workers capture {} cases and {} check-ins each, offline",
        grids,
        grids.div_ceil(10),
        args.devices,
        args.cases,
        args.checkins
    );

    // Photos as a mid-range phone takes them (scaled down so the demo runs in seconds).
    let photo = camera_like_jpeg(
        2000,
        1500,
        &ExifSpec { orientation: Some(6), time: Some("2026:11:26 09:30:00".into()), gps: None },
        3,
    );
    let done = AtomicUsize::new(0);
    let captured: Mutex<Vec<(CaseId, String)>> = Mutex::new(vec![]);
    let totals = Mutex::new((0usize, 0usize)); // (check-ins, photos)
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let d = next.fetch_add(1, Ordering::SeqCst);
                if d >= args.devices {
                    break;
                }
                match simulate_worker(d, &args, &catalog, &data_dir, &photo) {
                    Ok((ids, checkins, photos)) => {
                        captured.lock().unwrap_or_else(|p| p.into_inner()).extend(ids);
                        let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                        t.0 += checkins;
                        t.1 += photos;
                    }
                    Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("worker {d}: {e}")),
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 10 == 0 || n == args.devices {
                    eprintln!("gridwork-demo: {n}/{} devices done capturing", args.devices);
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if let Some(e) = errors.first() {
        return Err(format!("{} workers failed; first: {e}", errors.len()));
    }
    let captured = captured.into_inner().unwrap_or_default();
    let (checkins, photos) = totals.into_inner().unwrap_or_default();
    let capture_s = started.elapsed().as_secs_f64();

    // What a supervisor sees once every phone's changes reach them.
    eprintln!("gridwork-demo: a street supervisor's device receives every worker's changes");
    let sup_dir = data_dir.join("supervisor");
    let supervisor = open_device(&sup_dir, identity("sup-street0", Role::Supervisor, None), &catalog, None)
        .map_err(|e| e.to_string())?;
    let mut outbox_total = 0;
    for d in 0..args.devices {
        let worker = open_worker(d, &catalog, &data_dir)?;
        outbox_total += worker.outbox_len().map_err(|e| e.to_string())?;
        for id in worker.document_ids().map_err(|e| e.to_string())? {
            let changes = worker.export_changes(&id).map_err(|e| e.to_string())?;
            supervisor.receive_changes(&id, &changes).map_err(|e| e.to_string())?;
        }
    }
    // The supervisor triages: accepts the first few and dispatches them.
    let reported = supervisor.list_cases(&CaseQuery { limit: 10, ..Default::default() }).map_err(|e| e.to_string())?;
    for c in &reported.items {
        supervisor.record_event(&c.id, EventKind::Accept { note: "已受理".into() }).map_err(|e| e.to_string())?;
        supervisor
            .record_event(
                &c.id,
                EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: c.created_ms + 12 * 3_600_000 },
            )
            .map_err(|e| e.to_string())?;
    }

    let held: Vec<CaseId> = supervisor.document_ids().map_err(|e| e.to_string())?;
    let held_set: HashSet<CaseId> = held.iter().copied().collect();
    let lost = captured.iter().filter(|(id, _)| !held_set.contains(id)).count();
    let codes: HashSet<&String> = captured.iter().map(|(_, code)| code).collect();
    let duplicated = (held.len() - held_set.len()) + (captured.len() - codes.len());
    let converged = lost == 0 && held.len() == captured.len();
    print_supervisor_view(&supervisor, &catalog)?;

    let summary = serde_json::json!({
        "devices": args.devices,
        "cases": captured.len(),
        "checkins": checkins,
        "photos": photos,
        "outbox_pending": outbox_total,
        "converged": converged,
        "lost": lost,
        "duplicated": duplicated,
        "capture_s": (capture_s * 100.0).round() / 100.0,
        "elapsed_s": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "data_dir": data_dir.display().to_string(),
    });
    println!("{summary}");
    Ok(())
}

fn open_worker(
    d: usize,
    catalog: &gridwork_core::model::catalog::Catalog,
    data_dir: &std::path::Path,
) -> Result<Store, String> {
    open_device(&data_dir.join(format!("device-{d:04}")), identity(&format!("w{d}"), Role::Worker, None), catalog, None)
        .map_err(|e| e.to_string())
}

type WorkerResult = (Vec<(CaseId, String)>, usize, usize);

fn simulate_worker(
    d: usize,
    args: &Args,
    catalog: &gridwork_core::model::catalog::Catalog,
    data_dir: &std::path::Path,
    photo: &[u8],
) -> Result<WorkerResult, String> {
    let store = open_worker(d, catalog, data_dir)?;
    let mut rng = Rng::new(d as u64 + 1);
    let grid = GridId(format!("g{d}"));
    let mut ids = vec![];
    let mut photos = 0;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_millis() as i64).unwrap_or(0);
    let patrol = store.start_patrol(&grid).map_err(|e| e.to_string())?;
    let points = catalog.grids[d].points.clone();
    for i in 0..args.checkins {
        let p = &points[i % points.len()];
        let location = Location::gps(p.lat + (rng.unit() - 0.5) * 1e-4, p.lon + (rng.unit() - 0.5) * 1e-4, 5.0, now);
        store
            .check_in(CheckInInput { patrol, point: Some(p.id.clone()), location, note: String::new(), photo: None })
            .map_err(|e| e.to_string())?;
    }
    for i in 0..args.cases {
        let mut case = random_case(&mut rng, catalog, d, now);
        if i % 5 == 0 {
            case.photos = vec![photo.to_vec()];
            photos += 1;
        }
        let s = store.capture_case(case).map_err(|e| e.to_string())?;
        ids.push((s.id, s.code));
    }
    store.finish_patrol(&patrol).map_err(|e| e.to_string())?;
    Ok((ids, args.checkins, photos))
}

fn print_supervisor_view(sup: &Store, catalog: &gridwork_core::model::catalog::Catalog) -> Result<(), String> {
    let all = collect_all(sup)?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_category: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_community: BTreeMap<String, usize> = BTreeMap::new();
    for c in &all {
        *by_status.entry(c.status.clone()).or_default() += 1;
        *by_category.entry(c.category_id.clone()).or_default() += 1;
        if let Some(g) = catalog.grids.iter().find(|g| g.id.0 == c.grid_id) {
            *by_community.entry(g.community.clone()).or_default() += 1;
        }
    }
    eprintln!("── what the supervisor sees ─────────────────────────────");
    eprintln!("cases by status:    {by_status:?}");
    eprintln!("cases by category:  {by_category:?}");
    eprintln!("cases by community: {by_community:?}");
    let leaks = sup
        .list_cases(&CaseQuery { text: Some("漏水".into()), limit: 500, ..Default::default() })
        .map_err(|e| e.to_string())?;
    eprintln!("search \"漏水\" (water leak): {} cases", leaks.items.len());
    if let Some(first) = all.first() {
        let d = sup.get_case(&first.id).map_err(|e| e.to_string())?;
        eprintln!(
            "newest case {} «{}»: {}, {} photo(s), {} event(s), reported by {} at {:.5},{:.5} ±{:.0} m",
            d.case.code,
            d.case.title.value,
            d.case.timeline.state.status.label(),
            d.case.evidence.len(),
            d.case.timeline.entries.len(),
            d.case.reporter,
            d.case.location.value.lat,
            d.case.location.value.lon,
            d.case.location.value.accuracy_m
        );
    }
    eprintln!("─────────────────────────────────────────────────────────");
    Ok(())
}

fn collect_all(store: &Store) -> Result<Vec<gridwork_core::store::CaseSummary>, String> {
    let mut out = vec![];
    let mut after = None;
    loop {
        let page = store
            .list_cases(&CaseQuery { limit: 200, after: after.clone(), ..Default::default() })
            .map_err(|e| e.to_string())?;
        out.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}
