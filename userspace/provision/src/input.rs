//! Turning bytes (a request body, a seed file) into a checked config, or into errors
//! that say where the problem is. Shared by the API, the seeds and the apply job.

use std::collections::BTreeMap;

use atomix_api::media_types;
use atomix_config::bundle::{self, BundleError, Limits};
use atomix_config::{Config, Diagnostic};

pub use atomix_api::Problem;

/// What the bytes are, from the request's content type (or a seed's file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// config.toml text.
    Config,
    /// A tar or tar.gz bundle.
    Bundle,
}

impl Kind {
    /// `application/toml` and `text/plain` are config text; `application/x-tar`,
    /// `application/gzip` (and `application/x-gzip`) are bundles. Parameters such as
    /// `; charset=utf-8` are ignored.
    pub fn from_content_type(value: &str) -> Option<Kind> {
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            media_types::CONFIG | "text/plain" => Some(Kind::Config),
            media_types::TAR | media_types::GZIP | "application/x-gzip" => Some(Kind::Bundle),
            _ => None,
        }
    }
}

/// A checker's diagnostic as the API reports it.
fn problem(d: &Diagnostic) -> Problem {
    Problem {
        line: Some(d.line),
        column: Some(d.column),
        path: d.path.clone(),
        message: d.message.clone(),
    }
}

/// A config that passed every check.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// config.toml as received.
    pub text: String,
    pub config: Config,
    /// Bundle files, `apps/<container>/...` to contents.
    pub apps: BTreeMap<String, Vec<u8>>,
    pub warnings: Vec<Problem>,
}

/// Why bytes were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Past a size limit (the API answers 413).
    TooLarge(String),
    /// Refused or invalid (422), every problem at once.
    Invalid(Vec<Problem>),
}

impl Rejected {
    /// One line per problem, for logs.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Rejected::TooLarge(m) => vec![m.clone()],
            Rejected::Invalid(p) => p.iter().map(ToString::to_string).collect(),
        }
    }
}

fn refused(e: BundleError) -> Rejected {
    match e {
        BundleError::TooLarge { .. } | BundleError::TooManyEntries { .. } => {
            Rejected::TooLarge(e.to_string())
        }
        BundleError::Refused { member, reason } if reason.starts_with("larger than") => {
            Rejected::TooLarge(format!("{member}: {reason}"))
        }
        BundleError::Refused { member, reason } => Rejected::Invalid(vec![Problem {
            line: None,
            column: None,
            path: member,
            message: format!("refused: {reason}"),
        }]),
        other => Rejected::Invalid(vec![Problem {
            line: None,
            column: None,
            path: String::new(),
            message: other.to_string(),
        }]),
    }
}

/// Checks bytes of a known kind.
pub fn check(bytes: &[u8], kind: Kind) -> Result<Accepted, Rejected> {
    let limits = Limits::default();
    let (text, apps) = match kind {
        Kind::Config => {
            if bytes.len() as u64 > limits.config_bytes {
                return Err(Rejected::TooLarge(format!(
                    "config.toml is larger than {} bytes",
                    limits.config_bytes
                )));
            }
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| refused(BundleError::ConfigNotUtf8))?;
            (text, BTreeMap::new())
        }
        Kind::Bundle => {
            let b = bundle::read_bundle(bytes, limits).map_err(refused)?;
            (b.config, b.files)
        }
    };
    check_text(text, apps)
}

/// Checks config text (and the bundle files that came with it).
pub fn check_text(text: String, apps: BTreeMap<String, Vec<u8>>) -> Result<Accepted, Rejected> {
    let names = apps.keys().map(String::as_str).collect();
    let checked = atomix_config::check_bundle("config.toml", &text, &names);
    let warnings = checked.warnings().map(problem).collect();
    match checked.config {
        Some(config) if checked.is_valid() => Ok(Accepted {
            text,
            config,
            apps,
            warnings,
        }),
        _ => Err(Rejected::Invalid(checked.errors().map(problem).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_kinds() {
        let cases = [
            ("application/toml", Some(Kind::Config)),
            ("text/plain; charset=utf-8", Some(Kind::Config)),
            ("Application/X-Tar", Some(Kind::Bundle)),
            ("application/gzip", Some(Kind::Bundle)),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(Kind::from_content_type(ct), want, "{ct}");
        }
    }

    #[test]
    fn invalid_text_has_positions_and_garbage_bundles_are_invalid() {
        let Err(Rejected::Invalid(p)) = check(b"schema = 2\n", Kind::Config) else {
            panic!("accepted")
        };
        assert!(
            p.iter().any(|p| p.line == Some(1) && p.path == "schema"),
            "{p:?}"
        );
        let Err(Rejected::Invalid(p)) = check(b"not a tar", Kind::Bundle) else {
            panic!("accepted")
        };
        assert_eq!(p[0].line, None);
        let big = vec![b'#'; (1 << 20) + 1];
        assert!(matches!(
            check(&big, Kind::Config),
            Err(Rejected::TooLarge(_))
        ));
    }
}
