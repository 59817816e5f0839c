//! Judging a disk as a power cut left it, without booting it: what the partition table,
//! the data filesystem, the slot state and early boot's own planner say about it.
//!
//! The disk is attached read-only to a loop device with its partitions (`losetup -r`,
//! `partx`), so nothing a judge runs can change it; `fsck.f2fs --dry-run` checks the data
//! filesystem (the host kernel has no f2fs) and `atomix-initrd plan` says what the next
//! boot would do with the disk.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::host;

/// The partitions of the flashed image, and of a disk after the first boot's repart.
pub const FLASHED: [&str; 2] = ["boot-a", "rootfs-a"];
pub const PARTITIONED: [&str; 5] = ["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"];

/// What early boot must decide for a disk in each allowed layout: the whole
/// `atomix-initrd plan` output.
pub const PLAN_FLASHED: &str = "fresh-flash: yes\nmissing: boot-b rootfs-b data\ndata: absent\n\
     steps: mount-rootfs mount-overlay-tmpfs repart mount-sysroot mount-data mount-boot \
     fresh-flash-marker boot-record\n";
pub const PLAN_PARTITIONED: &str = "fresh-flash: no\nmissing: none\ndata: f2fs\n\
     steps: mount-rootfs mount-overlay-tmpfs mount-sysroot mount-data mount-boot boot-record\n";

/// The disk's layout as its GPT says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As flashed: `boot-a`, `rootfs-a`.
    Flashed,
    /// After the first boot's repart: all five partitions.
    Partitioned,
}

/// What the cheap judges found at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub layout: Option<Layout>,
    /// The slot state as `boot.scr` and Linux would read it (`None` when neither copy
    /// holds a valid state).
    pub slot_state: Option<String>,
    /// Where the `data` partition lies in the disk image (bytes), when the layout has one.
    pub data: Option<std::ops::Range<u64>>,
    /// Everything wrong, each naming what and where; empty when the point passes.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The tools the judges run: the host build of `atomix-initrd` and the layout's
/// definitions.
#[derive(Debug, Clone)]
pub struct Judges {
    pub initrd: PathBuf,
    pub repart_dir: PathBuf,
    pub build_id: String,
    /// Scratch space (the plan's `--root`, its command line).
    pub scratch: PathBuf,
}

impl Judges {
    /// Builds `atomix-initrd` for the host (`target/debug/atomix-initrd`).
    pub fn new(build_id: &str, scratch: &Path) -> Judges {
        let initrd = test_support::workspace_bin("atomix-initrd", "atomix-initrd");
        fs::create_dir_all(scratch).unwrap();
        Judges {
            initrd,
            repart_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../repart.d"),
            build_id: build_id.to_owned(),
            scratch: scratch.to_owned(),
        }
    }

    /// Judges the disk image `disk` as it is now.
    pub fn judge(&self, disk: &Path) -> Verdict {
        let mut verdict = Verdict {
            layout: None,
            slot_state: None,
            data: None,
            problems: Vec::new(),
        };
        let problems = &mut verdict.problems;

        // The slot state: one whole copy, old or new, always (the image ships one).
        match slot_state::read(&File::open(disk).unwrap()) {
            Ok((state, slot_state::Source::Copy(_))) => {
                verdict.slot_state = Some(format!("{state:?}"))
            }
            Ok((_, slot_state::Source::Factory(why))) => problems.push(format!(
                "slot state: neither copy is valid ({}; {})",
                why[0], why[1]
            )),
            Err(e) => problems.push(format!("slot state: cannot read: {e}")),
        }

        // The partition table: as flashed or fully partitioned, nothing in between.
        let table = Command::new("sfdisk")
            .arg("--json")
            .arg(disk)
            .output()
            .unwrap();
        let labels: Option<(Vec<String>, String)> = if table.status.success() {
            serde_json::from_slice::<Value>(&table.stdout)
                .ok()
                .and_then(|v| {
                    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
                    let parts = v["partitiontable"]["partitions"].as_array()?.clone();
                    let names = parts
                        .iter()
                        .map(|p| p["name"].as_str().unwrap_or("").to_owned())
                        .collect();
                    let rootfs_a = parts.iter().find(|p| p["name"] == "rootfs-a")?["uuid"]
                        .as_str()?
                        .to_owned();
                    verdict.data = parts.iter().find(|p| p["name"] == "data").and_then(|p| {
                        let start = p["start"].as_u64()? * sector;
                        Some(start..start + p["size"].as_u64()? * sector)
                    });
                    Some((names, rootfs_a))
                })
        } else {
            None
        };
        let Some((names, rootfs_a)) = labels else {
            problems.push(format!(
                "partition table: unreadable: {}",
                String::from_utf8_lossy(&table.stderr).trim()
            ));
            return verdict;
        };
        verdict.layout = if names == FLASHED {
            Some(Layout::Flashed)
        } else if names == PARTITIONED {
            Some(Layout::Partitioned)
        } else {
            problems.push(format!(
                "partition table: {names:?} is neither the flashed {FLASHED:?} nor the partitioned {PARTITIONED:?}"
            ));
            None
        };

        // What the next boot would do, and the data filesystem, on a read-only loop device.
        let attached = Loop::attach(disk, names.len());
        let cmdline = self.scratch.join("cmdline");
        fs::write(
            &cmdline,
            format!(
                "atomix.slot=a atomix.root=PARTUUID={rootfs_a} rauc.slot=A atomix.build={}\n",
                self.build_id
            ),
        )
        .unwrap();
        let plan = Command::new(&self.initrd)
            .args([
                "--kmsg",
                "/dev/null",
                "plan",
                "--device-timeout",
                "10",
                "--cmdline",
            ])
            .arg(&cmdline)
            .arg("--root")
            .arg(&self.scratch)
            .arg("--repart-dir")
            .arg(&self.repart_dir)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&plan.stdout).into_owned();
        if !plan.status.success() {
            problems.push(format!(
                "early boot's plan failed: {}",
                String::from_utf8_lossy(&plan.stderr).trim()
            ));
        } else {
            let expected = match verdict.layout {
                Some(Layout::Flashed) => Some(PLAN_FLASHED),
                Some(Layout::Partitioned) => Some(PLAN_PARTITIONED),
                None => None,
            };
            if let Some(expected) = expected {
                if said != expected {
                    problems.push(format!(
                        "early boot would not do what this layout needs: it plans\n{said}instead of\n{expected}"
                    ));
                }
            }
        }
        if verdict.layout == Some(Layout::Partitioned) {
            let data = attached.partition(5);
            let fsck = Command::new("fsck.f2fs")
                .args(["-f", "--dry-run"])
                .arg(&data)
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&fsck.stdout).into_owned();
            let failed: Vec<&str> = out.lines().filter(|l| l.contains("[Fail]")).collect();
            if !fsck.status.success() || !failed.is_empty() {
                problems.push(format!(
                    "fsck.f2fs finds the data filesystem inconsistent (exit {}): {}",
                    fsck.status,
                    if failed.is_empty() {
                        String::from_utf8_lossy(&fsck.stderr).trim().to_owned()
                    } else {
                        failed.join("; ")
                    }
                ));
            }
        }
        verdict
    }
}

/// Detaches the loop devices a killed run left on `image` (a second disk with the same
/// PARTUUIDs would make every plan fail).
pub fn detach_loops_of(image: &Path) {
    let listed = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for device in listed.lines().filter_map(|l| l.split(':').next()) {
        let _ = Command::new("losetup").arg("-d").arg(device).status();
    }
}

/// A disk image on a read-only loop device with its partitions.
struct Loop {
    device: String,
}

impl Loop {
    fn attach(disk: &Path, partitions: usize) -> Loop {
        let device = host(
            Command::new("losetup")
                .args(["-r", "-P", "-f", "--show"])
                .arg(disk),
        )
        .trim()
        .to_owned();
        let l = Loop { device };
        // The partitions as libblkid reads the table (the host kernel may not parse GPT
        // itself; the flashed image's backup GPT is not at the end of the disk).
        host(Command::new("partx").arg("--update").arg(&l.device));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(1..=partitions).all(|n| Path::new(&l.partition(n as u32)).exists()) {
            assert!(
                Instant::now() < deadline,
                "the partitions of {} did not appear",
                l.device
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        l
    }

    fn partition(&self, n: u32) -> String {
        format!("{}p{n}", self.device)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
