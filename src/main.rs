//! `atomix-initrd`: the AtomixOS early-boot provisioner, run from the initramfs.
//!
//! It mounts the booted slot's squashfs, prepares the tmpfs the overlay root lives on,
//! partitions the rest of the boot disk on the first boot after a flash (`systemd-repart`),
//! formats a wiped data partition, mounts `/data`, leaves the fresh-flash marker for the
//! provisioning service and records what it did in `/run/atomix/boot.json`.

use std::fs;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use boot_state::BootRecord;
use disk_layout::Layout;
use failpoints::Failpoints;

mod apply;
mod blockdev;
mod cli;
mod cmdline;
mod inspect;
mod mountinfo;
mod partition_table;
mod plan;
mod sysroot_unit;
mod system;

use cli::{Command, SetupArgs};
use plan::{Paths, Scope, Stage};
use system::System;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("atomix-initrd: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        Command::Version => {
            println!("atomix-initrd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::SysrootUnit => {
            print!("{}", sysroot_unit::sysroot_mount_unit());
            Ok(())
        }
        Command::Setup(args) => {
            init_logging(&cli.kmsg);
            setup(&args)
        }
        Command::Plan(args) => {
            init_logging(&cli.kmsg);
            print_plan(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            if !std::io::stderr().is_terminal() {
                // The logger shows a terminal everything; others still get the verdict.
                eprintln!("atomix-initrd: error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Every record to the kernel log with its level; stderr for a person at a terminal.
fn init_logging(kmsg: &Path) {
    kmsg_log::init(kmsg_log::Config {
        ident: "atomix-initrd",
        kmsg: Some(kmsg),
        kmsg_level: log::LevelFilter::Debug,
        stderr: kmsg_log::Stderr::Fallback,
    });
}

fn setup(args: &SetupArgs) -> Result<()> {
    let started = Instant::now();
    let paths = Paths::under(&args.root);
    let layout = Layout::read(&args.repart_dir).context("cannot load the partition layout")?;
    let system = System {
        device_timeout: Duration::from_secs(args.device_timeout),
    };
    let failpoints = Failpoints::from_env()?;

    let (steps, mut record) = match args.stage {
        Stage::PostSysroot => post_sysroot_plan(&paths)?,
        Stage::All => inspect_and_plan(args, Scope::All, &layout, &paths, &system)?,
        Stage::PreSysroot => inspect_and_plan(args, Scope::PreSysroot, &layout, &paths, &system)?,
    };
    apply::apply(&steps, &layout, &system, &failpoints, &mut record)?;
    log::info!(
        "early boot {} done in {} ms (slot {}, fresh flash: {}, created: {}, data formatted: {})",
        match args.stage {
            Stage::All => "setup",
            Stage::PreSysroot => "pre-sysroot stage",
            Stage::PostSysroot => "post-sysroot stage",
        },
        started.elapsed().as_millis(),
        record.slot,
        record.fresh_flash,
        if record.partitions_created.is_empty() {
            "nothing".to_owned()
        } else {
            record.partitions_created.join(", ")
        },
        record.data_formatted,
    );
    Ok(())
}

/// What `setup` would decide for the disk as it is now, on stdout, one `key: value` per
/// line (`fresh-flash`, `missing`, `data`, `steps`); nothing is mounted or written. The
/// crash campaign asks it what a boot after each simulated power cut would do.
fn print_plan(args: &SetupArgs) -> Result<()> {
    let paths = Paths::under(&args.root);
    let layout = Layout::read(&args.repart_dir).context("cannot load the partition layout")?;
    let system = System {
        device_timeout: Duration::from_secs(args.device_timeout),
    };
    let Planned {
        plan, situation, ..
    } = read_and_plan(args, Scope::All, &layout, &paths, &system)?;
    let words = |v: Vec<&str>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(" ")
        }
    };
    println!(
        "fresh-flash: {}",
        if plan.fresh_flash { "yes" } else { "no" }
    );
    println!(
        "missing: {}",
        words(plan.missing.iter().map(String::as_str).collect())
    );
    println!(
        "data: {}",
        match &situation.data {
            None => "absent".to_owned(),
            Some(d) => d
                .fstype
                .clone()
                .unwrap_or_else(|| "no-filesystem".to_owned()),
        }
    );
    println!(
        "steps: {}",
        words(plan.steps.iter().map(plan::Step::name).collect())
    );
    Ok(())
}

/// What inspection found and what was planned from it.
struct Planned {
    boot: cmdline::BootArgs,
    situation: plan::Situation,
    plan: plan::Plan,
    timings: Vec<boot_state::StepTiming>,
}

/// Reads the command line and the boot disk, and plans this boot.
fn read_and_plan(
    args: &SetupArgs,
    scope: Scope,
    layout: &Layout,
    paths: &Paths,
    system: &System,
) -> Result<Planned> {
    let mut timings = Vec::new();
    let text = fs::read_to_string(&args.cmdline).with_context(|| {
        format!(
            "cannot read the kernel command line {}",
            args.cmdline.display()
        )
    })?;
    let boot = cmdline::parse(&text)?;
    log::info!(
        "slot {}, root PARTUUID {}, build {}",
        boot.slot,
        boot.root_partuuid,
        boot.build_id.as_deref().unwrap_or("(none)")
    );

    let situation = inspect::discover(&boot, system, &mut timings, now_rfc3339)?;
    let plan = plan::plan(&situation, layout, paths, scope);
    log::info!(
        "plan: fresh flash {}, missing partitions: {}, steps: {}",
        if plan.fresh_flash { "yes" } else { "no" },
        if plan.missing.is_empty() {
            "none".to_owned()
        } else {
            plan.missing.join(", ")
        },
        plan.steps
            .iter()
            .map(plan::Step::name)
            .collect::<Vec<_>>()
            .join(" → ")
    );
    Ok(Planned {
        boot,
        situation,
        plan,
        timings,
    })
}

/// Plans this boot and starts its record.
fn inspect_and_plan(
    args: &SetupArgs,
    scope: Scope,
    layout: &Layout,
    paths: &Paths,
    system: &System,
) -> Result<(Vec<plan::Step>, BootRecord)> {
    let Planned {
        boot,
        situation,
        plan,
        timings,
    } = read_and_plan(args, scope, layout, paths, system)?;
    let record = BootRecord {
        slot: boot.slot,
        build_id: boot.build_id,
        root_partuuid: boot.root_partuuid.hyphenated().to_string(),
        root_device: situation.root_device.display().to_string(),
        disk: situation.disk.display().to_string(),
        boot_device: situation
            .boot_device
            .as_ref()
            .map(|d| d.display().to_string()),
        fresh_flash: plan.fresh_flash,
        partitions_created: Vec::new(),
        data_formatted: false,
        data_device: situation
            .data
            .as_ref()
            .map(|d| d.device.display().to_string()),
        data_fstype: situation.data.as_ref().and_then(|d| d.fstype.clone()),
        steps: timings,
    };
    Ok((plan.steps, record))
}

/// The second half in the systemd initrd: continues from the record the first half wrote.
fn post_sysroot_plan(paths: &Paths) -> Result<(Vec<plan::Step>, BootRecord)> {
    let record: BootRecord = boot_state::read_record(&paths.boot_record)?.with_context(|| {
        format!(
            "{} does not exist: the pre-sysroot stage (atomix-setup.service) must run first",
            paths.boot_record.display()
        )
    })?;
    let marker = record.fresh_flash.then(|| boot_state::FreshFlashMarker {
        build_id: record.build_id.clone(),
        slot: record.slot,
        created: now_rfc3339(),
    });
    let steps = plan::post_sysroot_steps(
        Path::new(&record.disk),
        record.boot_device.as_deref().map(Path::new),
        marker,
        paths,
    );
    Ok((steps, record))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
