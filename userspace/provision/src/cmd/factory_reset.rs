//! `factory-reset [--yes]`: wipes /data so the next boot is unprovisioned (DESIGN.md
//! "Reprovisioning"). The A/B layout stays; the fresh-flash marker goes too, so
//! `/boot/config.toml` is not replayed: the next boot looks for a USB seed, then opens
//! the console.

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use atomix_config::generations::Store;
use atomix_provision::paths::Paths;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prefix of the paths (data/ is wiped under it).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&args.root);
    let data = paths.data();
    if !args.yes {
        eprint!(
            "This erases all configuration, containers' data and job history under {}.\nType \"yes\" to continue: ",
            data.display()
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if answer.trim() != "yes" {
            eprintln!("aborted: nothing was changed");
            return Ok(ExitCode::from(1));
        }
    }
    wipe(&paths)?;
    println!(
        "{} wiped: reboot to reprovision (USB seed or the console on port 8080)",
        data.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Unprovisions first (so a power cut mid-wipe leaves an unprovisioned device), then
/// removes everything on the data filesystem, never crossing into another mount.
pub fn wipe(paths: &Paths) -> anyhow::Result<()> {
    let data = paths.data();
    Store::new(paths.config_store())
        .clear_current()
        .context("cannot unprovision")?;
    let dev = std::fs::metadata(&data)
        .with_context(|| format!("cannot read {}", data.display()))?
        .dev();
    remove_children(&data, dev)?;
    std::fs::File::open(&data)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", data.display()))
}

fn remove_children(dir: &Path, dev: u64) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            if meta.dev() != dev {
                eprintln!("{}: a mount point, left alone", path.display());
                continue;
            }
            remove_children(&path, dev)?;
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}
