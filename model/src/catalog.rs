//! Reference data (which the server owns and sends to devices behind a catalog version) and the
//! identity a store is opened with.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::geo::Polygon;
use crate::ids::{CategoryId, DepartmentId, DeviceId, GridId, PointId, UserId};

/// What a person may do. The role table in [`crate::lifecycle`] says which transitions each
/// role may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Worker,
    Supervisor,
    DepartmentHandler,
    Administrator,
}

impl Role {
    /// The name used on the wire, in the server's store and across the FFI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Supervisor => "supervisor",
            Role::DepartmentHandler => "department_handler",
            Role::Administrator => "administrator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Worker, Role::Supervisor, Role::DepartmentHandler, Role::Administrator]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// Who is acting: written into every lifecycle event and record, so every change is attributable
/// to an enrolled person on an enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: UserId,
    pub role: Role,
    pub device: DeviceId,
    /// The handler's department; `None` for other roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<DepartmentId>,
}

/// A fixed point a patrol checks in at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatrolPoint {
    pub id: PointId,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
}

/// A grid, with its place in the district's hierarchy (street → community → grid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub id: GridId,
    pub name: String,
    pub community: String,
    pub street: String,
    pub boundary: Polygon,
    pub points: Vec<PatrolPoint>,
}

/// A case category; its deadline is the default given at dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: CategoryId,
    /// Names by language tag ("zh", "en").
    pub names: BTreeMap<String, String>,
    pub default_deadline_hours: u32,
    /// Retired categories stay readable on old cases but are not offered for new ones.
    #[serde(default)]
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Department {
    pub id: DepartmentId,
    pub name: String,
}

/// Everything a device needs to validate what a worker enters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Catalog {
    pub version: u64,
    pub grids: Vec<Grid>,
    pub categories: Vec<Category>,
    pub departments: Vec<Department>,
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn role_names_are_the_serde_names() {
        for r in [Role::Worker, Role::Supervisor, Role::DepartmentHandler, Role::Administrator] {
            assert_eq!(serde_json::to_string(&r).expect("json"), format!("\"{}\"", r.as_str()));
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("boss"), None);
    }
}
