//! The HTTP API (DESIGN.md section 5, a contract), as one router: [`app`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/health` | 200 status, provisioned, build id, slot, generation, last import error, listening addresses, running job, last update job, hawkBit server (last poll, action) |
//! | `GET /api/nonce` | 200 `{"nonce","expires_in"}` |
//! | `POST /api/validate` | 200 `{"valid":true,"warnings"}` / 422 `{"valid":false,"errors"}` / 408 / 413 / 415 / 503 |
//! | `POST /api/config` | 202 + `Location`; 400, 401, 408, 409, 413, 415, 422 |
//! | `POST /api/update[?reboot=true]` | a RAUC bundle, streamed to disk: 202 + `Location`; 400, 401, 408, 409, 413, 415, 507 |
//! | `POST /api/factory-reset` | a signed `{"confirm":"erase"}`: 202 + `Location` (a factory-reset job); 400, 401, 408, 409, 413, 415, 422 |
//! | `GET /api/jobs` | signed over the empty body: 200 the recent jobs with their events; 400, 401, 408, 413 |
//! | `GET /api/jobs/{id}` | 200 the job / 404 |
//!
//! Every error is `{"error": "..."}` saying what to fix (422 carries the problems). The
//! routes, headers, limits and bodies are the API's contract, [`atomix_api`].
//!
//! Mutating requests are authenticated from their headers alone (`X-Atomix-Nonce`,
//! `X-Atomix-Content-SHA256`, `X-Atomix-Signature`) before any body byte is read; the
//! body is then checked against the signed SHA-256 as it arrives. Status order: 413
//! (declared size) before 401 before 415, 409 and anything the body decides; a refused
//! request never spends its nonce.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the router, errors as answers, health and nonces, the time and size limits |
//! | `authorized.rs` | authentication from the headers: nonce, signed digest, signature |
//! | `body.rs` | reading bodies within their limits and times, refusing early |
//! | `config_upload.rs` | validate and config uploads |
//! | `update_upload.rs` | RAUC bundle uploads, streamed to disk |
//! | `factory_reset.rs` | the signed reset |
//! | `job_routes.rs` | a job, and the signed list of recent jobs |

use std::sync::Arc;
use std::time::{Duration, Instant};

use atomix_api::headers::{
    CONTENT_SHA256 as DIGEST_HEADER, NONCE as NONCE_HEADER, SIGNATURE as SIGNATURE_HEADER,
};
use atomix_api::limits::{
    CONFIG_BUNDLE_BYTES, CONFIG_TEXT_BYTES, FACTORY_RESET_BYTES, JOB_LIST_LEN, NONCE_TTL,
    UPDATE_BUNDLE_BYTES,
};
use atomix_api::{
    media_types, routes, Accepted, ErrorBody, FactoryReset, Health, Invalid, JobList, Nonce,
    Validated,
};
use atomix_config::generations::Origin;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use sha2::{Digest as _, Sha256};

use crate::auth::{self, Signature};
use crate::input::{self, Kind, Problem, Rejected};
use crate::jobs::Job;
use crate::listen::{Peer, PeerKey};
use crate::service::Service;
use crate::update::{self, Bundle, Upload, UploadError};

mod authorized;
mod body;
mod config_upload;
mod factory_reset;
mod job_routes;
mod update_upload;

use authorized::authenticate;
pub use authorized::{parse_signed_headers, SignedHeaders};
use body::*;
use config_upload::{accepted_job, config, validate};
use factory_reset::factory_reset;
use job_routes::{job, job_list};
use update_upload::update;

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
    Unconfirmed(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error; see the device's journal")]
    Internal,
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Busy { .. } | AppError::UploadBusy => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            AppError::UnsupportedType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Invalid(_) | AppError::Unconfirmed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = self.to_string();
        let mut response = match self {
            AppError::Busy { job } => (
                status,
                Json(ErrorBody {
                    error,
                    job: Some(routes::job(&job)),
                }),
            )
                .into_response(),
            AppError::Invalid(errors) => (
                status,
                Json(Invalid {
                    error,
                    errors,
                    valid: false,
                }),
            )
                .into_response(),
            _ => (status, Json(ErrorBody { error, job: None })).into_response(),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
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
        .route(routes::HEALTH, get(health))
        .route(routes::NONCE, get(nonce))
        .route(routes::VALIDATE, post(validate))
        .route(routes::CONFIG, post(config))
        .route(routes::UPDATE, post(update))
        .route(routes::FACTORY_RESET, post(factory_reset))
        .route(routes::JOB_LIST, get(job_list))
        .route(&format!("{}{{id}}", routes::JOBS), get(job))
        .merge(crate::console::routes())
        .fallback(|| async { AppError::NotFound })
        .with_state(svc)
}

async fn health(State(svc): State<Arc<Service>>) -> Json<Health> {
    let generation = svc.current();
    let (last_import_error, listening, update_server) = {
        let s = svc.status.lock().unwrap_or_else(|e| e.into_inner());
        (
            s.last_import_error.clone(),
            s.listening.clone(),
            s.update_server.clone(),
        )
    };
    Json(Health {
        status: "ok".into(),
        provisioned: generation.is_some(),
        build_id: svc.boot.as_ref().and_then(|b| b.build_id.clone()),
        slot: svc.boot.as_ref().map(|b| b.slot.to_string()),
        generation,
        last_import_error,
        listening,
        job: svc.tracker.running().map(|id| routes::job(&id)),
        last_update: svc.tracker.last_update().map(|id| routes::job(&id)),
        update_server,
    })
}

async fn nonce(State(svc): State<Arc<Service>>, request: axum::extract::Request) -> Json<Nonce> {
    let owner = request
        .extensions()
        .get::<Peer>()
        .map(|p| PeerKey::of(p.0.ip()));
    Json(Nonce {
        expires_in: NONCE_TTL.as_secs(),
        nonce: svc.issue_nonce(owner),
    })
}

/// `/api/validate` checks at once; more wait (up to [`VALIDATION_WAITERS`], for at most
/// [`VALIDATION_QUEUE`]) or are answered 503.
pub const VALIDATIONS: usize = 2;

pub const VALIDATION_WAITERS: usize = 8;

pub const VALIDATION_QUEUE: Duration = Duration::from_secs(5);

/// A validate body must arrive whole within this long (16 MiB in 20 s is 0.8 MiB/s),
/// with no pause longer than [`VALIDATE_BODY_GAP`].
pub const VALIDATE_BODY_TIME: Duration = Duration::from_secs(20);

pub const VALIDATE_BODY_GAP: Duration = Duration::from_secs(5);

/// A validation taking longer is answered 503 (its thread still holds its place until
/// it ends, so at most [`VALIDATIONS`] run at once whatever clients do).
pub const VALIDATE_BUDGET: Duration = Duration::from_secs(10);

/// An authenticated body must keep coming: each piece within [`BODY_GAP`], and on
/// average at least [`BODY_MIN_RATE`] bytes a second after [`BODY_GRACE`].
pub const BODY_GAP: Duration = Duration::from_secs(15);

pub const BODY_MIN_RATE: u64 = 4 << 10;

pub const BODY_GRACE: Duration = Duration::from_secs(10);

/// What a refused request's body may still be read (and dropped) so that a client still
/// sending gets the answer rather than a reset: this many bytes, within [`DISCARD_TIME`].
pub const DISCARD_BYTES: u64 = 1 << 20;

pub const DISCARD_TIME: Duration = Duration::from_secs(2);

/// How a body is read: its limit, and either one overall deadline (unauthenticated) or
/// the rate rules of authenticated bodies.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Within(Duration),
    MinRate,
}
