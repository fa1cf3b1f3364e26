//! `gridwork-bench weak-link`: a case with two photos from a phone on a bad link, through a
//! throttling proxy (this machine has no kernel traffic shaper): 64 kbit/s each way, 500 ms round
//! trip, every connection cut every 30 s. The phone syncs until the server holds the case and both
//! photos, as an app would, retrying after each cut.
//!
//! One JSON line: `elapsed_s`; `link_time_s`, the payload (the sync requests that got through and
//! the photo and thumbnail bytes) divided by the link rate — the time a perfect link would need;
//! `ratio`; and `resumed_bytes_resent`, bytes the server received more than once (0 means no
//! upload restarted from zero after a cut).

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
use gridwork_core::model::catalog::Role;
use gridwork_core::store::NewCase;
use gridwork_core::sync::{enrol, SyncConfig};
use gridwork_sync_server::{SqliteStore, SyncStore};
use gridwork_tests::{district, identity_from_enrolment, open_device, random_case, Rng};

use crate::{progress, round3};

pub struct Args {
    rate_bps: u64,
    rtt_ms: u64,
    cut_every_s: u64,
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { rate_bps: 64_000, rtt_ms: 500, cut_every_s: 30 };
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} takes a number"))
        };
        match flag.as_str() {
            "--rate-bps" => a.rate_bps = num("--rate-bps")?.max(1),
            "--rtt-ms" => a.rtt_ms = num("--rtt-ms")?,
            "--cut-every-s" => a.cut_every_s = num("--cut-every-s")?.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// One direction of the simulated link, shared by every connection: bytes queue for the wire at
/// the link rate, then arrive half a round trip later.
struct Direction {
    free_at: Mutex<Instant>,
    rate_bps: u64,
    one_way: Duration,
}

impl Direction {
    /// When `len` bytes put on the wire now arrive at the other end.
    fn schedule(&self, len: usize) -> Instant {
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free).max(Instant::now());
        *free = start + Duration::from_secs_f64(len as f64 * 8.0 / self.rate_bps as f64);
        *free + self.one_way
    }
}

/// Copies `src` to `dst` through `link`; ends when either side closes.
fn pipe(mut src: TcpStream, mut dst: TcpStream, link: Arc<Direction>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (at, bytes) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if dst.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = dst.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 512];
    loop {
        match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((link.schedule(n), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
}

/// A TCP proxy to `upstream` with the link's rate and delay; every open connection is cut every
/// `cut_every`. Returns its address and the number of cuts made so far.
fn start_proxy(upstream: SocketAddr, args: &Args) -> Result<(SocketAddr, Arc<AtomicUsize>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("proxy addr: {e}"))?;
    let direction = || {
        Arc::new(Direction {
            free_at: Mutex::new(Instant::now()),
            rate_bps: args.rate_bps,
            one_way: Duration::from_millis(args.rtt_ms / 2),
        })
    };
    let (up, down) = (direction(), direction());
    let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(vec![]));
    let cuts = Arc::new(AtomicUsize::new(0));
    {
        let (open, cuts, every) = (open.clone(), cuts.clone(), Duration::from_secs(args.cut_every_s));
        let (up, down) = (up.clone(), down.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            let mut conns = open.lock().unwrap_or_else(|p| p.into_inner());
            if !conns.is_empty() {
                cuts.fetch_add(1, Ordering::Relaxed);
            }
            for c in conns.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
            // Bytes queued behind the cut never go on the air: the link is free again.
            for d in [&up, &down] {
                *d.free_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
        });
    }
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(upstream) else { continue };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
                (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
            else {
                continue;
            };
            open.lock().unwrap_or_else(|p| p.into_inner()).extend([c3, s3]);
            let (up, down) = (up.clone(), down.clone());
            std::thread::spawn(move || pipe(client, server, up));
            std::thread::spawn(move || pipe(s2, c2, down));
        }
    });
    Ok((addr, cuts))
}

pub fn run(args: Args) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let server_store = Arc::new(SqliteStore::open(&tmp.path().join("server")).map_err(|e| e.to_string())?);
    let catalog = district(4);
    server_store.import_catalog(&catalog).map_err(|e| e.to_string())?;
    server_store.set_user("w1", Role::Worker, None, &[Scope::Grid("g0".into())]).map_err(|e| e.to_string())?;
    let server =
        gridwork_sync_server::start(server_store.clone() as Arc<dyn SyncStore>, SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| format!("server: {e}"))?;
    let (_, code) = server_store.enrol_device("w1", 0).map_err(|e| e.to_string())?;
    let e = enrol(&server.url(), &code, None, "0.1.0").map_err(|e| e.to_string())?;
    let phone = open_device(&tmp.path().join("phone"), identity_from_enrolment(&e), &catalog, None)
        .map_err(|e| e.to_string())?;

    // Two photos from a phone camera (12 MP); the phone stores them at 1600 px.
    progress("capturing a case with two 4000×3000 photos");
    let photos = vec![
        camera_like_jpeg(4000, 3000, &ExifSpec::default(), 21),
        camera_like_jpeg(4000, 3000, &ExifSpec::default(), 22),
    ];
    let case = random_case(&mut Rng::new(5), &catalog, 0, 0);
    let id = phone.capture_case(NewCase { photos, ..case }).map(|c| c.id).map_err(|e| e.to_string())?;
    let detail = phone.get_case(&id).map_err(|e| e.to_string())?;
    let mut blobs = vec![];
    for ev in &detail.case.evidence {
        blobs.push(ev.sha256.clone());
        blobs.extend(ev.thumb_sha256.clone());
    }
    let mut blob_bytes = 0u64;
    for sha in &blobs {
        blob_bytes += phone.read_evidence(sha).map_err(|e| e.to_string())?.len() as u64;
    }

    let upstream: SocketAddr = server.url().trim_start_matches("http://").parse().map_err(|e| format!("{e}"))?;
    let (proxy, cuts) = start_proxy(upstream, &args)?;
    let mut config = SyncConfig::new(format!("http://{proxy}"), e.token);
    config.timeout = Duration::from_secs(120);
    progress(&format!(
        "syncing {blob_bytes} photo bytes through {} kbit/s, {} ms round trip, a cut every {} s",
        args.rate_bps / 1000,
        args.rtt_ms,
        args.cut_every_s
    ));
    let start = Instant::now();
    let (mut json_bytes, mut attempts) = (0u64, 0usize);
    loop {
        attempts += 1;
        match phone.sync(&config, &mut |_| {}) {
            Ok(r) => {
                json_bytes += r.bytes_up;
                if !r.photo_errors.is_empty() {
                    progress(&format!(
                        "  {:.0} s: upload interrupted ({} pending)",
                        start.elapsed().as_secs_f64(),
                        r.photos_pending
                    ));
                }
                if r.photos_pending == 0 && phone.outbox_len().map_err(|e| e.to_string())? == 0 {
                    break;
                }
            }
            Err(e) => progress(&format!("  {:.0} s: sync failed, retrying: {e}", start.elapsed().as_secs_f64())),
        }
        if attempts > 500 {
            return Err("gave up after 500 syncs".into());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let resent: u64 = blobs
        .iter()
        .map(|sha| {
            let size = phone.read_evidence(sha).map(|b| b.len() as u64).unwrap_or(0);
            server_store.blob_bytes_received(sha).saturating_sub(size)
        })
        .sum();
    let link_time = (json_bytes + blob_bytes) as f64 * 8.0 / args.rate_bps as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "weak_link",
            "elapsed_s": round3(elapsed),
            "link_time_s": round3(link_time),
            "ratio": round3(elapsed / link_time),
            "resumed_bytes_resent": resent,
            "payload_bytes": json_bytes + blob_bytes,
            "photo_bytes": blob_bytes,
            "cuts": cuts.load(Ordering::Relaxed),
            "syncs": attempts,
            "rate_bps": args.rate_bps,
            "rtt_ms": args.rtt_ms,
        })
    );
    Ok(())
}
