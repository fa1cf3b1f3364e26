//! The supervisor console in a real browser: headless Chromium (Debian's `chromium`) driven
//! through `chromedriver` by fantoccini, against a real server and a real phone.
//!
//! The chain from the seed: a supervisor signs in, finds the case a phone captured, accepts and
//! dispatches it; the phone sees the dispatch on its next sync; the police handler marks it
//! handled; the worker records the follow-up visit on the phone; the supervisor closes it.
//! Screenshots of the queue and the case detail are written to
//! `$CARGO_TARGET_DIR/tmp/console-screenshots/` (printed by the test).
//!
//! Needs `chromium`, `chromium-driver` and `fonts-noto-cjk` (so Chinese renders); .ci/run
//! installs them. Without them the test fails and says so — it is never skipped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use gridwork_core::model::lifecycle::EventKind;
use gridwork_sync_server::store::ConsoleStore;

mod common;
use common::{capture, phone, District};

const PASSWORD: &str = "correct horse battery";

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver ({e}): apt-get install chromium chromium-driver fonts-noto-cjk (.ci/run does)")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, driven synchronously: the phones in this test use reqwest's
/// blocking client, which must not run inside an async runtime, so only browser steps do.
struct Web {
    rt: tokio::runtime::Runtime,
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Web {
    fn open(driver: &Driver, base: &str) -> Web {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--lang=zh-CN"]
            }),
        );
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&driver.url),
            )
            .expect("a Chromium session (is the chromium package installed?)");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Web { rt, client, base: base.to_owned(), shots }
    }

    fn goto(&self, path: &str) {
        self.rt.block_on(self.client.goto(&format!("{}{path}", self.base))).expect("navigate");
    }

    fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.rt
            .block_on(self.client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(css)))
            .unwrap_or_else(|e| {
                let page = self.rt.block_on(self.client.source()).unwrap_or_default();
                panic!("no {css} on the page ({e}); the page:\n{page}")
            })
    }

    fn fill(&self, css: &str, text: &str) {
        let el = self.wait_for(css);
        self.rt.block_on(el.send_keys(text)).expect("type");
    }

    fn click(&self, css: &str) {
        let el = self.wait_for(css);
        self.rt.block_on(el.click()).expect("click");
    }

    fn attr(&self, css: &str, name: &str) -> String {
        let el = self.wait_for(css);
        self.rt.block_on(el.attr(name)).expect("attribute").unwrap_or_default()
    }

    fn text(&self, css: &str) -> String {
        let el = self.wait_for(css);
        self.rt.block_on(el.text()).expect("text")
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.client.screenshot()).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.shots.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    fn sign_in(&self, user: &str) {
        self.goto("/console/login");
        self.fill("#user", user);
        self.fill("#password", PASSWORD);
        self.click("#sign-in");
        self.wait_for("#status-counts");
    }

    fn sign_out(&self) {
        self.click("#sign-out");
        self.wait_for("#sign-in");
    }

    /// Posts one of the case page's action forms and waits for the page to confirm it.
    fn act(&self, case: &str, action: &str) {
        self.goto(&format!("/console/cases/{case}"));
        self.click(&format!("form[data-action=\"{action}\"] button"));
        self.wait_for("#notice");
    }

    fn close(self) {
        let Web { rt, client, .. } = self;
        let _ = rt.block_on(client.close());
    }
}

#[test]
fn the_case_chain_worked_in_a_real_browser() {
    let d = District::new();
    let console = d.store.as_ref() as &dyn ConsoleStore;
    for u in ["s1", "h1"] {
        console.set_password(u, PASSWORD, 0).expect("password");
    }
    let mut w1 = phone(&d, "w1", None);
    let cases = capture(&w1, 0, 3, 41);
    let case = cases[0];
    w1.sync(&d.url()).expect("worker pushes");
    let code = w1.store.get_case(&case).expect("case").case.code;
    let id = case.to_string();

    let driver = Driver::start();
    let web = Web::open(&driver, &d.url());

    // Sign in; the queue lists the phone's cases, in Chinese.
    web.sign_in("s1");
    assert!(web.text("header").contains("网格工作台"), "Chinese by default");
    let row = format!("tr[data-case=\"{id}\"]");
    assert!(web.text(&row).contains(&code));
    let queue_shot = web.screenshot("queue.png");

    // Find the case and dispatch it.
    web.click(&format!("{row} a"));
    assert!(web.text("#case-title").contains(&code));
    assert_eq!(web.attr("#case-status", "data-status"), "reported");
    let detail_shot = web.screenshot("case-detail.png");
    web.act(&id, "accept");
    assert_eq!(web.attr("#case-status", "data-status"), "accepted");
    web.goto(&format!("/console/cases/{id}"));
    web.click("form[data-action=\"dispatch\"] input[name=\"dept_police\"]");
    web.click("form[data-action=\"dispatch\"] button");
    web.wait_for("#notice");
    assert_eq!(web.attr("#case-status", "data-status"), "dispatched");

    // The phone sees the dispatch after its next sync.
    w1.sync(&d.url()).expect("worker pulls");
    assert_eq!(w1.store.get_case(&case).expect("case").case.timeline.state.status.label(), "dispatched");

    // The police handler marks it handled.
    web.sign_out();
    web.sign_in("h1");
    web.act(&id, "handler_report");
    assert_eq!(web.attr("#case-status", "data-status"), "handled");

    // The worker visits the resident and records it on the phone.
    w1.sync(&d.url()).expect("worker pulls the handling");
    w1.store.record_event(&case, EventKind::FollowUp { satisfaction: 4, note: "居民满意".into() }).expect("visit");
    w1.sync(&d.url()).expect("worker pushes the visit");

    // The supervisor verifies and closes.
    web.sign_out();
    web.sign_in("s1");
    web.act(&id, "close");
    assert_eq!(web.attr("#case-status", "data-status"), "closed");
    assert!(web.text("#timeline").contains("回访"), "the worker's visit is on the timeline");
    let closed_shot = web.screenshot("case-closed.png");
    w1.sync(&d.url()).expect("worker pulls the close");
    assert_eq!(w1.store.get_case(&case).expect("case").case.timeline.state.status.label(), "closed");

    // English on request; on a phone-sized screen the page fits its width (tables scroll inside).
    web.goto("/console/cases?lang=en");
    assert!(web.text("h1").contains("Case queue"));
    web.rt.block_on(web.client.set_window_size(390, 844)).expect("phone-sized window");
    web.goto(&format!("/console/cases/{id}"));
    let widths = web
        .rt
        .block_on(web.client.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]))
        .expect("page widths");
    let (page_w, window_w) = (widths[0].as_f64().unwrap_or(f64::MAX), widths[1].as_f64().unwrap_or(0.0));
    assert!(page_w <= window_w + 1.0, "the case page is {page_w}px wide in a {window_w}px window");
    let phone_shot = web.screenshot("case-detail-phone.png");
    web.close();
    for shot in [&queue_shot, &detail_shot, &closed_shot, &phone_shot] {
        println!("screenshot: {}", shot.display());
        assert!(std::fs::metadata(shot).expect("written").len() > 10_000, "{} is a real page", shot.display());
    }
}

/// Supervision that runs itself, seen in the browser: a bulk dispatch from the queue, the
/// escalation rules acting on the late cases (automatic steps on the timeline), a case found by
/// its code from the header's search box, and the district overview with its charts.
#[test]
fn bulk_dispatch_automatic_escalation_search_and_overview_in_a_real_browser() {
    let d = District::new();
    let console = d.store.as_ref() as &dyn ConsoleStore;
    d.store.set_user("a1", gridwork_core::model::catalog::Role::Administrator, None, &[]).expect("admin");
    for u in ["s1", "a1"] {
        console.set_password(u, PASSWORD, 0).expect("password");
    }
    let mut w1 = phone(&d, "w1", None);
    let cases = capture(&w1, 0, 3, 43);
    w1.sync(&d.url()).expect("worker pushes");
    let ids: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
    let code = w1.store.get_case(&cases[2]).expect("case").case.code;

    let driver = Driver::start();
    let web = Web::open(&driver, &d.url());
    web.sign_in("s1");
    // Bulk: accept two cases, then dispatch both to the police within 24 hours.
    for action in ["accept", "dispatch"] {
        web.goto("/console/cases");
        for id in &ids[..2] {
            web.click(&format!("tr[data-case=\"{id}\"] input.pick"));
        }
        if action == "dispatch" {
            web.click("#bulk-dept-police");
        }
        web.click(&format!("#bulk-{action}"));
        assert!(web.text("#bulk-result").starts_with('2'), "two cases taken by bulk {action}");
    }
    for id in &ids[..2] {
        assert_eq!(
            console.case_view(&admin_of(console), id).expect("case").case.timeline.state.status.label(),
            "dispatched"
        );
    }

    // Ten days later nobody has started: the rules urge the police and escalate, on their own.
    console.index_for_search(10_000).expect("follow the log");
    let ran =
        console.run_escalations("browser-test", gridwork_sync_server::clock::now_ms() + 10 * 86_400_000).expect("run");
    // Of the two escalations due at once only the higher is taken: an urge and the district each.
    assert_eq!(ran.applied, 4, "an urge and an escalation for each late case: {ran:?}");
    web.goto(&format!("/console/cases/{}", ids[0]));
    web.wait_for("#timeline tr[data-automatic=\"1\"][data-kind=\"escalate\"]");
    assert!(web.text("#timeline").contains("system"), "the rules act as the server's own person");
    // The screenshot shows the timeline's automatic steps, not the top of the page.
    web.rt
        .block_on(web.client.execute("document.getElementById('timeline').scrollIntoView();", vec![]))
        .expect("scroll to the timeline");
    let escalated_shot = web.screenshot("case-escalated-automatically.png");

    // The third case's code typed in the header's search box opens it.
    web.goto("/console/cases");
    web.fill("#search-box", &code);
    web.rt
        .block_on(web.client.execute("document.getElementById('search-box').form.submit();", vec![]))
        .expect("submit the search");
    web.wait_for("#case-title");
    assert!(web.text("#case-title").contains(&code), "the code opened its case");

    // The overview of the supervisor's community, with its charts and their CSVs.
    console.index_for_search(10_000).expect("follow the log");
    web.goto("/console/overview");
    web.wait_for("svg#chart-per-day");
    web.wait_for("svg#heat-map");
    assert_eq!(web.text("#ov-reported"), "3");
    assert_eq!(web.text("#ov-overdue"), "0", "their deadline is tomorrow in real time");
    assert!(web.attr("#csv-departments", "href").contains("chart=departments"));
    let overview_shot = web.screenshot("overview.png");
    web.close();
    for shot in [&escalated_shot, &overview_shot] {
        println!("screenshot: {}", shot.display());
        assert!(std::fs::metadata(shot).expect("written").len() > 10_000, "{} is a real page", shot.display());
    }
}

fn admin_of(console: &dyn ConsoleStore) -> gridwork_sync_server::store::console::ConsoleUser {
    console.sign_in("a1", PASSWORD, gridwork_sync_server::clock::now_ms()).expect("admin signs in").1.user
}
