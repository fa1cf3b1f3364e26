//! The demo: a simulated district going offline and coming back.
//!
//!   gridwork-demo [--devices N] [--cases N] [--checkins N] [--data-dir DIR] [--no-console]
//!
//! Its own crate so that the server links no phone code: the demo drives real gridwork-core
//! stores (image, reqwest, SQLCipher) against `gridwork-sync-server` as a library.
//!
//! Starts the sync server on loopback with its embedded store, seeds a district (grids with
//! patrol points, workers, supervisors, a police handler) and enrols one phone per worker. Each
//! phone is a real gridwork-core store on disk. With no network, every worker patrols their grid
//! (check-ins at patrol points) and reports cases, one in five with a photo. Then every phone
//! syncs at once; supervisors triage and dispatch; the department and the workers sync again.
//! Some cases go further — rejected, handled by the police, visited again by their worker,
//! closed; a few dispatched with a deadline already past — so the console shows every state.
//! It prints what supervisors see and a final JSON line:
//! `{"devices":…,"cases":…,"checkins":…,"photos":…,"converged":…,"lost":0,"duplicated":0,"elapsed_s":…}`.
//! "converged" means every phone holds exactly the cases of its scope, with the server's heads,
//! and has nothing left to send: no outbox item, no photo the server has not confirmed.
//!
//! Then, unless `--no-console`, the server keeps running and the supervisor console waits at
//! the printed URL with demo sign-ins, until Ctrl-C.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::access::Scope;
use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::{CaseId, GridId};
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::store::{CaseQuery, CheckInInput};
use gridwork_core::sync::{enrol, SyncConfig};
use gridwork_core::Store;
use gridwork_sync_server::{AdminStore, SqliteStore, SyncStore};
use sim::{district, for_each_index, identity_from_enrolment, open_device, random_case, Rng};

pub mod sim;

/// What the demo runs: `gridwork-demo --help` prints this.
#[derive(Debug, clap::Parser)]
#[command(
    name = "gridwork-demo",
    version,
    about = "A district goes offline and comes back, through the real sync server; then the supervisor console waits."
)]
pub struct Args {
    /// Workers (one phone and one grid each); grids are grouped ten to a community.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub devices: u32,
    /// Cases each worker reports offline.
    #[arg(long, default_value_t = 20)]
    pub cases: u32,
    /// Patrol check-ins per worker.
    #[arg(long, default_value_t = 8)]
    pub checkins: u32,
    /// Keep the server's and the phones' stores here (by default a temporary directory removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Exit after the final JSON line instead of leaving the supervisor console running.
    #[arg(long)]
    pub no_console: bool,
}

/// The password of every demo console account (printed with the console's URL).
pub const DEMO_PASSWORD: &str = "gridwork-demo";

fn say(msg: &str) {
    eprintln!("gridwork-demo: {msg}");
}

/// A phone: its store and how it reaches the server.
struct Phone {
    user: String,
    store: Store,
    config: SyncConfig,
}

fn enrol_phone(server: &SqliteStore, url: &str, user: &str, dir: &Path, catalog: &Catalog) -> Result<Phone, String> {
    let (_, code) = server.enrol_device(user, now_ms()).map_err(|e| e.to_string())?;
    let e = enrol(url, &code, None, env!("CARGO_PKG_VERSION")).map_err(|e| format!("enrolling {user}: {e}"))?;
    let store = open_device(dir, identity_from_enrolment(&e), catalog, None).map_err(|e| e.to_string())?;
    Ok(Phone { user: user.to_owned(), store, config: SyncConfig::new(url, e.token) })
}

use gridwork_sync_server::clock::now_ms;

/// Runs `f` on every phone from two plain threads (reqwest's blocking client must not run inside
/// a tokio runtime), reporting progress every tenth phone.
fn for_each_phone(
    phones: &[Phone],
    what: &str,
    f: impl Fn(usize, &Phone) -> Result<(), String> + Sync,
) -> Result<(), String> {
    let done = AtomicUsize::new(0);
    let errors = Mutex::new(vec![]);
    for_each_index(
        phones.len(),
        4,
        || (),
        |_, i| {
            if let Err(e) = f(i, &phones[i]) {
                errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{}: {e}", phones[i].user));
            }
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            if n.is_multiple_of(10) || n == phones.len() {
                say(&format!("  {what}: {n}/{}", phones.len()));
            }
        },
    );
    let errors = errors.into_inner().unwrap_or_default();
    match errors.first() {
        Some(e) => Err(format!("{} phones failed to {what}; first: {e}", errors.len())),
        None => Ok(()),
    }
}

fn sync(p: &Phone) -> Result<(), String> {
    p.store.sync(&p.config, &mut |_| {}).map(|_| ()).map_err(|e| e.to_string())
}

/// Runs the demo.
pub fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let (devices, cases, checkins_each) = (args.devices as usize, args.cases as usize, args.checkins as usize);
    let (data_dir, _keep) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("gridwork-demo-").tempdir().map_err(|e| e.to_string())?;
            (t.path().to_owned(), Some(t))
        }
    };
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let catalog = district(devices);
    let communities: BTreeSet<String> = catalog.grids.iter().map(|g| g.community.clone()).collect();

    // The server and its district.
    let server = Arc::new(SqliteStore::open(&data_dir.join("server")).map_err(|e| e.to_string())?);
    server.import_catalog(&catalog).map_err(|e| e.to_string())?;
    for (d, g) in catalog.grids.iter().enumerate() {
        server
            .set_user(&format!("w{d}"), Role::Worker, None, &[Scope::Grid(g.id.clone())])
            .map_err(|e| e.to_string())?;
    }
    for (k, c) in communities.iter().enumerate() {
        server
            .set_user(&format!("sup{k}"), Role::Supervisor, None, &[Scope::Community(c.clone())])
            .map_err(|e| e.to_string())?;
    }
    server
        .set_user("police1", Role::DepartmentHandler, Some("police"), &[Scope::Department("police".into())])
        .map_err(|e| e.to_string())?;
    server.set_user("admin", Role::Administrator, None, &[]).map_err(|e| e.to_string())?;
    {
        use gridwork_sync_server::store::ConsoleStore;
        let console: &dyn ConsoleStore = server.as_ref();
        let people = (0..communities.len()).map(|k| format!("sup{k}")).chain(["police1".into(), "admin".into()]);
        for u in people {
            console.set_password(&u, DEMO_PASSWORD, now_ms()).map_err(|e| e.to_string())?;
        }
    }
    // As `serve` runs it: the upkeep follows the change log (search, escalation schedule) and
    // applies the escalation rules every 2 s.
    let running = gridwork_sync_server::start_serving(
        server.clone() as Arc<dyn SyncStore>,
        "127.0.0.1:0".parse().map_err(|_| "address")?,
        gridwork_sync_server::ServeOptions {
            upkeep: Some(std::time::Duration::from_secs(2)),
            ..gridwork_sync_server::ServeOptions::default()
        },
    )
    .map_err(|e| format!("cannot start the server: {e}"))?;
    let url = running.url();
    say(&format!("sync server on {url}, data in {}", data_dir.display()));
    say(&format!(
        "district: {} grids in {} communities; {} workers, {} supervisors, 1 police handler",
        catalog.grids.len(),
        communities.len(),
        devices,
        communities.len()
    ));

    let dev_dir = |name: &str| data_dir.join("phones").join(name);
    let workers: Vec<Phone> = (0..devices)
        .map(|d| enrol_phone(&server, &url, &format!("w{d}"), &dev_dir(&format!("w{d}")), &catalog))
        .collect::<Result<_, _>>()?;
    let supervisors: Vec<Phone> = (0..communities.len())
        .map(|k| enrol_phone(&server, &url, &format!("sup{k}"), &dev_dir(&format!("sup{k}")), &catalog))
        .collect::<Result<_, _>>()?;
    let police = enrol_phone(&server, &url, "police1", &dev_dir("police1"), &catalog)?;

    // Offline: patrols and reports.
    say(&format!("offline: each worker checks in {} times and reports {} cases", checkins_each, cases));
    let photo = camera_like_jpeg(
        2000,
        1500,
        &ExifSpec { orientation: Some(6), time: Some("2026:11:26 09:30:00".into()), gps: None, ..Default::default() },
        3,
    );
    let captured: Mutex<Vec<(CaseId, String)>> = Mutex::new(vec![]);
    let photos = AtomicUsize::new(0);
    let checkins = AtomicUsize::new(0);
    let capture_started = Instant::now();
    for_each_phone(&workers, "captured", |d, p| {
        let mut rng = Rng::new(d as u64 + 1);
        let grid = GridId(format!("g{d}"));
        let patrol = p.store.start_patrol(&grid).map_err(|e| e.to_string())?;
        let points = &catalog.grids[d].points;
        for i in 0..checkins_each {
            let pt = &points[i % points.len()];
            let location =
                Location::gps(pt.lat + (rng.unit() - 0.5) * 1e-4, pt.lon + (rng.unit() - 0.5) * 1e-4, 5.0, now_ms());
            p.store
                .check_in(CheckInInput {
                    patrol,
                    point: Some(pt.id.clone()),
                    location,
                    note: String::new(),
                    photo: None,
                })
                .map_err(|e| e.to_string())?;
            checkins.fetch_add(1, Ordering::SeqCst);
        }
        p.store.finish_patrol(&patrol).map_err(|e| e.to_string())?;
        for i in 0..cases {
            let mut case = random_case(&mut rng, &catalog, d, now_ms());
            if i % 5 == 0 {
                case.photos = vec![photo.clone()];
                photos.fetch_add(1, Ordering::SeqCst);
            }
            let s = p.store.capture_case(case).map_err(|e| e.to_string())?;
            captured.lock().unwrap_or_else(|p| p.into_inner()).push((s.id, s.code));
        }
        Ok(())
    })?;
    let capture_s = capture_started.elapsed().as_secs_f64();

    // Back online, all at once.
    let sync_started = Instant::now();
    say("back online: every worker's phone syncs");
    for_each_phone(&workers, "synced", |_, p| sync(p))?;
    say("supervisors sync and triage their newest cases: reject, accept, dispatch to the police");
    for_each_phone(&supervisors, "supervisors", |_, p| {
        sync(p)?;
        let newest = p.store.list_cases(&CaseQuery { limit: 12, ..Default::default() }).map_err(|e| e.to_string())?;
        for (i, c) in newest.items.iter().enumerate() {
            let act = |kind: EventKind| p.store.record_event(&c.id, kind).map(drop).map_err(|e| e.to_string());
            match i {
                // The newest stay reported: the queue's first page has work waiting.
                0..=1 => {}
                2 => act(EventKind::Reject {
                    reason: gridwork_core::model::lifecycle::RejectReason::Duplicate,
                    duplicate_of: None,
                    note: "重复上报".into(),
                })?,
                3 => act(EventKind::Accept { note: "已受理".into() })?,
                _ => {
                    act(EventKind::Accept { note: "已受理".into() })?;
                    // Two dispatched with a deadline already past: overdue in the console.
                    let hours = if i < 6 { -2 } else { 12 };
                    act(EventKind::Dispatch {
                        departments: vec!["police".into()],
                        deadline_ms: now_ms() + hours * 3_600_000,
                    })?;
                }
            }
        }
        sync(p)
    })?;
    say("the police handle some of their cases; workers visit the residents; supervisors close");
    sync(&police)?;
    let dispatched =
        police.store.list_cases(&CaseQuery { limit: 500, ..Default::default() }).map_err(|e| e.to_string())?;
    for (i, c) in dispatched.items.iter().enumerate().filter(|(i, _)| i % 4 != 3) {
        let police_dept: gridwork_core::model::ids::DepartmentId = "police".into();
        police
            .store
            .record_event(&c.id, EventKind::Start { department: police_dept.clone() })
            .map_err(|e| e.to_string())?;
        if i % 4 != 2 {
            police
                .store
                .record_event(
                    &c.id,
                    EventKind::HandlerReport { department: police_dept, note: "已处置".into(), evidence: vec![] },
                )
                .map_err(|e| e.to_string())?;
        }
    }
    sync(&police)?;
    for_each_phone(&workers, "synced", |_, p| {
        sync(p)?;
        let mine = p
            .store
            .list_cases(&CaseQuery { assigned_to_me: true, limit: 50, ..Default::default() })
            .map_err(|e| e.to_string())?;
        // Every other visit is still to be made: those cases stay handled.
        for c in mine.items.iter().filter(|c| c.status == "handled").step_by(2) {
            p.store
                .record_event(&c.id, EventKind::FollowUp { satisfaction: 5, note: "居民满意".into() })
                .map_err(|e| e.to_string())?;
        }
        sync(p)
    })?;
    for_each_phone(&supervisors, "supervisors", |_, p| {
        sync(p)?;
        let visited = p
            .store
            .list_cases(&CaseQuery {
                statuses: vec![gridwork_core::model::lifecycle::Status::FollowedUp],
                limit: 50,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        // Every other visited case is closed; the rest wait for the supervisor's check.
        for c in visited.items.iter().skip(1).step_by(2) {
            p.store.record_event(&c.id, EventKind::Close { note: "核查属实".into() }).map_err(|e| e.to_string())?;
        }
        sync(p)
    })?;
    say("everyone syncs once more");
    sync(&police)?;
    for_each_phone(&workers, "synced", |_, p| sync(p))?;
    for_each_phone(&supervisors, "supervisors", |_, p| sync(p))?;
    let sync_s = sync_started.elapsed().as_secs_f64();

    // Verify: nothing lost, nothing duplicated, every phone holds exactly its scope.
    let captured = captured.into_inner().unwrap_or_default();
    let on_server: HashSet<String> =
        workers.iter().flat_map(|p| server.docs_in_scope(&p.user).unwrap_or_default()).collect();
    let lost = captured.iter().filter(|(id, _)| !on_server.contains(&id.to_string())).count();
    let codes: HashSet<&String> = captured.iter().map(|(_, c)| c).collect();
    let duplicated = (captured.len() - codes.len()) + on_server.len().saturating_sub(captured.len());
    let mut converged = true;
    let mut heads_cache: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in workers.iter().chain(&supervisors).chain(std::iter::once(&police)) {
        let expected = server.docs_in_scope(&p.user).map_err(|e| e.to_string())?;
        let mut held: Vec<String> =
            p.store.document_ids().map_err(|e| e.to_string())?.iter().map(|i| i.to_string()).collect();
        held.sort();
        if held != expected {
            say(&format!("{} holds {} cases, its scope has {}", p.user, held.len(), expected.len()));
            converged = false;
            continue;
        }
        for id in &held {
            let want = match heads_cache.get(id) {
                Some(h) => h.clone(),
                None => {
                    let h = server.doc_heads(id).map_err(|e| e.to_string())?;
                    heads_cache.insert(id.clone(), h.clone());
                    h
                }
            };
            let case_id = CaseId::parse(id).map_err(|e| e.to_string())?;
            let mut got = p.store.get_case(&case_id).map_err(|e| e.to_string())?.heads;
            got.sort();
            if got != want {
                converged = false;
            }
        }
        if p.store.outbox_len().map_err(|e| e.to_string())? != 0 {
            say(&format!("{} still has unsent items", p.user));
            converged = false;
        }
        // A phone's photos count too: a case is synced only with its photos on the server.
        let pending = p.store.photos_pending().map_err(|e| e.to_string())?;
        if pending != 0 {
            say(&format!("{} still holds {pending} photos the server has not confirmed", p.user));
            converged = false;
        }
    }
    let blobs_on_server = server.blob_count().map_err(|e| e.to_string())?;
    print_supervisor_view(&supervisors[0], &catalog)?;
    let (bundle_path, bundle_verified) = export_a_closed_case(&server, &supervisors, &data_dir)?;
    let lost_phone_wiped = wipe_a_lost_phone(&server, &url, &catalog, &dev_dir("w0-lost"))?;
    let (late_case_escalated, found_by_code) = escalate_a_late_case(&server)?;

    let summary = serde_json::json!({
        "devices": workers.len() + supervisors.len() + 1,
        "cases": captured.len(),
        "checkins": checkins.load(Ordering::SeqCst),
        "photos": photos.load(Ordering::SeqCst),
        // Photos and thumbnails stored on the server; the demo's phones share one camera image,
        // so identical files are stored once.
        "blobs_on_server": blobs_on_server,
        "converged": converged,
        "lost": lost,
        "duplicated": duplicated,
        "evidence_bundle": bundle_path.display().to_string(),
        "evidence_bundle_verified": bundle_verified,
        "lost_phone_wiped": lost_phone_wiped,
        "late_case_escalated": late_case_escalated,
        "found_by_code": found_by_code,
        "capture_s": (capture_s * 100.0).round() / 100.0,
        "sync_s": (sync_s * 100.0).round() / 100.0,
        "elapsed_s": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    });
    println!("{summary}");
    if !args.no_console {
        wait_in_console(&running.url(), communities.len())?;
    }
    Ok(())
}

/// Exports one closed case's evidence bundle (as `admin export-case` does) next to the server's
/// data, and checks it as `gridwork-verify` would: (path, verified).
fn export_a_closed_case(
    server: &SqliteStore,
    supervisors: &[Phone],
    data_dir: &Path,
) -> Result<(std::path::PathBuf, bool), String> {
    let closed = supervisors
        .iter()
        .filter_map(|p| {
            p.store
                .list_cases(&CaseQuery {
                    statuses: vec![gridwork_core::model::lifecycle::Status::Closed],
                    limit: 1,
                    ..Default::default()
                })
                .ok()
                .and_then(|page| page.items.into_iter().next())
        })
        .next()
        .ok_or("no case was closed: nothing to export")?;
    let bytes = server.export_case(&closed.id.to_string(), "admin", now_ms()).map_err(|e| e.to_string())?;
    let path = data_dir.join(format!("case-{}.gridwork-bundle", closed.code));
    std::fs::write(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let report = gridwork_core::model::bundle::verify(&bytes);
    say(&format!(
        "evidence bundle of closed case {} ({} events, {} KB): {}; check it with `cargo run -p gridwork-verify -- {}`",
        closed.code,
        report.timeline.len(),
        bytes.len() / 1024,
        if report.verified() { "verified" } else { "NOT verified" },
        path.display()
    ));
    Ok((path, report.verified()))
}

/// A case dispatched a week late (its deadline seven days ago, as a backlog would hold): the
/// escalation rules take it to the district on their own, by the server's system person; then a
/// supervisor finds it by its code as a caller would give it. (Escalated, found.)
fn escalate_a_late_case(server: &SqliteStore) -> Result<(bool, bool), String> {
    use gridwork_sync_server::store::console::{CaseFilter, ConsoleAction, ConsoleStore};
    let console: &dyn ConsoleStore = server;
    let (_, session) = console.sign_in("sup0", DEMO_PASSWORD, now_ms()).map_err(|e| e.to_string())?;
    let sup = session.user;
    let accepted = CaseFilter { status: "accepted".into(), ..Default::default() };
    let Some(case) = console.case_queue(&sup, &accepted, now_ms()).map_err(|e| e.to_string())?.rows.into_iter().next()
    else {
        say("no accepted case left to dispatch late: escalation not shown");
        return Ok((false, false));
    };
    let late = EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: now_ms() - 7 * 86_400_000 };
    console.act(&sup, &case.id, ConsoleAction::Event(late), now_ms()).map_err(|e| e.to_string())?;
    // What the upkeep does every 2 s, done now so the summary can say what happened.
    while console.index_for_search(5_000).map_err(|e| e.to_string())?.behind > 0 {}
    let ran = console.run_escalations("demo", now_ms()).map_err(|e| e.to_string())?;
    let view = console.case_view(&sup, &case.id).map_err(|e| e.to_string())?;
    let escalated = view.case.timeline.entries.iter().any(|e| {
        e.event.actor.user.0 == gridwork_sync_server::rules::escalation::SYSTEM_USER
            && matches!(e.event.kind, EventKind::Escalate { .. })
    });
    let found = console.case_by_code(&sup, &case.code).map_err(|e| e.to_string())?.as_deref() == Some(case.id.as_str());
    say(&format!(
        "case {} dispatched with a deadline a week past: the rules applied {} automatic step(s) across the district ({}); searching its code opens it: {}",
        case.code,
        ran.applied,
        if escalated { "escalated to the district" } else { "NOT escalated" },
        if found { "yes" } else { "NO" }
    ));
    // The community's overview, as the page draws it (today's reports: the demo's district is a
    // day old).
    let today = gridwork_core::model::time::DistrictCalendar::default().day_of(now_ms());
    let o = console.overview(&sup, None, (&today, &today), now_ms()).map_err(|e| e.to_string())?;
    let (done, on_time) = o.departments.iter().fold((0, 0), |(d, t), r| (d + r.done, t + r.done_on_time));
    say(&format!(
        "overview of {} for sup0: {} reported today, {} closed (median {} h from report), {} overdue now, {}/{} departments' reports on time",
        o.area.key(),
        o.reported,
        o.closure.first().map_or(0, |c| c.closed),
        o.closure.first().and_then(|c| c.median_hours).map_or("–".to_owned(), |h| h.to_string()),
        o.overdue_by_level.iter().sum::<i64>(),
        on_time,
        done
    ));
    Ok((escalated, found))
}

/// A second phone of worker w0, its store key kept by a (software) keystore vault as the apps
/// keep theirs, is lost with a case it never synced; an administrator wipes it (as `admin
/// wipe-device` does). Its next sync sends the case, then destroys the store. True when the case
/// reached the server and nothing of the store is left but its tombstone.
fn wipe_a_lost_phone(server: &SqliteStore, url: &str, catalog: &Catalog, dir: &Path) -> Result<bool, String> {
    let (_, code) = server.enrol_device("w0", now_ms()).map_err(|e| e.to_string())?;
    let e =
        enrol(url, &code, None, env!("CARGO_PKG_VERSION")).map_err(|e| format!("enrolling w0's second phone: {e}"))?;
    let vault = Arc::new(gridwork_core::vault::SoftwareVault::generate().map_err(|e| e.to_string())?);
    let options =
        gridwork_core::OpenOptions::with_vault(dir, vault, identity_from_enrolment(&e)).map_err(|e| e.to_string())?;
    let store = Store::open(options).map_err(|e| e.to_string())?;
    store.import_catalog(catalog).map_err(|e| e.to_string())?;
    let case = store.capture_case(random_case(&mut Rng::new(404), catalog, 0, 0)).map_err(|e| e.to_string())?;
    server.wipe_device(&e.device_id, now_ms()).map_err(|e| e.to_string())?;
    let report = store.sync(&SyncConfig::new(url, e.token), &mut |_| {}).map_err(|e| e.to_string())?;
    drop(store);
    let on_server = server.doc_heads(&case.id.to_string()).map(|h| !h.is_empty()).unwrap_or(false);
    let left: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    let wiped =
        report.wiped.is_some() && report.wipe_reported && on_server && left == [gridwork_core::store::TOMBSTONE_FILE];
    say(&format!(
        "lost phone {} wiped at an administrator's order: its unsynced case {} {}, {} left of its store",
        e.device_id,
        case.code,
        if on_server { "reached the server first" } else { "DID NOT reach the server" },
        if left == [gridwork_core::store::TOMBSTONE_FILE] {
            "nothing but the tombstone".to_owned()
        } else {
            format!("{left:?}")
        },
    ));
    Ok(wiped)
}

/// Leaves the server running for a person to look around the console, until Ctrl-C.
fn wait_in_console(url: &str, communities: usize) -> Result<(), String> {
    eprintln!("── supervisor console ─────────────────────────────────");
    eprintln!("open {url}/console");
    eprintln!(
        "sign in as sup0…sup{} (a community's supervisor), police1 (police handler) or admin; password {DEMO_PASSWORD}",
        communities.saturating_sub(1)
    );
    eprintln!("Ctrl-C stops the server (add --no-console to exit right after the JSON line)");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(tokio::signal::ctrl_c()).map_err(|e| format!("waiting for Ctrl-C: {e}"))?;
    eprintln!("stopping");
    Ok(())
}

fn print_supervisor_view(sup: &Phone, catalog: &Catalog) -> Result<(), String> {
    let mut all = vec![];
    let mut after = None;
    loop {
        let page = sup
            .store
            .list_cases(&CaseQuery { limit: 200, after: after.clone(), ..Default::default() })
            .map_err(|e| e.to_string())?;
        all.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_grid: BTreeMap<String, usize> = BTreeMap::new();
    for c in &all {
        *by_status.entry(c.status.clone()).or_default() += 1;
        *by_grid.entry(c.grid_id.clone()).or_default() += 1;
    }
    let community = catalog.grids.first().map(|g| g.community.clone()).unwrap_or_default();
    eprintln!("── what supervisor {} ({community}) sees ──────────────", sup.user);
    eprintln!("cases by status: {by_status:?}");
    eprintln!("cases by grid:   {by_grid:?}");
    let leaks = sup
        .store
        .list_cases(&CaseQuery { text: Some("漏水".into()), limit: 500, ..Default::default() })
        .map_err(|e| e.to_string())?;
    eprintln!("search \"漏水\" (water leak): {} cases", leaks.items.len());
    if let Some(first) = all.first() {
        let d = sup.store.get_case(&first.id).map_err(|e| e.to_string())?;
        eprintln!(
            "newest: {} «{}» {}, {} photo(s), {} event(s), reported by {}",
            d.case.code,
            d.case.title.value,
            d.case.timeline.state.status.label(),
            d.case.evidence.len(),
            d.case.timeline.entries.len(),
            d.case.reporter
        );
    }
    eprintln!("──────────────────────────────────────────────────────");
    Ok(())
}
