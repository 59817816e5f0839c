//! What a client signs. The signed message is exactly the bytes
//!
//! ```text
//! atomix-provision\n<nonce>\n<lowercase hex SHA-256 of the request body>\n
//! ```
//!
//! signed with namespace [`NAMESPACE`] (`ssh-keygen -Y sign -n atomix-provision -f KEY <
//! message`). The request carries the nonce, the same hex SHA-256 and base64 of the armored
//! signature in the [`crate::headers`], so that the service authenticates it from its
//! headers before reading its body.

use sha2::{Digest, Sha256};

/// The SSHSIG namespace, also the first line of the signed message.
pub const NAMESPACE: &str = "atomix-provision";

/// The bytes a client signs for `body`.
pub fn signed_message(nonce: &str, body: &[u8]) -> Vec<u8> {
    signed_message_for_digest(nonce, &sha256_hex(body))
}

/// The bytes a client signs, for a body whose SHA-256 (lowercase hex) is known: a body
/// too large to hold is hashed as it is read or stored.
pub fn signed_message_for_digest(nonce: &str, sha256_hex: &str) -> Vec<u8> {
    format!("{NAMESPACE}\n{nonce}\n{sha256_hex}\n").into_bytes()
}

/// The SHA-256 of a body in lowercase hex: what is signed, and what
/// [`crate::headers::CONTENT_SHA256`] carries.
pub fn sha256_hex(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// Lowercase hex (for a digest computed piece by piece: `hex(&hasher.finalize())`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_message_is_three_lines() {
        let m = signed_message_for_digest("n1", &sha256_hex(b"abc"));
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "atomix-provision\nn1\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        );
        assert_eq!(NAMESPACE, "atomix-provision");
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
