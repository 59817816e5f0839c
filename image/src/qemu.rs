//! Booting the image in `qemu-system-aarch64 -M virt` through U-Boot, on a copy-on-write
//! overlay so the built image stays pristine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::command::{output, run};

/// How to run the device.
#[derive(Debug, Clone)]
pub struct Machine {
    /// U-Boot for QEMU (`qemu_arm64/u-boot.bin` of the image build).
    pub bios: PathBuf,
    /// The disk the device boots (a qcow2 overlay of the image).
    pub disk: PathBuf,
    /// Host port forwarded to the device's WAN port 8080.
    pub wan_port: u16,
    /// Host port forwarded to the device's LAN gateway address, port 8080.
    pub lan_port: u16,
    /// Host port forwarded to the device's SSH on WAN.
    pub ssh_port: u16,
    pub memory_mib: u32,
}

/// The LAN network QEMU emulates on eth1; the device is its gateway.
pub const LAN_NET: &str = "192.168.100.0/24";
pub const LAN_GATEWAY: &str = "192.168.100.1";

impl Machine {
    /// The QEMU command line (serial console on stdio).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-M",
            // With ACPI, virt would route its power button through ACPI instead of the
            // PL061 GPIO key that U-Boot reads as the recovery button.
            "virt,acpi=off",
            "-cpu",
            "cortex-a72",
            "-smp",
            "2",
            "-nographic",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "-m".into(),
            self.memory_mib.to_string(),
            "-bios".into(),
            self.bios.display().to_string(),
            "-drive".into(),
            format!("if=none,id=disk,format=qcow2,file={}", self.disk.display()),
            "-device".into(),
            "virtio-blk-pci,drive=disk".into(),
            // eth0: WAN, QEMU's user network with DHCP.
            "-netdev".into(),
            format!(
                "user,id=wan,hostfwd=tcp:127.0.0.1:{}-:8080,hostfwd=tcp:127.0.0.1:{}-:22",
                self.wan_port, self.ssh_port
            ),
            "-device".into(),
            "virtio-net-pci,netdev=wan,mac=52:54:00:a7:00:01,romfile=".into(),
            // eth1: LAN, a second network on which the device is the gateway.
            "-netdev".into(),
            format!(
                "user,id=lan,net={LAN_NET},host=192.168.100.2,dns=192.168.100.3,dhcpstart=192.168.100.200,restrict=on,hostfwd=tcp:127.0.0.1:{}-{LAN_GATEWAY}:8080",
                self.lan_port
            ),
            "-device".into(),
            "virtio-net-pci,netdev=lan,mac=52:54:00:a7:00:02,romfile=".into(),
            // The watchdog systemd arms (the Rock64 has the SoC's dw_wdt): a hang resets.
            "-device".into(),
            "i6300esb".into(),
            "-action".into(),
            "watchdog=reset".into(),
        ]);
        args
    }
}

/// The size of the emulated eMMC: larger than the image, as a real one is, so the first
/// boot has room to add slot B and `/data`.
pub const DISK_SIZE: &str = "8G";

/// Creates a fresh qcow2 overlay of `image` at `overlay`, [`DISK_SIZE`] large.
pub fn create_overlay(image: &Path, overlay: &Path) -> Result<()> {
    let _ = std::fs::remove_file(overlay);
    let image = std::fs::canonicalize(image)
        .with_context(|| format!("no image at {}: build it first", image.display()))?;
    output(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image)
            .arg(overlay)
            .arg(DISK_SIZE),
    )?;
    Ok(())
}

/// Boots the machine with the serial console on this terminal, until it powers off.
pub fn run_interactive(machine: &Machine) -> Result<()> {
    eprintln!(
        "atomix-image: booting {} (console below; Ctrl-A X quits). API: http://127.0.0.1:{} (WAN), http://127.0.0.1:{} (LAN)",
        machine.disk.display(),
        machine.wan_port,
        machine.lan_port
    );
    run(Command::new("qemu-system-aarch64").args(machine.args()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_boots_uboot_with_two_networks() {
        let m = Machine {
            bios: "/b/u-boot.bin".into(),
            disk: "/d/disk.qcow2".into(),
            wan_port: 8080,
            lan_port: 8081,
            ssh_port: 2222,
            memory_mib: 1024,
        };
        let args = m.args().join(" ");
        assert!(args.contains("-M virt,acpi=off -cpu cortex-a72"), "{args}");
        assert!(args.contains("-bios /b/u-boot.bin"));
        assert!(args.contains("file=/d/disk.qcow2"));
        assert!(args.contains("hostfwd=tcp:127.0.0.1:8080-:8080"));
        assert!(args.contains("hostfwd=tcp:127.0.0.1:8081-192.168.100.1:8080"));
        assert_eq!(args.matches("virtio-net-pci").count(), 2);
        assert!(
            args.contains("-device i6300esb -action watchdog=reset"),
            "{args}"
        );
    }
}
