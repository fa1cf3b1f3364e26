//! The HTTP surface: `POST /v1/enrol`, `POST /v1/sync`, the evidence blobs under `/v1/blobs/`,
//! `GET /v1/health`; `/metrics` on its own listener ([`metrics_router`]). Errors are a status
//! code and `{ "error": code, "message": … }`; storage work runs off the async runtime. Every
//! bound a request meets is in [`crate::limits`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, MatchedPath, Path, Query, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridwork_model::wire::{BlobOwner, EnrolRequest, ErrorBody, Outcome, SyncRequest};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::blobs::Begun;
use crate::error::ServerError;
use crate::limits::{self, BodyDeadline, EnrolLimits, MemoryBudget, Reservation};
use crate::metrics::{ItemOutcome, Metrics};
use crate::store::SyncStore;

pub use crate::limits::MAX_BODY_BYTES;

/// What every handler shares: the store, and the metrics it reports to.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn SyncStore>,
    pub metrics: Arc<Metrics>,
    /// Bytes requests in flight may buffer, together: requests that declare at most
    /// [`limits::SMALL_REQUEST_BYTES`] (every phone's page) from `budget`, larger or undeclared
    /// ones from `large_budget`, so a flood of large requests never starves the phones.
    pub budget: MemoryBudget,
    pub large_budget: MemoryBudget,
    pub enrol_limits: Arc<EnrolLimits>,
    /// How long a request's body may take to arrive.
    pub body_timeout: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl FromRef<AppState> for Arc<dyn SyncStore> {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

/// The error code of a refused request, left on the response for the metrics layer.
#[derive(Clone, Copy)]
struct ErrorCode(&'static str);

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let mut resp = (status, Json(ErrorBody { error: code.to_owned(), message: self.to_string() })).into_response();
        if let ServerError::RateLimited { retry_after_s, .. } | ServerError::Busy { retry_after_s } = &self {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        resp.extensions_mut().insert(ErrorCode(code));
        resp
    }
}

/// Times every routed request and counts refusals by code.
async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    metrics.request(&endpoint, resp.status().as_u16(), start.elapsed().as_secs_f64());
    if let Some(ErrorCode(code)) = resp.extensions().get::<ErrorCode>() {
        metrics.error(code);
    }
    resp
}

async fn metrics_text(State(state): State<AppState>) -> Result<Response, ServerError> {
    let store = state.store.clone();
    let stats = blocking(move || store.operator_stats(now_ms())).await?;
    let text = state.metrics.render(&stats).map_err(|e| ServerError::Internal(format!("metrics: {e}")))?;
    Ok(([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

use crate::clock::now_ms;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ServerError> {
    serde_json::from_slice(body).map_err(|e| ServerError::BadRequest(format!("body is not a valid request: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServerError::Internal(format!("worker failed: {e}")))?
}

/// A request's declared length, when it declares one.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
}

/// JSON endpoints take JSON only: anything else is refused before its body is read.
fn require_json(headers: &HeaderMap) -> Result<(), ServerError> {
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ServerError::UnsupportedMediaType(format!("content type {ct:?} is not accepted here")))
    }
}

/// The next piece of a body, by the deadline [`limits::BodyDeadline`] sets for what has arrived.
async fn next_piece(
    body: &mut Body,
    clock: &BodyDeadline,
    received: u64,
    timeout: std::time::Duration,
) -> Result<Option<Bytes>, ServerError> {
    loop {
        let frame = match tokio::time::timeout_at(clock.next(received), body.frame()).await {
            Err(_) => return Err(ServerError::RequestTimeout { seconds: timeout.as_secs() }),
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => {
                frame.map_err(|e| ServerError::BadRequest(format!("the body did not arrive whole: {e}")))?
            }
        };
        // Trailers carry no bytes; skip them.
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// Reads a body of at most `limit` bytes, which must arrive within `timeout` and at a minimum
/// average rate ([`limits::BodyDeadline`]). With a `budget`, the bytes are taken from it as they
/// arrive (in steps of 64 KiB, kept in `held`): a body trickling in holds next to nothing, and a
/// flood of large bodies waits for the budget instead of growing the server.
async fn read_body(
    mut body: Body,
    limit: usize,
    timeout: std::time::Duration,
    budget: Option<(&MemoryBudget, &mut Vec<Reservation>)>,
) -> Result<Bytes, ServerError> {
    const STEP: usize = 64 * 1024;
    let clock = BodyDeadline::start(timeout);
    let mut out = Vec::new();
    let mut reserved = 0usize;
    let mut budget = budget;
    while let Some(piece) = next_piece(&mut body, &clock, out.len() as u64, timeout).await? {
        if out.len() + piece.len() > limit {
            return Err(ServerError::TooLarge { limit });
        }
        if let Some((b, held)) = budget.as_mut() {
            if out.len() + piece.len() > reserved {
                let more = piece.len().max(STEP);
                held.push(b.reserve(more).await?);
                reserved += more;
            }
        }
        out.extend_from_slice(&piece);
    }
    Ok(Bytes::from(out))
}

async fn enrol(State(state): State<AppState>, req: Request) -> Result<Response, ServerError> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    require_json(req.headers())?;
    let body = read_body(req.into_body(), limits::MAX_ENROL_BODY_BYTES, state.body_timeout, None).await?;
    let enrolment: EnrolRequest = parse(&body)?;
    state.enrol_limits.check(peer, &enrolment.code)?;
    let (store, code) = (state.store.clone(), enrolment.code.clone());
    match blocking(move || store.redeem(&enrolment, now_ms())).await {
        Ok(resp) => Ok(Json(resp).into_response()),
        Err(ServerError::BadEnrolmentCode) => {
            state.enrol_limits.failed(peer, &code)?;
            Err(ServerError::BadEnrolmentCode)
        }
        Err(e) => Err(e),
    }
}

async fn sync(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ServerError> {
    // Who is asking comes first: an unknown device learns nothing and costs no body.
    let token = bearer(&headers)?;
    let store = state.store.clone();
    let device = blocking(move || store.authenticate(&token)).await?;
    require_json(&headers)?;
    if content_length(&headers).is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ServerError::TooLarge { limit: MAX_BODY_BYTES });
    }
    // The body (as it arrives), what parsing it costs, and the page pulled for it are buffered:
    // their bytes come from the budget first.
    let pool = match content_length(&headers) {
        Some(n) if n <= limits::SMALL_REQUEST_BYTES => &state.budget,
        _ => &state.large_budget,
    };
    let mut held = vec![];
    let body = read_body(body, MAX_BODY_BYTES, state.body_timeout, Some((pool, &mut held))).await?;
    // Never more than the pool has left beside what this request already holds (a request
    // larger than the pool runs alone rather than wait for itself).
    let holding: usize = held.iter().map(Reservation::bytes).sum();
    let wanted = (body.len() * 2 + limits::MAX_PULL_BYTES as usize).min(pool.total().saturating_sub(holding));
    held.push(pool.reserve(wanted).await?);
    let up = body.len();
    let store = state.store.clone();
    let start = std::time::Instant::now();
    let (device, resp) = blocking(move || {
        let req: SyncRequest = parse(&body)?;
        let items = req.changes.len() + req.records.len() + req.want_full.len();
        if items > limits::MAX_ITEMS_PER_REQUEST {
            return Err(ServerError::TooManyItems { items, limit: limits::MAX_ITEMS_PER_REQUEST });
        }
        drop(body);
        let resp = store.sync(&device, req, now_ms())?;
        Ok((device.id, resp))
    })
    .await?;
    let json = serde_json::to_vec(&resp).map_err(|e| ServerError::Internal(e.to_string()))?;
    let outcome = |o: &Outcome| match o {
        Outcome::Accepted => ItemOutcome::Accepted,
        Outcome::Quarantined => ItemOutcome::Quarantined,
        Outcome::Refused => ItemOutcome::Refused,
    };
    state.metrics.sync(up, json.len(), resp.results.iter().map(|r| outcome(&r.outcome)));
    // The device id is pseudonymous; no user, no case content.
    tracing::info!(
        device = %device,
        pushed = resp.results.len(),
        refused = resp.results.iter().filter(|r| r.outcome == Outcome::Refused).count(),
        pulled_docs = resp.docs.len(),
        bytes_up = up,
        bytes_down = json.len(),
        reoffer = resp.reoffer,
        ms = start.elapsed().as_millis() as u64,
        "sync"
    );
    Ok(([(CONTENT_TYPE, "application/json")], json).into_response())
}

/// `POST /v1/wiped`: the phone destroyed its store, as its last sync's `wipe_now` told it; its
/// token stops working. No body.
async fn wiped(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let store = state.store.clone();
    blocking(move || store.report_wiped(&token, now_ms())).await?;
    Ok(Json(serde_json::json!({ "wiped": true })).into_response())
}

/// `POST /v1/status`: where the device stands (`DeviceStatus`), for an app past its offline limit.
async fn device_status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let store = state.store.clone();
    let device = blocking(move || store.authenticate(&token)).await?;
    let status = match (device.wipe, device.retired) {
        (true, _) => "wipe",
        (false, true) => "retired",
        (false, false) => "active",
    };
    Ok(Json(gridwork_model::wire::DeviceStatus {
        device_id: device.id,
        status: status.to_owned(),
        server_time_ms: now_ms(),
    })
    .into_response())
}

fn bearer(headers: &HeaderMap) -> Result<String, ServerError> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or(ServerError::Unauthenticated)
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    owner: Option<String>,
}

async fn blob_status(
    State(store): State<Arc<dyn SyncStore>>,
    Path(sha256): Path<String>,
    query: Result<Query<StatusQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let Query(q) = query.map_err(|e| ServerError::BadRequest(e.body_text()))?;
    let owner = match q.owner {
        Some(o) => Some(
            BlobOwner::parse(&o)
                .ok_or_else(|| ServerError::BadRequest(format!("owner {o:?} is not case:ID or check_in:ID")))?,
        ),
        None => None,
    };
    let status = blocking(move || {
        let device = store.authenticate(&token)?;
        store.blob_status(&device, &sha256, owner.as_ref())
    })
    .await?;
    Ok(Json(status).into_response())
}

#[derive(serde::Deserialize)]
struct PutBlobQuery {
    offset: u64,
    total: u64,
    owner: String,
}

/// Receives bytes `offset..` of a blob as they arrive: a request cut in the middle keeps what got
/// through, so the phone resumes from there instead of resending the whole chunk.
async fn put_blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    query: Result<Query<PutBlobQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let Query(q) = query.map_err(|e| {
        ServerError::BadRequest(format!("{}: PUT /v1/blobs/SHA256?offset=N&total=N&owner=case:ID", e.body_text()))
    })?;
    let owner = BlobOwner::parse(&q.owner)
        .ok_or_else(|| ServerError::BadRequest(format!("owner {:?} is not case:ID or check_in:ID", q.owner)))?;
    let len = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let store = state.store.clone();
    let (store2, owner2) = (store.clone(), owner.clone());
    let (device, begun) = blocking(move || {
        let device = store2.authenticate(&token)?;
        let begun = store2.begin_blob(&device, &sha256, &owner2, q.offset, q.total, len, now_ms())?;
        Ok((device, begun))
    })
    .await?;
    let mut writer = match begun {
        Begun::Complete(status) => return Ok(Json(status).into_response()),
        Begun::Open(w) => w,
    };
    let mut body = body;
    let clock = BodyDeadline::start(state.body_timeout);
    let mut received = 0u64;
    // A cut connection, or a body slower than its deadline, ends the request; what arrived before
    // it stays (the writer's drop frees the blob for the phone's next attempt).
    while let Some(data) = next_piece(&mut body, &clock, received, state.body_timeout).await? {
        received += data.len() as u64;
        state.metrics.blob_bytes(data.len() as u64);
        writer = blocking(move || {
            writer.write(&data)?;
            Ok(writer)
        })
        .await?;
    }
    let device_id = device.id.clone();
    let status = blocking(move || store.end_blob(&device, &owner, writer, now_ms())).await?;
    if status.complete {
        tracing::info!(device = %device_id, blob = %&status.sha256[..12], bytes = status.offset, "blob stored");
    }
    Ok(Json(status).into_response())
}

async fn get_blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let (store, sha) = (state.store.clone(), sha256.clone());
    // Its size first (with the same scope check), so its bytes come from the budget.
    let (device, status) = blocking(move || {
        let device = store.authenticate(&token)?;
        let status = store.blob_status(&device, &sha, None)?;
        Ok((device, status))
    })
    .await?;
    let _reserved = state.budget.reserve(usize::try_from(status.offset).unwrap_or(usize::MAX)).await?;
    let store = state.store.clone();
    let bytes = blocking(move || store.get_blob(&device, &sha256)).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn not_found() -> ServerError {
    ServerError::NotFound("no such endpoint; see docs/PROTOCOL.md".into())
}

/// Every route of the sync listener: the sync protocol and the supervisor console under
/// `/console` (`secure`: served over TLS, so console cookies are `Secure`). `/metrics` is not
/// here: it has a listener of its own ([`metrics_router`]), on loopback unless the operator
/// says otherwise.
pub fn router(store: Arc<dyn SyncStore>, metrics: Arc<Metrics>, secure: bool) -> Router {
    router_with(store, metrics, secure, limits::BODY_TIMEOUT)
}

/// [`router`] with another body timeout (tests use a short one).
pub fn router_with(
    store: Arc<dyn SyncStore>,
    metrics: Arc<Metrics>,
    secure: bool,
    body_timeout: std::time::Duration,
) -> Router {
    let state = AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        budget: MemoryBudget::new(limits::MEMORY_BUDGET_BYTES),
        large_budget: MemoryBudget::new(limits::LARGE_REQUEST_BUDGET_BYTES),
        enrol_limits: Arc::new(EnrolLimits::default()),
        body_timeout,
    };
    let protocol: Router = Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/enrol", post(enrol))
        .route("/v1/sync", post(sync))
        .route("/v1/wiped", post(wiped))
        .route("/v1/status", post(device_status))
        .route("/v1/blobs/{sha256}/status", get(blob_status))
        .route("/v1/blobs/{sha256}", get(get_blob).put(put_blob))
        .with_state(state);
    protocol
        .merge(crate::console::routes(store, secure))
        .route_layer(middleware::from_fn_with_state(metrics, track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `/metrics` for Prometheus, on its own listener: operators scrape it from the server's host
/// (or a network they choose), and devices on the sync listener never reach it.
pub fn metrics_router(store: Arc<dyn SyncStore>, metrics: Arc<Metrics>, token: Option<Arc<str>>) -> Router {
    let state = AppState {
        store,
        metrics,
        budget: MemoryBudget::new(limits::MEMORY_BUDGET_BYTES),
        large_budget: MemoryBudget::new(limits::LARGE_REQUEST_BUDGET_BYTES),
        enrol_limits: Arc::new(EnrolLimits::default()),
        body_timeout: limits::BODY_TIMEOUT,
    };
    let router = Router::new().route("/metrics", get(metrics_text)).fallback(not_found).with_state(state);
    match token {
        Some(token) => router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                if bearer_matches(req.headers(), &token) {
                    next.run(req).await
                } else {
                    (StatusCode::UNAUTHORIZED, "/metrics needs the operator's bearer token\n").into_response()
                }
            }
        })),
        None => router,
    }
}

/// `Authorization: Bearer TOKEN`, compared in constant time (the token guards an endpoint that
/// may listen beyond loopback).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else { return false };
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(token.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
