//! Reading the boot disk's GPT with the `gpt` crate: which partitions of the layout exist.

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

/// Reads the GPT of `disk` (a block device or an image file), read-only.
pub fn read(disk: &Path) -> Result<PartitionTable> {
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .open(disk)
        .with_context(|| {
            format!(
                "cannot read a GPT from {}: is this the boot disk, flashed with the AtomixOS image?",
                disk.display()
            )
        })?;
    let header = gpt.header();
    let partitions = gpt
        .partitions()
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
    Ok(PartitionTable {
        disk_guid: gpt.guid().hyphenated().to_string(),
        first_usable_lba: header.first_usable,
        partitions,
    })
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
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
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

    #[test]
    fn a_disk_without_gpt_is_a_clear_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let err = format!("{:#}", read(file.path()).unwrap_err());
        assert!(err.contains("cannot read a GPT from"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }
}
