//! Seeds: a bundle (with a container image no registry serves) in `/boot` on a fresh flash
//! (and never again), a USB stick, an invalid `/boot/config.toml`; a reboot of a
//! provisioned device; a wipe and reprovisioning.

use std::process::Command;
use std::time::Duration;

use atomix_qemu_tests::oci::{self, HELLO_PORT};
use atomix_qemu_tests::{test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);

/// Waits for the provisioned console on the LAN address and checks that WAN is closed.
fn wait_provisioned(device: &mut Device) {
    device.wait_until_provisioned(BOOT);
    assert!(
        device.get(device.wan_port, "/api/health").is_err(),
        "a provisioned device does not answer the API on WAN"
    );
}

/// The page the bundled container serves.
const PAGE: &[u8] = b"hello from a bundled image\n";

/// Checks that the bundled container runs and serves its page (from inside its own
/// network namespace, with the image's busybox).
fn assert_hello_serves(device: &Device, admin: &std::path::Path) {
    assert_eq!(
        device
            .ssh_unchecked(admin, "systemctl is-active hello.service")
            .unwrap_or_default()
            .trim(),
        "active",
        "{}",
        device
            .ssh_unchecked(
                admin,
                "sudo journalctl -b -u hello.service --no-pager | tail -30"
            )
            .unwrap_or_default()
    );
    let page = device.ssh(
        admin,
        &format!("sudo podman exec hello /bin/busybox wget -q -O - http://127.0.0.1:{HELLO_PORT}/index.html"),
    );
    assert_eq!(page.as_bytes(), PAGE);
}

#[test]
fn boot_seed_provisions_the_first_boot_and_a_reboot_reapplies_it() {
    let mut device = Device::flashed("boot-seed");
    let admin = test_key(&device.dir, "admin-key");
    device.step("building the offline container image");
    let archive = oci::hello_image_archive(&device.dir);
    let config = format!(
        "{}\n[[containers]]\nname = \"hello\"\nimage = \"oci-archive:/data/apps/hello/hello.tar\"\nvolumes = [\"/data/apps/hello/www:/srv:ro\"]\n",
        test_config("qemu-boot-seed", &admin)
    );
    let bundle = oci::bundle(
        &config,
        &[
            ("apps/hello/hello.tar", &archive),
            ("apps/hello/www/index.html", PAGE),
        ],
    );
    device.write_boot_file("atomix-config.tar.gz", &bundle);
    device.boot();
    device.wait_for_console(
        "atomix-initrd: systemd-repart created boot-b, rootfs-b, data",
        BOOT,
    );
    wait_provisioned(&mut device);

    // The layout repart made, the data filesystem, the overlay root.
    let table: serde_json::Value =
        serde_json::from_str(&device.ssh(&admin, "sudo sfdisk --json /dev/vda")).unwrap();
    let labels: Vec<&str> = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(labels, ["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"]);
    assert_eq!(
        device.ssh(&admin, "findmnt -n -o FSTYPE /data").trim(),
        "f2fs"
    );
    assert!(device
        .ssh(&admin, "findmnt -n -o FSTYPE /")
        .starts_with("overlay"));
    // The seed's generation, the marker consumed, the slot marked good.
    let source = device.ssh(&admin, "cat /data/config/current/source.json");
    assert!(source.contains("\"boot\""), "{source}");
    assert_eq!(
        device
            .ssh(
                &admin,
                "test -e /data/atomix/fresh-flash && echo present || echo gone"
            )
            .trim(),
        "gone"
    );
    let rauc = device.ssh(&admin, "sudo rauc status --detailed");
    assert!(rauc.contains("good"), "{rauc}");
    assert!(device
        .ssh(&admin, "ip -4 -o addr show dev eth1")
        .contains("192.168.100.1/24"));
    assert!(device
        .ssh(&admin, "sudo nft list ruleset")
        .contains("table inet atomix"));
    assert!(device
        .ssh(
            &admin,
            "test -f /etc/containers/systemd/hello.container && echo ok"
        )
        .contains("ok"));
    assert_hello_serves(&device, &admin);

    // The device's own SSH host key, made on /data by its first boot (the image has
    // none), is the one sshd serves.
    let host_key = device.ssh(&admin, "sudo cat /data/ssh/ssh_host_ed25519_key.pub");
    assert_eq!(served_host_key(&device), key_of(&host_key), "{host_key}");

    // Reboot: re-applied from /data, the boot seed not imported again.
    device.reboot(&admin);
    wait_provisioned(&mut device);
    assert_eq!(
        served_host_key(&device),
        key_of(&host_key),
        "the host key must survive a reboot"
    );
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-boot-seed");
    assert_eq!(
        device.ssh(&admin, "ls /data/config/generations").trim(),
        "1",
        "the boot seed must not be imported again"
    );
    assert!(device
        .ssh(&admin, "ip -4 -o addr show dev eth1")
        .contains("192.168.100.1/24"));
    assert!(device
        .ssh(&admin, "sudo nft list ruleset")
        .contains("table inet atomix"));
    assert_hello_serves(&device, &admin);
    let console = device.console();
    assert!(
        console.contains("atomix-initrd: plan: fresh flash no"),
        "not a fresh flash"
    );

    // The config was back in /etc before networkd started, and the re-apply found the
    // files of the network, time, firewall and host name in place and left those
    // services alone, only checking that dnsmasq and chrony run (the container is still
    // loaded by it). The ruleset and host name checked above were loaded by the restore.
    let times = device.ssh(
        &admin,
        "systemctl show -P ActiveEnterTimestampMonotonic atomix-restore.service; \
         systemctl show -P InactiveExitTimestampMonotonic systemd-networkd.service",
    );
    let times: Vec<u64> = times.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(
        times[0] > 0 && times[0] <= times[1],
        "atomix-restore.service active at {} us, networkd started at {} us",
        times[0],
        times[1]
    );
    let reapply = device.ssh(
        &admin,
        "sudo journalctl -b -u first-boot.service -o cat --no-pager",
    );
    for step in ["lan", "time", "firewall", "hostname", "ssh-keys"] {
        assert!(
            reapply
                .lines()
                .any(|l| l.contains(&format!(" {step}: 0 files written"))
                    && l.contains(" 0 actions")),
            "the re-apply's {step} step changed something:\n{reapply}"
        );
    }
}

/// The key part (`ssh-ed25519 AAAA...`) of an OpenSSH public key line.
fn key_of(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ed25519 host key the device's sshd presents, read with `ssh-keyscan`.
fn served_host_key(device: &Device) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p"])
        .arg(device.ssh_port.to_string())
        .arg("127.0.0.1")
        .output()
        .expect("ssh-keyscan");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("ssh-keyscan found no ed25519 key: {text}"));
    // "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    key_of(line.split_once(' ').map_or("", |(_, key)| key))
}

#[test]
fn wipe_then_reprovision_from_usb_without_replaying_the_boot_seed() {
    let mut device = Device::flashed("wipe-usb");
    let admin = test_key(&device.dir, "admin-key");
    device.write_boot_config(&test_config("qemu-first", &admin));
    device.boot();
    wait_provisioned(&mut device);

    // The factory reset an operator starts from the console or `atomixctl factory-reset`:
    // signed, a job, then the device reboots itself and atomix-factory-reset.service
    // erases /data early in the next boot.
    device.step("factory reset over the LAN API, signed");
    let key = device.image.provisioning_key();
    let (status, body) = device
        .signed_post(
            device.lan_port,
            atomix_api::routes::FACTORY_RESET,
            atomix_api::media_types::JSON,
            atomix_api::FactoryReset::BODY,
            &key,
        )
        .expect("POST /api/factory-reset");
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_str().expect("job URL").to_owned();
    let done = device.wait_for_job(device.lan_port, &job, Duration::from_secs(120));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        device.wait_for_power_off(Duration::from_secs(180)),
        "the device did not reboot itself after the factory reset"
    );
    device.boot();
    device.wait_for_console("atomix-initrd: plan: fresh flash no", BOOT);
    device.wait_for_console("factory reset: /data erased", BOOT);
    let health = device.wait_for_health(device.wan_port, BOOT);
    assert_eq!(
        health["provisioned"], false,
        "after a wipe /boot/config.toml is not replayed: {health}"
    );
    device.power_cut();

    // A USB stick with a seed: picked up on the next boot.
    let usb_admin = test_key(&device.dir, "usb-admin-key");
    let seed = test_config("qemu-from-usb", &usb_admin);
    device.plug_usb(&[("config.toml", seed.as_bytes())]);
    device.boot();
    wait_provisioned(&mut device);
    assert_eq!(device.ssh(&usb_admin, "hostname").trim(), "qemu-from-usb");
    let source = device.ssh(&usb_admin, "cat /data/config/current/source.json");
    assert!(source.contains("\"usb\""), "{source}");
}

#[test]
fn invalid_boot_seed_is_reported_and_the_console_opens() {
    let mut device = Device::flashed("invalid-boot-seed");
    // Line 4: not a valid host name.
    device.write_boot_config(
        "schema = 1\n\n[device]\nhostname = \"not_a_hostname!\"\n\n[admin]\nssh-authorized-keys = []\n",
    );
    device.boot();
    let health = device.wait_for_health(device.wan_port, BOOT);
    assert_eq!(health["provisioned"], false, "{health}");
    let error = &health["last_import_error"];
    assert!(
        error["location"]
            .as_str()
            .unwrap_or("")
            .ends_with("config.toml"),
        "{health}"
    );
    let hostname_error = error["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| e["path"] == "device.hostname")
        .unwrap_or_else(|| panic!("no device.hostname error: {health}"));
    assert_eq!(
        hostname_error["line"], 4,
        "the error names its line: {health}"
    );
    // The serial console shows the same diagnostic, with file, line and column.
    device.wait_for_console("config.toml:4:12: device.hostname", Duration::from_secs(60));
    let lan = device.wait_for_health(device.lan_port, Duration::from_secs(60));
    assert_eq!(lan["provisioned"], false, "{lan}");
}
