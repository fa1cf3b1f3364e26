//! The chaos harness (issue 16): real phone stores sync with the real server — a child process,
//! killed and restarted on its data directory during the run — through a fault-injecting HTTP
//! proxy, and afterwards the phones' stores and the server are compared.
//!
//! Everything random comes from one seed: which fault meets each request, when and where the
//! server is killed, what the phones capture, when disks fill and clocks step.
//! `gridwork-bench chaos --seed S` replays a schedule; `tests/tests/chaos.rs` runs a few seeds
//! in CI.
//!
//! - **Network.** The proxy reads each HTTP/1.1 request whole (Content-Length or chunked), then,
//!   by the seed: forwards it; delays it; drops it before the server sees it; forwards it and
//!   drops the answer (the server committed, the phone never hears), cuts the answer halfway (a
//!   phone that sees part of a pull page), resets the connection (RST), or stalls mid-answer for
//!   up to 1.7 s; or forwards it twice and answers with the second reply. Concurrent phones'
//!   requests, delayed and stalled at random, reach the server out of order. Each request reaches the server on a fresh connection, so a restarted
//!   server is picked up at once.
//! - **Server crashes**, each at a moment drawn from the seed: a SIGKILL on a timer, an abort at
//!   a named point inside the server (`gridwork_model::crash_points`: mid-group-commit,
//!   after the commit and before the answer, mid-pull, mid-blob-write, before a verified blob is
//!   renamed), or a SIGKILL while a backup is being taken. Once per schedule the server is
//!   restored from a backup taken during the run (a new epoch: phones re-offer what it lacks).
//! - **Phone crashes.** Some phones run as child processes (`gridwork-bench chaos-phone`) that
//!   capture, attach photos, add notes, check in and sync in a loop; they are SIGKILLed at
//!   random moments (mid-capture, mid-photo-write, mid-sync, after a request was sent or before
//!   an answer was applied) and started again on their store. What they acknowledged is what they
//!   printed after the store returned.
//! - **Full disks.** With `disk_mb`, the server's data directory and one phone's store live on
//!   size-limited tmpfs mounts (root only), which a ballast file fills for two rounds: the server
//!   must answer 507 and the phone refuse with `StorageFull`, losing nothing either acknowledged,
//!   and both carry on when the ballast goes.
//! - **Clocks.** Every phone's wall clock is hours off and jumps; the server's is stepped back.
//! - **Supervisors.** A console user adds notes to the phones' cases while they push.

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridwork_core::clock::{ClockReading, DeviceClock, SystemClock};
use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::geo::Location;
use gridwork_core::model::ids::{CaseId, GridId, RecordId};
use gridwork_core::model::lifecycle::EventKind;
use gridwork_core::model::wire::{EnrolRequest, EnrolResponse};
use gridwork_core::store::CheckInInput;
use gridwork_core::sync::SyncConfig;
use gridwork_core::Store;
use gridwork_sync_server::{SqliteStore, SyncStore};

use crate::console_client::ConsoleClient;
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
    /// Size of the tmpfs the server's data directory lives on (one phone's gets half): the
    /// schedule fills both for two rounds. 0 leaves full disks out (mounting needs root).
    pub disk_mb: u64,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    /// Requests the proxy saw, by what it did to them.
    pub faults: BTreeMap<&'static str, u64>,
    pub server_kills: usize,
    /// Server kills by where they landed: a crash point's name, `timer` or `backup`.
    pub kills_at: BTreeMap<&'static str, usize>,
    pub phone_kills: usize,
    /// Phone kills by where they landed: a crash point's name, `timer` or `end`.
    pub phone_kills_at: BTreeMap<&'static str, usize>,
    /// Times a disk was filled, and requests or actions refused for a full disk meanwhile
    /// (the server's 507 answers and the phone's `StorageFull` errors).
    pub disk_fills: usize,
    pub disk_full_events: u64,
    /// Times the server's clock was stepped back.
    pub clock_steps: usize,
    /// Backups taken during the run (each while the server was being killed), and restores.
    pub backups: usize,
    pub restores: usize,
    /// Restores refused for a full disk (the data directory put back as it was), tried again.
    pub restores_refused: usize,
    /// Notes the console acknowledged (303) while phones pushed to the same cases.
    pub console_notes: usize,
    /// Of those, acknowledged between the restored backup and the restore and held by no phone
    /// then: rolled back with the server, as any server-side write after a backup is.
    pub console_rolled_back: usize,
    /// Acknowledged notes (phones' and the console's) and check-ins looked for.
    pub notes_checked: usize,
    pub checkins_checked: usize,
    /// Items in the server's quarantine at the end (every device in the harness is honest).
    pub quarantined: u64,
    /// Requests the server answered 500 (a bug: every refusal has its own status).
    pub internal_errors: u64,
    /// Health checks of the server between rounds, and those it did not answer.
    pub health_checks: usize,
    pub health_failures: usize,
    /// Cases, notes and check-ins a phone's store (or the console) acknowledged that the server
    /// or a phone in scope lacks.
    pub lost: usize,
    /// Cases held twice by a phone or held by the server and by no phone (a copy nobody made),
    /// and notes held twice in a case.
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
    Reset,
    Stall,
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
            Fault::Reset => "reset",
            Fault::Stall => "stall",
        }
    }

    fn pick(rng: &mut Rng) -> Fault {
        match rng.below(100) {
            0..=39 => Fault::Forward,
            40..=49 => Fault::Delay,
            50..=59 => Fault::DropRequest,
            60..=69 => Fault::DropResponse,
            70..=79 => Fault::CutResponse,
            80..=87 => Fault::Duplicate,
            88..=93 => Fault::Reset,
            _ => Fault::Stall,
        }
    }
}

/// What the proxy counted: requests by fault, 5xx answers by status, and the first 500's body.
#[derive(Debug, Default)]
struct Tally {
    counts: BTreeMap<&'static str, u64>,
    first_500: Option<String>,
}

/// Shared state of the proxy.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    faults_on: Arc<AtomicBool>,
    rng: Arc<Mutex<Rng>>,
    counts: Arc<Mutex<Tally>>,
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
            counts: Arc::new(Mutex::new(Tally::default())),
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
    counts: &Mutex<Tally>,
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
        *lock(counts).counts.entry(fault.name()).or_default() += 1;
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
            Fault::Forward | Fault::DropResponse | Fault::CutResponse | Fault::Reset | Fault::Stall => forward(),
        };
        if let Some(status) = answer.as_deref().and_then(status_of).filter(|s| *s >= 500) {
            if status == 500 {
                let body = String::from_utf8_lossy(answer.as_deref().unwrap_or_default());
                let body = body.split("\r\n\r\n").nth(1).unwrap_or_default().chars().take(300).collect::<String>();
                lock(counts).first_500.get_or_insert(body);
            }
            *lock(counts)
                .counts
                .entry(match status {
                    507 => "answered_507",
                    503 => "answered_503",
                    500 => "answered_500",
                    _ => "answered_5xx",
                })
                .or_default() += 1;
        }
        let Some(answer) = answer else {
            *lock(counts).counts.entry("server_unreachable").or_default() += u64::from(fault != Fault::DropRequest);
            break;
        };
        match fault {
            Fault::DropResponse => break,
            Fault::CutResponse => {
                let _ = client.write_all(&answer[..answer.len() / 2]);
                break;
            }
            // The server committed; the phone's connection is reset (RST, not a clean close).
            Fault::Reset => {
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                return;
            }
            // Part of the answer, a stall, then the rest: a read that stalls mid-body.
            Fault::Stall => {
                let half = answer.len() / 2;
                if client.write_all(&answer[..half]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500 + delay_ms * 3));
                if client.write_all(&answer[half..]).is_err() {
                    break;
                }
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

/// The status code of an HTTP answer.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(line).ok()?.split(' ').nth(1)?.parse().ok()
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
    stdin: Option<std::process::ChildStdin>,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
}

impl Server {
    /// Starts the server; an error (it would not open its store, say on a full disk) leaves it
    /// down, and the harness tries again later, as an operator's supervisor would.
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
        let Some(url) = first.trim().strip_prefix("listening ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the server did not start: {first:?}"));
        };
        let addr: SocketAddr =
            url.trim_start_matches("http://").parse().map_err(|e| format!("server address {url}: {e}"))?;
        *lock(&self.upstream) = Some(addr);
        self.stdin = child.stdin.take();
        self.child = Some(child);
        Ok(url)
    }

    fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Its URL, for the console (which does not go through the proxy).
    fn url(&self) -> Option<String> {
        (*lock(&self.upstream)).map(|a| format!("http://{a}"))
    }

    /// Writes one command line to the server (`arm POINT N`, `clock-step MS`).
    fn tell(&mut self, command: &str) -> bool {
        self.stdin.as_mut().is_some_and(|s| writeln!(s, "{command}").and_then(|()| s.flush()).is_ok())
    }

    /// Waits up to `limit` for the server to die by itself (an armed crash point).
    fn died_within(&mut self, limit: Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => {
                    self.kill();
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        false
    }

    /// SIGKILL: no shutdown of any kind.
    fn kill(&mut self) {
        *lock(&self.upstream) = None;
        self.stdin = None;
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

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: PathBuf, megabytes: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cannot mount a {megabytes} MB tmpfs at {} (the full-disk schedule needs root): run as root, or pass --disk-mb 0 to leave full disks out",
                dir.display()
            ));
        }
        Ok(SmallDisk { dir })
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("ballast")
    }

    /// Fills the disk with a ballast file; returns the bytes written.
    fn fill(&self) -> u64 {
        let Ok(mut f) = std::fs::File::create(self.ballast()) else { return 0 };
        let chunk = vec![0x5a_u8; 256 * 1024];
        let mut written = 0;
        while f.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        // The last partial chunk: fill to the last byte.
        for size in [16 * 1024, 1024, 64, 1] {
            while f.write_all(&chunk[..size]).is_ok() {
                written += size as u64;
            }
        }
        written
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.ballast());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).stderr(Stdio::null()).status();
    }
}

/// A phone's wall clock, hours off and jumping, as when a user sets the time by hand; time since
/// boot and the boot id stay true, as they do on a phone.
#[derive(Debug)]
pub struct SkewedClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl SkewedClock {
    pub fn new(offset_ms: i64) -> SkewedClock {
        SkewedClock { offset_ms: std::sync::atomic::AtomicI64::new(offset_ms) }
    }

    pub fn jump(&self, by_ms: i64) {
        self.offset_ms.fetch_add(by_ms, Ordering::Relaxed);
    }
}

impl DeviceClock for SkewedClock {
    fn now(&self) -> ClockReading {
        let mut r = SystemClock.now();
        r.wall_ms = r.wall_ms.saturating_add(self.offset_ms.load(Ordering::Relaxed));
        r
    }
}

/// A crash point and the arrival at it that kills, or none.
type Arm = Option<(&'static str, u64)>;

/// Half of a phone process's incarnations are armed to die at a named point of the core
/// (`gridwork_model::crash_points::PHONE_POINTS`), the others die on a timer or at the end.
fn phone_arm(rng: &mut Rng) -> Arm {
    let points = gridwork_core::model::crash_points::PHONE_POINTS;
    (rng.below(2) == 0).then(|| (points[rng.below(points.len())], 1 + rng.below(4) as u64))
}

/// A seeded wall-clock error: up to 12 hours either way.
fn clock_error(rng: &mut Rng) -> i64 {
    (rng.below(24 * 60) as i64 - 12 * 60) * 60_000
}

/// What a phone's store acknowledged to its user (for a child process, the `ACK …` lines it
/// printed after the call returned).
#[derive(Debug, Default)]
struct Acked {
    cases: Vec<CaseId>,
    /// (case, the note's text): every note's text is unique in a run.
    notes: Vec<(CaseId, String)>,
    checkins: Vec<String>,
}

struct ChaosPhone {
    user: String,
    dir: PathBuf,
    enrolment: EnrolResponse,
    /// Open in this process; None for a phone that runs as a child process until the calm.
    store: Option<Store>,
    clock: Arc<SkewedClock>,
    config: SyncConfig,
    grid: usize,
    acked: Arc<Mutex<Acked>>,
    child: Option<Child>,
    incarnation: u64,
    /// The crash point the running child process is armed with.
    armed: Option<&'static str>,
}

impl ChaosPhone {
    /// Starts (again) the child process of a process phone.
    /// `arm`: a crash point this incarnation dies at (its n-th arrival), or none.
    fn spawn(&mut self, exe: &Path, seed: u64, grids: usize, arm: Arm) -> Result<(), String> {
        self.incarnation += 1;
        self.armed = arm.map(|(point, _)| point);
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
            .arg(self.clock.offset_ms.load(Ordering::Relaxed).to_string())
            .arg(arm.map_or_else(|| "-".to_owned(), |(point, n)| format!("{point}:{n}")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a phone process: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let acked = self.acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut words = line.splitn(4, ' ');
                let (Some("ACK"), Some(what), Some(id)) = (words.next(), words.next(), words.next()) else { continue };
                let mut a = lock(&acked);
                match (what, CaseId::parse(id)) {
                    ("case", Ok(c)) => a.cases.push(c),
                    ("note", Ok(c)) => a.notes.push((c, words.next().unwrap_or_default().to_owned())),
                    ("checkin", _) => a.checkins.push(id.to_owned()),
                    _ => {}
                }
            }
        });
        self.child = Some(child);
        Ok(())
    }

    /// Whether the child process died by itself (at its armed crash point).
    fn died(&mut self) -> bool {
        let gone = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if gone {
            self.child = None;
        }
        gone
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

/// One step of a phone's work: a case (a photo with some), a note on its last case, a check-in.
/// `ack` hears what the store acknowledged; `refused` every error a storage-full disk caused.
struct Work<'a> {
    store: &'a Store,
    catalog: &'a Catalog,
    grid: usize,
    patrol: Option<RecordId>,
    last_case: Option<CaseId>,
}

enum Ack {
    Case(CaseId),
    Note(CaseId, String),
    CheckIn(String),
}

impl Work<'_> {
    /// Captures one case (with a photo when `photo`), a note on the previous case when `note`,
    /// and a check-in; returns what was acknowledged and how many actions a full disk refused.
    fn step(&mut self, rng: &mut Rng, photo: bool, note: Option<String>) -> (Vec<Ack>, usize) {
        let (mut acks, mut full) = (vec![], 0);
        let mut count_full = |e: &gridwork_core::CoreError| {
            if matches!(e, gridwork_core::CoreError::StorageFull { .. }) {
                full += 1;
            }
        };
        if let (Some(text), Some(case)) = (note, self.last_case) {
            match self.store.record_event(&case, EventKind::Note { text: text.clone() }) {
                Ok(_) => acks.push(Ack::Note(case, text)),
                Err(e) => count_full(&e),
            }
        }
        match self.store.capture_case(random_case(rng, self.catalog, self.grid, 0)) {
            Ok(c) => {
                if photo {
                    let jpeg = camera_like_jpeg(64, 48, &ExifSpec::default(), rng.next_u64());
                    if let Err(e) = self.store.attach_photo(&c.id, &jpeg) {
                        count_full(&e);
                    }
                }
                self.last_case = Some(c.id);
                acks.push(Ack::Case(c.id));
            }
            Err(e) => count_full(&e),
        }
        if self.patrol.is_none() {
            let grid = &self.catalog.grids[self.grid % self.catalog.grids.len()];
            match self.store.start_patrol(&GridId(grid.id.0.clone())) {
                Ok(p) => self.patrol = Some(p),
                Err(e) => count_full(&e),
            }
        }
        if let Some(patrol) = self.patrol {
            let grid = &self.catalog.grids[self.grid % self.catalog.grids.len()];
            if let Some(p) = grid.points.get(rng.below(grid.points.len().max(1))) {
                let input = CheckInInput {
                    patrol,
                    point: Some(p.id.clone()),
                    location: Location::gps(p.lat, p.lon, 5.0, 0),
                    note: String::new(),
                    photo: None,
                };
                match self.store.check_in(input) {
                    Ok(c) => acks.push(Ack::CheckIn(c.id.to_string())),
                    Err(e) => count_full(&e),
                }
            }
        }
        (acks, full)
    }
}

/// The child process of a process phone (`gridwork-bench chaos-phone DIR ENROLMENT URL SEED GRID
/// GRIDS CLOCK_OFFSET_MS POINT:N|-`): arms the crash point, if any, opens its store with a wall
/// clock that far off, then works
/// ([`Work::step`]) and syncs in a loop until it is killed, printing `ACK case ID`,
/// `ACK note CASE TEXT` and `ACK checkin ID` once the store returned. Its clock jumps now and then.
pub fn phone_child(mut args: impl Iterator<Item = String>) -> Result<(), String> {
    let usage = "chaos-phone DIR ENROLMENT URL SEED GRID GRIDS CLOCK_OFFSET_MS POINT:N|-";
    let mut next = || args.next().ok_or(usage);
    let (dir, enrolment, url) = (PathBuf::from(next()?), PathBuf::from(next()?), next()?);
    let (seed, grid, grids, offset) = (next()?, next()?, next()?, next()?);
    let seed: u64 = seed.parse().map_err(|_| usage)?;
    let grid: usize = grid.parse().map_err(|_| usage)?;
    let grids: usize = grids.parse().map_err(|_| usage)?;
    let offset: i64 = offset.parse().map_err(|_| usage)?;
    if let Some((point, n)) = next()?.split_once(':') {
        if !n.parse().is_ok_and(|n| gridwork_core::model::crash_points::arm(point, n)) {
            return Err(format!("cannot arm {point}:{n}"));
        }
    }
    let e: EnrolResponse =
        serde_json::from_slice(&std::fs::read(&enrolment).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let catalog = district(grids);
    let clock = Arc::new(SkewedClock::new(offset));
    let store = open_device(&dir, identity_from_enrolment(&e), &catalog, Some(clock.clone() as Arc<dyn DeviceClock>))
        .map_err(|e| e.to_string())?;
    let config = SyncConfig::new(url, e.token);
    let mut rng = Rng::new(seed);
    let mut work = Work { store: &store, catalog: &catalog, grid, patrol: None, last_case: None };
    let stdout = std::io::stdout();
    for i in 0u64.. {
        if rng.below(8) == 0 {
            clock.jump(clock_error(&mut rng));
        }
        let note = (i % 2 == 1).then(|| format!("note-{seed}-{i}"));
        let (acks, _) = work.step(&mut rng, i % 3 == 0, note);
        let mut out = stdout.lock();
        for a in acks {
            let _ = match a {
                Ack::Case(c) => writeln!(out, "ACK case {c}"),
                Ack::Note(c, text) => writeln!(out, "ACK note {c} {text}"),
                Ack::CheckIn(id) => writeln!(out, "ACK checkin {id}"),
            };
        }
        let _ = out.flush();
        drop(out);
        let _ = store.sync(&config, &mut |_| {});
        std::thread::sleep(Duration::from_millis(10 + rng.below(40) as u64));
    }
    Ok(())
}

/// How the server dies in one kill.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// SIGKILL after this many milliseconds of the round.
    Timed(u64),
    /// Abort at the n-th arrival at a named crash point from now.
    At(&'static str, u64),
    /// SIGKILL this many milliseconds after a backup started.
    MidBackup(u64),
}

impl Kill {
    fn pick(rng: &mut Rng) -> Kill {
        match rng.below(10) {
            0..=2 => Kill::Timed(rng.below(300) as u64),
            3 => Kill::MidBackup(rng.below(40) as u64),
            _ => {
                let points = gridwork_core::model::crash_points::SERVER_POINTS;
                Kill::At(points[rng.below(points.len())], 1 + rng.below(3) as u64)
            }
        }
    }
}

/// The console user who races the phones.
const SUPERVISOR: &str = "s0";
const SUPERVISOR_PASSWORD: &str = "chaos-supervisor-password";

/// Runs one schedule. Errors are the harness's own failures (a server that would not start);
/// what the schedule did to the data is in the report.
pub fn run(cfg: &ChaosConfig, root: &Path) -> Result<ChaosReport, String> {
    let mut rng = Rng::new(cfg.seed);
    let grids = cfg.phones.div_ceil(2).max(1);
    let catalog: Catalog = district(grids);
    // The server's data directory, on a small disk when full disks are in the schedule. The
    // directory is inside the mount, so that a restore can move it aside.
    let server_disk = match cfg.disk_mb {
        0 => None,
        mb => Some(SmallDisk::mount(root.join("server-disk"), mb)?),
    };
    let server_dir = server_disk.as_ref().map_or_else(|| root.join("server"), |d| d.dir.join("server"));
    // One phone (the second: it runs in this process) keeps its store on a small disk too.
    let phone_disk = match cfg.disk_mb {
        0 => None,
        _ if cfg.phones < 2 => None,
        mb => Some(SmallDisk::mount(root.join("phone-disk"), mb.div_ceil(2))?),
    };
    let mut enrolments: Vec<(String, EnrolResponse)> = vec![];
    {
        let store = SqliteStore::open(&server_dir).map_err(|e| e.to_string())?;
        store.import_catalog(&catalog).map_err(|e| e.to_string())?;
        for p in 0..cfg.phones {
            let user = format!("w{p}");
            store
                .set_user(&user, Role::Worker, None, &[Scope::Grid(GridId(format!("g{}", p / 2)))])
                .map_err(|e| e.to_string())?;
            let (_, code) = store.enrol_device(&user, 0).map_err(|e| e.to_string())?;
            let e = store
                .redeem(&EnrolRequest { code, app_version: "0.1.0".into(), public_key: None }, 0)
                .map_err(|e| e.to_string())?;
            enrolments.push((user, e));
        }
        store
            .set_user(SUPERVISOR, Role::Supervisor, None, &[Scope::Community("Community 0".into())])
            .map_err(|e| e.to_string())?;
        gridwork_sync_server::store::ConsoleStore::set_password(&store, SUPERVISOR, SUPERVISOR_PASSWORD, 0)
            .map_err(|e| e.to_string())?;
    }
    let proxy = Proxy::start(cfg.seed)?;
    let mut server = Server {
        exe: cfg.server_exe.clone(),
        dir: server_dir.clone(),
        child: None,
        stdin: None,
        upstream: proxy.upstream.clone(),
    };
    server.start()?;
    let mut phones = vec![];
    for (i, (user, e)) in enrolments.into_iter().enumerate() {
        let dir = match (&phone_disk, i) {
            (Some(d), 1) => d.dir.join(&user),
            _ => root.join(&user),
        };
        let clock = Arc::new(SkewedClock::new(clock_error(&mut rng)));
        // Process phones are the first phone of the first grids: the other phone of their grid
        // runs in this process and must receive what they captured.
        let process = i % 2 == 0 && i / 2 < cfg.process_phones;
        let store = if process {
            None
        } else {
            let c = Some(clock.clone() as Arc<dyn DeviceClock>);
            Some(open_device(&dir, identity_from_enrolment(&e), &catalog, c).map_err(|e| e.to_string())?)
        };
        let config = SyncConfig::new(proxy.url(), e.token.clone());
        let mut phone = ChaosPhone {
            user,
            dir,
            enrolment: e,
            store,
            clock,
            config,
            grid: i / 2,
            acked: Arc::new(Mutex::new(Acked::default())),
            child: None,
            incarnation: 0,
            armed: None,
        };
        if process {
            phone.spawn(&cfg.server_exe, cfg.seed, grids, phone_arm(&mut rng))?;
        }
        phones.push(phone);
    }

    // The schedule's events, from the seed: which rounds kill the server and how; when the
    // disks fill (for two rounds); when the server's clock steps back; when a backup is restored.
    // They come from a stream of their own, so that a seed keeps its events when the harness
    // draws more for the phones (the named regression seeds in tests/tests/chaos.rs rely on it).
    let mut events = Rng::new(cfg.seed ^ 0x5eed_0fe7_e7e7);
    let rounds = cfg.rounds.max(1);
    let mut kills: Vec<(usize, Kill)> =
        (0..cfg.server_kills).map(|_| (events.below(rounds), Kill::pick(&mut events))).collect();
    kills.sort_by_key(|(r, _)| *r);
    let fill_round = (cfg.disk_mb > 0 && rounds >= 4).then(|| 1 + events.below(rounds - 3));
    let clock_step_round = events.below(rounds);
    let step_back_ms = -(1 + events.below(6) as i64) * 3_600_000;
    let restore_round = (rounds >= 3).then(|| rounds / 2 + events.below(rounds - rounds / 2));
    // A backup taken while the phones push, before the restore (kills mid-backup add more).
    let backup_round = restore_round.map(|r| events.below(r));
    let mut report = ChaosReport { seed: cfg.seed, ..ChaosReport::default() };
    // Each backup with the round it was started in.
    let mut backups: Vec<(PathBuf, usize)> = vec![];
    // The rounds between which the restored backup's snapshot and the restore fall: a console
    // action acknowledged then held only by the server is rolled back by the restore, as any
    // server-side write after a backup is (phones re-offer everything else).
    let mut rolled_back_rounds: Option<(usize, usize)> = None;
    let phone_disk_full = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let console_acked: Arc<Mutex<Vec<(CaseId, String, usize)>>> = Arc::new(Mutex::new(vec![]));
    let mut console = ConsoleClient::new()?;
    let mut note_counter = 0u64;
    proxy.faults_on.store(true, Ordering::Relaxed);
    for round in 0..rounds {
        if !server.is_up() {
            // Down since a restart failed (a full disk): try again, as an operator would.
            let _ = server.start();
        }
        if Some(round) == fill_round {
            for d in server_disk.iter().chain(phone_disk.iter()) {
                if d.fill() > 0 {
                    report.disk_fills += 1;
                }
            }
        }
        if fill_round.is_some_and(|f| round == f + 2) {
            for d in server_disk.iter().chain(phone_disk.iter()) {
                d.free();
            }
        }
        if round == clock_step_round && server.tell(&format!("clock-step {step_back_ms}")) {
            report.clock_steps += 1;
        }
        if restore_round.is_some_and(|r| round >= r) && report.restores == 0 {
            if let Some((backup, taken)) = backups.last() {
                server.kill();
                match gridwork_sync_server::backup::restore(backup, &server_dir) {
                    Ok(_) => {
                        report.restores += 1;
                        rolled_back_rounds = Some((*taken, round));
                    }
                    // Refused on a full disk, with the data directory put back: try next round.
                    Err(gridwork_sync_server::error::ServerError::StorageFull(_)) => report.restores_refused += 1,
                    Err(e) => {
                        report.first_divergence.get_or_insert(format!("restoring {} failed: {e}", backup.display()));
                    }
                }
                let _ = server.start();
            }
        }
        // What each phone does this round, drawn before the threads start (reproducible).
        let plans: Vec<(usize, bool, u64, Option<i64>)> = phones
            .iter()
            .map(|_| {
                (
                    1 + rng.below(2),
                    rng.below(3) == 0,
                    rng.next_u64(),
                    (rng.below(4) == 0).then(|| clock_error(&mut rng)),
                )
            })
            .collect();
        let kills_now: Vec<Kill> = kills.iter().filter(|(r, _)| *r == round).map(|(_, k)| *k).collect();
        // Phone processes that died at their crash point since the last round start again.
        for p in phones.iter_mut() {
            if p.died() {
                report.phone_kills += 1;
                *report.phone_kills_at.entry(p.armed.unwrap_or("unarmed exit")).or_default() += 1;
                p.spawn(&cfg.server_exe, cfg.seed, grids, phone_arm(&mut rng))?;
            }
        }
        let rearm: Vec<Arm> = phones.iter().map(|_| phone_arm(&mut rng)).collect();
        let phone_kill_after: Vec<Option<u64>> =
            phones.iter().map(|p| (p.store.is_none() && rng.below(2) == 0).then(|| rng.below(300) as u64)).collect();
        // The supervisor's notes this round: on cases the phones acknowledged so far.
        let known: Vec<CaseId> = phones.iter().flat_map(|p| lock(&p.acked).cases.clone()).collect();
        let console_notes: Vec<(CaseId, String)> = (0..2)
            .filter(|_| !known.is_empty())
            .map(|_| {
                note_counter += 1;
                (known[rng.below(known.len())], format!("console-note-{}-{note_counter}", cfg.seed))
            })
            .collect();
        let (server_exe, seed) = (&cfg.server_exe, cfg.seed);
        let console_url = server.url();
        let backup = (Some(round) == backup_round).then(|| {
            let dest = root.join("backups").join(format!("round-{round}"));
            let from = server_dir.clone();
            std::thread::spawn(move || gridwork_sync_server::backup::backup(&from, &dest).map(|_| dest))
        });
        let phone_kills = std::thread::scope(|s| -> Result<BTreeMap<&'static str, usize>, String> {
            let mut children = vec![];
            for (((p, (cases, photo, seed, jump)), kill_after), arm) in
                phones.iter_mut().zip(plans).zip(phone_kill_after).zip(rearm)
            {
                let catalog = &catalog;
                if p.store.is_none() {
                    children.push((p, kill_after, arm));
                    continue;
                }
                let p: &ChaosPhone = p;
                let Some(store) = &p.store else { continue };
                if let Some(by) = jump {
                    p.clock.jump(by);
                }
                let (acked, full) = (p.acked.clone(), phone_disk_full.clone());
                let (grid, config) = (p.grid, &p.config);
                s.spawn(move || {
                    let mut r = Rng::new(seed);
                    let last = lock(&acked).cases.last().copied();
                    let mut work = Work { store, catalog, grid, patrol: None, last_case: last };
                    for i in 0..cases {
                        let note = (i == 0).then(|| format!("note-{seed}-{i}"));
                        let (acks, refused) = work.step(&mut r, photo, note);
                        full.fetch_add(refused, Ordering::Relaxed);
                        let mut a = lock(&acked);
                        for ack in acks {
                            match ack {
                                Ack::Case(c) => a.cases.push(c),
                                Ack::Note(c, t) => a.notes.push((c, t)),
                                Ack::CheckIn(id) => a.checkins.push(id),
                            }
                        }
                    }
                    // Faults surface as sync errors: the phone tries again next round, as an app does.
                    let _ = store.sync(config, &mut |_| {});
                });
            }
            // The supervisor works the queue while the phones push (straight to the server:
            // the console is on the district's network, not on a phone's 4G).
            let console = &mut console;
            let console_acked = console_acked.clone();
            s.spawn(move || {
                let Some(base) = console_url else { return };
                for (case, text) in console_notes {
                    let fields = [("action", "note"), ("note", text.as_str())];
                    let mut page = console.act(&base, &case.to_string(), &fields);
                    if page.as_ref().is_ok_and(|p| p.location.as_deref() == Some("/console/login") || p.status == 401) {
                        let _ = console.sign_in(&base, SUPERVISOR, SUPERVISOR_PASSWORD);
                        page = console.act(&base, &case.to_string(), &fields);
                    }
                    // Stored: the action's own redirect back to the case (a redirect to the
                    // sign-in page is a 303 too).
                    if page
                        .is_ok_and(|p| p.status == 303 && p.location.as_deref().is_some_and(|l| l.ends_with("?done=1")))
                    {
                        lock(&console_acked).push((case, text, round));
                    }
                }
            });
            // Phone processes die at their moment: mid-capture, mid-photo or mid-sync.
            let killer = s.spawn(move || -> Result<BTreeMap<&'static str, usize>, String> {
                let mut killed = BTreeMap::new();
                let mut by_time: Vec<(u64, &mut ChaosPhone, Arm)> =
                    children.into_iter().filter_map(|(p, k, arm)| k.map(|k| (k, p, arm))).collect();
                by_time.sort_by_key(|(k, _, _)| *k);
                let mut waited = 0;
                for (at, p, arm) in by_time {
                    std::thread::sleep(Duration::from_millis(at - waited));
                    waited = at;
                    let point_first = p.died();
                    if point_first || p.kill() {
                        *killed
                            .entry(if point_first { p.armed.unwrap_or("unarmed exit") } else { "timer" })
                            .or_default() += 1;
                    }
                    p.spawn(server_exe, seed, grids, arm)?;
                }
                Ok(killed)
            });
            for kill in &kills_now {
                if !server.is_up() && server.start().is_err() {
                    continue;
                }
                let how = match *kill {
                    Kill::Timed(after) => {
                        std::thread::sleep(Duration::from_millis(after));
                        server.kill();
                        "timer"
                    }
                    Kill::At(point, nth) => {
                        if server.tell(&format!("arm {point} {nth}")) && server.died_within(Duration::from_secs(3)) {
                            point
                        } else {
                            // The point was not reached in time (no such traffic): a plain kill.
                            server.kill();
                            "timer"
                        }
                    }
                    Kill::MidBackup(after) => {
                        let dest = root.join("backups").join(format!("b{}", backups.len() + report.server_kills));
                        let from = server_dir.clone();
                        let backup = std::thread::spawn(move || {
                            gridwork_sync_server::backup::backup(&from, &dest).map(|_| dest)
                        });
                        std::thread::sleep(Duration::from_millis(after));
                        server.kill();
                        if let Ok(Ok(dest)) = backup.join() {
                            backups.push((dest, round));
                        }
                        "backup"
                    }
                };
                report.server_kills += 1;
                *report.kills_at.entry(how).or_default() += 1;
                let _ = server.start();
            }
            killer.join().map_err(|_| "the phone killer panicked".to_owned())?
        })?;
        for (at, n) in phone_kills {
            report.phone_kills += n;
            *report.phone_kills_at.entry(at).or_default() += n;
        }
        if let Some(Ok(Ok(dest))) = backup.map(|b| b.join()) {
            backups.push((dest, round));
        }
        // The phone processes work on through part of each round.
        std::thread::sleep(Duration::from_millis(150));
        // The server, when up, still answers.
        if let Some(url) = server.url() {
            let ok = console.get(&format!("{url}/v1/health")).is_ok_and(|p| p.status == 200);
            report.health_checks += 1;
            if !ok {
                report.health_failures += 1;
            }
        }
    }
    // Space comes back (if the schedule ended while full), the server is up, the phone
    // processes stop (one more SIGKILL each) and their stores open here for the calm.
    for d in server_disk.iter().chain(phone_disk.iter()) {
        d.free();
    }
    if !server.is_up() {
        server.start()?;
    }
    for p in phones.iter_mut() {
        if p.store.is_none() {
            let point_first = p.died();
            if point_first || p.kill() {
                report.phone_kills += 1;
                *report
                    .phone_kills_at
                    .entry(if point_first { p.armed.unwrap_or("unarmed exit") } else { "end" })
                    .or_default() += 1;
            }
            let c = Some(p.clock.clone() as Arc<dyn DeviceClock>);
            p.store = Some(
                open_device(&p.dir, identity_from_enrolment(&p.enrolment), &catalog, c).map_err(|e| e.to_string())?,
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
                let left = p.store()?.outbox_len().unwrap_or(1);
                match r {
                    Ok(_) if left == 0 => break,
                    Ok(r) if !r.refused.is_empty() => {
                        report.first_divergence.get_or_insert(format!(
                            "{} in the calm: the server refused {:?}",
                            p.user,
                            r.refused.first()
                        ));
                    }
                    Err(e) if left > 0 => {
                        report.first_divergence.get_or_insert(format!("{} in the calm: {e}", p.user));
                    }
                    _ => {}
                }
            }
        }
    }
    server.kill();
    report.faults = lock(&proxy.counts).counts.clone();
    if let Some(body) = lock(&proxy.counts).first_500.clone() {
        // A refusal must say why (507 for a full disk); a 500 is a bug to find.
        report.first_divergence.get_or_insert(format!("the server answered 500: {body}"));
        report.internal_errors = report.faults.get("answered_500").copied().unwrap_or(0);
    }
    report.disk_full_events =
        phone_disk_full.load(Ordering::Relaxed) as u64 + report.faults.get("answered_507").copied().unwrap_or(0);
    report.backups = backups.len();
    let console_acked = lock(&console_acked).clone();
    report.console_notes = console_acked.len();
    let console_acked: Vec<(CaseId, String, bool)> = console_acked
        .into_iter()
        .map(|(c, t, r)| (c, t, rolled_back_rounds.is_some_and(|(from, to)| (from..to).contains(&r))))
        .collect();
    verdict(&phones, &server_dir, &console_acked, &mut report)?;
    if !report.converged {
        // The small disks are unmounted when this returns: keep a copy of what they held.
        for (disk, name) in [(&server_disk, "server-disk.kept"), (&phone_disk, "phone-disk.kept")] {
            if let Some(d) = disk {
                let _ = Command::new("cp").arg("-a").arg(&d.dir).arg(root.join(name)).status();
            }
        }
    }
    Ok(report)
}

/// Compares the phones' stores with the server's, filling the report's verdict.
fn verdict(
    phones: &[ChaosPhone],
    server_dir: &Path,
    console_acked: &[(CaseId, String, bool)],
    report: &mut ChaosReport,
) -> Result<(), String> {
    let store = SqliteStore::open(server_dir).map_err(|e| e.to_string())?;
    let (mut lost, mut duplicated, mut converged) = (0usize, 0usize, true);
    let mut first: Option<String> = report.first_divergence.take();
    let mut diverge = |what: String| {
        first.get_or_insert(what);
    };
    let blobs = gridwork_sync_server::blobs::BlobFiles::open(server_dir).map_err(|e| e.to_string())?;
    let mut checked_photos = BTreeSet::new();
    let mut on_server = BTreeSet::new();
    let mut on_phones: BTreeSet<String> = BTreeSet::new();
    // Each case's timeline as a phone in scope holds it (with the server's heads, checked below):
    // notes by text, to find the acknowledged ones and any held twice.
    let mut notes: BTreeMap<CaseId, Vec<String>> = BTreeMap::new();
    for p in phones {
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
            let extra = held.difference(&scope).next().cloned().unwrap_or_default();
            let outbox = p.store()?.outbox_len().map_err(|e| e.to_string())?;
            diverge(format!(
                "{} holds {} cases, its scope {} (first missing: {missing:?}, first not on the server: {extra:?}; outbox {outbox})",
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
            let detail = p.store()?.get_case(&case).map_err(|e| e.to_string())?;
            let shas: BTreeSet<&String> = detail.case.evidence.iter().map(|e| &e.sha256).collect();
            if shas.len() != detail.case.evidence.len() {
                duplicated += detail.case.evidence.len() - shas.len();
                diverge(format!("case {id} lists a photo twice on {}", p.user));
            }
            for ev in detail.case.evidence.iter() {
                // On the phone: a photo it still holds is byte for byte what its name says.
                match p.store()?.read_evidence(&ev.sha256) {
                    Ok(b) if gridwork_core::evidence::sha256_hex(&b) != ev.sha256 => {
                        report.photos_bad += 1;
                        diverge(format!("photo {} of case {id} is damaged on {}", ev.sha256, p.user));
                    }
                    Ok(_) => report.photos_checked += 1,
                    Err(_) => {}
                }
                // On the server: every photo a case references is there, byte for byte.
                if checked_photos.insert(ev.sha256.clone()) {
                    report.photos_checked += 1;
                    let ok = blobs.read(&ev.sha256).is_ok_and(|b| gridwork_core::evidence::sha256_hex(&b) == ev.sha256);
                    if !ok {
                        report.photos_bad += 1;
                        diverge(format!("photo {} of case {id} is missing or damaged on the server", ev.sha256));
                    }
                }
            }
            let texts: Vec<String> = detail
                .case
                .timeline
                .entries
                .iter()
                .filter_map(|e| match &e.event.kind {
                    EventKind::Note { text } => Some(text.clone()),
                    _ => None,
                })
                .collect();
            notes.entry(case).or_insert(texts);
            let mine = heads(&p.store()?.export_changes(&case).map_err(|e| e.to_string())?);
            let theirs = match store.doc_heads(id) {
                Ok(h) => h,
                Err(e) => {
                    converged = false;
                    diverge(format!("case {id} does not load on the server: {e}"));
                    continue;
                }
            };
            if mine != theirs {
                converged = false;
                diverge(format!("{} has other heads than the server for {id}", p.user));
            }
        }
    }
    // Notes: every acknowledged one (a phone's or the console's) once in its case's timeline,
    // and no note text twice anywhere.
    // A console note the restore may have rolled back (`may_go`) counts apart when it did.
    let mut acked_notes: Vec<(CaseId, String, bool)> = console_acked.to_vec();
    for p in phones {
        acked_notes.extend(lock(&p.acked).notes.iter().map(|(c, t)| (*c, t.clone(), false)));
    }
    for (case, text, may_go) in &acked_notes {
        if !notes.get(case).is_some_and(|t| t.contains(text)) {
            if *may_go {
                report.console_rolled_back += 1;
                continue;
            }
            lost += 1;
            diverge(format!("note {text:?} on case {case} was acknowledged but is not in its timeline"));
        }
    }
    for (case, texts) in &notes {
        let unique: BTreeSet<&String> = texts.iter().collect();
        if unique.len() != texts.len() {
            duplicated += texts.len() - unique.len();
            diverge(format!("case {case} holds a note twice"));
        }
    }
    report.notes_checked = acked_notes.len();
    // Check-ins: every acknowledged one on the server (its id is the table's key: never twice).
    let db = rusqlite::Connection::open(server_dir.join("server.db")).map_err(|e| e.to_string())?;
    for p in phones {
        for id in &lock(&p.acked).checkins {
            report.checkins_checked += 1;
            let n: i64 = db
                .query_row("SELECT count(*) FROM records WHERE id = ?1", [id], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if n != 1 {
                lost += 1;
                diverge(format!("check-in {id} of {} was acknowledged but the server holds it {n} times", p.user));
            }
        }
    }
    // Every device here is honest: nothing it sent may sit in quarantine.
    // (A row its author's own push resolved is marked released: only pending ones count.)
    let pending: Vec<_> =
        store.quarantined().map_err(|e| e.to_string())?.into_iter().filter(|q| q.status == "pending").collect();
    report.quarantined = pending.len() as u64;
    if let Some(first) = pending.first() {
        diverge(format!("{} honest items are in quarantine, the first: {}", pending.len(), first.reason));
    }
    let captured: Vec<String> =
        phones.iter().flat_map(|p| lock(&p.acked).cases.iter().map(|c| c.to_string()).collect::<Vec<_>>()).collect();
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
    if report.health_failures > 0 {
        diverge(format!(
            "the server did not answer {} of {} health checks",
            report.health_failures, report.health_checks
        ));
    }
    report.lost = lost;
    report.duplicated = duplicated;
    report.converged = converged
        && lost == 0
        && duplicated == 0
        && report.photos_bad == 0
        && report.health_failures == 0
        && report.internal_errors == 0
        && report.quarantined == 0;
    report.first_divergence = first;
    Ok(())
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
