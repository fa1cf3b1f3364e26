//! `gridwork-bench abuse`: the worst request mix enrolled devices (and anyone on the network) can
//! send, against a real server, while honest phones keep syncing (docs/SECURITY.md, "Bounded
//! resources").
//!
//! The server runs as a child process (this binary in `storm-server` mode: `gridwork_sync_server::
//! start` with its default limits) so its RSS can be read from /proc: `VmRSS` sampled every
//! 100 ms, and `VmHWM` at the end. It is seeded directly (catalog, 20 workers with a grid each, a
//! supervisor of community 0) before it starts. Honest phones are real gridwork-core stores of
//! workers w0..w7 that capture a case and `Store::sync` in a loop, first for a few quiet seconds
//! and then through the flood, in the same run. Every attack thread loops until the deadline:
//!
//! - `max_body`: sync bodies just under 16 MiB: the item limit's worth of changes of random
//!   (non-Automerge) bytes under fresh case ids;
//! - `tiny_changes`: the item limit's worth of real, fresh one-change cases (stored), filed under
//!   grid g8 (community 0, no honest phone's grid), so the greedy pulls have plenty to pull;
//! - `bombs`: compressed changes that inflate to just under the 4 MiB bound, as many per request
//!   as the item limit and the body allow (the server meets its 8 MiB per-request budget), with
//!   a few that inflate past the bound;
//! - `bomb_history`: cases in g8 whose history is 41 such changes, pushed in requests that fit
//!   the per-request budget (a supervisor's phone pulling such a case far behind is sent it
//!   compacted, which loads its whole history);
//! - `greedy_pulls`: a community supervisor's devices asking from no cursor with
//!   `max_pull_bytes = u64::MAX`, `accept_compacted`, and the `bomb_history` cases in `want_full`;
//! - `slow_bodies`: 200 raw connections announcing a 1,000,000-byte sync body (valid token) and
//!   sending one byte a second;
//! - `idle_connections`: 500 raw connections that send nothing;
//! - `enrol_guesses`: `POST /v1/enrol` with random codes, back to back, Retry-After ignored;
//! - `over_limit`: sync bodies of 17 MiB, with a Content-Length and chunked.
//!
//! One JSON line: RSS (baseline before the flood, peak, goal 512 MB), the honest syncs during
//! the flood (count, failures, p50/p99 over every attempt, a failed one timed until it gave up)
//! against the same loop's quiet p99, and per attack its threads, the requests (raw: connections)
//! sent and the statuses seen. Status "0" is no HTTP answer: an error, or a raw connection the
//! server closed without one; "open_at_end" is a raw connection still waiting at the deadline.
//! `--only KIND[,KIND]` runs some attacks only (`none`: the honest loop alone); `--threads N`
//! sets the threads of every attack that sends requests (1-8).

use gridwork_model::access::Scope;
use gridwork_model::ids::GridId;
use gridwork_sync_server::AdminStore;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use base64::Engine;
use gridwork_core::model::catalog::{Catalog, Role};
use gridwork_core::model::doc::keys;
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::wire::{EnrolRequest, EnrolResponse, PushedChange, SyncRequest, MAX_ITEMS_PER_REQUEST};
use gridwork_core::sync::SyncConfig;
use gridwork_sync_server::ingest::MAX_CHANGE_BYTES;
use gridwork_sync_server::limits::{MAX_BODY_BYTES, MAX_DECODED_BYTES_PER_REQUEST};
use gridwork_sync_server::{SqliteStore, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng, TITLES};

use crate::{ms_since, progress, round3, stats};

/// The attacks, in the order they are reported; `--only` takes these names.
const KINDS: [&str; 9] = [
    "max_body",
    "tiny_changes",
    "bombs",
    "bomb_history",
    "greedy_pulls",
    "slow_bodies",
    "idle_connections",
    "enrol_guesses",
    "over_limit",
];

/// Threads per attack (raw connections are all held by one thread per kind): 16 in all.
/// `--threads N` sets it for every attack that sends requests.
fn threads_of(kind: &str, set: Option<usize>) -> usize {
    match (kind, set) {
        ("slow_bodies" | "idle_connections", _) => 1,
        (_, Some(n)) => n,
        ("max_body" | "bombs" | "greedy_pulls", None) => 3,
        ("tiny_changes" | "over_limit", None) => 2,
        _ => 1,
    }
}

const WORKERS: usize = 20;
/// Honest phones are w0..w7 (grids g0..g7); attacker devices belong to w8..w15.
const MAX_HONEST: usize = 8;
const ATTACKER_WORKERS: std::ops::Range<usize> = 8..16;
/// Devices of the community supervisor `s0`, for the greedy pulls.
const SUPERVISOR_DEVICES: usize = 3;
/// In community 0 (g0..g9) and no honest phone's grid.
const ATTACK_GRID: &str = "g8";
const SLOW_CONNECTIONS: usize = 200;
const IDLE_CONNECTIONS: usize = 500;
/// Changes of a `bomb_history` case after its first (a compacted pull needs 32 or more).
const HISTORY_LEN: usize = 40;
/// `bomb_history` cases pushed at most (each is pushed in requests of a few changes).
const MAX_HISTORIES: usize = 4;
/// Under the body limit by this much, for the request's own framing.
const BODY_MARGIN: usize = 4096;
const OVER_LIMIT_BYTES: u64 = 17 * 1024 * 1024;
/// An attacker's request is given up after this (the deadline then ends its thread).
const ATTACK_TIMEOUT: Duration = Duration::from_secs(30);

const QUIET: u8 = 0;
const FLOOD: u8 = 1;
const STOP: u8 = 2;

pub struct AbuseArgs {
    seconds: u64,
    quiet_seconds: u64,
    honest: usize,
    think_ms: u64,
    only: Vec<&'static str>,
    threads: Option<usize>,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<AbuseArgs, String> {
    let mut a = AbuseArgs {
        seconds: 30,
        quiet_seconds: 8,
        honest: MAX_HONEST,
        think_ms: 200,
        only: KINDS.to_vec(),
        threads: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|_| format!("{flag} takes a number"));
        match flag.as_str() {
            "--seconds" => a.seconds = num()?.max(1),
            "--quiet-seconds" => a.quiet_seconds = num()?.max(1),
            "--honest" => a.honest = (num()? as usize).clamp(1, MAX_HONEST),
            "--think-ms" => a.think_ms = num()?,
            "--threads" => a.threads = Some((num()? as usize).clamp(1, 8)),
            "--only" => {
                a.only = vec![];
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty() && *n != "none") {
                    let kind = KINDS
                        .iter()
                        .find(|k| **k == name)
                        .ok_or(format!("--only: unknown attack {name}; one of {} or none", KINDS.join(",")))?;
                    a.only.push(kind);
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// What one attack sent and what it heard back.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    bytes_down: AtomicU64,
    statuses: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn record(&self, status: impl ToString, n: u64) {
        if n > 0 {
            *self.statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(status.to_string()).or_default() += n;
        }
    }

    /// Sends one request and records its status (0 when it failed).
    fn send(&self, request: reqwest::blocking::RequestBuilder) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match request.send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let down = resp.bytes().map(|b| b.len() as u64).unwrap_or(0);
                self.bytes_down.fetch_add(down, Ordering::Relaxed);
                self.record(status, 1);
            }
            Err(_) => self.record(0, 1),
        }
    }

    fn json(&self, threads: usize) -> serde_json::Value {
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
        serde_json::json!({
            "threads": threads,
            "sent": self.sent.load(Ordering::Relaxed),
            "statuses": statuses,
            "mb_down": round3(self.bytes_down.load(Ordering::Relaxed) as f64 / 1e6),
        })
    }
}

/// The server child; killed and reaped when dropped, whatever happened.
struct ServerChild(Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/PID/status in MB (VmRSS, VmHWM).
fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// utime + stime of a process in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn http_client() -> Result<reqwest::blocking::Client, String> {
    // reqwest needs a rustls configuration even for plain HTTP (see gridwork_core::tls).
    let tls = gridwork_core::tls::trust_nobody().map_err(|e| e.to_string())?;
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(ATTACK_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn request(changes: Vec<PushedChange>) -> SyncRequest {
    gridwork_tests::sync_request(changes, vec![], None, 1)
}

fn to_json(req: &SyncRequest) -> Result<Vec<u8>, String> {
    serde_json::to_vec(req).map_err(|e| e.to_string())
}

/// The item limit's worth of changes of random bytes (not Automerge), the body just under the
/// body limit.
fn max_body(seed: u64) -> Result<Vec<u8>, String> {
    let mut rng = Rng::new(seed);
    let docs: Vec<String> = (0..MAX_ITEMS_PER_REQUEST).map(|_| CaseId::generate().to_string()).collect();
    let empty = to_json(&request(
        docs.iter().map(|d| PushedChange { doc: d.clone(), bytes: String::new(), receipt: None, link: None }).collect(),
    ))?;
    // Base64 of a multiple of 3 bytes has no padding and needs no JSON escapes: exact sizes.
    let per_item = (MAX_BODY_BYTES - BODY_MARGIN - empty.len()) / MAX_ITEMS_PER_REQUEST;
    let raw = per_item / 4 * 3;
    let changes = docs
        .into_iter()
        .map(|doc| {
            let mut bytes: Vec<u8> = (0..raw).map(|_| rng.next_u64() as u8).collect();
            if let Some(b) = bytes.first_mut() {
                *b = 0; // never Automerge's magic
            }
            PushedChange { doc, bytes: b64(&bytes), receipt: None, link: None }
        })
        .collect();
    let body = to_json(&request(changes))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("max_body: {} bytes is over the limit", body.len()));
    }
    Ok(body)
}

/// A fresh one-change case: its id, grid and a title, under a fresh actor.
fn tiny_change(rng: &mut Rng) -> Result<PushedChange, String> {
    let id = CaseId::generate().to_string();
    let mut doc = AutoCommit::new();
    let e = |e: automerge::AutomergeError| e.to_string();
    doc.put(ROOT, keys::ID, id.as_str()).map_err(e)?;
    doc.put(ROOT, keys::GRID, ATTACK_GRID).map_err(e)?;
    doc.put(ROOT, keys::TITLE, TITLES[rng.below(TITLES.len())]).map_err(e)?;
    doc.commit();
    let bytes = doc.get_last_local_change().ok_or("no change")?.bytes().into_owned();
    Ok(PushedChange { doc: id, bytes: b64(&bytes), receipt: None, link: None })
}

/// A case whose one change puts `inflated` bytes of one repeated letter: a few KiB compressed.
fn bomb(inflated: usize, letter: u8) -> Result<PushedChange, String> {
    let id = CaseId::generate().to_string();
    let mut doc = AutoCommit::new();
    let e = |e: automerge::AutomergeError| e.to_string();
    doc.put(ROOT, keys::ID, id.as_str()).map_err(e)?;
    doc.put(ROOT, keys::GRID, ATTACK_GRID).map_err(e)?;
    doc.put(ROOT, "padding", String::from(char::from(letter)).repeat(inflated)).map_err(e)?;
    doc.commit();
    let bytes = doc.get_last_local_change().ok_or("no change")?.bytes().into_owned();
    Ok(PushedChange { doc: id, bytes: b64(&bytes), receipt: None, link: None })
}

/// A request of bombs: four that inflate past the bound, then a pool of ones just under it
/// repeated up to the item limit or the body limit.
fn bomb_request(offset: usize) -> Result<Vec<u8>, String> {
    let mut over = vec![];
    for i in 0..4 {
        over.push(bomb(MAX_CHANGE_BYTES + 1024, b'a' + i)?);
    }
    let mut pool = vec![];
    for i in 0..32 {
        pool.push(bomb(MAX_CHANGE_BYTES - 1024, b'a' + (i % 26) as u8)?);
    }
    let item = pool.iter().map(|c| c.bytes.len() + c.doc.len() + 24).max().unwrap_or(1);
    let fits = (MAX_BODY_BYTES - BODY_MARGIN - 1024) / item;
    let mut changes = over;
    let n = MAX_ITEMS_PER_REQUEST.min(fits).saturating_sub(changes.len());
    changes.extend((0..n).map(|i| pool[(offset + i) % pool.len()].clone()));
    let body = to_json(&request(changes))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("bombs: {} bytes is over the limit", body.len()));
    }
    Ok(body)
}

/// A case in the attack grid whose history is a small first change and `HISTORY_LEN` changes
/// each inflating to just under the bound; pushed as requests within the per-request budget.
fn bomb_history() -> Result<(String, Vec<Vec<u8>>), String> {
    let id = CaseId::generate().to_string();
    let mut doc = AutoCommit::new();
    let e = |e: automerge::AutomergeError| e.to_string();
    doc.put(ROOT, keys::ID, id.as_str()).map_err(e)?;
    doc.put(ROOT, keys::GRID, ATTACK_GRID).map_err(e)?;
    doc.commit();
    let mut changes = vec![doc.get_last_local_change().ok_or("no change")?.bytes().into_owned()];
    for k in 0..HISTORY_LEN {
        let padding = String::from(char::from(b'a' + (k % 26) as u8)).repeat(MAX_CHANGE_BYTES - 1024);
        doc.put(ROOT, "padding", padding).map_err(e)?;
        doc.commit();
        changes.push(doc.get_last_local_change().ok_or("no change")?.bytes().into_owned());
    }
    let per_request = (MAX_DECODED_BYTES_PER_REQUEST / MAX_CHANGE_BYTES).saturating_sub(1).max(1);
    let bodies = changes
        .chunks(per_request)
        .map(|chunk| {
            to_json(&request(
                chunk
                    .iter()
                    .map(|b| PushedChange { doc: id.clone(), bytes: b64(b), receipt: None, link: None })
                    .collect(),
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((id, bodies))
}

/// What the attacks share: where the server is, whose tokens they use, when they stop.
struct Target {
    url: String,
    addr: SocketAddr,
    /// Devices of workers w8..w15.
    attackers: Vec<String>,
    /// Devices of the community supervisor.
    supervisors: Vec<String>,
    /// Set when the flood starts.
    deadline: OnceLock<Instant>,
    /// `bomb_history` cases pushed so far (the greedy pulls ask for them whole).
    histories: Mutex<Vec<String>>,
}

impl Target {
    fn live(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() < *d)
    }

    fn left(&self) -> Duration {
        self.deadline.get().map(|d| d.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    fn sync(&self, client: &reqwest::blocking::Client, token: &str) -> reqwest::blocking::RequestBuilder {
        client.post(format!("{}/v1/sync", self.url)).bearer_auth(token).header("content-type", "application/json")
    }
}

/// Bodies built before the clock starts, so the flood starts at full strength.
struct Prepared {
    max_body: Vec<Vec<u8>>,
    bombs: Vec<Vec<u8>>,
    histories: Vec<(String, Vec<Vec<u8>>)>,
}

fn prepare(only: &[&str], threads: Option<usize>) -> Result<Prepared, String> {
    let mut p = Prepared { max_body: vec![], bombs: vec![], histories: vec![] };
    if only.contains(&"max_body") {
        for t in 0..threads_of("max_body", threads) {
            p.max_body.push(max_body(t as u64 + 1)?);
        }
    }
    if only.contains(&"bombs") {
        for t in 0..threads_of("bombs", threads) {
            p.bombs.push(bomb_request(t * 8)?);
        }
    }
    if only.contains(&"bomb_history") {
        for _ in 0..MAX_HISTORIES {
            p.histories.push(bomb_history()?);
        }
    }
    Ok(p)
}

/// One attack thread: loops until the deadline.
fn attack(kind: &str, t: usize, target: &Target, prepared: &Prepared, tally: &Tally) -> Result<(), String> {
    let token = &target.attackers[t % target.attackers.len()];
    let client = http_client()?;
    match kind {
        "max_body" => {
            let body = prepared.max_body.get(t).ok_or("no max_body body")?;
            while target.live() {
                tally.send(target.sync(&client, token).body(body.clone()));
            }
        }
        "tiny_changes" => {
            let mut rng = Rng::new(1000 + t as u64);
            while target.live() {
                let changes =
                    (0..MAX_ITEMS_PER_REQUEST).map(|_| tiny_change(&mut rng)).collect::<Result<Vec<_>, _>>()?;
                tally.send(target.sync(&client, token).body(to_json(&request(changes))?));
            }
        }
        "bombs" => {
            let body = prepared.bombs.get(t).ok_or("no bombs body")?;
            while target.live() {
                tally.send(target.sync(&client, token).body(body.clone()));
            }
        }
        "bomb_history" => {
            // Each case once (its changes in order); then its last requests again, as a phone
            // whose pushes were refused for the per-request budget would.
            let mut round = 0usize;
            while target.live() {
                for (id, bodies) in &prepared.histories {
                    if round == 0 {
                        for body in bodies {
                            if !target.live() {
                                return Ok(());
                            }
                            tally.send(target.sync(&client, token).body(body.clone()));
                        }
                        target.histories.lock().unwrap_or_else(|p| p.into_inner()).push(id.clone());
                    } else if let Some(body) = bodies.get(round % bodies.len()) {
                        tally.send(target.sync(&client, token).body(body.clone()));
                    }
                }
                round += 1;
                if prepared.histories.is_empty() {
                    break;
                }
            }
        }
        "greedy_pulls" => {
            let token = &target.supervisors[t % target.supervisors.len()];
            while target.live() {
                let mut req = request(vec![]);
                req.max_pull_bytes = u64::MAX;
                req.accept_compacted = true;
                req.want_full = target.histories.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tally.send(target.sync(&client, token).body(to_json(&req)?));
            }
        }
        "slow_bodies" => {
            let head = format!(
                "POST /v1/sync HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
                target.addr
            );
            hold(target, SLOW_CONNECTIONS, head.as_bytes(), true, tally);
        }
        "idle_connections" => hold(target, IDLE_CONNECTIONS, b"", false, tally),
        "enrol_guesses" => {
            let mut rng = Rng::new(7);
            while target.live() {
                let code = format!("{:016x}{:04x}", rng.next_u64(), rng.next_u64() & 0xffff);
                let body = serde_json::json!({ "code": code, "app_version": "0.1.0" }).to_string();
                tally.send(
                    client
                        .post(format!("{}/v1/enrol", target.url))
                        .header("content-type", "application/json")
                        .body(body),
                );
            }
        }
        "over_limit" => {
            let mut declared = t.is_multiple_of(2);
            while target.live() {
                let blank = std::io::repeat(b' ').take(OVER_LIMIT_BYTES);
                let body = if declared {
                    reqwest::blocking::Body::sized(blank, OVER_LIMIT_BYTES)
                } else {
                    reqwest::blocking::Body::new(blank)
                };
                tally.send(target.sync(&client, token).body(body));
                declared = !declared;
            }
        }
        other => return Err(format!("no attack {other}")),
    }
    Ok(())
}

/// The status a raw connection read: the code of an HTTP answer, or 0.
fn status_of(answer: &[u8]) -> u16 {
    std::str::from_utf8(answer).ok().and_then(|t| t.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn open_raw(addr: SocketAddr, head: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.write_all(head)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Holds `n` raw connections open until the deadline, each having sent `head`; `trickle` sends
/// one more body byte a second on each. A connection the server answers or closes is recorded
/// and replaced.
fn hold(target: &Target, n: usize, head: &[u8], trickle: bool, tally: &Tally) {
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    while target.live() {
        for slot in conns.iter_mut().filter(|s| s.is_none()) {
            tally.sent.fetch_add(1, Ordering::Relaxed);
            match open_raw(target.addr, head) {
                Ok(s) => *slot = Some(s),
                Err(_) => tally.record(0, 1),
            }
        }
        std::thread::sleep(Duration::from_secs(1).min(target.left()));
        for slot in conns.iter_mut() {
            let Some(s) = slot else { continue };
            if trickle {
                match s.write(b" ") {
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                        tally.record(0, 1);
                        *slot = None;
                        continue;
                    }
                    _ => {}
                }
            }
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => {
                    tally.record(0, 1);
                    *slot = None;
                }
                Ok(k) => {
                    tally.record(status_of(&buf[..k]), 1);
                    *slot = None;
                }
            }
        }
    }
    tally.record("open_at_end", conns.iter().filter(|c| c.is_some()).count() as u64);
}

/// One honest sync: when it started (quiet or flood), how long it took, whether it worked.
struct Sample {
    phase: u8,
    ms: f64,
    ok: bool,
}

/// An honest phone: capture a case, sync, rest `think_ms`, until told to stop.
#[allow(clippy::too_many_arguments)]
fn honest_phone(
    d: usize,
    root: &Path,
    enrol: &EnrolResponse,
    catalog: &Catalog,
    url: &str,
    think_ms: u64,
    start: &Barrier,
    phase: &AtomicU8,
    samples: &Mutex<Vec<Sample>>,
    errors: &Mutex<BTreeMap<String, u64>>,
) {
    let store = open_device(&root.join(format!("w{d}")), identity_from_enrolment(enrol), catalog, None);
    let config = SyncConfig::new(url, enrol.token.clone());
    let note = |e: String| {
        let short: String = e.chars().take(120).collect();
        *errors.lock().unwrap_or_else(|p| p.into_inner()).entry(short).or_default() += 1;
    };
    // The first sync brings the catalog and scopes; not measured.
    let store = match store {
        Ok(s) => {
            if let Err(e) = s.sync(&config, &mut |_| {}) {
                note(format!("first sync: {e}"));
            }
            Some(s)
        }
        Err(e) => {
            note(format!("open: {e}"));
            None
        }
    };
    start.wait();
    let Some(store) = store else { return };
    let mut rng = Rng::new(d as u64 + 1);
    loop {
        let p = phase.load(Ordering::SeqCst);
        if p == STOP {
            break;
        }
        if let Err(e) = store.capture_case(random_case(&mut rng, catalog, d, 0)) {
            note(format!("capture: {e}"));
        }
        let t = Instant::now();
        let result = store.sync(&config, &mut |_| {});
        let ms = ms_since(t);
        if let Err(e) = &result {
            note(e.to_string());
        }
        samples.lock().unwrap_or_else(|p| p.into_inner()).push(Sample { phase: p, ms, ok: result.is_ok() });
        std::thread::sleep(Duration::from_millis(think_ms));
    }
}

fn enrol(store: &SqliteStore, user: &str) -> Result<EnrolResponse, String> {
    let (_, code) = store.enrol_device(user, 0).map_err(|e| e.to_string())?;
    store.redeem(&EnrolRequest { code, app_version: "0.1.0".into(), public_key: None }, 0).map_err(|e| e.to_string())
}

pub fn run(args: AbuseArgs, line: &dyn Fn(serde_json::Value)) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server_dir = dir.path().join("server");
    // The phones are the clients, not what is measured: on tmpfs when there is one.
    let phones = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).map_err(|e| e.to_string())?;
    let catalog = district(40);

    progress("abuse: seeding the server (20 workers, a community supervisor, devices)");
    let (honest, attackers, supervisors) = {
        let store = SqliteStore::open(&server_dir).map_err(|e| e.to_string())?;
        store.import_catalog(&catalog).map_err(|e| e.to_string())?;
        for w in 0..WORKERS {
            store
                .set_user(&format!("w{w}"), Role::Worker, None, &[Scope::Grid(GridId(format!("g{w}")))])
                .map_err(|e| e.to_string())?;
        }
        store
            .set_user("s0", Role::Supervisor, None, &[Scope::Community("Community 0".into())])
            .map_err(|e| e.to_string())?;
        let honest = (0..args.honest).map(|d| enrol(&store, &format!("w{d}"))).collect::<Result<Vec<_>, _>>()?;
        let attackers = ATTACKER_WORKERS
            .map(|w| enrol(&store, &format!("w{w}")).map(|e| e.token))
            .collect::<Result<Vec<_>, _>>()?;
        let supervisors =
            (0..SUPERVISOR_DEVICES).map(|_| enrol(&store, "s0").map(|e| e.token)).collect::<Result<Vec<_>, _>>()?;
        (honest, attackers, supervisors)
    };

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = ServerChild(
        Command::new(exe)
            .arg("storm-server")
            .arg(&server_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the server process: {e}"))?,
    );
    let pid = child.0.id();
    let mut first = String::new();
    BufReader::new(child.0.stdout.take().ok_or("no stdout")?).read_line(&mut first).map_err(|e| e.to_string())?;
    let url = first.trim().strip_prefix("listening ").ok_or(format!("server said {first:?}"))?.to_owned();
    let addr: SocketAddr =
        url.strip_prefix("http://").and_then(|a| a.parse().ok()).ok_or(format!("no address in {url}"))?;

    progress(&format!("abuse: building attack bodies ({})", args.only.join(",")));
    let prepared = prepare(&args.only, args.threads)?;

    let phase = AtomicU8::new(QUIET);
    let samples: Mutex<Vec<Sample>> = Mutex::new(vec![]);
    let errors: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let start = Barrier::new(honest.len() + 1);
    let sampling = AtomicBool::new(true);
    let sampled_max = Mutex::new((0.0f64, 0.0f64));
    let tallies: Vec<Tally> = KINDS.iter().map(|_| Tally::default()).collect();
    let target = Target {
        url: url.clone(),
        addr,
        attackers,
        supervisors,
        deadline: OnceLock::new(),
        histories: Mutex::new(vec![]),
    };
    let mut baseline = 0.0;
    let mut cpu = 0.0;
    let mut elapsed = 0.0;
    let mut flood_at = 0.0;
    let clock = Instant::now();

    std::thread::scope(|s| {
        s.spawn(|| {
            while sampling.load(Ordering::SeqCst) {
                let rss = status_mb(pid, "VmRSS:");
                let mut max = sampled_max.lock().unwrap_or_else(|p| p.into_inner());
                if rss > max.0 {
                    *max = (rss, clock.elapsed().as_secs_f64());
                }
                drop(max);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        progress(&format!(
            "abuse: {} honest phones: first sync, then {} quiet seconds",
            honest.len(),
            args.quiet_seconds
        ));
        let honest_threads: Vec<_> = honest
            .iter()
            .enumerate()
            .map(|(d, e)| {
                let (root, catalog, url) = (phones.path(), &catalog, url.as_str());
                let (start, phase, samples, errors) = (&start, &phase, &samples, &errors);
                s.spawn(move || honest_phone(d, root, e, catalog, url, args.think_ms, start, phase, samples, errors))
            })
            .collect();
        start.wait();
        std::thread::sleep(Duration::from_secs(args.quiet_seconds));

        baseline = status_mb(pid, "VmRSS:");
        let cpu_before = cpu_s(pid);
        progress(&format!("abuse: flood for {} s (server RSS {baseline:.1} MB)", args.seconds));
        let flood_start = Instant::now();
        flood_at = clock.elapsed().as_secs_f64();
        let _ = target.deadline.set(flood_start + Duration::from_secs(args.seconds));
        phase.store(FLOOD, Ordering::SeqCst);
        let (target, prepared) = (&target, &prepared);
        let mut attackers = vec![];
        for (kind, tally) in KINDS.iter().zip(&tallies) {
            if !args.only.contains(kind) {
                continue;
            }
            for t in 0..threads_of(kind, args.threads) {
                attackers.push(s.spawn(move || {
                    if let Err(e) = attack(kind, t, target, prepared, tally) {
                        progress(&format!("abuse: {kind} thread {t}: {e}"));
                    }
                }));
            }
        }
        while target.live() {
            std::thread::sleep(Duration::from_millis(200));
        }
        phase.store(STOP, Ordering::SeqCst);
        progress("abuse: deadline; waiting for requests in flight");
        for h in attackers.into_iter().chain(honest_threads) {
            let _ = h.join();
        }
        elapsed = flood_start.elapsed().as_secs_f64();
        cpu = cpu_s(pid) - cpu_before;
        sampling.store(false, Ordering::SeqCst);
    });

    let peak = status_mb(pid, "VmHWM:");
    let rss_end = status_mb(pid, "VmRSS:");
    drop(child);
    let (sampled, sampled_at) = *sampled_max.lock().unwrap_or_else(|p| p.into_inner());
    let samples = samples.into_inner().unwrap_or_else(|p| p.into_inner());
    let of_phase = |p: u8| samples.iter().filter(move |s| s.phase == p);
    let quiet = stats(of_phase(QUIET).map(|s| s.ms).collect());
    let flood = stats(of_phase(FLOOD).map(|s| s.ms).collect());
    let attacks: serde_json::Map<String, serde_json::Value> = KINDS
        .iter()
        .zip(&tallies)
        .filter(|(k, _)| args.only.contains(k))
        .map(|(k, t)| ((*k).to_owned(), t.json(threads_of(k, args.threads))))
        .collect();
    line(serde_json::json!({
        "bench": "abuse",
        "duration_s": args.seconds,
        "elapsed_s": round3(elapsed),
        "baseline_rss_mb": round3(baseline),
        "peak_rss_mb": round3(peak),
        "sampled_max_rss_mb": round3(sampled),
        // Seconds after the flood started (negative: before it).
        "sampled_max_at_s": round3(sampled_at - flood_at),
        "rss_at_end_mb": round3(rss_end),
        "goal_rss_mb": 512,
        "server_cpu_s": round3(cpu),
        "honest_phones": honest.len(),
        "honest_syncs": of_phase(FLOOD).filter(|s| s.ok).count(),
        "honest_failures": of_phase(FLOOD).filter(|s| !s.ok).count(),
        "honest_p50_ms": round3(flood.p50),
        "honest_p99_ms": round3(flood.p99),
        "honest_syncs_quiet": quiet.n,
        "honest_failures_quiet": of_phase(QUIET).filter(|s| !s.ok).count(),
        "honest_p50_quiet_ms": round3(quiet.p50),
        "honest_p99_quiet_ms": round3(quiet.p99),
        "honest_errors": errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        "attacks": attacks,
    }));
    Ok(())
}
