//! The case queue (`/console/cases`): filters, search, pages, its CSV and bulk triage.

use super::*;

/// Changes the search index takes in before a search (one short batch).
pub(super) const SEARCH_CATCH_UP: usize = 500;

pub(super) async fn queue(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = parse_filter(&q);
    let store = state.store.clone();
    let bulk_done = q.get("bulk_done").and_then(|n| n.parse::<u32>().ok());
    let bulk_refused = q.get("bulk_refused").cloned().unwrap_or_default();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let f = filter.clone();
        let found = with_console(store, &session, move |console| {
            let now = now_ms();
            let mut index_behind = 0;
            if !f.q.is_empty() {
                // What was just reported is found too: the index takes in a batch first (the
                // upkeep task does the rest between requests).
                index_behind = console.index_for_search(SEARCH_CATCH_UP)?.behind;
                // A code typed in full opens its case.
                if let Some(id) = console.case_by_code(&user, &f.q)? {
                    return Ok(Err(id));
                }
            }
            let queue = console.case_queue(&user, &f, now)?;
            // Shown where the person lands (the queue filtered by status at most): its counts are
            // the whole area's already, so nothing more is read.
            let landing = CaseFilter { status: f.status.clone(), page: f.page, ..Default::default() } == f;
            let needs = if landing { console.needs_you(&user, Some(&queue.counts), now)? } else { vec![] };
            Ok(Ok((queue, console.catalog(&user), needs, index_behind)))
        })
        .await?;
        let (queue, catalog, needs, index_behind) = match found {
            Ok(page) => page,
            Err(case_id) => return Ok(redirect(&format!("/console/cases/{}", views::enc(&case_id)))),
        };
        let bulk = bulk_done.map(|n| (n, bulk_refused.as_str()));
        let page = views::queue_page(
            chrome(lang, lang.t("queue"), Some(&session)),
            &catalog,
            &session.user,
            filter,
            queue,
            views::QueueNotes { bulk, needs: &needs, index_behind },
        );
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

pub(super) async fn queue_csv(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut filter = parse_filter(&q);
    filter.all = true;
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let body = with_console(store, &session, move |console| {
            let queue = console.case_queue(&user, &filter, now_ms())?;
            views::queue_csv(&queue, &console.catalog(&user), lang)
        })
        .await?;
        Ok((
            StatusCode::OK,
            [
                (CONTENT_TYPE, "text/csv; charset=utf-8"),
                (CONTENT_DISPOSITION, "attachment; filename=\"gridwork-cases.csv\""),
                (CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response())
    })
    .await
}

/// Most cases one bulk action takes (two queue pages' worth, and then some).
pub(super) const MAX_BULK: usize = 200;

/// Several cases of the queue at once: accept, reject (one reason) or dispatch (departments and
/// one deadline). Each case is still one lifecycle event through `act`, with its own scope and
/// role-table check: what the state or the role does not allow is listed, the rest is done.
pub(super) async fn bulk_act(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let f = form_map(&form);
    // Repeated fields: the selected cases.
    let cases: Vec<String> =
        form_urlencoded::parse(&form.0).filter(|(k, _)| k == "case").map(|(_, v)| v.into_owned()).collect();
    let store = state.store.clone();
    signed_in(&state, &headers, &HashMap::new(), |_lang, session| async move {
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let refuse = |why: &str| (session.clone(), ServerError::BadRequest(why.to_owned()));
        if !matches!(f.get("action").map(String::as_str), Some("accept" | "reject" | "dispatch")) {
            return Err(refuse("a bulk action accepts, rejects or dispatches"));
        }
        if cases.is_empty() {
            return Err(refuse("select at least one case in the queue"));
        }
        if cases.len() > MAX_BULK {
            return Err(refuse(&format!("at most {MAX_BULK} cases at once: filter the queue further")));
        }
        let back = queue_query_back(f.get("back").map(String::as_str).unwrap_or(""));
        let s = session.clone();
        let (done, refused) = with_console(store, &session, move |console| {
            let now = now_ms();
            let action = super::case::parse_action(&f, &s, None, now)?;
            let (mut done, mut refused) = (0u32, vec![]);
            for case in &cases {
                match console.act(&s.user, case, action.clone(), now) {
                    Ok(()) => done += 1,
                    Err(_) => refused
                        .push(console.case_view(&s.user, case).map(|v| v.case.code).unwrap_or_else(|_| case.clone())),
                }
            }
            Ok((done, refused))
        })
        .await?;
        let mut to = format!("/console/cases?{back}");
        if !back.is_empty() {
            to.push('&');
        }
        to.push_str(&format!("bulk_done={done}&bulk_refused={}", views::enc(&refused.join(" "))));
        Ok(redirect(&to))
    })
    .await
}

/// The queue's filter from a bulk form's `back` field, rebuilt from the filter's own keys only
/// (never a redirect elsewhere).
pub(super) fn queue_query_back(back: &str) -> String {
    let q: HashMap<String, String> = form_urlencoded::parse(back.as_bytes()).into_owned().collect();
    let filter = parse_filter(&q);
    views::filter_query(&filter, &filter.status, filter.page)
}
