//! The HTTP surface: `POST /v1/enrol`, `POST /v1/sync`, the evidence blobs under `/v1/blobs/`,
//! `GET /metrics`, `GET /v1/health`. Errors are a status
//! code and `{ "error": code, "message": … }`; storage work runs off the async runtime.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Path, Query, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridwork_model::wire::{BlobOwner, EnrolRequest, ErrorBody, Outcome, SyncRequest};
use http_body_util::BodyExt;

use crate::blobs::Begun;
use crate::error::ServerError;
use crate::metrics::{ItemOutcome, Metrics};
use crate::store::SyncStore;

/// Largest request body accepted (a page of pushed changes).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What every handler shares: the store, and the metrics it reports to.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn SyncStore>,
    pub metrics: Arc<Metrics>,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ServerError> {
    serde_json::from_slice(body).map_err(|e| ServerError::BadRequest(format!("body is not a valid request: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServerError::Internal(format!("worker failed: {e}")))?
}

/// The body, or a JSON error instead of axum's plain-text rejection.
fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ServerError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::TooLarge { limit: MAX_BODY_BYTES }
        } else {
            ServerError::BadRequest(e.body_text())
        }
    })
}

async fn enrol(
    State(store): State<Arc<dyn SyncStore>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    let body = body_or_error(body)?;
    let req: EnrolRequest = parse(&body)?;
    let resp = blocking(move || store.redeem(&req, now_ms())).await?;
    Ok(Json(resp).into_response())
}

async fn sync(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let up = body.len();
    let store = state.store.clone();
    let start = std::time::Instant::now();
    let (device, resp) = blocking(move || {
        // Who is asking comes first: an unknown device learns nothing about the body.
        let device = store.authenticate(&token)?;
        let req: SyncRequest = parse(&body)?;
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

fn bearer(headers: &HeaderMap) -> Result<String, ServerError> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or(ServerError::Unauthenticated)
}

async fn blob_status(
    State(store): State<Arc<dyn SyncStore>>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let status = blocking(move || {
        let device = store.authenticate(&token)?;
        store.blob_status(&device, &sha256)
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
    while let Some(frame) = body.frame().await {
        // A cut connection ends the request; what arrived before it stays (the writer's drop
        // frees the blob for the phone's next attempt).
        let frame = frame.map_err(|e| ServerError::BadRequest(format!("upload interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            state.metrics.blob_bytes(data.len() as u64);
            writer = blocking(move || {
                writer.write(&data)?;
                Ok(writer)
            })
            .await?;
        }
    }
    let device_id = device.id.clone();
    let status = blocking(move || store.end_blob(&device, &owner, writer, now_ms())).await?;
    if status.complete {
        tracing::info!(device = %device_id, blob = %&status.sha256[..12], bytes = status.offset, "blob stored");
    }
    Ok(Json(status).into_response())
}

async fn get_blob(
    State(store): State<Arc<dyn SyncStore>>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ServerError> {
    let token = bearer(&headers)?;
    let bytes = blocking(move || {
        let device = store.authenticate(&token)?;
        store.get_blob(&device, &sha256)
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn not_found() -> ServerError {
    ServerError::NotFound("no such endpoint; see docs/PROTOCOL.md".into())
}

/// Every route: the sync protocol, metrics, and the supervisor console under `/console`
/// (`secure`: served over TLS, so console cookies are `Secure`).
pub fn router(store: Arc<dyn SyncStore>, metrics: Arc<Metrics>, secure: bool) -> Router {
    let state = AppState { store: store.clone(), metrics: metrics.clone() };
    let protocol: Router = Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/enrol", post(enrol))
        .route("/v1/sync", post(sync))
        .route("/v1/blobs/{sha256}/status", get(blob_status))
        .route("/v1/blobs/{sha256}", get(get_blob).put(put_blob))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    protocol
        .merge(crate::console::routes(store, secure))
        .route_layer(middleware::from_fn_with_state(metrics, track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
