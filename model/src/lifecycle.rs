//! The case lifecycle: events, the role table, and the fold that derives a case's state.
//!
//! A case's history is a set of immutable events. Each carries its id, the ids of the events its
//! author had seen (its parents) and a Lamport number. Automerge stores them in a map keyed by
//! id, so concurrent events never overwrite each other and their order is not Automerge's hidden
//! actor-id order: this module alone decides what they mean.
//!
//! The fold is defined on the event graph, not on arrival order, so every replica holding the
//! same events derives the same state (see docs/adr/0003-lifecycle-merge-rule.md):
//!
//! 1. Events are ordered topologically, ties broken by (Lamport, id).
//! 2. An event is *valid* if the role table allows it in the state its author saw — the fold of
//!    its ancestors. Invalid events are kept and flagged, never dropped; unknown kinds (from a
//!    newer app) are kept and skipped.
//! 3. Status comes from *decisions* (events that move the status). The current decisions are the
//!    valid ones no other decision has superseded — by having seen it, or by having seen an
//!    identical decision (same target from the same prior decisions, e.g. two supervisors
//!    accepting at once). If they disagree, the case is *contested* and shows every candidate
//!    until a `settle` event that has seen them all picks one.
//! 4. Everything else (departments dispatched and reported, urges, assignees, the visit) is
//!    derived from the valid events in the graph, so it commutes.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use crate::catalog::{Actor, Role};
use crate::ids::{DepartmentId, EventId, UserId};
use crate::time::ClockStamp;

/// Where a case stands in the district's five-step chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Reported,
    Accepted,
    Rejected,
    Dispatched,
    InProgress,
    /// Derived: every dispatched department has reported.
    Handled,
    FollowedUp,
    Closed,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Reported,
        Status::Accepted,
        Status::Rejected,
        Status::Dispatched,
        Status::InProgress,
        Status::Handled,
        Status::FollowedUp,
        Status::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reported => "reported",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Dispatched => "dispatched",
            Status::InProgress => "in_progress",
            Status::Handled => "handled",
            Status::FollowedUp => "followed_up",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Open cases can still be urged, escalated and noted.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Rejected | Status::Closed)
    }

    /// Statuses in which a deadline is running (a department owes work).
    pub fn awaits_handling(self) -> bool {
        matches!(self, Status::Dispatched | Status::InProgress)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    Duplicate,
    OutOfScope,
}

/// The command levels a case can be escalated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Community,
    Street,
    District,
}

/// What an event does. Serialized with a `kind` tag; kinds this build does not know deserialize
/// as [`EventKind::Unknown`] and are skipped by the fold (the raw JSON stays in the document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Report,
    Accept {
        #[serde(default)]
        note: String,
    },
    Reject {
        reason: RejectReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duplicate_of: Option<String>,
        #[serde(default)]
        note: String,
    },
    Dispatch {
        departments: Vec<DepartmentId>,
        deadline_ms: i64,
    },
    Start {
        department: DepartmentId,
    },
    HandlerReport {
        department: DepartmentId,
        #[serde(default)]
        note: String,
        #[serde(default)]
        evidence: Vec<String>,
    },
    Note {
        text: String,
    },
    FollowUp {
        satisfaction: u8,
        #[serde(default)]
        note: String,
    },
    Close {
        #[serde(default)]
        note: String,
    },
    Return {
        reason: String,
    },
    Urge {
        #[serde(default)]
        note: String,
    },
    Escalate {
        to: Level,
        #[serde(default)]
        note: String,
    },
    Assign {
        user: UserId,
    },
    Unassign {
        user: UserId,
    },
    /// Ends a contest by choosing one of the contending decisions.
    Settle {
        chosen: EventId,
    },
    #[serde(other)]
    Unknown,
}

/// The kinds, without their data: the role table's first column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindTag {
    Report,
    Accept,
    Reject,
    Dispatch,
    Start,
    HandlerReport,
    Note,
    FollowUp,
    Close,
    Return,
    Urge,
    Escalate,
    Assign,
    Unassign,
    Settle,
}

impl EventKind {
    pub fn tag(&self) -> Option<KindTag> {
        Some(match self {
            EventKind::Report => KindTag::Report,
            EventKind::Accept { .. } => KindTag::Accept,
            EventKind::Reject { .. } => KindTag::Reject,
            EventKind::Dispatch { .. } => KindTag::Dispatch,
            EventKind::Start { .. } => KindTag::Start,
            EventKind::HandlerReport { .. } => KindTag::HandlerReport,
            EventKind::Note { .. } => KindTag::Note,
            EventKind::FollowUp { .. } => KindTag::FollowUp,
            EventKind::Close { .. } => KindTag::Close,
            EventKind::Return { .. } => KindTag::Return,
            EventKind::Urge { .. } => KindTag::Urge,
            EventKind::Escalate { .. } => KindTag::Escalate,
            EventKind::Assign { .. } => KindTag::Assign,
            EventKind::Unassign { .. } => KindTag::Unassign,
            EventKind::Settle { .. } => KindTag::Settle,
            EventKind::Unknown => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self.tag() {
            Some(t) => t.name(),
            None => "unknown",
        }
    }
}

impl KindTag {
    pub fn name(self) -> &'static str {
        match self {
            KindTag::Report => "report",
            KindTag::Accept => "accept",
            KindTag::Reject => "reject",
            KindTag::Dispatch => "dispatch",
            KindTag::Start => "start",
            KindTag::HandlerReport => "handler_report",
            KindTag::Note => "note",
            KindTag::FollowUp => "follow_up",
            KindTag::Close => "close",
            KindTag::Return => "return",
            KindTag::Urge => "urge",
            KindTag::Escalate => "escalate",
            KindTag::Assign => "assign",
            KindTag::Unassign => "unassign",
            KindTag::Settle => "settle",
        }
    }
}

/// One immutable lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// The events its author had seen (the heads of the event graph at the time).
    pub parents: Vec<EventId>,
    pub lamport: u64,
    pub actor: Actor,
    pub clock: ClockStamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

use Status as S;

const OPEN: &[Status] = &[S::Reported, S::Accepted, S::Dispatched, S::InProgress, S::Handled, S::FollowedUp];

/// The role table: which role may make which kind of event from which status. `Report` starts a
/// case (no prior status); `Settle` is allowed only while the case is contested.
pub const ROLE_TABLE: &[(KindTag, &[Role], &[Status])] = &[
    (KindTag::Report, &[Role::Worker, Role::Supervisor], &[]),
    (KindTag::Accept, &[Role::Supervisor], &[S::Reported]),
    (KindTag::Reject, &[Role::Supervisor], &[S::Reported]),
    (KindTag::Dispatch, &[Role::Supervisor], &[S::Accepted, S::Dispatched, S::InProgress]),
    (KindTag::Start, &[Role::DepartmentHandler], &[S::Dispatched]),
    (KindTag::HandlerReport, &[Role::DepartmentHandler], &[S::Dispatched, S::InProgress, S::Handled]),
    (KindTag::Note, &[Role::Worker, Role::Supervisor, Role::DepartmentHandler], OPEN),
    (KindTag::FollowUp, &[Role::Worker], &[S::Handled]),
    (KindTag::Close, &[Role::Supervisor], &[S::FollowedUp]),
    (KindTag::Return, &[Role::Supervisor], &[S::Handled, S::FollowedUp]),
    (KindTag::Urge, &[Role::Supervisor], OPEN),
    (KindTag::Escalate, &[Role::Supervisor], OPEN),
    (KindTag::Assign, &[Role::Supervisor], OPEN),
    (KindTag::Unassign, &[Role::Supervisor], OPEN),
    (KindTag::Settle, &[Role::Supervisor], &[]),
];

fn table_row(tag: KindTag) -> (&'static [Role], &'static [Status]) {
    ROLE_TABLE.iter().find(|(t, _, _)| *t == tag).map(|(_, roles, from)| (*roles, *from)).unwrap_or((&[], &[]))
}

/// The status as the fold sees it: settled, or contested between several decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StatusView {
    /// No report yet (an empty or foreign document).
    Empty,
    Settled {
        status: Status,
    },
    Contested {
        candidates: Vec<Candidate>,
    },
}

/// One side of a contest: the decision event and the status it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub event: EventId,
    pub status: Status,
}

impl StatusView {
    /// The statuses a role-table check considers: one, or every candidate's.
    pub fn statuses(&self) -> Vec<Status> {
        match self {
            StatusView::Empty => vec![],
            StatusView::Settled { status } => vec![*status],
            StatusView::Contested { candidates } => candidates.iter().map(|c| c.status).collect(),
        }
    }

    pub fn is_contested(&self) -> bool {
        matches!(self, StatusView::Contested { .. })
    }

    /// A single word for lists and indexes.
    pub fn label(&self) -> &'static str {
        match self {
            StatusView::Empty => "empty",
            StatusView::Settled { status } => status.as_str(),
            StatusView::Contested { .. } => "contested",
        }
    }
}

/// Somebody or some department responsible for a case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Assignee {
    User(UserId),
    Department(DepartmentId),
}

/// The follow-up visit to the resident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    pub satisfaction: u8,
    pub note: String,
    pub by: UserId,
}

/// What the fold derives from a case's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseState {
    pub status: StatusView,
    pub reporter: Option<UserId>,
    /// Departments dispatched to, with each one's deadline (Unix ms).
    pub dispatched: BTreeMap<DepartmentId, i64>,
    /// Departments that reported their part done since the last return.
    pub reported: BTreeSet<DepartmentId>,
    /// The earliest deadline of a department that has not reported yet.
    pub deadline_ms: Option<i64>,
    pub urges: u32,
    pub escalated_to: Option<Level>,
    pub visit: Option<Visit>,
    /// Users explicitly assigned and departments dispatched to. The reporter is not an assignee:
    /// their own case is theirs again when it awaits the follow-up visit, derived from the status.
    pub assignees: BTreeSet<Assignee>,
}

impl CaseState {
    /// Overdue is derived, never stored: a deadline has passed while a department owes work.
    pub fn is_overdue(&self, now_ms: i64) -> bool {
        let waiting = self.status.statuses().into_iter().any(Status::awaits_handling);
        waiting && self.deadline_ms.is_some_and(|d| d < now_ms)
    }
}

/// What the fold made of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Applied,
    /// Kept, shown, and ignored by the fold: not allowed in the state its author saw.
    Invalid {
        reason: String,
    },
    /// A kind from a newer app: kept and skipped.
    Unknown,
    /// Names a parent this replica does not hold (never produced by a correct device).
    MissingParent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub event: Event,
    pub verdict: Verdict,
}

/// The fold's output: the derived state and every event in order with its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub state: CaseState,
    pub entries: Vec<TimelineEntry>,
}

/// Why an event is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub from: String,
    pub role: Role,
    pub reason: String,
}

/// Checks an event against the role table and the state its author sees. Used by the fold and by
/// the store before it writes, so a worker gets a typed error instead of a flagged event.
pub fn check(kind: &EventKind, actor: &Actor, seen: &CaseState) -> Result<(), Refusal> {
    let refuse = |reason: &str| Refusal {
        kind: kind.name(),
        from: seen.status.label().to_owned(),
        role: actor.role,
        reason: reason.to_owned(),
    };
    let Some(tag) = kind.tag() else {
        return Err(refuse("unknown event kind"));
    };
    let (roles, from) = table_row(tag);
    if !roles.contains(&actor.role) {
        return Err(refuse("role may not do this"));
    }
    match (&seen.status, tag) {
        (StatusView::Empty, KindTag::Report) => return Ok(()),
        (_, KindTag::Report) => return Err(refuse("the case was already reported")),
        (StatusView::Empty, _) => return Err(refuse("the case has no report")),
        (StatusView::Contested { candidates }, KindTag::Settle) => {
            let EventKind::Settle { chosen } = kind else { return Err(refuse("malformed settle")) };
            return if candidates.iter().any(|c| c.event == *chosen) {
                Ok(())
            } else {
                Err(refuse("the chosen event is not one of the contenders"))
            };
        }
        (_, KindTag::Settle) => return Err(refuse("the case is not contested")),
        (StatusView::Contested { .. }, _) if is_decision_tag(tag) => {
            return Err(refuse("the case is contested: settle it first"));
        }
        _ => {}
    }
    if !seen.status.statuses().iter().any(|s| from.contains(s)) {
        return Err(refuse("not allowed from this status"));
    }
    match kind {
        EventKind::Start { department } | EventKind::HandlerReport { department, .. } => {
            if actor.department.as_ref() != Some(department) {
                return Err(refuse("a handler acts only for their own department"));
            }
            if !seen.dispatched.contains_key(department) {
                return Err(refuse("the department was not dispatched"));
            }
        }
        EventKind::Dispatch { departments, .. } if departments.is_empty() => {
            return Err(refuse("a dispatch needs at least one department"));
        }
        EventKind::FollowUp { satisfaction, .. } if !(1..=5).contains(satisfaction) => {
            return Err(refuse("satisfaction must be 1 to 5"));
        }
        _ => {}
    }
    Ok(())
}

/// Kinds that can move the status (whether a given event does also depends on the status its
/// author saw: a dispatch from `accepted` does, an extra dispatch later does not).
fn is_decision_tag(tag: KindTag) -> bool {
    matches!(
        tag,
        KindTag::Report
            | KindTag::Accept
            | KindTag::Reject
            | KindTag::Dispatch
            | KindTag::Start
            | KindTag::FollowUp
            | KindTag::Close
            | KindTag::Return
            | KindTag::Settle
    )
}

/// The status a valid event moves the case to, if it is a decision.
fn decision_target(kind: &EventKind, seen: &CaseState, targets: &HashMap<EventId, Status>) -> Option<Status> {
    Some(match kind {
        EventKind::Report => S::Reported,
        EventKind::Accept { .. } => S::Accepted,
        EventKind::Reject { .. } => S::Rejected,
        // Only the first dispatch moves the status; later ones add departments.
        EventKind::Dispatch { .. } if seen.status == (StatusView::Settled { status: S::Accepted }) => S::Dispatched,
        EventKind::Start { .. } => S::InProgress,
        EventKind::FollowUp { .. } => S::FollowedUp,
        EventKind::Close { .. } => S::Closed,
        EventKind::Return { .. } => S::InProgress,
        EventKind::Settle { chosen } => *targets.get(chosen)?,
        _ => return None,
    })
}

/// Per-event facts the fold computes once, in topological order.
struct Node {
    valid: bool,
    /// For valid decisions: the target and the decisions current when it was made.
    decision: Option<(Status, Vec<usize>)>,
    /// Ancestors (strict), as a membership vector over topological positions.
    ancestors: Vec<bool>,
}

/// Folds a case's events into its state. Deterministic in the set of events: the input order
/// does not matter.
pub fn fold(events: impl IntoIterator<Item = Event>) -> Timeline {
    // Deduplicate by id: an event is immutable, so a repeat is the same event.
    let mut by_id: BTreeMap<EventId, Event> = BTreeMap::new();
    for e in events {
        by_id.entry(e.id).or_insert(e);
    }
    let events: Vec<Event> = by_id.into_values().collect();
    let index: HashMap<EventId, usize> = events.iter().enumerate().map(|(i, e)| (e.id, i)).collect();

    // Kahn's algorithm, always taking the smallest (lamport, id) among ready events.
    let mut missing = vec![false; events.len()];
    let mut pending = vec![0usize; events.len()];
    let mut children: Vec<Vec<usize>> = vec![vec![]; events.len()];
    for (i, e) in events.iter().enumerate() {
        for p in &e.parents {
            match index.get(p) {
                Some(&pi) if pi != i => {
                    pending[i] += 1;
                    children[pi].push(i);
                }
                _ => missing[i] = true,
            }
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<(u64, EventId, usize)>> = BinaryHeap::new();
    for (i, e) in events.iter().enumerate() {
        if pending[i] == 0 {
            ready.push(std::cmp::Reverse((e.lamport, e.id, i)));
        }
    }
    let mut order = Vec::with_capacity(events.len());
    while let Some(std::cmp::Reverse((_, _, i))) = ready.pop() {
        order.push(i);
        for &c in &children[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(std::cmp::Reverse((events[c].lamport, events[c].id, c)));
            }
        }
    }
    // Events caught in a cycle (only a forged document has one) come last, flagged.
    let in_cycle: Vec<usize> = (0..events.len()).filter(|i| !order.contains(i)).collect();

    // Work in topological positions from here on.
    let n = order.len();
    let pos_of: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let ordered: Vec<&Event> = order.iter().map(|&i| &events[i]).collect();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(n);
    let mut targets: HashMap<EventId, Status> = HashMap::new();

    for (p, e) in ordered.iter().enumerate() {
        let mut ancestors = vec![false; n];
        let mut orphan = missing[order[p]];
        for parent in &e.parents {
            if let Some(pp) = index.get(parent).and_then(|i| pos_of.get(i)) {
                ancestors[*pp] = true;
                for (a, is_anc) in nodes[*pp].ancestors.iter().enumerate() {
                    if *is_anc {
                        ancestors[a] = true;
                    }
                }
                if matches!(verdicts[*pp], Verdict::MissingParent) {
                    orphan = true;
                }
            }
        }
        let (valid, decision, verdict) = if orphan {
            (false, None, Verdict::MissingParent)
        } else if e.kind.tag().is_none() {
            (false, None, Verdict::Unknown)
        } else {
            let seen = state_of(&ordered, &nodes, &ancestors);
            match check(&e.kind, &e.actor, &seen) {
                Ok(()) => {
                    let decision = decision_target(&e.kind, &seen, &targets).map(|t| {
                        let current = current_decisions(&ordered, &nodes, &ancestors);
                        (t, current)
                    });
                    (true, decision, Verdict::Applied)
                }
                Err(r) => {
                    (false, None, Verdict::Invalid { reason: format!("{} from {}: {}", r.kind, r.from, r.reason) })
                }
            }
        };
        if let Some((t, _)) = &decision {
            targets.insert(e.id, *t);
        }
        nodes.push(Node { valid, decision, ancestors });
        verdicts.push(verdict);
    }

    let all = vec![true; n];
    let state = state_of(&ordered, &nodes, &all);
    let mut entries: Vec<TimelineEntry> =
        ordered.iter().zip(verdicts).map(|(e, verdict)| TimelineEntry { event: (*e).clone(), verdict }).collect();
    for i in in_cycle {
        entries.push(TimelineEntry {
            event: events[i].clone(),
            verdict: Verdict::Invalid { reason: "part of a cycle of parents".into() },
        });
    }
    Timeline { state, entries }
}

/// The decisions in `mask` that no other decision in `mask` supersedes, as positions.
fn current_decisions(ordered: &[&Event], nodes: &[Node], mask: &[bool]) -> Vec<usize> {
    let decisions: Vec<usize> = (0..nodes.len())
        .filter(|&p| mask.get(p).copied().unwrap_or(false) && nodes[p].valid && nodes[p].decision.is_some())
        .collect();
    // For each decision x, the keys (target, prior decisions) of the decisions it has seen.
    let seen_keys: Vec<HashSet<(Status, &[usize])>> = decisions
        .iter()
        .map(|&x| {
            decisions
                .iter()
                .filter(|&&a| nodes[x].ancestors[a])
                .filter_map(|&a| nodes[a].decision.as_ref().map(|(t, prior)| (*t, prior.as_slice())))
                .collect()
        })
        .collect();
    let _ = ordered;
    decisions
        .iter()
        .copied()
        .filter(|&d| {
            let Some((t, prior)) = nodes[d].decision.as_ref() else { return false };
            let key = (*t, prior.as_slice());
            !decisions
                .iter()
                .enumerate()
                .any(|(xi, &x)| x != d && (nodes[x].ancestors[d] || seen_keys[xi].contains(&key)))
        })
        .collect()
}

/// Derives the state from the valid events in `mask` (a downward-closed set of positions).
fn state_of(ordered: &[&Event], nodes: &[Node], mask: &[bool]) -> CaseState {
    let inside = |p: usize| mask.get(p).copied().unwrap_or(false) && nodes[p].valid;
    let mut state = CaseState {
        status: StatusView::Empty,
        reporter: None,
        dispatched: BTreeMap::new(),
        reported: BTreeSet::new(),
        deadline_ms: None,
        urges: 0,
        escalated_to: None,
        visit: None,
        assignees: BTreeSet::new(),
    };
    // Returns (and unassigns) cancel only what their author had seen.
    let returns: Vec<usize> =
        (0..nodes.len()).filter(|&p| inside(p) && matches!(ordered[p].kind, EventKind::Return { .. })).collect();
    let cancelled_by_return = |p: usize| returns.iter().any(|&r| nodes[r].ancestors[p]);
    let mut assigned: BTreeMap<UserId, Vec<usize>> = BTreeMap::new();
    let mut unassigns: Vec<(UserId, usize)> = vec![];
    for p in (0..nodes.len()).filter(|&p| inside(p)) {
        let e = ordered[p];
        match &e.kind {
            EventKind::Report => {
                state.reporter.get_or_insert_with(|| e.actor.user.clone());
            }
            EventKind::Dispatch { departments, deadline_ms } => {
                for d in departments {
                    state.dispatched.insert(d.clone(), *deadline_ms);
                }
            }
            EventKind::HandlerReport { department, .. } if !cancelled_by_return(p) => {
                state.reported.insert(department.clone());
            }
            EventKind::FollowUp { satisfaction, note } if !cancelled_by_return(p) => {
                state.visit = Some(Visit { satisfaction: *satisfaction, note: note.clone(), by: e.actor.user.clone() });
            }
            EventKind::Urge { .. } => state.urges += 1,
            EventKind::Escalate { to, .. } => state.escalated_to = state.escalated_to.max(Some(*to)),
            EventKind::Assign { user } => assigned.entry(user.clone()).or_default().push(p),
            EventKind::Unassign { user } => unassigns.push((user.clone(), p)),
            _ => {}
        }
    }
    // Add wins: an assignment survives unless an unassign of that user has seen it.
    for (user, adds) in assigned {
        let live = adds.iter().any(|&a| !unassigns.iter().any(|(u, r)| *u == user && nodes[*r].ancestors[a]));
        if live {
            state.assignees.insert(Assignee::User(user));
        }
    }
    for d in state.dispatched.keys() {
        state.assignees.insert(Assignee::Department(d.clone()));
    }
    state.deadline_ms =
        state.dispatched.iter().filter(|(d, _)| !state.reported.contains(*d)).map(|(_, deadline)| *deadline).min();

    let current = current_decisions(ordered, nodes, mask);
    let mut candidates: Vec<Candidate> = current
        .iter()
        .filter_map(|&p| nodes[p].decision.as_ref().map(|(t, _)| Candidate { event: ordered[p].id, status: *t }))
        .collect();
    candidates.sort_by_key(|c| (c.status, c.event));
    let distinct: BTreeSet<Status> = candidates.iter().map(|c| c.status).collect();
    let all_reported = !state.dispatched.is_empty() && state.dispatched.keys().all(|d| state.reported.contains(d));
    let derive = |s: Status| if s.awaits_handling() && all_reported { S::Handled } else { s };
    state.status = match distinct.len() {
        0 => StatusView::Empty,
        1 => StatusView::Settled { status: derive(candidates[0].status) },
        _ => {
            for c in &mut candidates {
                c.status = derive(c.status);
            }
            StatusView::Contested { candidates }
        }
    };
    state
}

#[cfg(test)]
mod tests;
