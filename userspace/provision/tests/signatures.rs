//! SSHSIG verification against signatures made by the real `ssh-keygen -Y sign`.

mod common;

use atomix_provision::auth::{self, SignatureError};
use base64::Engine as _;
use common::{sign_raw, signature_header};
use test_support::keygen;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn ed25519_ecdsa_and_rsa_signatures_verify() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = keygen(dir.path(), kind, kind);
        let trusted = auth::parse_keys(&key.public, "test");
        let body = b"schema = 1\n";
        let sig = signature_header(&key, "00ff", body);
        let fp = auth::verify(&trusted, &atomix_api::signed_message("00ff", body), &sig)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(fp.starts_with("SHA256:"), "{fp}");
        let out = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.private.with_extension("pub"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&fp),
            "{kind}: the fingerprint is the one ssh-keygen -l prints"
        );
    }
}

#[test]
fn wrong_key_namespace_and_tampering_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "trusted", "ed25519");
    let other = keygen(dir.path(), "other", "ed25519");
    let trusted = auth::parse_keys(&key.public, "test");
    let body = b"schema = 1\n";
    let message = atomix_api::signed_message("abcd", body);

    let by_other = signature_header(&other, "abcd", body);
    assert_eq!(
        auth::verify(&trusted, &message, &by_other),
        Err(SignatureError::UnknownKey)
    );

    let wrong_ns = b64(&sign_raw(&key, "file", &message));
    assert_eq!(
        auth::verify(&trusted, &message, &wrong_ns),
        Err(SignatureError::Namespace("file".into()))
    );

    let good = signature_header(&key, "abcd", body);
    let tampered = atomix_api::signed_message("abcd", b"schema = 2\n");
    assert_eq!(
        auth::verify(&trusted, &tampered, &good),
        Err(SignatureError::Mismatch)
    );
    let other_nonce = atomix_api::signed_message("abce", body);
    assert_eq!(
        auth::verify(&trusted, &other_nonce, &good),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        auth::verify(
            &trusted,
            &message,
            &b64("-----BEGIN SSH SIGNATURE-----\nxx\n")
        ),
        Err(SignatureError::Malformed)
    );
    assert!(auth::verify(&trusted, &message, &good).is_ok());
}
