//! `gridwork-bench storm`: thousands of phones coming back online at once.
//!
//! The server runs as a child process (this binary in `storm-server` mode) so its CPU time and
//! peak RSS can be read from /proc. Every phone is a real gridwork-core store; each prepares its
//! first request (its whole outbox) before the clock starts. On the clock: every phone pushes
//! (bounded concurrency), then pulls until it holds its scope.

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::GridId;
use gridwork_core::model::wire::{
    DeviceState, EnrolRequest, EnrolResponse, PushedChange, PushedRecord, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use gridwork_core::store::{CheckInInput, OutboxKind};
use gridwork_core::sync::SyncConfig;
use gridwork_core::Store;
use gridwork_sync_server::{SqliteStore, SyncStore};
use gridwork_tests::{district, for_each_index, identity_from_enrolment, open_device, random_case, Rng};

pub struct StormArgs {
    pub devices: usize,
    pub cases: usize,
    pub checkins: usize,
    pub concurrency: usize,
    /// Where the phones' stores go (default: beside the server's). The phones are the clients,
    /// not what is measured: on tmpfs (`/dev/shm`) preparing 5,000 of them takes minutes instead
    /// of an hour of fsyncs. The server's store stays on disk.
    pub phones_dir: Option<PathBuf>,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<StormArgs, String> {
    let mut a = StormArgs { devices: 5000, cases: 20, checkins: 50, concurrency: 32, phones_dir: None };
    while let Some(flag) = it.next() {
        if flag == "--phones-dir" {
            a.phones_dir = Some(PathBuf::from(it.next().ok_or("--phones-dir takes a directory")?));
            continue;
        }
        let v: usize = it.next().and_then(|v| v.parse().ok()).ok_or(format!("{flag} takes a number"))?;
        match flag.as_str() {
            "--devices" => a.devices = v,
            "--cases" => a.cases = v,
            "--checkins" => a.checkins = v,
            "--concurrency" => a.concurrency = v.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// Child mode: serve the store in `dir` on a random loopback port and print it.
pub fn serve_child(dir: &str) -> Result<(), String> {
    let store = Arc::new(SqliteStore::open(Path::new(dir)).map_err(|e| e.to_string())?);
    let server = gridwork_sync_server::start(store as Arc<dyn SyncStore>, "127.0.0.1:0".parse().map_err(|_| "addr")?)
        .map_err(|e| e.to_string())?;
    println!("listening {}", server.url());
    // Serve until the parent closes our stdin. The chaos harness writes commands: `clock-step MS`
    // steps the server's clock (NTP stepping it back), `arm POINT N` arms a crash point.
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("clock-step"), Some(ms), None) => {
                if let Ok(ms) = ms.parse::<i64>() {
                    gridwork_sync_server::clock::step_by(ms);
                }
            }
            (Some("arm"), Some(point), Some(nth)) => {
                let armed = nth.parse().is_ok_and(|n| gridwork_core::model::crash_points::arm(point, n));
                if !armed {
                    eprintln!("storm-server: cannot arm {point:?} {nth:?}");
                }
            }
            _ => eprintln!("storm-server: unknown command {line:?}"),
        }
    }
    Ok(())
}

/// (utime + stime in ms, peak RSS in MB) of a process, from /proc.
fn proc_usage(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu_ms = (ticks(11) + ticks(12)) * 10.0; // USER_HZ is 100 on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu_ms, hwm_kb / 1024.0)
}

/// A prepared phone. Its store is closed between phases: thousands of open stores (each with its
/// page caches) do not fit in one process — on real phones each is its own.
struct Phone {
    user: String,
    dir: PathBuf,
    enrol: EnrolResponse,
    catalog: Catalog,
    config: SyncConfig,
    first_request: Vec<u8>,
}

impl Phone {
    fn open(&self) -> Result<Store, String> {
        open_device(&self.dir, identity_from_enrolment(&self.enrol), &self.catalog, None).map_err(|e| e.to_string())
    }
}

/// What a worker's phone carries: its own grid and the shared lists, not the whole district.
fn phone_catalog(full: &Catalog, d: usize) -> Catalog {
    Catalog {
        version: full.version,
        grids: full.grids.get(d).cloned().into_iter().collect(),
        categories: full.categories.clone(),
        departments: full.departments.clone(),
    }
}

fn prepare(
    d: usize,
    args: &StormArgs,
    root: &Path,
    full: &Catalog,
    enrol: &EnrolResponse,
    url: &str,
) -> Result<Phone, String> {
    let phone = Phone {
        user: format!("w{d}"),
        dir: root.join(format!("w{d}")),
        enrol: enrol.clone(),
        catalog: phone_catalog(full, d),
        config: SyncConfig::new(url, enrol.token.clone()),
        first_request: vec![],
    };
    let store = phone.open()?;
    let grid = phone.catalog.grids.first().ok_or("no grid")?.clone();
    let mut rng = Rng::new(d as u64 + 1);
    if args.checkins > 0 {
        let patrol = store.start_patrol(&GridId(grid.id.0.clone())).map_err(|e| e.to_string())?;
        for i in 0..args.checkins {
            let p = &grid.points[i % grid.points.len()];
            let location = Location::gps(p.lat, p.lon, 5.0, 0);
            store
                .check_in(CheckInInput {
                    patrol,
                    point: Some(p.id.clone()),
                    location,
                    note: String::new(),
                    photo: None,
                })
                .map_err(|e| e.to_string())?;
        }
        store.finish_patrol(&patrol).map_err(|e| e.to_string())?;
    }
    for _ in 0..args.cases {
        store.capture_case(random_case(&mut rng, &phone.catalog, 0, 0)).map_err(|e| e.to_string())?;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut changes = vec![];
    let mut records = vec![];
    for it in store.outbox_page(usize::MAX).map_err(|e| e.to_string())? {
        match it.kind {
            OutboxKind::Change => changes.push(PushedChange {
                doc: it.doc_id.unwrap_or_default(),
                bytes: b64.encode(&it.bytes),
                receipt: None,
            }),
            OutboxKind::Record => {
                records.push(PushedRecord { id: it.key, body: serde_json::from_slice(&it.bytes).unwrap_or_default() })
            }
        }
    }
    let req = SyncRequest {
        protocol: PROTOCOL_VERSION,
        app_version: "0.1.0".into(),
        doc_schema: 1,
        cursor: None,
        state: DeviceState { catalog_version: phone.catalog.version, ..Default::default() },
        changes,
        records,
        want_full: vec![],
        accept_compacted: true,
        max_pull_bytes: 1,
    };
    let first_request = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    Ok(Phone { first_request, ..phone })
}

pub fn run(args: StormArgs, line: &dyn Fn(serde_json::Value)) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server_dir = dir.path().join("server");
    let catalog = district(args.devices);
    eprintln!("gridwork-bench: storm: seeding {} workers and grids", args.devices);
    let mut enrolments = vec![];
    {
        let store = SqliteStore::open(&server_dir).map_err(|e| e.to_string())?;
        store.import_catalog(&catalog).map_err(|e| e.to_string())?;
        for d in 0..args.devices {
            let user = format!("w{d}");
            store
                .set_user(&user, Role::Worker, None, &[Scope::Grid(GridId(format!("g{d}")))])
                .map_err(|e| e.to_string())?;
            let (_, code) = store.enrol_device(&user, 0).map_err(|e| e.to_string())?;
            let e = store.redeem(&EnrolRequest { code, app_version: "0.1.0".into() }, 0).map_err(|e| e.to_string())?;
            enrolments.push(e);
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("storm-server")
        .arg(&server_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the server process: {e}"))?;
    let pid = child.id().to_string();
    let mut first = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut first).map_err(|e| e.to_string())?;
    let url = first.trim().strip_prefix("listening ").ok_or(format!("server said {first:?}"))?.to_owned();

    eprintln!(
        "gridwork-bench: storm: preparing {} phones ({} cases, {} check-ins each)",
        args.devices, args.cases, args.checkins
    );
    let phones_tmp = match &args.phones_dir {
        Some(d) => Some(tempfile::tempdir_in(d).map_err(|e| format!("--phones-dir {}: {e}", d.display()))?),
        None => None,
    };
    let phones_root = phones_tmp.as_ref().map(|t| t.path().to_path_buf()).unwrap_or_else(|| dir.path().join("phones"));
    let slots: Vec<std::sync::Mutex<Option<Phone>>> = (0..args.devices).map(|_| std::sync::Mutex::new(None)).collect();
    for_each_index(
        args.devices,
        2,
        || (),
        |_, d| {
            match prepare(d, &args, &phones_root, &catalog, &enrolments[d], &url) {
                Ok(p) => *slots[d].lock().unwrap_or_else(|p| p.into_inner()) = Some(p),
                Err(err) => eprintln!("gridwork-bench: phone {d}: {err}"),
            }
            if (d + 1) % 500 == 0 {
                eprintln!("gridwork-bench:   prepared {}/{}", d + 1, args.devices);
            }
        },
    );
    let phones: Vec<Phone> = slots.into_iter().filter_map(|m| m.into_inner().ok().flatten()).collect();
    if phones.len() != args.devices {
        return Err(format!("only {} of {} phones were prepared", phones.len(), args.devices));
    }

    eprintln!("gridwork-bench: storm: clock starts: every phone pushes, then pulls");
    let (server_cpu_before, _) = proc_usage(&pid);
    let (client_cpu_before, _) = proc_usage("self");
    let bytes_up = AtomicU64::new(0);
    let bytes_down = AtomicU64::new(0);
    let failures = AtomicUsize::new(0);
    let started = Instant::now();
    // reqwest needs a rustls configuration even for plain HTTP (see gridwork_core::tls).
    let client = || {
        let tls = gridwork_core::tls::trust_nobody().ok()?;
        reqwest::blocking::Client::builder().tls_backend_preconfigured(tls).build().ok()
    };
    for_each_index(phones.len(), args.concurrency, client, |client, i| {
        let p = &phones[i];
        let Some(client) = client else {
            failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Push the prepared request, then acknowledge what the server kept.
        let answer = client
            .post(format!("{}/v1/sync", p.config.server))
            .bearer_auth(&p.config.token)
            .header("content-type", "application/json")
            .body(p.first_request.clone())
            .send()
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let status = r.status();
                let body = r.bytes().map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(body)
                } else {
                    Err(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
                    ))
                }
            });
        bytes_up.fetch_add(p.first_request.len() as u64, Ordering::Relaxed);
        let resp = answer.and_then(|b| {
            bytes_down.fetch_add(b.len() as u64, Ordering::Relaxed);
            serde_json::from_slice::<SyncResponse>(&b).map_err(|e| format!("the answer is not a sync response: {e}"))
        });
        let done = resp.and_then(|resp| {
            let store = p.open()?;
            let items = store.outbox_page(usize::MAX).map_err(|e| e.to_string())?;
            let acked: Vec<i64> =
                items.iter().filter(|it| resp.results.iter().any(|r| r.key == it.key)).map(|it| it.seq).collect();
            store.acknowledge(&acked).map_err(|e| e.to_string())
        });
        if let Err(e) = done {
            if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("gridwork-bench: storm: first failed push: {e}");
            }
        }
    });
    for_each_index(
        phones.len(),
        args.concurrency,
        || (),
        |_, i| {
            let p = &phones[i];
            match p.open().and_then(|s| s.sync(&p.config, &mut |_| {}).map_err(|e| e.to_string())) {
                Ok(r) => {
                    bytes_up.fetch_add(r.bytes_up, Ordering::Relaxed);
                    bytes_down.fetch_add(r.bytes_down, Ordering::Relaxed);
                }
                Err(e) => {
                    if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("gridwork-bench: storm: first failed sync: {e}");
                    }
                }
            }
        },
    );
    let elapsed = started.elapsed().as_secs_f64();
    let (server_cpu_after, server_rss) = proc_usage(&pid);
    let (client_cpu_after, _) = proc_usage("self");
    drop(child.stdin.take());
    let _ = child.wait();

    // Converged: every phone's outbox is empty and it holds exactly its scope.
    eprintln!("gridwork-bench: storm: verifying");
    let verify = SqliteStore::open(&server_dir).map_err(|e| e.to_string())?;
    let (_, docs, _) = verify.counts().map_err(|e| e.to_string())?;
    let failed = failures.load(Ordering::Relaxed);
    let mut converged = failed == 0;
    if failed > 0 {
        eprintln!("gridwork-bench: storm: {failed} phones' push or sync failed");
    }
    let mut reported = false;
    for p in &phones {
        let store = p.open()?;
        let mut held: Vec<String> =
            store.document_ids().map_err(|e| e.to_string())?.iter().map(|i| i.to_string()).collect();
        held.sort();
        let due = verify.docs_in_scope(&p.user).map_err(|e| e.to_string())?;
        let outbox = store.outbox_len().unwrap_or(usize::MAX);
        if held != due || outbox != 0 {
            // The first divergence, so that a failed run says where to look.
            if !reported {
                reported = true;
                eprintln!(
                    "gridwork-bench: storm: {} holds {} cases, its scope {}, outbox {outbox}",
                    p.user,
                    held.len(),
                    due.len()
                );
            }
            converged = false;
        }
    }
    line(serde_json::json!({
        "bench": "storm",
        "devices": args.devices,
        "cases": args.cases,
        "checkins": args.checkins,
        "concurrency": args.concurrency,
        "elapsed_s": (elapsed * 100.0).round() / 100.0,
        "server_cpu_ms_per_doc": ((server_cpu_after - server_cpu_before) / (docs.max(1) as f64) * 1000.0).round() / 1000.0,
        "server_peak_rss_mb": (server_rss * 10.0).round() / 10.0,
        "client_cpu_s": ((client_cpu_after - client_cpu_before) / 10.0).round() / 100.0,
        "bytes_up": bytes_up.load(Ordering::Relaxed),
        "bytes_down": bytes_down.load(Ordering::Relaxed),
        "docs": docs,
        "converged": converged,
    }));
    Ok(())
}
