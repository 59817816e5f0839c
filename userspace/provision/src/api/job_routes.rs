//! `GET /api/jobs` (signed: the recent jobs) and `GET /api/jobs/{id}`.

use super::*;

/// `GET /api/jobs`: the [`JOB_LIST_LEN`] most recent jobs with their events, for a
/// request signed over the empty body (the headers of a mutating request): job events
/// name what a config does, and an unprovisioned device answers on its WAN port. A
/// single job stays readable without a signature by whoever holds its unguessable id
/// (`/api/jobs/{id}`, handed out to the client that started it). In order: a body (413),
/// signature (401), the empty body's SHA-256 (400); the answer spends the nonce, so a
/// request seen on the wire cannot be replayed.
pub(super) async fn job_list(
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

pub(super) async fn job(
    State(svc): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Json<Job>, AppError> {
    svc.tracker.get(&id).map(Json).ok_or(AppError::NotFound)
}
