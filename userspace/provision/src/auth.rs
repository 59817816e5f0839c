//! Request authentication: single-use nonces and SSH signatures (SSHSIG).
//!
//! What a client signs, with which namespace, and the headers it sends are the API's
//! contract ([`atomix_api::signing`], [`atomix_api::headers`]): the request is
//! authenticated from its headers before its body is read.

use std::collections::VecDeque;
use std::time::Instant;

use atomix_api::limits::NONCE_TTL;
use atomix_api::signing::NAMESPACE;
pub use ssh_key::PublicKey;
use ssh_key::{HashAlg, SshSig};

/// How many nonces may be outstanding in all. Past it, the oldest unreserved nonce of
/// the peer holding the most is dropped; a peer holding fewer than
/// [`NONCES_PER_PEER`] loses one only when more than [`MAX_NONCES`] / [`NONCES_PER_PEER`]
/// peers hold their full quota.
pub const MAX_NONCES: usize = 256;
/// How many nonces one peer (an IPv4 address, an IPv6 /64) may hold; a new one past
/// this replaces that peer's oldest, so anonymous clients only ever evict their own.
pub const NONCES_PER_PEER: usize = 4;

/// Who asked for a nonce (the peer key of the connection; `None`: not known, e.g. a
/// request that did not come through a listener).
pub type Owner = Option<crate::listen::PeerKey>;

#[derive(Debug)]
struct Issued {
    nonce: String,
    at: Instant,
    owner: Owner,
    /// Taken by an authenticated request still being received: neither evicted nor
    /// usable by another request until released or spent.
    reserved: bool,
}

/// Issued nonces, oldest first.
#[derive(Debug, Default)]
pub struct NonceStore {
    issued: VecDeque<Issued>,
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("unknown or already used nonce: fetch a new one from /api/nonce")]
    Unknown,
    #[error("the nonce has expired: fetch a new one from /api/nonce and sign within 120 s")]
    Expired,
    #[error("the nonce is in use by a request still being received")]
    InUse,
}

impl NonceStore {
    /// A new 256-bit nonce, 64 lowercase hex characters, for `owner`.
    pub fn issue_for(&mut self, owner: Owner, now: Instant) -> String {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the kernel's random source works");
        let nonce: String = b.iter().map(|b| format!("{b:02x}")).collect();
        self.issued
            .retain(|i| i.reserved || now.saturating_duration_since(i.at) < NONCE_TTL);
        let mine = self.issued.iter().filter(|i| i.owner == owner).count();
        if mine >= NONCES_PER_PEER {
            self.drop_oldest_of(owner);
        }
        while self.issued.len() >= MAX_NONCES {
            let mut counts: std::collections::HashMap<Owner, usize> = Default::default();
            for i in self.issued.iter().filter(|i| !i.reserved) {
                *counts.entry(i.owner).or_default() += 1;
            }
            let Some((&top, _)) = counts.iter().max_by_key(|(o, n)| (**n, **o)) else {
                break;
            };
            self.drop_oldest_of(top);
        }
        self.issued.push_back(Issued {
            nonce: nonce.clone(),
            at: now,
            owner,
            reserved: false,
        });
        nonce
    }

    /// A nonce for an unknown owner (tests, tools).
    pub fn issue(&mut self, now: Instant) -> String {
        self.issue_for(None, now)
    }

    fn drop_oldest_of(&mut self, owner: Owner) {
        if let Some(pos) = self
            .issued
            .iter()
            .position(|i| i.owner == owner && !i.reserved)
        {
            self.issued.remove(pos);
        }
    }

    /// Takes a nonce for a request whose headers authenticated: it stays issued, but no
    /// other request may use it and it is never evicted, until [`NonceStore::release`]
    /// (the request was refused) or [`NonceStore::spend`] (it was accepted).
    pub fn reserve(&mut self, nonce: &str, now: Instant) -> Result<(), NonceError> {
        let pos = self
            .issued
            .iter()
            .position(|i| i.nonce == nonce)
            .ok_or(NonceError::Unknown)?;
        let i = &mut self.issued[pos];
        if i.reserved {
            return Err(NonceError::InUse);
        }
        if now.saturating_duration_since(i.at) >= NONCE_TTL {
            self.issued.remove(pos);
            return Err(NonceError::Expired);
        }
        i.reserved = true;
        Ok(())
    }

    /// A refused request gives its nonce back (it may be used again until it expires).
    pub fn release(&mut self, nonce: &str) {
        if let Some(i) = self.issued.iter_mut().find(|i| i.nonce == nonce) {
            i.reserved = false;
        }
    }

    /// An accepted request uses its nonce up: it never works again.
    pub fn spend(&mut self, nonce: &str) {
        self.issued.retain(|i| i.nonce != nonce);
    }

    /// Checks and uses a nonce up in one step, whatever comes next.
    pub fn consume(&mut self, nonce: &str, now: Instant) -> Result<(), NonceError> {
        self.reserve(nonce, now)?;
        self.spend(nonce);
        Ok(())
    }

    pub fn outstanding(&self) -> usize {
        self.issued.len()
    }
}

/// Why a signature was not accepted. The messages tell the client what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Atomix-Signature is not base64 of an armored SSH signature")]
    Malformed,
    #[error("the signature's namespace is {0:?}: sign with -n {ns}", ns = NAMESPACE)]
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
            None => log::warn!("{source}:{}: not a public key", i + 1),
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

    /// The trusted key that made the signature.
    pub fn key(&self) -> &PublicKey {
        &self.key
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
    use std::time::Duration;

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
        let rest: Vec<String> = (0..NONCES_PER_PEER).map(|_| s.issue(t0)).collect();
        assert_eq!(s.outstanding(), NONCES_PER_PEER);
        assert_eq!(
            s.consume(&first, t0),
            Err(NonceError::Unknown),
            "a peer's oldest is dropped past its quota"
        );
        assert_eq!(s.consume(&rest[0], t0), Ok(()));
    }

    fn peer(n: u32) -> Owner {
        Some(crate::listen::PeerKey::of(std::net::IpAddr::V4(n.into())))
    }

    #[test]
    fn anonymous_floods_evict_only_their_own_nonces() {
        let t0 = Instant::now();
        let mut s = NonceStore::default();
        let operator = s.issue_for(peer(1), t0);
        // One peer asking many times keeps its quota.
        for _ in 0..1000 {
            s.issue_for(peer(2), t0);
        }
        assert_eq!(s.outstanding(), 1 + NONCES_PER_PEER);
        // Many peers filling the total: the biggest holders lose theirs first.
        for p in 3..3 + (MAX_NONCES as u32) {
            for _ in 0..NONCES_PER_PEER {
                s.issue_for(peer(p), t0);
            }
        }
        assert!(s.outstanding() <= MAX_NONCES);
        assert_eq!(s.reserve(&operator, t0), Ok(()), "the operator's survives");
        // A reserved nonce is in use, never evicted, and given back on release.
        assert_eq!(s.reserve(&operator, t0), Err(NonceError::InUse));
        for p in 1000..1000 + (MAX_NONCES as u32) {
            s.issue_for(peer(p), t0);
        }
        s.release(&operator);
        assert_eq!(s.reserve(&operator, t0), Ok(()));
        s.spend(&operator);
        assert_eq!(s.reserve(&operator, t0), Err(NonceError::Unknown));
    }

    #[test]
    fn keys_parse_with_options_and_comments() {
        let text = "# trusted\n\nfrom=\"10.0.0.0/8\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops\ngarbage\n";
        assert_eq!(parse_keys(text, "keys").len(), 1);
        assert_eq!(verify(&[], b"x", "!!!"), Err(SignatureError::Malformed));
    }
}
