//! The admin user's SSH public keys.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Key types accepted for the admin user.
pub(crate) const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// An OpenSSH public key line: `TYPE BASE64 [COMMENT]`, whose base64 blob decodes and
/// names the same key type. Options (`from="..."`) are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SshPublicKey(String);
string_value!(SshPublicKey);

impl FromStr for SshPublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.chars().any(|c| c.is_control()) {
            return Err("an SSH key must be one line without control characters".into());
        }
        let mut fields = s.split_whitespace();
        let kind = fields.next().unwrap_or("");
        if !SSH_KEY_TYPES.contains(&kind) {
            return Err(format!(
                "{kind:?} is not an OpenSSH public key type (expected one of {})",
                SSH_KEY_TYPES.join(", ")
            ));
        }
        let blob = fields.next().unwrap_or("");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| format!("the {kind} key's data is not valid base64"))?;
        let named = raw
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|n| raw.get(4..4 + n));
        if named != Some(kind.as_bytes()) {
            return Err(format!("the key data is not a {kind} public key"));
        }
        Ok(SshPublicKey(s.trim().to_owned()))
    }
}

impl fmt::Display for SshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
