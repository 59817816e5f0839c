//! Root discovery: what early boot finds before it changes anything. From the kernel
//! command line's root PARTUUID to the disk that holds it, that disk's GPT, the booted
//! slot's boot partition and the data partition with the filesystem it holds: the
//! [`Situation`] the plan is made from. The reads go through the narrow [`Inspect`] trait
//! (the real system in `system.rs`, fakes in the tests).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use boot_state::StepTiming;
use uuid::Uuid;

use crate::blockdev::Candidate;
use crate::cmdline::BootArgs;
use crate::partition_table::PartitionTable;
use crate::plan::{DataPartition, Situation};

/// What early boot reads of the block devices.
pub trait Inspect {
    /// Waits (bounded) until exactly one usable partition carries `partuuid` and returns it
    /// with its disk.
    fn find_partuuid(&self, partuuid: Uuid) -> Result<Candidate>;
    fn read_partition_table(&self, disk: &Path) -> Result<PartitionTable>;
    /// Waits (bounded) for the device node of partition `number` of `disk`.
    fn wait_partition_node(&self, disk: &Path, number: u32) -> Result<PathBuf>;
    fn probe_fstype(&self, device: &Path) -> Result<Option<String>>;
}

/// Finds the booted slot's root partition, its disk and what that disk holds, timing each
/// step into `timings`. `now` gives the time (RFC 3339) for the marker, taken once the
/// disk was found.
pub fn discover(
    boot: &BootArgs,
    disks: &dyn Inspect,
    timings: &mut Vec<StepTiming>,
    now: impl FnOnce() -> String,
) -> Result<Situation> {
    let root = timed(timings, "resolve-root", || {
        disks.find_partuuid(boot.root_partuuid)
    })?;
    log::info!(
        "root partition {} on disk {}",
        root.partition.display(),
        root.disk.display()
    );
    let table = timed(timings, "read-partition-table", || {
        disks.read_partition_table(&root.disk)
    })?;
    if table.by_partuuid(boot.root_partuuid).is_none() {
        anyhow::bail!(
            "the GPT of {} has no partition {}, although libblkid found it there",
            root.disk.display(),
            boot.root_partuuid
        );
    }
    let boot_label = format!("boot-{}", boot.slot);
    let boot_device = match table.by_label(&boot_label) {
        Some(entry) => Some(disks.wait_partition_node(&root.disk, entry.number)?),
        None => {
            log::warn!("{} has no {boot_label} partition", root.disk.display());
            None
        }
    };
    let data = timed(timings, "probe-data", || -> Result<_> {
        let Some(entry) = table.by_label(disk_layout::DATA) else {
            return Ok(None);
        };
        let device = disks.wait_partition_node(&root.disk, entry.number)?;
        let fstype = disks.probe_fstype(&device)?;
        Ok(Some(DataPartition { device, fstype }))
    })?;

    Ok(Situation {
        slot: boot.slot,
        build_id: boot.build_id.clone(),
        root_device: root.partition,
        disk: root.disk,
        table,
        data,
        boot_device,
        now: now(),
    })
}

fn timed<T>(timings: &mut Vec<StepTiming>, step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let value = f().with_context(|| format!("step {step} failed"))?;
    timings.push(StepTiming {
        step: step.to_owned(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;
    use boot_state::Slot;

    const ROOT: Uuid = Uuid::from_u128(0x8c4e2f4e_6d1a_4b1e_9f31_2b2f4a0f6a02);

    /// A disk `/dev/vda` whose partitions are numbered in order; the root partition is
    /// found (or not) by libblkid whatever the GPT says, as on a disk whose table changed.
    struct Disk {
        labels: &'static [&'static str],
        /// The PARTUUID of entry 2 in the GPT.
        gpt_root: Uuid,
        root_found: bool,
        data_fstype: Option<&'static str>,
    }

    impl Inspect for Disk {
        fn find_partuuid(&self, partuuid: Uuid) -> Result<Candidate> {
            if !self.root_found {
                bail!("no partition with PARTUUID {partuuid} (fake)");
            }
            Ok(Candidate {
                partition: "/dev/vda2".into(),
                disk: "/dev/vda".into(),
                removable: false,
                usb: false,
            })
        }
        fn read_partition_table(&self, disk: &Path) -> Result<PartitionTable> {
            assert_eq!(disk, Path::new("/dev/vda"));
            let mut table = PartitionTable::with_labels(self.labels);
            if let Some(root) = table.partitions.get_mut(1) {
                root.partuuid = self.gpt_root;
            }
            Ok(table)
        }
        fn wait_partition_node(&self, disk: &Path, number: u32) -> Result<PathBuf> {
            Ok(PathBuf::from(format!("{}{number}", disk.display())))
        }
        fn probe_fstype(&self, device: &Path) -> Result<Option<String>> {
            assert_eq!(device, Path::new("/dev/vda5"), "only data is probed");
            Ok(self.data_fstype.map(str::to_owned))
        }
    }

    const ALL: &[&str] = &["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"];

    fn boot(slot: Slot) -> BootArgs {
        BootArgs {
            slot,
            root_partuuid: ROOT,
            build_id: Some("b1".into()),
        }
    }

    #[test]
    fn discovers_each_disk() {
        struct Case {
            what: &'static str,
            slot: Slot,
            disk: Disk,
            boot_device: Option<&'static str>,
            data: Option<Option<&'static str>>,
        }
        let disk = |labels, data_fstype| Disk {
            labels,
            gpt_root: ROOT,
            root_found: true,
            data_fstype,
        };
        let cases = [
            Case {
                what: "provisioned disk, data holds f2fs",
                slot: Slot::A,
                disk: disk(ALL, Some("f2fs")),
                boot_device: Some("/dev/vda1"),
                data: Some(Some("f2fs")),
            },
            Case {
                what: "slot b boots from boot-b",
                slot: Slot::B,
                disk: disk(ALL, Some("f2fs")),
                boot_device: Some("/dev/vda3"),
                data: Some(Some("f2fs")),
            },
            Case {
                what: "data partition without a filesystem (wiped)",
                slot: Slot::A,
                disk: disk(ALL, None),
                boot_device: Some("/dev/vda1"),
                data: Some(None),
            },
            Case {
                what: "fresh flash: no data partition, nothing probed",
                slot: Slot::A,
                disk: disk(&["boot-a", "rootfs-a"], Some("f2fs")),
                boot_device: Some("/dev/vda1"),
                data: None,
            },
            Case {
                what: "no boot-b partition for slot b: no /boot, not an error",
                slot: Slot::B,
                disk: disk(&["boot-a", "rootfs-a"], None),
                boot_device: None,
                data: None,
            },
        ];
        for case in cases {
            let mut timings = Vec::new();
            let situation = discover(&boot(case.slot), &case.disk, &mut timings, || "t".into())
                .unwrap_or_else(|e| panic!("{}: {e:#}", case.what));
            assert_eq!(situation.slot, case.slot, "{}", case.what);
            assert_eq!(situation.build_id.as_deref(), Some("b1"), "{}", case.what);
            assert_eq!(
                situation.root_device,
                Path::new("/dev/vda2"),
                "{}",
                case.what
            );
            assert_eq!(situation.disk, Path::new("/dev/vda"), "{}", case.what);
            assert_eq!(
                situation.boot_device.as_deref(),
                case.boot_device.map(Path::new),
                "{}",
                case.what
            );
            assert_eq!(
                situation.data,
                case.data.map(|fstype| DataPartition {
                    device: "/dev/vda5".into(),
                    fstype: fstype.map(str::to_owned),
                }),
                "{}",
                case.what
            );
            assert_eq!(situation.table.partitions.len(), case.disk.labels.len());
            assert_eq!(situation.now, "t");
            let steps: Vec<_> = timings.iter().map(|t| t.step.as_str()).collect();
            assert_eq!(
                steps,
                ["resolve-root", "read-partition-table", "probe-data"],
                "{}",
                case.what
            );
        }
    }

    #[test]
    fn discovery_errors_say_what_is_wrong() {
        let cases = [
            (
                "root partition not found",
                Disk {
                    labels: ALL,
                    gpt_root: ROOT,
                    root_found: false,
                    data_fstype: None,
                },
                "step resolve-root failed: no partition with PARTUUID \
                 8c4e2f4e-6d1a-4b1e-9f31-2b2f4a0f6a02",
            ),
            (
                "root missing from the GPT",
                Disk {
                    labels: ALL,
                    gpt_root: Uuid::nil(),
                    root_found: true,
                    data_fstype: None,
                },
                "the GPT of /dev/vda has no partition 8c4e2f4e-6d1a-4b1e-9f31-2b2f4a0f6a02, \
                 although libblkid found it there",
            ),
        ];
        for (what, disk, expected) in cases {
            let err =
                discover(&boot(Slot::A), &disk, &mut Vec::new(), || "t".into()).expect_err(what);
            let err = format!("{err:#}");
            assert!(err.starts_with(expected), "{what}: {err}");
        }
    }
}
