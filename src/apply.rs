//! Carrying out a plan: every side effect of early boot happens here, through the narrow
//! [`Actions`] trait (the real system in `system.rs`, a recording fake in the tests).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use boot_state::{BootRecord, FreshFlashMarker, StepTiming};
use disk_layout::Layout;
use failpoints::Failpoints;

use crate::inspect::Inspect;
use crate::plan::Step;

/// A mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub read_only: bool,
    pub no_atime: bool,
    pub options: String,
}

/// The side effects early boot needs, and the reads of [`Inspect`] (mounting `/data`
/// finds its partition again after repart).
pub trait Actions: Inspect {
    fn is_mountpoint(&self, target: &Path) -> Result<bool>;
    fn mount(&self, mount: &Mount) -> Result<()>;
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    fn remove_dir_all(&self, path: &Path) -> Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Writes a file crash-safely (temp, fsync, rename, fsync dir).
    fn write_file(&self, path: &Path, contents: &[u8]) -> Result<()>;
    /// Runs a program to completion; an error carries its exit status and stderr.
    fn run(&self, program: &str, args: &[String]) -> Result<()>;
}

/// Runs `steps` in order, timing each into `record`, with failure points around each
/// (`ATOMIX_FAILPOINTS`, by step name).
pub fn apply(
    steps: &[Step],
    layout: &Layout,
    actions: &dyn Actions,
    failpoints: &Failpoints,
    record: &mut BootRecord,
) -> Result<()> {
    for step in steps {
        let name = step.name();
        failpoints.hold(name);
        log::info!("step {name}: starting");
        let started = Instant::now();
        apply_step(step, layout, actions, record).with_context(|| format!("step {name} failed"))?;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        log::info!("step {name}: done in {duration_ms} ms");
        record.steps.push(StepTiming {
            step: name.to_owned(),
            duration_ms,
        });
        failpoints
            .check(name)
            .with_context(|| format!("step {name} failed"))?;
    }
    Ok(())
}

fn apply_step(
    step: &Step,
    layout: &Layout,
    actions: &dyn Actions,
    record: &mut BootRecord,
) -> Result<()> {
    match step {
        Step::MountRootfs { device, target } => mount_once(
            actions,
            &Mount {
                source: device.display().to_string(),
                target: target.clone(),
                fstype: "squashfs".into(),
                read_only: true,
                no_atime: false,
                options: String::new(),
            },
            "check that the partition holds this slot's squashfs image and that the kernel \
             has squashfs support",
        ),
        Step::MountOverlayTmpfs {
            target,
            upper,
            work,
        } => {
            mount_once(
                actions,
                &Mount {
                    source: "tmpfs".into(),
                    target: target.clone(),
                    fstype: "tmpfs".into(),
                    read_only: false,
                    no_atime: false,
                    options: "mode=0755".into(),
                },
                "check that the kernel has tmpfs",
            )?;
            actions.create_dir_all(upper)?;
            actions.create_dir_all(work)
        }
        Step::MountSysroot {
            lower,
            upper,
            work,
            target,
        } => mount_once(
            actions,
            &Mount {
                source: "overlay".into(),
                target: target.clone(),
                fstype: "overlay".into(),
                read_only: false,
                no_atime: false,
                options: overlay_options(lower, upper, work),
            },
            "check that the kernel has overlayfs and that the lower and upper directories exist",
        ),
        Step::Repart {
            disk,
            missing,
            definitions,
            marker,
            data_template,
        } => {
            record.partitions_created = repart(
                actions,
                layout,
                disk,
                missing,
                definitions,
                marker,
                data_template,
            )?;
            Ok(())
        }
        Step::FormatData {
            device,
            format,
            label,
        } => {
            log::warn!(
                "data partition {} holds no filesystem (wiped?): formatting it {format}; \
                 this is not a fresh flash",
                device.display()
            );
            let (program, args) = mkfs_command(format, label, device)?;
            actions
                .run(&program, &args)
                .with_context(|| format!("cannot format {} as {format}", device.display()))?;
            record.data_formatted = true;
            Ok(())
        }
        Step::MountData {
            disk,
            label,
            target,
        } => {
            let table = actions.read_partition_table(disk)?;
            let entry = table.by_label(label).with_context(|| {
                format!("{} has no partition labelled {label:?}", disk.display())
            })?;
            let device = actions.wait_partition_node(disk, entry.number)?;
            let fstype = actions
                .probe_fstype(&device)?
                .with_context(|| format!("{} ({label}) holds no filesystem", device.display()))?;
            record.data_device = Some(device.display().to_string());
            record.data_fstype = Some(fstype.clone());
            mount_once(
                actions,
                &Mount {
                    source: device.display().to_string(),
                    target: target.clone(),
                    fstype,
                    read_only: false,
                    no_atime: true,
                    options: String::new(),
                },
                "run fsck on the data partition from a rescue system, or wipe it (wipefs -a) \
                 to have it formatted on the next boot",
            )
        }
        Step::MountBoot { device, target } => {
            let fstype = actions.probe_fstype(device)?.with_context(|| {
                format!(
                    "{} (the booted slot's boot partition) holds no filesystem: reflash the \
                     device",
                    device.display()
                )
            })?;
            // The boot partition is FAT on every AtomixOS disk: readable by root only, as
            // it holds the boot seed (the privileged host test uses another filesystem
            // where the kernel has no FAT driver).
            let options = if fstype == "vfat" { "umask=0077" } else { "" };
            mount_once(
                actions,
                &Mount {
                    source: device.display().to_string(),
                    target: target.clone(),
                    fstype,
                    read_only: false,
                    no_atime: true,
                    options: options.into(),
                },
                "check the boot partition with fsck.vfat from a rescue system, or reflash \
                 the device",
            )
        }
        Step::WriteMarker { path, marker } => {
            if actions.exists(path) {
                log::info!(
                    "fresh-flash marker {} came with the new data partition",
                    path.display()
                );
                return Ok(());
            }
            log::info!("writing fresh-flash marker {}", path.display());
            actions.write_file(path, &record_bytes(marker))
        }
        Step::WriteBootRecord { path } => actions.write_file(path, &record_bytes(record)),
    }
}

fn record_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("records always serialise");
    bytes.push(b'\n');
    bytes
}

/// The overlay options `sysroot.mount` uses too.
pub fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    )
}

fn mount_once(actions: &dyn Actions, mount: &Mount, hint: &str) -> Result<()> {
    if actions.is_mountpoint(&mount.target)? {
        log::info!("{} is already mounted, leaving it", mount.target.display());
        return Ok(());
    }
    actions.create_dir_all(&mount.target)?;
    actions.mount(mount).with_context(|| {
        format!(
            "cannot mount {} ({}) at {}: {hint}",
            mount.source,
            mount.fstype,
            mount.target.display()
        )
    })
}

/// Writes this boot's repart definitions (with the marker's `CopyFiles=` on a fresh
/// flash), runs `systemd-repart` and checks that every missing partition now exists.
fn repart(
    actions: &dyn Actions,
    layout: &Layout,
    disk: &Path,
    missing: &[String],
    definitions: &Path,
    marker: &Option<FreshFlashMarker>,
    data_template: &Path,
) -> Result<Vec<String>> {
    log::info!(
        "{} lacks {}: running systemd-repart",
        disk.display(),
        missing.join(", ")
    );
    if actions.exists(definitions) {
        actions.remove_dir_all(definitions)?;
    }
    actions.create_dir_all(definitions)?;
    for def in &layout.definitions {
        let mut text = def.text.clone();
        if def.label == disk_layout::DATA {
            if let Some(marker) = marker {
                actions.write_file(
                    &data_template.join(boot_state::MARKER_IN_DATA),
                    &record_bytes(marker),
                )?;
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!(
                    "# Added by atomix-initrd: fresh flash, the marker enters /data with the partition.\nCopyFiles={}:/\n",
                    data_template.display()
                ));
            }
        }
        actions.write_file(&definitions.join(&def.file_name), text.as_bytes())?;
    }
    let args = vec![
        "--dry-run=no".to_owned(),
        "--no-pager".to_owned(),
        "--seed=random".to_owned(),
        // In the initrd repart's root defaults to /sysroot, where CopyFiles= sources would
        // be looked up; the data template lives in the initrd's own /run.
        "--root=/".to_owned(),
        format!("--definitions={}", definitions.display()),
        disk.display().to_string(),
    ];
    actions.run("systemd-repart", &args).with_context(|| {
        format!(
            "systemd-repart could not add {} to {}: check that the disk is large enough for \
             the partitions in {} and that mkfs.f2fs is in the initrd",
            missing.join(", "),
            disk.display(),
            layout.dir.display()
        )
    })?;
    let table = actions.read_partition_table(disk)?;
    let still_missing: Vec<&str> = missing
        .iter()
        .map(String::as_str)
        .filter(|l| table.by_label(l).is_none())
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "systemd-repart finished but {} still lacks {}",
            disk.display(),
            still_missing.join(", ")
        );
    }
    log::info!("systemd-repart created {}", missing.join(", "));
    Ok(missing.to_vec())
}

/// The mkfs command for a repart `Format=` value.
pub fn mkfs_command(format: &str, label: &str, device: &Path) -> Result<(String, Vec<String>)> {
    let dev = device.display().to_string();
    let (program, args) = match format {
        "f2fs" => ("mkfs.f2fs", vec!["-f", "-l", label, &dev]),
        "ext4" => ("mkfs.ext4", vec!["-q", "-F", "-L", label, &dev]),
        "vfat" => ("mkfs.vfat", vec!["-n", label, &dev]),
        other => {
            bail!("cannot format a data partition as {other:?}: supported are f2fs, ext4, vfat")
        }
    };
    Ok((
        program.to_owned(),
        args.into_iter().map(str::to_owned).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::Candidate;
    use crate::partition_table::PartitionTable;
    use crate::plan::{plan, Paths, Scope, Situation};
    use boot_state::Slot;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    /// Records every call; the partition table gains the missing partitions when
    /// systemd-repart "runs"; calls named in `fail` return errors.
    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        labels: RefCell<Vec<String>>,
        mounted: RefCell<BTreeSet<PathBuf>>,
        files: RefCell<BTreeSet<PathBuf>>,
        fail: Vec<&'static str>,
        repart_adds_nothing: bool,
    }

    impl Fake {
        fn call(&self, what: &str, text: String) -> Result<()> {
            self.calls.borrow_mut().push(text);
            if self.fail.contains(&what) {
                bail!("{what} failed (fake)");
            }
            Ok(())
        }
    }

    impl Actions for Fake {
        fn is_mountpoint(&self, target: &Path) -> Result<bool> {
            Ok(self.mounted.borrow().contains(target))
        }
        fn mount(&self, m: &Mount) -> Result<()> {
            self.call(
                "mount",
                format!("mount {} {} {}", m.fstype, m.source, m.target.display()),
            )?;
            self.mounted.borrow_mut().insert(m.target.clone());
            Ok(())
        }
        fn create_dir_all(&self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn remove_dir_all(&self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.borrow().contains(path)
        }
        fn write_file(&self, path: &Path, _: &[u8]) -> Result<()> {
            self.call("write", format!("write {}", path.display()))?;
            self.files.borrow_mut().insert(path.to_owned());
            Ok(())
        }
        fn run(&self, program: &str, args: &[String]) -> Result<()> {
            self.call(program, format!("run {program} {}", args.join(" ")))?;
            if program == "systemd-repart" && !self.repart_adds_nothing {
                let mut labels = self.labels.borrow_mut();
                for l in ["boot-b", "rootfs-b", "data"] {
                    if !labels.iter().any(|x| x == l) {
                        labels.push(l.into());
                    }
                }
            }
            Ok(())
        }
    }

    impl Inspect for Fake {
        fn find_partuuid(&self, _: uuid::Uuid) -> Result<Candidate> {
            unreachable!("apply never looks for the root partition")
        }
        fn read_partition_table(&self, _: &Path) -> Result<PartitionTable> {
            Ok(PartitionTable::with_labels(&self.labels.borrow()))
        }
        fn wait_partition_node(&self, disk: &Path, number: u32) -> Result<PathBuf> {
            Ok(PathBuf::from(format!("{}{number}", disk.display())))
        }
        fn probe_fstype(&self, device: &Path) -> Result<Option<String>> {
            let boot = device == Path::new("/dev/vda1");
            Ok(Some(if boot { "vfat" } else { "f2fs" }.into()))
        }
    }

    fn layout() -> Layout {
        Layout::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("repart.d")).unwrap()
    }

    fn record() -> BootRecord {
        BootRecord {
            slot: Slot::A,
            build_id: None,
            root_partuuid: String::new(),
            root_device: "/dev/vda2".into(),
            disk: "/dev/vda".into(),
            boot_device: Some("/dev/vda1".into()),
            fresh_flash: true,
            partitions_created: vec![],
            data_formatted: false,
            data_device: None,
            data_fstype: None,
            steps: vec![],
        }
    }

    fn run_fresh(fake: &Fake) -> (Result<()>, BootRecord) {
        *fake.labels.borrow_mut() = vec!["boot-a".into(), "rootfs-a".into()];
        let situation = Situation {
            slot: Slot::A,
            build_id: None,
            root_device: "/dev/vda2".into(),
            disk: "/dev/vda".into(),
            table: PartitionTable::with_labels(&fake.labels.borrow()),
            data: None,
            boot_device: Some("/dev/vda1".into()),
            now: "t".into(),
        };
        let layout = layout();
        let p = plan(
            &situation,
            &layout,
            &Paths::under(Path::new("/r")),
            Scope::All,
        );
        let mut rec = record();
        let result = apply(&p.steps, &layout, fake, &Failpoints::default(), &mut rec);
        (result, rec)
    }

    #[test]
    fn fresh_flash_runs_the_sequence_in_order() {
        let fake = Fake::default();
        let (result, rec) = run_fresh(&fake);
        result.unwrap();
        let calls = fake.calls.borrow();
        let expected = [
            "mount squashfs /dev/vda2 /r/run/rootfs-base",
            "mount tmpfs tmpfs /r/run/overlay-root",
            "write /r/run/atomix/repart.d/10-boot-a.conf",
            "write /r/run/atomix/repart.d/20-rootfs-a.conf",
            "write /r/run/atomix/repart.d/30-boot-b.conf",
            "write /r/run/atomix/repart.d/40-rootfs-b.conf",
            "write /r/run/atomix/data-template/atomix/fresh-flash",
            "write /r/run/atomix/repart.d/50-data.conf",
            "run systemd-repart --dry-run=no --no-pager --seed=random --root=/ --definitions=/r/run/atomix/repart.d /dev/vda",
            "mount overlay overlay /r/sysroot",
            "mount f2fs /dev/vda5 /r/sysroot/data",
            "mount vfat /dev/vda1 /r/sysroot/boot",
            "write /r/sysroot/data/atomix/fresh-flash",
            "write /r/run/atomix/boot.json",
        ];
        assert_eq!(*calls, expected);
        assert_eq!(rec.partitions_created, ["boot-b", "rootfs-b", "data"]);
        assert_eq!(rec.data_device.as_deref(), Some("/dev/vda5"));
        let timed: Vec<_> = rec.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(
            timed,
            [
                "mount-rootfs",
                "mount-overlay-tmpfs",
                "repart",
                "mount-sysroot",
                "mount-data",
                "mount-boot",
                "fresh-flash-marker",
                "boot-record"
            ]
        );
    }

    #[test]
    fn failures_stop_the_sequence_and_say_where() {
        let fake = Fake {
            fail: vec!["systemd-repart"],
            ..Fake::default()
        };
        let (result, _) = run_fresh(&fake);
        let err = format!("{:#}", result.unwrap_err());
        assert!(err.starts_with("step repart failed: systemd-repart could not add boot-b, rootfs-b, data to /dev/vda"), "{err}");
        assert!(!fake
            .calls
            .borrow()
            .iter()
            .any(|c| c.starts_with("mount overlay")));

        let fake = Fake {
            repart_adds_nothing: true,
            ..Fake::default()
        };
        let err = format!("{:#}", run_fresh(&fake).0.unwrap_err());
        assert!(
            err.contains("systemd-repart finished but /dev/vda still lacks boot-b, rootfs-b, data"),
            "{err}"
        );
    }

    #[test]
    fn mounts_already_in_place_are_left_alone() {
        let fake = Fake::default();
        fake.mounted
            .borrow_mut()
            .insert("/r/run/rootfs-base".into());
        run_fresh(&fake).0.unwrap();
        assert!(!fake.calls.borrow().iter().any(|c| c.contains("squashfs")));
    }

    #[test]
    fn mkfs_commands_follow_the_definition_format() {
        let dev = Path::new("/dev/vda5");
        assert_eq!(
            mkfs_command("f2fs", "data", dev).unwrap(),
            (
                "mkfs.f2fs".into(),
                vec!["-f".into(), "-l".into(), "data".into(), "/dev/vda5".into()]
            )
        );
        assert_eq!(mkfs_command("ext4", "data", dev).unwrap().0, "mkfs.ext4");
        let err = mkfs_command("zfs", "data", dev).unwrap_err().to_string();
        assert!(err.contains("\"zfs\""), "{err}");
    }
}
