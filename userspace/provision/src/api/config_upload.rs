//! `POST /api/validate` and `POST /api/config`: config text or bundles.

use super::*;

/// `POST /api/validate` (unauthenticated): 413 (declared size), 415, then a place among
/// [`VALIDATIONS`] (503 when the queue is full or the wait too long), the body within
/// [`VALIDATE_BODY_TIME`] (408), the checks on a blocking thread within
/// [`VALIDATE_BUDGET`] (503).
pub(super) async fn validate(
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

/// `POST /api/config`. In order: 413 (declared size), 401 (headers), 415, 409 (a job
/// runs or another authenticated body is being received), then the body (413 past the
/// limit, 408 when it stalls, 400 when its SHA-256 is not the signed one), 422, 409; the
/// nonce is spent only by an accepted request (202).
pub(super) async fn config(
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
pub(super) fn accepted_job(id: &str) -> Result<Response, AppError> {
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
