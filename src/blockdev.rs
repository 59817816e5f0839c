//! Block devices: finding the booted slot's root partition by PARTUUID (libblkid), its
//! disk and sibling partitions (sysfs), and what filesystem a partition holds (libblkid).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libblkid_rs::{BlkidProbe, BlkidSafeprobeRet};
use uuid::Uuid;

const SYS_BLOCK: &str = "/sys/block";

/// A partition whose PARTUUID matched, and what is known about its disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The partition's device node, e.g. `/dev/mmcblk0p2`.
    pub partition: PathBuf,
    /// The whole disk, e.g. `/dev/mmcblk0`.
    pub disk: PathBuf,
    /// sysfs says the medium is removable.
    pub removable: bool,
    /// The disk hangs off a USB bus.
    pub usb: bool,
}

/// Every partition on every disk whose GPT entry has this PARTUUID. Disks flashed from one
/// image share their PARTUUIDs, so there may be several: see [`choose_boot_partition`].
pub fn find_by_partuuid(partuuid: Uuid) -> Result<Vec<Candidate>> {
    let mut found = Vec::new();
    let disks = fs::read_dir(SYS_BLOCK).with_context(|| format!("cannot list {SYS_BLOCK}"))?;
    for entry in disks.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_probeable_disk(&name, &entry.path()) {
            continue;
        }
        let disk = Path::new("/dev").join(&name);
        let Some(partno) = partition_number_with_uuid(&disk, partuuid) else {
            continue;
        };
        let Some(partition) = partition_node(&disk, partno)? else {
            log::debug!(
                "{} has partition {partno} with PARTUUID {partuuid}, but no device node for it yet",
                disk.display()
            );
            continue;
        };
        let sys = entry.path();
        found.push(Candidate {
            partition,
            disk,
            removable: read_trimmed(&sys.join("removable")).as_deref() == Some("1"),
            usb: fs::canonicalize(&sys)
                .map(|p| p.to_string_lossy().contains("/usb"))
                .unwrap_or(false),
        });
    }
    Ok(found)
}

/// Disks worth opening: not empty, not RAM disks or the eMMC's boot/RPMB areas.
fn is_probeable_disk(name: &str, sys: &Path) -> bool {
    if name.starts_with("ram") || name.starts_with("zram") || name.contains("boot") {
        return false;
    }
    read_trimmed(&sys.join("size")).is_some_and(|s| s != "0")
}

/// Probes the partition table of `disk` with libblkid and returns the number of the
/// partition with this PARTUUID.
fn partition_number_with_uuid(disk: &Path, partuuid: Uuid) -> Option<u32> {
    let mut probe = BlkidProbe::new_from_filename(disk).ok()?;
    probe.enable_superblocks(false).ok()?;
    probe.enable_partitions(true).ok()?;
    probe.do_safeprobe().ok()?;
    let mut list = probe.get_partitions().ok()?;
    let count = list.number_of_partitions().ok()?;
    for index in 0..count {
        let Ok(part) = list.get_partition(index) else {
            continue;
        };
        if part.get_uuid().ok().flatten() == Some(partuuid) {
            return part.get_partno().ok();
        }
    }
    None
}

/// The device node of partition `number` of `disk`, from sysfs (`mmcblk0` has
/// `mmcblk0p5`, `vda` has `vda5`); `None` while the kernel does not know it yet.
pub fn partition_node(disk: &Path, number: u32) -> Result<Option<PathBuf>> {
    let name = disk
        .file_name()
        .with_context(|| format!("{} is not a device path", disk.display()))?;
    let sys = Path::new(SYS_BLOCK).join(name);
    let entries = fs::read_dir(&sys).with_context(|| {
        format!(
            "cannot list {}: is {} a whole disk?",
            sys.display(),
            disk.display()
        )
    })?;
    for entry in entries.flatten() {
        if read_trimmed(&entry.path().join("partition")).as_deref() == Some(&number.to_string()) {
            let node = Path::new("/dev").join(entry.file_name());
            return Ok(node.exists().then_some(node));
        }
    }
    Ok(None)
}

/// Why the boot partition could not be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChooseError {
    #[error("no partition with PARTUUID {0} (yet)")]
    NotFound(Uuid),
    #[error(
        "PARTUUID {uuid} is on several disks ({disks}) and not on exactly one fixed disk, so \
         the booted disk cannot be told apart: remove the other disks flashed with the same image"
    )]
    Ambiguous { uuid: Uuid, disks: String },
}

/// Chooses the booted slot's partition among the disks that carry its PARTUUID. A USB stick
/// or SD card flashed with the same image (for recovery) must never be taken for the boot
/// disk, so removable and USB disks lose against a fixed one; two fixed disks are an error.
pub fn choose_boot_partition(
    uuid: Uuid,
    candidates: &[Candidate],
) -> Result<&Candidate, ChooseError> {
    match candidates {
        [] => Err(ChooseError::NotFound(uuid)),
        [only] => Ok(only),
        _ => {
            let fixed: Vec<_> = candidates
                .iter()
                .filter(|c| !c.removable && !c.usb)
                .collect();
            match fixed.as_slice() {
                [one] => Ok(one),
                _ => Err(ChooseError::Ambiguous {
                    uuid,
                    disks: candidates
                        .iter()
                        .map(|c| c.disk.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    }
}

/// The filesystem type libblkid finds on `device`, or `None` when it holds none.
pub fn probe_fstype(device: &Path) -> Result<Option<String>> {
    let mut probe = BlkidProbe::new_from_filename(device)
        .with_context(|| format!("cannot open {} to probe its filesystem", device.display()))?;
    probe
        .enable_superblocks(true)
        .and_then(|()| probe.enable_partitions(false))
        .with_context(|| format!("cannot set up a libblkid probe of {}", device.display()))?;
    match probe
        .do_safeprobe()
        .with_context(|| format!("libblkid could not probe {}", device.display()))?
    {
        BlkidSafeprobeRet::Success => Ok(probe.lookup_value("TYPE").ok()),
        BlkidSafeprobeRet::None => Ok(None),
        BlkidSafeprobeRet::Ambiguous => anyhow::bail!(
            "{} carries signatures of several filesystems; wipe it (wipefs -a) to have it formatted again",
            device.display()
        ),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(disk: &str, removable: bool, usb: bool) -> Candidate {
        Candidate {
            partition: PathBuf::from(format!("{disk}p2")),
            disk: PathBuf::from(disk),
            removable,
            usb,
        }
    }

    #[test]
    fn chooses_the_fixed_disk_over_recovery_media() {
        let uuid = Uuid::nil();
        let emmc = candidate("/dev/mmcblk0", false, false);
        let stick = candidate("/dev/sda", true, true);
        let usb_ssd = candidate("/dev/sdb", false, true);
        let cases: Vec<(Vec<Candidate>, Result<&str, &str>)> = vec![
            (vec![], Err("no partition with PARTUUID")),
            (vec![stick.clone()], Ok("/dev/sda")),
            (vec![stick.clone(), emmc.clone()], Ok("/dev/mmcblk0")),
            (
                vec![emmc.clone(), usb_ssd.clone(), stick.clone()],
                Ok("/dev/mmcblk0"),
            ),
            (
                vec![stick.clone(), usb_ssd.clone()],
                Err("several disks (/dev/sda, /dev/sdb)"),
            ),
            (
                vec![emmc.clone(), candidate("/dev/vdb", false, false)],
                Err("several disks (/dev/mmcblk0, /dev/vdb)"),
            ),
        ];
        for (candidates, expected) in cases {
            let got = choose_boot_partition(uuid, &candidates);
            match (got, expected) {
                (Ok(c), Ok(disk)) => assert_eq!(c.disk, Path::new(disk)),
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{e}"),
                (got, expected) => panic!("{candidates:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
