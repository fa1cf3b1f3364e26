//! The command line as an operator uses it: `--help`, `--data-dir` on either side of the
//! command, settings from a file and the environment, and `/metrics` behind its token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_gridwork-sync-server");

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).env_remove("GRIDWORK_DATA_DIR").output().expect("the server binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn help_is_an_answer_not_an_error() {
    for args in [&["--help"][..], &["serve", "--help"], &["admin", "--help"], &["admin", "set-user", "--help"]] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("Usage:"), "{args:?}: {}", text(&o));
    }
    let o = run(&["serve", "--help"]);
    for setting in ["--listen", "--store", "--tls", "--metrics-listen", "--metrics-token", "--log-format", "--config"] {
        assert!(text(&o).contains(setting), "serve --help names {setting}");
    }
}

#[test]
fn the_data_dir_goes_before_or_after_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let before = run(&["--data-dir", d, "admin", "set-user", "w1", "--role", "worker", "--scope", "grid:g1"]);
    assert!(before.status.success(), "{}", text(&before));
    let after = run(&["admin", "list-devices", "--data-dir", d]);
    assert!(after.status.success(), "{}", text(&after));
    let enrol = run(&["admin", "enrol-device", "w1", "--data-dir", d]);
    assert!(enrol.status.success() && text(&enrol).contains("gridwork:enrol?"), "{}", text(&enrol));
    let listed = run(&["--data-dir", d, "admin", "list-devices"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1, "{}", text(&listed));
    let missing = run(&["admin", "list-devices"]);
    assert!(!missing.status.success() && text(&missing).contains("--data-dir"), "{}", text(&missing));
}

#[test]
fn a_bad_setting_stops_serve_naming_the_setting_and_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "listne = \"127.0.0.1:0\"\n").expect("write");
    let o = run(&["serve", "--data-dir", d, "--config", config.to_str().expect("utf-8")]);
    assert!(!o.status.success() && text(&o).contains("listne") && text(&o).contains("server.toml"), "{}", text(&o));
    let o =
        Command::new(EXE).args(["serve", "--data-dir", d]).env("GRIDWORK_LOG_FORMAT", "yaml").output().expect("runs");
    assert!(!o.status.success() && text(&o).contains("log_format"), "{}", text(&o));
    let o = run(&["serve", "--data-dir", d, "--listen", "0.0.0.0:0"]);
    assert!(!o.status.success() && text(&o).contains("init-tls"), "plain HTTP off loopback: {}", text(&o));
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str, auth: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// Settings from the file, one overridden by the environment; `/metrics` refuses without the
/// token from the file and answers with it.
#[test]
fn serve_takes_its_settings_from_file_and_environment_and_guards_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    let token = "a-long-enough-metrics-token";
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:1\"\nmetrics_listen = \"127.0.0.1:0\"\nmetrics_token = \"{token}\"\nlog_format = \"json\"\n"),
    )
    .expect("write");
    let child = Command::new(EXE)
        .args(["serve", "--config", config.to_str().expect("utf-8")])
        .env("GRIDWORK_DATA_DIR", dir.path().join("data"))
        .env("GRIDWORK_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut serving = Serving(child);
    let stderr = serving.0.stderr.take().expect("stderr");
    let mut line = String::new();
    let mut reader = BufReader::new(stderr);
    while !line.contains("serving") {
        line.clear();
        assert!(reader.read_line(&mut line).expect("read") > 0, "serve exited before serving");
    }
    let log: serde_json::Value = serde_json::from_str(&line).expect("log_format json from the file");
    let fields = &log["fields"];
    let url = fields["url"].as_str().expect("url");
    assert!(!url.ends_with(":1"), "the environment's listen wins over the file's: {url}");
    let metrics = fields["metrics"].as_str().expect("metrics url");
    let metrics_addr = metrics.trim_start_matches("http://").trim_end_matches("/metrics");
    let health = get(url.trim_start_matches("http://"), "/v1/health", None);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let refused = get(metrics_addr, "/metrics", None);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let wrong = get(metrics_addr, "/metrics", Some("not-the-token-at-all"));
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let answered = get(metrics_addr, "/metrics", Some(token));
    assert!(answered.starts_with("HTTP/1.1 200") && answered.contains("gridwork_"), "{answered}");
}

/// A city: districts added and listed, every command on one district with `--district`, a
/// code that names its district, and a backup and restore of one district that leaves the
/// others where they are.
#[test]
fn districts_are_added_and_each_command_acts_on_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    for name in ["jing-an", "xu-hui"] {
        let o = run(&["--data-dir", d, "admin", "add-district", name]);
        assert!(o.status.success() && text(&o).contains("added"), "{}", text(&o));
    }
    let again = run(&["--data-dir", d, "admin", "add-district", "jing-an"]);
    assert!(again.status.success() && text(&again).contains("nothing changed"), "{}", text(&again));
    let bad = run(&["--data-dir", d, "admin", "add-district", "Jing An"]);
    assert!(!bad.status.success() && text(&bad).contains("not a district name"), "{}", text(&bad));
    let listed = run(&["--data-dir", d, "admin", "list-districts"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "jing-an\nxu-hui\n");

    let set = run(&["--data-dir", d, "--district", "jing-an", "admin", "set-user", "w1", "--role", "worker"]);
    assert!(set.status.success(), "{}", text(&set));
    let enrol = run(&["admin", "enrol-device", "w1", "--data-dir", d, "--district", "jing-an"]);
    assert!(enrol.status.success() && text(&enrol).contains("code=jing-an."), "{}", text(&enrol));
    // w1 exists in jing-an only: not in xu-hui, nor at the city centre.
    for other in [&["--district", "xu-hui"][..], &[]] {
        let mut args = vec!["--data-dir", d, "admin", "enrol-device", "w1"];
        args.extend_from_slice(other);
        let o = run(&args);
        assert!(!o.status.success() && text(&o).contains("add the user first"), "{other:?}: {}", text(&o));
    }
    let nowhere = run(&["--data-dir", d, "--district", "pudong", "admin", "list-devices"]);
    assert!(!nowhere.status.success() && text(&nowhere).contains("add-district pudong"), "{}", text(&nowhere));
    let devices = |district: &str| {
        let o = run(&["--data-dir", d, "--district", district, "admin", "list-devices"]);
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    assert_eq!((devices("jing-an"), devices("xu-hui")), (1, 0));

    // One district backed up and restored: the other districts stay.
    let backups = tempfile::tempdir().expect("tempdir");
    let inside = dir.path().join("backup-inside");
    assert!(run(&["--data-dir", d, "backup", inside.to_str().expect("utf-8")]).status.success());
    let r = run(&["--data-dir", d, "restore", inside.to_str().expect("utf-8")]);
    assert!(!r.status.success() && text(&r).contains("copy the backup elsewhere"), "{}", text(&r));
    let backup = backups.path().join("jing-an");
    let b = run(&["--data-dir", d, "--district", "jing-an", "backup", backup.to_str().expect("utf-8")]);
    assert!(b.status.success(), "{}", text(&b));
    let r = run(&["--data-dir", d, "--district", "jing-an", "restore", backup.to_str().expect("utf-8")]);
    assert!(r.status.success() && text(&r).contains("new epoch"), "{}", text(&r));
    let listed = run(&["--data-dir", d, "admin", "list-districts"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "jing-an\nxu-hui\n", "the set aside copy is no district");
    assert_eq!(devices("jing-an"), 1);
    // The city centre's store restored: its districts are still there.
    let centre = backups.path().join("centre");
    assert!(run(&["--data-dir", d, "backup", centre.to_str().expect("utf-8")]).status.success());
    let r = run(&["--data-dir", d, "restore", centre.to_str().expect("utf-8")]);
    assert!(r.status.success(), "{}", text(&r));
    let listed = run(&["--data-dir", d, "admin", "list-districts"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "jing-an\nxu-hui\n", "{}", text(&r));
    assert_eq!(devices("jing-an"), 1);
}

/// `admin export-case` writes a bundle of a case a phone signed, and it verifies.
#[test]
fn a_case_exported_from_the_command_line_verifies() {
    use gridwork_core::model::access::Scope;
    use gridwork_core::model::catalog::{Catalog, Category, Grid, Role};
    use gridwork_core::model::geo::{Location, Polygon};
    use gridwork_core::model::ids::{DeviceId, UserId};
    use gridwork_sync_server::{AdminStore, SqliteStore, SyncStore};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("server");
    let ring = vec![(31.2, 121.4), (31.2, 121.41), (31.21, 121.41), (31.21, 121.4)];
    let catalog = Catalog {
        version: 1,
        grids: vec![Grid {
            id: "g1".into(),
            name: "Grid 1".into(),
            community: "C".into(),
            street: "S".into(),
            boundary: Polygon { ring },
            points: vec![],
        }],
        categories: vec![Category {
            id: "hazard".into(),
            names: Default::default(),
            default_deadline_hours: 24,
            retired: false,
        }],
        departments: vec![],
    };
    let case_id = {
        let store = Arc::new(SqliteStore::open(&d).expect("store"));
        store.import_catalog(&catalog).expect("catalog");
        store.set_user("w1", Role::Worker, None, &[Scope::Grid("g1".into())]).expect("user");
        let server =
            gridwork_sync_server::start(store.clone() as Arc<dyn SyncStore>, "127.0.0.1:0".parse().expect("addr"))
                .expect("server");
        let (_, code) = store.enrol_device("w1", 0).expect("enrol");
        let e = gridwork_core::sync::enrol(&server.url(), &code, None, "0.1.0").expect("redeem");
        let identity = gridwork_core::Identity {
            user: UserId(e.user.clone()),
            role: e.role,
            device: DeviceId(e.device_id.clone()),
            device_code: e.device_code.clone(),
            department: None,
            signing_key: Some(Arc::new(
                gridwork_core::signing::DeviceKey::from_pkcs8(&e.device_key.clone().expect("a key").0).expect("key"),
            )),
        };
        let phone =
            gridwork_core::Store::open(gridwork_core::OpenOptions::new(dir.path().join("phone"), &[7; 32], identity))
                .expect("phone");
        phone.import_catalog(&catalog).expect("catalog");
        let case = phone
            .capture_case(gridwork_core::store::NewCase {
                title: "楼道堆物".into(),
                description: "Bikes charging in the stairwell".into(),
                category: "hazard".into(),
                grid: "g1".into(),
                location: Location::gps(31.205, 121.405, 5.0, 0),
                photos: vec![],
            })
            .expect("capture");
        let report =
            phone.sync(&gridwork_core::sync::SyncConfig::new(server.url(), e.token), &mut |_| {}).expect("sync");
        assert!(report.refused.is_empty(), "{report:?}");
        case.id.to_string()
    };
    let out = dir.path().join("case.gridwork-bundle");
    let o = run(&[
        "--data-dir",
        d.to_str().expect("utf-8"),
        "admin",
        "export-case",
        &case_id,
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success() && text(&o).contains("gridwork-verify"), "{}", text(&o));
    let report = gridwork_model::bundle::verify(&std::fs::read(&out).expect("the bundle"));
    assert!(report.verified(), "{:?}", report.problems);
    assert_eq!(report.timeline.len(), 1, "{:?}", report.timeline);
    let unknown = run(&["--data-dir", d.to_str().expect("utf-8"), "admin", "export-case", "no-such-case"]);
    assert!(!unknown.status.success() && text(&unknown).contains("no-such-case"), "{}", text(&unknown));
}
