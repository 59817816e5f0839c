//! The signature-checking path of a mutating request, on arbitrary bytes: the three
//! authentication headers (`api::parse_signed_headers`), the `X-Atomix-Signature` value
//! (base64 of an armored SSHSIG) up to the cryptographic check, and trusted-key parsing.
//! The first byte chooses how the rest is used:
//!
//! * 0: as header lines `name: value` for `parse_signed_headers`;
//! * 1: as the header value itself (base64 text);
//! * 2: as the binary SSHSIG inside the armor, verified against its own public key
//!   (so well-formed blobs reach the key's `verify`) over a fixed message;
//! * 3: as authorized_keys text.
#![no_main]

use atomix_provision::api::parse_signed_headers;
use atomix_provision::auth::{self, Signature, SignatureError};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

const MESSAGE_DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let message = atomix_api::signed_message_for_digest("00ff", MESSAGE_DIGEST);
    match mode % 4 {
        0 => {
            let mut headers = HeaderMap::new();
            for line in rest.split(|b| *b == b'\n') {
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    continue;
                };
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(&line[..colon]),
                    HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
                ) else {
                    continue;
                };
                headers.append(name, value);
            }
            if let Ok(signed) = parse_signed_headers(&headers) {
                assert_eq!(signed.digest.len(), 64);
                assert!(signed
                    .digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                assert!(!signed.nonce.is_empty() && !signed.signature.is_empty());
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            assert!(matches!(
                Signature::by_trusted_key(&[], &text),
                Err(SignatureError::Malformed
                    | SignatureError::Namespace(_)
                    | SignatureError::UnknownKey)
            ));
        }
        2 => {
            let armored = format!(
                "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
                b64.encode(rest)
            );
            let header = b64.encode(armored.as_bytes());
            // Trust whatever key the blob names, so well-formed ones are verified.
            let Ok(sig) = ssh_key::SshSig::from_pem(armored.as_bytes()) else {
                assert_eq!(
                    Signature::by_trusted_key(&[], &header).unwrap_err(),
                    SignatureError::Malformed
                );
                return;
            };
            let key = ssh_key::PublicKey::new(sig.public_key().clone(), "");
            match Signature::by_trusted_key(&[key], &header) {
                Ok(s) => {
                    let _ = s.verify(&message);
                }
                Err(e) => assert!(matches!(e, SignatureError::Namespace(_)), "{e}"),
            }
        }
        _ => {
            let _ = auth::parse_keys(&String::from_utf8_lossy(rest), "fuzz");
        }
    }
});
