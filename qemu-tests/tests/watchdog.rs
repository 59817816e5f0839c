//! Hangs reset the board: an update whose boot hangs before mark-good is rebooted by the
//! mark-good deadline until its tries run out and the device is back on the previous
//! slot; a hung kernel is reset by the hardware watchdog (QEMU's i6300esb, armed by
//! systemd from the initrd on).

use std::path::Path;
use std::time::{Duration, Instant};

use atomix_qemu_tests::updates::FileServer;
use atomix_qemu_tests::{test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);
/// The stall time the test bundle sets (production: 15 min).
const STALL: &str = "60s";

/// `atomix-provision slot status`, first line: the order and tries left.
fn slot_state(device: &Device, admin: &Path) -> String {
    let status = device.ssh(admin, "sudo atomix-provision slot status");
    status.lines().next().unwrap_or_default().to_owned()
}

/// Waits for the boot to hang at the failpoint and for the deadline to reboot the
/// device; the console of that boot.
fn hang_then_deadline_reboot(device: &mut Device) -> String {
    device.wait_for_console("failpoint firewall=hang", BOOT);
    device.wait_for_console("mark-good deadline missed: slot B is not marked good", BOOT);
    device.step("waiting for the deadline's reboot");
    assert!(
        device.wait_for_power_off(Duration::from_secs(180)),
        "the device did not reboot within 180 s of the missed deadline"
    );
    device.console()
}

#[test]
fn a_hung_update_is_rebooted_until_it_falls_back_and_a_hung_kernel_is_reset_by_the_watchdog() {
    let name = "watchdog-hang";
    let mut device = Device::flashed(name);
    let admin = test_key(&device.dir, "admin-key");
    device.write_boot_config(&test_config(&format!("qemu-{name}"), &admin));
    device.boot();
    device.wait_until_provisioned(BOOT);
    let v1 = device.image.build_id().to_owned();

    // systemd uses the hardware watchdog, the initrd's as well as the root's.
    device.step("checking that systemd pets the hardware watchdog");
    let state = device.ssh(
        &admin,
        "cat /sys/class/watchdog/watchdog0/identity /sys/class/watchdog/watchdog0/state /sys/class/watchdog/watchdog0/timeout",
    );
    assert_eq!(
        state.lines().collect::<Vec<_>>(),
        ["i6300ESB timer", "active", "30"],
        "{state}"
    );
    let journal = device.ssh(
        &admin,
        "sudo journalctl -b --no-pager -o short-monotonic | grep -i 'hardware watchdog\\|watchdog running'",
    );
    eprintln!("PID 1 on the watchdog:\n{journal}");
    assert!(
        journal.matches("Using hardware watchdog").count() >= 2,
        "armed in the initrd and again in the root:\n{journal}"
    );
    // This boot started unprovisioned (the seed was imported during it): no deadline,
    // however long the console could have waited.
    let deadline = device.ssh(
        &admin,
        "systemctl show -p ConditionResult -p ActiveState atomix-mark-good-deadline.service",
    );
    assert!(
        deadline.contains("ConditionResult=no"),
        "the deadline must not watch a boot that started unprovisioned:\n{deadline}"
    );

    let v3 = format!("{v1}-v3-hang");
    device.step("building the v3 bundle, whose re-apply hangs at the firewall step");
    let bundle = device.image.update_bundle(
        &v3,
        &[
            "systemd.setenv=ATOMIX_FAILPOINTS=firewall=hang",
            &format!("systemd.setenv=ATOMIX_MARK_GOOD_STALL={STALL}"),
        ],
    );
    let server = FileServer::serve(&bundle);
    let url = server.url("atomixos-rock64.raucb");
    device.step(&format!("rauc install {url}"));
    let out = device.ssh(&admin, &format!("sudo rauc install {url} 2>&1; echo rc=$?"));
    assert!(
        out.trim_end().ends_with("rc=0"),
        "rauc install failed:\n{out}"
    );

    // Boot 1 of v3 hangs; nothing but the deadline ends it, and each boot of B costs a try.
    device.reboot(&admin);
    device.wait_for_console(&format!("AtomixOS build {v3}"), BOOT);
    device.wait_for_console("AtomixOS: slot B chosen, tries left now A 3 B 2", BOOT);
    device.wait_for_console("failpoint firewall=hang", BOOT);
    let hung = Instant::now();
    let console = hang_then_deadline_reboot(&mut device);
    assert!(
        console.contains("reboot: Restarting system"),
        "a reboot, not a crash"
    );
    for left in ["1", "0"] {
        device.boot();
        device.wait_for_console(
            &format!("AtomixOS: slot B chosen, tries left now A 3 B {left}"),
            BOOT,
        );
        hang_then_deadline_reboot(&mut device);
    }
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 2 B 0", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    let recovery = hung.elapsed();
    eprintln!(
        "[{name}] from the first hang to the device provisioned on slot A again: {:.0} s (stall time {STALL}, 3 boots of B)",
        recovery.as_secs_f64()
    );
    assert_eq!(health["build_id"], v1.as_str(), "{health}");
    assert_eq!(health["slot"], "a", "{health}");
    // Its data came along: the same config generation, re-applied.
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-watchdog-hang");
    assert_eq!(
        device.ssh(&admin, "ls /data/config/generations").trim(),
        "1"
    );
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=0"
    );
    let state_b = device.ssh(
        &admin,
        "sudo atomix-provision slot rauc-backend get-state B",
    );
    assert_eq!(state_b.trim(), "bad");

    // A hung kernel: a panic that the kernel does not end itself (kernel.panic=0; the
    // boot's panic=10 would restart it) leaves nothing petting the watchdog, and only
    // the i6300esb can end this QEMU.
    assert_eq!(
        device
            .ssh(
                &admin,
                "sudo sysctl -w kernel.panic=0 >/dev/null; cat /proc/sys/kernel/panic"
            )
            .trim(),
        "0",
        "the kernel would restart itself after a panic"
    );
    // From a timer, so that SSH returns first rather than waiting on a dead connection.
    device.step("kernel panic through sysrq, in 2 s");
    device.ssh(
        &admin,
        "sudo systemd-run --quiet --on-active=2s /bin/sh -c 'echo c > /proc/sysrq-trigger'",
    );
    let panicked = Instant::now() + Duration::from_secs(2);
    assert!(
        device.wait_for_power_off(Duration::from_secs(180)),
        "the watchdog did not reset the hung kernel within 180 s"
    );
    let reset = panicked.elapsed();
    let console = device.console();
    assert!(console.contains("Kernel panic"), "no panic on the console");
    assert!(
        !console.contains("reboot: Restarting system"),
        "the kernel restarted by itself: not the watchdog"
    );
    eprintln!(
        "[{name}] hung kernel reset by the watchdog after {:.0} s (RuntimeWatchdogSec=30s)",
        reset.as_secs_f64()
    );
    // And the reset counts a try like any boot.
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 2 B 0", BOOT);
}
