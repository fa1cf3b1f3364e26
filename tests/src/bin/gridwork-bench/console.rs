//! `gridwork-bench console`: the supervisor console's server time with a district's worth of
//! cases on the server.
//!
//! Seeds the server with `--cases` cases (default 100,000) over `--grids` grids, written as the
//! phones would write them — a worker's report, then for most a supervisor's acceptance, a
//! dispatch (some already overdue) or a rejection — and pushed through the store's sync path, so
//! the console reads what a real district's store holds. Then it times what a page costs the
//! server: the store's query plus building and rendering the page (no network, no browser).
//!
//! One JSON line per page and person: `queue_page` (the queue with a rotation of filters, and
//! random pages) and `case_detail` (random cases), for an administrator who sees every case and
//! for one community's supervisor; `search` (a code, a two-character Chinese word, a reporter) and
//! `overview` (the district overview page, 30 or 60 days, at several areas). Goal: p99 ≤ 50 ms.

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::time::Instant;

use askama::Template;
use automerge::{ActorId, Automerge};
use gridwork_core::model::catalog::{Actor, Role};
use gridwork_core::model::doc::{self, NewCaseDoc};
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::{CaseId, DeviceId, EventId, UserId};
use gridwork_core::model::lifecycle::{Event, EventKind, RejectReason};
use gridwork_core::model::time::ClockStamp;
use gridwork_core::model::wire::{DeviceState, EnrolRequest, PushedChange, SyncRequest, PROTOCOL_VERSION};
use gridwork_sync_server::console::i18n::Lang;
use gridwork_sync_server::console::views::{self, Chrome};
use gridwork_sync_server::rules::overview::Area;
use gridwork_sync_server::store::console::{queue_key, CaseFilter, CaseRow, ConsoleStore};
use gridwork_sync_server::store::Device;
use gridwork_sync_server::{SqliteStore, SyncStore};
use gridwork_tests::{district, grid_centre, Rng, TITLES};

use super::{line, ms_since, progress, stats};

pub struct ConsoleArgs {
    cases: usize,
    grids: usize,
    samples: usize,
    /// Keep the seeded server here and reuse it on the next run (seeding 100,000 cases takes
    /// minutes; the timing takes seconds).
    data_dir: Option<std::path::PathBuf>,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<ConsoleArgs, String> {
    let mut a = ConsoleArgs { cases: 100_000, grids: 100, samples: 300, data_dir: None };
    while let Some(flag) = it.next() {
        if flag == "--data-dir" {
            a.data_dir = Some(it.next().ok_or("--data-dir takes a directory")?.into());
            continue;
        }
        let v: usize = it.next().and_then(|v| v.parse().ok()).ok_or(format!("{flag} takes a number"))?;
        match flag.as_str() {
            "--cases" => a.cases = v,
            "--grids" => a.grids = v.max(1),
            "--samples" => a.samples = v.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// An enrolled device with its Automerge actor.
struct Writer {
    device: Device,
    actor: ActorId,
    pending: Vec<PushedChange>,
    /// Changes that build on another writer's `pending` (a follow-up visit on the department's
    /// report, a close on the visit): pushed after them.
    later: Vec<PushedChange>,
}

fn enrol(server: &SqliteStore, user: &str) -> Result<Writer, String> {
    let (_, code) = server.enrol_device(user, now_ms()).map_err(|e| e.to_string())?;
    let resp = server
        .redeem(&EnrolRequest { code, app_version: "bench".into(), public_key: None }, now_ms())
        .map_err(|e| e.to_string())?;
    let device = server.authenticate(&resp.token).map_err(|e| e.to_string())?;
    Ok(Writer { device, actor: ActorId::random(), pending: vec![], later: vec![] })
}

fn flush(server: &SqliteStore, w: &mut Writer) -> Result<(), String> {
    if w.pending.is_empty() {
        return Ok(());
    }
    let req = SyncRequest {
        protocol: PROTOCOL_VERSION,
        app_version: "bench".into(),
        doc_schema: doc::SCHEMA_VERSION,
        cursor: None,
        state: DeviceState::default(),
        changes: std::mem::take(&mut w.pending),
        records: vec![],
        max_pull_bytes: 1,
        want_full: vec![],
        accept_compacted: false,
    };
    let resp = server.sync(&w.device, req, now_ms()).map_err(|e| e.to_string())?;
    if let Some(bad) = resp.results.iter().find(|r| r.outcome != gridwork_core::model::wire::Outcome::Accepted) {
        return Err(format!("the server did not accept a seeded change: {bad:?}"));
    }
    Ok(())
}

/// Pushes every writer's changes in the order they build on each other: reports, triage, the
/// department's reports, then the visits and closes that follow them.
fn flush_all(
    server: &SqliteStore,
    workers: &mut [Writer],
    supervisors: &mut std::collections::BTreeMap<String, Writer>,
    police: &mut Writer,
) -> Result<(), String> {
    for w in workers.iter_mut() {
        flush(server, w)?;
    }
    for s in supervisors.values_mut() {
        flush(server, s)?;
    }
    flush(server, police)?;
    for w in workers.iter_mut().chain(supervisors.values_mut()) {
        w.pending = std::mem::take(&mut w.later);
        flush(server, w)?;
    }
    Ok(())
}

fn event(w: &Writer, role: Role, kind: EventKind, doc: &Automerge, at_ms: i64) -> Result<Event, String> {
    // A report starts the document: no events before it.
    let (parents, lamport) = match kind {
        EventKind::Report => (vec![], 1),
        _ => doc::next_event_position(doc).map_err(|e| e.to_string())?,
    };
    Ok(Event {
        id: EventId::generate(),
        parents,
        lamport,
        actor: Actor {
            user: UserId::from(w.device.user.as_str()),
            role,
            device: DeviceId::from(w.device.id.as_str()),
            department: None,
        },
        clock: ClockStamp { device_ms: at_ms, since_boot_ms: 0, boot_id: "bench".into(), server_offset_ms: Some(0) },
        kind,
    })
}

fn change_of(doc: &Automerge) -> Result<String, String> {
    use base64::Engine;
    let mut c = doc.get_last_local_change().ok_or("no change")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(c.bytes()))
}

/// Writes the district's cases through the sync path. Returns their ids.
fn seed(server: &SqliteStore, args: &ConsoleArgs) -> Result<Vec<String>, String> {
    let catalog = district(args.grids);
    let now = now_ms();
    let mut workers = vec![];
    for g in &catalog.grids {
        let user = format!("w-{}", g.id);
        server.set_user(&user, Role::Worker, None, &[Scope::Grid(g.id.clone())]).map_err(|e| e.to_string())?;
        workers.push(enrol(server, &user)?);
    }
    let communities: std::collections::BTreeSet<String> = catalog.grids.iter().map(|g| g.community.clone()).collect();
    let mut supervisors = std::collections::BTreeMap::new();
    for c in &communities {
        let user = format!("sup-{}", c.replace(' ', "-"));
        server
            .set_user(&user, Role::Supervisor, None, &[Scope::Community(c.to_string())])
            .map_err(|e| e.to_string())?;
        supervisors.insert(c.clone(), enrol(server, &user)?);
    }
    server
        .set_user("police-bench", Role::DepartmentHandler, Some("police"), &[Scope::Department("police".into())])
        .map_err(|e| e.to_string())?;
    let mut police = enrol(server, "police-bench")?;
    let mut rng = Rng::new(7);
    let mut ids = Vec::with_capacity(args.cases);
    let started = Instant::now();
    for i in 0..args.cases {
        let g = i % catalog.grids.len();
        let grid = &catalog.grids[g];
        let created = now - (rng.unit() * 60.0 * 86_400_000.0) as i64;
        let (lat, lon) = grid_centre(&catalog, g);
        let new = NewCaseDoc {
            id: CaseId::generate(),
            code: format!("B{g}-{i:06}"),
            created_ms: created,
            reporter: UserId::from(workers[g].device.user.as_str()),
            title: TITLES[rng.below(TITLES.len())].to_owned(),
            description: format!("巡查发现，位置在{}号楼附近。", rng.below(40) + 1),
            category: catalog.categories[rng.below(catalog.categories.len())].id.clone(),
            grid: grid.id.clone(),
            location: Location::gps(lat, lon, 5.0, created),
        };
        let mut am = Automerge::new().with_actor(workers[g].actor.clone());
        let report = event(&workers[g], Role::Worker, EventKind::Report, &am, created)?;
        am.transact::<_, _, gridwork_core::model::error::ModelError>(|t| doc::init_case(t, &new, &report))
            .map_err(|f| f.error.to_string())?;
        workers[g].pending.push(PushedChange {
            doc: new.id.to_string(),
            bytes: change_of(&am)?,
            receipt: None,
            link: None,
        });
        // Most cases have been triaged: a quarter stay reported.
        let sup = supervisors.get_mut(&grid.community).ok_or("no supervisor")?;
        let decisions: Vec<EventKind> = match i % 8 {
            0 | 4 => vec![],
            1 => vec![EventKind::Reject { reason: RejectReason::Duplicate, duplicate_of: None, note: String::new() }],
            2 | 5 => vec![EventKind::Accept { note: String::new() }],
            _ => vec![
                EventKind::Accept { note: String::new() },
                // Deadlines from two days ago to five days ahead: some overdue.
                EventKind::Dispatch {
                    departments: vec!["police".into()],
                    deadline_ms: now + ((rng.unit() * 7.0 - 2.0) * 86_400_000.0) as i64,
                },
            ],
        };
        if !decisions.is_empty() {
            let mut sd = am.fork().with_actor(sup.actor.clone());
            for kind in decisions {
                let e = event(sup, Role::Supervisor, kind, &sd, created + 3_600_000)?;
                sd.transact::<_, _, gridwork_core::model::error::ModelError>(|t| doc::put_event(t, &e))
                    .map_err(|f| f.error.to_string())?;
                sup.pending.push(PushedChange {
                    doc: new.id.to_string(),
                    bytes: change_of(&sd)?,
                    receipt: None,
                    link: None,
                });
            }
            // An eighth of the cases go the whole way: the police report it done five hours after
            // the report, the worker visits the resident (a satisfaction of 1 to 5), the supervisor
            // closes it — so the overview's closure and satisfaction have something to count.
            if i % 8 == 3 {
                let change = |d: &Automerge| -> Result<PushedChange, String> {
                    Ok(PushedChange { doc: new.id.to_string(), bytes: change_of(d)?, receipt: None, link: None })
                };
                let mut hd = sd.fork().with_actor(police.actor.clone());
                let done =
                    EventKind::HandlerReport { department: "police".into(), note: String::new(), evidence: vec![] };
                let mut e = event(&police, Role::DepartmentHandler, done, &hd, created + 5 * 3_600_000)?;
                e.actor.department = Some("police".into());
                hd.transact::<_, _, gridwork_core::model::error::ModelError>(|t| doc::put_event(t, &e))
                    .map_err(|f| f.error.to_string())?;
                police.pending.push(change(&hd)?);
                let mut wd = hd.fork().with_actor(workers[g].actor.clone());
                let visit = EventKind::FollowUp { satisfaction: 1 + rng.below(5) as u8, note: String::new() };
                let e = event(&workers[g], Role::Worker, visit, &wd, created + 8 * 3_600_000)?;
                wd.transact::<_, _, gridwork_core::model::error::ModelError>(|t| doc::put_event(t, &e))
                    .map_err(|f| f.error.to_string())?;
                workers[g].later.push(change(&wd)?);
                let mut cd = wd.fork().with_actor(sup.actor.clone());
                let e = event(
                    sup,
                    Role::Supervisor,
                    EventKind::Close { note: String::new() },
                    &cd,
                    created + 10 * 3_600_000,
                )?;
                cd.transact::<_, _, gridwork_core::model::error::ModelError>(|t| doc::put_event(t, &e))
                    .map_err(|f| f.error.to_string())?;
                sup.later.push(change(&cd)?);
            }
        }
        ids.push(new.id.to_string());
        if workers[g].pending.len() >= 400 {
            flush(server, &mut workers[g])?;
        }
        if (i + 1) % 10_000 == 0 {
            flush_all(server, &mut workers, &mut supervisors, &mut police)?;
            progress(&format!("console: {} cases stored ({:.0} s)", i + 1, started.elapsed().as_secs_f64()));
        }
    }
    flush_all(server, &mut workers, &mut supervisors, &mut police)?;
    Ok(ids)
}

pub fn run(args: ConsoleArgs) -> Result<(), String> {
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = args.data_dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let reuse = root.join("server").join("server.db").exists();
    let server = SqliteStore::open(&root.join("server")).map_err(|e| e.to_string())?;
    let seeding = Instant::now();
    if reuse {
        progress(&format!("console: reusing the seeded server in {}", root.display()));
    } else {
        server.import_catalog(&district(args.grids)).map_err(|e| e.to_string())?;
        progress(&format!("console: seeding {} cases over {} grids", args.cases, args.grids));
        seed(&server, &args)?;
    }
    let seed_s = seeding.elapsed().as_secs_f64();
    server.set_user("admin", Role::Administrator, None, &[]).map_err(|e| e.to_string())?;
    let total_cases = server.counts().map_err(|e| e.to_string())?.1;
    let console: &dyn ConsoleStore = &server;
    let catalog = server.current_catalog();
    let grids_per_community = 10.min(args.grids);
    // The search index, as the serving process's upkeep builds it: the seeded server's whole
    // change log the first time, nothing on a reused one already indexed.
    let indexing = Instant::now();
    let mut last_report = Instant::now();
    let indexed = gridwork_sync_server::rules::search::index_all(&server, &catalog, |p| {
        if last_report.elapsed().as_secs() >= 10 {
            progress(&format!("console: search index: {} changes to go", p.behind));
            last_report = Instant::now();
        }
    })
    .map_err(|e| e.to_string())?;
    let index_s = indexing.elapsed().as_secs_f64();
    if indexed > 0 {
        let per_case_ms = index_s * 1000.0 / indexed as f64;
        progress(&format!("console: indexed {indexed} cases for search in {index_s:.1} s ({per_case_ms:.2} ms each)"));
        println!(
            "{}",
            serde_json::json!({"bench": "search_index", "cases": indexed, "total_s": (index_s * 10.0).round() / 10.0,
                "ms_per_case": (per_case_ms * 1000.0).round() / 1000.0})
        );
    }
    for (who, label) in [("admin", "administrator, every case"), ("sup-Community-0", "one community's supervisor")] {
        console.set_password(who, "bench-password", now_ms()).map_err(|e| e.to_string())?;
        let (_, session) = console.sign_in(who, "bench-password", now_ms()).map_err(|e| e.to_string())?;
        let user = session.user;
        let visible = console.case_queue(&user, &CaseFilter::default(), now_ms()).map_err(|e| e.to_string())?.total;
        progress(&format!("console: timing pages for {who} ({label}, {visible} cases)"));
        let mut rng = Rng::new(11);
        // Cases this person can open: the administrator any, the supervisor their community's.
        let everything = CaseFilter { all: true, ..Default::default() };
        let openable: Vec<CaseRow> = console.case_queue(&user, &everything, now_ms()).map_err(|e| e.to_string())?.rows;
        if openable.is_empty() {
            return Err(format!("{who} sees no case"));
        }
        // "deep_page": the next page from anywhere in the queue, as its Next link asks for it.
        const KINDS: [&str; 6] = ["none", "status", "overdue", "grid", "category_status", "deep_page"];
        let filters = |rng: &mut Rng, _pages: u32| -> (usize, CaseFilter) {
            let k = rng.below(6);
            (
                k,
                match k {
                    0 => CaseFilter::default(),
                    1 => CaseFilter { status: "reported".into(), ..Default::default() },
                    2 => CaseFilter { overdue: "1".into(), ..Default::default() },
                    3 => CaseFilter { area: format!("grid:g{}", rng.below(grids_per_community)), ..Default::default() },
                    4 => CaseFilter {
                        category: catalog.categories[0].id.0.clone(),
                        status: "dispatched".into(),
                        ..Default::default()
                    },
                    _ => {
                        let r = &openable[rng.below(openable.len())];
                        CaseFilter { after: queue_key(r.deadline_ms, r.reported_ms, &r.id), ..Default::default() }
                    }
                },
            )
        };
        let mut by_kind: Vec<Vec<f64>> = vec![vec![]; KINDS.len()];
        let pages = console.case_queue(&user, &CaseFilter::default(), now_ms()).map_err(|e| e.to_string())?.pages;
        let mut queue_ms = vec![];
        for _ in 0..args.samples {
            let (kind, filter) = filters(&mut rng, pages);
            let t = Instant::now();
            let q = console.case_queue(&user, &filter, now_ms()).map_err(|e| e.to_string())?;
            // Where the person lands (a status at most), the page shows what needs them too: part
            // of what it costs (as the handler does it, from the queue's own counts).
            let landing = CaseFilter { status: filter.status.clone(), ..Default::default() } == filter;
            let needs = if landing {
                console.needs_you(&user, Some(&q.counts), now_ms()).map_err(|e| e.to_string())?
            } else {
                vec![]
            };
            let chrome = page_chrome("queue", &user.id, &session.csrf);
            let html = views::queue_page(
                chrome,
                &catalog,
                &user,
                filter,
                q,
                views::QueueNotes { needs: &needs, ..Default::default() },
            )
            .render()
            .map_err(|e| e.to_string())?;
            queue_ms.push(ms_since(t));
            by_kind[kind].push(ms_since(t));
            std::hint::black_box(html);
        }
        let mut detail_ms = vec![];
        for _ in 0..args.samples {
            let id = &openable[rng.below(openable.len())].id;
            let t = Instant::now();
            let view = console.case_view(&user, id).map_err(|e| e.to_string())?;
            let chrome = page_chrome(view.case.code.clone(), &user.id, &session.csrf);
            let html =
                views::case_page(chrome, &catalog, &user, &view, now_ms()).render().map_err(|e| e.to_string())?;
            detail_ms.push(ms_since(t));
            std::hint::black_box(html);
        }
        // Search as the queue handler runs it: the index's catch-up (nothing to take in here), a
        // full code looked up, else the queue filtered by the words, rendered.
        const SEARCH_KINDS: [&str; 3] = ["code", "word", "reporter"];
        let mut search_by_kind: Vec<Vec<f64>> = vec![vec![]; SEARCH_KINDS.len()];
        let mut search_ms = vec![];
        let mut search_hits = vec![];
        for i in 0..args.samples {
            let kind = i % SEARCH_KINDS.len();
            let typed = match kind {
                0 => {
                    let r = &openable[rng.below(openable.len())];
                    r.code.clone()
                }
                1 => TITLES[rng.below(TITLES.len())].chars().take(2).collect(),
                _ => format!("w-g{}", rng.below(grids_per_community)),
            };
            let t = Instant::now();
            console.index_for_search(500).map_err(|e| e.to_string())?;
            if let Some(id) = console.case_by_code(&user, &typed).map_err(|e| e.to_string())? {
                std::hint::black_box(id);
                search_hits.push(1.0);
            } else {
                if kind == 0 {
                    return Err(format!("{who}: the code {typed} of a case they see opened nothing"));
                }
                let filter = CaseFilter { q: typed.clone(), ..Default::default() };
                let q = console.case_queue(&user, &filter, now_ms()).map_err(|e| e.to_string())?;
                if q.total == 0 {
                    return Err(format!("{who}: searching {typed:?} found nothing"));
                }
                search_hits.push(q.total as f64);
                let chrome = page_chrome("queue", &user.id, &session.csrf);
                let html = views::queue_page(chrome, &catalog, &user, filter, q, views::QueueNotes::default())
                    .render()
                    .map_err(|e| e.to_string())?;
                std::hint::black_box(html);
            }
            search_ms.push(ms_since(t));
            search_by_kind[kind].push(ms_since(t));
        }
        let extra = [
            ("cases_on_server", serde_json::json!(total_cases)),
            ("visible_cases", serde_json::json!(visible)),
            ("who", serde_json::json!(who)),
            ("seed_s", serde_json::json!((seed_s * 10.0).round() / 10.0)),
        ];
        let breakdown: serde_json::Map<String, serde_json::Value> = KINDS
            .iter()
            .zip(by_kind)
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!((stats(v).p50 * 100.0).round() / 100.0)))
            .collect();
        let mut queue_extra = extra.to_vec();
        queue_extra.push(("p50_ms_by_filter", serde_json::Value::Object(breakdown)));
        line("queue_page", &stats(queue_ms), &queue_extra);
        line("case_detail", &stats(detail_ms), &extra);
        let search_breakdown: serde_json::Map<String, serde_json::Value> = SEARCH_KINDS
            .iter()
            .zip(search_by_kind)
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!((stats(v).p50 * 100.0).round() / 100.0)))
            .collect();
        let mut search_extra = extra.to_vec();
        search_extra.push(("p50_ms_by_kind", serde_json::Value::Object(search_breakdown)));
        search_extra.push(("median_matches", serde_json::json!(stats(search_hits).p50)));
        line("search", &stats(search_ms), &search_extra);

        // The overview page as its handler makes it: the facts grouped, the charts drawn, the page
        // rendered — the last 30 days (the default) or the whole 60 seeded, at the person's widest
        // area or, for the administrator, a street or community.
        let calendar = gridwork_core::model::time::DistrictCalendar::default();
        let today = calendar.day_of(now_ms());
        let month_ago = calendar.day_of(now_ms() - 29 * 86_400_000);
        let two_months_ago = calendar.day_of(now_ms() - 59 * 86_400_000);
        let areas: Vec<Option<Area>> = if user.sees_everything() {
            vec![None, Some(Area::Community("Community 0".into())), Some(Area::Street("Street 0".into()))]
        } else {
            vec![None]
        };
        let mut overview_ms = vec![];
        let mut overview_cases = vec![];
        for i in 0..args.samples {
            let area = areas[i % areas.len()].clone();
            let from = if i % 2 == 0 { &month_ago } else { &two_months_ago };
            let t = Instant::now();
            let o = console.overview(&user, area, (from, &today), now_ms()).map_err(|e| e.to_string())?;
            let chrome = page_chrome("overview", &user.id, &session.csrf);
            let html = gridwork_sync_server::console::overview::overview_page(chrome, &o, &catalog)
                .render()
                .map_err(|e| e.to_string())?;
            overview_ms.push(ms_since(t));
            overview_cases.push(o.reported as f64);
            std::hint::black_box(html);
        }
        if overview_cases.iter().all(|n| *n == 0.0) {
            return Err(format!("{who}: the overview counted no case"));
        }
        let mut overview_extra = extra.to_vec();
        overview_extra.push(("median_cases_counted", serde_json::json!(stats(overview_cases).p50)));
        line("overview", &stats(overview_ms), &overview_extra);
    }
    Ok(())
}

/// The page frame the console's handlers give a signed-in person (Chinese, no notices).
fn page_chrome(title: impl Into<String>, user: &str, csrf: &str) -> Chrome {
    Chrome {
        lang: Lang::Zh,
        title: title.into(),
        user: Some(user.to_owned()),
        csrf: csrf.to_owned(),
        notice: None,
        error: None,
        admin: false,
        district: None,
        city: false,
    }
}
