//! What the service does at boot (DESIGN.md section 5): a decision from three facts
//! ([`plan`], a table-tested pure function) and its execution ([`run`]).
//!
//! * Provisioned: re-apply the current generation (mark the slot good only if every
//!   step succeeds).
//! * Unprovisioned: a seed in `/boot` (`config.toml` or a bundle) only while the
//!   fresh-flash marker is present; the marker goes once that seed has been dealt with
//!   (applied or refused), never before; then USB media; then the console waits (the API is already serving), and
//!   USB media plugged in meanwhile are searched as they arrive.

use std::sync::Arc;
use std::time::Duration;

use atomix_config::generations::Origin;

use crate::input::{self, Problem, Rejected};
use crate::seed::{self, Seed, UsbWatch};
use crate::service::{ImportError, Service};

/// What the boot flow looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `/data/config/current` exists.
    pub provisioned: bool,
    /// `/data/atomix/fresh-flash` exists.
    pub fresh_flash: bool,
    /// A seed file is in `/boot`.
    pub boot_seed: bool,
}

/// One thing to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAction {
    /// Re-apply the current generation.
    Reapply,
    /// Import the seed in `/boot`.
    ImportBootSeed,
    /// Leave the seed in `/boot` alone (not a fresh flash), and say so.
    IgnoreBootSeed,
    /// Remove the fresh-flash marker.
    RemoveMarker,
    /// Look for a seed on USB media (skipped once an earlier import succeeded).
    ImportUsbSeed,
}

/// The boot plan for these facts.
pub fn plan(f: Facts) -> Vec<BootAction> {
    use BootAction::*;
    let mut out = Vec::new();
    if f.provisioned {
        out.push(Reapply);
        if f.fresh_flash {
            // Provisioned from the boot seed, then cut off before the marker went.
            out.push(RemoveMarker);
        }
        return out;
    }
    match (f.fresh_flash, f.boot_seed) {
        (true, true) => out.extend([ImportBootSeed, RemoveMarker]),
        (true, false) => out.push(RemoveMarker),
        (false, true) => out.push(IgnoreBootSeed),
        (false, false) => {}
    }
    out.push(ImportUsbSeed);
    out
}

/// Gathers the facts from disk.
pub fn facts(svc: &Service) -> Facts {
    Facts {
        provisioned: svc.provisioned(),
        fresh_flash: svc.paths.marker().exists(),
        boot_seed: seed::any_seed_in(&svc.paths.boot()),
    }
}

/// How often the unprovisioned device looks for newly plugged USB media.
const USB_POLL: Duration = Duration::from_secs(2);

/// Runs the boot plan, then, while unprovisioned, watches for USB media (blocking; call
/// it on its own thread).
pub fn run(svc: &Arc<Service>) {
    let steps = plan(facts(svc));
    let mut watch = None;
    log::info!("boot flow: {steps:?}");
    for step in steps {
        match step {
            BootAction::Reapply => reapply(svc),
            BootAction::ImportBootSeed => {
                let found = seed::seed_in_dir(&svc.paths.boot(), "/boot");
                import(svc, Origin::Boot, found);
            }
            BootAction::IgnoreBootSeed => log::info!(
                "the seed in /boot is ignored: it is applied only on the first boot after a flash"
            ),
            BootAction::RemoveMarker => {
                let marker = svc.paths.marker();
                match std::fs::remove_file(&marker) {
                    Ok(()) => log::info!("fresh-flash marker removed"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        log::error!("cannot remove {}: {e}", marker.display())
                    }
                }
            }
            BootAction::ImportUsbSeed => {
                if svc.provisioned() {
                    continue;
                }
                let found = match svc.usb_dir.as_deref() {
                    Some(dir) => {
                        seed::find_usb_seed(&svc.paths, svc.applier.system.as_ref(), Some(dir))
                    }
                    None => {
                        let present = usb_filesystems(svc);
                        let found =
                            seed::search_devices(&svc.paths, svc.applier.system.as_ref(), &present);
                        watch = Some(UsbWatch::starting_with(present));
                        found
                    }
                };
                import(svc, Origin::Usb, Ok(found));
            }
        }
    }
    if svc.provisioned() {
        return;
    }
    log::info!(target: kmsg_log::NOTICE, "unprovisioned: the console waits on port 8080");
    let Some(mut watch) = watch else { return };
    // A USB stick may come up after the first look (slow enumeration) or be plugged in
    // by an operator at the waiting device: search each one as it arrives.
    while !svc.provisioned() {
        std::thread::sleep(USB_POLL);
        let arrived = watch.arrived(usb_filesystems(svc));
        if arrived.is_empty() || svc.provisioned() {
            continue;
        }
        log::info!("USB media arrived: {arrived:?}");
        let found = seed::search_devices(&svc.paths, svc.applier.system.as_ref(), &arrived);
        import(svc, Origin::Usb, Ok(found));
    }
}

fn usb_filesystems(svc: &Service) -> Vec<std::path::PathBuf> {
    seed::usb_filesystems(&svc.paths.under("sys/block"))
}

fn reapply(svc: &Arc<Service>) {
    let Some(n) = svc.current() else { return };
    match svc.tracker.start(Origin::Boot, Some(n)) {
        Ok(job) => {
            let outcome = svc.applier.reapply(job, n);
            if outcome.succeeded() {
                // Mark-good is the re-apply's last step.
                svc.note_marked_good();
            } else {
                log::error!("re-applying generation {n} failed: the slot is not marked good");
            }
        }
        Err(busy) => log::error!("cannot re-apply: {busy}"),
    }
}

fn import(svc: &Arc<Service>, origin: Origin, found: anyhow::Result<Option<Seed>>) {
    let error = |location: String, errors: Vec<Problem>, job: Option<String>| ImportError {
        origin,
        location,
        time: crate::now_rfc3339(),
        errors,
        job,
    };
    let seed = match found {
        Ok(Some(seed)) => seed,
        Ok(None) => return,
        Err(e) => {
            svc.record_import_error(error(String::new(), vec![plain(format!("{e:#}"))], None));
            return;
        }
    };
    log::info!(target: kmsg_log::NOTICE, "seed found: {}", seed.location);
    let accepted = match input::check(&seed.bytes, seed.kind) {
        Ok(a) => a,
        Err(rejected) => {
            let problems = match rejected {
                Rejected::Invalid(p) => p,
                Rejected::TooLarge(m) => vec![plain(m)],
            };
            svc.record_import_error(error(seed.location, problems, None));
            return;
        }
    };
    // An API client may have got in first: wait for its job, which may provision.
    let job = loop {
        if svc.provisioned() {
            log::info!("{} not applied: provisioned meanwhile", seed.location);
            return;
        }
        match svc.tracker.start(origin, svc.current()) {
            Ok(job) => break job,
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let id = job.id.clone();
    let outcome = svc.import(job, accepted, origin, None);
    if let Some(e) = outcome.result.error {
        svc.record_import_error(error(seed.location, vec![plain(e)], Some(id)));
    }
}

fn plain(message: String) -> Problem {
    Problem {
        line: None,
        column: None,
        path: String::new(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::BootAction::*;
    use super::*;

    #[test]
    fn decisions() {
        let f = |provisioned, fresh_flash, boot_seed| Facts {
            provisioned,
            fresh_flash,
            boot_seed,
        };
        let table: [(&str, Facts, &[BootAction]); 7] = [
            ("provisioned", f(true, false, true), &[Reapply]),
            (
                "provisioned, marker left by a cut-off first boot",
                f(true, true, true),
                &[Reapply, RemoveMarker],
            ),
            (
                "fresh flash with a boot seed",
                f(false, true, true),
                &[ImportBootSeed, RemoveMarker, ImportUsbSeed],
            ),
            (
                "fresh flash without a boot seed",
                f(false, true, false),
                &[RemoveMarker, ImportUsbSeed],
            ),
            (
                "wiped /data, boot config still there",
                f(false, false, true),
                &[IgnoreBootSeed, ImportUsbSeed],
            ),
            (
                "nothing at all: USB, then console",
                f(false, false, false),
                &[ImportUsbSeed],
            ),
            ("provisioned, no seeds", f(true, false, false), &[Reapply]),
        ];
        for (name, facts, want) in table {
            assert_eq!(plan(facts), want, "{name}");
        }
    }
}
