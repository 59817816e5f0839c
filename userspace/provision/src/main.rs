//! `atomix-provision`: the AtomixOS provisioning tool and service. Each subcommand lives
//! in its own module under `cmd/`; the service's logic is the library (`src/lib.rs`).

mod cmd;

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

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
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `atomix-provision man > atomix-provision.8`.
    Man,
}

impl Command {
    /// The kernel log device the subcommand also logs to (`--kmsg`), if any.
    fn kmsg(&self) -> Option<&Path> {
        match self {
            Command::Serve(args) => args.kmsg.as_deref(),
            Command::Restore(args) => args.kmsg.as_deref(),
            Command::FactoryReset(args) => args.kmsg.as_deref(),
            Command::Slot(args) => match &args.command {
                cmd::slot::Command::WaitGood(wait) => wait.kmsg.as_deref(),
                _ => None,
            },
            Command::NbdHold(args) => Some(&args.kmsg),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every line to stderr with its kernel level, for the journal; to the kernel log
    // (the serial console) errors and what is logged for it (kmsg_log::KMSG, NOTICE).
    kmsg_log::init(kmsg_log::Config {
        ident: "atomix-provision",
        kmsg: cli.command.kmsg(),
        kmsg_level: log::LevelFilter::Error,
        stderr: kmsg_log::Stderr::Prefixed,
    });
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Render(args) => cmd::render::run(&args),
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Restore(args) => cmd::restore::run(&args),
        Command::FactoryReset(args) => cmd::factory_reset::run(&args),
        Command::Slot(args) => cmd::slot::run(&args),
        Command::UpdateInstall(args) => cmd::update_install::run(&args),
        Command::NbdHold(args) => cmd::nbd_hold::run(&args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "atomix-provision",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    use std::io::Write as _;
                    std::io::stdout().write_all(&out)?;
                    Ok(ExitCode::SUCCESS)
                })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atomix-provision: {e:#}");
            ExitCode::from(2)
        }
    }
}
