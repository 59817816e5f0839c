//! The HTTP API (DESIGN.md section 5, a contract), as one router: [`app`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/health` | 200 status, provisioned, build id, slot, generation, last import error, listening addresses, running job |
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
    let (last_import_error, listening) = {
        let s = svc.status.lock().unwrap_or_else(|e| e.into_inner());
        (s.last_import_error.clone(), s.listening.clone())
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

/// The body-size limit for a request's declared type: config text or, for anything else,
/// a config bundle.
fn size_limit(kind: Option<Kind>) -> u64 {
    match kind {
        Some(Kind::Config) => CONFIG_TEXT_BYTES,
        _ => CONFIG_BUNDLE_BYTES,
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
}

/// 413 from `Content-Length`, before anything else is looked at.
fn check_declared(headers: &HeaderMap, limit: u64, what: &str) -> Result<(), AppError> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(AppError::TooLarge(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    Ok(())
}

fn unsupported(ct: &str) -> AppError {
    AppError::UnsupportedType {
        got: ct.into(),
        expected: "application/toml, text/plain, application/x-tar or application/gzip",
    }
}

/// How a body is read: its limit, and either one overall deadline (unauthenticated) or
/// the rate rules of authenticated bodies.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Within(Duration),
    MinRate,
}

/// The next piece of a body, under `pace`: `Ok(None)` at its end.
async fn next_chunk(
    body: &mut Body,
    pace: Pace,
    start: tokio::time::Instant,
    last: tokio::time::Instant,
    received: u64,
) -> Result<Option<Bytes>, AppError> {
    let deadline = match pace {
        Pace::Within(total) => (start + total).min(last + VALIDATE_BODY_GAP),
        Pace::MinRate => {
            let by_rate = start
                + BODY_GRACE
                + Duration::from_millis(received.saturating_mul(1000) / BODY_MIN_RATE);
            by_rate.min(last + BODY_GAP)
        }
    };
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| {
                AppError::Timeout(format!(
                    "the request body stalled after {received} bytes; send it without pauses"
                ))
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(_)) => {
                return Err(AppError::BadRequest(
                    "the request body could not be read to its end".into(),
                ))
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads a whole body into memory (at most `limit` bytes, 413 past it), hashing it as it
/// arrives.
async fn read_body(
    mut body: Body,
    declared: Option<u64>,
    limit: u64,
    what: &str,
    pace: Pace,
) -> Result<(Bytes, String), AppError> {
    let start = tokio::time::Instant::now();
    let mut last = start;
    // Sized from Content-Length when given, so growing never doubles the memory held.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut hasher = Sha256::new();
    while let Some(chunk) = next_chunk(&mut body, pace, start, last, buf.len() as u64).await? {
        last = tokio::time::Instant::now();
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(AppError::TooLarge(format!(
                "{what} is larger than {limit} bytes"
            )));
        }
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buf), atomix_api::hex(&hasher.finalize())))
}

/// `POST /api/validate` (unauthenticated): 413 (declared size), 415, then a place among
/// [`VALIDATIONS`] (503 when the queue is full or the wait too long), the body within
/// [`VALIDATE_BODY_TIME`] (408), the checks on a blocking thread within
/// [`VALIDATE_BUDGET`] (503).
async fn validate(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Validated>, AppError> {
    let ct = content_type(&headers);
    let kind = Kind::from_content_type(ct);
    check_declared(&headers, size_limit(kind), "the body")?;
    let kind = kind.ok_or_else(|| unsupported(ct))?;
    let busy = || {
        AppError::Unavailable(
            "the device is validating other configs; try again in a moment".into(),
        )
    };
    let waiting = Arc::clone(&svc.validation_waiters)
        .try_acquire_owned()
        .map_err(|_| busy())?;
    let permit = tokio::time::timeout(
        VALIDATION_QUEUE,
        Arc::clone(&svc.validations).acquire_owned(),
    )
    .await
    .map_err(|_| busy())?
    .map_err(|_| AppError::Internal)?;
    drop(waiting);
    let (bytes, _) = read_body(
        body,
        declared_length(&headers),
        size_limit(Some(kind)),
        "the body",
        Pace::Within(VALIDATE_BODY_TIME),
    )
    .await?;
    let checking = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        input::check(&bytes, kind)
    });
    let accepted = tokio::time::timeout(VALIDATE_BUDGET, checking)
        .await
        .map_err(|_| {
            AppError::Unavailable(format!(
                "validation took longer than {} s",
                VALIDATE_BUDGET.as_secs()
            ))
        })?
        .map_err(|_| AppError::Internal)??;
    Ok(Json(Validated {
        valid: true,
        warnings: accepted.warnings,
    }))
}

/// A request whose headers authenticated: its nonce is reserved (given back when this
/// is dropped, unless [`Authorized::spend`] used it up).
struct Authorized {
    svc: Arc<Service>,
    nonce: String,
    /// Lowercase hex SHA-256 the body must have.
    digest: String,
    signer: String,
    key: auth::PublicKey,
    spent: bool,
}

impl Authorized {
    fn spend(mut self) {
        self.svc
            .nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spend(&self.nonce);
        self.spent = true;
    }

    /// 400 unless the body's SHA-256 is the signed one.
    fn check_digest(&self, got: &str) -> Result<(), AppError> {
        if got != self.digest {
            return Err(AppError::BadRequest(format!(
                "the body's SHA-256 is {got}, not the {DIGEST_HEADER} {}; nothing was stored",
                self.digest
            )));
        }
        Ok(())
    }
}

impl Drop for Authorized {
    fn drop(&mut self) {
        if !self.spent {
            self.svc
                .nonces
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(&self.nonce);
        }
    }
}

/// What the headers of a mutating request say, checked without the body: a nonce, the
/// body's SHA-256 and a signature over both by a trusted key. Pure parsing (no nonce
/// store, no keys): what the header fuzz target runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    pub nonce: &'a str,
    pub digest: String,
    pub signature: &'a str,
}

/// Parses the three authentication headers (401 with what is missing or malformed).
pub fn parse_signed_headers(headers: &HeaderMap) -> Result<SignedHeaders<'_>, AppError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                AppError::Unauthorized(format!(
                    "missing {name} header: fetch a nonce from {}, send the body's SHA-256 in {DIGEST_HEADER} and sign both with ssh-keygen -Y sign -n {}",
                    routes::NONCE,
                    atomix_api::NAMESPACE
                ))
            })
    };
    let nonce = header(NONCE_HEADER)?;
    let digest = header(DIGEST_HEADER)?;
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::Unauthorized(format!(
            "{DIGEST_HEADER} is not a SHA-256 in hex (64 characters)"
        )));
    }
    let signature = header(SIGNATURE_HEADER)?;
    Ok(SignedHeaders {
        nonce,
        digest: digest.to_ascii_lowercase(),
        signature,
    })
}

/// Authenticates a mutating request from its headers alone (401): the signature over
/// the nonce and the declared digest, by a key trusted now; then reserves the nonce
/// (after the signature, so a forged request never touches an operator's nonce).
fn authenticate(svc: &Arc<Service>, headers: &HeaderMap) -> Result<Authorized, AppError> {
    let signed = parse_signed_headers(headers)?;
    let unauthorized = |e: &dyn std::fmt::Display| AppError::Unauthorized(e.to_string());
    let signature = Signature::by_trusted_key(&svc.trusted_keys(), signed.signature)
        .map_err(|e| unauthorized(&e))?;
    let signer = signature
        .verify(&atomix_api::signed_message_for_digest(
            signed.nonce,
            &signed.digest,
        ))
        .map_err(|e| unauthorized(&e))?;
    svc.nonces
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reserve(signed.nonce, Instant::now())
        .map_err(|e| unauthorized(&e))?;
    Ok(Authorized {
        svc: Arc::clone(svc),
        nonce: signed.nonce.to_owned(),
        digest: signed.digest,
        signer,
        key: signature.key().clone(),
        spent: false,
    })
}

/// Reads and drops what is left of a refused request's body, at most [`DISCARD_BYTES`]
/// within [`DISCARD_TIME`], so that a client still sending a small body reads the
/// answer; past that the connection is closed. A client that sent `Expect:
/// 100-continue` has sent no body yet and is answered at once (reading the body would
/// ask it for the body).
async fn discard(headers: &HeaderMap, body: Body) {
    let waits = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if waits {
        return;
    }
    let mut body = Limited::new(body, DISCARD_BYTES as usize);
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Passes the body on, or discards it first and refuses.
async fn refuse_early<T>(
    headers: &HeaderMap,
    body: Body,
    r: Result<T, AppError>,
) -> Result<(T, Body), AppError> {
    match r {
        Ok(t) => Ok((t, body)),
        Err(e) => {
            discard(headers, body).await;
            Err(e)
        }
    }
}

/// `POST /api/config`. In order: 413 (declared size), 401 (headers), 415, 409 (a job
/// runs or another authenticated body is being received), then the body (413 past the
/// limit, 408 when it stalls, 400 when its SHA-256 is not the signed one), 422, 409; the
/// nonce is spent only by an accepted request (202).
async fn config(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let ct = content_type(&headers).to_owned();
    let kind = Kind::from_content_type(&ct);
    let limit = size_limit(kind);
    let early = check_declared(&headers, limit, "the body").and_then(|()| {
        let auth = authenticate(&svc, &headers)?;
        let kind = kind.ok_or_else(|| unsupported(&ct))?;
        if let Some(job) = svc.tracker.running() {
            return Err(AppError::Busy { job });
        }
        let slot = svc.upload_slot.try_take().ok_or(AppError::UploadBusy)?;
        Ok((auth, kind, slot))
    });
    let ((auth, kind, _slot), body) = refuse_early(&headers, body, early).await?;
    let (bytes, digest) = read_body(
        body,
        declared_length(&headers),
        limit,
        "the body",
        Pace::MinRate,
    )
    .await?;
    auth.check_digest(&digest)?;
    let accepted = tokio::task::spawn_blocking(move || input::check(&bytes, kind))
        .await
        .map_err(|_| AppError::Internal)??;
    let id = svc
        .start_import(accepted, Origin::Api, Some(auth.signer.clone()))
        .map_err(|busy| AppError::Busy { job: busy.0 })?;
    auth.spend();
    accepted_job(&id)
}

/// `202 Accepted` with the job's URL in `Location` and the body.
fn accepted_job(id: &str) -> Result<Response, AppError> {
    let url = routes::job(id);
    let location = HeaderValue::from_str(&url).map_err(|_| AppError::Internal)?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: id.into(),
            job: url,
        }),
    )
        .into_response();
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// `POST /api/update`: a RAUC bundle, authenticated like `/api/config` from its headers
/// alone. Checked in order: query (400), declared size (413), nonce, digest and
/// signature (401), type (415), single flight (409: a job runs, or another upload);
/// nothing is written before these pass. Then the body is stored as it arrives (413
/// past the limit, 408 when it stalls, 507 when /data is full, 400 when its SHA-256 is
/// not the signed one: the file is removed), and the update job started (409: the file
/// is removed). The job checks the signer's key again before installing.
async fn update(
    State(svc): State<Arc<Service>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let early = update::parse_query(uri.query())
        .map_err(AppError::BadRequest)
        .and_then(|reboot| {
            check_declared(&headers, UPDATE_BUNDLE_BYTES, "the bundle")?;
            let auth = authenticate(&svc, &headers)?;
            let ct = content_type(&headers);
            if !is_type(ct, media_types::UPDATE_BUNDLE) {
                return Err(AppError::UnsupportedType {
                    got: ct.into(),
                    expected: "the RAUC bundle as application/octet-stream",
                });
            }
            if let Some(job) = svc.tracker.running() {
                return Err(AppError::Busy { job });
            }
            let slot = svc.upload_slot.try_take().ok_or(AppError::UploadBusy)?;
            Ok((reboot, auth, slot))
        });
    let ((reboot, auth, _slot), body) = match early {
        Ok(ok) => (ok, body),
        Err(e) => {
            log::warn!("bundle upload refused: {e}");
            discard(&headers, body).await;
            return Err(e);
        }
    };
    let bundle = receive(svc.paths.uploads(), body).await?;
    // An empty body is no bundle; refused before anything else so that a signature
    // over the empty body (what `GET /api/jobs` signs) never starts an update job.
    if bundle.size == 0 {
        let _ = bundle.remove();
        return Err(AppError::BadRequest(
            "the body is empty: send the RAUC bundle".into(),
        ));
    }
    if let Err(e) = auth.check_digest(&bundle.sha256) {
        log::warn!("bundle upload refused: {e}");
        return Err(e);
    }
    let id = svc
        .start_update(update::Request {
            bundle,
            signer: auth.signer.clone(),
            key: Some(auth.key.clone()),
            reboot,
        })
        .map_err(|busy| AppError::Busy { job: busy.0 })?;
    auth.spend();
    accepted_job(&id)
}

/// A piece of the body for the writer thread; `End` says the body is complete (a
/// writer whose channel closes without it was cut off, and stores nothing).
enum Chunk {
    Data(Bytes),
    End,
}

/// Stores the body under `dir` as it arrives, under the rate rules of authenticated
/// bodies. Writing, hashing and syncing (a few hundred MiB to an SD card) run on a
/// blocking thread, so the API stays responsive.
async fn receive(dir: std::path::PathBuf, mut body: Body) -> Result<Bundle, AppError> {
    let upload = Upload::create(&dir, UPDATE_BUNDLE_BYTES).map_err(upload_error)?;
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
    let start = tokio::time::Instant::now();
    let mut last = start;
    let mut received = 0u64;
    let mut failure = None;
    loop {
        match next_chunk(&mut body, Pace::MinRate, start, last, received).await {
            Ok(Some(data)) => {
                last = tokio::time::Instant::now();
                received += data.len() as u64;
                if tx.send(Chunk::Data(data)).await.is_err() {
                    break; // The writer stopped; its result says why.
                }
            }
            Ok(None) => {
                let _ = tx.send(Chunk::End).await;
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let stored = writer.await;
    if let Some(e) = failure {
        return Err(e);
    }
    match stored {
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
            log::error!("bundle upload: {:#}", anyhow::Error::new(e));
            AppError::Internal
        }
    }
}

/// Whether a `Content-Type` is `expected` (parameters ignored).
fn is_type(content_type: &str, expected: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case(expected))
}

/// `POST /api/factory-reset`: a signed [`FactoryReset`], authenticated like
/// `/api/config` from its headers alone. In order: declared size (413), signature (401),
/// type (415), single flight (409: a job runs, or an authenticated body is being
/// received); then the body (413, 408, 400 when its SHA-256 is not the signed one), its
/// confirmation (422), and the job (409). Nothing is written before the job starts; the
/// job marks `/data` for erasing, unprovisions and reboots (`crate::reset`).
async fn factory_reset(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let early = check_declared(&headers, FACTORY_RESET_BYTES, "the body").and_then(|()| {
        let auth = authenticate(&svc, &headers)?;
        let ct = content_type(&headers);
        if !is_type(ct, media_types::JSON) {
            return Err(AppError::UnsupportedType {
                got: ct.into(),
                expected: "the confirmation as application/json",
            });
        }
        if let Some(job) = svc.tracker.running() {
            return Err(AppError::Busy { job });
        }
        let slot = svc.upload_slot.try_take().ok_or(AppError::UploadBusy)?;
        Ok((auth, slot))
    });
    let ((auth, _slot), body) = refuse_early(&headers, body, early).await?;
    let (bytes, digest) = read_body(
        body,
        declared_length(&headers),
        FACTORY_RESET_BYTES,
        "the body",
        Pace::MinRate,
    )
    .await?;
    auth.check_digest(&digest)?;
    let confirmed = serde_json::from_slice::<FactoryReset>(&bytes)
        .is_ok_and(|r| r.confirm == FactoryReset::CONFIRM);
    if !confirmed {
        return Err(AppError::Unconfirmed(format!(
            "not a confirmed factory reset: send exactly {}; nothing was changed",
            String::from_utf8_lossy(FactoryReset::BODY)
        )));
    }
    let id = svc
        .start_factory_reset(auth.signer.clone())
        .map_err(|busy| AppError::Busy { job: busy.0 })?;
    log::warn!(
        "factory reset accepted (job {id}, signed by {})",
        auth.signer
    );
    auth.spend();
    accepted_job(&id)
}

/// `GET /api/jobs`: the [`JOB_LIST_LEN`] most recent jobs with their events, for a
/// request signed over the empty body (the headers of a mutating request): job events
/// name what a config does, and an unprovisioned device answers on its WAN port. A
/// single job stays readable without a signature by whoever holds its unguessable id
/// (`/api/jobs/{id}`, handed out to the client that started it). In order: a body (413),
/// signature (401), the empty body's SHA-256 (400); the answer spends the nonce, so a
/// request seen on the wire cannot be replayed.
async fn job_list(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<JobList>, AppError> {
    let early = if declared_length(&headers).is_some_and(|n| n > 0) {
        Err(AppError::TooLarge(
            "the job list is asked for without a body".into(),
        ))
    } else {
        authenticate(&svc, &headers)
    };
    let (auth, body) = refuse_early(&headers, body, early).await?;
    let (_, digest) = read_body(
        body,
        None,
        0,
        "the body of a job list request",
        Pace::Within(VALIDATE_BODY_TIME),
    )
    .await?;
    auth.check_digest(&digest)?;
    let tracker = Arc::clone(&svc.tracker);
    let jobs = tokio::task::spawn_blocking(move || tracker.recent(JOB_LIST_LEN))
        .await
        .map_err(|_| AppError::Internal)?;
    auth.spend();
    Ok(Json(JobList { jobs }))
}

async fn job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Json<Job>, AppError> {
    svc.tracker.get(&id).map(Json).ok_or(AppError::NotFound)
}
