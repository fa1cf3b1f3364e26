//! The HTTP surface: `POST /v1/enrol`, `POST /v1/sync`, `GET /v1/health`. Errors are a status
//! code and `{ "error": code, "message": … }`; storage work runs off the async runtime.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridwork_model::wire::{EnrolRequest, ErrorBody, SyncRequest};

use crate::error::ServerError;
use crate::store::SyncStore;

/// Largest request body accepted (a page of pushed changes).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: code.to_owned(), message: self.to_string() })).into_response()
    }
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

async fn sync(
    State(store): State<Arc<dyn SyncStore>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServerError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ServerError::Unauthenticated)?
        .to_owned();
    let resp = blocking(move || {
        // Who is asking comes first: an unknown device learns nothing about the body.
        let device = store.authenticate(&token)?;
        let req: SyncRequest = parse(&body)?;
        store.sync(&device, req, now_ms())
    })
    .await?;
    Ok(Json(resp).into_response())
}

async fn not_found() -> ServerError {
    ServerError::NotFound("no such endpoint; see docs/PROTOCOL.md".into())
}

pub fn router(store: Arc<dyn SyncStore>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/enrol", post(enrol))
        .route("/v1/sync", post(sync))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}
