//! Configs for tests: the repository's example `config.toml`, made the test's own.

use crate::Key;

/// `examples/config.toml`: valid, documented, host name `edge-042`.
pub const EXAMPLE: &str = include_str!("../../../examples/config.toml");

/// A config trusting `key` as its admin key, with a different host name.
pub fn config_with_admin(key: &Key, hostname: &str) -> String {
    let line = EXAMPLE
        .lines()
        .find(|l| l.trim_start().starts_with("\"ssh-ed25519"))
        .unwrap();
    EXAMPLE
        .replace(line, &format!("  \"{}\",", key.public.trim()))
        .replace("edge-042", hostname)
}
