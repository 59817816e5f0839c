//! The device's disks while it is off: files at the root of `boot-a` (read and written
//! with mtools on a copy of the partition), a USB stick for the next boots, and a raw
//! copy of the whole disk for host-side checks.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::Device;
use crate::{host, BOOT_A_OFFSET};

impl Device {
    /// Writes `/boot/config.toml` into `boot-a`, as an operator does after flashing.
    pub fn write_boot_config(&mut self, text: &str) {
        self.write_boot_file("config.toml", text.as_bytes());
    }

    /// A copy of `boot-a` as it is on the disk now (the device must be off).
    fn boot_partition_copy(&self) -> PathBuf {
        let part = self.dir.join("boot-a.vfat");
        let _ = fs::remove_file(&part);
        let size_mib = 256;
        host(
            Command::new("qemu-img")
                .args(["dd", "-f", "qcow2", "-O", "raw", "bs=1M"])
                .arg(format!("skip={}", BOOT_A_OFFSET >> 20))
                .arg(format!("count={size_mib}"))
                .arg(format!("if={}", self.disk.display()))
                .arg(format!("of={}", part.display())),
        );
        part
    }

    /// Reads a file at the root of `boot-a`.
    pub fn read_boot_file(&mut self, name: &str) -> Vec<u8> {
        let part = self.boot_partition_copy();
        let file = self.dir.join(format!("read-{name}"));
        host(
            Command::new("mcopy")
                .args(["-n", "-i"])
                .arg(&part)
                .arg(format!("::/{name}"))
                .arg(&file),
        );
        fs::read(&file).unwrap()
    }

    /// Writes a file at the root of `boot-a` (mtools on a copy of the partition, then the
    /// changed chunks into the overlay).
    pub fn write_boot_file(&mut self, name: &str, bytes: &[u8]) {
        self.step(&format!("writing /boot/{name} into boot-a"));
        let part = self.boot_partition_copy();
        let before = fs::read(&part).unwrap();
        let file = self.dir.join(name);
        fs::write(&file, bytes).unwrap();
        host(
            Command::new("mcopy")
                .args(["-o", "-i"])
                .arg(&part)
                .arg(&file)
                .arg(format!("::/{name}")),
        );
        let after = fs::read(&part).unwrap();
        self.write_changed_chunks(BOOT_A_OFFSET, &before, &after);
    }

    /// Writes the 64 KiB chunks that differ into the overlay, with qemu-io.
    fn write_changed_chunks(&self, offset: u64, before: &[u8], after: &[u8]) {
        const CHUNK: usize = 64 << 10;
        let mut cmd = Command::new("qemu-io");
        cmd.args(["-f", "qcow2"]);
        let mut chunks = 0;
        for (i, (a, b)) in before.chunks(CHUNK).zip(after.chunks(CHUNK)).enumerate() {
            if a != b {
                let file = self.dir.join(format!("chunk-{i}"));
                fs::write(&file, b).unwrap();
                cmd.arg("-c").arg(format!(
                    "write -q -s {} {} {}",
                    file.display(),
                    offset + (i * CHUNK) as u64,
                    b.len()
                ));
                chunks += 1;
            }
        }
        assert!(chunks > 0, "nothing changed");
        cmd.arg(&self.disk);
        host(&mut cmd);
    }

    /// Plugs in a USB stick (FAT) holding `files` at its root, for the next boots.
    pub fn plug_usb(&mut self, files: &[(&str, &[u8])]) {
        self.step("preparing a USB stick");
        let stick = self.dir.join("usb-stick.img");
        let _ = fs::remove_file(&stick);
        host(
            Command::new("mkfs.vfat")
                .args(["-C", "-n", "SEED"])
                .arg(&stick)
                .arg("65536"),
        );
        for (name, data) in files {
            let file = self.dir.join(name);
            fs::write(&file, data).unwrap();
            host(
                Command::new("mcopy")
                    .arg("-i")
                    .arg(&stick)
                    .arg(&file)
                    .arg(format!("::/{name}")),
            );
        }
        self.usb = Some(stick);
    }

    pub fn unplug_usb(&mut self) {
        self.usb = None;
    }

    /// A raw copy of the disk, for host-side checks once the device is off.
    pub fn raw_disk(&mut self) -> PathBuf {
        assert!(self.child.is_none(), "power the device off first");
        self.step("converting the disk to raw for host checks");
        let raw = self.dir.join("disk.raw");
        let _ = fs::remove_file(&raw);
        host(
            Command::new("qemu-img")
                .args(["convert", "-f", "qcow2", "-O", "raw"])
                .arg(&self.disk)
                .arg(&raw),
        );
        raw
    }
}
