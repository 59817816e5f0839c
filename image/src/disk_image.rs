//! The flashable disk image: a GPT with `boot-a` and `rootfs-a` only (sized from
//! `repart.d/`), the Rock64 U-Boot blobs in the bootloader area, and the partition contents.
//!
//! [`DiskPlan`] computes every offset as data (unit-tested); [`write`] carries it out.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use disk_layout::{Layout, BOOT_A, FIRST_USABLE_LBA, ROOTFS_A};
use sha2::{Digest, Sha256};

pub const SECTOR: u64 = 512;
/// Where the Rock64 boot ROM looks for `idbloader.img`.
pub const IDBLOADER_SECTOR: u64 = 64;
/// Where the Rock64 SPL looks for `u-boot.itb`.
pub const UBOOT_ITB_SECTOR: u64 = 16384;
/// Room for the backup GPT (header and 128 entries) at the end of the image, rounded up.
const BACKUP_GPT_BYTES: u64 = 1 << 20;
/// GPT attribute bit 2: legacy BIOS bootable, which U-Boot's distro boot scans for.
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// One partition of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPartition {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub partuuid: uuid::Uuid,
    pub first_lba: u64,
    pub sectors: u64,
    pub flags: u64,
}

impl PlannedPartition {
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size_bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// Every offset of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    pub disk_guid: uuid::Uuid,
    pub size_bytes: u64,
    pub partitions: Vec<PlannedPartition>,
}

/// A UUID derived from the build id and a name, so one build always produces the same
/// image (and every device flashed from it carries the same PARTUUIDs, as DESIGN.md says).
pub fn derived_uuid(build_id: &str, name: &str) -> uuid::Uuid {
    let digest = Sha256::digest(format!("atomixos:{build_id}:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

impl DiskPlan {
    /// Plans the image for `layout`: `boot-a` at the first usable LBA, `rootfs-a` right
    /// after it, then room for the backup GPT.
    pub fn new(layout: &Layout, build_id: &str) -> Result<DiskPlan> {
        let mut partitions = Vec::new();
        let mut next_lba = FIRST_USABLE_LBA;
        for (number, label) in [(1u32, BOOT_A), (2, ROOTFS_A)] {
            let def = layout
                .get(label)
                .with_context(|| format!("{}: no {label} definition", layout.dir.display()))?;
            let size = def.fixed_size_bytes().with_context(|| {
                format!("{def}: the image needs SizeMinBytes= equal to SizeMaxBytes=")
            })?;
            ensure!(
                size % SECTOR == 0,
                "{def}: size is not a multiple of {SECTOR}"
            );
            let type_guid = def
                .type_guid()
                .with_context(|| format!("{def}: unknown Type={}", def.type_name))?;
            partitions.push(PlannedPartition {
                number,
                label: label.to_owned(),
                type_guid: type_guid.to_owned(),
                partuuid: derived_uuid(build_id, label),
                first_lba: next_lba,
                sectors: size / SECTOR,
                flags: if label == BOOT_A {
                    LEGACY_BIOS_BOOTABLE
                } else {
                    0
                },
            });
            next_lba += size / SECTOR;
        }
        Ok(DiskPlan {
            disk_guid: derived_uuid(build_id, "disk"),
            size_bytes: next_lba * SECTOR + BACKUP_GPT_BYTES,
            partitions,
        })
    }

    pub fn partition(&self, label: &str) -> &PlannedPartition {
        self.partitions
            .iter()
            .find(|p| p.label == label)
            .expect("the plan has every partition of the image")
    }
}

/// What goes into the image.
#[derive(Debug)]
pub struct DiskContents<'a> {
    pub idbloader: &'a Path,
    pub uboot_itb: &'a Path,
    pub boot_vfat: &'a Path,
    pub rootfs_squashfs: &'a Path,
}

/// Writes the image: sparse file, protective MBR, GPT (first usable LBA 32768), the U-Boot
/// blobs at their sectors, and the partition contents. Unwritten areas stay holes, so the
/// bmap lists only what is used.
pub fn write(plan: &DiskPlan, contents: &DiskContents<'_>, out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    file.set_len(plan.size_bytes)?;
    write_gpt(plan, &mut file)
        .with_context(|| format!("cannot write the GPT of {}", out.display()))?;

    let bootloader_end = FIRST_USABLE_LBA * SECTOR;
    for (blob, sector) in [
        (contents.idbloader, IDBLOADER_SECTOR),
        (contents.uboot_itb, UBOOT_ITB_SECTOR),
    ] {
        copy_at(&mut file, blob, sector * SECTOR, bootloader_end)?;
    }
    let state_start = slot_state::COPY_LBAS[0] * SECTOR;
    ensure!(
        IDBLOADER_SECTOR * SECTOR + std::fs::metadata(contents.idbloader)?.len() <= state_start,
        "{} overlaps the slot state at sector {:#x}",
        contents.idbloader.display(),
        slot_state::COPY_LBAS[0]
    );
    ensure!(
        slot_state::copy_offset(1) + slot_state::BLOCK_SIZE as u64 <= UBOOT_ITB_SECTOR * SECTOR,
        "the slot state overlaps u-boot.itb"
    );
    // The factory slot state, written out so that flashing over an older installation
    // (bmaptool skips holes) cannot leave its state behind.
    slot_state::write(&file, &slot_state::SlotState::factory())?;
    for (label, source) in [
        (BOOT_A, contents.boot_vfat),
        (ROOTFS_A, contents.rootfs_squashfs),
    ] {
        let p = plan.partition(label);
        copy_at(
            &mut file,
            source,
            p.offset_bytes(),
            p.offset_bytes() + p.size_bytes(),
        )
        .with_context(|| format!("cannot fill {label}"))?;
    }
    file.sync_all()?;
    Ok(())
}

fn write_gpt(plan: &DiskPlan, file: &mut File) -> Result<()> {
    let lb = gpt::disk::LogicalBlockSize::Lb512;
    let last_lba = plan.size_bytes / SECTOR - 1;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(last_lba).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(file)?;
    // Headers first, with the first usable LBA past the bootloader area: the gpt crate keeps
    // it from an existing header, and systemd-repart never places partitions before it.
    for primary in [true, false] {
        let mut header = gpt::header::HeaderBuilder::new()
            .backup_lba(last_lba)
            .disk_guid(plan.disk_guid)
            .first_usable(FIRST_USABLE_LBA)
            .primary(primary)
            .build(lb)?;
        if primary {
            header.write_primary(file, lb)?;
        } else {
            header.write_backup(file, lb)?;
        }
    }
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .open_from_device(&mut *file)?;
    ensure!(
        disk.header().first_usable == FIRST_USABLE_LBA,
        "GPT first usable LBA is {}, not {FIRST_USABLE_LBA}",
        disk.header().first_usable
    );
    for p in &plan.partitions {
        let part_type = gpt::partition_types::Type {
            guid: uuid::Uuid::parse_str(&p.type_guid)?,
            os: gpt::partition_types::OperatingSystem::None,
        };
        disk.add_partition_at(
            &p.label,
            p.number,
            p.first_lba,
            p.sectors,
            part_type,
            p.flags,
        )?;
    }
    // add_partition_at picks random PARTUUIDs: set the planned ones.
    let mut partitions = disk.partitions().clone();
    for p in &plan.partitions {
        let entry = partitions.get_mut(&p.number).expect("just added");
        entry.part_guid = p.partuuid;
    }
    disk.update_partitions(partitions)?;
    disk.write()?;
    Ok(())
}

/// Copies `source` into `file` at `offset`, refusing to cross `limit`.
fn copy_at(file: &mut File, source: &Path, offset: u64, limit: u64) -> Result<()> {
    let len = std::fs::metadata(source)
        .with_context(|| format!("cannot read {}", source.display()))?
        .len();
    if offset + len > limit {
        bail!(
            "{} is {len} bytes: too large for the {} bytes at offset {offset}",
            source.display(),
            limit - offset
        );
    }
    let mut input =
        File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Keep all-zero blocks as holes.
        if buf[..n].iter().all(|b| *b == 0) {
            file.seek(SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(&buf[..n])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../repart.d")).unwrap()
    }

    #[test]
    fn plan_places_slot_a_after_the_bootloader_area() {
        let plan = DiskPlan::new(&layout(), "b1").unwrap();
        let boot = plan.partition(BOOT_A);
        let root = plan.partition(ROOTFS_A);
        assert_eq!(boot.number, 1);
        assert_eq!(boot.first_lba, 32768);
        assert_eq!(boot.size_bytes(), 256 << 20);
        assert_eq!(boot.flags, LEGACY_BIOS_BOOTABLE);
        assert_eq!(root.number, 2);
        assert_eq!(root.first_lba, boot.first_lba + boot.sectors);
        assert_eq!(root.size_bytes(), 1 << 30);
        assert_eq!(root.flags, 0);
        assert_eq!(plan.size_bytes, (16 + 256 + 1024 + 1) << 20);
        assert_eq!(plan, DiskPlan::new(&layout(), "b1").unwrap(), "repeatable");
        assert_ne!(
            plan.partition(ROOTFS_A).partuuid,
            DiskPlan::new(&layout(), "b2")
                .unwrap()
                .partition(ROOTFS_A)
                .partuuid
        );
    }

    #[test]
    fn writes_a_gpt_sfdisk_and_the_gpt_crate_agree_on() {
        let dir = tempfile::tempdir().unwrap();
        let blob = |name: &str, len: usize, byte: u8| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![byte; len]).unwrap();
            p
        };
        let idb = blob("idbloader.img", 100_000, 0xAA);
        let itb = blob("u-boot.itb", 900_000, 0xBB);
        let vfat = blob("boot.vfat", 4096, 0xCC);
        let squash = blob("rootfs.squashfs", 8192, 0xDD);
        let plan = DiskPlan::new(&layout(), "test").unwrap();
        let out = dir.path().join("disk.img");
        write(
            &plan,
            &DiskContents {
                idbloader: &idb,
                uboot_itb: &itb,
                boot_vfat: &vfat,
                rootfs_squashfs: &squash,
            },
            &out,
        )
        .unwrap();

        let (state, source) = slot_state::read(&File::open(&out).unwrap()).unwrap();
        assert_eq!(
            (state, source),
            (
                slot_state::SlotState::factory(),
                slot_state::Source::Copy(0)
            )
        );

        let gpt = gpt::GptConfig::new().open(&out).unwrap();
        assert_eq!(gpt.header().first_usable, FIRST_USABLE_LBA);
        let parts = gpt.partitions();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[&1].name, "boot-a");
        assert_eq!(parts[&1].part_guid, plan.partition(BOOT_A).partuuid);
        assert_eq!(parts[&1].flags & LEGACY_BIOS_BOOTABLE, LEGACY_BIOS_BOOTABLE);
        assert_eq!(parts[&2].first_lba, plan.partition(ROOTFS_A).first_lba);

        let sfdisk = std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(&out)
            .output()
            .expect("sfdisk (util-linux) is installed by scripts/setup-host.sh");
        assert!(
            sfdisk.status.success(),
            "{}",
            String::from_utf8_lossy(&sfdisk.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&sfdisk.stdout).unwrap();
        let table = &json["partitiontable"];
        assert_eq!(table["label"], "gpt");
        assert_eq!(table["firstlba"], FIRST_USABLE_LBA);
        assert_eq!(table["partitions"][0]["name"], "boot-a");
        assert_eq!(table["partitions"][0]["attrs"], "LegacyBIOSBootable");
        assert_eq!(table["partitions"][1]["name"], "rootfs-a");
        assert_eq!(
            table["partitions"][1]["uuid"],
            plan.partition(ROOTFS_A)
                .partuuid
                .hyphenated()
                .to_string()
                .to_uppercase()
        );

        let bytes = std::fs::read(&out).unwrap();
        let at = |off: u64| bytes[off as usize];
        assert_eq!(at(IDBLOADER_SECTOR * SECTOR), 0xAA);
        assert_eq!(at(UBOOT_ITB_SECTOR * SECTOR), 0xBB);
        assert_eq!(at(plan.partition(BOOT_A).offset_bytes()), 0xCC);
        assert_eq!(at(plan.partition(ROOTFS_A).offset_bytes() + 8191), 0xDD);
        // GPT entries stay in sectors 2-33, clear of idbloader at sector 64.
        assert_eq!(&bytes[512..520], b"EFI PART");
    }

    #[test]
    fn oversized_contents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"x").unwrap();
        let big = dir.path().join("big");
        File::create(&big)
            .unwrap()
            .set_len((256 << 20) + 1)
            .unwrap();
        let plan = DiskPlan::new(&layout(), "t").unwrap();
        let err = write(
            &plan,
            &DiskContents {
                idbloader: &small,
                uboot_itb: &small,
                boot_vfat: &big,
                rootfs_squashfs: &small,
            },
            &dir.path().join("d.img"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cannot fill boot-a"), "{err:#}");
    }
}
