//! The supervisor console under `/console` (ADR 12): server-rendered pages for supervisors,
//! department handlers and administrators.
//!
//! - Sign-in with argon2-hashed passwords and lockout after repeated failures; a session cookie
//!   (HttpOnly, SameSite=Strict, Secure under TLS) whose token the store keeps only as a hash.
//! - Every form carries the session's CSRF token (the sign-in form a double-submit token), checked
//!   before anything else; a device's bearer token means nothing here.
//! - Every page and action asks the store, which checks role and scope itself.
//!
//! Handlers are thin: parse, call the store off the async runtime, build a view, render.

pub mod charts;
pub mod i18n;
pub mod map;
pub mod overview;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, RawForm, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use gridwork_model::doc::{keys, CasePatch};
use gridwork_model::ids::DepartmentId;
use gridwork_model::lifecycle::{EventKind, Level, RejectReason};

use crate::error::ServerError;
use crate::store::console::{CaseFilter, ConsoleAction, ConsoleStore, Session};
use crate::store::SyncStore;
use i18n::Lang;
use views::Chrome;

const SESSION_COOKIE: &str = "gw_session";
const LOGIN_COOKIE: &str = "gw_login";
const LANG_COOKIE: &str = "gw_lang";
/// The district a city-level person chose to look at (`crate::city`); ignored for anyone else,
/// whose district their session fixes.
const DISTRICT_COOKIE: &str = "gw_district";

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub store: Arc<dyn SyncStore>,
    /// Served over TLS: cookies get `Secure`.
    pub secure: bool,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").field("secure", &self.secure).finish_non_exhaustive()
    }
}

pub fn routes(store: Arc<dyn SyncStore>, secure: bool) -> Router {
    Router::new()
        .route("/console", get(|| async { redirect("/console/cases") }))
        .route("/console/", get(|| async { redirect("/console/cases") }))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/cases", get(queue))
        .route("/console/cases.csv", get(queue_csv))
        .route("/console/cases/{id}", get(case_detail))
        .route("/console/cases/{id}/act", post(act))
        .route("/console/cases/bulk", post(bulk_act))
        .route("/console/cases/{id}/bundle", get(bundle))
        .route("/console/photos/{sha256}", get(photo))
        .route("/console/map", get(map_view))
        .route("/console/overview", get(overview::overview))
        .route("/console/overview.csv", get(overview::overview_csv))
        .route("/console/coverage", get(coverage))
        .route("/console/coverage.csv", get(coverage_csv))
        .route("/console/assessment", get(assessment))
        .route("/console/assessment.csv", get(assessment_csv))
        .route("/console/admin", get(admin))
        .route("/console/admin.csv", get(admin_csv))
        .route("/console/admin/{action}", post(admin_action))
        .route("/console/districts", get(districts).post(choose_district))
        .with_state(ConsoleState { store, secure })
}

use crate::clock::now_ms;

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> (axum::http::HeaderName, HeaderValue) {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    (SET_COOKIE, HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("")))
}

/// The page language: `?lang=` (remembered in a cookie), else the cookie, else Chinese.
fn language(headers: &HeaderMap, query: &HashMap<String, String>) -> (Lang, bool) {
    if let Some(l) = query.get("lang").and_then(|l| Lang::parse(l)) {
        return (l, true);
    }
    (cookie(headers, LANG_COOKIE).and_then(|l| Lang::parse(&l)).unwrap_or(Lang::Zh), false)
}

fn html(status: StatusCode, page: Result<String, askama::Error>) -> Response {
    match page {
        Ok(body) => {
            (status, [(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-store")], body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; see the server log").into_response()
        }
    }
}

/// Adds the language cookie when the page was asked for in a new language.
fn with_lang(mut resp: Response, lang: Lang, remember: bool, secure: bool) -> Response {
    if remember {
        let (k, v) = set_cookie(LANG_COOKIE, lang.code(), 365 * 24 * 3600, secure);
        resp.headers_mut().append(k, v);
    }
    resp
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServerError::Internal(format!("worker failed: {e}")))?
}

fn no_console() -> ServerError {
    ServerError::NotFound("this store has no console".into())
}

/// Runs `f` on the console store off the async runtime.
async fn call<T: Send + 'static>(
    store: Arc<dyn SyncStore>,
    f: impl FnOnce(&dyn ConsoleStore) -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    blocking(move || f(store.console().ok_or_else(no_console)?)).await
}

/// [`call`] for a signed-in page: an error comes back with the session, for [`signed_in`] to
/// render as a page.
async fn with_console<T: Send + 'static>(
    store: Arc<dyn SyncStore>,
    session: &Session,
    f: impl FnOnce(&dyn ConsoleStore) -> Result<T, ServerError> + Send + 'static,
) -> Result<T, (Session, ServerError)> {
    call(store, f).await.map_err(|e| (session.clone(), e))
}

/// The signed-in session, or None (the caller redirects to sign-in).
async fn current_session(state: &ConsoleState, headers: &HeaderMap) -> Result<Option<Session>, ServerError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let store = state.store.clone();
    match call(store, move |console| console.session(&token, now_ms())).await {
        Ok(mut s) => {
            if s.user.city_level {
                s.user.district = cookie(headers, DISTRICT_COOKIE).filter(|d| !d.is_empty());
            }
            Ok(Some(s))
        }
        Err(ServerError::Unauthenticated) => Ok(None),
        Err(e) => Err(e),
    }
}

fn chrome(lang: Lang, title: &str, session: Option<&Session>) -> Chrome {
    Chrome {
        lang,
        title: title.to_owned(),
        user: session.map(|s| s.user.id.clone()),
        csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
        notice: None,
        error: None,
        admin: session.is_some_and(|s| s.user.sees_everything()),
        district: session.and_then(|s| s.user.district.clone()),
        city: session.is_some_and(|s| s.user.city_level),
    }
}

/// An error as a page: what went wrong and what to do, with the status the error carries.
fn error_page(lang: Lang, session: Option<&Session>, e: &ServerError) -> Response {
    let (status, _) = e.status_and_code();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %e, "console request failed");
    }
    let heading = if status == StatusCode::NOT_FOUND { lang.t("not_found") } else { lang.t("error") };
    let page = views::MessagePage {
        chrome: chrome(lang, heading, session),
        heading: heading.to_owned(),
        message: e.to_string(),
    };
    html(status, page.render())
}

async fn login_form(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (lang, remember) = language(&headers, &q);
    if let Ok(Some(_)) = current_session(&state, &headers).await {
        return redirect("/console/cases");
    }
    login_page(lang, remember, state.secure, String::new(), None, StatusCode::OK)
}

fn login_page(
    lang: Lang,
    remember: bool,
    secure: bool,
    user: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let mut token = [0u8; 16];
    if getrandom::fill(&mut token).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness for the sign-in form").into_response();
    }
    let token = hex::encode(token);
    let mut c = chrome(lang, lang.t("sign_in"), None);
    c.csrf = token.clone();
    c.error = error;
    let mut resp = html(status, views::LoginPage { chrome: c, user }.render());
    let (k, v) = set_cookie(LOGIN_COOKIE, &token, 3600, secure);
    resp.headers_mut().append(k, v);
    with_lang(resp, lang, remember, secure)
}

fn form_map(form: &RawForm) -> HashMap<String, String> {
    form_urlencoded::parse(&form.0).into_owned().collect()
}

async fn login(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let (lang, _) = language(&headers, &HashMap::new());
    let f = form_map(&form);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    // Double submit: the form's token must match the cookie set with the form.
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || get("csrf") != expected {
        return error_page(lang, None, &ServerError::CsrfMismatch);
    }
    let (user, password) = (get("user"), get("password"));
    let store = state.store.clone();
    let u = user.clone();
    match call(store, move |console| console.sign_in(&u, &password, now_ms())).await {
        Ok((token, _)) => {
            let mut resp = redirect("/console/cases");
            let (k, v) = set_cookie(SESSION_COOKIE, &token, crate::store::console::SESSION_MS / 1000, state.secure);
            resp.headers_mut().append(k, v);
            let (k, v) = set_cookie(LOGIN_COOKIE, "", 0, state.secure);
            resp.headers_mut().append(k, v);
            resp
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status_and_code().0).unwrap_or(StatusCode::UNAUTHORIZED);
            login_page(lang, false, state.secure, user, Some(e.to_string()), status)
        }
    }
}

/// Checks a posted form's CSRF token against the session's.
fn check_csrf(session: &Session, form: &HashMap<String, String>) -> Result<(), ServerError> {
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    // Constant-time: the comparison must not tell how much of a guess was right.
    let same = sent.len() == session.csrf.len()
        && sent.bytes().zip(session.csrf.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(ServerError::CsrfMismatch)
    }
}

async fn logout(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let (lang, _) = language(&headers, &HashMap::new());
    let session = match current_session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return redirect("/console/login"),
        Err(e) => return error_page(lang, None, &e),
    };
    if let Err(e) = check_csrf(&session, &form_map(&form)) {
        return error_page(lang, Some(&session), &e);
    }
    let store = state.store.clone();
    let token = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    if let Err(e) = call(store, move |console| console.sign_out(&token)).await {
        return error_page(lang, Some(&session), &e);
    }
    let mut resp = redirect("/console/login");
    for name in [SESSION_COOKIE, DISTRICT_COOKIE] {
        let (k, v) = set_cookie(name, "", 0, state.secure);
        resp.headers_mut().append(k, v);
    }
    resp
}

/// Runs `page` for a signed-in person; anyone else is sent to sign in.
async fn signed_in<F, Fut>(state: &ConsoleState, headers: &HeaderMap, q: &HashMap<String, String>, page: F) -> Response
where
    F: FnOnce(Lang, Session) -> Fut,
    Fut: std::future::Future<Output = Result<Response, (Session, ServerError)>>,
{
    let (lang, remember) = language(headers, q);
    let session = match current_session(state, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return redirect("/console/login"),
        Err(e) => return error_page(lang, None, &e),
    };
    let resp = match page(lang, session).await {
        Ok(r) => r,
        Err((session, e)) => error_page(lang, Some(&session), &e),
    };
    with_lang(resp, lang, remember, state.secure)
}

fn parse_filter(q: &HashMap<String, String>) -> CaseFilter {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    CaseFilter {
        status: get("status"),
        area: get("area"),
        category: get("category"),
        department: get("department"),
        overdue: get("overdue"),
        from: get("from"),
        to: get("to"),
        q: get("q").trim().to_owned(),
        page: get("page").parse().unwrap_or(1),
        after: get("after"),
        before: get("before"),
        all: false,
    }
}

/// Changes the search index takes in before a search (one short batch).
const SEARCH_CATCH_UP: usize = 500;

async fn queue(
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

async fn queue_csv(
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

async fn case_detail(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let done = q.contains_key("done");
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let (view, catalog) =
            with_console(store, &session, move |console| Ok((console.case_view(&user, &id)?, console.catalog(&user))))
                .await?;
        let mut c = chrome(lang, &view.case.code, Some(&session));
        if done {
            c.notice = Some(lang.t("done").to_owned());
        }
        let page = views::case_page(c, &catalog, &session.user, &view, now_ms());
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

/// The action a posted case form asks for.
fn parse_action(
    f: &HashMap<String, String>,
    session: &Session,
    view: Option<&crate::store::console::CaseView>,
    now: i64,
) -> Result<ConsoleAction, ServerError> {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let note = get("note");
    if note.chars().count() > 2000 {
        return Err(ServerError::BadRequest("a note has at most 2000 characters".into()));
    }
    let own_department = || {
        session
            .user
            .department
            .as_deref()
            .map(DepartmentId::from)
            .ok_or_else(|| ServerError::Forbidden("you belong to no department".into()))
    };
    let kind = match get("action").as_str() {
        "accept" => EventKind::Accept { note },
        "reject" => EventKind::Reject {
            reason: match get("reason").as_str() {
                "out_of_scope" => RejectReason::OutOfScope,
                _ => RejectReason::Duplicate,
            },
            duplicate_of: None,
            note,
        },
        "dispatch" => {
            let departments: Vec<DepartmentId> = f
                .keys()
                .filter_map(|k| k.strip_prefix("dept_"))
                .map(DepartmentId::from)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if departments.is_empty() {
                return Err(ServerError::BadRequest("choose at least one department to dispatch to".into()));
            }
            let hours: i64 =
                get("hours").parse().ok().filter(|h| (1..=2160).contains(h)).ok_or_else(|| {
                    ServerError::BadRequest("the deadline is a number of hours from 1 to 2160".into())
                })?;
            EventKind::Dispatch { departments, deadline_ms: now + hours * 3_600_000 }
        }
        "start" => EventKind::Start { department: own_department()? },
        "handler_report" => EventKind::HandlerReport { department: own_department()?, note, evidence: vec![] },
        "urge" => EventKind::Urge { note },
        "escalate" => EventKind::Escalate {
            to: match get("level").as_str() {
                "community" => Level::Community,
                "district" => Level::District,
                _ => Level::Street,
            },
            note,
        },
        "return" if !note.trim().is_empty() => EventKind::Return { reason: note },
        "return" => return Err(ServerError::BadRequest("say why the case goes back".into())),
        "close" => EventKind::Close { note },
        "note" if !note.trim().is_empty() => EventKind::Note { text: note },
        "note" => return Err(ServerError::BadRequest("the note is empty".into())),
        "settle" => EventKind::Settle {
            chosen: gridwork_model::ids::EventId::parse(&get("chosen"))
                .map_err(|_| ServerError::BadRequest("no decision chosen".into()))?,
        },
        "keep" => {
            let view = view.ok_or_else(|| ServerError::Internal("case not loaded".into()))?;
            let index: usize =
                get("index").parse().map_err(|_| ServerError::BadRequest("which value to keep?".into()))?;
            let case = &view.case;
            let missing = || ServerError::BadRequest("that value is no longer in conflict: reload the page".into());
            let patch = match get("field").as_str() {
                keys::TITLE => CasePatch {
                    title: Some(case.title.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                keys::CATEGORY => CasePatch {
                    category: Some(case.category.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                keys::GRID => CasePatch {
                    grid: Some(case.grid.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                keys::LOCATION => CasePatch {
                    location: Some(case.location.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                other => return Err(ServerError::BadRequest(format!("{other:?} is not a field with conflicts"))),
            };
            return Ok(ConsoleAction::Keep(patch));
        }
        other => return Err(ServerError::BadRequest(format!("unknown action {other:?}"))),
    };
    Ok(ConsoleAction::Event(kind))
}

async fn act(State(state): State<ConsoleState>, headers: HeaderMap, Path(id): Path<String>, form: RawForm) -> Response {
    let f = form_map(&form);
    let store = state.store.clone();
    signed_in(&state, &headers, &HashMap::new(), |_lang, session| async move {
        // The token first: a forged form learns nothing and changes nothing.
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let s = session.clone();
        let case_id = id.clone();
        with_console(store, &session, move |console| {
            let now = now_ms();
            let view = if f.get("action").map(String::as_str) == Some("keep") {
                Some(console.case_view(&s.user, &case_id)?)
            } else {
                None
            };
            let action = parse_action(&f, &s, view.as_ref(), now)?;
            console.act(&s.user, &case_id, action, now)
        })
        .await?;
        Ok(redirect(&format!("/console/cases/{}?done=1", views::enc(&id))))
    })
    .await
}

/// Most cases one bulk action takes (two queue pages' worth, and then some).
const MAX_BULK: usize = 200;

/// Several cases of the queue at once: accept, reject (one reason) or dispatch (departments and
/// one deadline). Each case is still one lifecycle event through `act`, with its own scope and
/// role-table check: what the state or the role does not allow is listed, the rest is done.
async fn bulk_act(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
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
            let action = parse_action(&f, &s, None, now)?;
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
fn queue_query_back(back: &str) -> String {
    let q: HashMap<String, String> = form_urlencoded::parse(back.as_bytes()).into_owned().collect();
    let filter = parse_filter(&q);
    views::filter_query(&filter, &filter.status, filter.page)
}

/// The media type of a stored photo or thumbnail, from its first bytes.
fn image_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

async fn photo(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |_lang, session| async move {
        let user = session.user.clone();
        let bytes = with_console(store, &session, move |console| console.photo(&user, &sha256)).await?;
        // Content-addressed: the bytes behind a hash never change.
        Ok((
            StatusCode::OK,
            [(CONTENT_TYPE, image_type(&bytes)), (CACHE_CONTROL, "private, max-age=31536000, immutable")],
            bytes,
        )
            .into_response())
    })
    .await
}

/// The case's evidence bundle as a download (`gridwork-verify` checks it).
async fn bundle(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |_lang, session| async move {
        let user = session.user.clone();
        let bytes = with_console(store, &session, move |console| console.bundle(&user, &id, now_ms())).await?;
        let code = gridwork_model::bundle::case_code(&bytes).unwrap_or_default();
        let disposition = format!("attachment; filename=\"case-{code}.gridwork-bundle\"");
        Ok((
            StatusCode::OK,
            [
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
                ),
                (CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}

async fn map_view(
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

/// The day a page asks for, or today in the district.
fn day_param(q: &HashMap<String, String>, key: &str, default_days_ago: i64) -> String {
    match q.get(key).filter(|d| !d.is_empty()) {
        Some(d) => d.clone(),
        None => gridwork_model::time::DistrictCalendar::default().day_of(now_ms() - default_days_ago * 86_400_000),
    }
}

async fn coverage(
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

fn csv_response(name: &str, body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

async fn coverage_csv(
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
fn period(q: &HashMap<String, String>) -> Result<(String, String, i64, i64), ServerError> {
    let calendar = gridwork_model::time::DistrictCalendar::default();
    let from = day_param(q, "from", 30);
    let to = day_param(q, "to", 0);
    let bad = |d: &str| ServerError::BadRequest(format!("{d:?} is not a date: use YYYY-MM-DD"));
    let (start, _) = calendar.day_bounds(&from).ok_or_else(|| bad(&from))?;
    let (_, end) = calendar.day_bounds(&to).ok_or_else(|| bad(&to))?;
    Ok((from, to, start, end))
}

async fn assessment(
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

async fn assessment_csv(
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

async fn admin(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let done = q.contains_key("done");
    let note = q.get("note").cloned();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let (devices, quarantine, people, catalog, policy) = with_console(store, &session, move |console| {
            Ok((
                console.devices(&user, now_ms())?,
                console.quarantine(&user)?,
                console.people(&user)?,
                console.catalog(&user),
                console.escalation_policy(&user)?,
            ))
        })
        .await?;
        let mut c = chrome(lang, lang.t("admin"), Some(&session));
        if done {
            c.notice = Some(match note {
                Some(n) => format!("{}: {n}", lang.t("done")),
                None => lang.t("done").to_owned(),
            });
        }
        Ok(html(StatusCode::OK, views::admin_page(c, &catalog, &devices, quarantine, &people, &policy).render()))
    })
    .await
}

/// An administration form: the CSRF token first, then the store checks the role again.
async fn admin_action(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    form: RawForm,
) -> Response {
    let f = form_map(&form);
    let store = state.store.clone();
    let server_url = format!(
        "{}://{}",
        if state.secure { "https" } else { "http" },
        headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1")
    );
    signed_in(&state, &headers, &HashMap::new(), |lang, session| async move {
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let user = session.user.clone();
        match with_console(store, &session, move |console| admin_change(console, &user, &action, &f, &server_url))
            .await?
        {
            AdminOutcome::Done(None) => Ok(redirect("/console/admin?done=1")),
            AdminOutcome::Done(Some(note)) => {
                Ok(redirect(&format!("/console/admin?done=1&note={}", views::enc(&note))))
            }
            AdminOutcome::Enrolled { for_user, device, code, uri } => {
                let qr_svg = views::qr_svg(&uri).map_err(|e| (session.clone(), e))?;
                let page = views::EnrolledPage {
                    chrome: chrome(lang, lang.t("enrol_device"), Some(&session)),
                    user: for_user,
                    device,
                    code,
                    uri,
                    qr_svg,
                };
                Ok(html(StatusCode::OK, page.render()))
            }
        }
    })
    .await
}

/// What an administration form did.
enum AdminOutcome {
    /// Done, with something to tell the administrator (e.g. overlapping grids).
    Done(Option<String>),
    /// A device was enrolled: show its one-time code and QR code.
    Enrolled { for_user: String, device: String, code: String, uri: String },
}

/// The escalation policy an administration form describes; a typed error names the field.
fn escalation_form(
    console: &dyn ConsoleStore,
    user: &crate::store::console::ConsoleUser,
    get: &dyn Fn(&str) -> String,
) -> Result<crate::rules::escalation::Policy, ServerError> {
    use crate::rules::escalation::{parse_rules, Policy};
    let bad = |e: &dyn std::fmt::Display| ServerError::BadRequest(e.to_string());
    let minute = |field: &str| -> Result<u16, ServerError> {
        let v = get(field);
        v.split_once(':')
            .and_then(|(h, m)| Some(h.parse::<u16>().ok()? * 60 + m.parse::<u16>().ok().filter(|m| *m < 60)?))
            .ok_or_else(|| ServerError::BadRequest(format!("{field} {v:?}: write a time as HH:MM")))
    };
    let weekdays = get("weekdays")
        .split_whitespace()
        .map(|d| {
            d.parse::<u8>().map_err(|_| ServerError::BadRequest(format!("weekday {d:?}: 1 (Monday) to 7 (Sunday)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dates = |field: &str| get(field).split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let mut policy = Policy {
        working_hours: gridwork_model::time::WorkingHours {
            weekdays,
            start_minute: minute("start")?,
            end_minute: minute("end")?,
            holidays: dates("holidays"),
            extra_workdays: dates("extra_workdays"),
        },
        default_rules: parse_rules(&get("default_rules")).map_err(|e| bad(&e))?,
        by_category: Default::default(),
    };
    for c in &console.catalog(user).categories {
        let text = get(&format!("rules_{}", c.id.0));
        let own = match text.trim() {
            "" => continue,
            "none" => vec![],
            t => parse_rules(t).map_err(|e| ServerError::BadRequest(format!("{}: {e}", c.id.0)))?,
        };
        policy.by_category.insert(c.id.0.clone(), own);
    }
    Ok(policy)
}

/// Applies one administration form.
fn admin_change(
    console: &dyn ConsoleStore,
    user: &crate::store::console::ConsoleUser,
    action: &str,
    f: &HashMap<String, String>,
    server_url: &str,
) -> Result<AdminOutcome, ServerError> {
    // The store checks each administration method itself (a "person" form's password too,
    // `set_person_password`); this refuses everyone else before anything is read.
    user.must_administer()?;
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let now = now_ms();
    match action {
        "enrol" => {
            let for_user = get("user");
            let (device, code) = console.enrol(user, &for_user, now)?;
            let uri = gridwork_model::wire::EnrolmentCode {
                server: server_url.to_owned(),
                code: code.clone(),
                ca_fingerprint: console.ca_fingerprint(),
                alternates: vec![],
            }
            .to_uri();
            return Ok(AdminOutcome::Enrolled { for_user, device, code, uri });
        }
        "retire" => console.retire(user, &get("device"), now)?,
        "revoke" => console.revoke(user, &get("device"))?,
        "wipe" => console.wipe(user, &get("device"), now)?,
        "release" => console.release(user, &get("key"), now)?,
        "reject" => console.reject(user, &get("key"))?,
        "person" => {
            let role = gridwork_model::catalog::Role::parse(&get("role"))
                .ok_or_else(|| ServerError::BadRequest("unknown role".into()))?;
            let department = Some(get("department")).filter(|d| !d.is_empty());
            let person = crate::store::console::PersonView {
                id: get("id"),
                role,
                department,
                scopes: get("scopes").split_whitespace().map(str::to_owned).collect(),
                has_password: false,
            };
            console.set_person(user, &person)?;
            let password = f.get("password").cloned().unwrap_or_default();
            if !password.is_empty() {
                // In the store the signed-in administrator's session belongs to, as the person
                // was just set there: never found by a name the form could spell.
                console.set_person_password(user, &person.id, &password, now)?;
            }
        }
        "category" => {
            let id = get("id");
            let hours: u32 = get("hours")
                .parse()
                .ok()
                .filter(|h| (1..=2160).contains(h))
                .ok_or_else(|| ServerError::BadRequest("a deadline is 1 to 2160 hours".into()))?;
            let mut catalog = gridwork_model::catalog::Catalog::clone(&console.catalog(user));
            let c = catalog
                .categories
                .iter_mut()
                .find(|c| c.id.0 == id)
                .ok_or_else(|| ServerError::NotFound(format!("category {id}")))?;
            c.default_deadline_hours = hours;
            c.retired = get("retired") == "1";
            console.set_catalog(user, &catalog)?;
        }
        "escalation" => console.set_escalation_policy(user, &escalation_form(console, user, &get)?)?,
        "grids" => {
            let datum = match get("datum").as_str() {
                "gcj02" => gridwork_model::geo::Datum::Gcj02,
                _ => gridwork_model::geo::Datum::Wgs84,
            };
            let file = crate::grids::parse(f.get("geojson").map(String::as_str).unwrap_or(""), datum)
                .map_err(|e| ServerError::BadRequest(e.to_string()))?;
            let merged = crate::grids::merge(&console.catalog(user), &file);
            let version = console.set_catalog(user, &merged)?;
            let mut note = format!("{} grids imported; reference data version {version}", file.grids.len());
            if !file.overlaps.is_empty() {
                let pairs: Vec<String> = file.overlaps.iter().map(|(a, b)| format!("{a} & {b}")).collect();
                note.push_str(&format!("; overlapping grids: {}", pairs.join(", ")));
            }
            return Ok(AdminOutcome::Done(Some(note)));
        }
        other => return Err(ServerError::NotFound(format!("administration action {other:?}"))),
    }
    Ok(AdminOutcome::Done(None))
}

/// The administration lists as CSV: `?list=devices|quarantine|people`.
async fn admin_csv(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let list = q.get("list").cloned().unwrap_or_default();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let name = format!("gridwork-{list}.csv");
        let body = with_console(store, &session, move |console| {
            let (header, rows): (&[&str], Vec<Vec<String>>) = match list.as_str() {
                "devices" => (
                    &[
                        "device",
                        "code",
                        "user",
                        "status",
                        "oldest_unsynced_min",
                        "last_seen",
                        "signed_links",
                        "chain_holes",
                        "chain_forks",
                    ],
                    console
                        .devices(&user, now_ms())?
                        .into_iter()
                        .map(|d| {
                            vec![
                                d.id,
                                d.code,
                                d.user,
                                d.status,
                                d.unsynced_age_ms.map(|a| (a / 60_000).to_string()).unwrap_or_default(),
                                d.last_seen_ms
                                    .map(|t| gridwork_model::time::DistrictCalendar::default().minute_of(t))
                                    .unwrap_or_default(),
                                // Empty for an app older than signing.
                                d.chain.as_ref().map(|c| c.links.to_string()).unwrap_or_default(),
                                d.chain.as_ref().map(|c| c.holes.to_string()).unwrap_or_default(),
                                d.chain.as_ref().map(|c| c.forks.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                ),
                "quarantine" => (
                    &["key", "case", "device", "reason", "status"],
                    console
                        .quarantine(&user)?
                        .into_iter()
                        .map(|q| vec![q.key, q.doc_id, q.device_id, q.reason, q.status])
                        .collect(),
                ),
                "people" => (
                    &["user", "role", "department", "scopes"],
                    console
                        .people(&user)?
                        .into_iter()
                        .map(|p| {
                            vec![p.id, p.role.as_str().to_owned(), p.department.unwrap_or_default(), p.scopes.join(" ")]
                        })
                        .collect(),
                ),
                other => {
                    return Err(ServerError::NotFound(format!("list {other:?}: use devices, quarantine or people")))
                }
            };
            views::table_csv(lang, header, &rows)
        })
        .await?;
        Ok(csv_response(&name, body))
    })
    .await
}

/// The districts a city-level person may look at.
async fn districts(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let districts = with_console(store, &session, move |console| console.districts(&user)).await?;
        let page = views::DistrictsPage { chrome: chrome(lang, lang.t("districts"), Some(&session)), districts };
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

/// A city-level person chooses the district the pages show (empty: the city centre's own).
async fn choose_district(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let f = form_map(&form);
    let store = state.store.clone();
    let secure = state.secure;
    signed_in(&state, &headers, &HashMap::new(), |_, session| async move {
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let chosen = f.get("district").cloned().unwrap_or_default();
        let user = session.user.clone();
        let known = with_console(store, &session, move |console| console.districts(&user)).await?;
        if !chosen.is_empty() && !known.contains(&chosen) {
            return Err((
                session,
                ServerError::NotFound(format!("no district {chosen}: choose one on the districts page")),
            ));
        }
        let mut resp = redirect("/console/cases");
        let (k, v) = set_cookie(DISTRICT_COOKIE, &chosen, crate::store::console::SESSION_MS / 1000, secure);
        resp.headers_mut().append(k, v);
        Ok(resp)
    })
    .await
}
