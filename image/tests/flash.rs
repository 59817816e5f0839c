//! Privileged tests of `atomix-image flash` (root, loop devices): a small GPT image made
//! the way the build makes one (a FAT `boot-a` made with mtools, data in `rootfs-a`,
//! holes elsewhere, a bmap from `bmaptool create`) flashed onto a loop device that is full
//! of random bytes, as a used eMMC is. Loop devices are not removable: every flash here
//! passes `--force`, but one that checks the refusal without it.
//!
//! Needs root, util-linux (losetup, sfdisk), dosfstools, mtools and bmap-tools:
//! `scripts/setup-host.sh` installs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_atomix-image");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const MIB: u64 = 1 << 20;
/// Where the partitions start in the test image (in MiB).
const BOOT_A_AT: u64 = 1;
const BOOT_A_SIZE: u64 = 16;
const ROOTFS_A_AT: u64 = BOOT_A_AT + BOOT_A_SIZE;
const ROOTFS_DATA: u64 = 3 * MIB;
const IMAGE_SIZE: u64 = 48 * MIB;
/// The device is larger than the image, as an eMMC is.
const DEVICE_SIZE: u64 = 64 * MIB;

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/setup-host.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn random(len: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len as usize];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes
}

fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// The test image, its bmap, and a loop device over random bytes; detached on drop.
struct Setup {
    dir: tempfile::TempDir,
    image: PathBuf,
    kernel: Vec<u8>,
    loopdev: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let uid = String::from_utf8(run(Command::new("id").arg("-u")).stdout).unwrap();
        assert_eq!(
            uid.trim(),
            "0",
            "these tests need root (loop devices): run them through scripts/test.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("atomix-flash-test")
            .tempdir()
            .unwrap();
        let image = dir.path().join("test.img");
        run(Command::new("truncate")
            .arg(format!("--size={IMAGE_SIZE}"))
            .arg(&image));
        let mut sfdisk = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&image)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        write!(
            sfdisk.stdin.take().unwrap(),
            "label: gpt\nstart={}MiB, size={BOOT_A_SIZE}MiB, name=\"boot-a\"\nsize=24MiB, name=\"rootfs-a\"\n",
            BOOT_A_AT
        )
        .unwrap();
        assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");

        // boot-a as the build makes it: mkfs.vfat on a file, files put with mtools.
        let vfat = dir.path().join("boot-a.vfat");
        run(Command::new("mkfs.vfat")
            .args(["-C", "-n", "BOOT-A"])
            .arg(&vfat)
            .arg((BOOT_A_SIZE * 1024).to_string()));
        let kernel = random(2 * MIB + 123);
        fs::write(dir.path().join("Image"), &kernel).unwrap();
        fs::write(dir.path().join("boot.scr"), "echo test\n").unwrap();
        run(Command::new("mmd").arg("-i").arg(&vfat).arg("::/dtbs"));
        for (file, name) in [("Image", "::/Image"), ("boot.scr", "::/dtbs/boot.scr")] {
            run(Command::new("mcopy")
                .arg("-i")
                .arg(&vfat)
                .arg(dir.path().join(file))
                .arg(name));
        }
        // Zero blocks stay holes, as in the built image.
        run(Command::new("dd")
            .arg(format!("if={}", vfat.display()))
            .arg(format!("of={}", image.display()))
            .args(["bs=1M", "conv=sparse,notrunc", "status=none"])
            .arg(format!("seek={BOOT_A_AT}")));
        {
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
            f.write_all_at(&random(ROOTFS_DATA), ROOTFS_A_AT * MIB)
                .unwrap();
        }
        run(Command::new("bmaptool")
            .args(["-q", "create", "-o"])
            .arg(bmap_of(&image))
            .arg(&image));

        let device = dir.path().join("device");
        fs::write(&device, random(DEVICE_SIZE)).unwrap();
        let loopdev = String::from_utf8(
            run(Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&device))
            .stdout,
        )
        .unwrap();
        Setup {
            dir,
            image,
            kernel,
            loopdev: PathBuf::from(loopdev.trim()),
        }
    }

    fn flash(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let out = Command::new(BIN)
            .arg("flash")
            .args(args)
            .arg(&self.image)
            .arg(&self.loopdev)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn device_bytes(&self) -> Vec<u8> {
        read_at(&self.loopdev, 0, DEVICE_SIZE)
    }

    /// A file of the FAT filesystem at `boot-a` of the device.
    fn boot_file(&self, name: &str) -> Vec<u8> {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{}", self.loopdev.display(), BOOT_A_AT * MIB))
            .args(["-n", name, "-"]))
        .stdout
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
    }
}

fn bmap_of(image: &Path) -> PathBuf {
    PathBuf::from(format!("{}.bmap", image.display()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flashes_over_random_bytes_and_verifies_what_it_wrote() {
    let s = Setup::new();
    let before = s.device_bytes();
    let out = s.flash(&["--force"], &[]);
    assert!(out.status.success(), "flash failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("flashed and verified"),
        "{}",
        stderr(&out)
    );

    // Checked here without the flash code: the GPT, the kernel on boot-a and the rootfs
    // data read back as in the image...
    let after = s.device_bytes();
    let image = fs::read(&s.image).unwrap();
    let span = |at: u64, len: u64| (at as usize)..((at + len) as usize);
    assert_eq!(after[span(0, 34 * 512)], image[span(0, 34 * 512)]);
    assert_eq!(s.boot_file("::/Image"), s.kernel);
    let rootfs = span(ROOTFS_A_AT * MIB, ROOTFS_DATA);
    assert_eq!(after[rootfs.clone()], image[rootfs]);
    // ...while the image's holes still hold the device's old random bytes: the verification
    // passed because it checks the written ranges, not the whole image range.
    let hole = span(ROOTFS_A_AT * MIB + ROOTFS_DATA + MIB, MIB);
    assert_eq!(after[hole.clone()], before[hole.clone()]);
    assert_ne!(after[hole.clone()], image[hole]);
    // Past the image, nothing was touched.
    let past = span(IMAGE_SIZE, DEVICE_SIZE - IMAGE_SIZE);
    assert_eq!(after[past.clone()], before[past]);
}

#[test]
fn a_write_corrupted_before_verifying_is_caught_and_its_range_named() {
    let s = Setup::new();
    let offset = ROOTFS_A_AT * MIB + 12345;
    let out = s.flash(
        &["--force"],
        &[("ATOMIX_FLASH_CORRUPT_AFTER_WRITE", offset.to_string())],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "a corrupted write passed: {err}");
    assert!(
        err.contains("does not read back as written: 1 of "),
        "{err}"
    );
    // The named range holds the flipped byte.
    let named = err
        .split("(bytes ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no byte range named: {err}"));
    let (a, b) = named.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(a <= offset && offset <= b, "{offset} not in {named}");
}

#[test]
fn an_image_that_does_not_match_its_bmap_is_caught() {
    let s = Setup::new();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&s.image).unwrap();
        let at = ROOTFS_A_AT * MIB + 7;
        let old = read_at(&s.image, at, 1)[0];
        f.write_all_at(&[!old], at).unwrap();
    }
    let out = s.flash(&["--force"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("does not match its bmap at blocks "), "{err}");
}

#[test]
fn a_config_is_placed_on_boot_a_and_read_back() {
    let s = Setup::new();
    let config = Path::new(REPO).join("examples/config.toml");
    let out = s.flash(&["--force", "--config", config.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("re-verified: 2 files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.boot_file("::/config.toml"), fs::read(&config).unwrap());
    assert_eq!(s.boot_file("::/Image"), s.kernel);
}

#[test]
fn a_bundle_is_placed_under_the_name_the_device_reads() {
    let s = Setup::new();
    let work = s.dir.path().join("bundle");
    fs::create_dir_all(&work).unwrap();
    fs::copy(
        Path::new(REPO).join("examples/config.toml"),
        work.join("config.toml"),
    )
    .unwrap();
    let bundle = s.dir.path().join("seed.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&bundle)
        .arg("-C")
        .arg(&work)
        .arg("config.toml"));
    let out = s.flash(&["--force", "--config", bundle.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.boot_file("::/atomix-config.tar.gz"),
        fs::read(&bundle).unwrap()
    );
}

#[test]
fn an_invalid_config_is_refused_before_anything_is_written() {
    let s = Setup::new();
    let config = s.dir.path().join("config.toml");
    fs::write(&config, "schema = 1\nno-such-key = true\n").unwrap();
    let before = s.device_bytes();
    let out = s.flash(&["--force", "--config", config.to_str().unwrap()], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is not a valid config; nothing was written"),
        "{err}"
    );
    assert!(err.contains("config.toml:2:"), "{err}");
    assert!(s.device_bytes() == before, "the device was written");
}

#[test]
fn a_fixed_disk_is_refused_without_force() {
    let s = Setup::new();
    let before = s.device_bytes();
    let out = s.flash(&[], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not a removable device") && err.contains("--force"),
        "{err}"
    );
    assert!(s.device_bytes() == before, "the device was written");
}
