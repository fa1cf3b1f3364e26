//! The supervisor console under `/console` (ADR 12): server-rendered pages for supervisors,
//! department handlers and administrators.
//!
//! - Sign-in with argon2-hashed passwords and lockout after repeated failures; a session cookie
//!   (HttpOnly, SameSite=Strict, Secure under TLS) whose token the store keeps only as a hash.
//! - Every form carries the session's CSRF token (the sign-in form a double-submit token), checked
//!   before anything else; a device's bearer token means nothing here.
//! - Every page and action asks the store, which checks role and scope itself.
//!
//! Handlers are thin: parse, call the store off the async runtime, build a view, render. They
//! live in a module per page, as the templates do — `auth` (sign-in, districts), `queue` (the
//! queue, search, bulk triage), `case`, `reports` (map, coverage, assessment), `overview`,
//! `admin` — with their view models in the same-named modules of `views`; this module holds the
//! routes and what every page shares (sessions, cookies, CSRF, errors as pages).

mod admin;
mod auth;
mod case;
pub mod charts;
pub mod i18n;
pub mod map;
pub mod overview;
mod queue;
mod reports;
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
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/cases", get(queue::queue))
        .route("/console/cases.csv", get(queue::queue_csv))
        .route("/console/cases/{id}", get(case::case_detail))
        .route("/console/cases/{id}/act", post(case::act))
        .route("/console/cases/bulk", post(queue::bulk_act))
        .route("/console/cases/{id}/bundle", get(case::bundle))
        .route("/console/photos/{sha256}", get(case::photo))
        .route("/console/map", get(reports::map_view))
        .route("/console/overview", get(overview::overview))
        .route("/console/overview.csv", get(overview::overview_csv))
        .route("/console/coverage", get(reports::coverage))
        .route("/console/coverage.csv", get(reports::coverage_csv))
        .route("/console/assessment", get(reports::assessment))
        .route("/console/assessment.csv", get(reports::assessment_csv))
        .route("/console/admin", get(admin::admin))
        .route("/console/admin.csv", get(admin::admin_csv))
        .route("/console/admin/{action}", post(admin::admin_action))
        .route("/console/districts", get(auth::districts).post(auth::choose_district))
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

fn form_map(form: &RawForm) -> HashMap<String, String> {
    form_urlencoded::parse(&form.0).into_owned().collect()
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

/// The day a page asks for, or today in the district.
fn day_param(q: &HashMap<String, String>, key: &str, default_days_ago: i64) -> String {
    match q.get(key).filter(|d| !d.is_empty()) {
        Some(d) => d.clone(),
        None => gridwork_model::time::DistrictCalendar::default().day_of(now_ms() - default_days_ago * 86_400_000),
    }
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
