//! The supervisor console over HTTP, against a real server with real phones: the case chain
//! worked from a desk, and the console's security rules. (The same chain in a real browser is
//! tests/console-browser/.)

use gridwork_model::access::Scope;
use gridwork_sync_server::AdminStore;
use gridwork_tests::console_client::{ConsoleClient, Page};

use gridwork_core::model::catalog::Role;
use gridwork_core::model::lifecycle::EventKind;
use gridwork_sync_server::store::console::MAX_FAILED_SIGN_INS;
use gridwork_sync_server::store::ConsoleStore;

#[macro_use]
mod common;
use common::{capture, phone, District};

const PASSWORD: &str = "correct horse battery";

/// A browser without JavaScript (`gridwork_tests::console_client`) at the district's URL,
/// for tests: a failed request is a failed test.
struct Browser {
    inner: ConsoleClient,
    base: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser { inner: ConsoleClient::new().expect("client"), base: base.to_owned() }
    }

    fn get(&mut self, path: &str) -> Page {
        self.inner.get(&format!("{}{path}", self.base)).expect("GET")
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.inner.post(&format!("{}{path}", self.base), form).expect("POST")
    }

    fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let form = self.get("/console/login");
        assert_eq!(form.status, 200);
        let csrf = form.csrf().expect("page has a form");
        self.post("/console/login", &[("csrf", &csrf), ("user", user), ("password", password)])
    }

    /// Posts an action from the case page, with that page's token.
    fn act(&mut self, case: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(&format!("/console/cases/{case}"));
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page.csrf().expect("page has a form");
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(&format!("/console/cases/{case}/act"), &form)
    }
}

fn console_users(d: &District) {
    let console = d.store.as_ref() as &dyn ConsoleStore;
    d.store.set_user("s2", Role::Supervisor, None, &[Scope::Community("Community 9".into())]).expect("s2");
    for u in ["s1", "s2", "h1"] {
        console.set_password(u, PASSWORD, 0).expect("password");
    }
}

fn a_case_worked_from_the_console_reaches_the_phones_and_closes(d: District) {
    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 31)[0];
    w1.sync(&d.url()).expect("worker pushes");
    let code = w1.store.get_case(&case).expect("case").case.code;

    let mut sup = Browser::new(&d.url());
    let signed = sup.sign_in("s1", PASSWORD);
    assert_eq!((signed.status, signed.location.as_deref()), (303, Some("/console/cases")));
    let queue = sup.get("/console/cases");
    assert_eq!(queue.status, 200);
    assert!(queue.body.contains(&code), "the queue lists the phone's case");
    assert!(queue.body.contains("案件队列"), "Chinese by default");
    assert!(sup.get("/console/cases?lang=en").body.contains("Case queue"), "English on request");
    assert!(sup.get("/console/cases").body.contains("Case queue"), "and remembered");

    assert_eq!(sup.act(&case.to_string(), &[("action", "accept"), ("note", "")]).status, 303);
    let dispatched =
        sup.act(&case.to_string(), &[("action", "dispatch"), ("dept_police", "1"), ("hours", "24"), ("note", "")]);
    assert_eq!(dispatched.status, 303, "{}", dispatched.body);
    let detail = sup.get(&format!("/console/cases/{case}"));
    assert!(detail.body.contains("data-status=\"dispatched\""), "{}", detail.body);
    assert!(detail.body.contains("console-s1"), "the timeline names the console's actor");

    w1.sync(&d.url()).expect("worker pulls");
    let on_phone = w1.store.get_case(&case).expect("case");
    assert_eq!(on_phone.case.timeline.state.status.label(), "dispatched", "the dispatch reached the phone");
    let dispatch = on_phone.case.timeline.entries.iter().find(|e| e.event.kind.name() == "dispatch").expect("event");
    assert_eq!((dispatch.event.actor.user.0.as_str(), dispatch.event.actor.device.0.as_str()), ("s1", "console-s1"));

    let mut handler = Browser::new(&d.url());
    assert_eq!(handler.sign_in("h1", PASSWORD).status, 303);
    let handled = handler.act(&case.to_string(), &[("action", "handler_report"), ("note", "cleared")]);
    assert_eq!(handled.status, 303, "{}", handled.body);

    // The role table decides on the server too: a handler cannot close.
    let refused = handler.act(&case.to_string(), &[("action", "close"), ("note", "")]);
    assert_eq!(refused.status, 403, "want of a role is 403: {}", refused.body);

    w1.sync(&d.url()).expect("worker pulls the handling");
    w1.store
        .record_event(&case, EventKind::FollowUp { satisfaction: 5, note: "resident thanks".into() })
        .expect("visit");
    w1.sync(&d.url()).expect("worker pushes the visit");

    let closed = sup.act(&case.to_string(), &[("action", "close"), ("note", "verified")]);
    assert_eq!(closed.status, 303, "{}", closed.body);
    w1.sync(&d.url()).expect("worker pulls the close");
    assert_eq!(w1.store.get_case(&case).expect("case").case.timeline.state.status.label(), "closed");

    let csv = sup.get("/console/cases.csv?status=closed");
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.body.contains(&code) && csv.body.lines().count() == 2, "{}", csv.body);
}

fn the_console_refuses_device_tokens_forged_forms_other_areas_and_password_guessing(d: District) {
    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 32)[0].to_string();
    w1.sync(&d.url()).expect("worker pushes");

    // A device token means nothing to the console.
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(gridwork_core::tls::trust_nobody().expect("tls config"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for path in ["/console/cases", &format!("/console/cases/{case}"), "/console/cases.csv"] {
        let resp = client.get(format!("{}{path}", d.url())).bearer_auth(&w1.config.token).send().expect("GET");
        assert_eq!(resp.status().as_u16(), 303, "{path}");
        assert_eq!(resp.headers().get("location").and_then(|l| l.to_str().ok()), Some("/console/login"));
    }
    // Workers have no console password.
    let console = d.store.as_ref() as &dyn ConsoleStore;
    assert!(console.set_password("w1", PASSWORD, 0).is_err());
    let heads = d.store.doc_heads(&case).expect("heads");

    // A form without the session's token: 403, nothing written.
    let mut sup = Browser::new(&d.url());
    assert_eq!(sup.sign_in("s1", PASSWORD).status, 303);
    let forged = sup.post(&format!("/console/cases/{case}/act"), &[("action", "accept")]);
    assert_eq!(forged.status, 403);
    let wrong = sup.post(&format!("/console/cases/{case}/act"), &[("action", "accept"), ("csrf", "00")]);
    assert_eq!(wrong.status, 403);
    assert_eq!(d.store.doc_heads(&case).expect("heads"), heads);
    // The sign-in form needs its own token too.
    let mut fresh = Browser::new(&d.url());
    assert_eq!(fresh.post("/console/login", &[("user", "s1"), ("password", PASSWORD)]).status, 403);

    // A supervisor of another community neither sees nor acts on the case.
    let mut other = Browser::new(&d.url());
    assert_eq!(other.sign_in("s2", PASSWORD).status, 303);
    let queue = other.get("/console/cases");
    assert!(!queue.body.contains(&case));
    assert_eq!(other.get(&format!("/console/cases/{case}")).status, 403);
    let csrf = other.get("/console/cases").csrf().expect("page has a form");
    let act = other.post(&format!("/console/cases/{case}/act"), &[("csrf", &csrf), ("action", "accept")]);
    assert_eq!(act.status, 403);
    assert_eq!(d.store.doc_heads(&case).expect("heads"), heads, "nothing written");
    // A handler sees only what is dispatched to their department.
    let mut handler = Browser::new(&d.url());
    assert_eq!(handler.sign_in("h1", PASSWORD).status, 303);
    assert_eq!(handler.get(&format!("/console/cases/{case}")).status, 403);

    // Repeated wrong passwords lock the account, even against the right one.
    let mut guesser = Browser::new(&d.url());
    for i in 0..MAX_FAILED_SIGN_INS - 1 {
        assert_eq!(guesser.sign_in("s1", &format!("guess {i}")).status, 401);
    }
    assert_eq!(guesser.sign_in("s1", "last guess").status, 429, "the fifth failure locks");
    let locked = guesser.sign_in("s1", PASSWORD);
    assert_eq!(locked.status, 429, "locked even with the right password");
    assert!(locked.body.contains("locked") || locked.body.contains("锁"), "{}", locked.body);
    // The session signed in before the lockout still works; signing out ends it.
    let page = sup.get("/console/cases");
    assert_eq!(page.status, 200);
    assert_eq!(sup.post("/console/logout", &[("csrf", &page.csrf().expect("page has a form"))]).status, 303);
    assert_eq!(sup.get("/console/cases").status, 303);
    // An administrator's reset unlocks.
    console.set_password("s1", PASSWORD, 0).expect("reset");
    assert_eq!(Browser::new(&d.url()).sign_in("s1", PASSWORD).status, 303);
}

/// The `href` of the link with this id on a page, unescaped.
fn link(page: &Page, id: &str) -> Option<String> {
    let at = page.body.find(&format!("id=\"{id}\""))?;
    let start = page.body[..at].rfind("href=\"")? + 6;
    let end = start + page.body[start..].find('"')?;
    Some(page.body[start..end].replace("&amp;", "&").replace("&#38;", "&"))
}

fn case_rows(page: &Page) -> Vec<String> {
    page.body.split("data-case=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_owned).collect()
}

fn the_queue_pages_forward_and_back_without_losing_or_repeating_a_case(d: District) {
    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let mut all = capture(&w1, 0, 120, 33).iter().map(|c| c.to_string()).collect::<Vec<_>>();
    w1.sync(&d.url()).expect("worker pushes");
    let mut sup = Browser::new(&d.url());
    assert_eq!(sup.sign_in("s1", PASSWORD).status, 303);
    let p1 = sup.get("/console/cases");
    assert!(p1.body.contains("data-status=\"reported\">已上报 120<"), "counts per status: {}", p1.body);
    let p2 = sup.get(&link(&p1, "next-page").expect("a next page"));
    let p3 = sup.get(&link(&p2, "next-page").expect("a third page"));
    assert!(
        link(&p3, "next-page").is_none(),
        "three pages of 50, 50 and 20: {:?} {:?}",
        link(&p1, "next-page"),
        link(&p2, "next-page")
    );
    let (r1, r2, r3) = (case_rows(&p1), case_rows(&p2), case_rows(&p3));
    assert_eq!((r1.len(), r2.len(), r3.len()), (50, 50, 20));
    let mut seen: Vec<String> = r1.iter().chain(&r2).chain(&r3).cloned().collect();
    seen.sort();
    all.sort();
    assert_eq!(seen, all, "every case once");
    assert!(p2.body.contains("2 / 3"));
    let back = sup.get(&link(&p3, "prev-page").expect("a previous page"));
    assert_eq!(case_rows(&back), r2, "back to the same second page");
    // A page number typed in: the same rows as walking there, and the pager goes on from it.
    assert!(p1.body.contains("id=\"page-number\"") && p1.body.contains("max=\"3\""), "a go-to-page box");
    let jumped = sup.get("/console/cases?page=3");
    assert_eq!(case_rows(&jumped), r3, "page 3 typed in");
    assert!(jumped.body.contains("3 / 3"));
    assert_eq!(case_rows(&sup.get(&link(&jumped, "prev-page").expect("a previous page"))), r2);
    assert_eq!(case_rows(&sup.get("/console/cases?page=2&status=reported")), r2, "with a filter kept");
    assert_eq!(case_rows(&sup.get("/console/cases?page=99")), r3, "past the end: the last page");
}

fn map_coverage_assessment_and_administration(d: District) {
    console_users(&d);
    d.store.set_user("admin", Role::Administrator, None, &[]).expect("admin");
    (d.store.as_ref() as &dyn ConsoleStore).set_password("admin", PASSWORD, 0).expect("password");
    let mut w1 = phone(&d, "w1", None);
    let cases = capture(&w1, 0, 4, 34);
    // A patrol: two of grid g0's four points checked in, one check-in far outside the grid.
    let catalog = gridwork_tests::district(4);
    let grid = &catalog.grids[0];
    let patrol = w1.store.start_patrol(&grid.id).expect("patrol");
    for p in &grid.points[..2] {
        let location = gridwork_core::model::geo::Location::gps(p.lat, p.lon, 5.0, 0);
        let input = gridwork_core::store::CheckInInput {
            patrol,
            point: Some(p.id.clone()),
            location,
            note: String::new(),
            photo: None,
        };
        w1.store.check_in(input).expect("check in");
    }
    let far = gridwork_core::model::geo::Location::gps(grid.points[0].lat + 0.5, grid.points[0].lon, 5.0, 0);
    let input =
        gridwork_core::store::CheckInInput { patrol, point: None, location: far, note: String::new(), photo: None };
    w1.store.check_in(input).expect("check in outside");
    w1.store.finish_patrol(&patrol).expect("finish");
    w1.sync(&d.url()).expect("worker pushes");

    let mut sup = Browser::new(&d.url());
    assert_eq!(sup.sign_in("s1", PASSWORD).status, 303);
    let map = sup.get("/console/map");
    assert_eq!(map.status, 200);
    assert_eq!(map.body.matches(" data-status=\"").count(), cases.len(), "a pin per case");
    let mut other = Browser::new(&d.url());
    assert_eq!(other.sign_in("s2", PASSWORD).status, 303);
    assert_eq!(other.get("/console/map").body.matches(" data-status=\"").count(), 0, "another area's map has none");

    let coverage = sup.get("/console/coverage?grid=g0");
    assert_eq!(coverage.status, 200);
    let row = coverage.body.split("data-grid=\"g0\"").nth(1).expect("g0's row");
    let cells: Vec<&str> = row.split("<td>").skip(2).map(|c| c.split('<').next().unwrap_or("")).collect();
    assert_eq!(cells[..2], ["4", "2"], "four points, two checked in: {row}");
    assert!(coverage.body.contains("w1"), "who checked in");
    let csv = sup.get("/console/coverage.csv");
    assert!(csv.body.lines().count() >= 2);

    let assessment = sup.get("/console/assessment");
    assert_eq!(assessment.status, 200);
    let w1_row = assessment.body.split("data-user=\"w1\"").nth(1).expect("w1's row");
    let cells: Vec<&str> = w1_row.split("<td>").skip(1).map(|c| c.split('<').next().unwrap_or("")).collect();
    assert_eq!((cells[2], cells[8]), ("4", "3"), "four reported, three check-ins: {w1_row}");
    assert!(sup.get("/console/assessment.csv").body.contains("w1"));

    // Administration is for administrators only.
    let refused = sup.get("/console/admin");
    assert_eq!(refused.status, 403, "want of a role is 403, with the console's page");
    assert!(refused.body.contains("</html>") || refused.body.contains("<html"), "{}", refused.body);
    let mut admin = Browser::new(&d.url());
    assert_eq!(admin.sign_in("admin", PASSWORD).status, 303);
    let page = admin.get("/console/admin");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&w1.store.identity().device.0), "the worker's phone is listed");
    let csrf = page.csrf().expect("page has a form");
    let enrolled = admin.post("/console/admin/enrol", &[("csrf", &csrf), ("user", "w2")]);
    assert_eq!(enrolled.status, 200, "{}", enrolled.body);
    assert!(enrolled.body.contains("<svg"), "a QR code");
    let code = enrolled.body.split("id=\"code\">").nth(1).and_then(|s| s.split('<').next()).expect("code");
    let e = gridwork_core::sync::enrol(&d.url(), code, None, "0.1.0").expect("the code enrols a phone");
    assert_eq!(e.user, "w2");
    let retired = admin.post("/console/admin/retire", &[("csrf", &csrf), ("device", &e.device_id)]);
    assert_eq!(retired.status, 303);
    assert!(d.store.list_devices(0).expect("devices").iter().any(|x| x.id == e.device_id && x.status == "retired"));
    // A lost phone is wiped from the same list: a supervisor may not, an administrator may.
    let listed = admin.get("/console/admin");
    let row = listed.body.split(&format!("data-device=\"{}\"", e.device_id)).nth(1).expect("the phone's row");
    assert!(row.split("</tr>").next().unwrap_or("").contains("/console/admin/wipe"), "a wipe button on its row");
    let sup_csrf = sup.get("/console/cases").csrf().expect("the supervisor's form token");
    let not_theirs = sup.post("/console/admin/wipe", &[("csrf", &sup_csrf), ("device", &e.device_id)]);
    assert_eq!(not_theirs.status, 403, "{}", not_theirs.body);
    assert!(!d.store.authenticate(&e.token).expect("token").wipe, "a supervisor's wipe changed nothing");
    let wiped = admin.post("/console/admin/wipe", &[("csrf", &csrf), ("device", &e.device_id)]);
    assert_eq!(wiped.status, 303, "{}", wiped.body);
    assert!(d.store.authenticate(&e.token).expect("token").wipe, "the phone hears the order on its next sync");
    assert!(d
        .store
        .list_devices(0)
        .expect("devices")
        .iter()
        .any(|x| x.id == e.device_id && x.status == "wipe_ordered"));
    let before = d.store.current_catalog().version;
    let cat = d.store.current_catalog().categories[0].id.0.clone();
    let changed = admin.post("/console/admin/category", &[("csrf", &csrf), ("id", &cat), ("hours", "36")]);
    assert_eq!(changed.status, 303, "{}", changed.body);
    let catalog = d.store.current_catalog();
    assert_eq!(catalog.version, before + 1, "a new catalog version goes to the phones");
    assert_eq!(catalog.categories[0].default_deadline_hours, 36);
    // The escalation rules: shown with the default, edited per category, refused whole with
    // what to fix (nothing stored changes).
    let page = admin.get("/console/admin");
    assert!(
        page.body.contains("id=\"escalation-form\"") && page.body.contains("overdue 1d street"),
        "the default rules"
    );
    let rules_field = format!("rules_{cat}");
    let form = |rules: &str, start: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf.as_str()),
            ("weekdays", "1 2 3 4 5 6"),
            ("start", start),
            ("end", "17:30"),
            ("holidays", "2027-01-01"),
            ("extra_workdays", ""),
            ("default_rules", "overdue 2d street"),
            (rules_field.as_str(), rules),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    };
    let post_form = |b: &mut Browser, f: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/console/admin/escalation", &refs)
    };
    let saved = post_form(&mut admin, form("not_started 2h urge\noverdue 4h district", "08:30"));
    assert_eq!(saved.status, 303, "{}", saved.body);
    let console = d.store.as_ref() as &dyn ConsoleStore;
    let admin_user = console.sign_in("admin", PASSWORD, 0).expect("sign in").1.user;
    let policy = console.escalation_policy(&admin_user).expect("policy");
    assert_eq!(policy.working_hours.start_minute, 8 * 60 + 30);
    assert_eq!(policy.working_hours.weekdays, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(gridwork_sync_server::rules::escalation::rules_text(&policy.default_rules), "overdue 2d street");
    assert_eq!(
        gridwork_sync_server::rules::escalation::rules_text(&policy.by_category[&cat]),
        "not_started 2h urge\noverdue 4h district"
    );
    for (rules, start) in [("overdue 4 hours district", "08:30"), ("overdue 4h", "08:30"), ("", "8.30"), ("", "18:00")]
    {
        let refused = post_form(&mut admin, form(rules, start));
        assert_eq!(refused.status, 400, "{rules:?} {start:?}: {}", refused.body);
    }
    assert_eq!(console.escalation_policy(&admin_user).expect("policy"), policy, "a refused form changes nothing");
    let mut s1 = Browser::new(&d.url());
    assert_eq!(s1.sign_in("s1", PASSWORD).status, 303);
    let s1_csrf = s1.get("/console/cases").csrf().expect("token");
    let not_admin = s1.post(
        "/console/admin/escalation",
        &[("csrf", &s1_csrf), ("weekdays", "1"), ("start", "09:00"), ("end", "10:00")],
    );
    assert_eq!(not_admin.status, 403);

    let forged = admin.post("/console/admin/revoke", &[("device", &e.device_id)]);
    assert_eq!(forged.status, 403, "no token, no change");
    let devices_csv = admin.get("/console/admin.csv?list=devices");
    assert!(devices_csv.body.contains(&e.device_id), "{}", devices_csv.body);

    // Grids from a GeoJSON file: two overlapping squares are imported and the overlap reported.
    let square = |id: &str, lat: f64, lon: f64| {
        serde_json::json!({
            "type": "Feature",
            "properties": { "id": id, "name": format!("{id}网格"), "community": "东湖社区", "street": "东湖街道" },
            "geometry": { "type": "Polygon", "coordinates": [[
                [lon, lat], [lon + 0.01, lat], [lon + 0.01, lat + 0.01], [lon, lat + 0.01], [lon, lat]
            ]] }
        })
    };
    let file = serde_json::json!({ "type": "FeatureCollection",
        "features": [square("east-1", 31.30, 121.50), square("east-2", 31.305, 121.505)] })
    .to_string();
    let imported = admin.post("/console/admin/grids", &[("csrf", &csrf), ("geojson", &file), ("datum", "wgs84")]);
    assert_eq!(imported.status, 303, "{}", imported.body);
    let after = admin.get(imported.location.as_deref().expect("back to administration"));
    assert!(after.body.contains("east-1 &amp; east-2") || after.body.contains("east-1 &#38; east-2"), "{}", after.body);
    assert!(d.store.current_catalog().grids.iter().any(|g| g.id.0 == "east-2"));
    let bad = admin.post("/console/admin/grids", &[("csrf", &csrf), ("geojson", "{not json"), ("datum", "wgs84")]);
    assert_eq!(bad.status, 400, "a bad file is refused and changes nothing");
}

fn photos_and_conflicting_values_on_the_case_page(d: District) {
    use gridwork_core::evidence::synthetic::{camera_like_jpeg, ExifSpec};
    use gridwork_core::model::doc::CasePatch;

    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let mut s1_phone = phone(&d, "s1", None);
    let catalog = gridwork_tests::district(4);
    let mut new = gridwork_tests::random_case(&mut gridwork_tests::Rng::new(5), &catalog, 0, 0);
    // The second photo carries its own position, about 5.5 km north of where the case is reported.
    let far = ExifSpec {
        gps: Some((new.location.lat + 0.05, new.location.lon)),
        time: Some("2026:11:26 09:15:00".into()),
        ..ExifSpec::default()
    };
    new.photos = vec![camera_like_jpeg(800, 600, &ExifSpec::default(), 4), camera_like_jpeg(640, 480, &far, 5)];
    let case = w1.store.capture_case(new).expect("capture").id;
    w1.sync(&d.url()).expect("worker pushes case and photo");
    s1_phone.sync(&d.url()).expect("supervisor's phone pulls");
    // The worker and the supervisor's phone retitle the case at once, offline.
    w1.store
        .edit_case(&case, CasePatch { title: Some("楼道堆物（三楼）".into()), ..Default::default() })
        .expect("edit");
    s1_phone.store.edit_case(&case, CasePatch { title: Some("楼道堆物".into()), ..Default::default() }).expect("edit");
    w1.sync(&d.url()).expect("w1 pushes");
    s1_phone.sync(&d.url()).expect("s1 pushes");

    let mut sup = Browser::new(&d.url());
    assert_eq!(sup.sign_in("s1", PASSWORD).status, 303);
    let page = sup.get(&format!("/console/cases/{case}"));
    assert_eq!(page.status, 200);
    let all = w1.store.get_case(&case).expect("case").case.evidence;
    let evidence = all.iter().find(|e| e.exif_gps.is_none()).expect("the photo without EXIF");
    // What each photo's metadata yielded is shown, and the one taken far away is flagged.
    assert!(page.body.contains(r#"<figure data-metadata="absent">"#), "a photo without metadata says so");
    assert_eq!(page.body.matches(r#"class="photo-far""#).count(), 1, "only the far photo is flagged");
    assert!(page.body.contains("2026:11:26 09:15:00"), "the capture time is shown");
    assert!(page.body.contains(&evidence.sha256), "the photo's SHA-256 is shown");
    let thumb = evidence.thumb_sha256.clone().expect("a thumbnail");
    assert!(page.body.contains(&format!("/console/photos/{thumb}")), "the thumbnail is shown");
    for sha in [&evidence.sha256, &thumb] {
        let resp = sup.inner.get_raw(&format!("{}/console/photos/{sha}", d.url())).expect("photo");
        assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("image/jpeg"));
        let bytes = resp.bytes().expect("bytes");
        assert_eq!(&gridwork_core::evidence::sha256_hex(&bytes), sha, "the bytes the phone took");
    }
    let mut other = Browser::new(&d.url());
    assert_eq!(other.sign_in("s2", PASSWORD).status, 303);
    assert_eq!(other.get(&format!("/console/photos/{thumb}")).status, 403, "not another area's photos");

    // Both titles side by side; keeping one resolves the conflict on every phone.
    let conflict = page.body.split("data-field=\"title\"").nth(1).expect("the title conflict is shown");
    assert!(conflict.contains("楼道堆物（三楼）") && conflict.contains("楼道堆物"));
    // The index posted with the option that shows the worker's title.
    let at = conflict.find("楼道堆物（三楼）").expect("the worker's title");
    let index = conflict[at..]
        .split("name=\"index\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("its form")
        .to_owned();
    let index = index.as_str();
    let kept = sup.act(&case.to_string(), &[("action", "keep"), ("field", "title"), ("index", index)]);
    assert_eq!(kept.status, 303, "{}", kept.body);
    w1.sync(&d.url()).expect("w1 pulls the choice");
    let title = w1.store.get_case(&case).expect("case").case.title;
    assert!(!title.in_conflict(), "resolved");
    assert_eq!(title.value, "楼道堆物（三楼）");
    assert!(!sup.get(&format!("/console/cases/{case}")).body.contains("data-field=\"title\""));
}

/// A district's store from before the console (schema 3) upgrades with its cases and check-ins
/// readable by the console: the backfill of schema 4 reads them out of the stored changes and
/// records. Schema 6 drops the community and street rows servers until then wrote for every
/// case; the community's supervisor still sees every case, through its grids.
#[test]
fn a_store_from_before_the_console_upgrades_with_everything_visible() {
    let d = District::new();
    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let cases = capture(&w1, 0, 3, 35);
    let catalog = gridwork_tests::district(4);
    let patrol = w1.store.start_patrol(&catalog.grids[0].id).expect("patrol");
    let p = &catalog.grids[0].points[0];
    let input = gridwork_core::store::CheckInInput {
        patrol,
        point: Some(p.id.clone()),
        location: gridwork_core::model::geo::Location::gps(p.lat, p.lon, 5.0, 0),
        note: String::new(),
        photo: None,
    };
    w1.store.check_in(input).expect("check in");
    w1.sync(&d.url()).expect("worker pushes");
    let current = d.dir.path().join("server.db");
    let expected: Vec<(String, String, String)> = {
        let conn = rusqlite::Connection::open(&current).expect("open");
        let mut stmt = conn.prepare("SELECT doc_id, title, queue_key FROM docs ORDER BY doc_id").expect("query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    };
    assert_eq!(expected.len(), cases.len());

    // The same district as schema 3 wrote it: schema 3's tables, the rows' schema 3 columns.
    let old_dir = tempfile::tempdir().expect("tempdir");
    {
        let conn = rusqlite::Connection::open(old_dir.path().join("server.db")).expect("old store");
        for sql in [
            include_str!("../../sync-server/src/store/schema.sql"),
            include_str!("../../sync-server/src/store/schema_2_blobs.sql"),
            include_str!("../../sync-server/src/store/schema_3_retire.sql"),
        ] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.execute("ATTACH DATABASE ?1 AS cur", [current.to_string_lossy()]).expect("attach");
        let v3 = |table: &str, columns: &str| {
            conn.execute(&format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM cur.{table}"), [])
                .unwrap_or_else(|e| panic!("copy {table}: {e}"));
        };
        v3("meta", "key, value");
        v3("grids", "id, community, street, json");
        v3("categories", "id, json");
        v3("departments", "id, json");
        v3("users", "id, role, department");
        v3("user_scopes", "user_id, scope, granted_seq");
        v3(
            "devices",
            "id, code, user_id, enrol_hash, token_hash, status, created_ms, last_seen_ms, last_state, retired_ms, drained_ms",
        );
        v3("actors", "actor, device_id, first_seen_ms");
        v3("changes", "seq, hash, doc_id, device_id, received_ms, bytes");
        v3("docs", "doc_id, events_obj, grid_id, category_id, status, deadline_ms, flags, updated_seq");
        v3("doc_events", "doc_id, event_id, json");
        v3("membership", "doc_id, scope, joined_seq");
        v3("scope_changes", "scope, seq, doc_id");
        // What servers before schema 6 also wrote: a row for the case's community and street.
        for (kind, column) in [("community", "g.community"), ("street", "g.street")] {
            conn.execute(
                &format!(
                    "INSERT INTO membership (doc_id, scope, joined_seq) SELECT m.doc_id, '{kind}:' || {column}, m.joined_seq
                     FROM membership m JOIN grids g ON m.scope = 'grid:' || g.id"
                ),
                [],
            )
            .expect("area rows");
        }
        let areas: i64 = conn
            .query_row("SELECT count(*) FROM membership WHERE scope LIKE 'community:%'", [], |r| r.get(0))
            .expect("count");
        assert_eq!(areas, 3, "the old store has a community row per case");
        v3("records", "id, device_id, received_ms, body");
        conn.execute_batch("DETACH DATABASE cur; PRAGMA user_version = 3;").expect("version 3");
    }
    let upgraded = gridwork_sync_server::SqliteStore::open(old_dir.path()).expect("upgrades");
    {
        let conn = rusqlite::Connection::open(old_dir.path().join("server.db")).expect("upgraded store");
        let (areas, grids): (i64, i64) = conn
            .query_row(
                "SELECT count(*) FILTER (WHERE scope NOT LIKE 'grid:%' AND scope NOT LIKE 'user:%'),
                        count(*) FILTER (WHERE scope LIKE 'grid:%') FROM membership",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("count");
        assert_eq!((areas, grids), (0, 3), "community and street rows dropped, grid rows kept");
        // Schema 7: the check-in's facts moved into its record's row; `check_ins` is a view.
        let (records, check_ins, kind): (i64, i64, String) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM records WHERE grid_id = 'g0'),
                        (SELECT type FROM sqlite_master WHERE name = 'check_ins')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("records");
        assert_eq!((records, check_ins, kind.as_str()), (2, 1, "view"), "patrol start and check-in, one row each");
    }
    assert_eq!(upgraded.docs_in_scope("s1").expect("scope").len(), 3, "s1's community, through its grids");
    let console = &upgraded as &dyn ConsoleStore;
    console.set_password("s1", PASSWORD, 0).expect("password");
    let (_, session) = console.sign_in("s1", PASSWORD, 0).expect("sign in");
    let queue = console
        .case_queue(&session.user, &gridwork_sync_server::store::console::CaseFilter::default(), 0)
        .expect("queue");
    let mut listed: Vec<(String, String)> = queue.rows.iter().map(|r| (r.id.clone(), r.title.clone())).collect();
    listed.sort();
    let want: Vec<(String, String)> = expected.iter().map(|(id, t, _)| (id.clone(), t.clone())).collect();
    assert_eq!(listed, want, "every case, with its title, in the upgraded store's queue");
    assert_eq!(queue.counts, vec![("reported".to_owned(), 3)]);
    let day = gridwork_core::model::time::DistrictCalendar::default()
        .day_of(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64);
    let coverage = console.coverage(&session.user, &day).expect("coverage");
    let g0 = coverage.iter().find(|g| g.grid == "g0").expect("g0");
    assert_eq!(g0.check_ins.len(), 1, "the check-in is read out of its record");
}

#[test]
fn a_damaged_stored_case_shows_as_damaged_with_who_sent_it_never_a_500() {
    let d = District::new();
    d.store.set_user("admin", Role::Administrator, None, &[]).expect("admin");
    (d.store.as_ref() as &dyn ConsoleStore).set_password("admin", PASSWORD, 0).expect("password");
    let mut w1 = phone(&d, "w1", None);
    let case = capture(&w1, 0, 1, 71)[0];
    w1.sync(&d.url()).expect("sync");
    // Damage the stored change on disk (a bad sector, or what an older server let through).
    {
        let conn = rusqlite::Connection::open(d.dir.path().join("server.db")).expect("open server db");
        conn.execute("UPDATE changes SET bytes = x'00' WHERE doc_id = ?1", [case.to_string()]).expect("damage");
    }
    let device = d.store.list_devices(0).expect("devices").into_iter().find(|x| x.user == "w1").expect("w1's phone");
    let mut admin = Browser::new(&d.url());
    assert_eq!(admin.sign_in("admin", PASSWORD).status, 303);
    let page = admin.get(&format!("/console/cases/{case}"));
    assert_ne!(page.status, 500);
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains(&case.to_string()), "names the case: {}", page.body);
    assert!(page.body.contains(&device.id), "names who sent it: {}", page.body);
    // The queue still lists it, and acting on it is refused the same way, changing nothing.
    assert_eq!(admin.get("/console/cases").status, 200);
}

// The scenarios above on every store (the console's rules are the same on both: `rules::console`).
fn bulk_triage_takes_one_event_per_case_each_checked_by_the_role_table(d: District) {
    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let cases: Vec<String> = capture(&w1, 0, 4, 41).iter().map(|c| c.to_string()).collect();
    w1.sync(&d.url()).expect("worker pushes");
    let code0 =
        w1.store.get_case(&gridwork_core::model::ids::CaseId::parse(&cases[0]).expect("id")).expect("case").case.code;
    let mut sup = Browser::new(&d.url());
    assert_eq!(sup.sign_in("s1", PASSWORD).status, 303);
    let page = sup.get("/console/cases");
    assert!(page.body.contains("id=\"bulk\"") && page.body.matches("class=\"pick\"").count() == 4, "a box per case");
    let need = |page: &Page, what: &str| -> String {
        let at = page.body.split(&format!("data-need=\"{what}\"")).nth(1).expect("the need is shown");
        at.split('<').next().unwrap_or("").rsplit(' ').next().unwrap_or("").to_owned()
    };
    assert_eq!((need(&page, "needs_triage"), need(&page, "needs_dispatch")), ("4".into(), "0".into()));
    let csrf = page.csrf().expect("the page's form token");
    let bulk = |action: &str, extra: &[(&'static str, &'static str)], picked: &[String]| {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf), ("action", action), ("back", "status=reported")];
        form.extend_from_slice(extra);
        form.extend(picked.iter().map(|c| ("case", c.as_str())));
        form.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Vec<(String, String)>>()
    };
    let post = |b: &mut Browser, form: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/console/cases/bulk", &refs)
    };
    // The first case accepted on its own; then all four in one action: three accepted, the first
    // refused by the role table's state rule (nothing to accept), and said so by its code.
    let one = sup.post(&format!("/console/cases/{}/act", cases[0]), &[("csrf", &csrf), ("action", "accept")]);
    assert_eq!(one.status, 303);
    let all = post(&mut sup, bulk("accept", &[], &cases));
    assert_eq!(all.status, 303, "{}", all.body);
    let back = all.location.clone().expect("back to the queue");
    assert!(back.starts_with("/console/cases?status=reported&bulk_done=3&bulk_refused="), "{back}");
    let shown = sup.get(&back);
    let result = shown.body.split("id=\"bulk-result\">").nth(1).expect("the result is shown");
    assert!(result.split("</p>").next().unwrap_or("").contains(&code0), "the refused case by its code: {result}");
    assert_eq!(case_rows(&sup.get("/console/cases?status=accepted")).len(), 4, "each accepted once");
    let now = sup.get("/console/cases");
    assert_eq!((need(&now, "needs_triage"), need(&now, "needs_dispatch")), ("0".into(), "4".into()));
    // Two dispatched to the police with one deadline: one dispatch event each.
    let dispatched = post(&mut sup, bulk("dispatch", &[("dept_police", "1"), ("hours", "24")], &cases[..2]));
    assert_eq!(dispatched.status, 303);
    assert!(dispatched.location.as_deref().unwrap_or("").contains("bulk_done=2&"), "{:?}", dispatched.location);
    let mut on_dispatch = case_rows(&sup.get("/console/cases?status=dispatched"));
    on_dispatch.sort();
    let mut want = cases[..2].to_vec();
    want.sort();
    assert_eq!(on_dispatch, want);
    let detail = sup.get(&format!("/console/cases/{}", cases[0]));
    assert_eq!(detail.body.matches("data-kind=\"dispatch\"").count(), 1, "one event per case");
    // A dispatch without a department, a form without its token, an action bulk does not take:
    // refused, and nothing changes.
    assert_eq!(post(&mut sup, bulk("dispatch", &[("hours", "24")], &cases[2..])).status, 400);
    let forged: Vec<(String, String)> =
        bulk("reject", &[], &cases[2..]).into_iter().filter(|(k, _)| k != "csrf").collect();
    assert_eq!(post(&mut sup, forged).status, 403);
    assert_eq!(post(&mut sup, bulk("close", &[], &cases[2..])).status, 400);
    assert_eq!(case_rows(&sup.get("/console/cases?status=accepted")).len(), 2);
    // A department handler's role may not accept: every case refused, none changed.
    let mut h1 = Browser::new(&d.url());
    assert_eq!(h1.sign_in("h1", PASSWORD).status, 303);
    let h_page = h1.get("/console/cases");
    assert_eq!(need(&h_page, "needs_start"), "2", "the police's two dispatched cases wait to be started");
    assert!(!h_page.body.contains("id=\"bulk\""), "a department handler does not triage");
    let h_csrf = h_page.csrf().expect("form token");
    let mut form = vec![("csrf".to_owned(), h_csrf), ("action".to_owned(), "reject".to_owned())];
    form.extend(cases[..2].iter().map(|c| ("case".to_owned(), c.clone())));
    let refused = post(&mut h1, form);
    assert!(refused.location.as_deref().unwrap_or("").contains("bulk_done=0&"), "{:?}", refused.location);
    assert_eq!(case_rows(&sup.get("/console/cases?status=dispatched")).len(), 2);
}

/// A case as a worker would write it: this title and description, in grid `grid`.
fn capture_text(p: &common::Phone, grid: usize, title: &str, description: &str) -> gridwork_core::model::ids::CaseId {
    let catalog = gridwork_tests::district(4);
    let mut case = gridwork_tests::random_case(&mut gridwork_tests::Rng::new(7), &catalog, grid, 0);
    case.title = title.to_owned();
    case.description = description.to_owned();
    p.store.capture_case(case).expect("capture").id
}

fn search_finds_cases_by_code_words_reporter_and_place_within_the_persons_area(d: District) {
    console_users(&d);
    let mut w1 = phone(&d, "w1", None);
    let mut w2 = phone(&d, "w2", None);
    let leak = capture_text(&w1, 0, "楼道漏水", "三号楼的水管破了, basement flooding");
    let noise = capture_text(&w2, 1, "夜间噪音扰民", "工地施工到凌晨");
    w1.sync(&d.url()).expect("w1 pushes");
    w2.sync(&d.url()).expect("w2 pushes");
    let code = w1.store.get_case(&leak).expect("case").case.code;
    let (leak, noise) = (leak.to_string(), noise.to_string());

    let mut sup = Browser::new(&d.url());
    assert_eq!(sup.sign_in("s1", PASSWORD).status, 303);
    let found = |b: &mut Browser, q: &str| -> Vec<String> {
        let page = b.get(&format!("/console/cases?q={}", gridwork_sync_server::console::views::enc(q)));
        assert_eq!(page.status, 200, "{q}: {}", page.body);
        let mut rows = case_rows(&page);
        rows.sort();
        rows
    };
    // A two-character Chinese word of the title or the description; a word being typed.
    assert_eq!(found(&mut sup, "漏水"), vec![leak.clone()]);
    assert_eq!(found(&mut sup, "水管"), vec![leak.clone()]);
    assert_eq!(found(&mut sup, "噪音"), vec![noise.clone()]);
    assert_eq!(found(&mut sup, "flood"), vec![leak.clone()]);
    assert_eq!(found(&mut sup, "施工 凌晨"), vec![noise.clone()], "every word must match");
    assert!(found(&mut sup, "漏水 噪音").is_empty(), "no case holds both");
    assert!(found(&mut sup, "漏电").is_empty(), "a bigram the text does not hold");
    // By reporter and by place (grid id and name).
    assert_eq!(found(&mut sup, "w2"), vec![noise.clone()]);
    assert_eq!(found(&mut sup, "g0"), vec![leak.clone()]);
    let mut both = vec![leak.clone(), noise.clone()];
    both.sort();
    assert_eq!(found(&mut sup, "Community 0"), both);
    // A code typed in full (in any case) opens the case; part of it searches.
    for typed in [code.clone(), code.to_lowercase(), format!(" {code} ")] {
        let page = sup.get(&format!("/console/cases?q={}", gridwork_sync_server::console::views::enc(&typed)));
        assert_eq!((page.status, page.location.clone()), (303, Some(format!("/console/cases/{leak}"))), "{typed:?}");
    }
    let part = code.split('-').next().unwrap_or(&code).to_owned();
    assert!(found(&mut sup, &part).contains(&leak), "the code's first part finds it");
    // The search box is on every page; the filters and the CSV keep the words.
    assert!(sup.get("/console/map").body.contains("id=\"search-box\""));
    let csv = sup.get(&format!("/console/cases.csv?q={}", gridwork_sync_server::console::views::enc("噪音")));
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);

    // Someone else's area: nothing found, and a full code opens nothing either.
    let mut s2 = Browser::new(&d.url());
    assert_eq!(s2.sign_in("s2", PASSWORD).status, 303);
    assert!(found(&mut s2, "漏水").is_empty(), "outside s2's community");
    let by_code = s2.get(&format!("/console/cases?q={}", gridwork_sync_server::console::views::enc(&code)));
    assert_eq!((by_code.status, case_rows(&by_code).len()), (200, 0), "no case, no hint it exists");

    // An edited title is searched as it is now: the old words find it no more.
    w1.store
        .edit_case(
            &gridwork_core::model::ids::CaseId::parse(&leak).expect("id"),
            gridwork_core::model::doc::CasePatch { title: Some("楼梯积水".into()), ..Default::default() },
        )
        .expect("edit");
    w1.sync(&d.url()).expect("w1 pushes the edit");
    assert_eq!(found(&mut sup, "积水"), vec![leak.clone()]);
    assert!(found(&mut sup, "楼道").is_empty(), "the old title's word is gone");
    assert_eq!(found(&mut sup, "水管"), vec![leak.clone()], "the description still holds");
}

on_every_store!(
    search_finds_cases_by_code_words_reporter_and_place_within_the_persons_area,
    bulk_triage_takes_one_event_per_case_each_checked_by_the_role_table,
    a_case_worked_from_the_console_reaches_the_phones_and_closes,
    the_console_refuses_device_tokens_forged_forms_other_areas_and_password_guessing,
    the_queue_pages_forward_and_back_without_losing_or_repeating_a_case,
    map_coverage_assessment_and_administration,
    photos_and_conflicting_values_on_the_case_page,
);
