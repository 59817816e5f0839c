//! Seeds: a config found on a medium instead of coming through the API: a `config.toml`,
//! `atomix-config.tar.gz` or `atomix-config.tar` at the root of the boot partition (on a
//! fresh flash only; the boot flow decides), or of a filesystem on USB mass storage,
//! mounted read-only (nosuid, nodev, noexec) in a directory under `/run/atomix/` and
//! unmounted once read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::input::Kind;
use crate::paths::Paths;
use crate::system::{Action, System};

/// File names looked for at the root of the boot partition or a USB filesystem, in order.
pub const SEED_NAMES: [(&str, Kind); 3] = [
    ("config.toml", Kind::Config),
    ("atomix-config.tar.gz", Kind::Bundle),
    ("atomix-config.tar", Kind::Bundle),
];

/// Largest seed file read (the bundle limit; the checker applies the exact ones).
const MAX_SEED: u64 = atomix_api::limits::CONFIG_BUNDLE_BYTES;

/// A seed's bytes and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Shown in logs and health: a path, or `DEVICE:/NAME` for USB media.
    pub location: String,
    pub kind: Kind,
    pub bytes: Vec<u8>,
}

/// Reads a seed file; `Ok(None)` when it is not there.
pub fn read_seed(path: &Path, kind: Kind, location: String) -> Result<Option<Seed>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {location}")),
    };
    if !meta.is_file() {
        bail!("{location} is not a regular file");
    }
    if meta.len() > MAX_SEED {
        bail!("{location} is larger than {MAX_SEED} bytes");
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {location}"))?;
    Ok(Some(Seed {
        location,
        kind,
        bytes,
    }))
}

/// Whether a seed file is at the root of `dir` (the boot partition).
pub fn any_seed_in(dir: &Path) -> bool {
    SEED_NAMES.iter().any(|(name, _)| dir.join(name).exists())
}

/// The first seed at the root of a mounted filesystem.
pub fn seed_in_dir(dir: &Path, shown_as: &str) -> Result<Option<Seed>> {
    for (name, kind) in SEED_NAMES {
        if let Some(seed) = read_seed(&dir.join(name), kind, format!("{shown_as}/{name}"))? {
            return Ok(Some(seed));
        }
    }
    Ok(None)
}

/// Filesystems on USB mass storage, as device nodes (`/dev/sda1`, or `/dev/sda` for an
/// unpartitioned stick), from a `/sys/block`-shaped directory.
pub fn usb_filesystems(sys_block: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
        .collect();
    disks.sort();
    let mut out = Vec::new();
    for (name, path) in disks {
        // The sysfs link of a USB disk runs through its USB controller (.../usb1/...).
        let on_usb = std::fs::read_link(&path)
            .map(|t| t.to_string_lossy().contains("/usb"))
            .unwrap_or(false);
        if !on_usb {
            continue;
        }
        let mut parts: Vec<String> = std::fs::read_dir(&path)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("partition").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        parts.sort();
        if parts.is_empty() {
            parts.push(name);
        }
        out.extend(parts.into_iter().map(|p| Path::new("/dev").join(p)));
    }
    out
}

/// Searches USB media: `usb_dir` stands in for one mounted filesystem when given; else
/// every USB filesystem present now is searched ([`search_devices`]).
pub fn find_usb_seed(paths: &Paths, system: &dyn System, usb_dir: Option<&Path>) -> Option<Seed> {
    if let Some(dir) = usb_dir {
        return seed_in_dir(dir, &dir.display().to_string()).unwrap_or_else(|e| {
            log::error!("{e:#}");
            None
        });
    }
    search_devices(paths, system, &usb_filesystems(&paths.under("sys/block")))
}

/// Mounts each device read-only, searches and unmounts it, and returns the first seed.
/// Problems with one medium are logged and the search goes on.
pub fn search_devices(paths: &Paths, system: &dyn System, devices: &[PathBuf]) -> Option<Seed> {
    for device in devices {
        let name = device.file_name().map(|n| n.to_string_lossy().into_owned());
        let mount = paths
            .run()
            .join(format!("usb-{}", name.unwrap_or_default()));
        if let Err(e) = std::fs::create_dir_all(&mount) {
            log::error!("cannot create {}: {e}", mount.display());
            continue;
        }
        let mounted = system.run(&Action::MountReadOnly {
            device: device.clone(),
            target: mount.clone(),
        });
        let found = match mounted {
            Err(e) => {
                log::warn!("{}: {e}", device.display());
                continue;
            }
            Ok(()) => seed_in_dir(&mount, &format!("{}:", device.display())),
        };
        match system.run(&Action::Unmount {
            target: mount.clone(),
        }) {
            // rmdir, not a recursive removal: it fails rather than reach into a mount.
            Ok(()) => {
                let _ = std::fs::remove_dir(&mount);
            }
            Err(e) => log::error!("{e}"),
        }
        match found {
            Ok(Some(seed)) => return Some(seed),
            Ok(None) => {}
            Err(e) => log::error!("{e:#}"),
        }
    }
    None
}

/// Tells which USB filesystems are new since the last look, so that a stick plugged in
/// while the console waits is searched once, and again if it is unplugged and comes back.
#[derive(Debug, Default)]
pub struct UsbWatch {
    seen: std::collections::BTreeSet<PathBuf>,
}

impl UsbWatch {
    /// Watches from now: what is present already counts as seen.
    pub fn starting_with(present: Vec<PathBuf>) -> Self {
        UsbWatch {
            seen: present.into_iter().collect(),
        }
    }

    /// The devices in `present` that were not there at the last look.
    pub fn arrived(&mut self, present: Vec<PathBuf>) -> Vec<PathBuf> {
        let now: std::collections::BTreeSet<PathBuf> = present.into_iter().collect();
        let new = now.difference(&self.seen).cloned().collect();
        self.seen = now;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usb_partitions_and_whole_disks_but_not_fixed_disks() {
        let dir = tempfile::tempdir().unwrap();
        let devices = dir.path().join("devices");
        let block = dir.path().join("sys/block");
        std::fs::create_dir_all(&block).unwrap();
        let disk = |name: &str, bus: &str, parts: &[&str]| {
            let d = devices.join(bus).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for p in parts {
                std::fs::create_dir_all(d.join(p)).unwrap();
                std::fs::write(d.join(p).join("partition"), "1\n").unwrap();
            }
            std::os::unix::fs::symlink(&d, block.join(name)).unwrap();
        };
        disk("mmcblk0", "platform/ff520000.mmc/mmc_host", &["mmcblk0p1"]);
        disk("sda", "platform/usb1/1-1/host0/block", &["sda2", "sda1"]);
        disk("sdb", "platform/usb2/2-1/host1/block", &[]);
        assert_eq!(
            usb_filesystems(&block),
            [
                PathBuf::from("/dev/sda1"),
                PathBuf::from("/dev/sda2"),
                PathBuf::from("/dev/sdb")
            ]
        );
    }

    #[test]
    fn usb_seed_search_mounts_reads_and_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let stick = dir.path().join("stick");
        std::fs::create_dir_all(&stick).unwrap();
        std::fs::write(stick.join("atomix-config.tar"), b"tar").unwrap();
        let seed =
            find_usb_seed(&paths, &crate::system::FakeSystem::default(), Some(&stick)).unwrap();
        assert_eq!(seed.kind, Kind::Bundle);
        assert!(seed.location.ends_with("stick/atomix-config.tar"));
        std::fs::write(stick.join("config.toml"), b"schema = 1").unwrap();
        let seed = seed_in_dir(&stick, "x").unwrap().unwrap();
        assert_eq!(
            (seed.kind, seed.location.as_str()),
            (Kind::Config, "x/config.toml")
        );

        // Real discovery through the fake system: the mount is attempted and undone.
        let block = dir.path().join("sys/block");
        std::fs::create_dir_all(dir.path().join("devices/usb1/sda")).unwrap();
        std::fs::create_dir_all(&block).unwrap();
        std::os::unix::fs::symlink(dir.path().join("devices/usb1/sda"), block.join("sda")).unwrap();
        let sys = crate::system::FakeSystem::default();
        assert!(find_usb_seed(&paths, &sys, None).is_none());
        let cmds = sys.commands();
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(cmds[0].starts_with("mount -o ro,nosuid,nodev,noexec /dev/sda "));
        assert!(cmds[1].starts_with("umount "));
        assert!(!paths.run().join("usb-sda").exists());
    }

    #[test]
    fn usb_watch_reports_arrivals_once_and_again_after_a_replug() {
        let dev = |names: &[&str]| -> Vec<PathBuf> {
            names.iter().map(|n| Path::new("/dev").join(n)).collect()
        };
        let mut watch = UsbWatch::starting_with(dev(&["sda1"]));
        assert_eq!(watch.arrived(dev(&["sda1"])), dev(&[]));
        // A stick shows its whole disk first, then its partitions once they are read.
        assert_eq!(watch.arrived(dev(&["sda1", "sdb"])), dev(&["sdb"]));
        assert_eq!(
            watch.arrived(dev(&["sda1", "sdb1", "sdb2"])),
            dev(&["sdb1", "sdb2"])
        );
        assert_eq!(watch.arrived(dev(&["sdb1", "sdb2"])), dev(&[]));
        // sda1 unplugged above; plugged again, it is searched again.
        assert_eq!(
            watch.arrived(dev(&["sda1", "sdb1", "sdb2"])),
            dev(&["sda1"])
        );
    }
}
