//! Subcommands, and what they share: reading an input file into a checked config.

pub mod factory_reset;
pub mod nbd_hold;
pub mod render;
pub mod restore;
pub mod serve;
pub mod slot;
pub mod update_install;
pub mod validate;

use std::path::Path;

use anyhow::Context as _;
pub use atomix_config::report::Loaded;

/// Exit status for an invalid input.
pub const EXIT_INVALID: u8 = 1;

/// Reads FILE (errors here are "unreadable": exit 2) and checks it.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(atomix_config::report::check_input(
        &path.display().to_string(),
        &bytes,
    ))
}
