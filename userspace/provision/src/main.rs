//! `atomix-provision`: the AtomixOS provisioning tool and service. Each subcommand lives
//! in its own module under `cmd/`; the service's logic is the library (`src/lib.rs`).

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "atomix-provision", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config.toml or a config bundle. Exit 0: valid; 1: invalid; 2: unreadable.
    Validate(cmd::validate::Args),
    /// Write the canonical rendered/ tree for a config.toml or bundle.
    Render(cmd::render::Args),
    /// Run the provisioning service (first-boot.service, every boot).
    Serve(cmd::serve::Args),
    /// Put the current config's files back in /etc early in boot, load its ruleset and
    /// host name (atomix-restore.service). Exit 0: restored or unprovisioned; 1: not all.
    Restore(cmd::restore::Args),
    /// Wipe /data so that the next boot is unprovisioned.
    FactoryReset(cmd::factory_reset::Args),
    /// The A/B slot state on the boot disk; RAUC's bootloader backend.
    Slot(cmd::slot::Args),
    /// Install the update bundle at URL unless it runs already or is in the other slot
    /// (what atomix-update.service runs).
    UpdateInstall(cmd::update_install::Args),
    /// Run by udev for NBD devices: keep its reference to a streamed bundle's device until
    /// dm-verity holds it.
    NbdHold(cmd::nbd_hold::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Render(args) => cmd::render::run(&args),
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Restore(args) => cmd::restore::run(&args),
        Command::FactoryReset(args) => cmd::factory_reset::run(&args),
        Command::Slot(args) => cmd::slot::run(&args),
        Command::UpdateInstall(args) => cmd::update_install::run(&args),
        Command::NbdHold(args) => cmd::nbd_hold::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atomix-provision: {e:#}");
            ExitCode::from(2)
        }
    }
}
