//! Escalation rules (督办): what the server does on its own when a dispatched case waits.
//!
//! A district's policy (meta `escalation_policy`, edited by administrators in the console) holds
//! its working hours and, per category (or by default), rules such as "dispatched and not started
//! within 4 working hours → urge the department; overdue by 1 working day → escalate to the street
//! centre; by 3 → to the district". The server applies a rule as an ordinary lifecycle event by the
//! system person ([`SYSTEM_USER`], a supervisor of every street), written through the console's
//! write path, so it is checked by the role table and replicated to phones like any event.
//!
//! Exactly once, across restarts and instances: each automatic event's id is derived from the
//! case, the dispatch it follows and the rule ([`step_id`]), and a step whose event the case holds
//! is never taken again; one instance at a time runs the rules (a lease in meta); and a second
//! change from the same actor and number would be refused by the store (schema 9) anyway. Never
//! to a case that is contested, closed or otherwise not waiting on a department, nor an
//! escalation to a level the case already reached.
//!
//! When to look at a case is kept beside it (`escalation_due`, schema 13): written by the index
//! pass that follows the change log (`rules::search`) and after each run, so a run reads only
//! the cases whose next step has come.

use std::collections::BTreeMap;

use gridwork_model::doc::CaseDoc;
use gridwork_model::ids::EventId;
use gridwork_model::lifecycle::{EventKind, Level, Status, StatusView, Verdict};
use gridwork_model::time::{DistrictCalendar, WorkingHours};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::collections::BTreeSet;
use std::sync::Arc;

use gridwork_model::access::Scope;
use gridwork_model::catalog::Role;

use super::console::load_case;
use crate::error::{Result, ServerError};
use crate::store::console::{ConsoleAction, ConsoleStore, ConsoleUser};
use crate::store::port::{read, write, Backend, ReadTx, WriteTx};

/// The person automatic events are by. No one signs in as them or enrols a phone for them.
pub const SYSTEM_USER: &str = "system";

/// The meta key the policy is stored under (JSON).
pub const POLICY_KEY: &str = "escalation_policy";

/// What one rule waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Counted from the dispatch, while no department has started.
    NotStarted,
    /// Counted from the deadline, while a department still owes its report.
    Overdue,
}

/// What a rule does when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step", content = "to")]
pub enum Step {
    Urge,
    Escalate(Level),
}

/// "After this much working time, do this": `not_started 4h urge`, `overdue 1d street`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub when: Trigger,
    /// Working hours, or working days (`days: true`: whole working days of the policy's hours).
    pub amount: u32,
    pub days: bool,
    pub then: Step,
}

/// A district's escalation policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub working_hours: WorkingHours,
    /// The rules of a category without its own.
    pub default_rules: Vec<Rule>,
    /// A category's own rules (an empty list: none at all).
    #[serde(default)]
    pub by_category: BTreeMap<String, Vec<Rule>>,
}

impl Default for Policy {
    /// Monday to Friday, 09:00–17:30: not started within 4 working hours → urge; overdue by 1
    /// working day → the street; by 3 → the district.
    fn default() -> Self {
        Policy {
            working_hours: WorkingHours::default(),
            default_rules: parse_rules("not_started 4h urge\noverdue 1d street\noverdue 3d district")
                .unwrap_or_default(),
            by_category: BTreeMap::new(),
        }
    }
}

/// A rule's text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {line} ({text:?}): {reason}. Write one rule per line as `not_started 4h urge` or `overdue 1d street` (then: urge, street or district; h: working hours, d: working days)")]
pub struct BadRule {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

impl Rule {
    /// The rule as its text: what administrators type, and what names it in an event id.
    pub fn text(&self) -> String {
        let when = match self.when {
            Trigger::NotStarted => "not_started",
            Trigger::Overdue => "overdue",
        };
        let then = match self.then {
            Step::Urge => "urge",
            Step::Escalate(Level::Community) => "community",
            Step::Escalate(Level::Street) => "street",
            Step::Escalate(Level::District) => "district",
        };
        format!("{when} {}{} {then}", self.amount, if self.days { "d" } else { "h" })
    }

    fn span_ms(&self, hours: &WorkingHours) -> i64 {
        let unit = if self.days { hours.day_ms() } else { 3_600_000 };
        i64::from(self.amount) * unit
    }
}

/// Rules from their text, one per line (blank lines ignored).
pub fn parse_rules(text: &str) -> std::result::Result<Vec<Rule>, BadRule> {
    let mut rules = vec![];
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let bad = |reason: &str| BadRule { line: i + 1, text: line.trim().to_owned(), reason: reason.to_owned() };
        let [when, span, then] = words[..] else { return Err(bad("three words are expected")) };
        let when = match when {
            "not_started" => Trigger::NotStarted,
            "overdue" => Trigger::Overdue,
            _ => return Err(bad("it starts with not_started or overdue")),
        };
        let (amount, days) = match (span.strip_suffix('h'), span.strip_suffix('d')) {
            (Some(n), _) => (n, false),
            (_, Some(n)) => (n, true),
            _ => return Err(bad("the time ends in h (working hours) or d (working days)")),
        };
        let amount: u32 = amount.parse().map_err(|_| bad("the time is a whole number"))?;
        if amount == 0 || amount > 1000 {
            return Err(bad("the time is 1 to 1000"));
        }
        let then = match then {
            "urge" => Step::Urge,
            "community" => Step::Escalate(Level::Community),
            "street" => Step::Escalate(Level::Street),
            "district" => Step::Escalate(Level::District),
            _ => return Err(bad("it ends with urge, community, street or district")),
        };
        rules.push(Rule { when, amount, days, then });
    }
    Ok(rules)
}

/// Rules as their text, one per line.
pub fn rules_text(rules: &[Rule]) -> String {
    rules.iter().map(Rule::text).collect::<Vec<_>>().join("\n")
}

impl Policy {
    pub fn rules_for(&self, category: &str) -> &[Rule] {
        self.by_category.get(category).map_or(&self.default_rules[..], |r| &r[..])
    }

    pub fn validate(&self) -> Result<()> {
        self.working_hours.validate().map_err(|e| ServerError::BadRequest(e.to_string()))
    }

    /// The stored policy, or the default where none was ever stored.
    pub fn from_meta(json: Option<&str>) -> Result<Policy> {
        match json {
            None => Ok(Policy::default()),
            Some(j) => serde_json::from_str(j)
                .map_err(|e| ServerError::Internal(format!("the stored escalation policy is unreadable: {e}"))),
        }
    }
}

/// The id of the event a rule makes for a case after one dispatch: the same on every instance,
/// at every attempt.
pub fn step_id(case_id: &str, dispatch: &EventId, rule: &Rule) -> EventId {
    let digest = Sha256::digest(format!("gridwork-escalation:{case_id}:{dispatch}:{}", rule.text()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    EventId::derived(bytes)
}

/// A step whose time has come.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub id: EventId,
    pub kind: EventKind,
    pub rule: Rule,
}

/// Every step of the rules a case has not had yet, each with when it falls due (past or not):
/// the case's escalation schedule as it stands.
pub fn pending(case_id: &str, case: &CaseDoc, policy: &Policy, calendar: &DistrictCalendar) -> Vec<(i64, Due)> {
    let state = &case.timeline.state;
    // Only a case settled on a department's work: never a contested, closed or rejected one.
    let status = match &state.status {
        StatusView::Settled { status: s @ (Status::Dispatched | Status::InProgress) } => *s,
        _ => return vec![],
    };
    // The dispatch the rules follow: the latest one applied (a case sent again starts again).
    let Some(dispatch) = case
        .timeline
        .entries
        .iter()
        .rev()
        .find(|e| matches!(e.event.kind, EventKind::Dispatch { .. }) && e.verdict == Verdict::Applied)
    else {
        return vec![];
    };
    let held: std::collections::HashSet<EventId> = case.timeline.entries.iter().map(|e| e.event.id).collect();
    let hours = &policy.working_hours;
    let mut out = vec![];
    for rule in policy.rules_for(&case.category.value.0) {
        let from = match rule.when {
            Trigger::NotStarted if status == Status::Dispatched => dispatch.event.clock.estimated_ms(),
            Trigger::NotStarted => continue,
            Trigger::Overdue => match state.deadline_ms {
                Some(d) => d,
                None => continue,
            },
        };
        if let Step::Escalate(level) = rule.then {
            if state.escalated_to.is_some_and(|at| at >= level) {
                continue;
            }
        }
        let id = step_id(case_id, &dispatch.event.id, rule);
        if held.contains(&id) {
            continue;
        }
        let Some(at) = calendar.add_working(hours, from, rule.span_ms(hours)) else { continue };
        let note = format!("auto: {}", rule.text());
        let kind = match rule.then {
            Step::Urge => EventKind::Urge { note },
            Step::Escalate(to) => EventKind::Escalate { to, note },
        };
        out.push((at, Due { id, kind, rule: *rule }));
    }
    out
}

/// When the rules must next look at a case: its earliest pending step (`None`: only once it
/// changes).
pub fn first_due(pending: &[(i64, Due)]) -> Option<i64> {
    pending.iter().map(|(at, _)| *at).min()
}

/// The steps due at `now_ms`, and when the next one after them will be. Of several escalations
/// due at once only the highest is taken (the lower ones would be passed at once).
pub fn due_now(pending: Vec<(i64, Due)>, now_ms: i64) -> (Vec<Due>, Option<i64>) {
    let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _)| *at <= now_ms);
    let mut due: Vec<Due> = due.into_iter().map(|(_, d)| d).collect();
    if let Some(top) = due.iter().filter_map(|d| if let Step::Escalate(l) = d.rule.then { Some(l) } else { None }).max()
    {
        due.retain(|d| !matches!(d.rule.then, Step::Escalate(l) if l < top));
    }
    (due, first_due(&later))
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ran {
    /// Another instance holds the lease: this one did nothing.
    pub skipped: bool,
    /// Cases looked at.
    pub checked: usize,
    /// Automatic events written.
    pub applied: usize,
    /// Steps that could not be written (tried again later).
    pub failed: usize,
}

/// Cases one run looks at at most.
const RUN_CASES: usize = 200;
/// How long a run's lease holds: an instance that died holding it is replaced after this.
const LEASE_MS: i64 = 120_000;
/// A step that failed is tried again after this.
const RETRY_MS: i64 = 10 * 60_000;
const LEASE_KEY: &str = "escalation_lease";

/// Takes the lease for `instance` unless another instance holds one that has not run out.
fn take_lease<B: Backend + ?Sized>(b: &B, instance: &str, now_ms: i64) -> Result<bool> {
    write(b, |tx: &dyn WriteTx| {
        if let Some(held) = tx.meta(LEASE_KEY)? {
            if let Some((who, until)) = held.split_once(' ') {
                let until: i64 = until.parse().unwrap_or(0);
                if who != instance && until > now_ms {
                    return Ok(false);
                }
            }
        }
        tx.set_meta(LEASE_KEY, &format!("{instance} {}", now_ms + LEASE_MS))?;
        Ok(true)
    })
}

/// The server's own person, a supervisor of every street the catalog names (so the write rule
/// lets them act on any case), made or brought up to date.
fn system_person<B: Backend + ?Sized>(b: &B) -> Result<ConsoleUser> {
    let catalog = Arc::clone(b.rules().places.catalog());
    let streets: BTreeSet<String> = catalog.grids.iter().map(|g| g.street.clone()).collect();
    let scopes: Vec<Scope> = streets.into_iter().map(Scope::Street).collect();
    let wanted: BTreeSet<String> = scopes.iter().map(Scope::to_string).collect();
    let (exists, granted) =
        read(b, |tx: &dyn ReadTx| Ok((tx.person(SYSTEM_USER)?.is_some(), tx.granted_scopes(SYSTEM_USER)?)))?;
    if !exists || granted != wanted {
        super::service::put_user(b, SYSTEM_USER, Role::Supervisor, None, &scopes)?;
    }
    Ok(ConsoleUser::new(SYSTEM_USER.to_owned(), Role::Supervisor, None, wanted.into_iter().collect()))
}

/// Applies the rules to every case whose next step has come by `now_ms` (at most [`RUN_CASES`]).
pub fn run_due<B: Backend>(b: &B, instance: &str, now_ms: i64) -> Result<Ran> {
    let docs = read(b, |tx: &dyn ReadTx| tx.escalation_due_by(now_ms, RUN_CASES))?;
    if docs.is_empty() {
        return Ok(Ran::default());
    }
    if !take_lease(b, instance, now_ms)? {
        return Ok(Ran { skipped: true, ..Ran::default() });
    }
    let system = system_person(b)?;
    let policy = read(b, |tx: &dyn ReadTx| Policy::from_meta(tx.meta(POLICY_KEY)?.as_deref()))?;
    let calendar = DistrictCalendar::default();
    let mut ran = Ran::default();
    for doc in docs {
        ran.checked += 1;
        let case = match read(b, |tx: &dyn ReadTx| load_case(tx, &doc)) {
            Ok((_, case)) => case,
            Err(e) => {
                // A damaged case waits for no rule: shown as damaged on its page.
                tracing::warn!(case = %doc, error = %e, "escalation: case unreadable");
                write(b, |tx: &dyn WriteTx| tx.set_escalation_due(&doc, None))?;
                continue;
            }
        };
        let (due, mut next) = due_now(pending(&doc, &case, &policy, &calendar), now_ms);
        for step in due {
            let action = ConsoleAction::Automatic { id: step.id, kind: step.kind.clone() };
            match ConsoleStore::act(b, &system, &doc, action, now_ms) {
                Ok(()) => {
                    ran.applied += 1;
                    tracing::info!(case = %doc, rule = %step.rule.text(), "escalation rule applied");
                }
                Err(e) => {
                    ran.failed += 1;
                    tracing::warn!(case = %doc, rule = %step.rule.text(), error = %e, "escalation rule not applied; trying again later");
                    let again = now_ms + RETRY_MS;
                    next = Some(next.map_or(again, |n| n.min(again)));
                }
            }
        }
        write(b, |tx: &dyn WriteTx| tx.set_escalation_due(&doc, next))?;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_and_write_as_text_and_bad_text_says_why() {
        let rules = parse_rules("not_started 4h urge\n\n  overdue 1d street\noverdue 3d district").expect("rules");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules_text(&rules), "not_started 4h urge\noverdue 1d street\noverdue 3d district");
        assert_eq!(
            rules[1],
            Rule { when: Trigger::Overdue, amount: 1, days: true, then: Step::Escalate(Level::Street) }
        );
        for bad in
            ["overdue 1d", "late 1d urge", "overdue 1w urge", "overdue xd urge", "overdue 0h urge", "overdue 2h boss"]
        {
            let e = parse_rules(bad).expect_err(bad);
            assert_eq!(e.line, 1, "{bad}");
        }
        let json = serde_json::to_string(&Policy::default()).expect("json");
        assert_eq!(Policy::from_meta(Some(&json)).expect("policy"), Policy::default());
        assert!(Policy::from_meta(Some("{")).is_err());
    }

    #[test]
    fn a_step_id_is_the_same_everywhere_and_differs_by_case_dispatch_and_rule() {
        let rules = parse_rules("overdue 1d street\noverdue 3d district").expect("rules");
        let d1 = EventId::generate();
        let d2 = EventId::generate();
        assert_eq!(step_id("c", &d1, &rules[0]), step_id("c", &d1, &rules[0]));
        assert_ne!(step_id("c", &d1, &rules[0]), step_id("c", &d1, &rules[1]));
        assert_ne!(step_id("c", &d1, &rules[0]), step_id("c", &d2, &rules[0]));
        assert_ne!(step_id("c", &d1, &rules[0]), step_id("d", &d1, &rules[0]));
    }
}
