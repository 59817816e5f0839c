//! A fleet's updates from a real update server: goosebit (hawkBit's device API, DDI)
//! on the host, the device provisioned with `[update.hawkbit]` and its token. The device
//! registers with its attributes; a v2 assigned on the server is downloaded, installed,
//! booted, marked good and reported `success`; a v3 whose boots hang falls back to v2 by
//! itself (the mark-good deadline reboots two boots, the hardware watchdog resets the
//! third, whose kernel the test hangs in a panic) and is reported `failure`. After each
//! step the server's view of the device is checked against the device.

use std::time::{Duration, Instant};

use atomix_qemu_tests::update_server::UpdateServer;
use atomix_qemu_tests::updates::{slot_state, update_build_id};
use atomix_qemu_tests::{oci, test_config, test_key, Device, Qmp};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(400);
/// From the assignment on the server to the device's reboot: a poll (10 s), the
/// download of the bundle, the install.
const INSTALL: Duration = Duration::from_secs(900);
/// The mark-good stall time the hanging bundle sets (production: 15 min). Well above the
/// longest pause between two apply steps of a boot under TCG (about 20 s), so only the
/// hang trips it.
const STALL: &str = "60s";
/// How often the server tells devices to poll.
const POLL: &str = "00:00:10";
const CONTROLLER_ID: &str = "qemu-fleet";
/// The device's token on the server (goosebit keeps at most 32 characters).
const TOKEN: &str = "fleet-test-token-4c1d7e0b9a2f53";

/// Waits, in a boot of the hanging v3, for the apply to hang and for the mark-good
/// deadline to reboot the device (a reboot, not a crash or a power cut).
fn hang_then_deadline_reboot(device: &mut Device) {
    device.wait_for_console("failpoint mark-good=hang", BOOT);
    device.wait_for_console("mark-good deadline missed: slot A is not marked good", BOOT);
    // The hung service is killed rather than given its minute to end the apply.
    device.wait_for_console("first-boot.service killed", Duration::from_secs(60));
    device.step("waiting for the deadline's reboot");
    assert!(
        device.wait_for_power_off(Duration::from_secs(180)),
        "the device did not reboot within 180 s of the missed deadline"
    );
    let console = device.console();
    assert!(
        console.contains("reboot: Restarting system"),
        "the boot did not end in a reboot"
    );
    assert!(
        !console.contains("still running at exit"),
        "the reboot waited for the hung apply"
    );
}

/// Waits for the hawkBit client to install what the server assigned and reboot.
fn installed_then_reboot(device: &mut Device) {
    device.wait_for_console("hawkBit client: update installed, rebooting", INSTALL);
    device.step("waiting for the reboot after the install");
    assert!(
        device.wait_for_power_off(Duration::from_secs(180)),
        "the device did not reboot within 180 s of its install"
    );
}

/// `update_server` of the device's health.
fn update_server_health(device: &Device) -> Value {
    let (status, health) = device
        .get(device.lan_port, atomix_api::routes::HEALTH)
        .expect("GET /api/health");
    assert_eq!(status, 200, "{health}");
    health["update_server"].clone()
}

#[test]
fn a_fleet_update_from_goosebit_succeeds_and_a_hanging_one_falls_back_by_itself_and_is_reported() {
    let mut device = Device::flashed("fleet");
    let v1 = device.image.build_id().to_owned();
    let v2 = update_build_id(&v1, 2, None);
    // A v3 whose re-apply hangs at its last step (mark-good, so SSH is up in its boots),
    // with a short stall time: it must fall back with no power cycle from outside.
    let v3 = update_build_id(&v1, 3, Some("hang"));
    device.step("building the v2 bundle and the v3 bundle, whose re-apply hangs at mark-good");
    let bundle_v2 = device.image.update_bundle(&v2, &[]);
    let bundle_v3 = device.image.update_bundle(
        &v3,
        &[
            "systemd.setenv=ATOMIX_FAILPOINTS=mark-good=hang",
            &format!("systemd.setenv=ATOMIX_MARK_GOOD_STALL={STALL}"),
        ],
    );

    device.step("goosebit: a fresh server, the device created with its token");
    let server = UpdateServer::start(&device.dir.join("goosebit"), POLL);
    server.create_device(CONTROLLER_ID, TOKEN);
    let sw_v2 = server.upload(&bundle_v2);
    let sw_v3 = server.upload(&bundle_v3);

    // Provisioned from a boot bundle: the config names the server, the token is a file
    // of the bundle (never in the config itself); the controller id is the host name.
    let admin = test_key(&device.dir, "admin-key");
    let config = format!(
        "{}\n[update.hawkbit]\nurl = \"{}\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/hawkbit/token\"\ninsecure-http-token = true\n",
        test_config(CONTROLLER_ID, &admin),
        server.url_from_guest()
    );
    let seed = oci::bundle(
        &config,
        &[("apps/hawkbit/token", format!("{TOKEN}\n").as_bytes())],
    );
    device.write_boot_file("atomix-config.tar.gz", &seed);
    device.boot();
    device.wait_until_provisioned(BOOT);

    // Registered, with its attributes.
    device.step("goosebit: the device registers with its attributes");
    let seen = server.wait_for_device(CONTROLLER_ID, "registered", BOOT, |d| {
        d["last_state"] == "Registered" && d["sw_version"] == v1.as_str()
    });
    assert_eq!(seen["hardware"]["model"], "atomixos-rock64", "{seen}");
    assert_eq!(seen["hardware"]["revision"], "default", "{seen}");
    let health = update_server_health(&device);
    assert_eq!(health["url"], server.url_from_guest().as_str(), "{health}");
    assert_eq!(health["controller_id"], CONTROLLER_ID, "{health}");
    assert_eq!(health["last_poll"]["ok"], true, "{health}");
    // What an operator's atomixctl shows of it, from the LAN.
    let atomixctl = test_support::workspace_bin("atomixctl", "atomixctl");
    let status = atomix_qemu_tests::host(
        std::process::Command::new(atomixctl)
            .args(["status", "--device"])
            .arg(format!("http://127.0.0.1:{}", device.lan_port)),
    );
    assert!(
        status.contains(&format!(
            "update server: {} as {CONTROLLER_ID}",
            server.url_from_guest()
        )),
        "{status}"
    );

    // v2: assigned, downloaded, installed into B, booted, marked good, reported.
    device.step("goosebit: v2 assigned to the device");
    let assigned = Instant::now();
    server.assign(CONTROLLER_ID, sw_v2);
    server.wait_for_device(CONTROLLER_ID, "running the v2 deployment", INSTALL, |d| {
        d["last_state"] == "Running"
    });
    installed_then_reboot(&mut device);
    device.boot();
    device.wait_for_console(&format!("AtomixOS build {v2}"), BOOT);
    device.wait_for_console("AtomixOS: slot B chosen, tries left now A 3 B 2", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    assert_eq!(health["build_id"], v2.as_str(), "{health}");
    assert_eq!(health["slot"], "b", "{health}");
    device.step("goosebit: the v2 deployment reported a success");
    let seen = server.wait_for_device(CONTROLLER_ID, "reported success", BOOT, |d| {
        d["last_state"] == "Finished"
    });
    eprintln!(
        "[fleet] v2: from the assignment to the server's success {:.0} s",
        assigned.elapsed().as_secs_f64()
    );
    // The client's own account of this boot, for the run's log (when it polled, what it
    // told the server).
    let journal = device.ssh(
        &admin,
        "sudo journalctl -b --no-pager -o short-monotonic -u first-boot.service | grep -i -e hawkbit -e 'mark-good' || true",
    );
    eprintln!("[fleet] the device's journal of its v2 boot, hawkBit and mark-good:\n{journal}");
    assert_eq!(seen["sw_version"], v2.as_str(), "{seen}");
    assert_eq!(seen["progress"], 100, "{seen}");
    let log = server.device_log(CONTROLLER_ID);
    assert!(log.contains("marked good"), "{log}");
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3",
        "B marked good by its re-apply"
    );
    assert_eq!(
        device.ssh(&admin, "ls /data/config/generations").trim(),
        "1"
    );

    // v3: installed into A; its boots hang until its tries run out.
    device.step("goosebit: v3 (hangs at mark-good) assigned to the device");
    server.assign(CONTROLLER_ID, sw_v3);
    installed_then_reboot(&mut device);
    let first_a = Instant::now();

    // Boot 1 of A: the apply hangs, the deadline reboots.
    device.boot();
    device.wait_for_console(&format!("AtomixOS build {v3}"), BOOT);
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 2 B 3", BOOT);
    hang_then_deadline_reboot(&mut device);

    // Boot 2 of A: the kernel hangs hard, and only the i6300esb can end it.
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 1 B 3", BOOT);
    device.wait_for_console("failpoint mark-good=hang", BOOT);
    // Meanwhile the server is told nothing final: the new slot is not good, not bad yet.
    let seen = server.device(CONTROLLER_ID);
    assert_eq!(seen["last_state"], "Running", "{seen}");
    device.step("checking that systemd pets the hardware watchdog");
    let watchdog = device.ssh(
        &admin,
        "cat /sys/class/watchdog/watchdog0/identity /sys/class/watchdog/watchdog0/state /sys/class/watchdog/watchdog0/timeout",
    );
    assert_eq!(
        watchdog.lines().collect::<Vec<_>>(),
        ["i6300ESB timer", "active", "120"],
        "{watchdog}"
    );
    let journal = device.ssh(
        &admin,
        "sudo journalctl -b --no-pager -o short-monotonic | grep 'Using hardware watchdog'",
    );
    assert!(
        journal.lines().count() >= 2,
        "armed in the initrd and again in the root:\n{journal}"
    );
    // kernel.panic=0: the boot's panic=10 would restart the kernel by itself.
    assert_eq!(
        device
            .ssh(
                &admin,
                "sudo sysctl -w kernel.panic=0 >/dev/null && cat /proc/sys/kernel/panic"
            )
            .trim(),
        "0"
    );
    let mut qmp = Qmp::connect(&device.qmp_socket(), Duration::from_secs(30));
    // From a timer, so that SSH returns first rather than waiting on a dead connection.
    device.step("kernel panic through sysrq, from a timer in 2 s");
    device.ssh(
        &admin,
        "sudo systemd-run --quiet --on-active=2s /bin/sh -c 'echo c > /proc/sysrq-trigger'",
    );
    device.wait_for_console("Kernel panic - not syncing", Duration::from_secs(60));
    let panicked = Instant::now();
    device.step("waiting for the watchdog's reset");
    let event = qmp
        .wait_for_event("WATCHDOG", Duration::from_secs(180))
        .expect("no watchdog reset within 180 s of the panic");
    let panic_to_reset = panicked.elapsed();
    assert_eq!(event["action"], "reset", "{event}");
    assert!(
        device.wait_for_power_off(Duration::from_secs(60)),
        "QEMU did not end after the watchdog's reset"
    );
    let console = device.console();
    assert!(
        !console.contains("reboot: Restarting system")
            && !console.contains("mark-good deadline missed"),
        "the kernel restarted by itself: not the watchdog"
    );

    // Boot 3 of A: the last try, rebooted by the deadline again.
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 0 B 3", BOOT);
    hang_then_deadline_reboot(&mut device);

    // Back on B (v2), by itself, and the server told.
    device.boot();
    device.wait_for_console("AtomixOS: slot B chosen, tries left now A 0 B 2", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    let recovery = first_a.elapsed();
    eprintln!(
        "[fleet] hung update: from its first boot to slot B provisioned again {:.0} s (stall time {STALL}, 3 boots of A); hung kernel reset by the watchdog {:.0} s after its panic (RuntimeWatchdogSec=2min)",
        recovery.as_secs_f64(),
        panic_to_reset.as_secs_f64()
    );
    assert_eq!(health["build_id"], v2.as_str(), "{health}");
    assert_eq!(health["slot"], "b", "{health}");
    device.step("goosebit: the v3 deployment reported a failure");
    let seen = server.wait_for_device(CONTROLLER_ID, "reported failure", BOOT, |d| {
        d["last_state"] == "Error"
    });
    assert_eq!(seen["sw_version"], v2.as_str(), "{seen}");
    let log = server.device_log(CONTROLLER_ID);
    assert!(log.contains("did not become good"), "{log}");
    assert!(log.contains(&v2), "the failure names what runs: {log}");
    // What the server shows is what the device runs.
    assert_eq!(device.ssh(&admin, "hostname").trim(), CONTROLLER_ID);
    assert_eq!(
        device.ssh(&admin, "ls /data/config/generations").trim(),
        "1"
    );
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"A B\" BOOT_A_LEFT=0 BOOT_B_LEFT=3"
    );
    let good_a = device.ssh(
        &admin,
        "sudo atomix-provision slot rauc-backend get-state A",
    );
    assert_eq!(good_a.trim(), "bad");
    let health = update_server_health(&device);
    assert_eq!(
        health["action"],
        Value::Null,
        "the result was taken: {health}"
    );
}
