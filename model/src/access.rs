//! Who may change which case: the one write-authorization rule, shared by the phone (which makes
//! a case it may not change read-only before anyone edits it) and the server (which quarantines a
//! change that breaks it). docs/SECURITY.md lists every write path and where it asks this module.
//!
//! A case belongs to scopes ([`case_scopes`]): the grids it was filed under or lies in, the
//! departments it was dispatched to, its reporter and every user assigned to it. A person sees
//! scopes ([`Subject::scopes`]): their grids (a community or street stands for the grids placed in
//! it, expanded by the server), their department, and `user:<themselves>`. The rule:
//!
//! - an administrator may change any case;
//! - a device may change a case it created (the change that created the document came from it);
//! - anyone may change a case that shares a scope with what they see.
//!
//! Everything else is refused with [`WriteDenied`], which names what the case belongs to so an
//! administrator reading the quarantine can tell a worker moved off a grid from an attack.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Role};
use crate::doc::CaseDoc;
use crate::ids::{DepartmentId, DeviceId, GridId, UserId};
use crate::lifecycle::{Assignee, CaseState, EventKind};

/// A scope a case belongs to, or a person sees. On the wire and in the server's store it is the
/// text `grid:ID`, `department:ID`, `user:ID`, or an area a person is given, `community:NAME` /
/// `street:NAME`, which the server expands to the grids placed in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    Grid(GridId),
    Department(DepartmentId),
    User(UserId),
    Community(String),
    Street(String),
}

/// Text that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a scope: use grid:ID, community:NAME, street:NAME, department:ID or user:ID")]
pub struct BadScope {
    pub text: String,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, BadScope> {
        let bad = || BadScope { text: text.to_owned() };
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(bad());
        }
        Ok(match kind {
            "grid" => Scope::Grid(GridId::from(name)),
            "department" => Scope::Department(DepartmentId::from(name)),
            "user" => Scope::User(UserId::from(name)),
            "community" => Scope::Community(name.to_owned()),
            "street" => Scope::Street(name.to_owned()),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Grid(g) => write!(f, "grid:{g}"),
            Scope::Department(d) => write!(f, "department:{d}"),
            Scope::User(u) => write!(f, "user:{u}"),
            Scope::Community(c) => write!(f, "community:{c}"),
            Scope::Street(s) => write!(f, "street:{s}"),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = BadScope;
    fn try_from(s: String) -> Result<Self, BadScope> {
        Scope::parse(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.to_string()
    }
}

/// The scopes a case belongs to: every grid it was filed under or lies in (`grids`, from its
/// document and the catalog's polygons), every department it was dispatched to, its reporter and
/// every user assigned to it. The server keeps these as the case's membership; the phone derives
/// them from the document it holds.
pub fn case_scopes<'a>(grids: impl IntoIterator<Item = &'a GridId>, state: &CaseState) -> BTreeSet<Scope> {
    let mut scopes: BTreeSet<Scope> = grids.into_iter().map(|g| Scope::Grid(g.clone())).collect();
    for a in &state.assignees {
        scopes.insert(match a {
            Assignee::Department(d) => Scope::Department(d.clone()),
            Assignee::User(u) => Scope::User(u.clone()),
        });
    }
    if let Some(r) = &state.reporter {
        scopes.insert(Scope::User(r.clone()));
    }
    scopes
}

/// Who wants to change a case, with the scopes they see *now* (areas already expanded to grids;
/// `user:<themselves>` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub device: DeviceId,
    pub user: UserId,
    pub role: Role,
    pub scopes: BTreeSet<Scope>,
}

impl Subject {
    /// A subject seeing `scopes` plus their own `user:` scope.
    pub fn new(device: DeviceId, user: UserId, role: Role, scopes: impl IntoIterator<Item = Scope>) -> Subject {
        let mut scopes: BTreeSet<Scope> = scopes.into_iter().collect();
        scopes.insert(Scope::User(user.clone()));
        Subject { device, user, role, scopes }
    }
}

/// What the rule needs to know of the case being changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseAccess {
    /// The scopes the case belongs to ([`case_scopes`]; on the server, its membership).
    pub scopes: BTreeSet<Scope>,
    /// The device whose change created the case, when known.
    pub created_by: Option<DeviceId>,
}

/// What the rule needs of a case, as a replica holding its document sees it (the phone): its
/// grids — every value of its grid field, and the first grid (in catalog order, as the server
/// routes it) its location lies in — its departments, reporter and assignees, and the device
/// whose report created it. The server reads the same from its membership rows, which only
/// grow, so a phone is never more permissive than the server.
pub fn access_from_document(case: &CaseDoc, catalog: &Catalog) -> CaseAccess {
    let mut grids: Vec<GridId> = vec![case.grid.value.clone()];
    grids.extend(case.grid.conflicts.iter().cloned());
    for loc in std::iter::once(&case.location.value).chain(&case.location.conflicts) {
        if let Some(g) = catalog.grids.iter().find(|g| g.boundary.contains(loc.lat, loc.lon)) {
            grids.push(g.id.clone());
        }
    }
    let created_by = case
        .timeline
        .entries
        .iter()
        .find(|e| matches!(e.event.kind, EventKind::Report))
        .map(|e| e.event.actor.device.clone());
    CaseAccess { scopes: case_scopes(&grids, &case.timeline.state), created_by }
}

/// Why a change to a case is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteDenied {
    #[error("{user} may not change this case: it belongs to {}, none of which {user} sees", list(case_scopes))]
    OutOfScope { user: UserId, case_scopes: Vec<String> },
}

fn list(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "no scope".to_owned()
    } else {
        scopes.join(", ")
    }
}

/// Whether `subject` may change the case: the rule in this module's documentation.
pub fn may_change(subject: &Subject, case: &CaseAccess) -> Result<(), WriteDenied> {
    if subject.role == Role::Administrator {
        return Ok(());
    }
    if case.created_by.as_ref() == Some(&subject.device) {
        return Ok(());
    }
    if case.scopes.iter().any(|s| subject.scopes.contains(s)) {
        return Ok(());
    }
    Err(WriteDenied::OutOfScope {
        user: subject.user.clone(),
        case_scopes: case.scopes.iter().map(Scope::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(device: &str, user: &str, grid: &str) -> Subject {
        Subject::new(DeviceId::from(device), UserId::from(user), Role::Worker, [Scope::Grid(GridId::from(grid))])
    }

    fn case(scopes: &[&str], created_by: Option<&str>) -> CaseAccess {
        CaseAccess {
            scopes: scopes.iter().map(|s| Scope::parse(s).expect("scope")).collect(),
            created_by: created_by.map(DeviceId::from),
        }
    }

    #[test]
    fn a_worker_may_change_cases_in_their_grid_and_their_own_but_not_another_grid() {
        let w = worker("d1", "w1", "g1");
        assert_eq!(may_change(&w, &case(&["grid:g1", "user:w9"], None)), Ok(()));
        assert_eq!(may_change(&w, &case(&["grid:g7", "user:w1"], None)), Ok(()), "reported by them");
        assert_eq!(may_change(&w, &case(&["grid:g7"], Some("d1"))), Ok(()), "created on this device");
        let denied = may_change(&w, &case(&["grid:g7", "user:w7"], Some("d7"))).expect_err("another grid");
        assert_eq!(
            denied,
            WriteDenied::OutOfScope { user: UserId::from("w1"), case_scopes: vec!["grid:g7".into(), "user:w7".into()] }
        );
        assert!(denied.to_string().contains("grid:g7"), "{denied}");
    }

    #[test]
    fn a_handler_may_change_what_was_dispatched_to_their_department_and_an_administrator_anything() {
        let h = Subject::new(
            DeviceId::from("d2"),
            UserId::from("h1"),
            Role::DepartmentHandler,
            [Scope::Department(DepartmentId::from("police"))],
        );
        assert_eq!(may_change(&h, &case(&["grid:g1", "department:police"], None)), Ok(()));
        assert!(may_change(&h, &case(&["grid:g1", "department:fire"], None)).is_err());
        let admin = Subject::new(DeviceId::from("d3"), UserId::from("a"), Role::Administrator, []);
        assert_eq!(may_change(&admin, &case(&["grid:g1"], None)), Ok(()));
    }

    #[test]
    fn a_case_in_no_scope_is_changed_only_by_its_creator() {
        let w = worker("d1", "w1", "g1");
        assert!(may_change(&w, &case(&[], None)).is_err());
        assert_eq!(may_change(&w, &case(&[], Some("d1"))), Ok(()));
    }

    #[test]
    fn scopes_parse_from_their_text_and_refuse_anything_else() {
        for s in ["grid:g-1", "department:police", "user:w1", "community:东湖", "street:Main"] {
            assert_eq!(Scope::parse(s).expect(s).to_string(), s);
        }
        for s in ["grid:", "grid", "district:x", "", "user:a\nb"] {
            assert!(Scope::parse(s).is_err(), "{s:?}");
        }
        let json = serde_json::to_string(&Scope::Grid(GridId::from("g1"))).expect("json");
        assert_eq!(json, "\"grid:g1\"");
        assert!(serde_json::from_str::<Scope>("\"nope\"").is_err());
    }

    #[test]
    fn a_case_belongs_to_its_grids_departments_reporter_and_assignees() {
        let mut state = crate::lifecycle::fold(vec![]).state;
        state.reporter = Some(UserId::from("w1"));
        state.assignees = [Assignee::Department(DepartmentId::from("police")), Assignee::User(UserId::from("w2"))]
            .into_iter()
            .collect();
        let got: Vec<String> = case_scopes([&GridId::from("g1")], &state).iter().map(Scope::to_string).collect();
        assert_eq!(got, ["grid:g1", "department:police", "user:w1", "user:w2"]);
    }
}
