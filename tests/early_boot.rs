//! Privileged integration tests of `atomix-initrd setup`: a real GPT disk image on a loop
//! device (boot-a, rootfs-a squashfs with known files), the real sequence run inside a
//! private mount namespace (`unshare -m`) with `--root` in a temporary directory, and the
//! results checked with findmnt, sfdisk, blkid and fsck.
//!
//! Needs root, loop devices, squashfs-tools, dosfstools, f2fs-tools, e2fsprogs and
//! systemd-repart: `scripts/setup-host.sh` installs them. The host kernel cannot mount f2fs
//! nor FAT, so the full sequence runs with a copy of `repart.d/` that formats `data` as
//! ext4, and boot-a is ext4 too (on a device it is FAT: the QEMU boot tests mount it); the
//! real definitions are checked up to formatting (`--stage pre-sysroot`) with fsck.f2fs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_atomix-initrd");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BUILD_ID: &str = "test-20261127";

fn require_root() {
    if sh("id -u").trim() != "0" {
        panic!("these tests need root (loop devices, mounts): run them through scripts/test.sh");
    }
}

/// Runs a command, panicking with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/setup-host.sh)"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn sh(script: &str) -> String {
    String::from_utf8(run(Command::new("sh").arg("-euc").arg(script)).stdout).unwrap()
}

/// A flashed disk image attached to a loop device; detached (and checked) on drop.
struct TestDisk {
    dir: tempfile::TempDir,
    image: PathBuf,
    loopdev: String,
    rootfs_partuuid: String,
}

impl TestDisk {
    /// A disk as the image builder writes it: boot-a and rootfs-a, sized from repart.d.
    fn flashed() -> TestDisk {
        require_root();
        let layout = disk_layout::Layout::read(&Path::new(REPO).join("repart.d")).unwrap();
        let size = |label| layout.get(label).unwrap().fixed_size_bytes().unwrap() >> 20;
        let dir = tempfile::Builder::new()
            .prefix("atomix-initrd-test")
            .tempdir()
            .unwrap();
        let image = dir.path().join("disk.img");
        run(Command::new("truncate").args(["-s", "3G"]).arg(&image));
        let script = format!(
            "label: gpt\nfirst-lba: {}\n\
             size={}MiB, type={}, name=\"boot-a\", attrs=\"LegacyBIOSBootable\"\n\
             size={}MiB, type={}, name=\"rootfs-a\"\n",
            disk_layout::FIRST_USABLE_LBA,
            size("boot-a"),
            disk_layout::type_guid("xbootldr").unwrap(),
            size("rootfs-a"),
            disk_layout::type_guid("root-arm64").unwrap(),
        );
        let mut child = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&image)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "sfdisk failed");

        // The root filesystem: a squashfs with known files.
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::create_dir_all(tree.join("data")).unwrap();
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::write(tree.join("etc/os-release"), "ID=atomixos\nBUILD_ID=test\n").unwrap();
        fs::write(tree.join("etc/hostname"), "from-squashfs\n").unwrap();
        let squashfs = dir.path().join("rootfs.squashfs");
        run(Command::new("mksquashfs").arg(&tree).arg(&squashfs).args([
            "-comp",
            "zstd",
            "-quiet",
            "-noappend",
        ]));

        let loopdev = String::from_utf8(
            run(Command::new("losetup")
                .args(["--find", "--show", "--partscan"])
                .arg(&image))
            .stdout,
        )
        .unwrap()
        .trim()
        .to_owned();
        let mut disk = TestDisk {
            rootfs_partuuid: String::new(),
            dir,
            image,
            loopdev,
        };
        // The host kernel may lack GPT parsing (CONFIG_EFI_PARTITION): tell it the
        // partitions explicitly, as systemd-repart does for the ones it adds.
        run(Command::new("partx").arg("--update").arg(&disk.loopdev));
        disk.wait_for_node(1);
        disk.wait_for_node(2);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-L", "boot-a"])
            .arg(disk.part(1)));
        run(Command::new("dd")
            .arg(format!("if={}", squashfs.display()))
            .arg(format!("of={}", disk.part(2)))
            .args(["bs=1M", "conv=fsync", "status=none"]));
        let partuuid = disk.table()["partitiontable"]["partitions"][1]["uuid"]
            .as_str()
            .unwrap()
            .to_lowercase();
        disk.rootfs_partuuid = partuuid;
        disk
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.loopdev)
    }

    fn wait_for_node(&self, n: u32) {
        for _ in 0..100 {
            if Path::new(&self.part(n)).exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{} did not appear", self.part(n));
    }

    fn table(&self) -> Value {
        let out = run(Command::new("sfdisk").arg("--json").arg(&self.loopdev));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn labels(&self) -> Vec<String> {
        self.table()["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn data_partition(&self) -> String {
        let n = self
            .labels()
            .iter()
            .position(|l| l == "data")
            .expect("data partition")
            + 1;
        self.part(n as u32)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cmdline(&self) -> PathBuf {
        let path = self.dir.path().join("cmdline");
        fs::write(
            &path,
            format!(
                "console=ttyAMA0 atomix.slot=a atomix.root=PARTUUID={} rauc.slot=A atomix.build={BUILD_ID}\n",
                self.rootfs_partuuid
            ),
        )
        .unwrap();
        path
    }

    /// Runs `atomix-initrd setup` in a private mount namespace, then `inspect` (shell)
    /// inside the same namespace while the mounts exist. Returns the raw output; the
    /// namespace, and with it every mount, is gone afterwards.
    fn setup_in_namespace(
        &self,
        defs: &Path,
        extra: &[&str],
        failpoint: &str,
        inspect: &str,
    ) -> Output {
        let root = self.root();
        fs::create_dir_all(&root).unwrap();
        let script = format!(
            "{bin} --kmsg {kmsg} setup --cmdline {cmdline} --root {root} --repart-dir {defs} --device-timeout 5 {extra}\n{inspect}",
            bin = BIN,
            kmsg = self.dir.path().join("kmsg.log").display(),
            cmdline = self.cmdline().display(),
            root = root.display(),
            defs = defs.display(),
            extra = extra.join(" "),
        );
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-euc", &script])
            .env("ATOMIX_FAILPOINTS", failpoint)
            .output()
            .unwrap()
    }

    /// A setup run that must succeed.
    fn setup_ok(&self, defs: &Path, inspect: &str) -> String {
        let out = self.setup_in_namespace(defs, &[], "", inspect);
        assert!(
            out.status.success(),
            "setup failed: {}\nstderr:\n{}\nkmsg:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.kmsg()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `atomix-initrd plan`: what setup would decide for the disk as it is now.
    fn plan(&self, defs: &Path) -> String {
        let out = run(Command::new(BIN)
            .args([
                "--kmsg",
                "/dev/null",
                "plan",
                "--device-timeout",
                "5",
                "--cmdline",
            ])
            .arg(self.cmdline())
            .arg("--root")
            .arg(self.root())
            .arg("--repart-dir")
            .arg(defs));
        String::from_utf8(out.stdout).unwrap()
    }

    fn kmsg(&self) -> String {
        fs::read_to_string(self.dir.path().join("kmsg.log")).unwrap_or_default()
    }

    /// Mounts the data partition (ext4 in these tests) read-only and returns a file's text.
    fn read_from_data(&self, rel: &str) -> Option<String> {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-euc"])
            .arg(format!(
                "m=$(mktemp -d); mount -o ro {} $m; cat $m/{rel} 2>/dev/null || true",
                self.data_partition()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        (!text.is_empty()).then_some(text)
    }
}

impl Drop for TestDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
        if std::thread::panicking() {
            return;
        }
        // Nothing may be left attached to the image (repart's own loop devices included)
        // or mounted under the test directory.
        let attached = sh(&format!("losetup -j {} || true", self.image.display()));
        assert!(attached.trim().is_empty(), "still attached: {attached}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().display().to_string();
        assert!(
            !mounts.contains(&dir),
            "still mounted under {dir}:\n{mounts}"
        );
    }
}

/// A copy of repart.d whose data partition is ext4, which the host kernel can mount.
fn ext4_definitions(dir: &Path) -> PathBuf {
    let defs = dir.join("repart.d-ext4");
    fs::create_dir_all(&defs).unwrap();
    for entry in fs::read_dir(Path::new(REPO).join("repart.d")).unwrap() {
        let entry = entry.unwrap();
        let text = fs::read_to_string(entry.path()).unwrap();
        fs::write(
            defs.join(entry.file_name()),
            text.replace("Format=f2fs", "Format=ext4"),
        )
        .unwrap();
    }
    defs
}

fn real_definitions() -> PathBuf {
    Path::new(REPO).join("repart.d")
}

/// Mounts under the test root, as (target relative to root, fstype, source, options).
const FINDMNT: &str = "findmnt --json --list --output TARGET,FSTYPE,SOURCE,OPTIONS";

fn mounts_under(findmnt_json: &str, root: &Path) -> Vec<(String, String, String, String)> {
    let v: Value = serde_json::from_str(findmnt_json).unwrap();
    let prefix = root.display().to_string();
    v["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let target = m["target"].as_str()?;
            let rel = target.strip_prefix(&prefix)?;
            Some((
                rel.to_owned(),
                m["fstype"].as_str()?.to_owned(),
                m["source"].as_str().unwrap_or("").to_owned(),
                m["options"].as_str().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

fn boot_record(json: &str) -> boot_state::BootRecord {
    boot_state::parse_record(json).unwrap_or_else(|e| panic!("boot.json: {e}\n{json}"))
}

#[test]
fn fresh_flash_then_next_boot() {
    let disk = TestDisk::flashed();
    let defs = ext4_definitions(disk.dir.path());
    let root = disk.root();
    let inspect = format!(
        "{FINDMNT}\necho '---'\n\
         echo written > {root}/sysroot/probe-write\n\
         ls {root}/run/overlay-root/upper\n\
         cat {root}/sysroot/etc/hostname\n\
         echo '---'\ncat {root}/run/atomix/boot.json\n\
         echo '---'\ncat {root}/sysroot/data/atomix/fresh-flash",
        root = root.display()
    );
    let out = disk.setup_ok(&defs, &inspect);
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 4, "{out}");

    // Mounts: squashfs read-only, tmpfs, the overlay over both, data.
    let mounts = mounts_under(parts[0], &root);
    let find = |target: &str| {
        mounts
            .iter()
            .find(|m| m.0 == target)
            .unwrap_or_else(|| panic!("nothing mounted at {target}: {mounts:?}"))
    };
    let base = find("/run/rootfs-base");
    assert_eq!(base.1, "squashfs");
    assert_eq!(base.2, disk.part(2));
    assert!(base.3.split(',').any(|o| o == "ro"), "{base:?}");
    assert_eq!(find("/run/overlay-root").1, "tmpfs");
    let sysroot = find("/sysroot");
    assert_eq!(sysroot.1, "overlay");
    for option in [
        format!("lowerdir={}/run/rootfs-base", root.display()),
        format!("upperdir={}/run/overlay-root/upper", root.display()),
        format!("workdir={}/run/overlay-root/work", root.display()),
    ] {
        assert!(sysroot.3.contains(&option), "{option} not in {}", sysroot.3);
    }
    let data = find("/sysroot/data");
    assert_eq!(data.1, "ext4");
    assert_eq!(data.2, disk.part(5));
    let boot = find("/sysroot/boot");
    assert_eq!(boot.1, "ext4", "the host kernel's stand-in for FAT");
    assert_eq!(boot.2, disk.part(1), "the booted slot's boot partition");

    // A write to / lands in the tmpfs upper; the squashfs shows through.
    assert_eq!(
        parts[1], "probe-write\nfrom-squashfs\n",
        "upper holds exactly the new file"
    );

    // The boot record.
    let record = boot_record(parts[2]);
    assert!(record.fresh_flash);
    assert_eq!(record.slot, boot_state::Slot::A);
    assert_eq!(record.build_id.as_deref(), Some(BUILD_ID));
    assert_eq!(record.root_partuuid, disk.rootfs_partuuid);
    assert_eq!(record.root_device, disk.part(2));
    assert_eq!(record.disk, disk.loopdev);
    assert_eq!(record.boot_device, Some(disk.part(1)));
    assert_eq!(record.partitions_created, ["boot-b", "rootfs-b", "data"]);
    assert!(!record.data_formatted);
    let steps: Vec<_> = record.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "resolve-root",
            "read-partition-table",
            "probe-data",
            "mount-rootfs",
            "mount-overlay-tmpfs",
            "repart",
            "mount-sysroot",
            "mount-data",
            "mount-boot",
            "fresh-flash-marker"
        ]
    );

    // The marker.
    let marker: boot_state::FreshFlashMarker = boot_state::parse_record(parts[3]).unwrap();
    assert_eq!(marker.build_id.as_deref(), Some(BUILD_ID));
    assert_eq!(marker.slot, boot_state::Slot::A);

    // The partition table: the layout, after the bootloader area, data up to the end.
    let table = disk.table();
    let pt = &table["partitiontable"];
    assert_eq!(pt["firstlba"], 32768);
    assert_eq!(
        disk.labels(),
        ["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"]
    );
    let partitions = pt["partitions"].as_array().unwrap();
    assert_eq!(
        partitions[2]["size"], partitions[0]["size"],
        "boot-b is as large as boot-a"
    );
    assert_eq!(
        partitions[3]["size"], partitions[1]["size"],
        "rootfs-b is as large as rootfs-a"
    );
    let data_end =
        partitions[4]["start"].as_u64().unwrap() + partitions[4]["size"].as_u64().unwrap();
    assert!(
        pt["lastlba"].as_u64().unwrap() + 1 - data_end < 2048,
        "data fills the disk"
    );
    let boot_b_type = sh(&format!("blkid -o value -s TYPE {}", disk.part(3)));
    assert_eq!(boot_b_type.trim(), "vfat");
    run(Command::new("e2fsck")
        .args(["-fn"])
        .arg(disk.data_partition()));

    // Logged with kernel levels.
    let kmsg = disk.kmsg();
    assert!(
        kmsg.contains("<6>atomix-initrd: step repart: starting"),
        "{kmsg}"
    );

    // Second boot: nothing created, data mounted as it is, marker untouched.
    let marker_before = disk.read_from_data("atomix/fresh-flash").unwrap();
    let out = disk.setup_ok(
        &defs,
        &format!("cat {}/run/atomix/boot.json", root.display()),
    );
    let record = boot_record(&out);
    assert!(!record.fresh_flash);
    assert!(record.partitions_created.is_empty());
    assert!(!record.data_formatted);
    assert!(!record.steps.iter().any(|s| s.step == "repart"));
    assert_eq!(
        disk.read_from_data("atomix/fresh-flash").unwrap(),
        marker_before
    );
    assert_eq!(disk.labels().len(), 5);
}

#[test]
fn wiped_data_is_formatted_without_a_marker() {
    let disk = TestDisk::flashed();
    let defs = ext4_definitions(disk.dir.path());
    // `plan` reads the disk and changes nothing: asked twice, it says the same.
    let table = disk.table();
    let fresh = disk.plan(&defs);
    assert_eq!(
        fresh,
        "fresh-flash: yes\nmissing: boot-b rootfs-b data\ndata: absent\n\
         steps: mount-rootfs mount-overlay-tmpfs repart mount-sysroot mount-data mount-boot fresh-flash-marker boot-record\n"
    );
    assert_eq!(disk.plan(&defs), fresh);
    assert_eq!(disk.table(), table, "plan changed the partition table");

    disk.setup_ok(&defs, "true");
    assert_eq!(
        disk.plan(&defs),
        "fresh-flash: no\nmissing: none\ndata: ext4\n\
         steps: mount-rootfs mount-overlay-tmpfs mount-sysroot mount-data mount-boot boot-record\n"
    );
    run(Command::new("wipefs")
        .args(["-a", "-q"])
        .arg(disk.data_partition()));
    assert_eq!(
        disk.plan(&defs),
        "fresh-flash: no\nmissing: none\ndata: no-filesystem\n\
         steps: mount-rootfs mount-overlay-tmpfs format-data mount-sysroot mount-data mount-boot boot-record\n"
    );

    let out = disk.setup_ok(
        &defs,
        &format!("cat {}/run/atomix/boot.json", disk.root().display()),
    );
    let record = boot_record(&out);
    assert!(!record.fresh_flash, "a wipe is not a fresh flash");
    assert!(record.data_formatted);
    assert!(record.partitions_created.is_empty());
    assert_eq!(record.data_fstype.as_deref(), Some("ext4"));
    assert_eq!(
        disk.read_from_data("atomix/fresh-flash"),
        None,
        "no marker after a wipe"
    );
    assert!(
        disk.kmsg().contains("<4>atomix-initrd: data partition"),
        "warned about the wipe"
    );
}

/// Runs the real definitions up to the overlay (the host cannot mount f2fs) and returns
/// the boot record.
fn pre_sysroot_with_real_definitions(disk: &TestDisk) -> boot_state::BootRecord {
    let out = disk.setup_in_namespace(
        &real_definitions(),
        &["--stage", "pre-sysroot"],
        "",
        &format!("cat {}/run/atomix/boot.json", disk.root().display()),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        disk.kmsg()
    );
    boot_record(&String::from_utf8(out.stdout).unwrap())
}

/// The data partition holds f2fs, and f2fs's own fsck finds it clean.
fn assert_clean_f2fs_data(disk: &TestDisk) {
    let fstype = sh(&format!("blkid -o value -s TYPE {}", disk.data_partition()));
    assert_eq!(fstype.trim(), "f2fs");
    run(Command::new("fsck.f2fs").arg(disk.data_partition()));
}

#[test]
fn real_definitions_format_data_as_f2fs() {
    // The host kernel has no f2fs: run the real definitions up to the overlay and check the
    // filesystems with their own fsck.
    let disk = TestDisk::flashed();
    disk.setup_ok(&ext4_definitions(disk.dir.path()), "true");

    // The operator wiped data: formatted f2fs.
    run(Command::new("wipefs")
        .args(["-a", "-q"])
        .arg(disk.data_partition()));
    let record = pre_sysroot_with_real_definitions(&disk);
    assert!(record.data_formatted && !record.fresh_flash);
    assert_clean_f2fs_data(&disk);

    // The data partition was deleted: repart creates it again, f2fs, not a fresh flash.
    run(Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel", "--delete"])
        .arg(&disk.loopdev)
        .arg("5"));
    run(Command::new("partx")
        .args(["--delete", "--nr", "5"])
        .arg(&disk.loopdev));
    let record = pre_sysroot_with_real_definitions(&disk);
    assert_eq!(record.partitions_created, ["data"]);
    assert!(!record.fresh_flash);
    assert_clean_f2fs_data(&disk);
}

#[test]
fn stages_around_sysroot_mount() {
    // In the systemd initrd: pre-sysroot, then sysroot.mount (done here by hand with the
    // unit's own options), then post-sysroot.
    let disk = TestDisk::flashed();
    let defs = ext4_definitions(disk.dir.path());
    let root = disk.root().display().to_string();
    let unit = String::from_utf8(run(Command::new(BIN).arg("sysroot-unit")).stdout).unwrap();
    let options = unit
        .lines()
        .find_map(|l| l.strip_prefix("Options="))
        .unwrap()
        .replace("/run/", &format!("{root}/run/"));
    let inspect = format!(
        "mkdir -p {root}/sysroot\nmount -t overlay overlay -o {options} {root}/sysroot\n\
         {BIN} --kmsg /dev/null setup --stage post-sysroot --root {root} --repart-dir {defs}\n\
         cat {root}/run/atomix/boot.json; echo '---'; cat {root}/sysroot/data/atomix/fresh-flash",
        defs = defs.display()
    );
    let out = disk.setup_in_namespace(&defs, &["--stage", "pre-sysroot"], "", &inspect);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        disk.kmsg()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (record, marker) = stdout.split_once("---\n").unwrap();
    let record = boot_record(record);
    assert!(record.fresh_flash);
    let steps: Vec<_> = record.steps.iter().map(|s| s.step.as_str()).collect();
    assert!(
        steps.contains(&"repart") && steps.contains(&"mount-data"),
        "{steps:?}"
    );
    assert!(!steps.contains(&"mount-sysroot"), "{steps:?}");
    assert!(marker.contains(BUILD_ID));
}

#[test]
fn power_cut_at_every_step_is_finished_by_the_next_boot() {
    let steps = [
        "mount-rootfs",
        "mount-overlay-tmpfs",
        "repart",
        "mount-sysroot",
        "mount-data",
        "mount-boot",
        "fresh-flash-marker",
        "boot-record",
    ];
    for step in steps {
        for crash in ["crash-before", "crash"] {
            let point = format!("{step}={crash}");
            let disk = TestDisk::flashed();
            let defs = ext4_definitions(disk.dir.path());
            let out = disk.setup_in_namespace(&defs, &[], &point, "true");
            assert!(
                !out.status.success(),
                "{point}: the failure point did not fire"
            );
            assert!(
                disk.kmsg().contains(&format!("failpoint {point}: exiting")),
                "{point}"
            );

            let out = disk.setup_ok(
                &defs,
                &format!("cat {}/run/atomix/boot.json", disk.root().display()),
            );
            let record = boot_record(&out);
            assert_eq!(
                disk.labels(),
                ["boot-a", "rootfs-a", "boot-b", "rootfs-b", "data"],
                "{point}"
            );
            assert_eq!(record.data_fstype.as_deref(), Some("ext4"), "{point}");
            assert!(
                !record.data_formatted,
                "{point}: data must not need formatting"
            );
            let marker = disk
                .read_from_data("atomix/fresh-flash")
                .unwrap_or_else(|| panic!("{point}: fresh-flash marker missing"));
            let marker: boot_state::FreshFlashMarker = boot_state::parse_record(&marker).unwrap();
            assert_eq!(marker.build_id.as_deref(), Some(BUILD_ID), "{point}");
            run(Command::new("e2fsck")
                .args(["-fn"])
                .arg(disk.data_partition()));
        }
    }
}

#[test]
fn bad_command_lines_and_missing_disks_are_clear_errors() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "quiet splash",
            "kernel command line has no atomix.slot= argument",
        ),
        (
            "atomix.slot=c atomix.root=PARTUUID=x",
            "atomix.slot=\"c\" is malformed",
        ),
        (
            "atomix.slot=a atomix.root=PARTUUID=0b4f4c0e-0000-4000-8000-00000000dead",
            "no partition with PARTUUID 0b4f4c0e-0000-4000-8000-00000000dead",
        ),
    ];
    for (cmdline, expected) in cases {
        let file = dir.path().join("cmdline");
        fs::write(&file, cmdline).unwrap();
        let out = Command::new(BIN)
            .args(["--kmsg", "/dev/null", "setup", "--device-timeout", "1"])
            .arg("--cmdline")
            .arg(&file)
            .arg("--root")
            .arg(dir.path())
            .arg("--repart-dir")
            .arg(real_definitions())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmdline}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{cmdline}: {stderr}");
    }
}
