//! The HTTP surface: `POST /v1/enrol`, `POST /v1/sync`, the evidence blobs under `/v1/blobs/`,
//! `GET /v1/health`. Errors are a status
//! code and `{ "error": code, "message": … }`; storage work runs off the async runtime.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridwork_model::wire::{BlobOwner, EnrolRequest, ErrorBody, SyncRequest};
use http_body_util::BodyExt;

use crate::blobs::Begun;
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
    let token = bearer(&headers)?;
    let resp = blocking(move || {
        // Who is asking comes first: an unknown device learns nothing about the body.
        let device = store.authenticate(&token)?;
        let req: SyncRequest = parse(&body)?;
        store.sync(&device, req, now_ms())
    })
    .await?;
    Ok(Json(resp).into_response())
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
    State(store): State<Arc<dyn SyncStore>>,
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
            writer = blocking(move || {
                writer.write(&data)?;
                Ok(writer)
            })
            .await?;
        }
    }
    let status = blocking(move || store.end_blob(&device, &owner, writer, now_ms())).await?;
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

pub fn router(store: Arc<dyn SyncStore>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/enrol", post(enrol))
        .route("/v1/sync", post(sync))
        .route("/v1/blobs/{sha256}/status", get(blob_status))
        .route("/v1/blobs/{sha256}", get(get_blob).put(put_blob))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}
