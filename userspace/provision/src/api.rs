//! The HTTP API (DESIGN.md section 5, a contract), as one router: [`app`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/health` | 200 status, provisioned, build id, slot, generation, last import error, listening addresses, running job |
//! | `GET /api/nonce` | 200 `{"nonce","expires_in"}` |
//! | `POST /api/validate` | 200 `{"valid":true,"warnings"}` / 422 `{"valid":false,"errors"}` / 413 / 415 |
//! | `POST /api/config` | 202 + `Location`; 401, 409, 413, 415, 422 |
//! | `POST /api/update[?reboot=true]` | a RAUC bundle, streamed to disk: 202 + `Location`; 400, 401, 409, 413, 415, 507 |
//! | `GET /api/jobs/{id}` | 200 the job / 404 |
//!
//! Every error is `{"error": "..."}` saying what to fix (422 carries the problems).

use std::sync::Arc;
use std::time::Instant;

use atomix_config::generations::Origin;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::json;

use crate::apply::chain;
use crate::auth::{self, Signature};
use crate::input::{self, Kind, Problem, Rejected};
use crate::jobs::Job;
use crate::service::{ImportError, Service};
use crate::update::{self, Bundle, Upload, UploadError, BUNDLE_LIMIT};

/// Largest request body: the bundle limit of the config crate (16 MiB).
pub const BODY_LIMIT: usize = 16 << 20;

/// The content type of `POST /api/update`'s body.
pub const BUNDLE_TYPE: &str = "application/octet-stream";

pub const NONCE_HEADER: &str = "x-atomix-nonce";
pub const SIGNATURE_HEADER: &str = "x-atomix-signature";

/// Everything a handler can answer besides success. Messages are for the client: what
/// to fix, never internals (those go to the journal).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("not found")]
    NotFound,
    #[error("another apply job is running")]
    Busy { job: String },
    #[error("another bundle upload is in progress; try again once it has finished")]
    UploadBusy,
    #[error("{0}")]
    TooLarge(String),
    #[error("unsupported content type {got:?}: send {expected}")]
    UnsupportedType { got: String, expected: &'static str },
    #[error("{0}")]
    NoSpace(String),
    #[error("the config is not valid")]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error; see the device's journal")]
    Internal,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let msg = self.to_string();
        match self {
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, Json(json!({"error": msg}))),
            AppError::NotFound => (StatusCode::NOT_FOUND, Json(json!({"error": msg}))),
            AppError::Busy { job } => (
                StatusCode::CONFLICT,
                Json(json!({"error": msg, "job": format!("/api/jobs/{job}")})),
            ),
            AppError::UploadBusy => (StatusCode::CONFLICT, Json(json!({"error": msg}))),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"error": msg}))),
            AppError::NoSpace(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                Json(json!({"error": msg})),
            ),
            AppError::UnsupportedType { .. } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Json(json!({"error": msg})),
            ),
            AppError::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"valid": false, "error": msg, "errors": errors})),
            ),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))),
            AppError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": msg})),
            ),
        }
        .into_response()
    }
}

impl From<Rejected> for AppError {
    fn from(r: Rejected) -> Self {
        match r {
            Rejected::TooLarge(m) => AppError::TooLarge(m),
            Rejected::Invalid(p) => AppError::Invalid(p),
        }
    }
}

/// The router over shared service state.
pub fn app(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/nonce", get(nonce))
        .route("/api/validate", post(validate))
        .route("/api/config", post(config))
        .route("/api/update", post(update))
        .route("/api/jobs/{id}", get(job))
        .merge(crate::console::routes())
        .fallback(|| async { AppError::NotFound })
        .with_state(svc)
}

#[derive(Debug, Serialize)]
#[serde(deny_unknown_fields)]
struct Health {
    status: &'static str,
    provisioned: bool,
    build_id: Option<String>,
    slot: Option<String>,
    generation: Option<u64>,
    last_import_error: Option<ImportError>,
    listening: Vec<String>,
    job: Option<String>,
}

async fn health(State(svc): State<Arc<Service>>) -> Json<Health> {
    let generation = svc.current();
    let (last_import_error, listening) = {
        let s = svc.status.lock().unwrap_or_else(|e| e.into_inner());
        (s.last_import_error.clone(), s.listening.clone())
    };
    Json(Health {
        status: "ok",
        provisioned: generation.is_some(),
        build_id: svc.boot.as_ref().and_then(|b| b.build_id.clone()),
        slot: svc.boot.as_ref().map(|b| b.slot.to_string()),
        generation,
        last_import_error,
        listening,
        job: svc.tracker.running().map(|id| format!("/api/jobs/{id}")),
    })
}

async fn nonce(State(svc): State<Arc<Service>>) -> Json<serde_json::Value> {
    Json(json!({
        "nonce": svc.issue_nonce(),
        "expires_in": auth::NONCE_TTL.as_secs(),
    }))
}

/// The body and what it is: 415 for an unknown type, 413 past the limit.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<(Kind, Bytes), AppError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = Kind::from_content_type(ct).ok_or_else(|| AppError::UnsupportedType {
        got: ct.into(),
        expected: "application/toml, text/plain, application/x-tar or application/gzip",
    })?;
    let too_large = || AppError::TooLarge(format!("the body is larger than {BODY_LIMIT} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large()
            } else {
                AppError::BadRequest("the request body could not be read".into())
            }
        })?
        .to_bytes();
    Ok((kind, bytes))
}

async fn validate(
    State(_svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, AppError> {
    let (kind, bytes) = read_body(&headers, body).await?;
    let accepted = input::check(&bytes, kind)?;
    Ok(Json(json!({"valid": true, "warnings": accepted.warnings})))
}

/// Checks nonce and signature; returns the signer's fingerprint.
fn authenticate(svc: &Service, headers: &HeaderMap, body: &[u8]) -> Result<String, AppError> {
    let (nonce, signature) = check_signer(svc, headers)?;
    signature
        .verify(&auth::signed_message(&nonce, body))
        .map_err(|e| AppError::Unauthorized(e.to_string()))
}

/// What the headers alone can tell: the nonce (used up here, whatever comes next) and a
/// well-formed signature by a trusted key, still to be checked against the body.
fn check_signer(svc: &Service, headers: &HeaderMap) -> Result<(String, Signature), AppError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                AppError::Unauthorized(format!(
                    "missing {name} header: fetch a nonce from /api/nonce and sign it with ssh-keygen -Y sign -n atomix-provision"
                ))
            })
    };
    let nonce = header(NONCE_HEADER)?;
    let signature = header(SIGNATURE_HEADER)?;
    svc.nonces
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .consume(nonce, Instant::now())
        .map_err(|e| AppError::Unauthorized(e.to_string()))?;
    let signature = Signature::by_trusted_key(&svc.trusted_keys(), signature)
        .map_err(|e| AppError::Unauthorized(e.to_string()))?;
    Ok((nonce.to_owned(), signature))
}

async fn config(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let (kind, bytes) = read_body(&headers, body).await?;
    let signer = authenticate(&svc, &headers, &bytes)?;
    let accepted = input::check(&bytes, kind)?;
    let id = svc
        .start_import(accepted, Origin::Api, Some(signer))
        .map_err(|busy| AppError::Busy { job: busy.0 })?;
    accepted_job(&id)
}

/// `202 Accepted` with the job's URL in `Location` and the body.
fn accepted_job(id: &str) -> Result<Response, AppError> {
    let url = format!("/api/jobs/{id}");
    let mut response = (StatusCode::ACCEPTED, Json(json!({"id": id, "job": url}))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|_| AppError::Internal)?,
    );
    Ok(response)
}

/// `POST /api/update`: a RAUC bundle, authenticated like `/api/config`. Checked in order:
/// query (400), type (415), declared size (413); then, from the headers alone, nonce
/// and signer (401) and single flight (409: a job runs, or another upload), answered
/// after reading the body without storing it, so a client still sending gets the
/// answer rather than a reset; then the body is stored as it arrives (413 past the
/// limit, 507 when /data is full), its signature checked (401: the file is removed),
/// and the update job started (409: the file is removed).
async fn update(
    State(svc): State<Arc<Service>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let reboot = update::parse_query(uri.query()).map_err(AppError::BadRequest)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case(BUNDLE_TYPE))
    {
        return Err(AppError::UnsupportedType {
            got: ct.into(),
            expected: "the RAUC bundle as application/octet-stream",
        });
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BUNDLE_LIMIT) {
        return Err(AppError::TooLarge(format!(
            "the bundle is larger than {BUNDLE_LIMIT} bytes"
        )));
    }
    let early = check_signer(&svc, &headers).and_then(|(nonce, signature)| {
        if let Some(job) = svc.tracker.running() {
            return Err(AppError::Busy { job });
        }
        let slot = svc.upload_slot.try_take().ok_or(AppError::UploadBusy)?;
        Ok((nonce, signature, slot))
    });
    let (nonce, signature, _slot) = match early {
        Ok(ok) => ok,
        Err(e) => {
            crate::logging::warn(&format!("bundle upload refused: {e}"));
            discard(body).await;
            return Err(e);
        }
    };
    let bundle = receive(svc.paths.uploads(), body).await?;
    let signer = signature
        .verify(&auth::signed_message_for_digest(&nonce, &bundle.sha256))
        .map_err(|e| {
            crate::logging::warn(&format!(
                "bundle upload (sha256 {}) refused: {e}",
                bundle.sha256
            ));
            AppError::Unauthorized(e.to_string())
        })?;
    let id = svc
        .start_update(update::Request {
            bundle,
            signer,
            reboot,
        })
        .map_err(|busy| AppError::Busy { job: busy.0 })?;
    accepted_job(&id)
}

/// Reads a body to its end (at most the bundle limit) and drops it.
async fn discard(body: Body) {
    let mut body = Limited::new(body, BUNDLE_LIMIT as usize);
    while let Some(Ok(_)) = body.frame().await {}
}

/// A piece of the body for the writer thread; `End` says the body is complete (a
/// writer whose channel closes without it was cut off, and stores nothing).
enum Chunk {
    Data(Bytes),
    End,
}

/// Stores the body under `dir` as it arrives. Writing, hashing and syncing (a few
/// hundred MiB to an SD card) run on a blocking thread, so the API stays responsive.
async fn receive(dir: std::path::PathBuf, mut body: Body) -> Result<Bundle, AppError> {
    let upload = Upload::create(&dir, BUNDLE_LIMIT).map_err(upload_error)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let mut upload = upload;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(bytes) => upload.write(&bytes)?,
                Chunk::End => return upload.finish().map(Some),
            }
        }
        Ok(None)
    });
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            if tx.send(Chunk::Data(data)).await.is_err() {
                break; // The writer stopped; its result says why.
            }
        }
    }
    if complete {
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);
    match writer.await {
        Ok(Ok(Some(bundle))) => Ok(bundle),
        Ok(Ok(None)) => Err(AppError::BadRequest(
            "the request body could not be read to its end".into(),
        )),
        Ok(Err(e)) => Err(upload_error(e)),
        Err(_) => Err(AppError::Internal),
    }
}

fn upload_error(e: UploadError) -> AppError {
    match e {
        UploadError::TooLarge { .. } => AppError::TooLarge(e.to_string()),
        UploadError::NoSpace { .. } => AppError::NoSpace(e.to_string()),
        UploadError::Io { .. } => {
            crate::logging::error(&format!("bundle upload: {}", chain(&e)));
            AppError::Internal
        }
    }
}

async fn job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Json<Job>, AppError> {
    svc.tracker.get(&id).map(Json).ok_or(AppError::NotFound)
}
