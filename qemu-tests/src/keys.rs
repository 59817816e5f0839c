//! SSH keys a test provisions a device with, made by the real `ssh-keygen`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host;

/// An SSH key pair made for a test (ed25519, no passphrase).
pub fn test_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    if !key.exists() {
        host(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key),
        );
    }
    key
}

/// The public half of `key`, one line.
pub fn public_key(key: &Path) -> String {
    fs::read_to_string(format!("{}.pub", key.display()))
        .expect("public key")
        .trim()
        .to_owned()
}
