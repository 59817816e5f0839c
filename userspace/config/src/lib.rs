//! AtomixOS `config.toml` v1: the operator's whole intent for a device.
//!
//! * [`schema`] — the types (a contract; `docs/configuration.md` documents them).
//! * [`values`] — field value types that parse themselves (host names, ports, volumes...).
//! * [`decode`] — text to [`schema::Config`], every error at once, with positions.
//! * [`validate`] — cross-field checks.
//! * [`bundle`] — reading a config bundle (tar, optionally gzip) within limits.
//! * [`render`] — the canonical `rendered/` tree: Quadlet units and system files.
//! * [`generations`] — the generations store under `/data/config`.
//! * [`report`] — the offline `validate` report, shared by the device and `atomixctl`.
//! * `json_schema` (feature `json-schema`) — the JSON Schema of config.toml, for editors.
//!
//! [`check`] runs decoding and validation; parsing takes `&str`, reading files is the
//! caller's (or [`read_input`]'s) business.

pub mod bundle;
pub mod decode;
pub mod diagnostic;
pub mod generations;
#[cfg(feature = "json-schema")]
pub mod json_schema;
pub mod render;
pub mod report;
pub mod schema;
pub mod validate;
pub mod values;

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, Severity};
pub use schema::Config;

/// The result of checking one config text.
#[derive(Debug)]
pub struct Checked {
    /// Set only when there are no errors.
    pub config: Option<Config>,
    /// Errors first, then warnings, each in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }
}

/// Decodes and validates a plain config text; `file` names it in diagnostics.
pub fn check(file: &str, text: &str) -> Checked {
    check_bundle(file, text, &BTreeSet::new())
}

/// Decodes and validates config text that came in a bundle with these files
/// (`apps/...`), which its `oci-archive:` images may name.
pub fn check_bundle(file: &str, text: &str, bundle_files: &BTreeSet<&str>) -> Checked {
    let decoded = decode::decode(text);
    let mut found = diagnostic::Findings::new();
    found.extend(decoded.findings);
    if let Some(config) = &decoded.config {
        validate::validate(config, bundle_files, &mut found);
    }
    let findings = found.into_vec(text.len());
    let diagnostics = diagnostic::LineIndex::new(text).diagnostics(file, findings);
    let valid = diagnostics.iter().all(|d| d.severity != Severity::Error);
    Checked {
        config: decoded.config.filter(|_| valid),
        diagnostics,
    }
}

/// Hex SHA-256 of config text, as named in rendered headers and `source.json`.
pub fn config_sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
