//! The map, patrol coverage and worker assessment pages' view models.

use super::*;

/// Most pins one map draws.
pub const MAX_PINS: u32 = 3000;

#[derive(Debug, Template)]
#[template(path = "console/map.html")]
pub struct MapPage {
    pub chrome: Chrome,
    pub statuses: Vec<Choice>,
    pub areas: Vec<Choice>,
    pub legend: Vec<(String, &'static str)>,
    pub shown: usize,
    pub truncated: bool,
    pub svg: String,
    /// Cases whose position lies outside the drawn grids (not drawn; see `map::DistrictMap`).
    pub outside: usize,
}

pub fn map_page(
    chrome: Chrome,
    catalog: &Catalog,
    user: &ConsoleUser,
    filter: &CaseFilter,
    pins: &[crate::store::console::MapPin],
) -> MapPage {
    let lang = chrome.lang;
    let grids: Vec<(&str, &gridwork_model::geo::Polygon)> = catalog
        .grids
        .iter()
        .filter(|g| user.sees_grid(g))
        .filter(|g| {
            // An area filter draws that area's grids only.
            filter.area.is_empty()
                || filter.area == format!("grid:{}", g.id)
                || filter.area == format!("community:{}", g.community)
                || filter.area == format!("street:{}", g.street)
        })
        .map(|g| (g.name.as_str(), &g.boundary))
        .collect();
    let drawn = map::district_map(&grids, pins);
    MapPage {
        statuses: map::LEGEND
            .iter()
            .map(|s| Choice { value: (*s).to_owned(), label: status_label(lang, s), selected: filter.status == *s })
            .collect(),
        areas: area_choices(catalog, user, &filter.area),
        legend: map::LEGEND.iter().map(|s| (status_label(lang, s), map::status_colour(s))).collect(),
        shown: pins.len(),
        truncated: pins.len() as u32 >= MAX_PINS,
        svg: drawn.svg,
        outside: drawn.outside,
        chrome,
    }
}

#[derive(Debug, Clone)]
pub struct CoverageRow {
    pub id: String,
    pub name: String,
    pub points: usize,
    pub covered: usize,
    pub missed: usize,
    pub check_ins: usize,
    pub outside: usize,
    /// Check-ins whose fix the phone's OS marked mock: counted apart, and a point visited only
    /// with mock fixes is not covered.
    pub mock: usize,
}

#[derive(Debug, Clone)]
pub struct CoverageDetail {
    pub id: String,
    pub name: String,
    /// (point name, "who hh:mm (distance), …" or empty when missed)
    pub rows: Vec<(String, String)>,
    /// Check-ins outside the grid, as text.
    pub outside: String,
}

#[derive(Debug, Template)]
#[template(path = "console/coverage.html")]
pub struct CoveragePage {
    pub chrome: Chrome,
    pub day: String,
    pub grids: Vec<CoverageRow>,
    pub details: Vec<CoverageDetail>,
}

pub(super) fn check_in_text(c: &crate::store::console::CheckInView, calendar: &DistrictCalendar) -> String {
    let time = calendar.minute_of(c.at_ms);
    let time = time.split(' ').nth(1).unwrap_or(&time).to_owned();
    let mock = if c.mock { " ⚠mock" } else { "" };
    match c.distance_m {
        Some(d) => format!("{} {time} ({d:.0} m){mock}", c.user),
        None => format!("{} {time}{mock}", c.user),
    }
}

pub fn coverage_rows(catalog: &Catalog, coverage: &[crate::store::console::GridCoverage]) -> Vec<CoverageRow> {
    coverage
        .iter()
        .map(|g| {
            let covered = g.points.iter().filter(|(_, _, c)| c.iter().any(|c| !c.mock)).count();
            CoverageRow {
                id: g.grid.clone(),
                name: grid_name(catalog, &g.grid),
                points: g.points.len(),
                covered,
                missed: g.points.len() - covered,
                check_ins: g.check_ins.len(),
                outside: g.check_ins.iter().filter(|c| !c.inside_grid).count(),
                mock: g.check_ins.iter().filter(|c| c.mock).count(),
            }
        })
        .collect()
}

pub fn coverage_page(
    chrome: Chrome,
    catalog: &Catalog,
    day: String,
    coverage: &[crate::store::console::GridCoverage],
    selected: Option<&str>,
) -> CoveragePage {
    let calendar = DistrictCalendar::default();
    // Detail for the chosen grid, or for every grid when there are only a few.
    let details = coverage
        .iter()
        .filter(|g| selected.map_or(coverage.len() <= 3, |s| s == g.grid))
        .map(|g| CoverageDetail {
            id: g.grid.clone(),
            name: grid_name(catalog, &g.grid),
            rows: g
                .points
                .iter()
                .map(|(_, name, at)| {
                    (name.clone(), at.iter().map(|c| check_in_text(c, &calendar)).collect::<Vec<_>>().join("、"))
                })
                .collect(),
            outside: g
                .check_ins
                .iter()
                .filter(|c| !c.inside_grid)
                .map(|c| check_in_text(c, &calendar))
                .collect::<Vec<_>>()
                .join("、"),
        })
        .collect();
    CoveragePage { grids: coverage_rows(catalog, coverage), details, day, chrome }
}

#[derive(Debug, Template)]
#[template(path = "console/assessment.html")]
pub struct AssessmentPage {
    pub chrome: Chrome,
    pub from: String,
    pub to: String,
    /// (user, cells in column order)
    pub rows: Vec<(String, Vec<String>)>,
}

/// A worker's figures as the table's and the CSV's cells.
pub fn score_cells(s: &crate::store::console::WorkerScore, catalog: &Catalog) -> Vec<String> {
    vec![
        s.user.clone(),
        s.grids.iter().map(|g| grid_name(catalog, g)).collect::<Vec<_>>().join(" "),
        s.reported.to_string(),
        s.accepted.to_string(),
        s.rejected.to_string(),
        s.handled_on_time.to_string(),
        s.handled_late.to_string(),
        s.overdue.to_string(),
        s.check_ins.to_string(),
        s.satisfaction.map(|v| format!("{v:.2} ({})", s.follow_ups)).unwrap_or_default(),
        s.clock_flags.to_string(),
    ]
}

/// The header of the assessment's table and CSV.
pub const SCORE_COLUMNS: [&str; 11] = [
    "worker",
    "grid",
    "reported_n",
    "accepted_n",
    "rejected_n",
    "on_time",
    "late",
    "overdue",
    "check_ins",
    "satisfaction",
    "clock_flags",
];
