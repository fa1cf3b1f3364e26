//! The console's pages: view models built from the store's answers, rendered by askama templates
//! compiled into the binary (`sync-server/templates/console/`).

use askama::Template;
use gridwork_model::catalog::{Catalog, Role};
use gridwork_model::doc::keys;
use gridwork_model::ids::DepartmentId;
use gridwork_model::lifecycle::{self, EventKind, Level, RejectReason, StatusView, Verdict};
use gridwork_model::time::DistrictCalendar;

use super::i18n::Lang;
use super::map;
use crate::store::console::{CaseFilter, CaseQueue, CaseView, ConsoleUser};

mod admin;
mod case;
mod queue;
mod reports;

pub use admin::*;
pub use case::*;
pub use queue::*;
pub use reports::*;

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub lang: Lang,
    pub title: String,
    pub user: Option<String>,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// Show the administration link.
    pub admin: bool,
    /// The district whose cases the pages show, in a city of districts.
    pub district: Option<String>,
    /// A city-level person: show the districts link.
    pub city: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub user: String,
}

#[derive(Debug, Template)]
#[template(path = "console/districts.html")]
pub struct DistrictsPage {
    pub chrome: Chrome,
    pub districts: Vec<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The query string of a filter, with `status` and `page` replaced (and no page position).
pub fn filter_query(f: &CaseFilter, status: &str, page: u32) -> String {
    let mut q = vec![];
    for (k, v) in [
        ("status", status),
        ("area", f.area.as_str()),
        ("category", f.category.as_str()),
        ("department", f.department.as_str()),
        ("overdue", f.overdue.as_str()),
        ("from", f.from.as_str()),
        ("to", f.to.as_str()),
        ("q", f.q.as_str()),
    ] {
        if !v.is_empty() {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if page > 1 {
        q.push(format!("page={page}"));
    }
    q.join("&")
}

pub fn status_label(lang: Lang, status: &str) -> String {
    lang.t(&format!("st_{status}")).to_owned()
}

fn flag_label(lang: Lang, flag: &str) -> String {
    lang.t(&format!("fl_{flag}")).to_owned()
}

pub(super) fn category_name(catalog: &Catalog, lang: Lang, id: &str) -> String {
    catalog
        .categories
        .iter()
        .find(|c| c.id.0 == id)
        .and_then(|c| c.names.get(lang.code()).or_else(|| c.names.values().next()).cloned())
        .unwrap_or_else(|| id.to_owned())
}

pub(super) fn department_name(catalog: &Catalog, id: &str) -> String {
    catalog.departments.iter().find(|d| d.id.0 == id).map(|d| d.name.clone()).unwrap_or_else(|| id.to_owned())
}

fn grid_name(catalog: &Catalog, id: &str) -> String {
    catalog.grids.iter().find(|g| g.id.0 == id).map(|g| g.name.clone()).unwrap_or_else(|| id.to_owned())
}

fn minute(calendar: &DistrictCalendar, ms: Option<i64>) -> String {
    ms.map(|m| calendar.minute_of(m)).unwrap_or_default()
}

/// The areas a person may filter by: the grids they see, with those grids' communities and
/// streets (administrators: all).
fn area_choices(catalog: &Catalog, user: &ConsoleUser, selected: &str) -> Vec<Choice> {
    let mut streets = std::collections::BTreeSet::new();
    let mut communities = std::collections::BTreeSet::new();
    let mut grids = vec![];
    for g in catalog.grids.iter().filter(|g| user.sees_grid(g)) {
        streets.insert(g.street.clone());
        communities.insert(g.community.clone());
        grids.push((format!("grid:{}", g.id), g.name.clone()));
    }
    let mut out = vec![];
    out.extend(streets.into_iter().map(|s| (format!("street:{s}"), s)));
    out.extend(communities.into_iter().map(|c| (format!("community:{c}"), format!("· {c}"))));
    out.extend(grids.into_iter().map(|(v, n)| (v, format!("· · {n}"))));
    out.into_iter().map(|(value, label)| Choice { selected: value == selected, value, label }).collect()
}

/// Any table as CSV, header translated; formula-like cells defused.
pub fn table_csv(lang: Lang, header: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, crate::error::ServerError> {
    let fail = |e: csv::Error| crate::error::ServerError::Internal(format!("writing CSV: {e}"));
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(header.iter().map(|h| lang.t(h))).map_err(fail)?;
    for r in rows {
        w.write_record(r.iter().map(|c| defuse(c))).map_err(fail)?;
    }
    w.into_inner().map_err(|e| crate::error::ServerError::Internal(format!("writing CSV: {e}")))
}

/// A cell a spreadsheet would run as a formula gets a leading `'`.
fn defuse(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_defused_and_quotes_escaped() {
        let rows = vec![vec!["=HYPERLINK(\"x\")".to_owned(), "楼道, 三楼".to_owned(), "-5".to_owned()]];
        let text = String::from_utf8(table_csv(Lang::En, &["title", "note", "id"], &rows).expect("csv")).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("Title,Note,id"));
        assert_eq!(lines.next(), Some("\"'=HYPERLINK(\"\"x\"\")\",\"楼道, 三楼\",'-5"));
    }
}
