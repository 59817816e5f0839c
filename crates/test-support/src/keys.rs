//! SSH key pairs for tests, made by the real `ssh-keygen` without a passphrase: the keys
//! a suite trusts for provisioning, as an admin, or not at all.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A key pair made by `ssh-keygen` in `dir`.
#[derive(Debug)]
pub struct Key {
    pub private: PathBuf,
    pub public: String,
}

/// Makes the pair `dir/name` (private) and `dir/name.pub` of `kind` (ssh-keygen's `-t`:
/// `ed25519`, `ecdsa`, `rsa` of 2048 bits).
pub fn keygen(dir: &Path, name: &str, kind: &str) -> Key {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", name, "-t", kind, "-f"])
        .arg(&private);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let out = cmd.output().expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    Key { private, public }
}
