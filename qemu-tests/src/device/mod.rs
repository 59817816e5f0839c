//! One emulated device: a copy-on-write overlay of the image as its eMMC, QEMU started
//! for each boot with its own forwarded ports, power cuts and clean shutdowns, and the
//! failure report (the harness step and the console tail) when a test panics.
//!
//! What the device shows and holds is in the submodules: `console` (the serial log),
//! `disk` (files on `boot-a`, a USB stick, the raw disk) and `ssh` (commands on it).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{host, Image, Qmp};

mod console;
mod disk;
mod ssh;

/// The emulated eMMC, larger than the image as a real one is.
pub const DISK_SIZE: &str = "8G";

/// Free TCP ports for QEMU's forwards (see `test_support::ports` for why not one from
/// `bind(":0")`).
fn free_port() -> u16 {
    test_support::free_port()
}

/// One emulated device: its disk, its forwarded ports, its boots.
#[derive(Debug)]
pub struct Device {
    pub name: String,
    pub image: Image,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub wan_port: u16,
    pub lan_port: u16,
    pub ssh_port: u16,
    usb: Option<PathBuf>,
    /// Where QEMU's `blklogwrites` logs every write and flush of the disk, when set.
    write_log: Option<PathBuf>,
    /// eth1 on this tap ([`crate::lan::Lan`]) instead of QEMU's user-net LAN (and then
    /// no `lan_port` forward).
    lan_tap: Option<std::os::fd::RawFd>,
    child: Option<Child>,
    boots: u32,
    step: String,
    created: Instant,
}

impl Device {
    /// A freshly flashed device: a new overlay of the image.
    pub fn flashed(name: &str) -> Device {
        Device::flashed_with(Image::built(), name)
    }

    /// A freshly flashed device with a given image (the boot benchmark compares two).
    pub fn flashed_with(image: Image, name: &str) -> Device {
        let backing = fs::canonicalize(image.disk()).unwrap();
        Device::with_backing(image, name, &backing)
    }

    /// A device whose eMMC starts as the raw disk image `raw` (e.g. a disk rebuilt as a
    /// power cut would have left it), through a copy-on-write overlay: `raw` is not
    /// changed.
    pub fn from_raw_disk(image: Image, name: &str, raw: &Path) -> Device {
        Device::with_backing(image, name, &fs::canonicalize(raw).unwrap())
    }

    fn with_backing(image: Image, name: &str, backing: &Path) -> Device {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/qemu-tests")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.qcow2");
        host(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(backing)
                .arg(&disk)
                .arg(DISK_SIZE),
        );
        Device {
            name: name.to_owned(),
            image,
            dir,
            disk,
            wan_port: free_port(),
            lan_port: free_port(),
            ssh_port: free_port(),
            usb: None,
            write_log: None,
            lan_tap: None,
            child: None,
            boots: 0,
            step: "created".into(),
            created: Instant::now(),
        }
    }

    /// Records what the test is doing, for the failure report.
    pub fn step(&mut self, what: &str) {
        eprintln!(
            "[{} +{:.0}s] {what}",
            self.name,
            self.created.elapsed().as_secs_f64()
        );
        self.step = what.to_owned();
    }

    /// From the next boot on, every write, flush and FUA write the guest issues to its
    /// disk is logged to `log` by QEMU's `blklogwrites` driver, in the format of Linux's
    /// dm-log-writes (read by the `write-log` crate); later boots append to the log.
    pub fn record_writes(&mut self, log: &Path) {
        // QEMU neither creates nor truncates the log: an old run's entries would remain
        // past the new ones.
        fs::write(log, b"").unwrap();
        self.write_log = Some(log.to_owned());
    }

    /// The `-drive` option of the disk: the qcow2 overlay, behind `blklogwrites` when
    /// writes are recorded.
    fn disk_drive(&self) -> String {
        match &self.write_log {
            None => format!("if=none,id=disk,format=qcow2,file={}", self.disk.display()),
            // An existing log is appended to (its sector size is read from it: QEMU
            // refuses log-sector-size with log-append).
            Some(log) => format!(
                "if=none,id=disk,driver=blklogwrites,file.driver=qcow2,file.file.filename={},\
                 log.driver=file,log.filename={},{}",
                self.disk.display(),
                log.display(),
                if fs::metadata(log).is_ok_and(|m| m.len() > 0) {
                    "log-append=on"
                } else {
                    "log-sector-size=512"
                }
            ),
        }
    }

    /// Puts eth1 on a real LAN segment, from the next boot on: `lan`'s tap.
    pub fn attach_lan(&mut self, lan: &crate::lan::Lan) {
        self.lan_tap = Some(lan.tap_fd_for_child());
    }

    /// Powers the device on.
    pub fn boot(&mut self) {
        self.start(false);
    }

    /// Powers the device on with its CPUs stopped and returns its QMP connection: the
    /// test can press buttons from power-on, then lets it run with `cont`.
    pub fn boot_paused(&mut self) -> Qmp {
        self.start(true);
        let socket = self.qmp_socket();
        Qmp::connect(&socket, Duration::from_secs(30))
    }

    /// QEMU's QMP socket for the current boot.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join(format!("qmp-{}.sock", self.boots))
    }

    fn start(&mut self, paused: bool) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.boots += 1;
        self.step(&format!("boot {}", self.boots));
        let log = self.serial_log(self.boots);
        let bios = self.image.dir.join("u-boot-qemu.bin");
        let qmp = self.qmp_socket();
        let _ = fs::remove_file(&qmp);
        let mut cmd = Command::new("qemu-system-aarch64");
        // acpi=off: with ACPI, virt routes its power button through ACPI instead of the
        // PL061 GPIO key that U-Boot reads as the recovery button.
        cmd.args(["-M", "virt,acpi=off", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-bios")
            .arg(&bios)
            .arg("-chardev")
            .arg(format!("file,id=serial,path={}", log.display()))
            .args(["-serial", "chardev:serial"])
            .arg("-drive")
            .arg(self.disk_drive())
            .arg("-device")
            .arg(if self.write_log.is_some() {
                // QEMU 7.2's blklogwrites can misplace a write-zeroes entry's data
                // (crates/write-log): have the guest write the zeros instead.
                "virtio-blk-pci,drive=disk,write-zeroes=off"
            } else {
                "virtio-blk-pci,drive=disk"
            })
            .arg("-netdev")
            .arg(format!(
                "user,id=wan,hostfwd=tcp:127.0.0.1:{}-:8080,hostfwd=tcp:127.0.0.1:{}-:22",
                self.wan_port, self.ssh_port
            ))
            .args(["-device", "virtio-net-pci,netdev=wan,mac=52:54:00:a7:00:01,romfile="])
            .arg("-netdev")
            .arg(match self.lan_tap {
                Some(fd) => format!("tap,id=lan,fd={fd}"),
                None => format!(
                    "user,id=lan,net=192.168.100.0/24,host=192.168.100.2,dns=192.168.100.3,dhcpstart=192.168.100.200,restrict=on,hostfwd=tcp:127.0.0.1:{}-192.168.100.1:8080",
                    self.lan_port
                ),
            })
            .args(["-device", "virtio-net-pci,netdev=lan,mac=52:54:00:a7:00:02,romfile="])
            // The board's watchdog: its reset ends this QEMU (-no-reboot) like any reset.
            .args(["-device", "i6300esb", "-action", "watchdog=reset"]);
        if let Some(stick) = &self.usb {
            cmd.args(["-device", "qemu-xhci,id=xhci"])
                .arg("-drive")
                .arg(format!(
                    "if=none,id=stick,format=raw,file={}",
                    stick.display()
                ))
                .args(["-device", "usb-storage,bus=xhci.0,drive=stick,removable=on"]);
        }
        // QMP on every boot: a test can press buttons or wait for QEMU's events (a
        // watchdog reset is a WATCHDOG event) whenever it connects.
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if paused {
            cmd.arg("-S");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            fs::File::create(self.dir.join(format!("qemu-{}.stderr", self.boots))).unwrap(),
        );
        self.child = Some(
            cmd.spawn()
                .expect("qemu-system-aarch64 (scripts/setup-host.sh)"),
        );
    }

    /// Whether QEMU has ended (the guest powered off or reset under `-no-reboot`).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// Cuts the power: QEMU is killed, nothing is flushed.
    pub fn power_cut(&mut self) {
        self.step("power cut");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the device to power itself off (after `poweroff` or a `reboot` with
    /// `-no-reboot`), or cuts the power after `timeout`.
    pub fn wait_for_power_off(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.power_cut();
        false
    }

    /// Reboots the device from inside (as an operator would) and boots it again: QEMU
    /// runs with `-no-reboot`, so the guest's reset ends the process and the harness starts
    /// the next boot, with a console log of its own.
    pub fn reboot(&mut self, key: &Path) {
        self.step("reboot from inside");
        self.ssh_unchecked(key, "sudo systemctl reboot");
        if !self.wait_for_power_off(Duration::from_secs(180)) {
            panic!("the device did not go down within 180 s of `systemctl reboot`");
        }
        self.boot();
    }

    /// Shuts the device down cleanly from inside and waits until it is off.
    pub fn poweroff(&mut self, key: &Path) {
        self.step("poweroff from inside");
        self.ssh_unchecked(key, "sudo systemctl poweroff");
        if !self.wait_for_power_off(Duration::from_secs(180)) {
            panic!("the device did not power off within 180 s");
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let console = self.console();
            let tail: Vec<&str> = console.lines().rev().take(60).collect();
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "\n=== {}: failed after harness step: {} (boot {}); console tail ({}):",
                self.name,
                self.step,
                self.boots,
                self.serial_log(self.boots).display()
            );
            for line in tail.iter().rev() {
                let _ = writeln!(err, "{line}");
            }
        } else {
            eprintln!(
                "[{}] done in {:.0} s",
                self.name,
                self.created.elapsed().as_secs_f64()
            );
        }
    }
}
