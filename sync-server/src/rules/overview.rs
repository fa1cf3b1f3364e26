//! The leadership's picture of the district (ADR 29): what each case contributes to the overview
//! (its *facts*), written by the log-following pass next to its search terms, and the overview of
//! a period and an area read back as a few grouped queries.
//!
//! Why facts and not the documents: the overview counts tens of thousands of cases per request,
//! and the numbers it needs (when a case was reported and closed, whether a department finished in
//! time, how far it was escalated, the resident's satisfaction) live in each case's event history.
//! Folding 50,000 histories per page view is out of the question; one narrow row per case (and one
//! per department it was dispatched to), grouped by the store's SQL, answers within the console's
//! 50 ms. The facts trail the change log by one upkeep pass, as the search index does.
//!
//! A case counts once, under its current grid and category (a case moved between grids counts
//! where it is now). Periods are of the report's day in the district's time zone.

use std::collections::{BTreeMap, BTreeSet};

use gridwork_model::catalog::Catalog;
use gridwork_model::doc::CaseDoc;
use gridwork_model::lifecycle::{EventKind, Level, Status, StatusView, Verdict};
use gridwork_model::time::DistrictCalendar;

use crate::error::{Result, ServerError};
use crate::store::console::ConsoleUser;
use crate::store::port::{read, Backend, ReadTx};

/// What one case contributes to the overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFacts {
    pub reported_ms: i64,
    /// The report's local day, `YYYY-MM-DD`.
    pub day: String,
    pub grid_id: String,
    pub category_id: String,
    /// Whole hours from the report to its closure, once closed.
    pub closed_hours: Option<i64>,
    /// The deadline a department still owes work by, while the case waits on one.
    pub waiting_deadline_ms: Option<i64>,
    /// How far it was escalated: `community`, `street` or `district`.
    pub escalated_to: Option<String>,
    /// The follow-up visit's satisfaction, 1 to 5.
    pub satisfaction: Option<u8>,
    /// Each department dispatched to: its deadline and when it reported its part done.
    pub departments: Vec<DepartmentFact>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentFact {
    pub department: String,
    pub deadline_ms: i64,
    pub done_ms: Option<i64>,
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Community => "community",
        Level::Street => "street",
        Level::District => "district",
    }
}

/// A case's facts; `None` for a document with no report (nothing to count yet).
pub fn case_facts(case: &CaseDoc, calendar: &DistrictCalendar) -> Option<CaseFacts> {
    let state = &case.timeline.state;
    if matches!(state.status, StatusView::Empty) {
        return None;
    }
    let reported_ms = case.created_ms;
    // When each applied step happened, by the server's best estimate of the device's clock.
    let mut closed_ms = None;
    let mut done: BTreeMap<String, i64> = BTreeMap::new();
    for entry in &case.timeline.entries {
        if entry.verdict != Verdict::Applied {
            continue;
        }
        let at = entry.event.clock.estimated_ms();
        match &entry.event.kind {
            EventKind::Close { .. } => closed_ms = Some(at),
            EventKind::HandlerReport { department, .. } => {
                done.insert(department.0.clone(), at);
            }
            // A return sends the work back: what was done before it no longer counts.
            EventKind::Return { .. } => done.clear(),
            _ => {}
        }
    }
    let closed = matches!(state.status, StatusView::Settled { status: Status::Closed });
    let waiting = state.status.statuses().into_iter().any(Status::awaits_handling);
    let departments = state
        .dispatched
        .iter()
        .map(|(d, deadline)| DepartmentFact {
            department: d.0.clone(),
            deadline_ms: *deadline,
            done_ms: state.reported.contains(d).then(|| done.get(&d.0).copied()).flatten(),
        })
        .collect();
    Some(CaseFacts {
        reported_ms,
        day: calendar.day_of(reported_ms),
        grid_id: case.grid.value.0.clone(),
        category_id: case.category.value.0.clone(),
        closed_hours: closed.then(|| closed_ms.map(|c| (c - reported_ms).max(0) / 3_600_000)).flatten(),
        waiting_deadline_ms: if waiting { state.deadline_ms } else { None },
        escalated_to: state.escalated_to.map(|l| level_name(l).to_owned()),
        satisfaction: state.visit.as_ref().map(|v| v.satisfaction),
        departments,
    })
}

/// The rows a period and an area are read as (the store groups; `overview` makes the picture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsQuery {
    /// Cases in these grids (`None`: every case).
    pub grids: Option<Vec<String>>,
    /// Cases reported on these local days, `YYYY-MM-DD`, both included...
    pub from_day: String,
    pub to_day: String,
    /// ...which are these moments (for the departments' rows, kept by report time).
    pub from_ms: i64,
    pub to_ms: i64,
    /// "Overdue now" is judged at this moment.
    pub now_ms: i64,
}

/// The store's grouped answer to a [`FactsQuery`], each list from one covering index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactRows {
    /// (day, category, cases reported).
    pub by_day: Vec<(String, String, i64)>,
    /// (grid, cases reported, of them closed).
    pub by_grid: Vec<(String, i64, i64)>,
    /// (grid, escalation level or "" for none, cases waiting past their deadline now).
    pub overdue: Vec<(String, String, i64)>,
    /// (grid, satisfaction 1 to 5, follow-up visits).
    pub satisfaction: Vec<(String, i64, i64)>,
    /// (category, whole hours from report to closure, cases).
    pub closure_hours: Vec<(String, i64, i64)>,
    pub departments: Vec<DepartmentRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepartmentRow {
    pub department: String,
    pub dispatched: i64,
    pub done: i64,
    pub done_on_time: i64,
    /// Not done, deadline passed.
    pub overdue: i64,
}

/// Which part of the district an overview covers, and the parts it is broken into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Area {
    District,
    Street(String),
    Community(String),
}

impl Area {
    /// `""`/`district`, `street:NAME`, `community:NAME`.
    pub fn parse(s: &str) -> Result<Area> {
        match s.split_once(':') {
            None if s.is_empty() || s == "district" => Ok(Area::District),
            Some(("street", n)) if !n.is_empty() => Ok(Area::Street(n.to_owned())),
            Some(("community", n)) if !n.is_empty() => Ok(Area::Community(n.to_owned())),
            _ => {
                Err(ServerError::BadRequest(format!("unknown area {s:?}: use district, street:NAME or community:NAME")))
            }
        }
    }

    pub fn key(&self) -> String {
        match self {
            Area::District => "district".into(),
            Area::Street(n) => format!("street:{n}"),
            Area::Community(n) => format!("community:{n}"),
        }
    }

    /// Whether a grid lies in this area.
    pub fn holds(&self, g: &gridwork_model::catalog::Grid) -> bool {
        match self {
            Area::District => true,
            Area::Street(n) => &g.street == n,
            Area::Community(n) => &g.community == n,
        }
    }

    /// The name of the part of this area a grid lies in: streets of a district, communities of a
    /// street, grids of a community.
    fn part_of(&self, g: &gridwork_model::catalog::Grid) -> String {
        match self {
            Area::District => g.street.clone(),
            Area::Street(_) => g.community.clone(),
            Area::Community(_) => g.name.clone(),
        }
    }
}

/// One category's (or the whole area's) time from report to closure.
#[derive(Debug, Clone, PartialEq)]
pub struct Closure {
    pub category: String,
    pub closed: i64,
    /// Median whole hours, `None` with nothing closed.
    pub median_hours: Option<i64>,
}

/// One part of the area (a street, community or grid).
#[derive(Debug, Clone, PartialEq)]
pub struct PartRow {
    pub name: String,
    pub reported: i64,
    pub closed: i64,
    pub overdue: i64,
}

/// The overview of a period and an area, as the console draws it and its CSVs list it.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub area: Area,
    /// Areas the person may choose between (their own area first).
    pub choices: Vec<Area>,
    pub from_day: String,
    pub to_day: String,
    /// Every day of the period, in order.
    pub days: Vec<String>,
    /// Category → cases reported on each of `days`.
    pub per_day: BTreeMap<String, Vec<i64>>,
    pub parts: Vec<PartRow>,
    /// Cases reported per grid, for the heat map.
    pub per_grid: BTreeMap<String, i64>,
    pub departments: Vec<DepartmentRow>,
    /// Overall first, then per category.
    pub closure: Vec<Closure>,
    /// Overdue now: not escalated, community, street, district.
    pub overdue_by_level: [i64; 4],
    pub satisfaction: [i64; 5],
    pub reported: i64,
}

fn median_hours(hist: &BTreeMap<i64, i64>) -> Option<i64> {
    let total: i64 = hist.values().sum();
    if total == 0 {
        return None;
    }
    // The lower median: the hour the (total+1)/2-th closure falls in.
    let mut seen = 0;
    for (h, n) in hist {
        seen += n;
        if seen * 2 >= total {
            return Some(*h);
        }
    }
    None
}

/// The grids a person holds now (their grants, communities and streets spelled out as the grids
/// placed in them), `None` for an administrator: what the overview and "needs you" count within.
pub(crate) fn person_grids(tx: &dyn ReadTx, user: &ConsoleUser) -> Result<Option<BTreeSet<String>>> {
    if user.sees_everything() {
        return Ok(None);
    }
    let scopes = tx.user_scopes(&user.id)?;
    Ok(Some(scopes.keys().filter_map(|s| s.strip_prefix("grid:")).map(str::to_owned).collect()))
}

/// The areas a person may look at: an administrator (or a district-wide supervisor) the district,
/// its streets and communities; others the streets and communities whose every grid they see.
fn choices(user: &ConsoleUser, catalog: &Catalog, grids: Option<&BTreeSet<String>>) -> Vec<Area> {
    let streets: BTreeSet<&str> = catalog.grids.iter().map(|g| g.street.as_str()).collect();
    let communities: BTreeSet<&str> = catalog.grids.iter().map(|g| g.community.as_str()).collect();
    let whole = |area: &Area| {
        let mut inside = catalog.grids.iter().filter(|g| area.holds(g)).peekable();
        inside.peek().is_some() && inside.all(|g| grids.is_none_or(|mine| mine.contains(&g.id.0)))
    };
    let mut out = vec![];
    if user.sees_everything() || whole(&Area::District) {
        out.push(Area::District);
    }
    out.extend(streets.into_iter().map(|s| Area::Street(s.to_owned())).filter(whole));
    out.extend(communities.into_iter().map(|c| Area::Community(c.to_owned())).filter(whole));
    out
}

/// The overview of `area` (the person's own widest area when `None`) between two local days.
pub fn overview(
    b: &(impl Backend + ?Sized),
    catalog: &Catalog,
    user: &ConsoleUser,
    area: Option<Area>,
    (from_day, to_day): (&str, &str),
    now_ms: i64,
) -> Result<Overview> {
    let calendar = DistrictCalendar::default();
    let bad_day = |d: &str| ServerError::BadRequest(format!("{d:?} is not a day: use YYYY-MM-DD"));
    let (from_ms, _) = calendar.day_bounds(from_day).ok_or_else(|| bad_day(from_day))?;
    let (_, to_ms) = calendar.day_bounds(to_day).ok_or_else(|| bad_day(to_day))?;
    if to_ms <= from_ms || to_ms - from_ms > 400 * 86_400_000 {
        return Err(ServerError::BadRequest("the period must run forward and span at most 400 days".into()));
    }
    let own_grids = read(b, |tx: &dyn ReadTx| person_grids(tx, user))?;
    let choices = choices(user, catalog, own_grids.as_ref());
    let area = match area {
        Some(a) if choices.contains(&a) => a,
        Some(a) => return Err(ServerError::Forbidden(format!("{} is not within your area", a.key()))),
        None => choices.first().cloned().ok_or_else(|| {
            ServerError::Forbidden("the overview covers a whole community, street or district; you have none".into())
        })?,
    };
    let in_area: Vec<&gridwork_model::catalog::Grid> = catalog.grids.iter().filter(|g| area.holds(g)).collect();
    let grids = (area != Area::District).then(|| in_area.iter().map(|g| g.id.0.clone()).collect());
    let query = FactsQuery { grids, from_day: from_day.to_owned(), to_day: to_day.to_owned(), from_ms, to_ms, now_ms };
    let rows = read(b, |tx: &dyn ReadTx| tx.overview_facts(&query))?;

    let mut days = vec![];
    let mut d = from_ms;
    while d < to_ms {
        days.push(calendar.day_of(d));
        d += 86_400_000;
    }
    days.dedup();
    let day_index: BTreeMap<&str, usize> = days.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
    let mut per_day: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut reported = 0;
    for (day, category, n) in &rows.by_day {
        reported += n;
        if let Some(i) = day_index.get(day.as_str()) {
            per_day.entry(category.clone()).or_insert_with(|| vec![0; days.len()])[*i] += n;
        }
    }
    let part_of: BTreeMap<&str, String> = in_area.iter().map(|g| (g.id.0.as_str(), area.part_of(g))).collect();
    let mut parts: BTreeMap<String, PartRow> = in_area
        .iter()
        .map(|g| area.part_of(g))
        .map(|name| (name.clone(), PartRow { name, reported: 0, closed: 0, overdue: 0 }))
        .collect();
    let mut per_grid = BTreeMap::new();
    let mut overdue_by_level = [0; 4];
    let mut satisfaction = [0; 5];
    // A grid no longer in the catalog is counted in the totals, not in any part.
    for (grid, reported, closed) in &rows.by_grid {
        per_grid.insert(grid.clone(), *reported);
        if let Some(p) = part_of.get(grid.as_str()).and_then(|name| parts.get_mut(name)) {
            p.reported += reported;
            p.closed += closed;
        }
    }
    for (grid, level, n) in &rows.overdue {
        let i = match level.as_str() {
            "community" => 1,
            "street" => 2,
            "district" => 3,
            _ => 0,
        };
        overdue_by_level[i] += n;
        if let Some(p) = part_of.get(grid.as_str()).and_then(|name| parts.get_mut(name)) {
            p.overdue += n;
        }
    }
    for (_, score, n) in &rows.satisfaction {
        if let Some(total) = usize::try_from(*score - 1).ok().and_then(|i| satisfaction.get_mut(i)) {
            *total += n;
        }
    }
    let mut all: BTreeMap<i64, i64> = BTreeMap::new();
    let mut by_category: BTreeMap<&str, BTreeMap<i64, i64>> = BTreeMap::new();
    for (category, hours, n) in &rows.closure_hours {
        *all.entry(*hours).or_default() += n;
        *by_category.entry(category.as_str()).or_default().entry(*hours).or_default() += n;
    }
    let closure = std::iter::once(Closure {
        category: String::new(),
        closed: all.values().sum(),
        median_hours: median_hours(&all),
    })
    .chain(by_category.iter().map(|(c, h)| Closure {
        category: (*c).to_owned(),
        closed: h.values().sum(),
        median_hours: median_hours(h),
    }))
    .collect();
    Ok(Overview {
        area,
        choices,
        from_day: from_day.to_owned(),
        to_day: to_day.to_owned(),
        days,
        per_day,
        parts: parts.into_values().collect(),
        per_grid,
        departments: rows.departments,
        closure,
        overdue_by_level,
        satisfaction,
        reported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_hour_the_middle_closure_falls_in() {
        let h: BTreeMap<i64, i64> = [(1, 2), (5, 1), (30, 2)].into_iter().collect();
        assert_eq!(median_hours(&h), Some(5));
        let h: BTreeMap<i64, i64> = [(1, 1), (9, 1)].into_iter().collect();
        assert_eq!(median_hours(&h), Some(1));
        assert_eq!(median_hours(&BTreeMap::new()), None);
    }

    #[test]
    fn areas_parse_or_say_how_to_name_one() {
        assert_eq!(Area::parse("").ok(), Some(Area::District));
        assert_eq!(Area::parse("street:东街").ok(), Some(Area::Street("东街".into())));
        assert!(Area::parse("grid:g1").is_err());
        assert!(Area::parse("street:").is_err());
    }
}
