//! Reading request bodies within their limits and times, and refusing early.

use super::*;

/// The body-size limit for a request's declared type: config text or, for anything else,
/// a config bundle.
pub(super) fn size_limit(kind: Option<Kind>) -> u64 {
    match kind {
        Some(Kind::Config) => CONFIG_TEXT_BYTES,
        _ => CONFIG_BUNDLE_BYTES,
    }
}

pub(super) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
}

/// 413 from `Content-Length`, before anything else is looked at.
pub(super) fn check_declared(headers: &HeaderMap, limit: u64, what: &str) -> Result<(), AppError> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(AppError::TooLarge(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    Ok(())
}

pub(super) fn unsupported(ct: &str) -> AppError {
    AppError::UnsupportedType {
        got: ct.into(),
        expected: "application/toml, text/plain, application/x-tar or application/gzip",
    }
}

/// The next piece of a body, under `pace`: `Ok(None)` at its end.
pub(super) async fn next_chunk(
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
pub(super) async fn read_body(
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

/// Reads and drops what is left of a refused request's body, at most [`DISCARD_BYTES`]
/// within [`DISCARD_TIME`], so that a client still sending a small body reads the
/// answer; past that the connection is closed. A client that sent `Expect:
/// 100-continue` has sent no body yet and is answered at once (reading the body would
/// ask it for the body).
pub(super) async fn discard(headers: &HeaderMap, body: Body) {
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
pub(super) async fn refuse_early<T>(
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

/// Whether a `Content-Type` is `expected` (parameters ignored).
pub(super) fn is_type(content_type: &str, expected: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case(expected))
}
