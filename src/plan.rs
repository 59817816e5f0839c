//! The early-boot plan: from what inspection found on the boot disk, the list of steps to
//! take, as plain data. Deciding lives here and is unit-tested; doing lives in `apply`.

use std::path::{Path, PathBuf};

use boot_state::{FreshFlashMarker, Slot};
use disk_layout::Layout;

use crate::partition_table::PartitionTable;

/// Paths early boot mounts and writes, all under the `--root` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub rootfs_base: PathBuf,
    pub overlay_root: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub sysroot: PathBuf,
    pub data: PathBuf,
    /// Where the booted slot's boot partition is mounted (`/boot` after switch-root).
    pub boot: PathBuf,
    pub marker: PathBuf,
    pub boot_record: PathBuf,
    /// The repart definitions handed to `systemd-repart` this boot.
    pub runtime_definitions: PathBuf,
    /// Files `systemd-repart` copies into a new data filesystem (`CopyFiles=`).
    pub data_template: PathBuf,
}

impl Paths {
    pub fn under(root: &Path) -> Paths {
        let p = |rel: &str| root.join(rel);
        let sysroot = p("sysroot");
        let data = sysroot.join("data");
        Paths {
            rootfs_base: p("run/rootfs-base"),
            overlay_root: p("run/overlay-root"),
            upper: p("run/overlay-root/upper"),
            work: p("run/overlay-root/work"),
            marker: data.join(boot_state::MARKER_IN_DATA),
            data,
            boot: sysroot.join("boot"),
            sysroot,
            boot_record: p(boot_state::BOOT_RECORD_PATH),
            runtime_definitions: p("run/atomix/repart.d"),
            data_template: p("run/atomix/data-template"),
        }
    }
}

/// Which part of the sequence one invocation runs. In the systemd initrd, `sysroot.mount`
/// assembles the overlay between the two halves; run by hand or in tests, `All` does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Everything, including the overlay mount at `sysroot`.
    All,
    /// Up to (not including) the overlay: base mount, tmpfs, repart, formatting.
    PreSysroot,
    /// After `sysroot.mount`: mount data, fresh-flash marker, final boot record. Planned
    /// from the record the first half wrote ([`post_sysroot_steps`]), not by [`plan`].
    PostSysroot,
}

/// What [`plan`] covers: the whole sequence, or the half before `sysroot.mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, including the overlay mount at `sysroot` ([`Stage::All`]).
    All,
    /// Up to the overlay, ending with the boot record ([`Stage::PreSysroot`]).
    PreSysroot,
}

/// What inspection found, before anything was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    pub slot: Slot,
    pub build_id: Option<String>,
    pub root_device: PathBuf,
    pub disk: PathBuf,
    pub table: PartitionTable,
    /// The data partition's device and the filesystem it holds, when it exists.
    pub data: Option<DataPartition>,
    /// The booted slot's boot partition (`boot-<slot>` on the root's disk), when it exists.
    pub boot_device: Option<PathBuf>,
    /// Now, RFC 3339, for the marker.
    pub now: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPartition {
    pub device: PathBuf,
    pub fstype: Option<String>,
}

/// One side effect of early boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Mount the slot's squashfs read-only at `run/rootfs-base`.
    MountRootfs { device: PathBuf, target: PathBuf },
    /// Mount a tmpfs at `run/overlay-root` and create `upper/` and `work/` in it.
    MountOverlayTmpfs {
        target: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    /// Mount the overlay at `sysroot` (what `sysroot.mount` does in the initrd).
    MountSysroot {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    /// Run `systemd-repart` on the disk to add the missing partitions. On a fresh flash
    /// the marker goes into the new data filesystem through `CopyFiles=`, so the partition
    /// enters the table only together with it.
    Repart {
        disk: PathBuf,
        missing: Vec<String>,
        definitions: PathBuf,
        marker: Option<FreshFlashMarker>,
        data_template: PathBuf,
    },
    /// Format an existing data partition that holds no filesystem (wiped by the operator).
    FormatData {
        device: PathBuf,
        format: String,
        label: String,
    },
    /// Mount the data partition (found by label on the boot disk) at `sysroot/data`.
    MountData {
        disk: PathBuf,
        label: String,
        target: PathBuf,
    },
    /// Mount the booted slot's boot partition (vfat) at `sysroot/boot`. Mounted here
    /// rather than by a unit after switch-root, where it would wait for the root's udev
    /// coldplug to reach the partition, with everything after `local-fs.target` behind it.
    MountBoot { device: PathBuf, target: PathBuf },
    /// Write the fresh-flash marker unless the new partition already brought it.
    WriteMarker {
        path: PathBuf,
        marker: FreshFlashMarker,
    },
    /// Write `run/atomix/boot.json`.
    WriteBootRecord { path: PathBuf },
}

impl Step {
    /// Stable name, used in logs, the boot record's timings and failure points.
    pub fn name(&self) -> &'static str {
        match self {
            Step::MountRootfs { .. } => "mount-rootfs",
            Step::MountOverlayTmpfs { .. } => "mount-overlay-tmpfs",
            Step::MountSysroot { .. } => "mount-sysroot",
            Step::Repart { .. } => "repart",
            Step::FormatData { .. } => "format-data",
            Step::MountData { .. } => "mount-data",
            Step::MountBoot { .. } => "mount-boot",
            Step::WriteMarker { .. } => "fresh-flash-marker",
            Step::WriteBootRecord { .. } => "boot-record",
        }
    }
}

/// What the plan decided, with its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// No `boot-b` on the disk: this is the first boot after a flash.
    pub fresh_flash: bool,
    /// Partitions of the layout the disk lacks, in repart order.
    pub missing: Vec<String>,
    pub steps: Vec<Step>,
}

/// Plans the steps of `scope` for the situation inspection found.
pub fn plan(situation: &Situation, layout: &Layout, paths: &Paths, scope: Scope) -> Plan {
    let fresh_flash = situation.table.by_label(disk_layout::BOOT_B).is_none();
    let missing: Vec<String> = layout
        .labels()
        .filter(|label| situation.table.by_label(label).is_none())
        .map(str::to_owned)
        .collect();
    let marker = fresh_flash.then(|| FreshFlashMarker {
        build_id: situation.build_id.clone(),
        slot: situation.slot,
        created: situation.now.clone(),
    });

    let mut steps = vec![
        Step::MountRootfs {
            device: situation.root_device.clone(),
            target: paths.rootfs_base.clone(),
        },
        Step::MountOverlayTmpfs {
            target: paths.overlay_root.clone(),
            upper: paths.upper.clone(),
            work: paths.work.clone(),
        },
    ];
    if !missing.is_empty() {
        let data_missing = missing.iter().any(|l| l == disk_layout::DATA);
        steps.push(Step::Repart {
            disk: situation.disk.clone(),
            missing: missing.clone(),
            definitions: paths.runtime_definitions.clone(),
            marker: if data_missing { marker.clone() } else { None },
            data_template: paths.data_template.clone(),
        });
    }
    if let Some(DataPartition {
        device,
        fstype: None,
    }) = &situation.data
    {
        if let Some(format) = layout.get(disk_layout::DATA).and_then(|d| d.format.clone()) {
            steps.push(Step::FormatData {
                device: device.clone(),
                format,
                label: disk_layout::DATA.to_owned(),
            });
        }
    }
    match scope {
        Scope::PreSysroot => steps.push(Step::WriteBootRecord {
            path: paths.boot_record.clone(),
        }),
        Scope::All => {
            steps.push(Step::MountSysroot {
                lower: paths.rootfs_base.clone(),
                upper: paths.upper.clone(),
                work: paths.work.clone(),
                target: paths.sysroot.clone(),
            });
            steps.extend(post_sysroot_steps(
                &situation.disk,
                situation.boot_device.as_deref(),
                marker,
                paths,
            ));
        }
    }
    Plan {
        fresh_flash,
        missing,
        steps,
    }
}

/// The steps after `sysroot.mount`. `boot_device` is the booted slot's boot partition,
/// `marker` is `Some` on a fresh flash.
pub fn post_sysroot_steps(
    disk: &Path,
    boot_device: Option<&Path>,
    marker: Option<FreshFlashMarker>,
    paths: &Paths,
) -> Vec<Step> {
    let mut steps = vec![Step::MountData {
        disk: disk.to_owned(),
        label: disk_layout::DATA.to_owned(),
        target: paths.data.clone(),
    }];
    if let Some(device) = boot_device {
        steps.push(Step::MountBoot {
            device: device.to_owned(),
            target: paths.boot.clone(),
        });
    }
    if let Some(marker) = marker {
        steps.push(Step::WriteMarker {
            path: paths.marker.clone(),
            marker,
        });
    }
    steps.push(Step::WriteBootRecord {
        path: paths.boot_record.clone(),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("repart.d");
        Layout::read(&dir).unwrap()
    }

    fn situation(labels: &[&str], data_fstype: Option<Option<&str>>) -> Situation {
        Situation {
            slot: Slot::A,
            build_id: Some("b1".into()),
            root_device: "/dev/vda2".into(),
            disk: "/dev/vda".into(),
            table: PartitionTable::with_labels(labels),
            data: data_fstype.map(|fstype| DataPartition {
                device: "/dev/vda5".into(),
                fstype: fstype.map(str::to_owned),
            }),
            boot_device: Some("/dev/vda1".into()),
            now: "2026-11-27T05:00:00Z".into(),
        }
    }

    fn names(plan: &Plan) -> Vec<&'static str> {
        plan.steps.iter().map(Step::name).collect()
    }

    const ALL: &[&str] = &["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"];

    #[test]
    fn plans_each_situation() {
        struct Case {
            what: &'static str,
            labels: &'static [&'static str],
            data: Option<Option<&'static str>>,
            fresh: bool,
            missing: &'static [&'static str],
            steps: &'static [&'static str],
        }
        let cases = [
            Case {
                what: "fresh flash",
                labels: &["boot-a", "rootfs-a"],
                data: None,
                fresh: true,
                missing: &["boot-b", "rootfs-b", "data"],
                steps: &[
                    "mount-rootfs",
                    "mount-overlay-tmpfs",
                    "repart",
                    "mount-sysroot",
                    "mount-data",
                    "mount-boot",
                    "fresh-flash-marker",
                    "boot-record",
                ],
            },
            Case {
                what: "next boot",
                labels: ALL,
                data: Some(Some("f2fs")),
                fresh: false,
                missing: &[],
                steps: &[
                    "mount-rootfs",
                    "mount-overlay-tmpfs",
                    "mount-sysroot",
                    "mount-data",
                    "mount-boot",
                    "boot-record",
                ],
            },
            Case {
                what: "data wiped by the operator",
                labels: ALL,
                data: Some(None),
                fresh: false,
                missing: &[],
                steps: &[
                    "mount-rootfs",
                    "mount-overlay-tmpfs",
                    "format-data",
                    "mount-sysroot",
                    "mount-data",
                    "mount-boot",
                    "boot-record",
                ],
            },
            Case {
                what: "data partition deleted: repart recreates it, not a fresh flash",
                labels: &["boot-a", "rootfs-a", "boot-b", "rootfs-b"],
                data: None,
                fresh: false,
                missing: &["data"],
                steps: &[
                    "mount-rootfs",
                    "mount-overlay-tmpfs",
                    "repart",
                    "mount-sysroot",
                    "mount-data",
                    "mount-boot",
                    "boot-record",
                ],
            },
            Case {
                what: "partial layout without boot-b: still fresh",
                labels: &["boot-a", "rootfs-a", "data"],
                data: Some(Some("f2fs")),
                fresh: true,
                missing: &["boot-b", "rootfs-b"],
                steps: &[
                    "mount-rootfs",
                    "mount-overlay-tmpfs",
                    "repart",
                    "mount-sysroot",
                    "mount-data",
                    "mount-boot",
                    "fresh-flash-marker",
                    "boot-record",
                ],
            },
        ];
        let layout = layout();
        let paths = Paths::under(Path::new("/r"));
        for case in cases {
            let plan = plan(
                &situation(case.labels, case.data),
                &layout,
                &paths,
                Scope::All,
            );
            assert_eq!(plan.fresh_flash, case.fresh, "{}", case.what);
            assert_eq!(plan.missing, case.missing, "{}", case.what);
            assert_eq!(names(&plan), case.steps, "{}", case.what);
        }
    }

    #[test]
    fn fresh_flash_marker_rides_with_the_new_data_partition() {
        let paths = Paths::under(Path::new("/r"));
        let plan = plan(
            &situation(&["boot-a", "rootfs-a"], None),
            &layout(),
            &paths,
            Scope::All,
        );
        let Step::Repart { marker, disk, .. } = &plan.steps[2] else {
            panic!("{:?}", plan.steps[2]);
        };
        assert_eq!(disk, Path::new("/dev/vda"));
        let marker = marker.as_ref().expect("marker copied in by repart");
        assert_eq!(marker.build_id.as_deref(), Some("b1"));
        assert_eq!(marker.slot, Slot::A);

        // With data already there, repart cannot bring the marker: it is written after.
        let plan = plan_for(&["boot-a", "rootfs-a", "data"], Some(Some("f2fs")));
        let Step::Repart { marker, .. } = &plan.steps[2] else {
            panic!("{:?}", plan.steps[2]);
        };
        assert_eq!(marker, &None);
    }

    fn plan_for(labels: &[&str], data: Option<Option<&str>>) -> Plan {
        let paths = Paths::under(Path::new("/r"));
        plan(&situation(labels, data), &layout(), &paths, Scope::All)
    }

    #[test]
    fn stages_split_at_the_overlay_mount() {
        let paths = Paths::under(Path::new("/r"));
        let s = situation(&["boot-a", "rootfs-a"], None);
        let pre = plan(&s, &layout(), &paths, Scope::PreSysroot);
        assert_eq!(
            names(&pre),
            [
                "mount-rootfs",
                "mount-overlay-tmpfs",
                "repart",
                "boot-record"
            ]
        );
        // The second half, planned from the boot record in production, mounts no overlay;
        // the two halves with sysroot.mount between them are the whole sequence.
        let all = plan(&s, &layout(), &paths, Scope::All);
        let marker = FreshFlashMarker {
            build_id: s.build_id.clone(),
            slot: s.slot,
            created: s.now.clone(),
        };
        let post = post_sysroot_steps(&s.disk, s.boot_device.as_deref(), Some(marker), &paths);
        assert_eq!(
            post.iter().map(Step::name).collect::<Vec<_>>(),
            [
                "mount-data",
                "mount-boot",
                "fresh-flash-marker",
                "boot-record"
            ]
        );
        // The first half without its boot record, then the overlay, then the second half.
        let before = pre.steps.len() - 1;
        assert_eq!(all.steps[..before], pre.steps[..before]);
        let (overlay, after) = all.steps[before..].split_first().unwrap();
        assert_eq!(overlay.name(), "mount-sysroot");
        assert_eq!(after, post.as_slice());
        assert_eq!(
            post_sysroot_steps(&s.disk, None, None, &paths)
                .iter()
                .map(Step::name)
                .collect::<Vec<_>>(),
            ["mount-data", "boot-record"],
            "a disk without the slot's boot partition mounts no /boot"
        );
        let with_boot = post_sysroot_steps(&s.disk, Some(Path::new("/dev/vda1")), None, &paths);
        assert_eq!(
            with_boot[1],
            Step::MountBoot {
                device: "/dev/vda1".into(),
                target: "/r/sysroot/boot".into(),
            }
        );
    }

    #[test]
    fn paths_are_under_the_root_prefix() {
        let paths = Paths::under(Path::new("/tmp/t"));
        assert_eq!(paths.rootfs_base, Path::new("/tmp/t/run/rootfs-base"));
        assert_eq!(paths.upper, Path::new("/tmp/t/run/overlay-root/upper"));
        assert_eq!(paths.data, Path::new("/tmp/t/sysroot/data"));
        assert_eq!(
            paths.marker,
            Path::new("/tmp/t/sysroot/data/atomix/fresh-flash")
        );
        assert_eq!(paths.boot_record, Path::new("/tmp/t/run/atomix/boot.json"));
    }
}
