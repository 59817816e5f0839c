//! Reading the boot disk's GPT with the `gpt` crate: which partitions of the layout exist.
//!
//! When the primary GPT is unusable (its header or its entries fail their CRC), the backup
//! at the end of the disk is read, as U-Boot, libblkid and the kernel (with `gpt` on its
//! command line, which `boot.scr` passes) do: `systemd-repart`
//! writes the backup first and the primary last, each flushed, so a power cut in between
//! leaves a complete new table in the backup and a torn primary (found by the crash
//! campaign, `docs/reliability.md`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use uuid::Uuid;

/// One used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry {
    /// 1-based entry number, as in `/dev/mmcblk0p<N>`.
    pub number: u32,
    /// PARTLABEL.
    pub label: String,
    /// PARTUUID.
    pub partuuid: Uuid,
    /// Partition type GUID, lower-case.
    pub type_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    /// Bit 2, "legacy BIOS bootable", which U-Boot's distro boot looks for.
    pub legacy_bios_bootable: bool,
}

/// The partition table of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub disk_guid: String,
    pub first_usable_lba: u64,
    pub partitions: Vec<PartitionEntry>,
}

impl PartitionTable {
    pub fn by_label(&self, label: &str) -> Option<&PartitionEntry> {
        self.partitions.iter().find(|p| p.label == label)
    }

    pub fn by_partuuid(&self, partuuid: Uuid) -> Option<&PartitionEntry> {
        self.partitions.iter().find(|p| p.partuuid == partuuid)
    }
}

#[cfg(test)]
impl PartitionTable {
    /// A table for tests: `labels` numbered from 1 on one disk, distinct PARTUUIDs
    /// (`00000000-0000-4000-8000-00000000000<N>`), the first entry legacy-BIOS-bootable.
    pub fn with_labels<S: AsRef<str>>(labels: &[S]) -> PartitionTable {
        PartitionTable {
            disk_guid: "5e0f3a36-9f0b-4d6e-8c8a-0a7e2b1c0001".into(),
            first_usable_lba: 32768,
            partitions: (1..)
                .zip(labels)
                .map(|(number, label)| PartitionEntry {
                    number,
                    label: label.as_ref().into(),
                    partuuid: Uuid::from_u128(0x4000_8000_0000_0000_0000 + u128::from(number)),
                    type_guid: String::new(),
                    first_lba: 0,
                    last_lba: 0,
                    legacy_bios_bootable: number == 1,
                })
                .collect(),
        }
    }
}

/// Reads the GPT of `disk` (a block device or an image file), read-only: the primary, or
/// the backup when the primary is unusable.
pub fn read(disk: &Path) -> Result<PartitionTable> {
    let primary = gpt::GptConfig::new().writable(false).open(disk);
    let gpt = match primary {
        Ok(gpt) => {
            // The crate itself takes the backup when the primary *header* is unusable.
            if let Err(e) = gpt.primary_header() {
                log::warn!(
                    "the primary GPT header of {} is unusable ({e}): using the backup GPT at \
                     the end of the disk",
                    disk.display()
                );
            }
            gpt
        }
        Err(primary_error) => {
            let file =
                File::open(disk).with_context(|| format!("cannot open {}", disk.display()))?;
            let backup = gpt::GptConfig::new()
                .writable(false)
                .open_from_device(WithoutPrimaryHeader(file))
                .with_context(|| {
                    format!(
                        "cannot read a GPT from {}: the primary is unusable ({primary_error}) and so \
                         is the backup at the end of the disk: is this the boot disk, flashed with \
                         the AtomixOS image?",
                        disk.display()
                    )
                })?;
            // A backup left at the end of the disk by an earlier install (a reflash writes
            // only the image) is not this table's: the primary header, still readable when
            // only its entries are torn, names the disk.
            if let Ok(header) = gpt::header::read_header(disk, gpt::disk::DEFAULT_SECTOR_SIZE) {
                if header.disk_guid != *backup.guid() {
                    anyhow::bail!(
                        "cannot read a GPT from {}: the primary is unusable ({primary_error}) and \
                         the backup at the end of the disk belongs to another table (disk GUID {}, \
                         the primary header says {})",
                        disk.display(),
                        backup.guid(),
                        header.disk_guid
                    );
                }
            }
            log::warn!(
                "the primary GPT of {} is unusable ({primary_error}): using the backup GPT at the \
                 end of the disk",
                disk.display()
            );
            return Ok(table_of(
                backup.header(),
                backup.guid(),
                backup.partitions(),
            ));
        }
    };
    Ok(table_of(gpt.header(), gpt.guid(), gpt.partitions()))
}

/// The table a GPT header and its entries describe.
fn table_of(
    header: &gpt::header::Header,
    guid: &Uuid,
    partitions: &std::collections::BTreeMap<u32, gpt::partition::Partition>,
) -> PartitionTable {
    let partitions = partitions
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(number, p)| PartitionEntry {
            number: *number,
            label: p.name.clone(),
            partuuid: p.part_guid,
            type_guid: p.part_type_guid.guid.hyphenated().to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            legacy_bios_bootable: p.flags & (1 << 2) != 0,
        })
        .collect();
    PartitionTable {
        disk_guid: guid.hyphenated().to_string(),
        first_usable_lba: header.first_usable,
        partitions,
    }
}

/// The disk as the `gpt` crate reads it, with the primary header's sector (LBA 1) read
/// as zeros: the crate then takes the backup header at the disk's last LBA, and that
/// header's own entries. Read-only: writes are refused.
#[derive(Debug)]
struct WithoutPrimaryHeader(File);

/// The primary header's bytes (LBA 1 of 512-byte sectors).
const PRIMARY_HEADER: std::ops::Range<u64> = 512..1024;

impl Read for WithoutPrimaryHeader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.0.stream_position()?;
        let n = self.0.read(buf)?;
        let end = start + n as u64;
        let from = start.max(PRIMARY_HEADER.start);
        let to = end.min(PRIMARY_HEADER.end);
        if from < to {
            buf[(from - start) as usize..(to - start) as usize].fill(0);
        }
        Ok(n)
    }
}

impl Seek for WithoutPrimaryHeader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl Write for WithoutPrimaryHeader {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the GPT is read, never written, here",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Decompresses a fixture image (made with sfdisk; see tests/fixtures/README.md).
    fn fixture(name: &str) -> tempfile::NamedTempFile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&path).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), raw).unwrap();
        file
    }

    #[test]
    fn reads_flashed_and_provisioned_layouts() {
        let cases: &[(&str, &[&str])] = &[
            ("flashed.img.gz", &["boot-a", "rootfs-a"]),
            (
                "provisioned.img.gz",
                &["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"],
            ),
        ];
        for (name, labels) in cases {
            let image = fixture(name);
            let table = read(image.path()).unwrap();
            let found: Vec<_> = table.partitions.iter().map(|p| p.label.as_str()).collect();
            assert_eq!(&found, labels, "{name}");
            assert_eq!(
                table.first_usable_lba,
                disk_layout::FIRST_USABLE_LBA,
                "{name}"
            );
            let boot_a = table.by_label("boot-a").unwrap();
            assert_eq!(boot_a.number, 1);
            assert_eq!(boot_a.first_lba, disk_layout::FIRST_USABLE_LBA);
            assert!(
                boot_a.legacy_bios_bootable,
                "{name}: boot-a must be bootable"
            );
            assert!(!table.by_label("rootfs-a").unwrap().legacy_bios_bootable);
            let rootfs = table.by_label("rootfs-a").unwrap();
            assert_eq!(
                table
                    .by_partuuid(
                        Uuid::parse_str(&rootfs.partuuid.to_string().to_uppercase()).unwrap()
                    )
                    .unwrap()
                    .number,
                2
            );
        }
    }

    /// Flips one byte of the primary GPT's entries (LBA 2): their CRC no longer matches
    /// the primary header's, the state a power cut leaves between the backup and the
    /// primary writes of `systemd-repart`.
    fn corrupt_primary_entries(path: &Path) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, 1024 + 40).unwrap();
        f.write_all_at(&[byte[0] ^ 0xff], 1024 + 40).unwrap();
    }

    #[test]
    fn a_torn_primary_gpt_is_read_from_the_backup() {
        for name in ["flashed.img.gz", "provisioned.img.gz"] {
            let image = fixture(name);
            let whole = read(image.path()).unwrap();
            corrupt_primary_entries(image.path());
            assert!(
                gpt::GptConfig::new()
                    .writable(false)
                    .open(image.path())
                    .is_err(),
                "{name}: the primary must now be unusable"
            );
            assert_eq!(read(image.path()).unwrap(), whole, "{name}");
        }
    }

    /// A backup GPT of another table at the end of the disk (an earlier install's, which
    /// a reflash leaves) is not taken for this one's.
    #[test]
    fn a_stale_backup_of_another_table_is_refused() {
        let image = fixture("provisioned.img.gz");
        let len = std::fs::metadata(image.path()).unwrap().len();
        // Another table on a disk of the same size: its last 33 sectors (the backup
        // entries and header) copied over this disk's.
        let other = tempfile::NamedTempFile::new().unwrap();
        other.as_file().set_len(len).unwrap();
        let mut sfdisk = std::process::Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(other.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk (util-linux fdisk)");
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nstart=2048, size=2048, name=other\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let tail = 33 * 512;
        let mut backup = vec![0u8; tail as usize];
        std::os::unix::fs::FileExt::read_exact_at(other.as_file(), &mut backup, len - tail)
            .unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(image.path())
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &backup, len - tail).unwrap();
        corrupt_primary_entries(image.path());
        let err = format!("{:#}", read(image.path()).unwrap_err());
        assert!(err.contains("belongs to another table"), "{err}");
    }

    #[test]
    fn both_gpts_torn_is_a_clear_error() {
        let image = fixture("provisioned.img.gz");
        corrupt_primary_entries(image.path());
        // The backup header is the last sector: zero it.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(image.path())
            .unwrap();
        let len = f.metadata().unwrap().len();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 512], len - 512).unwrap();
        let err = format!("{:#}", read(image.path()).unwrap_err());
        assert!(err.contains("the primary is unusable"), "{err}");
        assert!(err.contains("so is the backup"), "{err}");
        assert!(err.contains(&image.path().display().to_string()), "{err}");
    }

    #[test]
    fn a_disk_without_gpt_is_a_clear_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let err = format!("{:#}", read(file.path()).unwrap_err());
        assert!(err.contains("cannot read a GPT from"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }
}
