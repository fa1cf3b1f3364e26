//! Escalation rules (督办) driven by a fixed clock through a case's whole life: the server urges
//! and escalates on its own, once, by its system person, replicated to the phone like any event.

use gridwork_core::model::catalog::Role;
use gridwork_core::model::ids::CaseId;
use gridwork_core::model::lifecycle::{EventKind, Level};
use gridwork_sync_server::rules::escalation::{parse_rules, Policy, SYSTEM_USER};
use gridwork_sync_server::store::console::{ConsoleAction, ConsoleStore, ConsoleUser};

#[macro_use]
mod common;
use common::{capture, phone, District};

const PASSWORD: &str = "correct horse battery";
const H: i64 = 3_600_000;
/// Monday 2026-11-30 10:00 in Shanghai.
const MON_10: i64 = 1_796_004_000_000;
const DAY: i64 = 24 * H;

fn console(d: &District) -> &dyn ConsoleStore {
    d.store.as_ref() as &dyn ConsoleStore
}

fn person(d: &District, user: &str) -> ConsoleUser {
    console(d).set_password(user, PASSWORD, MON_10).expect("password");
    console(d).sign_in(user, PASSWORD, MON_10).expect("sign in").1.user
}

fn event(d: &District, user: &ConsoleUser, case: &CaseId, kind: EventKind, at: i64) {
    console(d).act(user, &case.to_string(), ConsoleAction::Event(kind), at).expect("action");
}

/// Follows the change log, then runs the rules as `instance` at `at`: what it applied.
fn run(d: &District, instance: &str, at: i64) -> usize {
    console(d).index_for_search(10_000).expect("follow the log");
    let ran = console(d).run_escalations(instance, at).expect("run");
    assert!(!ran.skipped && ran.failed == 0, "{ran:?}");
    ran.applied
}

/// The case's automatic events as (kind, level) in timeline order.
fn automatic(d: &District, admin: &ConsoleUser, case: &CaseId) -> Vec<(String, Option<Level>)> {
    let view = console(d).case_view(admin, &case.to_string()).expect("case");
    view.case
        .timeline
        .entries
        .iter()
        .filter(|e| e.event.actor.user.0 == SYSTEM_USER)
        .map(|e| {
            let level = if let EventKind::Escalate { to, .. } = &e.event.kind { Some(*to) } else { None };
            (e.event.kind.name().to_owned(), level)
        })
        .collect()
}

fn dispatched_case(d: &District, w1: &mut common::Phone, s1: &ConsoleUser, seed: u64, at: i64) -> CaseId {
    let case = capture(w1, 0, 1, seed)[0];
    w1.sync(&d.url()).expect("push");
    event(d, s1, &case, EventKind::Accept { note: String::new() }, at);
    // Due a day later: Tuesday 10:00.
    event(d, s1, &case, EventKind::Dispatch { departments: vec!["police".into()], deadline_ms: at + DAY }, at);
    case
}

fn a_dispatched_case_is_urged_then_escalated_once_each_in_working_time(mut d: District) {
    d.store.set_user("a1", Role::Administrator, None, &[]).expect("admin");
    let (s1, h1, admin) = (person(&d, "s1"), person(&d, "h1"), person(&d, "a1"));
    let mut w1 = phone(&d, "w1", None);
    let case = dispatched_case(&d, &mut w1, &s1, 51, MON_10);

    // Not started within 4 working hours of Monday 10:00: due at 14:00.
    assert_eq!(run(&d, "a", MON_10 + 3 * H), 0, "13:00: not yet");
    assert_eq!(run(&d, "a", MON_10 + 4 * H + 30 * 60_000), 1, "14:30: the department is urged");
    assert_eq!(run(&d, "a", MON_10 + 5 * H), 0, "once");
    assert_eq!(automatic(&d, &admin, &case), vec![("urge".to_owned(), None)]);

    // Another instance that takes the same step again writes nothing: the step's id is the same.
    let (due, _) = gridwork_sync_server::rules::escalation::due_now(
        gridwork_sync_server::rules::escalation::pending(
            &case.to_string(),
            &console(&d).case_view(&admin, &case.to_string()).expect("case").case,
            &Policy { default_rules: parse_rules("not_started 1h urge").expect("rule"), ..Policy::default() },
            &Default::default(),
        ),
        MON_10 + 5 * H,
    );
    assert_eq!(due.len(), 1, "a different rule would still be due");
    let system = ConsoleUser::new(SYSTEM_USER.into(), Role::Supervisor, None, vec![]);
    let taken = gridwork_sync_server::rules::escalation::step_id(
        &case.to_string(),
        &console(&d)
            .case_view(&admin, &case.to_string())
            .expect("case")
            .case
            .timeline
            .entries
            .iter()
            .find(|e| e.event.kind.name() == "dispatch")
            .expect("dispatch")
            .event
            .id,
        &parse_rules("not_started 4h urge").expect("rule")[0],
    );
    console(&d)
        .act(
            &system,
            &case.to_string(),
            ConsoleAction::Automatic { id: taken, kind: EventKind::Urge { note: "again".into() } },
            MON_10 + 5 * H,
        )
        .expect("an automatic step already taken is no error");
    assert_eq!(automatic(&d, &admin, &case).len(), 1, "and no second event");
    // Nobody else takes automatic steps.
    let forged = console(&d).act(
        &s1,
        &case.to_string(),
        ConsoleAction::Automatic { id: taken, kind: EventKind::Urge { note: String::new() } },
        MON_10 + 5 * H,
    );
    assert!(forged.is_err(), "a supervisor cannot pose as the rules");

    // The department starts; a restart changes nothing that was done.
    event(&d, &h1, &case, EventKind::Start { department: "police".into() }, MON_10 + 5 * H);
    d.restart();
    assert_eq!(run(&d, "a", MON_10 + DAY + 8 * H), 0, "Tuesday 18:00: overdue since 10:00, not by a working day");
    // Overdue by one working day (08:30 of working time): Wednesday 10:00.
    assert_eq!(run(&d, "b", MON_10 + 2 * DAY + 30 * 60_000), 1, "Wednesday 10:30: to the street");
    assert_eq!(run(&d, "a", MON_10 + 2 * DAY + 4 * 60_000 * 60), 0, "once, whichever instance runs");
    // By three working days: Friday 10:00.
    assert_eq!(run(&d, "b", MON_10 + 4 * DAY - H), 0, "Friday 09:00: not yet");
    assert_eq!(run(&d, "b", MON_10 + 4 * DAY + H), 1, "Friday 11:00: to the district");
    assert_eq!(run(&d, "b", MON_10 + 14 * DAY), 0, "nothing more, ever");
    assert_eq!(
        automatic(&d, &admin, &case),
        vec![
            ("urge".to_owned(), None),
            ("escalate".to_owned(), Some(Level::Street)),
            ("escalate".to_owned(), Some(Level::District))
        ]
    );
    let view = console(&d).case_view(&admin, &case.to_string()).expect("case");
    assert_eq!(view.case.timeline.state.escalated_to, Some(Level::District));
    assert!(view.case.timeline.entries.iter().all(|e| e.verdict == gridwork_core::model::lifecycle::Verdict::Applied));

    // On the phone like any event, by the system person.
    w1.sync(&d.url()).expect("pull");
    let on_phone = w1.store.get_case(&case).expect("case");
    let by_system = on_phone.case.timeline.entries.iter().filter(|e| e.event.actor.user.0 == SYSTEM_USER).count();
    assert_eq!(by_system, 3);
    assert_eq!(on_phone.case.timeline.state.escalated_to, Some(Level::District));
}

fn no_rule_touches_a_handled_case_a_lower_level_or_a_category_without_rules(d: District) {
    d.store.set_user("a1", Role::Administrator, None, &[]).expect("admin");
    let (s1, h1, admin) = (person(&d, "s1"), person(&d, "h1"), person(&d, "a1"));
    let mut w1 = phone(&d, "w1", None);
    // Handled before its deadline: waits on no department.
    let handled = dispatched_case(&d, &mut w1, &s1, 61, MON_10);
    event(
        &d,
        &h1,
        &handled,
        EventKind::HandlerReport { department: "police".into(), note: String::new(), evidence: vec![] },
        MON_10 + H,
    );
    // Escalated to the district by hand already: no rule escalates it lower (an urge still comes).
    let by_hand = dispatched_case(&d, &mut w1, &s1, 62, MON_10);
    event(&d, &s1, &by_hand, EventKind::Escalate { to: Level::District, note: String::new() }, MON_10 + H);
    assert_eq!(run(&d, "a", MON_10 + 10 * DAY), 1, "only by_hand's urge");
    assert!(automatic(&d, &admin, &handled).is_empty());
    assert_eq!(automatic(&d, &admin, &by_hand), vec![("urge".to_owned(), None)]);

    // An administrator gives the case's category no rules: a new case waits for none.
    let category = console(&d).case_view(&admin, &by_hand.to_string()).expect("case").case.category.value.0;
    let mut policy = console(&d).escalation_policy(&admin).expect("policy");
    policy.by_category.insert(category.clone(), vec![]);
    assert!(console(&d).set_escalation_policy(&s1, &policy).is_err(), "supervisors do not edit the rules");
    console(&d).set_escalation_policy(&admin, &policy).expect("set");
    let quiet = dispatched_case(&d, &mut w1, &s1, 62, MON_10);
    assert_eq!(run(&d, "a", MON_10 + 10 * DAY), 0);
    assert!(automatic(&d, &admin, &quiet).is_empty());
    // Bad policies are refused whole, with what to fix.
    let mut bad = policy.clone();
    bad.working_hours.start_minute = 20 * 60;
    assert!(console(&d).set_escalation_policy(&admin, &bad).is_err());
    let mut unknown = policy.clone();
    unknown.by_category.insert("no-such-category".into(), vec![]);
    assert!(console(&d).set_escalation_policy(&admin, &unknown).is_err());
    assert_eq!(console(&d).escalation_policy(&admin).expect("policy"), policy, "nothing stored changed");

    // Rules added later reach cases already waiting: the next run looks at them all.
    policy.by_category.insert(category, parse_rules("overdue 1h urge").expect("rule"));
    console(&d).set_escalation_policy(&admin, &policy).expect("set");
    assert_eq!(console(&d).run_escalations("a", MON_10 + 10 * DAY).expect("run").applied, 2, "quiet and by_hand urged");

    // The system person is no one's to take.
    assert!(d.store.set_user(SYSTEM_USER, Role::Supervisor, None, &[]).is_err());
    assert!(d.store.enrol_device(SYSTEM_USER, 0).is_err());
    assert!(console(&d).sign_in(SYSTEM_USER, "", MON_10).is_err());
}

on_every_store!(
    a_dispatched_case_is_urged_then_escalated_once_each_in_working_time,
    no_rule_touches_a_handled_case_a_lower_level_or_a_category_without_rules,
);
