//! The chaos harness (issue 16, first part): real phone stores sync with the real server — a
//! child process, killed with SIGKILL and restarted on its data directory during the run — through
//! a fault-injecting HTTP proxy, and afterwards the phones' stores and the server are compared.
//!
//! Everything random comes from one seed: which fault meets each request, when the server is
//! killed, what the phones capture. `gridwork-bench chaos --seed S` replays a schedule;
//! `tests/tests/chaos.rs` runs a few seeds in CI.
//!
//! The proxy reads each HTTP/1.1 request whole (Content-Length or chunked), then, by the seed:
//! forwards it; delays it; drops it before the server sees it; forwards it and drops the answer
//! (the server committed, the phone never hears); forwards it and cuts the answer halfway (a
//! phone that sees part of a pull page); or forwards it twice and answers with the second reply.
//! Each request goes to the server on a fresh connection, so a server restarted on another port
//! is picked up at once.
//!
//! Some phones run as child processes (`gridwork-bench chaos-phone`) that capture, attach photos
//! and sync in a loop; they are SIGKILLed at random moments (mid-capture, mid-photo-write,
//! mid-sync, after a request was sent or before an answer was applied) and started again on their
//! store. What they acknowledged is what they printed after the store returned. A full disk,
//! clock faults and racing supervisors are not in the harness yet.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::wire::{EnrolRequest, EnrolResponse};
use gridwork_core::sync::SyncConfig;
use gridwork_core::Store;
use gridwork_sync_server::{SqliteStore, SyncStore};

use crate::{district, identity_from_enrolment, open_device, random_case, Rng};

/// One chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    /// Workers' phones, two to a grid, so that each case has another phone in its scope.
    pub phones: usize,
    /// Rounds: in each, every phone captures and syncs through the proxy at once.
    pub rounds: usize,
    /// Server SIGKILLs spread over the rounds, each at a random moment of its round.
    pub server_kills: usize,
    /// How many of the phones run as child processes (the first phone of the first grids),
    /// capturing and syncing in a loop; each round kills each of them with SIGKILL with
    /// probability one half, at a random moment, and starts it again on its store.
    pub process_phones: usize,
    /// A binary that serves a data directory when run as `EXE storm-server DIR` and prints
    /// `listening URL` (gridwork-bench).
    pub server_exe: PathBuf,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    /// Requests the proxy saw, by what it did to them.
    pub faults: BTreeMap<&'static str, u64>,
    pub server_kills: usize,
    pub phone_kills: usize,
    /// Cases a phone's store acknowledged to its user that the server or a phone in scope lacks.
    pub lost: usize,
    /// Cases held twice by a phone, or held by the server and by no phone (a copy nobody made).
    pub duplicated: usize,
    /// Every phone holds exactly its scope, with the server's heads for every case, and nothing
    /// waits in its outbox.
    pub converged: bool,
    /// Photos the cases reference, checked on the server: present and byte for byte their SHA-256.
    pub photos_checked: usize,
    /// Of those, missing on the server or with other bytes.
    pub photos_bad: usize,
    /// The first difference found, for the failing seed's message.
    pub first_divergence: Option<String>,
}

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Forward,
    Delay,
    DropRequest,
    DropResponse,
    CutResponse,
    Duplicate,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Forward => "none",
            Fault::Delay => "delay",
            Fault::DropRequest => "drop_request",
            Fault::DropResponse => "drop_response",
            Fault::CutResponse => "cut_response",
            Fault::Duplicate => "dup",
        }
    }

    fn pick(rng: &mut Rng) -> Fault {
        match rng.below(100) {
            0..=39 => Fault::Forward,
            40..=54 => Fault::Delay,
            55..=66 => Fault::DropRequest,
            67..=78 => Fault::DropResponse,
            79..=89 => Fault::CutResponse,
            _ => Fault::Duplicate,
        }
    }
}

/// Shared state of the proxy.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    faults_on: Arc<AtomicBool>,
    rng: Arc<Mutex<Rng>>,
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxy {
    fn start(seed: u64) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let proxy = Proxy {
            addr,
            upstream: Arc::new(Mutex::new(None)),
            faults_on: Arc::new(AtomicBool::new(false)),
            rng: Arc::new(Mutex::new(Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15))),
            counts: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let (upstream, on, rng, counts) =
            (proxy.upstream.clone(), proxy.faults_on.clone(), proxy.rng.clone(), proxy.counts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, on, rng, counts) = (upstream.clone(), on.clone(), rng.clone(), counts.clone());
                std::thread::spawn(move || serve_connection(client, &upstream, &on, &rng, &counts));
            }
        });
        Ok(proxy)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves one phone connection, request by request, until either side closes.
fn serve_connection(
    mut client: TcpStream,
    upstream: &Mutex<Option<SocketAddr>>,
    on: &AtomicBool,
    rng: &Mutex<Rng>,
    counts: &Mutex<BTreeMap<&'static str, u64>>,
) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    while let Ok(Some(request)) = read_message(&mut client) {
        let (fault, delay_ms) = if on.load(Ordering::Relaxed) {
            let mut r = lock(rng);
            let f = Fault::pick(&mut r);
            (f, r.below(400) as u64)
        } else {
            (Fault::Forward, 0)
        };
        *lock(counts).entry(fault.name()).or_default() += 1;
        let forward = || -> Option<Vec<u8>> {
            let to = (*lock(upstream))?;
            let mut up = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
            let _ = up.set_read_timeout(Some(Duration::from_secs(60)));
            up.write_all(&request).ok()?;
            read_message(&mut up).ok().flatten()
        };
        let answer = match fault {
            Fault::DropRequest => None,
            Fault::Delay => {
                std::thread::sleep(Duration::from_millis(delay_ms));
                forward()
            }
            Fault::Duplicate => forward().and_then(|_| forward()),
            Fault::Forward | Fault::DropResponse | Fault::CutResponse => forward(),
        };
        let Some(answer) = answer else {
            *lock(counts).entry("server_unreachable").or_default() += u64::from(fault != Fault::DropRequest);
            break;
        };
        match fault {
            Fault::DropResponse => break,
            Fault::CutResponse => {
                let _ = client.write_all(&answer[..answer.len() / 2]);
                break;
            }
            _ => {
                if client.write_all(&answer).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// One HTTP/1.1 message, head and body (by Content-Length, or chunked), as it came; None when the
/// stream ends before a message starts.
fn read_message(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut msg = Vec::new();
    let mut byte = [0u8; 1];
    // The head, byte by byte: small, and nothing after it may be consumed.
    while !msg.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return if msg.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "head cut"))
            };
        }
        msg.push(byte[0]);
        if msg.len() > 64 * 1024 {
            return Err(std::io::Error::other("head too long"));
        }
    }
    let head = String::from_utf8_lossy(&msg).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_owned()))
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut reader = BufReader::new(s);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            msg.extend_from_slice(line.as_bytes());
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            msg.extend_from_slice(&chunk);
            if size == 0 {
                // BufReader may have read ahead only within this message: nothing follows a
                // chunked answer on the connection before the next request is written.
                return Ok(Some(msg));
            }
        }
    }
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let start = msg.len();
    msg.resize(start + len, 0);
    s.read_exact(&mut msg[start..])?;
    Ok(Some(msg))
}

/// The server child process, restartable on its data directory.
struct Server {
    exe: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
}

impl Server {
    fn start(&mut self) -> Result<String, String> {
        let mut child = Command::new(&self.exe)
            .arg("storm-server")
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the server process: {e}"))?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut first).map_err(|e| e.to_string())?;
        let url = first.trim().strip_prefix("listening ").ok_or(format!("server said {first:?}"))?.to_owned();
        let addr: SocketAddr =
            url.trim_start_matches("http://").parse().map_err(|e| format!("server address {url}: {e}"))?;
        *lock(&self.upstream) = Some(addr);
        self.child = Some(child);
        Ok(url)
    }

    /// SIGKILL: no shutdown of any kind.
    fn kill(&mut self) {
        *lock(&self.upstream) = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct ChaosPhone {
    user: String,
    dir: PathBuf,
    enrolment: EnrolResponse,
    /// Open in this process; None for a phone that runs as a child process until the calm.
    store: Option<Store>,
    config: SyncConfig,
    grid: usize,
    /// Cases this phone's store acknowledged (capture returned Ok; for a child process, the
    /// `ACK case ID` lines it printed after the call returned).
    captured: Arc<Mutex<Vec<CaseId>>>,
    child: Option<Child>,
    incarnation: u64,
}

impl ChaosPhone {
    /// Starts (again) the child process of a process phone.
    fn spawn(&mut self, exe: &Path, seed: u64, grids: usize) -> Result<(), String> {
        self.incarnation += 1;
        let enrolment = self.dir.with_extension("enrolment.json");
        std::fs::write(&enrolment, serde_json::to_vec(&self.enrolment).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("chaos-phone")
            .arg(&self.dir)
            .arg(&enrolment)
            .arg(&self.config.server)
            .arg(seed.wrapping_mul(1_000_003).wrapping_add(self.incarnation).to_string())
            .arg(self.grid.to_string())
            .arg(grids.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a phone process: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let captured = self.captured.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ACK case ").and_then(|c| CaseId::parse(c.trim()).ok()) {
                    lock(&captured).push(id);
                }
            }
        });
        self.child = Some(child);
        Ok(())
    }

    fn store(&self) -> Result<&Store, String> {
        self.store.as_ref().ok_or_else(|| format!("{}'s store is not open here", self.user))
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
                true
            }
            None => false,
        }
    }
}

/// The child process of a process phone (`gridwork-bench chaos-phone DIR ENROLMENT URL SEED GRID
/// GRIDS`): opens its store, then captures a case (a photo with every third), prints
/// `ACK case ID` once the store returned, and syncs, in a loop until it is killed.
pub fn phone_child(mut args: impl Iterator<Item = String>) -> Result<(), String> {
    let usage = "chaos-phone DIR ENROLMENT URL SEED GRID GRIDS";
    let mut next = || args.next().ok_or(usage);
    let (dir, enrolment, url) = (PathBuf::from(next()?), PathBuf::from(next()?), next()?);
    let (seed, grid, grids) = (next()?, next()?, next()?);
    let seed: u64 = seed.parse().map_err(|_| usage)?;
    let grid: usize = grid.parse().map_err(|_| usage)?;
    let grids: usize = grids.parse().map_err(|_| usage)?;
    let e: EnrolResponse =
        serde_json::from_slice(&std::fs::read(&enrolment).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let catalog = district(grids);
    let store = open_device(&dir, identity_from_enrolment(&e), &catalog, None).map_err(|e| e.to_string())?;
    let config = SyncConfig::new(url, e.token);
    let mut rng = Rng::new(seed);
    let stdout = std::io::stdout();
    for i in 0u64.. {
        let new = random_case(&mut rng, &catalog, grid, 0);
        if let Ok(c) = store.capture_case(new) {
            if i % 3 == 0 {
                let _ =
                    store.attach_photo(&c.id, &camera_like_jpeg(64, 48, &ExifSpec::default(), seed.wrapping_add(i)));
            }
            let mut out = stdout.lock();
            let _ = writeln!(out, "ACK case {}", c.id);
            let _ = out.flush();
        }
        let _ = store.sync(&config, &mut |_| {});
        std::thread::sleep(Duration::from_millis(10 + rng.below(40) as u64));
    }
    Ok(())
}

/// Runs one schedule. Errors are the harness's own failures (a server that would not start);
/// what the schedule did to the data is in the report.
pub fn run(cfg: &ChaosConfig, root: &Path) -> Result<ChaosReport, String> {
    let mut rng = Rng::new(cfg.seed);
    let grids = cfg.phones.div_ceil(2).max(1);
    let catalog: Catalog = district(grids);
    let server_dir = root.join("server");
    let mut enrolments: Vec<(String, EnrolResponse)> = vec![];
    {
        let store = SqliteStore::open(&server_dir).map_err(|e| e.to_string())?;
        store.import_catalog(&catalog).map_err(|e| e.to_string())?;
        for p in 0..cfg.phones {
            let user = format!("w{p}");
            store.set_user(&user, Role::Worker, None, &[format!("grid:g{}", p / 2)]).map_err(|e| e.to_string())?;
            let (_, code) = store.enrol_device(&user, 0).map_err(|e| e.to_string())?;
            let e = store.redeem(&EnrolRequest { code, app_version: "0.1.0".into() }, 0).map_err(|e| e.to_string())?;
            enrolments.push((user, e));
        }
    }
    let proxy = Proxy::start(cfg.seed)?;
    let mut server =
        Server { exe: cfg.server_exe.clone(), dir: server_dir.clone(), child: None, upstream: proxy.upstream.clone() };
    server.start()?;
    let mut phones = vec![];
    for (i, (user, e)) in enrolments.into_iter().enumerate() {
        let dir = root.join(&user);
        // Process phones are the first phone of the first grids: the other phone of their grid
        // runs in this process and must receive what they captured.
        let process = i % 2 == 0 && i / 2 < cfg.process_phones;
        let store = if process {
            None
        } else {
            Some(open_device(&dir, identity_from_enrolment(&e), &catalog, None).map_err(|e| e.to_string())?)
        };
        let config = SyncConfig::new(proxy.url(), e.token.clone());
        let mut phone = ChaosPhone {
            user,
            dir,
            enrolment: e,
            store,
            config,
            grid: i / 2,
            captured: Arc::new(Mutex::new(vec![])),
            child: None,
            incarnation: 0,
        };
        if process {
            phone.spawn(&cfg.server_exe, cfg.seed, grids)?;
        }
        phones.push(phone);
    }

    // Which rounds kill the server, from the seed.
    let mut kill_rounds: Vec<usize> = (0..cfg.server_kills).map(|_| rng.below(cfg.rounds.max(1))).collect();
    kill_rounds.sort_unstable();
    let mut report = ChaosReport { seed: cfg.seed, ..ChaosReport::default() };
    proxy.faults_on.store(true, Ordering::Relaxed);
    for round in 0..cfg.rounds {
        // What each phone does this round, drawn before the threads start (reproducible).
        let plans: Vec<(usize, bool, u64)> =
            phones.iter().map(|_| (1 + rng.below(2), rng.below(3) == 0, rng.next_u64())).collect();
        let kills_now = kill_rounds.iter().filter(|r| **r == round).count();
        let kill_after: Vec<u64> = (0..kills_now).map(|_| rng.below(300) as u64).collect();
        let phone_kill_after: Vec<Option<u64>> =
            phones.iter().map(|p| (p.store.is_none() && rng.below(2) == 0).then(|| rng.below(300) as u64)).collect();
        let (server_exe, seed) = (&cfg.server_exe, cfg.seed);
        let phone_kills = std::thread::scope(|s| -> Result<usize, String> {
            let mut children = vec![];
            for ((p, (cases, photo, seed)), kill_after) in phones.iter_mut().zip(plans).zip(phone_kill_after) {
                let catalog = &catalog;
                if p.store.is_none() {
                    children.push((p, kill_after));
                    continue;
                }
                let p: &ChaosPhone = p;
                let Some(store) = &p.store else { continue };
                let captured = p.captured.clone();
                let (grid, config) = (p.grid, &p.config);
                s.spawn(move || {
                    let mut r = Rng::new(seed);
                    for _ in 0..cases {
                        let new = random_case(&mut r, catalog, grid, 0);
                        if let Ok(c) = store.capture_case(new) {
                            if photo {
                                let jpeg = camera_like_jpeg(64, 48, &ExifSpec::default(), seed);
                                let _ = store.attach_photo(&c.id, &jpeg);
                            }
                            lock(&captured).push(c.id);
                        }
                    }
                    // Faults surface as sync errors: the phone tries again next round, as an app does.
                    let _ = store.sync(config, &mut |_| {});
                });
            }
            // Phone processes die at their moment: mid-capture, mid-photo or mid-sync.
            let killer = s.spawn(move || -> Result<usize, String> {
                let mut killed = 0;
                let mut by_time: Vec<(u64, &mut ChaosPhone)> =
                    children.into_iter().filter_map(|(p, k)| k.map(|k| (k, p))).collect();
                by_time.sort_by_key(|(k, _)| *k);
                let mut waited = 0;
                for (at, p) in by_time {
                    std::thread::sleep(Duration::from_millis(at - waited));
                    waited = at;
                    if p.kill() {
                        killed += 1;
                    }
                    p.spawn(server_exe, seed, grids)?;
                }
                Ok(killed)
            });
            for after in &kill_after {
                std::thread::sleep(Duration::from_millis(*after));
                server.kill();
                report.server_kills += 1;
                server.start()?;
            }
            killer.join().map_err(|_| "the phone killer panicked".to_owned())?
        })?;
        report.phone_kills += phone_kills;
        // The phone processes work on through part of each round.
        std::thread::sleep(Duration::from_millis(150));
    }
    // The phone processes stop (one more SIGKILL each) and their stores open here for the calm.
    for p in phones.iter_mut() {
        if p.store.is_none() {
            if p.kill() {
                report.phone_kills += 1;
            }
            p.store = Some(
                open_device(&p.dir, identity_from_enrolment(&p.enrolment), &catalog, None)
                    .map_err(|e| e.to_string())?,
            );
        }
    }

    // Calm: no faults; every phone syncs until it has nothing to send, then once more to pull
    // what the others sent last.
    proxy.faults_on.store(false, Ordering::Relaxed);
    for _ in 0..2 {
        for p in &phones {
            for _ in 0..8 {
                let r = p.store()?.sync(&p.config, &mut |_| {});
                if r.is_ok() && p.store()?.outbox_len().unwrap_or(1) == 0 {
                    break;
                }
            }
        }
    }
    server.kill();
    report.faults = lock(&proxy.counts).clone();

    // The verdict, from the server's store and every phone's.
    let store = SqliteStore::open(&server_dir).map_err(|e| e.to_string())?;
    let (mut lost, mut duplicated, mut converged) = (0usize, 0usize, true);
    let mut first: Option<String> = None;
    let mut diverge = |what: String| {
        first.get_or_insert(what);
    };
    let blobs = gridwork_sync_server::blobs::BlobFiles::open(&server_dir).map_err(|e| e.to_string())?;
    let (mut photos_checked, mut photos_bad, mut checked_photos) = (0usize, 0usize, BTreeSet::new());
    let mut on_server = BTreeSet::new();
    let mut on_phones: BTreeSet<String> = BTreeSet::new();
    for p in &phones {
        let scope: BTreeSet<String> = store.docs_in_scope(&p.user).map_err(|e| e.to_string())?.into_iter().collect();
        on_server.extend(scope.iter().cloned());
        let held_list: Vec<String> =
            p.store()?.document_ids().map_err(|e| e.to_string())?.iter().map(|c| c.to_string()).collect();
        let held: BTreeSet<String> = held_list.iter().cloned().collect();
        on_phones.extend(held.iter().cloned());
        if held.len() != held_list.len() {
            duplicated += held_list.len() - held.len();
            diverge(format!("{} holds a case twice", p.user));
        }
        if held != scope {
            converged = false;
            let missing = scope.difference(&held).next().cloned().unwrap_or_default();
            diverge(format!(
                "{} holds {} cases, its scope {} (first missing: {missing})",
                p.user,
                held.len(),
                scope.len()
            ));
        }
        let outbox = p.store()?.outbox_len().map_err(|e| e.to_string())?;
        if outbox != 0 {
            converged = false;
            diverge(format!("{} still has {outbox} items to send", p.user));
        }
        for id in held.intersection(&scope) {
            let Ok(case) = CaseId::parse(id) else { continue };
            // Every photo the case references is on the server, byte for byte what its name says.
            let evidence = p.store()?.get_case(&case).map_err(|e| e.to_string())?.case.evidence;
            for ev in evidence.iter().filter(|e| checked_photos.insert(e.sha256.clone())) {
                photos_checked += 1;
                let ok = blobs.read(&ev.sha256).is_ok_and(|b| gridwork_core::evidence::sha256_hex(&b) == ev.sha256);
                if !ok {
                    photos_bad += 1;
                    diverge(format!("photo {} of case {id} is missing or damaged on the server", ev.sha256));
                }
            }
            let mine = heads(&p.store()?.export_changes(&case).map_err(|e| e.to_string())?);
            let theirs = store.doc_heads(id).map_err(|e| e.to_string())?;
            if mine != theirs {
                converged = false;
                diverge(format!("{} has other heads than the server for {id}", p.user));
            }
        }
    }
    let captured: Vec<String> =
        phones.iter().flat_map(|p| lock(&p.captured).iter().map(|c| c.to_string()).collect::<Vec<_>>()).collect();
    let unique: BTreeSet<&String> = captured.iter().collect();
    duplicated += captured.len() - unique.len();
    for id in &unique {
        if !on_server.contains(*id) {
            lost += 1;
            diverge(format!("case {id} was captured but the server does not hold it"));
        }
    }
    // Every case the server holds is held by some phone (its reporter's, at least). A phone
    // process killed after its store committed a capture and before it printed the
    // acknowledgement leaves a case nobody was told about: kept, and not a duplicate.
    let (_, docs, _) = store.counts().map_err(|e| e.to_string())?;
    let docs = usize::try_from(docs).unwrap_or(usize::MAX);
    if docs > on_phones.len() {
        duplicated += docs - on_phones.len();
        diverge(format!("the server holds {docs} cases, the phones {}", on_phones.len()));
    }
    report.lost = lost;
    report.duplicated = duplicated;
    report.photos_checked = photos_checked;
    report.photos_bad = photos_bad;
    report.converged = converged && lost == 0 && duplicated == 0 && photos_bad == 0;
    report.first_divergence = first;
    Ok(report)
}

/// A document's heads from its changes, sorted as `SqliteStore::doc_heads` sorts them.
fn heads(changes: &[Vec<u8>]) -> Vec<String> {
    let parsed: Vec<automerge::Change> =
        changes.iter().filter_map(|b| automerge::Change::from_bytes(b.clone()).ok()).collect();
    let mut doc = automerge::Automerge::new();
    if doc.apply_changes(parsed).is_err() {
        return vec!["(does not load)".into()];
    }
    let mut h: Vec<String> = doc.get_heads().iter().map(|h| h.to_string()).collect();
    h.sort();
    h
}
