//! The real [`Actions`] and [`Inspect`] of the running system: mounts with sys-mount, programs
//! with `std::process`, devices through libblkid and sysfs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sys_mount::MountFlags;
use uuid::Uuid;

use crate::apply::{Actions, Mount};
use crate::blockdev;
use crate::inspect::Inspect;
use crate::mountinfo;
use crate::partition_table::{self, PartitionTable};

/// The running system.
#[derive(Debug, Clone)]
pub struct System {
    /// How long to wait for a device node to appear.
    pub device_timeout: Duration,
}

const POLL: Duration = Duration::from_millis(50);

impl Actions for System {
    fn is_mountpoint(&self, target: &Path) -> Result<bool> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .context("cannot read /proc/self/mountinfo: is /proc mounted?")?;
        let target = fs::canonicalize(target).unwrap_or_else(|_| target.to_owned());
        Ok(mountinfo::find(&mountinfo::parse(&text), &target).is_some())
    }

    fn mount(&self, m: &Mount) -> Result<()> {
        let mut flags = MountFlags::empty();
        if m.read_only {
            flags |= MountFlags::RDONLY;
        }
        if m.no_atime {
            flags |= MountFlags::NOATIME;
        }
        let mut builder = sys_mount::Mount::builder()
            .fstype(m.fstype.as_str())
            .flags(flags);
        if !m.options.is_empty() {
            builder = builder.data(&m.options);
        }
        builder.mount(&m.source, &m.target)?;
        log::info!(
            "mounted {} ({}) at {}{}",
            m.source,
            m.fstype,
            m.target.display(),
            if m.read_only { " read-only" } else { "" }
        );
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> Result<()> {
        Ok(boot_state::write_atomic(path, contents)?)
    }

    fn run(&self, program: &str, args: &[String]) -> Result<()> {
        log::info!("running {program} {}", args.join(" "));
        let output = Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {program}: is it in the initrd's PATH?"))?;
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            log::debug!("{program}: {line}");
        }
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{program} {} ({})", output.status, tail.join(" / "));
        }
        Ok(())
    }
}

impl Inspect for System {
    fn find_partuuid(&self, partuuid: Uuid) -> Result<blockdev::Candidate> {
        let deadline = Instant::now() + self.device_timeout;
        loop {
            let candidates = blockdev::find_by_partuuid(partuuid)?;
            match blockdev::choose_boot_partition(partuuid, &candidates) {
                Ok(chosen) => {
                    for other in candidates.iter().filter(|c| *c != chosen) {
                        log::warn!(
                            "{} also carries PARTUUID {partuuid} (removable or USB): ignoring it, booting from {}",
                            other.disk.display(),
                            chosen.disk.display()
                        );
                    }
                    return Ok(chosen.clone());
                }
                Err(blockdev::ChooseError::NotFound(_)) if Instant::now() < deadline => sleep(POLL),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "waited {} s for the root partition atomix.root=PARTUUID={partuuid}: \
                             check that the boot disk is present and its driver is in the initrd",
                            self.device_timeout.as_secs()
                        )
                    })
                }
            }
        }
    }

    fn read_partition_table(&self, disk: &Path) -> Result<PartitionTable> {
        partition_table::read(disk)
    }

    fn wait_partition_node(&self, disk: &Path, number: u32) -> Result<PathBuf> {
        let deadline = Instant::now() + self.device_timeout;
        loop {
            if let Some(node) = blockdev::partition_node(disk, number)? {
                return Ok(node);
            }
            if Instant::now() >= deadline {
                bail!(
                    "partition {number} of {} did not appear within {} s: check that the kernel \
                     re-read the partition table",
                    disk.display(),
                    self.device_timeout.as_secs()
                );
            }
            sleep(POLL);
        }
    }

    fn probe_fstype(&self, device: &Path) -> Result<Option<String>> {
        blockdev::probe_fstype(device)
    }
}
