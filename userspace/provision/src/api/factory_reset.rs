//! `POST /api/factory-reset`: a signed, confirmed reset job.

use super::*;

/// `POST /api/factory-reset`: a signed [`FactoryReset`], authenticated like
/// `/api/config` from its headers alone. In order: declared size (413), signature (401),
/// type (415), single flight (409: a job runs, or an authenticated body is being
/// received); then the body (413, 408, 400 when its SHA-256 is not the signed one), its
/// confirmation (422), and the job (409). Nothing is written before the job starts; the
/// job marks `/data` for erasing, unprovisions and reboots (`crate::reset`).
pub(super) async fn factory_reset(
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
