//! Writing the image to a device (an eMMC in a USB adapter, or the Rock64 itself in USB
//! recovery mode), refusing the devices that would hurt: mounted ones, the disk holding
//! `/`, and fixed disks unless forced. Only what the bmap maps is written, and exactly
//! that is read back from the device and checked against the bmap's checksums; with
//! `--config`, the boot seed is placed on the written `boot-a` (see [`seed`]).

mod bmap;
mod progress;
mod seed;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::fcntl::{posix_fadvise, OFlag, PosixFadviseAdvice};
use sha2::{Digest, Sha256};

use progress::Progress;

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

/// What to flash where.
#[derive(Debug)]
pub struct Request<'a> {
    pub image: &'a Path,
    pub device: &'a Path,
    /// Also write to a device that is not removable.
    pub force: bool,
    /// A `config.toml` or config bundle to place on `boot-a` as the boot seed.
    pub config: Option<&'a Path>,
}

/// Test only: flips the device's byte at this offset after the image is written and
/// before it is verified, standing in for a write the device lost or garbled.
pub const CORRUPT_AFTER_WRITE_ENV: &str = "ATOMIX_FLASH_CORRUPT_AFTER_WRITE";

/// Bytes read or written at a time.
const CHUNK: usize = 4 << 20;
/// Written bytes flushed to the device at a time, so the rate shown is the device's.
const SYNC_EVERY: u64 = 64 << 20;
/// Alignment of O_DIRECT reads (a multiple of any logical block size).
const ALIGN: u64 = 4096;

/// A byte span `[start, end)` of the image that is written and verified, with the SHA-256
/// of its bytes (from the bmap, or computed while writing when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    sha256: Option<String>,
    /// How errors name it: `blocks 5-7 (bytes 20480-32767)`.
    name: String,
}

impl Span {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

fn spans_of(map: &bmap::Bmap) -> Vec<Span> {
    map.ranges
        .iter()
        .map(|r| {
            let (start, end) = map.bytes(r);
            let blocks = if r.first == r.last {
                format!("block {}", r.first)
            } else {
                format!("blocks {}-{}", r.first, r.last)
            };
            Span {
                start,
                end,
                sha256: Some(r.sha256.clone()),
                name: format!("{blocks} (bytes {start}-{})", end - 1),
            }
        })
        .collect()
}

/// Flashes `image` to `device`: with the `.bmap` beside the image only its mapped ranges
/// (checked against the bmap's checksums as they are read), else all of it; syncs, then
/// verifies by reading the written ranges back from the device itself (O_DIRECT, past the
/// page cache). Holes are neither written nor verified: a used device keeps its old bytes
/// there, which is what the bmap allows. With a config, an invalid one is refused before
/// anything is written; a valid one is placed on `boot-a` and the result re-verified.
pub fn flash(req: &Request<'_>) -> Result<()> {
    let started = Instant::now();
    let seed = req.config.map(seed::load).transpose()?;
    let target = inspect(req.device)?;
    if let Some(why) = refusal(&target, req.force) {
        bail!("{why}");
    }
    let device = target.device.as_path();
    let image = req.image;
    let image_len = fs::metadata(image)
        .with_context(|| format!("no image {}", image.display()))?
        .len();
    let bmap_path = PathBuf::from(format!("{}.bmap", image.display()));
    let mut spans = if bmap_path.exists() {
        let text = fs::read_to_string(&bmap_path)
            .with_context(|| format!("cannot read {}", bmap_path.display()))?;
        let map = bmap::parse(&text)
            .with_context(|| format!("{} is not a usable bmap", bmap_path.display()))?;
        ensure!(
            map.image_size == image_len,
            "{} describes an image of {} bytes, but {} has {image_len}: not its bmap",
            bmap_path.display(),
            map.image_size,
            image.display()
        );
        eprintln!(
            "atomix-image: {}: {} in {} ranges of {} mapped",
            bmap_path.display(),
            progress::size(map.mapped_bytes()),
            map.ranges.len(),
            progress::size(image_len)
        );
        spans_of(&map)
    } else {
        eprintln!(
            "atomix-image: no bmap at {}: writing and verifying all of the image",
            bmap_path.display()
        );
        vec![Span {
            start: 0,
            end: image_len,
            sha256: None,
            name: format!("bytes 0-{}", image_len.saturating_sub(1)),
        }]
    };
    let boot_a = match &seed {
        Some(_) => Some(seed::boot_a(image)?),
        None => None,
    };
    let device_len = size_of(device)?;
    ensure!(
        device_len >= image_len,
        "{} holds {} bytes, fewer than the image's {image_len}",
        device.display(),
        device_len
    );

    let total: u64 = spans.iter().map(Span::len).sum();
    let wrote = write(image, device, &mut spans)?;
    corrupt_for_test(device)?;
    let verified = verify(device, &spans, "verifying")?;

    if let (Some(seed), Some((offset, size))) = (&seed, boot_a) {
        eprintln!(
            "atomix-image: placing {} as {} on {} (byte {offset} of {})",
            seed.source.display(),
            seed.name,
            disk_layout::BOOT_A,
            device.display()
        );
        seed::place(seed, device, offset)?;
        flush_and_forget(device)?;
        // The ranges outside boot-a must still read back as the image; inside it, every
        // file of the image's boot-a and the seed must.
        let outside: Vec<Span> = spans
            .iter()
            .filter(|s| s.end <= offset || s.start >= offset + size)
            .cloned()
            .collect();
        verify(device, &outside, "re-verifying")?;
        check_boot_files(image, device, offset, seed)?;
    }
    eprintln!(
        "atomix-image: {} flashed and verified in {:.1} s: wrote {} in {:.1} s ({:.1} MiB/s), \
         verified in {:.1} s ({:.1} MiB/s)",
        device.display(),
        started.elapsed().as_secs_f64(),
        progress::size(total),
        wrote.as_secs_f64(),
        progress::rate(total, wrote),
        verified.as_secs_f64(),
        progress::rate(total, verified),
    );
    Ok(())
}

/// The size in bytes of a block device (or file).
fn size_of(device: &Path) -> Result<u64> {
    File::open(device)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .with_context(|| format!("cannot read the size of {}", device.display()))
}

/// Writes the spans of `image` to the same offsets of `device`, hashing what is read;
/// a span whose hash differs from the bmap's stops the write. Fills in the hashes of spans
/// that had none.
fn write(image: &Path, device: &Path, spans: &mut [Span]) -> Result<Duration> {
    let input = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let out = OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("cannot open {} for writing", device.display()))?;
    let total = spans.iter().map(Span::len).sum();
    let mut progress = Progress::new(&format!("writing {}", device.display()), total);
    let mut buf = vec![0u8; CHUNK];
    let mut unsynced = 0u64;
    for span in spans.iter_mut() {
        let mut hasher = Sha256::new();
        let mut pos = span.start;
        while pos < span.end {
            let n = usize::try_from(span.end - pos).map_or(CHUNK, |left| left.min(CHUNK));
            let chunk = &mut buf[..n];
            input
                .read_exact_at(chunk, pos)
                .with_context(|| format!("cannot read {} at byte {pos}", image.display()))?;
            hasher.update(&*chunk);
            out.write_all_at(chunk, pos)
                .with_context(|| format!("cannot write {} at byte {pos}", device.display()))?;
            pos += n as u64;
            progress.add(n as u64);
            unsynced += n as u64;
            if unsynced >= SYNC_EVERY {
                out.sync_data()
                    .with_context(|| format!("cannot flush {}", device.display()))?;
                unsynced = 0;
            }
        }
        let actual = bmap::hex(&hasher.finalize());
        match &span.sha256 {
            Some(want) if *want != actual => bail!(
                "{} does not match its bmap at {}: its SHA-256 is {actual}, the bmap says {want}; \
                 the image or its bmap is damaged (build or copy them again). {} is only partly written",
                image.display(),
                span.name,
                device.display()
            ),
            Some(_) => {}
            None => span.sha256 = Some(actual),
        }
    }
    out.sync_all()
        .with_context(|| format!("cannot flush {}", device.display()))?;
    Ok(progress.finish())
}

/// Reads the spans back from the device past the page cache and compares their hashes;
/// every span that differs is named.
fn verify(device: &Path, spans: &[Span], what: &str) -> Result<Duration> {
    let file = open_uncached(device)?;
    let device_len = size_of(device)?;
    let total = spans.iter().map(Span::len).sum();
    let mut progress = Progress::new(&format!("{what} {}", device.display()), total);
    // O_DIRECT wants an aligned buffer: take an aligned window of a larger one.
    let mut raw = vec![0u8; CHUNK + ALIGN as usize];
    let skip = raw.as_ptr().align_offset(ALIGN as usize);
    let buf = &mut raw[skip..skip + CHUNK];
    let mut bad = Vec::new();
    for span in spans {
        let mut hasher = Sha256::new();
        let mut pos = span.start / ALIGN * ALIGN;
        let read_end = span
            .end
            .div_ceil(ALIGN)
            .saturating_mul(ALIGN)
            .min(device_len);
        while pos < read_end {
            let n = usize::try_from(read_end - pos).map_or(CHUNK, |left| left.min(CHUNK));
            file.read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("cannot read {} at byte {pos}", device.display()))?;
            let lo = span.start.max(pos) - pos;
            let hi = span.end.min(pos + n as u64) - pos;
            if lo < hi {
                hasher.update(&buf[lo as usize..hi as usize]);
                progress.add(hi - lo);
            }
            pos += n as u64;
        }
        let actual = bmap::hex(&hasher.finalize());
        if span.sha256.as_deref() != Some(actual.as_str()) {
            bad.push(span.name.as_str());
        }
    }
    let took = progress.finish();
    if !bad.is_empty() {
        let shown: Vec<&str> = bad.iter().take(5).copied().collect();
        bail!(
            "{} does not read back as written: {} of {} ranges differ: {}{}; the device may be \
             failing, or something else wrote to it meanwhile",
            device.display(),
            bad.len(),
            spans.len(),
            shown.join(", "),
            if bad.len() > shown.len() { ", ..." } else { "" }
        );
    }
    Ok(took)
}

/// Opens the device for reads that bypass the page cache: O_DIRECT, or where the device
/// refuses it, a plain open after dropping the cached pages.
fn open_uncached(device: &Path) -> Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECT.bits())
        .open(device)
    {
        Ok(file) => Ok(file),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
            flush_and_forget(device)?;
            File::open(device).with_context(|| format!("cannot open {}", device.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot open {}", device.display())),
    }
}

/// Flushes the device and drops its cached pages, so the next buffered read (mtools')
/// comes from the device.
fn flush_and_forget(device: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("cannot open {}", device.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot flush {}", device.display()))?;
    posix_fadvise(
        file.as_raw_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .with_context(|| format!("cannot drop the cached pages of {}", device.display()))?;
    Ok(())
}

/// Every file of the image's `boot-a` and the seed, read back from the device.
fn check_boot_files(image: &Path, device: &Path, offset: u64, seed: &seed::Seed) -> Result<()> {
    let files = seed::files(image, offset)?;
    ensure!(
        !files.is_empty(),
        "the image's {} holds no files",
        disk_layout::BOOT_A
    );
    for file in &files {
        ensure!(
            seed::read_file(device, offset, file)? == seed::read_file(image, offset, file)?,
            "{file} on {} of {} does not read back as in the image after placing the seed",
            disk_layout::BOOT_A,
            device.display()
        );
    }
    let placed = format!("::/{}", seed.name);
    ensure!(
        seed::read_file(device, offset, &placed)? == seed.bytes,
        "{placed} on {} of {} does not read back as {}",
        disk_layout::BOOT_A,
        device.display(),
        seed.source.display()
    );
    eprintln!(
        "atomix-image: {} re-verified: {} files of the image and {placed}",
        disk_layout::BOOT_A,
        files.len()
    );
    Ok(())
}

fn corrupt_for_test(device: &Path) -> Result<()> {
    let Some(value) = std::env::var_os(CORRUPT_AFTER_WRITE_ENV) else {
        return Ok(());
    };
    let offset: u64 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{CORRUPT_AFTER_WRITE_ENV}={value:?} is not a byte offset"))?;
    eprintln!(
        "atomix-image: TEST: {CORRUPT_AFTER_WRITE_ENV} set: flipping byte {offset} of {} before verifying",
        device.display()
    );
    // A second descriptor, as another writer would use.
    let file = OpenOptions::new().read(true).write(true).open(device)?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset)?;
    file.write_all_at(&[!byte[0]], offset)?;
    file.sync_all()?;
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
