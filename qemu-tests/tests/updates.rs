//! A/B updates over the air: a RAUC bundle streamed from the host, the slot it went to
//! booted and marked good; a bad update falling back to the previous slot by itself once
//! its tries run out; a power cut during the install.

use std::path::Path;
use std::time::Duration;

use atomix_qemu_tests::updates::FileServer;
use atomix_qemu_tests::{test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);
const INSTALL: Duration = Duration::from_secs(900);

/// A device flashed with the image under test, provisioned from `/boot/config.toml`
/// (the test config and `extra`).
fn provisioned(name: &str, extra: &str) -> (Device, std::path::PathBuf) {
    let mut device = Device::flashed(name);
    let admin = test_key(&device.dir, "admin-key");
    let config = format!("{}{extra}", test_config(&format!("qemu-{name}"), &admin));
    device.write_boot_config(&config);
    device.boot();
    device.wait_until_provisioned(BOOT);
    (device, admin)
}

/// `atomix-provision slot status`, first line: the order and tries left.
fn slot_state(device: &Device, admin: &Path) -> String {
    let status = device.ssh(admin, "sudo atomix-provision slot status");
    status.lines().next().unwrap_or_default().to_owned()
}

/// Starts `atomix-update.service` (what the timer starts) and waits for it; its journal
/// on failure.
fn start_update_service(device: &mut Device, admin: &Path) {
    device.step("systemctl start atomix-update.service");
    if device
        .ssh_unchecked(
            admin,
            "sudo systemctl start atomix-update.service && echo started",
        )
        .is_none_or(|out| !out.contains("started"))
    {
        let log = device
            .ssh_unchecked(
                admin,
                "sudo journalctl -b --no-pager -u atomix-update.service",
            )
            .unwrap_or_default();
        panic!("atomix-update.service failed:\n{log}");
    }
}

/// `rauc install URL` on the device, with its output on failure.
fn rauc_install(device: &mut Device, admin: &Path, url: &str) {
    device.step(&format!("rauc install {url}"));
    let out = device.ssh(admin, &format!("sudo rauc install {url} 2>&1; echo rc=$?"));
    assert!(
        out.trim_end().ends_with("rc=0"),
        "rauc install failed:\n{out}"
    );
}

#[test]
fn an_update_streamed_from_the_host_boots_slot_b_and_is_marked_good() {
    let image = atomix_qemu_tests::Image::built();
    let v1 = image.build_id().to_owned();
    let v2 = format!("{v1}-v2");
    eprintln!("building the v2 bundle");
    let bundle = image.update_bundle(&v2, &[]);
    let server = FileServer::serve(&bundle);
    // The update timer of the config, pointed at the host.
    let update = format!(
        "\n[update]\nrauc = true\nurl = \"{}\"\ninterval = \"1d\"\n",
        server.url("atomixos-rock64.raucb")
    );
    let (mut device, admin) = provisioned("update-v2", &update);

    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"A B\" BOOT_A_LEFT=3 BOOT_B_LEFT=3",
        "slot A marked good by the first boot's apply"
    );
    assert_eq!(
        device
            .ssh(&admin, "systemctl is-enabled atomix-update.timer")
            .trim(),
        "enabled"
    );
    // What the timer would start, now rather than in 5 minutes.
    start_update_service(&mut device, &admin);
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3",
        "B primary after the install"
    );

    device.reboot(&admin);
    device.wait_for_console(&format!("AtomixOS build {v2}"), BOOT);
    device.wait_for_console("AtomixOS: slot B chosen, tries left now A 3 B 2", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    assert_eq!(health["build_id"], v2.as_str(), "{health}");
    assert_eq!(health["slot"], "b", "{health}");
    let os_release = device.ssh(&admin, "cat /etc/os-release");
    assert!(os_release.contains(&v2), "{os_release}");
    // /data came along: the same generation, re-applied.
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-update-v2");
    assert_eq!(
        device.ssh(&admin, "ls /data/config/generations").trim(),
        "1"
    );
    assert!(device
        .ssh(&admin, "ip -4 -o addr show dev eth1")
        .contains("192.168.100.1/24"));
    // Marked good by the re-apply: B's tries are full again.
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3"
    );
    let rauc = device.ssh(&admin, "sudo rauc status --detailed");
    assert!(rauc.contains("Booted from: rootfs.1 (B)"), "{rauc}");

    // The timer firing again finds the build running and installs nothing.
    start_update_service(&mut device, &admin);
    let log = device.ssh(
        &admin,
        "sudo journalctl -b --no-pager -u atomix-update.service",
    );
    assert!(
        log.contains(&format!("not installed: build {v2} is the running one")),
        "{log}"
    );
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3"
    );
}

#[test]
fn an_update_that_never_gets_marked_good_falls_back_to_the_previous_slot() {
    let (mut device, admin) = provisioned("update-bad", "");
    let v1 = device.image.build_id().to_owned();
    let v3 = format!("{v1}-v3-bad");
    device.step("building the v3 bundle, whose re-apply fails at the firewall step");
    let bundle = device
        .image
        .update_bundle(&v3, &["systemd.setenv=ATOMIX_FAILPOINTS=firewall=error"]);
    let server = FileServer::serve(&bundle);
    rauc_install(&mut device, &admin, &server.url("atomixos-rock64.raucb"));

    // Boot 1 of v3: the re-apply fails, the slot is not marked good.
    device.reboot(&admin);
    device.wait_for_console(&format!("AtomixOS build {v3}"), BOOT);
    device.wait_for_console(
        "re-applying generation 1 failed: the slot is not marked good",
        BOOT,
    );
    // Power cycles (a watchdog, an operator): each boot of B costs a try.
    for left in ["1", "0"] {
        device.power_cut();
        device.boot();
        device.wait_for_console(
            &format!("AtomixOS: slot B chosen, tries left now A 3 B {left}"),
            BOOT,
        );
    }
    device.power_cut();
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 2 B 0", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    assert_eq!(health["build_id"], v1.as_str(), "{health}");
    assert_eq!(health["slot"], "a", "{health}");
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-update-bad");
    // A marked good again by its re-apply; B stays out of the way.
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=0"
    );
    let good_b = device.ssh(
        &admin,
        "sudo atomix-provision slot rauc-backend get-state B",
    );
    assert_eq!(good_b.trim(), "bad");
}

#[test]
fn a_power_cut_during_the_install_leaves_the_old_slot_booting() {
    let (mut device, admin) = provisioned("update-cut", "");
    let v1 = device.image.build_id().to_owned();
    let v2 = format!("{v1}-v2");
    let bundle = device.image.update_bundle(&v2, &[]);

    device.step("POST /api/update signed by the admin key, power cut once it writes slot B");
    let body = std::fs::read(&bundle).unwrap();
    let (status, reply) = device
        .signed_post(
            device.lan_port,
            "/api/update",
            "application/octet-stream",
            &body,
            &admin,
        )
        .expect("POST /api/update");
    assert_eq!(status, 202, "{reply}");
    let deadline = std::time::Instant::now() + INSTALL;
    loop {
        let log = device
            .ssh_unchecked(
                &admin,
                "sudo journalctl -b --no-pager -u rauc.service -u atomix-test-install.service",
            )
            .unwrap_or_default();
        // RAUC logs each slot device as it starts writing it (boot-b, then rootfs-b).
        if log.contains("opening slot device") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the install never started writing slot B:\n{log}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    device.power_cut();

    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    assert_eq!(health["build_id"], v1.as_str(), "{health}");
    assert_eq!(health["slot"], "a", "{health}");
    let state = slot_state(&device, &admin);
    assert!(
        state.starts_with("BOOT_ORDER=\"A\""),
        "B marked bad before it was written, never made primary: {state}"
    );
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-update-cut");
}

#[test]
fn an_unprovisioned_device_never_walks_onto_the_empty_slot() {
    // Nothing marks slot A good while the device waits unprovisioned: its tries run out
    // boot after boot, and slot B (created empty by the first boot) must never be taken.
    let mut device = Device::flashed("unprovisioned-tries");
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 2 B 3", BOOT);
    device.wait_for_health(device.wan_port, BOOT);
    for expected in [
        "AtomixOS: slot A chosen, tries left now A 1 B 3",
        "AtomixOS: slot A chosen, tries left now A 0 B 3",
        "AtomixOS: slot A chosen, tries left now A 2 B 3",
    ] {
        device.power_cut();
        device.boot();
        let console = device.wait_for_console(expected, BOOT);
        assert!(!console.contains("slot B chosen"), "{console}");
    }
    let console = device.console();
    assert!(
        console.contains("has tries left and a kernel: tries reset to 3"),
        "{console}"
    );
    // And the device still comes up into the console.
    let health = device.wait_for_health(device.wan_port, BOOT);
    assert_eq!(health["slot"], "a", "{health}");
    assert_eq!(health["provisioned"], false, "{health}");
}
