//! Writing the image to a device (an eMMC in a USB adapter, or the Rock64 itself in USB
//! recovery mode), refusing the devices that would hurt: mounted ones, the disk holding
//! `/`, and fixed disks unless forced.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::command::run;

/// What is known about the target device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub device: PathBuf,
    /// Kernel name, e.g. `sdb`.
    pub name: String,
    pub removable: bool,
    /// Mount sources currently mounted from this device or its partitions.
    pub mounted: Vec<String>,
    /// The device holds the running system's `/`.
    pub holds_root: bool,
}

/// Why flashing is refused, if it is.
pub fn refusal(target: &Target, force: bool) -> Option<String> {
    let dev = target.device.display();
    if target.holds_root {
        return Some(format!(
            "{dev} holds this machine's root filesystem; refusing to overwrite it"
        ));
    }
    if !target.mounted.is_empty() {
        return Some(format!(
            "{dev} is in use: {} mounted; unmount first",
            target.mounted.join(", ")
        ));
    }
    if !target.removable && !force {
        return Some(format!(
            "{dev} is not a removable device; if it really is the eMMC to flash, pass --force"
        ));
    }
    None
}

/// Mount sources in `mountinfo` that are `name` or one of its partitions, and whether one
/// of them is mounted at `/`.
pub fn mounts_of(mountinfo: &str, name: &str) -> (Vec<String>, bool) {
    let mut sources = Vec::new();
    let mut root = false;
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let target = before.split(' ').nth(4).unwrap_or("");
        let source = after.split(' ').nth(1).unwrap_or("");
        let Some(dev) = source.strip_prefix("/dev/") else {
            continue;
        };
        let is_ours = dev == name
            || dev.strip_prefix(name).is_some_and(|rest| {
                let rest = rest.strip_prefix('p').unwrap_or(rest);
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
            });
        if is_ours {
            sources.push(format!("{source} on {target}"));
            root |= target == "/";
        }
    }
    (sources, root)
}

fn inspect(device: &Path) -> Result<Target> {
    let real =
        fs::canonicalize(device).with_context(|| format!("no device {}", device.display()))?;
    let name = real
        .file_name()
        .context("not a device path")?
        .to_string_lossy()
        .into_owned();
    let sys = Path::new("/sys/class/block").join(&name);
    if !sys.exists() {
        bail!("{} is not a block device", device.display());
    }
    if sys.join("partition").exists() {
        bail!("{} is a partition; give the whole device", device.display());
    }
    let removable = fs::read_to_string(sys.join("removable"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let (mounted, holds_root) = mounts_of(&mountinfo, &name);
    Ok(Target {
        device: real,
        name,
        removable,
        mounted,
        holds_root,
    })
}

/// Flashes `image` to `device`: with bmaptool when a `.bmap` is beside the image (only the
/// used blocks, checksummed), else a full copy; then sync and verify by reading back.
pub fn flash(image: &Path, device: &Path, force: bool) -> Result<()> {
    let target = inspect(device)?;
    if let Some(why) = refusal(&target, force) {
        bail!("{why}");
    }
    let bmap = PathBuf::from(format!("{}.bmap", image.display()));
    let started = Instant::now();
    if bmap.exists() {
        eprintln!(
            "atomix-image: writing {} to {} with {}",
            image.display(),
            target.device.display(),
            bmap.display()
        );
        run(Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(image)
            .arg(&target.device))?;
    } else {
        eprintln!("atomix-image: no bmap beside the image: writing all of it");
        copy_all(image, &target.device)?;
    }
    eprintln!("atomix-image: verifying");
    verify(image, &target.device)?;
    eprintln!(
        "atomix-image: {} flashed and verified in {:.1} s",
        target.device.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn copy_all(image: &Path, device: &Path) -> Result<()> {
    let mut input =
        File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let total = input.metadata()?.len();
    let mut out = OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("cannot open {} for writing", device.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    let mut last_report = Instant::now();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        done += n as u64;
        if last_report.elapsed().as_secs() >= 2 {
            eprintln!("atomix-image: {} of {} MiB", done >> 20, total >> 20);
            last_report = Instant::now();
        }
    }
    out.sync_all()?;
    Ok(())
}

/// Compares the device's first bytes with the whole image.
fn verify(image: &Path, device: &Path) -> Result<()> {
    let len = fs::metadata(image)?.len();
    let digest = |path: &Path| -> Result<Vec<u8>> {
        let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        f.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        let mut left = len;
        let mut buf = vec![0u8; 4 << 20];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            f.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
        Ok(hasher.finalize().to_vec())
    };
    if digest(image)? != digest(device)? {
        bail!(
            "{} does not read back as {}: the write failed",
            device.display(),
            image.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
30 22 8:17 / /media/stick rw - vfat /dev/sdb1 rw
31 22 179:2 / /mnt/x rw - f2fs /dev/mmcblk0p2 rw
32 22 8:32 / /mnt/y rw - ext4 /dev/sdc rw
";

    #[test]
    fn finds_mounts_of_a_device_and_its_partitions() {
        assert_eq!(
            mounts_of(MOUNTINFO, "vda"),
            (vec!["/dev/vda on /".into()], true)
        );
        assert_eq!(mounts_of(MOUNTINFO, "sdb").0, ["/dev/sdb1 on /media/stick"]);
        assert_eq!(
            mounts_of(MOUNTINFO, "mmcblk0").0,
            ["/dev/mmcblk0p2 on /mnt/x"]
        );
        assert!(mounts_of(MOUNTINFO, "sd").0.is_empty(), "no prefix matches");
        assert!(mounts_of(MOUNTINFO, "sdd").0.is_empty());
    }

    #[test]
    fn refuses_what_would_hurt() {
        let t = |removable, mounted: &[&str], holds_root| Target {
            device: "/dev/sdb".into(),
            name: "sdb".into(),
            removable,
            mounted: mounted.iter().map(|s| s.to_string()).collect(),
            holds_root,
        };
        assert!(refusal(&t(true, &[], true), true)
            .unwrap()
            .contains("root filesystem"));
        assert!(refusal(&t(true, &["/dev/sdb1 on /m"], false), true)
            .unwrap()
            .contains("unmount first"));
        assert!(refusal(&t(false, &[], false), false)
            .unwrap()
            .contains("--force"));
        assert_eq!(refusal(&t(false, &[], false), true), None);
        assert_eq!(refusal(&t(true, &[], false), false), None);
    }
}
