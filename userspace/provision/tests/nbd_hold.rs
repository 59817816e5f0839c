//! `atomix-provision nbd-hold`, as udev runs it, against a fake `sys/` and `proc/`: it
//! returns when dm claims the device, logs the hold to the kernel log, and always exits 0.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn nbd_hold(root: &Path, name: &str, limit: u64) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["nbd-hold", name, "--limit", &limit.to_string()])
        .arg("--root")
        .arg(root)
        .arg("--kmsg")
        .arg(root.join("kmsg"))
        .output()
        .unwrap()
}

fn kmsg(root: &Path) -> String {
    std::fs::read_to_string(root.join("kmsg")).unwrap_or_default()
}

/// `nbd0` connected by task 4242, which is alive.
fn connected(root: &Path) {
    let dev = root.join("sys/block/nbd0");
    std::fs::create_dir_all(dev.join("holders")).unwrap();
    std::fs::write(dev.join("pid"), "4242\n").unwrap();
    std::fs::create_dir_all(root.join("proc/4242")).unwrap();
    std::fs::write(root.join("kmsg"), "").unwrap();
}

#[test]
fn a_partition_event_holds_the_disk_until_dm_claims_it() {
    let dir = tempfile::tempdir().unwrap();
    connected(dir.path());
    let holder = dir.path().join("sys/block/nbd0/holders/dm-3");
    let claim = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::create_dir_all(holder).unwrap();
    });
    let started = Instant::now();
    let out = nbd_hold(dir.path(), "nbd0p1", 30);
    claim.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let log = kmsg(dir.path());
    assert!(
        log.starts_with("<6>atomix-provision: nbd-hold: kept udev's reference to nbd0 for ")
            && log.trim_end().ends_with("ms, until dm-3 holds it"),
        "{log}"
    );
}

#[test]
fn idle_devices_and_other_names_pass_at_once_and_a_stuck_one_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys/block/nbd1")).unwrap();
    std::fs::write(dir.path().join("kmsg"), "").unwrap();
    let out = nbd_hold(dir.path(), "nbd1", 30);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(kmsg(dir.path()), "", "nothing held, nothing logged");

    let out = nbd_hold(dir.path(), "sda", 30);
    assert!(out.status.success(), "{out:?}");
    assert!(
        kmsg(dir.path()).contains("\"sda\" is not an NBD device name"),
        "{}",
        kmsg(dir.path())
    );

    connected(dir.path());
    let started = Instant::now();
    let out = nbd_hold(dir.path(), "nbd0", 1);
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let log = kmsg(dir.path());
    assert!(
        log.starts_with("<4>atomix-provision: nbd-hold: ")
            && log.contains("nbd0 is still connected and nothing holds it after 1 s"),
        "{log}"
    );
}
