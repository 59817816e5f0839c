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
