//! The first boot of a freshly flashed device with no seed anywhere, and provisioning it
//! through the console's API with the image's provisioning key.

use std::time::Duration;

use atomix_qemu_tests::{test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);

#[test]
fn fresh_flash_without_seed_opens_the_console_and_provisions_over_the_api() {
    let mut device = Device::flashed("fresh-flash-no-seed");
    let admin = test_key(&device.dir, "admin-key");
    device.boot();

    // U-Boot, the initrd, first-boot partitioning: all on the serial console.
    let build_line = format!("AtomixOS build {}", device.image.build_id());
    device.wait_for_console(&build_line, BOOT);
    device.wait_for_console("atomix-initrd: plan: fresh flash yes", BOOT);
    let console = device.wait_for_console(
        "atomix-initrd: systemd-repart created boot-b, rootfs-b, data",
        BOOT,
    );
    assert!(console.contains("atomix-initrd: step mount-rootfs: done"));

    // The console answers on WAN and LAN, unprovisioned.
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

    // Provision it with the image's provisioning key.
    device.step("POST /api/config signed with the provisioning key");
    let config = test_config("qemu-api", &admin);
    let key = device.image.provisioning_key();
    let (status, body) = device
        .signed_post(
            device.wan_port,
            "/api/config",
            "application/toml",
            config.as_bytes(),
            &key,
        )
        .expect("POST /api/config");
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_str().expect("job URL").to_owned();
    let done = device.wait_for_job(device.wan_port, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "succeeded", "{done}");

    // The console narrows to the LAN gateway address.
    device.wait_until_provisioned(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        device.get(device.wan_port, "/api/health").is_err(),
        "after provisioning the API no longer answers on WAN"
    );

    // What the device did, seen from inside.
    let hostname = device.ssh(&admin, "hostname");
    assert_eq!(hostname.trim(), "qemu-api");
    let current = device.ssh(
        &admin,
        "readlink /data/config/current && cat /data/config/current/source.json",
    );
    assert!(current.contains("\"api\""), "{current}");
    let root = device.ssh(&admin, "findmnt -n -o FSTYPE,OPTIONS /");
    assert!(root.starts_with("overlay"), "{root}");
    assert!(root.contains("lowerdir=/run/rootfs-base"), "{root}");
    let data = device.ssh(&admin, "findmnt -n -o FSTYPE /data");
    assert_eq!(data.trim(), "f2fs");
    // The booted slot's boot partition, mounted by the initrd: FAT, root's only.
    let boot = device.ssh(&admin, "findmnt -n -o FSTYPE,SOURCE,OPTIONS /boot");
    assert!(boot.starts_with("vfat /dev/vda1 "), "{boot}");
    assert!(boot.contains("fmask=0077,dmask=0077"), "{boot}");
    let eth1 = device.ssh(&admin, "ip -4 -o addr show dev eth1");
    assert!(eth1.contains("192.168.100.1/24"), "{eth1}");
    let rules = device.ssh(&admin, "sudo nft list ruleset");
    assert!(rules.contains("table inet atomix"), "{rules}");
}
