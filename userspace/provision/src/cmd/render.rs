//! `render FILE --out DIR`: the canonical rendered/ tree; same input, same bytes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load, Loaded, EXIT_INVALID};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A config.toml, or a bundle (tar or tar.gz) holding one.
    pub file: PathBuf,
    /// Where to write the tree; must be absent or empty.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (text, checked) = match load(&args.file)? {
        Loaded::Refused(e) => {
            eprintln!("{}: {e}", args.file.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Loaded::Checked { text, checked } => (text, checked),
    };
    let Some(config) = &checked.config else {
        for d in checked.errors() {
            eprintln!("{d}");
        }
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let tree = atomix_config::render::render(config, &atomix_config::config_sha256(&text));
    tree.write_into(&args.out)
        .with_context(|| format!("cannot write the rendered tree to {}", args.out.display()))?;
    Ok(ExitCode::SUCCESS)
}
