//! Request authentication: single-use nonces and SSH signatures (SSHSIG).
//!
//! The signed message is exactly the bytes
//!
//! ```text
//! atomix-provision\n<nonce>\n<lowercase hex SHA-256 of the request body>\n
//! ```
//!
//! signed with namespace `atomix-provision` (`ssh-keygen -Y sign -n atomix-provision -f
//! KEY < message`). The request carries `X-Atomix-Nonce: <nonce>` and
//! `X-Atomix-Signature: <base64 of the armored signature>`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
pub use ssh_key::PublicKey;
use ssh_key::{HashAlg, SshSig};

/// The SSHSIG namespace, also the first line of the signed message.
pub const NAMESPACE: &str = "atomix-provision";
/// How long a nonce stays valid.
pub const NONCE_TTL: Duration = Duration::from_secs(120);
/// How many nonces may be outstanding; the oldest is dropped past this.
pub const MAX_NONCES: usize = 64;

/// Issued nonces, oldest first.
#[derive(Debug, Default)]
pub struct NonceStore {
    issued: VecDeque<(String, Instant)>,
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("unknown or already used nonce: fetch a new one from /api/nonce")]
    Unknown,
    #[error("the nonce has expired: fetch a new one from /api/nonce and sign within 120 s")]
    Expired,
}

impl NonceStore {
    /// A new 256-bit nonce, 64 lowercase hex characters.
    pub fn issue(&mut self, now: Instant) -> String {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the kernel's random source works");
        let nonce: String = b.iter().map(|b| format!("{b:02x}")).collect();
        self.issued
            .retain(|(_, at)| now.saturating_duration_since(*at) < NONCE_TTL);
        while self.issued.len() >= MAX_NONCES {
            self.issued.pop_front();
        }
        self.issued.push_back((nonce.clone(), now));
        nonce
    }

    /// Uses a nonce up: it never works again, whatever the outcome.
    pub fn consume(&mut self, nonce: &str, now: Instant) -> Result<(), NonceError> {
        let pos = self
            .issued
            .iter()
            .position(|(n, _)| n == nonce)
            .ok_or(NonceError::Unknown)?;
        let (_, at) = self.issued.remove(pos).expect("position is in range");
        if now.saturating_duration_since(at) >= NONCE_TTL {
            return Err(NonceError::Expired);
        }
        Ok(())
    }

    pub fn outstanding(&self) -> usize {
        self.issued.len()
    }
}

/// The bytes a client signs.
pub fn signed_message(nonce: &str, body: &[u8]) -> Vec<u8> {
    signed_message_for_digest(nonce, &hex(&Sha256::digest(body)))
}

/// The bytes a client signs, for a body whose SHA-256 (lowercase hex) is known: a body
/// too large to hold is hashed while it is stored.
pub fn signed_message_for_digest(nonce: &str, sha256_hex: &str) -> Vec<u8> {
    format!("{NAMESPACE}\n{nonce}\n{sha256_hex}\n").into_bytes()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a signature was not accepted. The messages tell the client what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Atomix-Signature is not base64 of an armored SSH signature")]
    Malformed,
    #[error("the signature's namespace is {0:?}: sign with -n atomix-provision")]
    Namespace(String),
    #[error("the signing key is not trusted by this device")]
    UnknownKey,
    #[error("the signature does not match the nonce and body")]
    Mismatch,
}

/// Parses trusted keys in authorized_keys format (options, comments and blank lines
/// allowed); lines that do not parse are skipped with a warning.
pub fn parse_keys(text: &str, source: &str) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match ssh_key::authorized_keys::Entry::from_str_lossy(line) {
            Some(k) => keys.push(k),
            None => crate::logging::warn(&format!("{source}:{}: not a public key", i + 1)),
        }
    }
    keys
}

trait FromStrLossy {
    fn from_str_lossy(line: &str) -> Option<PublicKey>;
}

impl FromStrLossy for ssh_key::authorized_keys::Entry {
    fn from_str_lossy(line: &str) -> Option<PublicKey> {
        line.parse::<ssh_key::authorized_keys::Entry>()
            .ok()
            .map(|e| e.public_key().clone())
    }
}

/// Verifies `armored_b64` over `message` against `trusted`; returns the signer's SHA-256
/// fingerprint (`SHA256:...`, as `ssh-keygen -l` prints it).
pub fn verify(
    trusted: &[PublicKey],
    message: &[u8],
    armored_b64: &str,
) -> Result<String, SignatureError> {
    Signature::by_trusted_key(trusted, armored_b64)?.verify(message)
}

/// A well-formed signature in our namespace by a trusted key, not yet checked against
/// a message: what can be known from the headers, before a large body arrives.
#[derive(Debug, Clone)]
pub struct Signature {
    sig: SshSig,
    key: PublicKey,
}

impl Signature {
    pub fn by_trusted_key(
        trusted: &[PublicKey],
        armored_b64: &str,
    ) -> Result<Signature, SignatureError> {
        use base64::Engine as _;
        let armored = base64::engine::general_purpose::STANDARD
            .decode(armored_b64.trim())
            .map_err(|_| SignatureError::Malformed)?;
        let sig = SshSig::from_pem(&armored).map_err(|_| SignatureError::Malformed)?;
        if sig.namespace() != NAMESPACE {
            return Err(SignatureError::Namespace(sig.namespace().to_owned()));
        }
        let key = trusted
            .iter()
            .find(|k| k.key_data() == sig.public_key())
            .ok_or(SignatureError::UnknownKey)?
            .clone();
        Ok(Signature { sig, key })
    }

    /// Checks the signature over `message`; returns the signer's fingerprint.
    pub fn verify(&self, message: &[u8]) -> Result<String, SignatureError> {
        self.key
            .verify(NAMESPACE, message, &self.sig)
            .map_err(|_| SignatureError::Mismatch)?;
        Ok(self.key.fingerprint(HashAlg::Sha256).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_expire_and_are_capped() {
        let t0 = Instant::now();
        let mut s = NonceStore::default();
        let n = s.issue(t0);
        assert_eq!(n.len(), 64);
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(s.consume(&n, t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(s.consume(&n, t0), Err(NonceError::Unknown), "reused");

        let old = s.issue(t0);
        assert_eq!(s.consume(&old, t0 + NONCE_TTL), Err(NonceError::Expired));
        assert_eq!(
            s.consume(&old, t0),
            Err(NonceError::Unknown),
            "expired ones are gone"
        );

        let first = s.issue(t0);
        let rest: Vec<String> = (0..MAX_NONCES).map(|_| s.issue(t0)).collect();
        assert_eq!(s.outstanding(), MAX_NONCES);
        assert_eq!(
            s.consume(&first, t0),
            Err(NonceError::Unknown),
            "oldest dropped"
        );
        assert_eq!(s.consume(&rest[0], t0), Ok(()));
    }

    #[test]
    fn message_format_is_exact() {
        let m = signed_message("ab", b"");
        assert_eq!(
            m,
            b"atomix-provision\nab\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        );
        assert_eq!(
            signed_message_for_digest(
                "ab",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            m
        );
    }

    #[test]
    fn keys_parse_with_options_and_comments() {
        let text = "# trusted\n\nfrom=\"10.0.0.0/8\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops\ngarbage\n";
        assert_eq!(parse_keys(text, "keys").len(), 1);
        assert_eq!(verify(&[], b"x", "!!!"), Err(SignatureError::Malformed));
    }
}
