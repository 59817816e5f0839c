//! `factory-reset [--yes]`: wipes /data at once so the next boot is unprovisioned
//! (DESIGN.md "Reprovisioning"; the erase is `atomix_provision::reset::wipe`). For a
//! device whose service and containers run, `POST /api/factory-reset` (`atomixctl
//! factory-reset`, the console) is the safe way: it erases early in the next boot.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use atomix_provision::paths::Paths;
use atomix_provision::reset;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prefix of the paths (data/ is wiped under it).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Only finish a reset accepted over the API before the reboot: erase data/ if its
    /// marker (data/atomix/factory-reset) is there, else do nothing. Run at boot by
    /// atomix-factory-reset.service, before anything uses /data.
    #[arg(long, conflicts_with = "yes")]
    pub pending: bool,
    /// Also write error lines to this kernel log device (e.g. /dev/kmsg).
    #[arg(long, value_name = "PATH")]
    pub kmsg: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&args.root);
    if args.pending {
        super::restore::complete_factory_reset(&paths);
        return Ok(ExitCode::SUCCESS);
    }
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
    reset::wipe(&paths).with_context(|| format!("cannot wipe {}", data.display()))?;
    println!(
        "{} wiped: reboot to reprovision (USB seed or the console on port 8080)",
        data.display()
    );
    Ok(ExitCode::SUCCESS)
}
