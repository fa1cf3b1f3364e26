//! gridwork-sync-server command line: `gridwork-sync-server --help` lists the commands, and
//! `gridwork-sync-server COMMAND --help` each one's flags. `--data-dir` (or `GRIDWORK_DATA_DIR`)
//! may come before or after the command. `serve`'s settings are documented in
//! docs/CONFIGURATION.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gridwork_model::access::Scope;
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::geo::Datum;
use gridwork_model::wire::EnrolmentCode;
use gridwork_sync_server::city::{City, DistrictAdmin, DistrictId, Member, StoreKind};
use gridwork_sync_server::clock::now_ms;
use gridwork_sync_server::config::{LogFormat, Resolved, ServeSettings, StoreLocation, TlsChoice};
use gridwork_sync_server::grids;
use gridwork_sync_server::tls::TlsFiles;
use gridwork_sync_server::SyncStore;

/// mimalloc instead of glibc's malloc (ADR 14): a push allocates many small short-lived values
/// across threads (parsed changes, rows, JSON), and glibc's allocator took a seventh of the
/// server's CPU in the storm benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reconciles a district's phones when they come back online, and serves the supervisors' console.
#[derive(Debug, Parser)]
#[command(name = "gridwork-sync-server", version, propagate_version = true)]
struct Cli {
    /// The server's data directory: the embedded store, evidence blobs, TLS files.
    #[arg(long, global = true, env = "GRIDWORK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store: `sqlite` (the embedded store in --data-dir) [default] or `postgres://USER@HOST/DB`
    /// (evidence blobs and TLS files stay in --data-dir, a directory every instance shares).
    #[arg(long, global = true, env = "GRIDWORK_STORE")]
    store: Option<String>,
    /// The district of a city deployment this command acts on (added with `admin add-district`);
    /// without it, the city centre's own store (a single district's deployment). `serve` serves
    /// every district.
    #[arg(long, global = true, env = "GRIDWORK_DISTRICT")]
    district: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve phones (`/v1`) and the console (`/console`); TLS once `admin init-tls` has run,
    /// plain HTTP on loopback only. Every setting: docs/CONFIGURATION.md.
    Serve {
        /// A TOML file of settings; the command line and the environment override it.
        #[arg(long, env = "GRIDWORK_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ServeSettings,
    },
    /// A consistent copy of the store, blobs and TLS files, safe while serving.
    Backup { dest: PathBuf },
    /// Server stopped: restore a backup; the old contents are moved aside, phones re-offer.
    Restore { from: PathBuf },
    /// The district's grid boundaries and patrol points.
    #[command(subcommand)]
    Grids(GridsCommand),
    /// Administration: people, devices, the catalog, the quarantine, TLS.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
enum GridsCommand {
    /// Import a GeoJSON file of grids and patrol points; an invalid polygon refuses the file.
    Import {
        file: PathBuf,
        /// The file's datum: `wgs84` (GPS) or `gcj02` (most Chinese base maps). No default: a
        /// file read in the wrong datum lands every grid 100–700 m off.
        #[arg(long, value_parser = ["wgs84", "gcj02"])]
        datum: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// A district CA and a server certificate for these host names or IP addresses.
    InitTls {
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Replace the catalog (grids, categories, departments) from a JSON file.
    ImportCatalog { file: PathBuf },
    /// Create or change a person: role, department and scopes.
    SetUser {
        user: String,
        /// worker, supervisor, department_handler or administrator.
        #[arg(long)]
        role: String,
        #[arg(long)]
        department: Option<String>,
        /// grid:ID, community:NAME, street:NAME or department:ID; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Console sign-in for a supervisor, handler or administrator (password on stdin or in
    /// GRIDWORK_PASSWORD).
    SetPassword { user: String },
    /// A device for this person and its one-time enrolment code.
    EnrolDevice {
        user: String,
        /// The address phones reach [default: http(s)://127.0.0.1:8080]; repeat for the other
        /// instances of the server: phones try them in order when one cannot be reached.
        #[arg(long = "server")]
        servers: Vec<String>,
    },
    /// A worker leaves: the device may push what it holds and receives nothing new.
    RetireDevice { device: String },
    /// A lost phone: refused from now on; what it synced stays.
    RevokeDevice { device: String },
    /// A lost phone, wiped: on its next contact it sends everything it holds, then destroys its
    /// keys and store once the server confirmed it holds all of it (docs/SECURITY.md).
    WipeDevice { device: String },
    /// Every device, one JSON object per line.
    ListDevices,
    /// A case's evidence bundle: its history, every signature, the devices' public keys and the
    /// photos, in one file `gridwork-verify` checks without the server.
    ExportCase {
        /// The case's id.
        case: String,
        /// Where to write it [default: case-CODE.gridwork-bundle in the current directory].
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Quarantined changes and records, one JSON object per line.
    Quarantine,
    /// Let a quarantined item into its case's scopes.
    Release { key: String },
    /// Keep a quarantined item stored, out of every scope.
    Reject { key: String },
    /// Add a district to this city deployment (its own store; `serve` serves it once restarted).
    AddDistrict { district: String },
    /// The districts of this deployment, one per line.
    ListDistricts,
}

/// Structured logs on stderr. Events carry device ids, never people's names or case text.
fn init_logs(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("log filter {filter:?} is not valid: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
}

fn data_dir(cli: &Option<PathBuf>) -> Result<&Path, String> {
    cli.as_deref().ok_or_else(|| "--data-dir DIR (or GRIDWORK_DATA_DIR) is required for this command".to_owned())
}

/// The `--district` a command names, checked.
fn district(cli: &Option<String>) -> Result<Option<DistrictId>, String> {
    cli.as_deref().map(DistrictId::parse).transpose().map_err(|e| e.to_string())
}

/// The store a command acts on: the city centre's, or one district's.
fn open(data_dir: &Path, store: Option<&str>, district: Option<&DistrictId>) -> Result<Member, String> {
    StoreKind::parse(store).and_then(|kind| kind.open(data_dir, district)).map_err(|e| e.to_string())
}

fn serve(
    data_dir: Option<&Path>,
    store: Option<String>,
    config: Option<PathBuf>,
    mut settings: ServeSettings,
) -> Result<(), String> {
    let file = match &config {
        Some(path) => ServeSettings::from_file(path).map_err(|e| e.to_string())?,
        None => ServeSettings::default(),
    };
    settings.store = store;
    let Resolved { listen, store, tls, metrics_listen, metrics_token, log, log_format, limits } =
        settings.resolve(file, data_dir).map_err(|e| e.to_string())?;
    init_logs(&log, log_format)?;
    let (dir, url) = match &store {
        StoreLocation::Sqlite(dir) => (dir.clone(), None),
        StoreLocation::Postgres(url) => (
            data_dir
                .map(Path::to_owned)
                .ok_or("the PostgreSQL store keeps evidence blobs and TLS files in --data-dir DIR: give one")?,
            Some(url.as_str()),
        ),
    };
    let kind = StoreKind::parse(url).map_err(|e| e.to_string())?;
    let city = City::open(&kind, &dir).map_err(|e| e.to_string())?;
    let districts = city.district_ids();
    if !districts.is_empty() {
        tracing::info!(?districts, "serving a city of districts");
    }
    let store: Arc<dyn SyncStore> = Arc::new(city);
    let tls_files = match &tls {
        TlsChoice::Auto => Some(TlsFiles::in_data_dir(&dir)).filter(TlsFiles::exists),
        TlsChoice::Off => None,
        TlsChoice::Dir(d) => {
            let files = TlsFiles { dir: d.clone() };
            if !files.exists() {
                return Err(format!("tls = {}: no server certificate there (run `admin init-tls`)", d.display()));
            }
            Some(files)
        }
    };
    let tls = tls_files.map(|f| f.server_config()).transpose().map_err(|e| e.to_string())?;
    let options = gridwork_sync_server::ServeOptions {
        tls,
        metrics: metrics_listen,
        metrics_token: metrics_token.map(Arc::from),
        limits,
        upkeep: Some(std::time::Duration::from_secs(2)),
    };
    let server = gridwork_sync_server::start_serving(store, listen, options)
        .map_err(|e| format!("cannot listen on {listen} (or the metrics address): {e}"))?;
    tracing::info!(
        url = %server.url(),
        metrics = server.metrics_url().unwrap_or_else(|| "off".into()),
        data_dir = %dir.display(),
        "serving; Ctrl-C stops"
    );
    loop {
        std::thread::park();
    }
}

fn admin(
    data_dir: &Path,
    store_url: Option<&str>,
    district: Option<DistrictId>,
    command: AdminCommand,
) -> Result<(), String> {
    if let AdminCommand::InitTls { hosts } = &command {
        let files = TlsFiles::in_data_dir(data_dir);
        let fp = files.init(hosts).map_err(|e| e.to_string())?;
        println!("TLS ready in {} for {hosts:?}; district CA fingerprint sha256:{fp}", files.dir.display());
        println!("restart `serve` to use it; enrolment codes made from now on carry the fingerprint");
        return Ok(());
    }
    match &command {
        AdminCommand::AddDistrict { district } => {
            let d = DistrictId::parse(district).map_err(|e| e.to_string())?;
            let kind = StoreKind::parse(store_url).map_err(|e| e.to_string())?;
            let new = kind.add_district(data_dir, &d).map_err(|e| e.to_string())?;
            if new {
                println!(
                    "district {d} added; import its catalog and people with `--district {d}`, then restart `serve`"
                );
            } else {
                println!("district {d} already exists; nothing changed");
            }
            return Ok(());
        }
        AdminCommand::ListDistricts => {
            let kind = StoreKind::parse(store_url).map_err(|e| e.to_string())?;
            for d in kind.districts(data_dir).map_err(|e| e.to_string())? {
                println!("{d}");
            }
            return Ok(());
        }
        _ => {}
    }
    let Member { sync, admin: store } = open(data_dir, store_url, district.as_ref())?;
    let scoped = DistrictAdmin { district, store: store.clone() };
    match command {
        AdminCommand::InitTls { .. } | AdminCommand::AddDistrict { .. } | AdminCommand::ListDistricts => {}
        AdminCommand::ImportCatalog { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let catalog: Catalog =
                serde_json::from_str(&text).map_err(|e| format!("{} is not a catalog: {e}", file.display()))?;
            let v = store.import_catalog(&catalog).map_err(|e| e.to_string())?;
            println!(
                "catalog version {v}: {} grids, {} categories, {} departments",
                catalog.grids.len(),
                catalog.categories.len(),
                catalog.departments.len()
            );
        }
        AdminCommand::SetUser { user, role, department, scopes } => {
            let role = Role::parse(&role)
                .ok_or(format!("--role {role:?}: use worker, supervisor, department_handler or administrator"))?;
            let scopes =
                scopes.iter().map(|s| Scope::parse(s).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
            store.set_user(&user, role, department.as_deref(), &scopes).map_err(|e| e.to_string())?;
            let scopes: Vec<String> = scopes.iter().map(Scope::to_string).collect();
            println!("user {user}: {role:?}, scopes {scopes:?}");
        }
        AdminCommand::SetPassword { user } => {
            let password = match std::env::var("GRIDWORK_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    eprintln!("password for {user} (at least 10 characters), then Enter:");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let console = sync.console().ok_or("this store has no console")?;
            console.set_password(&user, &password, now_ms()).map_err(|e| e.to_string())?;
            println!("{user} can sign in to /console as {}", scoped.sign_in_name(&user));
        }
        AdminCommand::EnrolDevice { user, servers } => {
            let files = TlsFiles::in_data_dir(data_dir);
            let ca_fingerprint =
                if files.exists() { Some(files.ca_fingerprint().map_err(|e| e.to_string())?) } else { None };
            let default_server =
                if ca_fingerprint.is_some() { "https://127.0.0.1:8080" } else { "http://127.0.0.1:8080" };
            let mut servers = servers.into_iter();
            let server = servers.next().unwrap_or_else(|| default_server.into());
            let alternates: Vec<String> = servers.collect();
            // The addresses are checked before a device is made for them.
            let mut enrolment = EnrolmentCode { server, code: "check".into(), ca_fingerprint, alternates };
            EnrolmentCode::parse(&enrolment.to_uri()).map_err(|e| format!("--server: {e}"))?;
            let (id, code) = scoped.enrol_device(&user, now_ms()).map_err(|e| e.to_string())?;
            println!("device {id} for {user}; one-time enrolment code: {code}");
            enrolment.code = code;
            println!("{}", enrolment.to_uri());
        }
        AdminCommand::RetireDevice { device } => {
            store.retire_device(&device, now_ms()).map_err(|e| e.to_string())?;
            println!("device {device} retired: it may still send what it holds, and receives nothing new");
            println!("`admin list-devices` shows it as retired_drained once it reported nothing left");
        }
        AdminCommand::RevokeDevice { device } => {
            store.revoke_device(&device).map_err(|e| e.to_string())?;
            println!("device {device} revoked; what it synced stays");
        }
        AdminCommand::WipeDevice { device } => {
            store.wipe_device(&device, now_ms()).map_err(|e| e.to_string())?;
            println!(
                "device {device} ordered wiped: on its next sync it sends everything it holds, then destroys its store"
            );
            println!(
                "`admin list-devices` shows wipe_ordered, then wipe_confirmed, then wiped once the phone reported it"
            );
            println!("do not revoke it before then: a revoked phone is refused, and never hears the order");
        }
        AdminCommand::ListDevices => {
            for d in store.list_devices(now_ms()).map_err(|e| e.to_string())? {
                println!("{}", serde_json::to_string(&d).map_err(|e| e.to_string())?);
            }
        }
        AdminCommand::ExportCase { case, out } => {
            let bytes = store.export_case(&case, "admin", now_ms()).map_err(|e| e.to_string())?;
            let code = gridwork_model::bundle::case_code(&bytes).unwrap_or_else(|| case.clone());
            let path = out.unwrap_or_else(|| std::path::PathBuf::from(format!("case-{code}.gridwork-bundle")));
            std::fs::write(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!(
                "{} written ({} KB); check it with: gridwork-verify {}",
                path.display(),
                bytes.len() / 1024,
                path.display()
            );
        }
        AdminCommand::Quarantine => {
            for q in store.quarantined().map_err(|e| e.to_string())? {
                println!("{}", serde_json::to_string(&q).map_err(|e| e.to_string())?);
            }
        }
        AdminCommand::Release { key } => {
            store.release_quarantined(&key, now_ms()).map_err(|e| e.to_string())?;
            println!("{key} released into its case's scopes");
        }
        AdminCommand::Reject { key } => {
            store.reject_quarantined(&key).map_err(|e| e.to_string())?;
            println!("{key} rejected; it stays stored, out of every scope");
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    // Backup and restore work on the directory (the embedded store) or the database, not
    // through an open store.
    let postgres = cli.store.clone().filter(|s| s != "sqlite");
    match cli.command {
        Command::Serve { config, settings } => serve(cli.data_dir.as_deref(), cli.store, config, settings),
        Command::Backup { dest } => {
            let district = district(&cli.district)?;
            let dir = &StoreKind::dir(data_dir(&cli.data_dir)?, district.as_ref());
            let schema = district.as_ref().map(DistrictId::schema);
            let m = match &postgres {
                Some(url) => gridwork_sync_server::store::postgres::backup::backup(url, schema.as_deref(), dir, &dest),
                None => gridwork_sync_server::backup::backup(dir, &dest),
            }
            .map_err(|e| e.to_string())?;
            println!(
                "backup in {}: epoch {}, up to change {}, {} blobs ({} bytes)",
                dest.display(),
                m.epoch,
                m.last_seq,
                m.blobs,
                m.blob_bytes
            );
            Ok(())
        }
        Command::Restore { from } => {
            let district = district(&cli.district)?;
            let dir = &StoreKind::dir(data_dir(&cli.data_dir)?, district.as_ref());
            let schema = district.as_ref().map(DistrictId::schema);
            let (r, into) = match &postgres {
                Some(url) => (
                    gridwork_sync_server::store::postgres::backup::restore(&from, url, schema.as_deref(), dir),
                    url.clone(),
                ),
                None => (gridwork_sync_server::backup::restore(&from, dir), dir.display().to_string()),
            };
            let r = r.map_err(|e| e.to_string())?;
            if let Some(aside) = &r.moved_aside {
                println!("the data directory's previous contents are in {} (nothing deleted)", aside.display());
            }
            println!(
                "restored {} (up to change {}) into {into}; new epoch {}: phones re-offer what they hold on their next sync",
                from.display(),
                r.manifest.last_seq,
                r.new_epoch
            );
            Ok(())
        }
        Command::Grids(GridsCommand::Import { file, datum }) => {
            let datum = if datum == "gcj02" { Datum::Gcj02 } else { Datum::Wgs84 };
            let store = open(data_dir(&cli.data_dir)?, cli.store.as_deref(), district(&cli.district)?.as_ref())?.admin;
            let name = file.display();
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {name}: {e}"))?;
            let parsed = grids::parse(&text, datum).map_err(|e| format!("{name} refused, nothing imported: {e}"))?;
            let merged = grids::merge(&store.current_catalog(), &parsed);
            let version = store.import_catalog(&merged).map_err(|e| e.to_string())?;
            let points: usize = parsed.grids.iter().map(|g| g.points.len()).sum();
            println!(
                "imported {} grids and {points} patrol points from {name} ({datum:?} → WGS-84); catalog version {version}, {} grids in all",
                parsed.grids.len(),
                merged.grids.len()
            );
            for (a, b) in &parsed.overlaps {
                println!("warning: grids {a} and {b} overlap");
            }
            Ok(())
        }
        Command::Admin(command) => {
            admin(data_dir(&cli.data_dir)?, cli.store.as_deref(), district(&cli.district)?, command)
        }
    }
}

fn main() {
    gridwork_sync_server::allocator::return_freed_memory_at_once();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("gridwork-sync-server: {e}");
        std::process::exit(2);
    }
}
