//! `restore`: put the current generation's files back in `/etc` at boot, load its
//! ruleset and host name (`atomix-restore.service`, before the network comes up). The
//! service's re-apply later finds them in place and restarts nothing that read them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use atomix_provision::apply::{Admin, Applier};
use atomix_provision::paths::Paths;
use atomix_provision::reset;
use atomix_provision::restore::{restore, Restored};
use atomix_provision::system::{RealSystem, RecordSystem, System};
use failpoints::Failpoints;

use super::serve::SystemKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prefix of every path read or written (data/, etc/, run/).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// How system actions (nft, hostname) are performed.
    #[arg(long, value_enum, default_value_t = SystemKind::Real)]
    pub system: SystemKind,
    /// Also write error lines to this kernel log device (e.g. /dev/kmsg).
    #[arg(long, value_name = "PATH")]
    pub kmsg: Option<PathBuf>,
}

/// Completes a factory reset the service accepted before the reboot (`reset`): this
/// runs before anything else uses /data. A failure is logged; the device is
/// unprovisioned either way, and the next run tries again.
pub fn complete_factory_reset(paths: &Paths) {
    match reset::complete_pending(paths) {
        Ok(false) => {}
        Ok(true) => log::warn!(
            target: kmsg_log::NOTICE,
            "factory reset: {} erased; the device is unprovisioned",
            paths.data().display()
        ),
        Err(e) => log::error!(
            "factory reset: the erase of {} is incomplete, retried next boot: {:#}",
            paths.data().display(),
            anyhow::Error::new(e)
        ),
    }
}

/// Exit 0: restored or unprovisioned; 1: a step (or all) left to the re-apply.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&args.root);
    complete_factory_reset(&paths);
    let system: Arc<dyn System> = match args.system {
        SystemKind::Real => Arc::new(RealSystem),
        SystemKind::Record => Arc::new(RecordSystem::new(paths.actions_log())),
    };
    let passwd = std::fs::read_to_string(paths.passwd()).unwrap_or_default();
    let applier = Applier {
        paths,
        system,
        failpoints: Failpoints::default(),
        admin: Admin::from_passwd(&passwd),
    };
    let restored = restore(&applier);
    match restored {
        Ok(Restored::Unprovisioned) => {
            log::info!("restore: unprovisioned, the image's defaults stay");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Restored::AlreadyInPlace) => {
            log::info!("restore: the live files are in place already this boot");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Restored::Generation { n, failed }) if failed.is_empty() => {
            log::info!(target: kmsg_log::NOTICE, "restore: generation {n} is back in place");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Restored::Generation { n, failed }) => {
            log::error!(
                "restore: generation {n} is back except {}, left to the re-apply",
                failed.join(", ")
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            log::error!("restore: nothing restored, the re-apply will report it: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}
