//! SSH keys a test provisions a device with, made by the real `ssh-keygen` (through
//! `test_support`, as the userspace suites make theirs).

use std::fs;
use std::path::{Path, PathBuf};

/// An SSH key pair made for a test (ed25519, no passphrase); one already made under this
/// name in `dir` is used as it is.
pub fn test_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    if !key.exists() {
        test_support::keygen(dir, name, "ed25519");
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
