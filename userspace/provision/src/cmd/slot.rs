//! `slot`: the A/B slot state on the boot disk (crate `slot-state`), for RAUC and for
//! people. `slot status` prints it; `slot rauc-backend ...` is RAUC's custom bootloader
//! backend (`bootloader-custom-backend=` in `/etc/rauc/system.conf`): `get-primary`,
//! `set-primary SLOT`, `get-state SLOT`, `set-state SLOT good|bad`, `get-current`, with
//! the meaning RAUC's U-Boot backend gives `BOOT_ORDER` and `BOOT_<slot>_LEFT`.
//! `slot wait-good` is the mark-good deadline (`atomix-mark-good-deadline.service`, see
//! [`atomix_provision::deadline`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use atomix_config::generations::Store;
use atomix_provision::deadline::{self, Verdict, Watch};
use atomix_provision::paths::Paths;
use atomix_provision::system::run_command;
use boot_state::BootRecord;
use slot_state::{Slot, SlotState, Source, ATTEMPTS};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The disk holding the slot state (default: the disk this system booted from, as
    /// the initrd recorded it).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Prefix of the paths (the boot record, /proc/cmdline).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the slot state and where it was read from.
    Status,
    /// RAUC's custom bootloader backend interface.
    #[command(name = "rauc-backend", subcommand)]
    RaucBackend(Backend),
    /// Wait until the booted slot is marked good; exit 1 when the apply made no progress
    /// for the stall time (atomix-mark-good-deadline.service then reboots). Exit 0 at
    /// once on an unprovisioned device, or when the booted slot or disk is unknown.
    WaitGood(WaitGood),
}

#[derive(Debug, clap::Args)]
pub struct WaitGood {
    /// How long the apply may go without progress [default: $ATOMIX_MARK_GOOD_STALL,
    /// else 15min].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stall: Option<Duration>,
    /// Also write the verdict to this kernel log device (e.g. /dev/kmsg).
    #[arg(long, value_name = "PATH")]
    pub kmsg: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Backend {
    GetPrimary,
    SetPrimary { slot: String },
    GetState { slot: String },
    SetState { slot: String, state: String },
    GetCurrent,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&args.root);
    if let Command::WaitGood(wait) = &args.command {
        return wait_good(&paths, args.disk.as_deref(), wait);
    }
    if let Command::RaucBackend(Backend::GetCurrent) = &args.command {
        println!("{}", current_slot(&paths)?);
        return Ok(ExitCode::SUCCESS);
    }
    let disk_path = match &args.disk {
        Some(d) => d.clone(),
        None => boot_disk(&paths)?,
    };
    let writable = matches!(
        &args.command,
        Command::RaucBackend(Backend::SetPrimary { .. } | Backend::SetState { .. })
    );
    let disk = File::options()
        .read(true)
        .write(writable)
        .open(&disk_path)
        .with_context(|| format!("cannot open {}", disk_path.display()))?;
    let (mut state, source) = slot_state::read(&disk)
        .with_context(|| format!("cannot read the slot state on {}", disk_path.display()))?;
    let save = |state: &SlotState| {
        slot_state::write(&disk, state)
            .with_context(|| format!("cannot write the slot state on {}", disk_path.display()))
    };
    match &args.command {
        Command::Status => {
            println!("{state}");
            match source {
                Source::Copy(i) => println!("read from copy {i} on {}", disk_path.display()),
                Source::Factory([e0, e1]) => println!(
                    "no valid copy on {} (copy 0: {e0}; copy 1: {e1}): the factory state applies",
                    disk_path.display()
                ),
            }
            for slot in Slot::ALL {
                let good = if state.is_good(slot) { "good" } else { "bad" };
                println!("slot {slot}: {good}, {} tries left", state.left(slot));
            }
        }
        Command::RaucBackend(Backend::GetPrimary) => match state.primary() {
            Some(slot) => println!("{slot}"),
            None => bail!("no slot has tries left ({state})"),
        },
        Command::RaucBackend(Backend::GetState { slot }) => {
            let good = state.is_good(parse_slot(slot)?);
            println!("{}", if good { "good" } else { "bad" });
        }
        Command::RaucBackend(Backend::SetPrimary { slot }) => {
            state.set_primary(parse_slot(slot)?);
            save(&state)?;
        }
        Command::RaucBackend(Backend::SetState { slot, state: s }) => {
            let good = match s.as_str() {
                "good" => true,
                "bad" => false,
                other => bail!("state {other:?} is neither good nor bad"),
            };
            state.mark(parse_slot(slot)?, good);
            save(&state)?;
        }
        Command::RaucBackend(Backend::GetCurrent) | Command::WaitGood(_) => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The provisioning service, whose apply stalled.
const SERVICE: &str = "first-boot.service";

/// Kills the provisioning service before the deadline's reboot. On SIGTERM it would wait
/// up to a minute for its running apply to end, and this one made no progress for the
/// whole stall time: the reboot would only be held up. Killed, its job is rolled back by
/// the next start, as after a power cut.
fn kill_stalled_service() {
    match run_command(&["systemctl", "kill", "--signal=SIGKILL", SERVICE]) {
        Ok(_) => {
            log::info!(target: kmsg_log::NOTICE, "{SERVICE} killed: its stalled apply is rolled back by the next boot");
        }
        Err(e) => log::warn!("cannot kill {SERVICE}: {e}"),
    }
}

/// How often `wait-good` looks.
const POLL: Duration = Duration::from_secs(2);

/// `slot wait-good`: the mark-good deadline of a provisioned boot.
fn wait_good(paths: &Paths, disk: Option<&Path>, args: &WaitGood) -> anyhow::Result<ExitCode> {
    let stall = match args.stall {
        Some(s) => s,
        None => {
            deadline::stall_from(std::env::var(deadline::ENV).ok().as_deref()).unwrap_or_else(|e| {
                log::error!("{e}: the default applies");
                deadline::DEFAULT_STALL
            })
        }
    };
    // Only a missed deadline fails (the unit's failure reboots): what keeps this from
    // watching at all is said, and ends it.
    let setup = || -> anyhow::Result<Option<(Slot, PathBuf)>> {
        if Store::new(paths.config_store()).current()?.is_none() {
            return Ok(None);
        }
        let disk_path = match disk {
            Some(d) => d.to_owned(),
            None => boot_disk(paths)?,
        };
        Ok(Some((current_slot(paths)?, disk_path)))
    };
    let (slot, disk_path) = match setup() {
        Ok(Some(found)) => found,
        Ok(None) => {
            log::info!("unprovisioned: no mark-good deadline (the console may wait for ever)");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            log::error!("no mark-good deadline: {e:#}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let jobs = paths.jobs();
    log::info!(target: kmsg_log::NOTICE, "mark-good deadline: slot {slot} must be marked good; the device reboots after {} without apply progress",
        humantime::format_duration(stall));
    let initial = deadline::progress(&jobs);
    let mut watch = Watch::new(stall, Instant::now(), initial.clone());
    let mut unreadable = false;
    loop {
        // Marked good sets the booted slot's tries back to ATTEMPTS; the boot itself
        // counted one down, so before that it has fewer.
        let good = match File::open(&disk_path).and_then(|d| slot_state::read(&d)) {
            Ok((state, _)) => {
                unreadable = false;
                state.is_good(slot) && state.left(slot) == ATTEMPTS
            }
            Err(e) => {
                if !unreadable {
                    log::warn!("cannot read the slot state on {}: {e}", disk_path.display());
                }
                unreadable = true;
                false
            }
        };
        let now = deadline::progress(&jobs);
        if !good {
            if let Some(id) = deadline::failed_since(&jobs, &initial, &now).first() {
                log::warn!("mark-good deadline stands down: the apply of this boot failed (job {id}), it did not hang; slot {slot} stays unconfirmed");
                return Ok(ExitCode::SUCCESS);
            }
        }
        match watch.observe(Instant::now(), good, now) {
            Verdict::Good => {
                log::info!(target: kmsg_log::NOTICE, "mark-good deadline met: slot {slot} is marked good");
                return Ok(ExitCode::SUCCESS);
            }
            Verdict::Waiting { .. } => std::thread::sleep(POLL),
            Verdict::Stalled { idle } => {
                log::error!("mark-good deadline missed: slot {slot} is not marked good and the apply made no progress for {}: rebooting (the bootloader counts the try)",
                    humantime::format_duration(Duration::from_secs(idle.as_secs())));
                kill_stalled_service();
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

fn parse_slot(s: &str) -> anyhow::Result<Slot> {
    Slot::parse(s).with_context(|| format!("{s:?} is not a slot (A or B)"))
}

/// The disk the initrd found the booted slot on.
fn boot_disk(paths: &Paths) -> anyhow::Result<PathBuf> {
    let record_path = paths.boot_record();
    let record: BootRecord = boot_state::read_record(&record_path)
        .with_context(|| format!("cannot read {}", record_path.display()))?
        .with_context(|| {
            format!(
                "{} is missing: not booted through the AtomixOS initrd; give --disk",
                record_path.display()
            )
        })?;
    Ok(Path::new(&record.disk).to_owned())
}

/// The booted slot, from `rauc.slot=` on the kernel command line.
fn current_slot(paths: &Paths) -> anyhow::Result<Slot> {
    let path = paths.under("proc/cmdline");
    let cmdline = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rauc.slot="))
        .and_then(Slot::parse)
        .with_context(|| format!("no rauc.slot=A|B in {}", path.display()))
}
