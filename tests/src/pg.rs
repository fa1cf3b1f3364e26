//! A PostgreSQL server for the tests and the benchmark: the one `GRIDWORK_PG_URL` names, or one
//! started here from Debian's `postgresql` package in a temporary directory (as the `postgres`
//! user when running as root: PostgreSQL refuses to run as root), on loopback only, stopped by a
//! watchdog when this process ends. Each caller gets a database of its own.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether the server this process starts commits durably (fsync, synchronous commit): the
/// benchmark's is, to be measured against the embedded store's `synchronous = FULL`; the tests'
/// is not, for speed (a test never survives a power cut anyway).
static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the server this process will start durable; call before the first database.
pub fn durable() {
    DURABLE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The server's base URL (`postgres://user@127.0.0.1:PORT`), started once per process.
fn server() -> Result<&'static str, String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("GRIDWORK_PG_URL") {
            Ok(url) => Ok(url.trim_end_matches('/').to_owned()),
            Err(_) => start(),
        })
        .as_deref()
        .map_err(|e| e.clone())
}

/// Where Debian's PostgreSQL binaries are (the newest installed version).
fn bin_dir() -> Result<PathBuf, String> {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| format!("PostgreSQL is not installed ({}: {e}): apt-get install postgresql", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries under /usr/lib/postgresql: apt-get install postgresql".into())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// `initdb` into a temporary directory and start `postgres` on a free loopback port.
fn start() -> Result<String, String> {
    let bin = bin_dir()?;
    let dir = tempfile::Builder::new().prefix("gridwork-pg-").tempdir().map_err(|e| e.to_string())?.keep();
    let data = dir.join("data");
    let root = is_root();
    let as_user = |program: PathBuf| -> Command {
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    };
    // A certificate for 127.0.0.1 from a CA of its own, so that the store's TLS to the database
    // is tested against a real server (`tls_ca`). Made before the directory goes to `postgres`:
    // PostgreSQL refuses a key file readable by others or owned by someone else.
    let tls = gridwork_sync_server::tls::TlsFiles { dir: dir.join("tls") };
    tls.init(&["127.0.0.1".to_owned()]).map_err(|e| format!("test certificates: {e}"))?;
    let _ = CA.set(tls.dir.join("ca.pem"));
    if root {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(format!("cannot give {} to the postgres user", dir.display()));
        }
    }
    let user = if root { "postgres".to_owned() } else { std::env::var("USER").unwrap_or_else(|_| "postgres".into()) };
    let out = as_user(bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", &user, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-N"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port()?;
    // A watchdog stops the server (and removes its directory) once this process is gone.
    let postgres = bin.join("postgres");
    let runner = if root { "runuser -u postgres -- ".to_owned() } else { String::new() };
    // `pg_ctl stop` rather than a signal to the child: runuser does not pass signals on.
    let speed = if DURABLE.load(std::sync::atomic::Ordering::SeqCst) {
        ""
    } else {
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    };
    let script = format!(
        "{runner}{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 {speed} \
         -c max_connections=200 -c ssl=on -c ssl_cert_file={dir}/tls/server.pem \
         -c ssl_key_file={dir}/tls/server.key >{dir}/log 2>&1 & pg=$!; \
         while kill -0 {me} 2>/dev/null; do sleep 0.5; done; \
         {runner}{pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; wait $pg; rm -rf {dir}",
        postgres = postgres.display(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
        me = std::process::id(),
    );
    Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let url = format!("postgres://{user}@127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if postgres::Client::connect(&format!("{url}/postgres"), postgres::NoTls).is_ok() {
            return Ok(url);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            return Err(format!("postgres did not accept connections on {url} within 30 s; its log:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The CA that signed the test server's certificate (for 127.0.0.1): the server this process
/// started, or `GRIDWORK_PG_CA` for the one `GRIDWORK_PG_URL` names.
pub fn tls_ca() -> Result<PathBuf, String> {
    server()?;
    if let Ok(ca) = std::env::var("GRIDWORK_PG_CA") {
        return Ok(PathBuf::from(ca));
    }
    CA.get()
        .cloned()
        .ok_or_else(|| "GRIDWORK_PG_URL names a server: set GRIDWORK_PG_CA to the CA of its certificate".into())
}

static CA: OnceLock<PathBuf> = OnceLock::new();

/// A new, empty database on the test server, by URL. Fails with what to do when PostgreSQL
/// cannot be started (never silently skips).
pub fn fresh_database() -> Result<String, String> {
    let base = server()?;
    let mut name = [0u8; 6];
    getrandom(&mut name);
    let db = format!("gw_{}", hex::encode(name));
    let mut admin =
        postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).map_err(|e| e.to_string())?;
    admin.batch_execute(&format!("CREATE DATABASE {db}")).map_err(|e| e.to_string())?;
    Ok(format!("{base}/{db}"))
}

fn getrandom(buf: &mut [u8]) {
    // Unique enough for database names: the time and a counter.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mix = (t as u64) ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ u64::from(std::process::id()) << 32;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (mix >> (i * 8)) as u8;
    }
}
