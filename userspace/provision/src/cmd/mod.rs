//! Subcommands, and what they share: reading an input file into a checked config.

pub mod factory_reset;
pub mod render;
pub mod serve;
pub mod validate;

use std::path::Path;

use anyhow::Context as _;
use atomix_config::bundle::{self, BundleError, Input, Limits};
use atomix_config::Checked;

/// Exit status for an invalid input.
pub const EXIT_INVALID: u8 = 1;

/// An input read from disk: the config text and what checking it found, or why the
/// bundle holding it was refused.
pub enum Loaded {
    Checked { text: String, checked: Box<Checked> },
    Refused(BundleError),
}

/// Reads FILE (errors here are "unreadable": exit 2) and checks it.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shown = path.display().to_string();
    let (name, text) = match bundle::read_input(&bytes, Limits::default()) {
        Ok(Input::Config(text)) => (shown, text),
        // Inside a bundle the file is always config.toml.
        Ok(Input::Bundle(b)) => ("config.toml".to_owned(), b.config),
        Err(e) => return Ok(Loaded::Refused(e)),
    };
    let checked = atomix_config::check(&name, &text);
    Ok(Loaded::Checked {
        text,
        checked: Box::new(checked),
    })
}
