//! `validate FILE [--json]`: every error at once, one a line, `FILE:LINE:COL: path: message`.
//! The report itself is `atomix_config::report`, shared with `atomixctl validate`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load, EXIT_INVALID};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A config.toml, or a bundle (tar or tar.gz) holding one.
    pub file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.file)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &loaded.report())
            .context("cannot write to stdout")?;
        writeln!(out).context("cannot write to stdout")?;
    } else {
        for line in loaded.lines(&args.file.display().to_string()) {
            writeln!(out, "{line}").context("cannot write to stdout")?;
        }
    }
    Ok(if loaded.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}
