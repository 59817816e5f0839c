//! Authentication of mutating requests from their headers alone: nonce, signed digest, signature.

use super::*;

/// A request whose headers authenticated: its nonce is reserved (given back when this
/// is dropped, unless [`Authorized::spend`] used it up).
pub(super) struct Authorized {
    pub(super) svc: Arc<Service>,
    pub(super) nonce: String,
    /// Lowercase hex SHA-256 the body must have.
    pub(super) digest: String,
    pub(super) signer: String,
    pub(super) key: auth::PublicKey,
    pub(super) spent: bool,
}

impl Authorized {
    pub(super) fn spend(mut self) {
        self.svc
            .nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spend(&self.nonce);
        self.spent = true;
    }

    /// 400 unless the body's SHA-256 is the signed one.
    pub(super) fn check_digest(&self, got: &str) -> Result<(), AppError> {
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
pub(super) fn authenticate(
    svc: &Arc<Service>,
    headers: &HeaderMap,
) -> Result<Authorized, AppError> {
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
