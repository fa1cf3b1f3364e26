//! The district overview (ADR 29): what it counts follows the cases' histories once the upkeep
//! pass has seen them, within the person's area only, on every store.

use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::lifecycle::{EventKind, Level};
use gridwork_core::model::time::DistrictCalendar;
use gridwork_model::access::Scope;
use gridwork_sync_server::error::ServerError;
use gridwork_sync_server::rules::overview::{Area, Overview};
use gridwork_sync_server::store::console::{ConsoleAction, ConsoleStore, ConsoleUser};
use gridwork_tests::{district, random_case, Rng};

#[macro_use]
mod common;
use common::{phone, District, Phone};

const PASSWORD: &str = "correct horse battery";
const H: i64 = 3_600_000;

fn console(d: &District) -> &dyn ConsoleStore {
    d.store.as_ref() as &dyn ConsoleStore
}

fn now() -> i64 {
    gridwork_sync_server::clock::now_ms()
}

fn person(d: &District, user: &str) -> ConsoleUser {
    console(d).set_password(user, PASSWORD, now()).expect("password");
    console(d).sign_in(user, PASSWORD, now()).expect("sign in").1.user
}

fn event(d: &District, user: &ConsoleUser, case: &CaseId, kind: EventKind) {
    console(d).act(user, &case.to_string(), ConsoleAction::Event(kind), now()).expect("action");
}

/// A case reported in grid `grid` of the twenty-grid district.
fn report(p: &mut Phone, d: &District, grid: usize, seed: u64) -> CaseId {
    let mut rng = Rng::new(seed);
    // The phone learns the twenty-grid catalog from the server first.
    p.sync(&d.url()).expect("catalog");
    let id = p.store.capture_case(random_case(&mut rng, &district(20), grid, 0)).expect("capture").id;
    p.sync(&d.url()).expect("report");
    id
}

fn today() -> String {
    DistrictCalendar::default().day_of(now())
}

fn overview(d: &District, who: &ConsoleUser, area: Option<Area>) -> Result<Overview, ServerError> {
    let day = today();
    console(d).overview(who, area, (&day, &day), now())
}

fn the_overview_counts_each_case_once_by_its_history_within_the_persons_area(d: District) {
    // Two communities of ten grids each, in one street.
    d.store.import_catalog(&district(20)).expect("catalog");
    d.store.set_user("a1", Role::Administrator, None, &[]).expect("admin");
    d.store.set_user("w3", Role::Worker, None, &[Scope::Grid("g10".into())]).expect("w3");
    d.store.set_user("s3", Role::Supervisor, None, &[Scope::Grid("g1".into())]).expect("s3");
    let (s1, h1, admin, s3) = (person(&d, "s1"), person(&d, "h1"), person(&d, "a1"), person(&d, "s3"));
    let (mut w1, mut w2, mut w3) = (phone(&d, "w1", None), phone(&d, "w2", None), phone(&d, "w3", None));

    // Handled on time, visited (4 stars) and closed.
    let done = report(&mut w1, &d, 0, 1);
    event(&d, &s1, &done, EventKind::Accept { note: String::new() });
    event(&d, &s1, &done, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: now() + 24 * H });
    event(
        &d,
        &h1,
        &done,
        EventKind::HandlerReport { department: "police".into(), note: String::new(), evidence: vec![] },
    );
    w1.sync(&d.url()).expect("pull");
    w1.store.record_event(&done, EventKind::FollowUp { satisfaction: 4, note: String::new() }).expect("visit");
    w1.sync(&d.url()).expect("push the visit");
    event(&d, &s1, &done, EventKind::Close { note: String::new() });
    // Dispatched with a deadline already past, escalated to the street by hand.
    let late = report(&mut w1, &d, 0, 2);
    event(&d, &s1, &late, EventKind::Accept { note: String::new() });
    event(&d, &s1, &late, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: now() - H });
    event(&d, &s1, &late, EventKind::Escalate { to: Level::Street, note: String::new() });
    // Only reported: one in the other grid of community 0, one in community 1.
    report(&mut w2, &d, 1, 3);
    report(&mut w3, &d, 10, 4);

    // Nothing counts before the upkeep pass has followed the log.
    assert_eq!(overview(&d, &admin, None).expect("overview").reported, 0);
    console(&d).index_for_search(10_000).expect("follow the log");

    let all = overview(&d, &admin, None).expect("overview");
    assert_eq!(all.area, Area::District);
    assert_eq!(all.reported, 4);
    assert_eq!(all.parts.iter().map(|p| (p.name.as_str(), p.reported)).collect::<Vec<_>>(), vec![("Street 0", 4)]);
    let police = all.departments.iter().find(|r| r.department == "police").expect("police row");
    assert_eq!((police.dispatched, police.done, police.done_on_time, police.overdue), (2, 1, 1, 1));
    assert_eq!(all.overdue_by_level, [0, 0, 1, 0], "one overdue, escalated to the street");
    assert_eq!(all.satisfaction, [0, 0, 0, 1, 0]);
    assert_eq!((all.closure[0].closed, all.closure[0].median_hours), (1, Some(0)), "closed within the hour");
    assert_eq!(all.per_day.values().map(|v| v.iter().sum::<i64>()).sum::<i64>(), 4, "every case on its day");
    assert!(all.choices.contains(&Area::Community("Community 1".into())));

    // The same page at a community: its grids are its parts.
    let c0 = overview(&d, &admin, Some(Area::Community("Community 0".into()))).expect("overview");
    assert_eq!(c0.reported, 3);
    let parts: Vec<(&str, i64)> =
        c0.parts.iter().filter(|p| p.reported > 0).map(|p| (p.name.as_str(), p.reported)).collect();
    assert_eq!(parts, vec![("Grid 0", 2), ("Grid 1", 1)]);
    assert_eq!(c0.parts.len(), 10, "every grid of the community, counted or not");

    // A community's supervisor sees their community and nothing wider.
    let mine = overview(&d, &s1, None).expect("overview");
    assert_eq!((mine.area.clone(), mine.reported), (Area::Community("Community 0".into()), 3));
    assert_eq!(mine.choices, vec![Area::Community("Community 0".into())]);
    for other in [Area::District, Area::Street("Street 0".into()), Area::Community("Community 1".into())] {
        assert!(
            matches!(overview(&d, &s1, Some(other.clone())), Err(ServerError::Forbidden(_))),
            "{other:?} is outside s1's area"
        );
    }
    // A person with a single grid has no area to overview.
    assert!(matches!(overview(&d, &s3, None), Err(ServerError::Forbidden(_))));

    // What needs each person today counts the overdue case at their level: the community's
    // supervisor, the police, the administrator; not a supervisor of another grid.
    let overdue = |who: &ConsoleUser| {
        let needs = console(&d).needs_you(who, None, now()).expect("needs");
        needs.iter().find(|n| n.what == "needs_overdue").map(|n| (n.count, n.query))
    };
    for who in [&s1, &h1, &admin] {
        assert_eq!(overdue(who), Some((1, "overdue=1")), "{}", who.id);
    }
    assert_eq!(overdue(&s3), Some((0, "overdue=1")));

    // Later changes reach the facts on the next pass: the late case is handled now.
    event(
        &d,
        &h1,
        &late,
        EventKind::HandlerReport { department: "police".into(), note: String::new(), evidence: vec![] },
    );
    console(&d).index_for_search(10_000).expect("follow the log");
    let after = overview(&d, &admin, None).expect("overview");
    let police = after.departments.iter().find(|r| r.department == "police").expect("police row");
    assert_eq!((police.done, police.done_on_time, police.overdue), (2, 1, 0), "done, late");
    assert_eq!(after.overdue_by_level, [0, 0, 0, 0]);
    for who in [&s1, &h1, &admin] {
        assert_eq!(overdue(who), Some((0, "overdue=1")), "{}", who.id);
    }

    // The page and its CSVs over HTTP, with the same area rules.
    let mut web = gridwork_tests::console_client::ConsoleClient::new().expect("client");
    assert!(web.sign_in(&d.url(), "s1", PASSWORD).expect("sign in"), "s1 signs in");
    let base = format!("{}/console/overview", d.url());
    let page = web.get(&base).expect("overview");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"chart-per-day\"") && page.body.contains("id=\"heat-map\""));
    let day = today();
    let csv = |web: &mut gridwork_tests::console_client::ConsoleClient, chart: &str, area: &str| {
        web.get(&format!("{base}.csv?chart={chart}&area={area}&from={day}&to={day}&lang=en")).expect("csv")
    };
    let departments = csv(&mut web, "departments", "community:Community%200");
    assert_eq!(departments.status, 200, "{}", departments.body);
    let lines: Vec<&str> = departments.body.lines().collect();
    assert_eq!(lines.first().copied(), Some("Department,Dispatched,Handled,Handled on time,Overdue,On-time rate"));
    assert!(lines.iter().any(|l| l.ends_with(",2,2,1,0,50%")), "police: 2 dispatched, 2 done, 1 on time: {lines:?}");
    assert_eq!(csv(&mut web, "parts", "district").status, 403, "the district is not s1's");
    assert_eq!(csv(&mut web, "no-such-chart", "").status, 400);

    // A period without these cases counts none; a bad period is refused with how to write one.
    let yesterday = DistrictCalendar::default().day_of(now() - 24 * H);
    let before = console(&d).overview(&admin, None, (&yesterday, &yesterday), now()).expect("overview");
    assert_eq!((before.reported, before.days.len()), (0, 1));
    assert!(matches!(
        console(&d).overview(&admin, None, ("2026-13-01", "2026-12-01"), now()),
        Err(ServerError::BadRequest(_))
    ));
    assert!(matches!(
        console(&d).overview(&admin, None, (&today(), &yesterday), now()),
        Err(ServerError::BadRequest(_))
    ));
}

on_every_store!(the_overview_counts_each_case_once_by_its_history_within_the_persons_area,);
