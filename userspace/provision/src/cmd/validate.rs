//! `validate FILE [--json]`: every error at once, one a line, `FILE:LINE:COL: path: message`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::{load, Loaded, EXIT_INVALID};
use atomix_config::Diagnostic;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A config.toml, or a bundle (tar or tar.gz) holding one.
    pub file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Report<'a> {
    ok: bool,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
    /// Set when a bundle was refused before its config.toml could be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.file)?;
    let mut out = std::io::stdout().lock();
    let (ok, lines, report) = match &loaded {
        Loaded::Refused(e) => {
            let line = format!("{}: {e}", args.file.display());
            let report = Report {
                ok: false,
                errors: vec![],
                warnings: vec![],
                refused: Some(e.to_string()),
            };
            (false, vec![line], report)
        }
        Loaded::Checked { checked, .. } => {
            let ok = checked.is_valid();
            let mut lines: Vec<String> = checked.errors().map(ToString::to_string).collect();
            lines.extend(checked.warnings().map(ToString::to_string));
            if ok {
                lines.insert(0, "ok".to_owned());
            }
            let report = Report {
                ok,
                errors: checked.errors().collect(),
                warnings: checked.warnings().collect(),
                refused: None,
            };
            (ok, lines, report)
        }
    };
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("cannot write to stdout")?;
        writeln!(out).context("cannot write to stdout")?;
    } else {
        for line in lines {
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}
