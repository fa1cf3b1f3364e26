//! The map, patrol coverage and worker assessment pages, with their CSVs.

use super::*;

pub(super) async fn map_view(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = parse_filter(&q);
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let f = filter.clone();
        let (pins, catalog) = with_console(store, &session, move |console| {
            Ok((console.map_pins(&user, &f, views::MAX_PINS, now_ms())?, console.catalog(&user)))
        })
        .await?;
        let page =
            views::map_page(chrome(lang, lang.t("map"), Some(&session)), &catalog, &session.user, &filter, &pins);
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

pub(super) async fn coverage(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let day = day_param(&q, "day", 0);
    let grid = q.get("grid").cloned();
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let d = day.clone();
        let (cov, catalog) =
            with_console(store, &session, move |console| Ok((console.coverage(&user, &d)?, console.catalog(&user))))
                .await?;
        let page = views::coverage_page(
            chrome(lang, lang.t("coverage"), Some(&session)),
            &catalog,
            day,
            &cov,
            grid.as_deref(),
        );
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

pub(super) async fn coverage_csv(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let day = day_param(&q, "day", 0);
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let body = with_console(store, &session, move |console| {
            let catalog = console.catalog(&user);
            let rows: Vec<Vec<String>> = views::coverage_rows(&catalog, &console.coverage(&user, &day)?)
                .into_iter()
                .map(|r| {
                    vec![
                        day.clone(),
                        r.name,
                        r.points.to_string(),
                        r.covered.to_string(),
                        r.missed.to_string(),
                        r.check_ins.to_string(),
                        r.outside.to_string(),
                        r.mock.to_string(),
                    ]
                })
                .collect();
            views::table_csv(
                lang,
                &["day", "grid", "points", "covered", "missed", "check_ins", "outside_grid", "mock_location"],
                &rows,
            )
        })
        .await?;
        Ok(csv_response("gridwork-coverage.csv", body))
    })
    .await
}

/// The period of the assessment: [from, to] as district days, default the last 30 days.
pub(super) fn period(q: &HashMap<String, String>) -> Result<(String, String, i64, i64), ServerError> {
    let calendar = gridwork_model::time::DistrictCalendar::default();
    let from = day_param(q, "from", 30);
    let to = day_param(q, "to", 0);
    let bad = |d: &str| ServerError::BadRequest(format!("{d:?} is not a date: use YYYY-MM-DD"));
    let (start, _) = calendar.day_bounds(&from).ok_or_else(|| bad(&from))?;
    let (_, end) = calendar.day_bounds(&to).ok_or_else(|| bad(&to))?;
    Ok((from, to, start, end))
}

pub(super) async fn assessment(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let p = period(&q);
    signed_in(&state, &headers, &q, |lang, session| async move {
        let (from, to, start, end) = p.map_err(|e| (session.clone(), e))?;
        let user = session.user.clone();
        let (scores, catalog) = with_console(store, &session, move |console| {
            Ok((console.assessment(&user, start, end, now_ms())?, console.catalog(&user)))
        })
        .await?;
        let page = views::AssessmentPage {
            chrome: chrome(lang, lang.t("assessment"), Some(&session)),
            from,
            to,
            rows: scores.iter().map(|s| (s.user.clone(), views::score_cells(s, &catalog))).collect(),
        };
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

pub(super) async fn assessment_csv(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let p = period(&q);
    signed_in(&state, &headers, &q, |lang, session| async move {
        let (_, _, start, end) = p.map_err(|e| (session.clone(), e))?;
        let user = session.user.clone();
        let body = with_console(store, &session, move |console| {
            let catalog = console.catalog(&user);
            let rows: Vec<Vec<String>> = console
                .assessment(&user, start, end, now_ms())?
                .iter()
                .map(|s| views::score_cells(s, &catalog))
                .collect();
            views::table_csv(lang, &views::SCORE_COLUMNS, &rows)
        })
        .await?;
        Ok(csv_response("gridwork-assessment.csv", body))
    })
    .await
}
