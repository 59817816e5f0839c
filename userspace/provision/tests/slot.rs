//! `atomix-provision slot`: RAUC's custom bootloader backend on a disk image file, driven
//! through the sequence RAUC runs for an install and a mark-good.

use std::path::Path;
use std::process::Command;

fn slot(disk: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .arg("slot")
        .arg("--disk")
        .arg(disk)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(disk: &Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = slot(disk, args);
    assert!(success, "slot {args:?}: {stderr}");
    stdout.trim().to_owned()
}

#[test]
fn rauc_install_then_mark_good_through_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();

    // A fresh disk: no valid copy, the factory state.
    let status = ok(&disk, &["status"]);
    assert!(status.contains("no valid copy"), "{status}");
    assert!(status.starts_with("BOOT_ORDER=\"A B\" BOOT_A_LEFT=3 BOOT_B_LEFT=3"));
    assert_eq!(ok(&disk, &["rauc-backend", "get-primary"]), "A");

    // `rauc install` to B: B bad while written, then primary.
    ok(&disk, &["rauc-backend", "set-state", "B", "bad"]);
    assert_eq!(ok(&disk, &["rauc-backend", "get-state", "B"]), "bad");
    ok(&disk, &["rauc-backend", "set-primary", "B"]);
    assert_eq!(ok(&disk, &["rauc-backend", "get-primary"]), "B");
    assert_eq!(ok(&disk, &["rauc-backend", "get-state", "B"]), "good");
    let status = ok(&disk, &["status"]);
    assert!(
        status.starts_with("BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3\nread from copy 0"),
        "{status}"
    );

    // Both copies hold it: wreck copy 0, copy 1 answers.
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&[0xff; 64], slot_state::copy_offset(0))
        .unwrap();
    let status = ok(&disk, &["status"]);
    assert!(status.contains("read from copy 1"), "{status}");

    // Bad input is refused with what was wrong, and changes nothing.
    let (success, _, stderr) = slot(&disk, &["rauc-backend", "set-state", "C", "good"]);
    assert!(!success);
    assert!(stderr.contains("\"C\" is not a slot (A or B)"), "{stderr}");
    let (success, _, stderr) = slot(&disk, &["rauc-backend", "set-state", "A", "fine"]);
    assert!(!success);
    assert!(stderr.contains("neither good nor bad"), "{stderr}");

    // Both marked bad: nothing to boot is an error for get-primary.
    ok(&disk, &["rauc-backend", "set-state", "A", "bad"]);
    ok(&disk, &["rauc-backend", "set-state", "B", "bad"]);
    let (success, _, stderr) = slot(&disk, &["rauc-backend", "get-primary"]);
    assert!(!success);
    assert!(stderr.contains("no slot has tries left"), "{stderr}");
}

#[test]
fn get_current_reads_the_kernel_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join("proc/cmdline"),
        "console=ttyAMA0 atomix.slot=b rauc.slot=B rootwait\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["slot", "--root"])
        .arg(dir.path())
        .args(["rauc-backend", "get-current"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "B\n");
    // Without a boot record and without --disk, the error says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["slot", "--root"])
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("give --disk"), "{stderr}");
}

/// A root for `slot wait-good`: booted from B, provisioned or not, and a disk whose state
/// is B first with `left` tries for A and B.
fn wait_good_root(provisioned: bool, left: [u8; 2]) -> (tempfile::TempDir, std::path::PathBuf) {
    use slot_state::{Slot, SlotState};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(root.join("proc/cmdline"), "atomix.slot=b rauc.slot=B\n").unwrap();
    std::fs::create_dir_all(root.join("data/config/generations/1")).unwrap();
    std::fs::create_dir_all(root.join("data/config/jobs")).unwrap();
    if provisioned {
        std::os::unix::fs::symlink("generations/1", root.join("data/config/current")).unwrap();
    }
    let disk = root.join("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(16 << 20).unwrap();
    let state = SlotState {
        order: vec![Slot::B, Slot::A],
        left,
    };
    slot_state::write(&f, &state).unwrap();
    (dir, disk)
}

fn wait_good(root: &Path, disk: &Path, stall: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atomix-provision"));
    cmd.args(["slot", "--root"])
        .arg(root)
        .arg("--disk")
        .arg(disk)
        .args(["wait-good", "--stall", stall])
        .env_remove("ATOMIX_MARK_GOOD_STALL");
    cmd
}

#[test]
fn wait_good_fails_only_when_a_provisioned_apply_stalls() {
    // Unprovisioned: no deadline, whatever the slot state.
    let (dir, disk) = wait_good_root(false, [3, 2]);
    let out = wait_good(dir.path(), &disk, "1s").output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("unprovisioned: no mark-good deadline"),
        "{stderr}"
    );

    // Provisioned, B marked good already (tries back to 3): met.
    let (dir, disk) = wait_good_root(true, [3, 3]);
    let out = wait_good(dir.path(), &disk, "1s").output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("deadline met: slot B is marked good"),
        "{stderr}"
    );

    // Provisioned, B never marked good, no job moving: missed, exit 1.
    let (dir, disk) = wait_good_root(true, [3, 2]);
    let started = std::time::Instant::now();
    let out = wait_good(dir.path(), &disk, "1s").output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deadline missed: slot B is not marked good"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // Not booted through the AtomixOS initrd (no boot record, no --disk): said, and no
    // failure (a failure reboots).
    let out = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["slot", "--root"])
        .arg(dir.path())
        .args(["wait-good", "--stall", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no mark-good deadline: ") && stderr.contains("boot.json is missing"),
        "{stderr}"
    );
}

#[test]
fn wait_good_lets_a_slow_apply_that_makes_progress_finish() {
    use std::time::Duration;
    let (dir, disk) = wait_good_root(true, [3, 2]);
    let mut child = wait_good(dir.path(), &disk, "5s").spawn().unwrap();
    // A job that writes an event every second for 12 s (more than twice the stall time),
    // then marks the slot good.
    let job = dir.path().join("data/config/jobs/0123abcd.json");
    for i in 0..12 {
        std::fs::write(&job, format!("{{\"events\": {i}}}")).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            child.try_wait().unwrap().is_none(),
            "wait-good gave up on an apply that was moving"
        );
    }
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    let good = slot_state::SlotState {
        order: vec![slot_state::Slot::B, slot_state::Slot::A],
        left: [3, 3],
    };
    slot_state::write(&f, &good).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
