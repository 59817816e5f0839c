//! The offline `validate` report: one input file's bytes to the lines (or JSON) both
//! `atomix-provision validate` and the operator's `atomixctl validate` print, so the
//! laptop says exactly what the device would.

use serde::Serialize;

use crate::bundle::{self, BundleError, Input, Limits};
use crate::{Checked, Diagnostic};

/// An input checked: the config text and what checking it found, or why the bundle
/// holding it was refused before its config.toml could be read.
#[derive(Debug)]
pub enum Loaded {
    Checked { text: String, checked: Box<Checked> },
    Refused(BundleError),
}

/// Checks a config.toml or a bundle's bytes; `shown` names a plain config.toml in
/// diagnostics (inside a bundle the file is always `config.toml`).
pub fn check_input(shown: &str, bytes: &[u8]) -> Loaded {
    let (name, text, files) = match bundle::read_input(bytes, Limits::default()) {
        Ok(Input::Config(text)) => (shown.to_owned(), text, Default::default()),
        Ok(Input::Bundle(b)) => ("config.toml".to_owned(), b.config, b.files),
        Err(e) => return Loaded::Refused(e),
    };
    let names = files.keys().map(String::as_str).collect();
    let checked = crate::check_bundle(&name, &text, &names);
    Loaded::Checked {
        text,
        checked: Box::new(checked),
    }
}

/// The `--json` form of a validate report.
#[derive(Debug, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Report<'a> {
    pub ok: bool,
    pub errors: Vec<&'a Diagnostic>,
    pub warnings: Vec<&'a Diagnostic>,
    /// Set when a bundle was refused before its config.toml could be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Loaded {
    pub fn is_valid(&self) -> bool {
        matches!(self, Loaded::Checked { checked, .. } if checked.is_valid())
    }

    /// The human form: `ok` first when valid, then errors and warnings, one a line
    /// (`FILE:LINE:COL: path: message`); a refused bundle is `SHOWN: reason`.
    pub fn lines(&self, shown: &str) -> Vec<String> {
        match self {
            Loaded::Refused(e) => vec![format!("{shown}: {e}")],
            Loaded::Checked { checked, .. } => {
                let mut lines: Vec<String> = checked.errors().map(ToString::to_string).collect();
                lines.extend(checked.warnings().map(ToString::to_string));
                if checked.is_valid() {
                    lines.insert(0, "ok".to_owned());
                }
                lines
            }
        }
    }

    pub fn report(&self) -> Report<'_> {
        match self {
            Loaded::Refused(e) => Report {
                ok: false,
                errors: vec![],
                warnings: vec![],
                refused: Some(e.to_string()),
            },
            Loaded::Checked { checked, .. } => Report {
                ok: checked.is_valid(),
                errors: checked.errors().collect(),
                warnings: checked.warnings().collect(),
                refused: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_file_and_position() {
        let loaded = check_input("my.toml", b"schema = 2\n");
        assert!(!loaded.is_valid());
        let lines = loaded.lines("my.toml");
        assert!(lines[0].starts_with("my.toml:1:"), "{lines:?}");
        assert!(!loaded.report().ok);
    }

    #[test]
    fn a_refused_bundle_is_one_line() {
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        let loaded = check_input("b.tar", &tar);
        assert!(matches!(loaded, Loaded::Refused(_)));
        assert_eq!(loaded.lines("b.tar").len(), 1);
        assert!(loaded.report().refused.is_some());
    }
}
