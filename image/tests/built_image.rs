//! Checks of a built image without booting it: the GPT entries and offsets, the U-Boot
//! blobs at their sectors, the boot partition's files, and what the squashfs root holds.
//!
//! Reads the output of `scripts/build-image.sh` from `ATOMIX_IMAGE_DIR` (default `build/`
//! at the repository root); `scripts/test.sh` builds the image before running this. With no
//! image there, every test fails and says how to build one.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const IMAGE_NAME: &str = "atomixos-rock64.img";
const SECTOR: u64 = 512;

fn out_dir() -> PathBuf {
    std::env::var_os("ATOMIX_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"))
}

fn manifest() -> Value {
    let path = out_dir().join("build.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no built image at {} ({e}): run scripts/build-image.sh first",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn image() -> PathBuf {
    out_dir().join(IMAGE_NAME)
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // boot.scr is a script behind a binary mkimage header: keep what is text.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn table() -> Value {
    let json: Value =
        serde_json::from_str(&output(Command::new("sfdisk").arg("--json").arg(image()))).unwrap();
    json["partitiontable"].clone()
}

fn partition_offset(index: usize) -> u64 {
    table()["partitions"][index]["start"].as_u64().unwrap() * SECTOR
}

#[test]
fn gpt_holds_slot_a_only_after_the_bootloader_area() {
    let manifest = manifest();
    let t = table();
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["firstlba"], 32768);
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(
        parts.len(),
        2,
        "the flashed image holds boot-a and rootfs-a only"
    );
    assert_eq!(parts[0]["name"], "boot-a");
    assert_eq!(parts[0]["start"], 32768);
    assert_eq!(parts[0]["size"], (256u64 << 20) / SECTOR);
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[1]["name"], "rootfs-a");
    assert_eq!(
        parts[1]["start"].as_u64().unwrap(),
        32768 + (256u64 << 20) / SECTOR
    );
    assert_eq!(parts[1]["size"], (1u64 << 30) / SECTOR);
    assert_eq!(
        parts[1]["uuid"].as_str().unwrap().to_lowercase(),
        manifest["rootfs_partuuid"].as_str().unwrap()
    );
    // The companions: checksum and block map.
    let sha = std::fs::read_to_string(out_dir().join(format!("{IMAGE_NAME}.sha256"))).unwrap();
    assert!(sha.starts_with(manifest["sha256"].as_str().unwrap()));
    let bmap = std::fs::read_to_string(out_dir().join(format!("{IMAGE_NAME}.bmap"))).unwrap();
    assert!(bmap.contains("<bmap version="), "{bmap:.200}");
}

#[test]
fn uboot_blobs_sit_at_the_sectors_the_rock64_reads() {
    let manifest = manifest();
    let uboot = PathBuf::from(manifest["uboot_dir"].as_str().unwrap());
    let bytes = std::fs::read(image()).unwrap();
    for (blob, sector) in [
        ("rock64-rk3328/idbloader.img", 64u64),
        ("rock64-rk3328/u-boot.itb", 16384),
    ] {
        let expected = std::fs::read(uboot.join(blob)).unwrap();
        let at = (sector * SECTOR) as usize;
        assert!(expected.len() > 1024, "{blob} looks empty");
        assert_eq!(
            &bytes[at..at + expected.len()],
            &expected[..],
            "{blob} at sector {sector}"
        );
    }
}

#[test]
fn the_shipped_uboot_is_the_one_built_here_with_the_recovery_key() {
    let bytes = std::fs::read(image()).unwrap();
    // u-boot.itb's slot, up to the first partition (sector 32768).
    let itb = &bytes[(16384 * SECTOR) as usize..(32768 * SECTOR) as usize];
    let has = |needle: &[u8]| itb.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"-atomix ("),
        "no U-Boot version built here in u-boot.itb"
    );
    assert!(
        has(b"adc-keys"),
        "no adc-keys node in u-boot.itb's device tree"
    );
    assert!(has(b"button"), "no button command in u-boot.itb");
    assert!(has(b"UMS: LUN"), "no ums command in u-boot.itb");
    let qemu = std::fs::read(out_dir().join("u-boot-qemu.bin")).unwrap();
    assert!(
        qemu.windows(b"-atomix (".len()).any(|w| w == b"-atomix ("),
        "u-boot-qemu.bin is not the U-Boot built here"
    );
}

#[test]
fn boot_partition_holds_script_kernel_initrd_and_dtb() {
    let manifest = manifest();
    let spec = format!("{}@@{}", image().display(), partition_offset(0));
    let listing = output(Command::new("mdir").args(["-/", "-b", "-i", &spec, "::/"]));
    for file in [
        "::/boot.scr",
        "::/Image",
        "::/initrd.img",
        "::/dtbs/rockchip/rk3328-rock64.dtb",
    ] {
        assert!(
            listing.lines().any(|l| l == file),
            "{file} missing:\n{listing}"
        );
    }
    let script = output(Command::new("mtype").args(["-i", &spec, "::/boot.scr"]));
    let build_id = manifest["build_id"].as_str().unwrap();
    assert!(
        script.contains(&format!("echo \"AtomixOS build {build_id}\"")),
        "boot.scr does not print the build id"
    );
    assert!(script.contains("atomix.root=PARTUUID=${atomix_rootuuid}"));
    // The kernel reads the backup GPT when the primary is torn (docs/reliability.md).
    assert!(
        script.contains(" gpt net.ifnames=0 "),
        "boot.scr's kernel command line lacks gpt"
    );
}

/// The initramfs's size budget, compressed: under it, U-Boot loads it and the kernel
/// unpacks it in a fraction of the time the generic one (about 35 MiB) took.
const INITRD_MAX_BYTES: u64 = 12 * 1024 * 1024;

/// Kernel modules the boot sequence needs in the initramfs, on the Rock64 and under QEMU
/// (each either there as a module or built into the kernel).
const INITRD_NEEDED_MODULES: &[&str] = &[
    // The boot sequence: the squashfs slot, the overlay root, f2fs /data, the vfat boot
    // partition (with the kernel's default I/O character set, ascii), loop devices for
    // systemd-repart.
    "squashfs",
    "overlay",
    "f2fs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_ascii",
    "loop",
    // Rock64: the eMMC and SD controller, its I/O domains and regulators.
    "dw_mmc_rockchip",
    "mmc_block",
    "io_domain",
    "rk808_regulator",
    "i2c_rk3x",
    // Rock64: USB host ports and sticks (a recovery stick carries the root's PARTUUID).
    "phy_rockchip_inno_usb2",
    "dwc2",
    "ehci_platform",
    "ohci_platform",
    "dwc3",
    "xhci_plat_hcd",
    "usb_storage",
    "sd_mod",
    // QEMU virt: the disk and the USB stick of the boot tests.
    "virtio_blk",
    "virtio_pci",
    "xhci_pci",
    // The watchdogs armed from the initrd on.
    "dw_wdt",
    "i6300esb",
];

/// The initramfs from the boot partition, decompressed to a cpio archive.
fn initramfs_cpio(dir: &Path) -> (u64, PathBuf) {
    let spec = format!("{}@@{}", image().display(), partition_offset(0));
    let compressed = dir.join("initrd.img");
    output(
        Command::new("mcopy")
            .args(["-n", "-i", &spec, "::/initrd.img"])
            .arg(&compressed),
    );
    let size = std::fs::metadata(&compressed).unwrap().len();
    let cpio = dir.join("initrd.cpio");
    output(
        Command::new("zstd")
            .args(["-q", "-d", "-o"])
            .arg(&cpio)
            .arg(&compressed),
    );
    (size, cpio)
}

/// A module's name as the kernel knows it, from its path in the initramfs.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let name = file.split(".ko").next().filter(|_| file.contains(".ko"))?;
    Some(name.replace('-', "_"))
}

#[test]
fn initramfs_is_within_budget_and_holds_the_needed_modules_only() {
    let dir = tempfile::tempdir().unwrap();
    let (size, cpio) = initramfs_cpio(dir.path());
    eprintln!(
        "initramfs: {size} bytes compressed ({:.1} MiB)",
        size as f64 / 1048576.0
    );
    assert!(
        size <= INITRD_MAX_BYTES,
        "the initramfs is {size} bytes compressed, over its {INITRD_MAX_BYTES}-byte budget"
    );
    let listing = output(
        Command::new("cpio")
            .args(["-i", "-t", "--quiet", "-F"])
            .arg(&cpio),
    );
    let modules: std::collections::BTreeSet<String> =
        listing.lines().filter_map(module_name).collect();
    let builtin_path = listing
        .lines()
        .find(|l| l.ends_with("/modules.builtin"))
        .expect("modules.builtin in the initramfs");
    let builtin_list = output(
        Command::new("cpio")
            .args(["-i", "--to-stdout", "--quiet", "-F"])
            .arg(&cpio)
            .arg(builtin_path),
    );
    let builtin: std::collections::BTreeSet<String> =
        builtin_list.lines().filter_map(module_name).collect();
    let missing: Vec<&str> = INITRD_NEEDED_MODULES
        .iter()
        .copied()
        .filter(|m| !modules.contains(*m) && !builtin.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from the initramfs: {missing:?}\nit holds: {modules:?}"
    );
    // Nothing of the generic driver set: the needed ones and what they pull in.
    assert!(
        modules.len() < 80,
        "{} modules in the initramfs, a generic driver set crept back in: {modules:?}",
        modules.len()
    );
}

#[test]
fn squashfs_root_holds_the_atomix_parts() {
    let manifest = manifest();
    let offset = partition_offset(1).to_string();
    let cat = |path: &str| {
        output(
            Command::new("unsquashfs")
                .args(["-o", &offset, "-cat"])
                .arg(image())
                .arg(path),
        )
    };
    let os_release = cat("usr/lib/os-release");
    let build_id = manifest["build_id"].as_str().unwrap();
    assert!(
        os_release.contains(&format!("BUILD_ID={build_id}\n")),
        "{os_release}"
    );
    assert!(os_release.contains("IMAGE_ID=atomixos-rock64\n"));
    assert!(cat("usr/lib/atomix/repart.d/50-data.conf").contains("Format=f2fs"));
    assert!(cat("usr/share/atomix/provisioning-keys").starts_with("ssh-"));
    assert!(cat("etc/passwd").contains("\nadmin:x:1000:1000:"));
    assert!(cat("etc/subuid").contains("admin:100000:65536"));
    // The root's coldplug is wanted by sysinit.target but no longer ordered before it.
    let trigger = cat("etc/systemd/system/systemd-udev-trigger.service");
    assert!(trigger.contains("ExecStart=-udevadm trigger"), "{trigger}");
    assert!(
        !trigger.lines().any(|l| l.starts_with("Before=")),
        "{trigger}"
    );
    let listing = output(
        Command::new("unsquashfs")
            .args(["-o", &offset, "-l"])
            .arg(image()),
    );
    for path in [
        "squashfs-root/usr/lib/atomix/atomix-initrd",
        "squashfs-root/data",
        "squashfs-root/boot",
        "squashfs-root/usr/lib/systemd/system.conf.d/10-atomix-watchdog.conf",
        "squashfs-root/etc/systemd/system/multi-user.target.wants/atomix-mark-good-deadline.service",
        // /etc and /var as new as /usr: no ldconfig, hwdb or catalog update every boot.
        "squashfs-root/etc/.updated",
        "squashfs-root/var/.updated",
        // The provisioned config back in /etc before the network starts.
        "squashfs-root/etc/systemd/system/sysinit.target.wants/atomix-restore.service",
        // A factory reset accepted over the API is finished before anything uses /data.
        "squashfs-root/etc/systemd/system/sysinit.target.wants/atomix-factory-reset.service",
        // dnsmasq without Debian's wait for network-online.target.
        "squashfs-root/etc/systemd/system/dnsmasq.service",
        // The root's coldplug runs beside sysinit.target's units instead of before them.
        "squashfs-root/etc/systemd/system/systemd-udev-trigger.service",
        // Masked: no AF_VSOCK on either machine, it failed on every boot.
        "squashfs-root/etc/systemd/system-generators/systemd-ssh-generator",
        // Masked: generators and early units for what neither board has or uses (each
        // a process under the CPU-bound start of PID 1).
        "squashfs-root/etc/systemd/system-generators/systemd-gpt-auto-generator",
        "squashfs-root/etc/systemd/system-generators/systemd-sysv-generator",
        "squashfs-root/etc/systemd/system/modprobe@drm.service",
        "squashfs-root/etc/systemd/system/systemd-network-generator.service",
        "squashfs-root/etc/systemd/system/dracut-shutdown.service",
        // Masked: the root never repartitions (the initrd does), yet the unit's Wants=
        // started modprobe@loop and modprobe@dm_mod on every boot.
        "squashfs-root/etc/systemd/system/systemd-repart.service",
        // Masked: udevd's Wants= started it (before udevd, on the critical chain) although
        // no credentials are ever passed; /tmp is on the root's tmpfs already.
        "squashfs-root/etc/systemd/system/systemd-udev-load-credentials.service",
        "squashfs-root/etc/systemd/system/tmp.mount",
        // The journal stays in /run (no flush from one tmpfs to another), and cfg80211
        // is not loaded for networkd's nl80211 lookup.
        "squashfs-root/usr/lib/systemd/journald.conf.d/10-atomix.conf",
        "squashfs-root/usr/lib/modprobe.d/atomix.conf",
    ] {
        assert!(listing.lines().any(|l| l == path), "{path} missing");
    }
    // /boot is mounted by the initrd (atomix-initrd's mount-boot step), not by a unit that
    // waits for the root's udev coldplug.
    assert!(
        !listing
            .lines()
            .any(|l| l.ends_with("system-generators/atomix-boot-mount")),
        "the boot partition's generator is back"
    );
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with("squashfs-root/boot/vmlinuz")),
        "the kernel belongs to the boot partition"
    );
    // No user manager at every boot: the apply enables lingering for rootless containers.
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with("squashfs-root/var/lib/systemd/linger/")),
        "the admin user lingers in the image"
    );
    // No SSH host key that every device would share: each makes its own on /data.
    let host_keys: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("squashfs-root/etc/ssh/ssh_host_"))
        .collect();
    assert!(
        host_keys.is_empty(),
        "host keys in the image: {host_keys:?}"
    );
    assert!(cat("etc/ssh/sshd_config.d/atomix.conf")
        .contains("\nHostKey /data/ssh/ssh_host_ed25519_key\n"));
    // Disabled by the image's preset: nothing an appliance runs, and each ran on every boot.
    for unit in [
        "apt-daily.timer",
        "podman-auto-update.timer",
        "podman-auto-update.service",
        "podman-restart.service",
        "podman.service",
        "chronyd-restricted.service",
        "e2scrub_reap.service",
        "cni-dhcp.socket",
        "podman-clean-transient.service",
        "sshd-keygen.service",
        "systemd-udev-load-credentials.service",
        "systemd-pcrlock-make-policy.service",
        "systemd-sysext.socket",
    ] {
        let enabled = enabled_links(&listing, unit);
        assert!(enabled.is_empty(), "{unit} is enabled: {enabled:?}");
    }
    // Still enabled: what the appliance runs.
    for unit in [
        "chrony.service",
        "podman.socket",
        "nftables.service",
        "first-boot.service",
        "atomix-ssh-host-key.service",
    ] {
        assert!(
            !enabled_links(&listing, unit).is_empty(),
            "{unit} is not enabled"
        );
    }
}

/// The links that enable `unit`, anywhere under the image's `/etc/systemd/system`.
fn enabled_links<'a>(listing: &'a str, unit: &str) -> Vec<&'a str> {
    let name = format!("/{unit}");
    listing
        .lines()
        .filter(|l| l.starts_with("squashfs-root/etc/systemd/system/") && l.ends_with(&name))
        .filter(|l| l.matches('/').count() > 4)
        .collect()
}
