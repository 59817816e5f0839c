//! `nbd-hold NAME`: run by udev (`60-atomix-nbd-hold.rules`) for each event of an NBD
//! device, while its worker holds the device open; returns once that reference may go
//! without disconnecting a streamed RAUC bundle under RAUC (see [`atomix_provision::nbd`]).
//! Always exits 0: udev's event must complete either way.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atomix_provision::nbd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel name of the device (udev's `%k`): `nbd0`, or a partition `nbd0p1`.
    pub name: String,
    /// Hold at most this long (seconds).
    #[arg(long, default_value_t = nbd::HOLD_LIMIT.as_secs())]
    pub limit: u64,
    /// Prefix of `sys/` and `proc/` (tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Where the outcome is logged besides stderr.
    #[arg(long, default_value = "/dev/kmsg")]
    pub kmsg: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Some(disk) = nbd::whole_disk(&args.name) else {
        log::warn!(target: kmsg_log::KMSG, "nbd-hold: {:?} is not an NBD device name (nbdN or nbdNpM): nothing held",
            args.name);
        return Ok(ExitCode::SUCCESS);
    };
    let held = nbd::hold(&args.root, disk, Duration::from_secs(args.limit), nbd::POLL);
    let ms = held.waited.as_millis();
    match held.release {
        // Released at the first look: the common case, not worth a line.
        Some(_) if !held.held => {}
        Some(why) => {
            log::info!(target: kmsg_log::KMSG, "nbd-hold: kept udev's reference to {disk} for {ms} ms, until {why}")
        }
        None => {
            log::warn!(target: kmsg_log::KMSG, "nbd-hold: {} is still connected and nothing holds it after {} s; letting \
             udev's reference go (its last close disconnects it)",
            nbd::sys_dir(&args.root, disk).display(),
            args.limit)
        }
    }
    Ok(ExitCode::SUCCESS)
}
