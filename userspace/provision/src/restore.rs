//! The current generation put back at boot (`atomix-provision restore`, run by
//! `atomix-restore.service` before the network and the services that read `/etc`).
//!
//! The root's `/etc` lives on the overlay's tmpfs: without this, a provisioned device
//! boots with the image's defaults (no ruleset of its own, the default LAN, the image's
//! host name) until the service's re-apply writes the files again and restarts every
//! service that read the old ones. With them back first, networkd, dnsmasq, chrony and
//! sshd start with the provisioned config, and the re-apply finds those files identical
//! and leaves the services alone ([`Act::IfChanged`]). Container units and the update
//! timer are still loaded by the re-apply: the generators ran before this.
//!
//! Only file operations ([`Executor::put_files`]), and the two things nothing would do
//! at start: the ruleset (`nft -f`) and the kernel's host name. Their steps are marked
//! unsettled ([`Owned::unsettled`]) before their files go in and settled once loaded, so
//! that when a load fails (or this is cut off in between) the re-apply runs the step's
//! actions itself, even with its files in place, and reports what failed. Nothing here
//! marks the slot good or bad.

use anyhow::{anyhow, Result};

use crate::apply::{load_generation, plan_sync, Applier, Owned, Step};
use crate::system::Action;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// No current generation: the image's defaults are right.
    Unprovisioned,
    /// The live files were put in place this boot already (by a restore or an apply):
    /// nothing done.
    AlreadyInPlace,
    /// Generation `n` is back; `failed` names the steps left to the re-apply.
    Generation { n: u64, failed: Vec<String> },
}

/// Puts the current generation's files back and loads the ruleset and the host name.
/// An error: nothing could be restored (e.g. the generation is not valid for this build);
/// the re-apply will say the same and not mark the slot good.
pub fn restore(applier: &Applier) -> Result<Restored> {
    if applier.paths.owned_manifest().exists() {
        return Ok(Restored::AlreadyInPlace);
    }
    let store = applier.store();
    let Some(n) = store
        .current()
        // Not as context: the store's error says its source already.
        .map_err(|e| anyhow!("cannot read the current generation: {e}"))?
    else {
        return Ok(Restored::Unprovisioned);
    };
    let loaded = load_generation(&store, n)?;
    let executor = applier.executor();
    let mut owned = Owned::default();
    let mut failed = Vec::new();
    for plan in plan_sync(Some(&loaded.desired), &owned.files.clone(), &applier.admin) {
        let step = plan.step;
        let tree = &loaded.desired.tree;
        let load = match step {
            Step::Firewall => tree.get("nftables/atomix.nft").map(|_| Action::NftApply {
                file: applier.paths.under("etc/nftables.d/atomix.nft"),
            }),
            Step::Hostname => tree.get("hostname").map(|name| Action::KernelHostname {
                name: name.trim().to_owned(),
            }),
            _ => None,
        };
        let result = (|| {
            if load.is_some() {
                owned.unsettled.insert(step.name().to_owned());
                owned.save(&applier.paths)?;
            }
            let message = executor.put_files(&plan, &mut owned)?;
            if let Some(action) = &load {
                applier.system.run(action)?;
                owned.unsettled.remove(step.name());
                owned.save(&applier.paths)?;
            }
            Ok::<_, anyhow::Error>(message)
        })();
        match result {
            Ok(message) => log::info!("restore {step}: {message}"),
            Err(e) => {
                log::error!("restore {step}: {e:#}; left to the re-apply");
                failed.push(step.name().to_owned());
            }
        }
    }
    Ok(Restored::Generation { n, failed })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use atomix_config::generations::Origin;

    use super::*;
    use crate::apply::fixture::Device;
    use crate::system::FakeSystem;

    /// A device provisioned with the example, then rebooted: the tmpfs `/etc` and
    /// `/run` are gone, `/data` stays.
    fn provisioned_then_rebooted() -> Device {
        let mut dev = Device::provisioned();
        dev.reboot();
        dev
    }

    #[test]
    fn an_unprovisioned_device_keeps_the_images_defaults() {
        let dev = Device::new();
        assert_eq!(restore(&dev.applier).unwrap(), Restored::Unprovisioned);
        assert!(dev.sys.commands().is_empty());
        assert!(!dev.root().join("etc").exists());
    }

    #[test]
    fn the_files_come_back_with_ruleset_and_host_name_and_the_reapply_restarts_nothing() {
        let dev = provisioned_then_rebooted();
        let (a, sys) = (&dev.applier, &dev.sys);
        assert_eq!(
            restore(a).unwrap(),
            Restored::Generation {
                n: 1,
                failed: vec![]
            }
        );
        let nft = dev.root().join("etc/nftables.d/atomix.nft");
        assert_eq!(
            sys.commands(),
            [
                format!("nft -f {}", nft.display()),
                "hostname edge-042".to_owned()
            ]
        );
        assert_eq!(dev.live("etc/hostname"), "edge-042\n");
        assert!(dev
            .live("etc/systemd/network/20-atomix-lan.network")
            .contains("Address="));
        assert!(dev
            .live("etc/containers/systemd/web.container")
            .contains("Image="));
        assert_eq!(
            std::fs::read_link(dev.root().join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Berlin")
        );

        // The boot's re-apply: only the units, the update timer and mark-good.
        sys.actions.lock().unwrap().clear();
        let job = dev.tracker.start(Origin::Boot, Some(1)).unwrap();
        assert!(a.reapply(job, 1).succeeded());
        let commands = sys.commands();
        for untouched in [
            "networkctl",
            "systemctl restart dnsmasq",
            "systemctl restart chrony",
            "nft",
            "hostnamectl",
        ] {
            assert!(
                !commands.iter().any(|c| c.starts_with(untouched)),
                "{untouched} in {commands:?}"
            );
        }
        assert_eq!(commands.last().unwrap(), "rauc status mark-good");
        // The image's host name is kept for a later return to the defaults.
        assert_eq!(
            std::fs::read_to_string(a.paths.run().join("originals/etc/hostname")).unwrap(),
            "atomixos\n"
        );
    }

    #[test]
    fn a_ruleset_that_does_not_load_is_left_to_the_reapply() {
        let dev = provisioned_then_rebooted();
        let a = dev.applier(Arc::new(FakeSystem::failing_on("nft -f")), "");
        assert_eq!(
            restore(&a).unwrap(),
            Restored::Generation {
                n: 1,
                failed: vec!["firewall".to_owned()]
            }
        );
        assert!(dev.root().join("etc/nftables.d/atomix.nft").exists());
        assert_eq!(dev.live("etc/hostname"), "edge-042\n");
        // The re-apply loads it although the file is in place, and fails the step if
        // nft still fails.
        let outcome = dev.reapply_by(&a);
        assert_eq!(outcome.result.failed_step.as_deref(), Some("firewall"));
        // Once nft works, the next run loads it and the step is settled.
        let outcome = dev.reapply_by(&dev.applier);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert!(dev.sys.commands().iter().any(|c| c.starts_with("nft -f")));
        assert!(Owned::load(&dev.applier.paths).unsettled.is_empty());
    }

    #[test]
    fn a_second_restore_in_the_same_boot_does_nothing() {
        let dev = provisioned_then_rebooted();
        assert!(matches!(
            restore(&dev.applier),
            Ok(Restored::Generation { .. })
        ));
        dev.sys.actions.lock().unwrap().clear();
        assert_eq!(restore(&dev.applier).unwrap(), Restored::AlreadyInPlace);
        assert!(dev.sys.commands().is_empty());
    }

    #[test]
    fn a_generation_this_build_refuses_restores_nothing() {
        let dev = provisioned_then_rebooted();
        let config = dev.root().join("data/config/current/config.toml");
        std::fs::write(&config, "schema = 99\n").unwrap();
        let err = format!("{:#}", restore(&dev.applier).unwrap_err());
        assert!(
            err.contains("generation 1 is not valid for this build"),
            "{err}"
        );
        assert!(dev.sys.commands().is_empty());
        assert!(!dev.root().join("etc/nftables.d").exists());
    }
}
