//! `POST /api/update`: a signed RAUC bundle, streamed to disk.

use super::*;

/// `POST /api/update`: a RAUC bundle, authenticated like `/api/config` from its headers
/// alone. Checked in order: query (400), declared size (413), nonce, digest and
/// signature (401), type (415), single flight (409: a job runs, or another upload);
/// nothing is written before these pass. Then the body is stored as it arrives (413
/// past the limit, 408 when it stalls, 507 when /data is full, 400 when its SHA-256 is
/// not the signed one: the file is removed), and the update job started (409: the file
/// is removed). The job checks the signer's key again before installing.
pub(super) async fn update(
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
pub(super) enum Chunk {
    Data(Bytes),
    End,
}

/// Stores the body under `dir` as it arrives, under the rate rules of authenticated
/// bodies. Writing, hashing and syncing (a few hundred MiB to an SD card) run on a
/// blocking thread, so the API stays responsive.
pub(super) async fn receive(dir: std::path::PathBuf, mut body: Body) -> Result<Bundle, AppError> {
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

pub(super) fn upload_error(e: UploadError) -> AppError {
    match e {
        UploadError::TooLarge { .. } => AppError::TooLarge(e.to_string()),
        UploadError::NoSpace { .. } => AppError::NoSpace(e.to_string()),
        UploadError::Io { .. } => {
            log::error!("bundle upload: {:#}", anyhow::Error::new(e));
            AppError::Internal
        }
    }
}
