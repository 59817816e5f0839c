//! USB recovery (boot.scr): the recovery button held from power-on for 5 s makes U-Boot
//! expose the whole disk over USB (`ums`) instead of booting. Under QEMU, virt's GPIO power
//! key stands in for the Rock64's Recovery key: `system_powerdown` raises it for 100 ms, so
//! pressing it every 20 ms holds it. QEMU has no USB device controller, so `ums` fails:
//! the test checks that U-Boot announced recovery, tried `ums` on the disk, and never
//! started Linux.

use std::time::{Duration, Instant};

use atomix_qemu_tests::Device;

/// What boot.scr prints once the button was held through the 5 s.
const RECOVERY: &str = "AtomixOS: USB recovery mode: virtio 0 is exposed over USB";

#[test]
fn holding_the_recovery_button_from_power_on_enters_usb_recovery_instead_of_booting() {
    let mut dev = Device::flashed("recovery-held");
    let mut qmp = dev.boot_paused();
    dev.step("holding the recovery button (virt's power key) from power-on");
    qmp.execute("system_powerdown");
    qmp.execute("cont");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if dev.console().contains(RECOVERY) {
            break;
        }
        if Instant::now() > deadline {
            panic!("no {RECOVERY:?} within 300 s of holding the button");
        }
        // QEMU ends when U-Boot resets (-no-reboot): the console says why.
        if qmp.try_execute("system_powerdown").is_err() || dev.exited() {
            panic!("QEMU ended while the button was held, before {RECOVERY:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(qmp);
    dev.step("button released; waiting for ums to fail and U-Boot to reset");
    assert!(
        dev.wait_for_power_off(Duration::from_secs(120)),
        "U-Boot did not reset after ums"
    );
    let console = dev.console();
    for needle in [
        "AtomixOS: recovery button held; keep holding 5 s for USB mass storage mode",
        "AtomixOS: recovery in 5/5",
        RECOVERY,
        // `ums` ran on the disk U-Boot booted from, and found no USB device controller.
        "UMS: LUN 0, dev virtio 0",
        "AtomixOS: USB recovery failed: ums could not expose virtio 0",
        "resetting ...",
    ] {
        assert!(console.contains(needle), "no {needle:?} on the console");
    }
    for never in [
        "AtomixOS: slot state",
        "AtomixOS: booting slot",
        "Starting kernel",
    ] {
        assert!(
            !console.contains(never),
            "{never:?} on the console: the held button did not stop the boot"
        );
    }
}

#[test]
fn without_the_button_held_the_device_boots_linux() {
    let mut dev = Device::flashed("recovery-not-held");
    dev.boot();
    let console = dev.wait_for_console("Starting kernel", Duration::from_secs(300));
    assert!(
        console.contains("AtomixOS: booting slot a"),
        "U-Boot did not boot slot A"
    );
    assert!(
        !console.contains("recovery button held"),
        "U-Boot saw the recovery button held though nothing pressed it"
    );
    dev.power_cut();
}
