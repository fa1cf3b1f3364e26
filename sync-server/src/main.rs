//! gridwork-sync-server command line.
//!
//!   gridwork-sync-server demo [--devices N] [--data-dir DIR] [--no-console]
//!   gridwork-sync-server serve --data-dir DIR [--listen 127.0.0.1:8080] [--metrics-listen ADDR|off]
//!   gridwork-sync-server --data-dir DIR backup DEST | restore FROM
//!   gridwork-sync-server --data-dir DIR grids import FILE.geojson --datum wgs84|gcj02
//!   gridwork-sync-server admin --data-dir DIR init-tls HOST...
//!   gridwork-sync-server admin --data-dir DIR import-catalog FILE.json
//!   gridwork-sync-server admin --data-dir DIR set-user USER --role ROLE [--department D] [--scope S]...
//!   gridwork-sync-server admin --data-dir DIR enrol-device USER
//!   gridwork-sync-server admin --data-dir DIR set-password USER   (console sign-in; password on stdin)
//!   gridwork-sync-server admin --data-dir DIR retire-device DEVICE | revoke-device DEVICE
//!   gridwork-sync-server admin --data-dir DIR list-devices
//!   gridwork-sync-server admin --data-dir DIR quarantine | release KEY | reject KEY

use std::path::PathBuf;
use std::sync::Arc;

use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::geo::Datum;
use gridwork_model::wire::EnrolmentCode;
use gridwork_sync_server::grids;
use gridwork_sync_server::tls::TlsFiles;
use gridwork_sync_server::{SqliteStore, SyncStore};

/// mimalloc instead of glibc's malloc (ADR 14): a push allocates many small short-lived values
/// across threads (parsed changes, rows, JSON), and glibc's allocator took a seventh of the
/// server's CPU in the storm benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  gridwork-sync-server demo [--devices N] [--cases N] [--checkins N] [--data-dir DIR] [--no-console]
  gridwork-sync-server serve --data-dir DIR [--listen 127.0.0.1:8080] [--metrics-listen 127.0.0.1:9464|off]   (TLS once init-tls has run; plain HTTP on loopback only)
  gridwork-sync-server --data-dir DIR backup DEST   (while serving: a consistent copy of the store, blobs and TLS files)
  gridwork-sync-server --data-dir DIR restore FROM  (server stopped: the old contents are moved aside; phones re-offer)
  gridwork-sync-server admin --data-dir DIR init-tls HOST...   (district CA + server certificate for these names/IPs)
  gridwork-sync-server admin --data-dir DIR enrol-device USER [--server https://HOST:PORT]
  gridwork-sync-server --data-dir DIR grids import FILE.geojson --datum wgs84|gcj02   (grids and patrol points; an invalid polygon refuses the file)
  gridwork-sync-server admin --data-dir DIR import-catalog FILE.json
  gridwork-sync-server admin --data-dir DIR set-user USER --role worker|supervisor|department_handler|administrator [--department D] [--scope grid:ID|community:NAME|street:NAME|department:ID]...
  gridwork-sync-server admin --data-dir DIR set-password USER   (console sign-in for a supervisor, handler or administrator; reads the password from stdin or GRIDWORK_PASSWORD)
  gridwork-sync-server admin --data-dir DIR retire-device DEVICE   (a worker leaves: it may push what it holds, receives nothing)
  gridwork-sync-server admin --data-dir DIR revoke-device DEVICE   (a lost phone: refused from now on)
  gridwork-sync-server admin --data-dir DIR list-devices
  gridwork-sync-server admin --data-dir DIR quarantine
  gridwork-sync-server admin --data-dir DIR release KEY
  gridwork-sync-server admin --data-dir DIR reject KEY";

use gridwork_sync_server::clock::now_ms;

fn take_flag(args: &mut Vec<String>, flag: &str) -> Result<Option<String>, String> {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => {
            let v = args.remove(i + 1);
            args.remove(i);
            Ok(Some(v))
        }
        Some(_) => Err(format!("{flag} needs a value")),
        None => Ok(None),
    }
}

/// Structured logs on stderr: `GRIDWORK_LOG` filters (default `info`), `GRIDWORK_LOG_FORMAT=json`
/// writes one JSON object per line. Events carry device ids, never people's names or case text.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRIDWORK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("GRIDWORK_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("demo") {
        return gridwork_sync_server::demo::main(args.split_off(1));
    }
    let data_dir =
        PathBuf::from(take_flag(&mut args, "--data-dir")?.ok_or(format!("--data-dir DIR is required\n{USAGE}"))?);
    let command: Vec<&str> = args.iter().map(String::as_str).collect();
    // Backup and restore work on the directory, not through an open store.
    match command.as_slice() {
        ["backup", dest] => {
            let m = gridwork_sync_server::backup::backup(&data_dir, std::path::Path::new(dest))
                .map_err(|e| e.to_string())?;
            println!(
                "backup in {dest}: epoch {}, up to change {}, {} blobs ({} bytes)",
                m.epoch, m.last_seq, m.blobs, m.blob_bytes
            );
            return Ok(());
        }
        ["restore", from] => {
            let r = gridwork_sync_server::backup::restore(std::path::Path::new(from), &data_dir)
                .map_err(|e| e.to_string())?;
            if let Some(aside) = &r.moved_aside {
                println!("the data directory's previous contents are in {} (nothing deleted)", aside.display());
            }
            println!(
                "restored {from} (up to change {}) into {}; new epoch {}: phones re-offer what they hold on their next sync",
                r.manifest.last_seq,
                data_dir.display(),
                r.new_epoch
            );
            return Ok(());
        }
        _ => {}
    }
    let store = SqliteStore::open(&data_dir).map_err(|e| e.to_string())?;
    match command.as_slice() {
        ["serve", rest @ ..] => {
            init_logs();
            let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let listen = take_flag(&mut rest, "--listen")?.unwrap_or_else(|| "127.0.0.1:8080".into());
            let addr =
                listen.parse().map_err(|_| format!("--listen {listen:?} is not an address like 127.0.0.1:8080"))?;
            let store: Arc<dyn SyncStore> = Arc::new(store);
            let files = TlsFiles::in_data_dir(&data_dir);
            let tls = if files.exists() { Some(files.server_config().map_err(|e| e.to_string())?) } else { None };
            // /metrics listens apart from the phones, on loopback unless the operator says where.
            let metrics = match take_flag(&mut rest, "--metrics-listen")?.as_deref() {
                Some("off") => None,
                Some(m) => Some(m.parse().map_err(|_| format!("--metrics-listen {m:?} is not an address or `off`"))?),
                None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            };
            let options = gridwork_sync_server::ServeOptions { tls, metrics, ..Default::default() };
            let server = gridwork_sync_server::start_serving(store, addr, options)
                .map_err(|e| format!("cannot listen on {listen} (or the metrics address): {e}"))?;
            tracing::info!(
                url = %server.url(),
                metrics = server.metrics_url().unwrap_or_else(|| "off".into()),
                data_dir = %data_dir.display(),
                "serving; Ctrl-C stops"
            );
            loop {
                std::thread::park();
            }
        }
        ["admin", "import-catalog", file] => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let catalog: Catalog = serde_json::from_str(&text).map_err(|e| format!("{file} is not a catalog: {e}"))?;
            let v = store.import_catalog(&catalog).map_err(|e| e.to_string())?;
            println!(
                "catalog version {v}: {} grids, {} categories, {} departments",
                catalog.grids.len(),
                catalog.categories.len(),
                catalog.departments.len()
            );
        }
        ["grids", "import", file, rest @ ..] => {
            let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            // No default: a file read in the wrong datum lands every grid 100–700 m off.
            let datum = match take_flag(&mut rest, "--datum")?.as_deref() {
                Some("wgs84") => Datum::Wgs84,
                Some("gcj02") => Datum::Gcj02,
                other => {
                    let got = other.map(|d| format!(" (got {d:?})")).unwrap_or_default();
                    return Err(format!(
                        "--datum is required{got}: say which datum {file} is in, wgs84 (GPS) or gcj02 (most Chinese base maps)"
                    ));
                }
            };
            let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let parsed = grids::parse(&text, datum).map_err(|e| format!("{file} refused, nothing imported: {e}"))?;
            let merged = grids::merge(&store.current_catalog(), &parsed);
            let version = store.import_catalog(&merged).map_err(|e| e.to_string())?;
            let points: usize = parsed.grids.iter().map(|g| g.points.len()).sum();
            println!(
                "imported {} grids and {points} patrol points from {file} ({datum:?} → WGS-84); catalog version {version}, {} grids in all",
                parsed.grids.len(),
                merged.grids.len()
            );
            for (a, b) in &parsed.overlaps {
                println!("warning: grids {a} and {b} overlap");
            }
        }
        ["admin", "set-user", user, rest @ ..] => {
            let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let role_flag = take_flag(&mut rest, "--role")?;
            let role = role_flag
                .as_deref()
                .and_then(Role::parse)
                .ok_or(format!("--role {role_flag:?}: use worker, supervisor, department_handler or administrator"))?;
            let department = take_flag(&mut rest, "--department")?;
            let mut scopes = vec![];
            while let Some(s) = take_flag(&mut rest, "--scope")? {
                scopes.push(s);
            }
            store.set_user(user, role, department.as_deref(), &scopes).map_err(|e| e.to_string())?;
            println!("user {user}: {role:?}, scopes {scopes:?}");
        }
        ["admin", "init-tls", hosts @ ..] => {
            let hosts: Vec<String> = hosts.iter().map(|s| s.to_string()).collect();
            let files = TlsFiles::in_data_dir(&data_dir);
            let fp = files.init(&hosts).map_err(|e| e.to_string())?;
            println!("TLS ready in {} for {hosts:?}; district CA fingerprint sha256:{fp}", files.dir.display());
            println!("restart `serve` to use it; enrolment codes made from now on carry the fingerprint");
        }
        ["admin", "set-password", user] => {
            let password = match std::env::var("GRIDWORK_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("password for {user} (at least 10 characters), then Enter:");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let console = store.console().ok_or("this store has no console")?;
            console.set_password(user, &password, now_ms()).map_err(|e| e.to_string())?;
            println!("{user} can sign in to /console");
        }
        ["admin", "enrol-device", user, rest @ ..] => {
            let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let files = TlsFiles::in_data_dir(&data_dir);
            let ca_fingerprint =
                if files.exists() { Some(files.ca_fingerprint().map_err(|e| e.to_string())?) } else { None };
            let default_server =
                if ca_fingerprint.is_some() { "https://127.0.0.1:8080" } else { "http://127.0.0.1:8080" };
            let server = take_flag(&mut rest, "--server")?.unwrap_or_else(|| default_server.into());
            let (id, code) = store.enrol_device(user, now_ms()).map_err(|e| e.to_string())?;
            println!("device {id} for {user}; one-time enrolment code: {code}");
            println!("{}", EnrolmentCode { server, code, ca_fingerprint }.to_uri());
        }
        ["admin", "retire-device", device] => {
            store.retire_device(device, now_ms()).map_err(|e| e.to_string())?;
            println!("device {device} retired: it may still send what it holds, and receives nothing new");
            println!("`admin list-devices` shows it as retired_drained once it reported nothing left");
        }
        ["admin", "revoke-device", device] => {
            store.revoke_device(device).map_err(|e| e.to_string())?;
            println!("device {device} revoked; what it synced stays");
        }
        ["admin", "list-devices"] => {
            for d in store.list_devices(now_ms()).map_err(|e| e.to_string())? {
                println!("{}", serde_json::to_string(&d).map_err(|e| e.to_string())?);
            }
        }
        ["admin", "release", key] => {
            store.release_quarantined(key, now_ms()).map_err(|e| e.to_string())?;
            println!("{key} released into its case's scopes");
        }
        ["admin", "reject", key] => {
            store.reject_quarantined(key).map_err(|e| e.to_string())?;
            println!("{key} rejected; it stays stored, out of every scope");
        }
        ["admin", "quarantine"] => {
            for q in store.quarantined().map_err(|e| e.to_string())? {
                println!("{}", serde_json::to_string(&q).map_err(|e| e.to_string())?);
            }
        }
        _ => return Err(USAGE.to_owned()),
    }
    Ok(())
}

fn main() {
    gridwork_sync_server::allocator::return_freed_memory_at_once();
    if let Err(e) = run() {
        eprintln!("gridwork-sync-server: {e}");
        std::process::exit(2);
    }
}
