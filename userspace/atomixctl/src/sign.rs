//! Signing an upload the way the device checks it (userspace/README.md,
//! "Authentication"; the message and namespace are [`atomix_api::signing`]'s), through
//! `ssh-keygen -Y sign` so that ssh-agent, passphrases and
//! hardware keys (FIDO `sk-` keys, PKCS#11 through the agent) all work without this
//! tool ever reading a private key.
//!
//! Which key ([`choose`]): `--identity KEY` if given (a private key file, or a `.pub`
//! whose private half is in ssh-agent); else the first key ssh-agent lists; else the
//! first of `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exists.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use atomix_api::NAMESPACE;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The SHA-256 (lowercase hex) of everything `reader` yields, read in 1 MiB pieces: a
/// bundle too large to read into memory is hashed from its file.
pub fn sha256_of(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(atomix_api::hex(&hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The key `ssh-keygen -f` is given, and how it was chosen (for the operator).
#[derive(Debug)]
pub struct Identity {
    /// Passed to `ssh-keygen -f`.
    pub path: PathBuf,
    pub description: String,
    /// Holds the agent's public key file alive while it is used.
    _agent_key: Option<tempfile::NamedTempFile>,
}

/// Where the candidates are, so tests choose them instead of the environment.
#[derive(Debug)]
pub struct Sources {
    /// `SSH_AUTH_SOCK` is set.
    pub agent: bool,
    pub home: Option<PathBuf>,
}

impl Sources {
    pub fn from_env() -> Sources {
        Sources {
            agent: std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// The default key files, in order of preference.
const DEFAULT_KEYS: &[&str] = &["id_ed25519", "id_ecdsa", "id_rsa"];

/// Picks the signing key (see the module comment).
pub fn choose(identity: Option<&Path>, sources: &Sources) -> anyhow::Result<Identity> {
    if let Some(path) = identity {
        if !path.exists() {
            bail!("the identity {} does not exist", path.display());
        }
        return Ok(Identity {
            path: path.to_owned(),
            description: path.display().to_string(),
            _agent_key: None,
        });
    }
    if sources.agent {
        if let Some(line) = first_agent_key() {
            let mut file = tempfile::Builder::new()
                .prefix("atomixctl-agent-key")
                .suffix(".pub")
                .tempfile()
                .context("cannot write the agent's public key to a temporary file")?;
            writeln!(file, "{line}").context("cannot write the agent's public key")?;
            return Ok(Identity {
                path: file.path().to_owned(),
                description: format!("ssh-agent key {}", short_key(&line)),
                _agent_key: Some(file),
            });
        }
    }
    if let Some(home) = &sources.home {
        for name in DEFAULT_KEYS {
            let path = home.join(".ssh").join(name);
            if path.exists() {
                return Ok(Identity {
                    description: path.display().to_string(),
                    path,
                    _agent_key: None,
                });
            }
        }
    }
    bail!(
        "no SSH key to sign with: pass --identity KEY, add a key to ssh-agent (ssh-add), or create ~/.ssh/id_ed25519"
    )
}

/// The first line of `ssh-add -L`, if the agent answers with a key.
fn first_agent_key() -> Option<String> {
    let out = Command::new("ssh-add")
        .arg("-L")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// `TYPE COMMENT` of a public key line (the base64 blob is noise to a reader).
fn short_key(line: &str) -> String {
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let _blob = parts.next();
    let comment: Vec<&str> = parts.collect();
    if comment.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} {}", comment.join(" "))
    }
}

/// Signs `message` with `ssh-keygen -Y sign`; returns the `X-Atomix-Signature` value
/// (base64 of the armored signature). ssh-keygen may ask for a passphrase or a touch
/// on the terminal: its stderr is passed through.
pub fn sign(identity: &Identity, message: &[u8]) -> anyhow::Result<String> {
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(&identity.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ssh-keygen (install openssh-client)")?;
    child
        .stdin
        .take()
        .context("ssh-keygen has no stdin")?
        .write_all(message)
        .context("cannot give ssh-keygen the message to sign")?;
    let out = child
        .wait_with_output()
        .context("ssh-keygen did not finish")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen -Y sign with {} failed: {}",
            identity.description,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !out.stdout.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        bail!("ssh-keygen -Y sign did not print a signature");
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_three_lines() {
        let streamed = sha256_of(&b"abc"[..]).unwrap();
        assert_eq!(
            String::from_utf8(atomix_api::signed_message_for_digest("n1", &streamed)).unwrap(),
            "atomix-provision\nn1\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        );
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        assert_eq!(
            sha256_of(&big[..]).unwrap(),
            atomix_api::sha256_hex(&big),
            "across read boundaries"
        );
    }

    #[test]
    fn without_an_identity_or_agent_the_home_keys_are_tried_in_order() {
        let home = tempfile::tempdir().unwrap();
        let none = Sources {
            agent: false,
            home: Some(home.path().to_owned()),
        };
        let e = choose(None, &none).unwrap_err().to_string();
        assert!(e.contains("--identity"), "{e}");
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/id_rsa"), "").unwrap();
        assert!(choose(None, &none).unwrap().path.ends_with("id_rsa"));
        std::fs::write(home.path().join(".ssh/id_ed25519"), "").unwrap();
        assert!(choose(None, &none).unwrap().path.ends_with("id_ed25519"));
        let explicit = home.path().join(".ssh/id_rsa");
        assert_eq!(choose(Some(&explicit), &none).unwrap().path, explicit);
        assert!(choose(Some(&home.path().join("nope")), &none).is_err());
    }

    #[test]
    fn agent_keys_are_described_without_the_blob() {
        assert_eq!(
            short_key("ssh-ed25519 AAAAC3Nz ops@laptop"),
            "ssh-ed25519 ops@laptop"
        );
        assert_eq!(short_key("ssh-ed25519 AAAAC3Nz"), "ssh-ed25519");
    }
}
