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
use gridwork_sync_server::{PgStore, SqliteStore, SyncStore};
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
    /// `sqlite` (the embedded store) or `postgres` (the server `GRIDWORK_PG_URL` names, or one
    /// this run starts: `gridwork_tests::pg`).
    pub store: String,
    /// Server instances sharing the store (PostgreSQL only); phone d talks to instance d mod N.
    pub instances: usize,
    /// Kill instance 0 this long after the clock starts: its phones go on with the others.
    pub kill_after_s: Option<f64>,
    /// Phones enrolled without a signing key, as apps before ADR 24 (the server checks no
    /// signatures): to compare with the signed default.
    pub unsigned: bool,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<StormArgs, String> {
    let mut a = StormArgs {
        devices: 5000,
        cases: 20,
        checkins: 50,
        concurrency: 32,
        phones_dir: None,
        store: "sqlite".into(),
        instances: 1,
        kill_after_s: None,
        unsigned: false,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--phones-dir" => {
                a.phones_dir = Some(PathBuf::from(it.next().ok_or("--phones-dir takes a directory")?));
                continue;
            }
            "--store" => {
                a.store = it.next().filter(|s| s == "sqlite" || s == "postgres").ok_or("--store sqlite|postgres")?;
                continue;
            }
            "--unsigned" => {
                a.unsigned = true;
                continue;
            }
            "--kill-after-s" => {
                a.kill_after_s = Some(it.next().and_then(|v| v.parse().ok()).ok_or("--kill-after-s takes seconds")?);
                continue;
            }
            _ => {}
        }
        let v: usize = it.next().and_then(|v| v.parse().ok()).ok_or(format!("{flag} takes a number"))?;
        match flag.as_str() {
            "--devices" => a.devices = v,
            "--cases" => a.cases = v,
            "--checkins" => a.checkins = v,
            "--concurrency" => a.concurrency = v.max(1),
            "--instances" => a.instances = v.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.instances > 1 && a.store != "postgres" {
        return Err("--instances N needs --store postgres: the embedded store has one writer process".into());
    }
    if a.kill_after_s.is_some() && a.instances < 2 {
        return Err("--kill-after-s needs --instances 2 or more: the phones finish on the others".into());
    }
    Ok(a)
}

/// A store's two faces.
type Faces = (Arc<dyn SyncStore>, Arc<dyn AdminStore>);

/// The store in `dir` (embedded), or the PostgreSQL database `url` with its blobs in `dir`.
fn open_store(dir: &Path, url: Option<&str>) -> Result<Faces, String> {
    match url {
        Some(url) => {
            let s = Arc::new(PgStore::open(url, dir).map_err(|e| e.to_string())?);
            Ok((s.clone(), s))
        }
        None => {
            let s = Arc::new(SqliteStore::open(dir).map_err(|e| e.to_string())?);
            Ok((s.clone(), s))
        }
    }
}

/// Child mode: serve the store in `dir` (or the database `url`) on a random loopback port and
/// print it.
pub fn serve_child(dir: &str, url: Option<&str>) -> Result<(), String> {
    let (store, _) = open_store(Path::new(dir), url)?;
    let server =
        gridwork_sync_server::start(store, "127.0.0.1:0".parse().map_err(|_| "addr")?).map_err(|e| e.to_string())?;
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

/// CPU milliseconds PostgreSQL's processes have used so far: every `postgres` process's own
/// time, and what the postmasters' finished children used (a backend's time is kept when its
/// connection closes).
fn postgres_cpu_ms() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut total = 0.0;
    for e in entries.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((head, after)) = stat.rsplit_once(')') else { continue };
        if !head.ends_with("(postgres") {
            continue;
        }
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime, stime; cutime, cstime (reaped children: only the postmaster has any).
        total += (ticks(11) + ticks(12) + ticks(13) + ticks(14)) * 10.0;
    }
    total
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
                link: it.link.clone(),
            }),
            OutboxKind::Record => {
                let body = serde_json::from_slice(&it.bytes).unwrap_or_default();
                records.push(PushedRecord { id: it.key, body, link: it.link })
            }
        }
    }
    let req = SyncRequest {
        protocol: PROTOCOL_VERSION,
        app_version: "0.1.0".into(),
        doc_schema: 1,
        cursor: None,
        // The boot the phone's stamps were made in, as a real app names it: the server checks the
        // stamps against it (one boot row per push), not against boots it must look up.
        state: {
            let boot = gridwork_core::clock::DeviceClock::now(&gridwork_core::clock::SystemClock);
            DeviceState {
                catalog_version: phone.catalog.version,
                boot_id: boot.boot_id,
                since_boot_ms: boot.since_boot_ms,
                ..Default::default()
            }
        },
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
    let db = match args.store.as_str() {
        "postgres" => {
            // Durable, as the embedded store is (fsync on every commit).
            gridwork_tests::pg::durable();
            Some(gridwork_tests::pg::fresh_database()?)
        }
        _ => None,
    };
    let catalog = district(args.devices);
    eprintln!("gridwork-bench: storm: seeding {} workers and grids ({} store)", args.devices, args.store);
    let mut enrolments = vec![];
    {
        let (sync, admin) = open_store(&server_dir, db.as_deref())?;
        admin.import_catalog(&catalog).map_err(|e| e.to_string())?;
        for d in 0..args.devices {
            let user = format!("w{d}");
            admin
                .set_user(&user, Role::Worker, None, &[Scope::Grid(GridId(format!("g{d}")))])
                .map_err(|e| e.to_string())?;
            let (_, code) = admin.enrol_device(&user, 0).map_err(|e| e.to_string())?;
            // Each phone signs with a key of its own, as `sync::enrol` makes one (ADR 24).
            let key = if args.unsigned {
                None
            } else {
                Some(gridwork_core::signing::DeviceKey::generate().map_err(|e| e.to_string())?)
            };
            let public_key = key.as_ref().map(|k| k.public_key_b64());
            let mut e = sync
                .redeem(&EnrolRequest { code, app_version: "0.1.0".into(), public_key }, 0)
                .map_err(|e| e.to_string())?;
            e.device_key = key.map(|k| k.pkcs8().clone());
            enrolments.push(e);
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = vec![];
    let mut urls = vec![];
    for _ in 0..args.instances {
        let mut cmd = Command::new(&exe);
        cmd.arg("storm-server").arg(&server_dir);
        if let Some(db) = &db {
            cmd.arg(db);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the server process: {e}"))?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut first).map_err(|e| e.to_string())?;
        urls.push(first.trim().strip_prefix("listening ").ok_or(format!("server said {first:?}"))?.to_owned());
        children.push(child);
    }
    let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();

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
            match prepare(d, &args, &phones_root, &catalog, &enrolments[d], &urls[d % urls.len()]) {
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
    let servers_cpu = |pids: &[String]| pids.iter().map(|p| proc_usage(p).0).sum::<f64>();
    let server_cpu_before = servers_cpu(&pids);
    let db_cpu_before = if db.is_some() { postgres_cpu_ms() } else { 0.0 };
    let (client_cpu_before, _) = proc_usage("self");
    // Instance 0 dies mid-storm; its CPU so far still counts.
    let killed_cpu = std::sync::Mutex::new(0.0f64);
    let killer = args.kill_after_s.map(|after| {
        let pid = pids[0].clone();
        let killed_cpu = &killed_cpu;
        move || {
            std::thread::sleep(std::time::Duration::from_secs_f64(after));
            *killed_cpu.lock().unwrap_or_else(|p| p.into_inner()) = proc_usage(&pid).0;
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            eprintln!("gridwork-bench: storm: instance 0 killed {after} s into the storm");
        }
    });
    let bytes_up = AtomicU64::new(0);
    let bytes_down = AtomicU64::new(0);
    let failures = AtomicUsize::new(0);
    let started = Instant::now();
    // reqwest needs a rustls configuration even for plain HTTP (see gridwork_core::tls).
    let client = || {
        let tls = gridwork_core::tls::trust_nobody().ok()?;
        reqwest::blocking::Client::builder().tls_backend_preconfigured(tls).build().ok()
    };
    let storm = || {
        for_each_index(phones.len(), args.concurrency, client, |client, i| {
            let p = &phones[i];
            let Some(client) = client else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            // Push the prepared request, then acknowledge what the server kept. An instance that does
            // not answer is tried again on the next one (what a load balancer or the phone's second
            // address does).
            let send = |server: &str| {
                client
                    .post(format!("{server}/v1/sync"))
                    .bearer_auth(&p.config.token)
                    .header("content-type", "application/json")
                    .body(p.first_request.clone())
                    .send()
            };
            let mut sent = send(&p.config.server);
            for k in 1..urls.len() {
                if sent.is_ok() {
                    break;
                }
                sent = send(&urls[(i + k) % urls.len()]);
            }
            let answer = sent.map_err(|e| e.to_string()).and_then(|r| {
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
                serde_json::from_slice::<SyncResponse>(&b)
                    .map_err(|e| format!("the answer is not a sync response: {e}"))
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
                let sync_on = |k: usize| {
                    let mut config = p.config.clone();
                    config.server = urls[(i + k) % urls.len()].clone();
                    p.open().and_then(|s| s.sync(&config, &mut |_| {}).map_err(|e| e.to_string()))
                };
                let mut result = sync_on(0);
                for k in 1..urls.len() {
                    if result.is_ok() {
                        break;
                    }
                    result = sync_on(k);
                }
                match result {
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
    };
    match killer {
        Some(kill) => std::thread::scope(|s| {
            s.spawn(kill);
            storm();
        }),
        None => storm(),
    }
    let elapsed = started.elapsed().as_secs_f64();
    let live: Vec<String> = if args.kill_after_s.is_some() { pids[1..].to_vec() } else { pids.clone() };
    let server_cpu_after = servers_cpu(&live) + *killed_cpu.lock().unwrap_or_else(|p| p.into_inner());
    let server_rss = pids.iter().map(|p| proc_usage(p).1).fold(0.0, f64::max);
    let db_cpu_after = if db.is_some() { postgres_cpu_ms() } else { 0.0 };
    let (client_cpu_after, _) = proc_usage("self");
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
    }

    // Converged: every phone's outbox is empty and it holds exactly its scope.
    eprintln!("gridwork-bench: storm: verifying");
    let (_, verify) = open_store(&server_dir, db.as_deref())?;
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
        "store": args.store,
        "instances": args.instances,
        "killed_after_s": args.kill_after_s,
        "signed": !args.unsigned,
        "elapsed_s": (elapsed * 100.0).round() / 100.0,
        "server_cpu_ms_per_doc": ((server_cpu_after - server_cpu_before) / (docs.max(1) as f64) * 1000.0).round() / 1000.0,
        "db_cpu_ms_per_doc": ((db_cpu_after - db_cpu_before) / (docs.max(1) as f64) * 1000.0).round() / 1000.0,
        "total_cpu_ms_per_doc": ((server_cpu_after - server_cpu_before + db_cpu_after - db_cpu_before)
            / (docs.max(1) as f64) * 1000.0).round() / 1000.0,
        "server_peak_rss_mb": (server_rss * 10.0).round() / 10.0,
        "client_cpu_s": ((client_cpu_after - client_cpu_before) / 10.0).round() / 100.0,
        "bytes_up": bytes_up.load(Ordering::Relaxed),
        "bytes_down": bytes_down.load(Ordering::Relaxed),
        "docs": docs,
        "converged": converged,
    }));
    Ok(())
}
