//! The district overview page (`/console/overview`) and its CSVs: the handlers and the view model
//! in one room, as the page is one template (`templates/console/overview.html`).
//!
//! The same page serves every level: an administrator starts at the district and may narrow to a
//! street or community; a street's supervisor starts at their street; a community's at their
//! community. The numbers come from `rules::overview`; the charts from `console::charts`.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use gridwork_model::catalog::Catalog;

use super::views::{category_name, department_name, enc, Choice, Chrome};
use super::{charts, chrome, csv_response, day_param, html, map, now_ms, signed_in, with_console, ConsoleState};
use crate::error::ServerError;
use crate::rules::overview::{Area, Overview};

/// The CSVs, one per chart: name, header keys.
const CSVS: [(&str, &[&str]); 6] = [
    ("per_day", &["day", "category", "reported_n"]),
    ("parts", &["area", "reported_n", "closed_n", "overdue"]),
    ("departments", &["department", "dispatched_n", "done_n", "on_time", "overdue", "on_time_rate"]),
    ("closure", &["category", "closed_n", "median_hours"]),
    ("overdue", &["level", "overdue"]),
    ("satisfaction", &["satisfaction", "visits_n"]),
];

#[derive(Debug, Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub areas: Vec<Choice>,
    pub area_label: String,
    /// The page's area and period as a query string (for the CSV links).
    pub query: String,
    pub from: String,
    pub to: String,
    pub reported: i64,
    pub closed: i64,
    pub median_hours: String,
    pub overdue: i64,
    pub on_time_rate: String,
    pub satisfaction_mean: String,
    /// (id, heading key, svg, csv name).
    pub charts: Vec<(&'static str, &'static str, String, &'static str)>,
    pub heat_map: String,
}

fn area_label(lang: super::i18n::Lang, a: &Area) -> String {
    match a {
        Area::District => lang.t("whole_district").to_owned(),
        Area::Street(n) => format!("{} {n}", lang.t("street")),
        Area::Community(n) => format!("{} {n}", lang.t("community")),
    }
}

fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

fn level_keys() -> [&'static str; 4] {
    ["not_escalated", "lv_community", "lv_street", "lv_district"]
}

/// Each chart's rows as CSV cells (the page draws the same numbers).
fn csv_rows(o: &Overview, catalog: &Catalog, lang: super::i18n::Lang, chart: &str) -> Option<Vec<Vec<String>>> {
    let rows = match chart {
        "per_day" => o
            .per_day
            .iter()
            .flat_map(|(c, v)| {
                let name = category_name(catalog, lang, c);
                o.days.iter().zip(v).map(move |(d, n)| vec![d.clone(), name.clone(), n.to_string()])
            })
            .collect(),
        "parts" => o
            .parts
            .iter()
            .map(|p| vec![p.name.clone(), p.reported.to_string(), p.closed.to_string(), p.overdue.to_string()])
            .collect(),
        "departments" => o
            .departments
            .iter()
            .map(|d| {
                vec![
                    department_name(catalog, &d.department),
                    d.dispatched.to_string(),
                    d.done.to_string(),
                    d.done_on_time.to_string(),
                    d.overdue.to_string(),
                    rate(d.done_on_time, d.done).map(|r| format!("{r}%")).unwrap_or_default(),
                ]
            })
            .collect(),
        "closure" => o
            .closure
            .iter()
            .map(|c| {
                let name = if c.category.is_empty() {
                    lang.t("all").to_owned()
                } else {
                    category_name(catalog, lang, &c.category)
                };
                vec![name, c.closed.to_string(), c.median_hours.map(|h| h.to_string()).unwrap_or_default()]
            })
            .collect(),
        "overdue" => level_keys()
            .iter()
            .zip(o.overdue_by_level)
            .map(|(k, n)| vec![lang.t(k).to_owned(), n.to_string()])
            .collect(),
        "satisfaction" => {
            o.satisfaction.iter().enumerate().map(|(i, n)| vec![(i + 1).to_string(), n.to_string()]).collect()
        }
        _ => return None,
    };
    Some(rows)
}

pub fn overview_page(chrome: Chrome, o: &Overview, catalog: &Catalog) -> OverviewPage {
    let lang = chrome.lang;
    let per_day: Vec<(String, Vec<i64>)> =
        o.per_day.iter().map(|(c, v)| (category_name(catalog, lang, c), v.clone())).collect();
    let parts_labels: Vec<String> = o.parts.iter().map(|p| p.name.clone()).collect();
    let parts_values: Vec<f64> = o.parts.iter().map(|p| p.reported as f64).collect();
    let dept_labels: Vec<String> = o.departments.iter().map(|d| department_name(catalog, &d.department)).collect();
    let dept_values: Vec<f64> = o.departments.iter().map(|d| rate(d.done_on_time, d.done).unwrap_or(0.0)).collect();
    let closure_labels: Vec<String> =
        o.closure
            .iter()
            .map(|c| {
                if c.category.is_empty() {
                    lang.t("all").to_owned()
                } else {
                    category_name(catalog, lang, &c.category)
                }
            })
            .collect();
    let closure_values: Vec<f64> = o.closure.iter().map(|c| c.median_hours.unwrap_or(0) as f64).collect();
    let level_labels: Vec<String> = level_keys().iter().map(|k| lang.t(k).to_owned()).collect();
    let overdue_values: Vec<f64> = o.overdue_by_level.iter().map(|n| *n as f64).collect();
    let sat_labels: Vec<String> = (1..=5).map(|s| "★".repeat(s)).collect();
    let sat_values: Vec<f64> = o.satisfaction.iter().map(|n| *n as f64).collect();
    let charts = vec![
        ("chart-per-day", "ov_per_day", charts::lines("chart-per-day", &o.days, &per_day), "per_day"),
        ("chart-parts", "ov_parts", charts::bars("chart-parts", &parts_labels, &parts_values, ""), "parts"),
        (
            "chart-departments",
            "ov_departments",
            charts::bars("chart-departments", &dept_labels, &dept_values, "%"),
            "departments",
        ),
        (
            "chart-closure",
            "ov_closure",
            charts::bars("chart-closure", &closure_labels, &closure_values, "h"),
            "closure",
        ),
        ("chart-overdue", "ov_overdue", charts::bars("chart-overdue", &level_labels, &overdue_values, ""), "overdue"),
        (
            "chart-satisfaction",
            "ov_satisfaction",
            charts::bars("chart-satisfaction", &sat_labels, &sat_values, ""),
            "satisfaction",
        ),
    ];
    let grids: Vec<(&str, &gridwork_model::geo::Polygon, i64)> = catalog
        .grids
        .iter()
        .filter(|g| o.area.holds(g))
        .map(|g| (g.name.as_str(), &g.boundary, o.per_grid.get(&g.id.0).copied().unwrap_or(0)))
        .collect();
    let (done, on_time) = o.departments.iter().fold((0, 0), |(d, t), r| (d + r.done, t + r.done_on_time));
    let visits: i64 = o.satisfaction.iter().sum();
    let stars: i64 = o.satisfaction.iter().enumerate().map(|(i, n)| (i as i64 + 1) * n).sum();
    OverviewPage {
        areas: o
            .choices
            .iter()
            .map(|a| Choice { value: a.key(), label: area_label(lang, a), selected: *a == o.area })
            .collect(),
        query: format!("area={}&from={}&to={}", enc(&o.area.key()), enc(&o.from_day), enc(&o.to_day)),
        area_label: area_label(lang, &o.area),
        from: o.from_day.clone(),
        to: o.to_day.clone(),
        reported: o.reported,
        closed: o.closure.first().map_or(0, |c| c.closed),
        median_hours: o
            .closure
            .first()
            .and_then(|c| c.median_hours)
            .map(|h| format!("{h} h"))
            .unwrap_or_else(|| "–".into()),
        overdue: o.overdue_by_level.iter().sum(),
        on_time_rate: rate(on_time, done).map(|r| format!("{r}%")).unwrap_or_else(|| "–".into()),
        satisfaction_mean: if visits > 0 { format!("{:.1}", stars as f64 / visits as f64) } else { "–".into() },
        charts,
        heat_map: map::heat_map(&grids),
        chrome,
    }
}

/// The page's query: area, from, to (default the last 30 days).
fn params(q: &HashMap<String, String>) -> Result<(Option<Area>, String, String), ServerError> {
    let area = match q.get("area").map(String::as_str) {
        None | Some("") => None,
        Some(a) => Some(Area::parse(a)?),
    };
    Ok((area, day_param(q, "from", 29), day_param(q, "to", 0)))
}

pub(super) async fn overview(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let p = params(&q);
    signed_in(&state, &headers, &q, |lang, session| async move {
        let (area, from, to) = p.map_err(|e| (session.clone(), e))?;
        let user = session.user.clone();
        let (o, catalog) = with_console(store, &session, move |console| {
            Ok((console.overview(&user, area, (&from, &to), now_ms())?, console.catalog(&user)))
        })
        .await?;
        let page = overview_page(chrome(lang, lang.t("overview"), Some(&session)), &o, &catalog);
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

pub(super) async fn overview_csv(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let p = params(&q);
    let chart = q.get("chart").cloned().unwrap_or_default();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let (area, from, to) = p.map_err(|e| (session.clone(), e))?;
        let Some((name, header)) = CSVS.iter().find(|(n, _)| *n == chart) else {
            let known: Vec<&str> = CSVS.iter().map(|(n, _)| *n).collect();
            return Err((
                session,
                ServerError::BadRequest(format!("unknown chart {chart:?}: use one of {}", known.join(", "))),
            ));
        };
        let user = session.user.clone();
        let body = with_console(store, &session, move |console| {
            let o = console.overview(&user, area, (&from, &to), now_ms())?;
            let rows = csv_rows(&o, &console.catalog(&user), lang, name).unwrap_or_default();
            super::views::table_csv(lang, header, &rows)
        })
        .await?;
        Ok(csv_response(&format!("gridwork-overview-{name}.csv"), body))
    })
    .await
}
