//! The first boot of a freshly flashed device, with no seed anywhere.

use std::time::Duration;

use atomix_qemu_tests::Device;

const BOOT: Duration = Duration::from_secs(300);

#[test]
fn fresh_flash_without_seed_partitions_and_opens_the_console() {
    let mut device = Device::flashed("fresh-flash-no-seed");
    device.boot();
    let build_line = format!("AtomixOS build {}", device.image.build_id());
    device.wait_for_console(&build_line, BOOT);
    device.wait_for_console("atomix-initrd: plan: fresh flash yes", BOOT);
    let console = device.wait_for_console(
        "atomix-initrd: systemd-repart created boot-b, rootfs-b, data",
        BOOT,
    );
    assert!(
        console.contains("atomix-initrd: step mount-rootfs: done"),
        "the initrd's steps are on the console"
    );
    let health = device.wait_for_health(device.wan_port, BOOT);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["provisioned"], false, "{health}");
    assert_eq!(health["build_id"], device.image.build_id(), "{health}");
    assert_eq!(health["slot"], "a", "{health}");
    let lan = device.wait_for_health(device.lan_port, Duration::from_secs(60));
    assert_eq!(
        lan["provisioned"], false,
        "the console answers on LAN too: {lan}"
    );
}
