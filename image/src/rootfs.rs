//! The arm64 root filesystem: a Debian 13 (trixie) base from mmdebstrap, cached by the
//! package list, then customised with this repository's files on every build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache::Key;
use crate::command::run;

pub const SUITE: &str = "trixie";
/// Base trees once carried Debian's U-Boot packages beside them; the image now builds
/// U-Boot itself (uboot.rs). The name stays in the key so that cached trees, whose
/// tarball is the same, stay valid.
const FORMER_UBOOT_PACKAGES: &str = "u-boot-rockchip,u-boot-qemu";

/// Parses `image/packages.txt`: one package a line, `#` comments.
pub fn parse_packages(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The cached base tree of one package list.
#[derive(Debug, Clone)]
pub struct BaseTree {
    pub key: String,
    /// The tree as a tarball (mmdebstrap's output).
    pub tarball: PathBuf,
}

/// Builds (or takes from the cache) the base tree.
pub fn base_tree(repo: &Path, cache: &Path) -> Result<BaseTree> {
    let list_path = repo.join("image/packages.txt");
    let list = fs::read_to_string(&list_path)
        .with_context(|| format!("cannot read {}", list_path.display()))?;
    let packages = parse_packages(&list);
    let key = Key::new("base-v3")
        .text("suite", SUITE)
        .text("packages", &packages.join(","))
        .text("uboot", FORMER_UBOOT_PACKAGES)
        .finish();
    let dir = cache.join("base").join(&key);
    let tree = BaseTree {
        key: key.clone(),
        tarball: dir.join("rootfs.tar"),
    };
    if dir.join("complete").exists() {
        eprintln!("atomix-image: base tree {key} from the cache");
        return Ok(tree);
    }
    eprintln!("atomix-image: building the {SUITE} arm64 base tree {key} with mmdebstrap (cold: several minutes)");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let archives = cache.join("apt-archives");
    fs::create_dir_all(&archives)?;
    let tmp_tar = dir.join("rootfs.tar.tmp");
    run(Command::new("mmdebstrap")
        .args(["--arch=arm64", "--variant=minbase", "--format=tar"])
        .arg(format!("--include={}", packages.join(",")))
        // Keep downloaded packages between builds.
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!("--setup-hook=sync-in {} /var/cache/apt/archives/", archives.display()))
        .arg(format!("--customize-hook=sync-out /var/cache/apt/archives/ {}", archives.display()))
        // The kernel package would build a generic initrd under qemu-user (minutes); the
        // image's initrd is built later, with the atomix module.
        // A no-op stands in its place, since dracut's own postinst calls the hook.
        .arg("--essential-hook=chroot \"$1\" dpkg-divert --quiet --local --rename --divert /etc/kernel/postinst.d/dracut.disabled --add /etc/kernel/postinst.d/dracut && mkdir -p \"$1\"/etc/kernel/postinst.d && printf '#!/bin/sh\\n# AtomixOS builds its initrd itself (atomix-image).\\nexit 0\\n' > \"$1\"/etc/kernel/postinst.d/dracut && chmod 755 \"$1\"/etc/kernel/postinst.d/dracut")
        .arg(SUITE)
        .arg(&tmp_tar))?;
    fs::rename(&tmp_tar, &tree.tarball)?;
    fs::write(dir.join("complete"), format!("{key}\n"))?;
    Ok(tree)
}

/// Unpacks the base tree into `dir` (emptied first).
pub fn unpack(base: &BaseTree, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    run(Command::new("tar")
        .args([
            "--extract",
            "--numeric-owner",
            "--preserve-permissions",
            "--xattrs",
        ])
        .arg("--file")
        .arg(&base.tarball)
        .arg("--directory")
        .arg(dir))
}

/// What this build adds to the base tree.
#[derive(Debug)]
pub struct Additions<'a> {
    pub repo: &'a Path,
    pub build_id: &'a str,
    pub initrd_binary: &'a Path,
    pub provision_binary: Option<&'a Path>,
    pub provisioning_keys: &'a Path,
    /// Certificates RAUC accepts bundles signed under (`/etc/rauc/keyring.pem`).
    pub rauc_keyring: &'a Path,
}

/// Installs this repository's parts into the tree.
pub fn customize(tree: &Path, add: &Additions<'_>) -> Result<()> {
    let repo = add.repo;
    // sysroot/ as it is.
    run(Command::new("cp")
        .args(["-a", "--no-preserve=ownership"])
        .arg(repo.join("sysroot/."))
        .arg(tree))?;

    let install = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = tree.join(to.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("absolute path"))?;
        fs::copy(from, &dest)
            .with_context(|| format!("cannot install {} as {to}", from.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    install(add.initrd_binary, "/usr/lib/atomix/atomix-initrd", 0o755)?;
    if let Some(provision) = add.provision_binary {
        install(provision, "/usr/bin/atomix-provision", 0o755)?;
    }
    install(
        add.provisioning_keys,
        "/usr/share/atomix/provisioning-keys",
        0o644,
    )?;
    install(add.rauc_keyring, "/etc/rauc/keyring.pem", 0o644)?;
    for entry in fs::read_dir(repo.join("repart.d"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .expect("entry")
            .to_string_lossy()
            .into_owned();
        install(&path, &format!("/usr/lib/atomix/repart.d/{name}"), 0o644)?;
    }
    // How the initramfs is built (drivers, omitted modules, compression) is dracut's own
    // configuration, so that `dracut` run in this tree makes the same initramfs.
    install(
        &repo.join("dracut-module/dracut.conf.d/atomix.conf"),
        "/etc/dracut.conf.d/atomix.conf",
        0o644,
    )?;
    let module = repo.join("dracut-module/90atomix");
    for entry in fs::read_dir(&module)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .expect("entry")
            .to_string_lossy()
            .into_owned();
        let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
        install(
            &path,
            &format!("/usr/lib/dracut/modules.d/90atomix/{name}"),
            mode,
        )?;
    }

    // Identity of the build.
    let os_release = tree.join("usr/lib/os-release");
    let mut text = fs::read_to_string(&os_release)
        .with_context(|| format!("cannot read {}", os_release.display()))?;
    text = text
        .lines()
        .filter(|l| {
            !l.starts_with("PRETTY_NAME=")
                && !l.starts_with("IMAGE_")
                && !l.starts_with("BUILD_ID=")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "PRETTY_NAME=\"AtomixOS {id} (Debian {SUITE})\"\nIMAGE_ID=atomixos-rock64\nIMAGE_VERSION={id}\nBUILD_ID={id}\n",
        id = add.build_id
    ));
    fs::write(&os_release, text)?;

    // The admin user: rootless containers (subordinate ids), SSH keys only. Not lingering
    // in the image: the apply enables it when the config has rootless containers, so a
    // device without them starts no user manager (its generators and units cost seconds
    // of every boot under emulation).
    let in_tree =
        |args: &[&str]| -> Result<()> { run(Command::new("chroot").arg(tree).args(args)) };
    if !fs::read_to_string(tree.join("etc/passwd"))?.contains("\nadmin:") {
        in_tree(&[
            "useradd",
            "--create-home",
            "--uid",
            "1000",
            "--user-group",
            "--shell",
            "/bin/bash",
            "admin",
        ])?;
    }
    in_tree(&["usermod", "--password", "*", "admin"])?;
    let subids = "admin:100000:65536\n";
    fs::write(tree.join("etc/subuid"), subids)?;
    fs::write(tree.join("etc/subgid"), subids)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let sudoers = tree.join("etc/sudoers.d/atomix-admin");
        fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440))
            .with_context(|| format!("cannot set the mode of {}", sudoers.display()))?;
    }
    in_tree(&["systemctl", "preset-all"])?;

    // A neutral name until the operator's config gives one (mmdebstrap copies the build
    // host's).
    fs::write(tree.join("etc/hostname"), "atomixos\n")?;
    fs::write(
        tree.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tatomixos\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;

    // No SSH host keys (openssh-server's installation made some): every device would
    // share them. Each device makes its own on /data (atomix-ssh-host-key.service).
    for entry in fs::read_dir(tree.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }

    // An empty machine-id: each boot of the overlay root gets its own.
    fs::write(tree.join("etc/machine-id"), "")?;
    for dir in ["data", "boot"] {
        fs::create_dir_all(tree.join(dir))?;
    }
    stamp_updated(tree)
}

/// `/etc` and `/var` come with the image as new as its `/usr`: without the stamps that
/// `systemd-update-done` would write, `ConditionNeedsUpdate=` finds them out of date on
/// every boot of the tmpfs overlay and runs ldconfig, the hwdb and catalog updates and
/// systemd-update-done each time (on the critical chain of a steady boot). Last in the
/// build of the tree, so that `/usr` changes no more.
fn stamp_updated(tree: &Path) -> Result<()> {
    let usr = fs::metadata(tree.join("usr"))?.modified()?;
    let nsec = usr
        .duration_since(std::time::UNIX_EPOCH)
        .context("the tree's /usr is dated before 1970")?
        .as_nanos();
    for dir in ["etc", "var"] {
        let stamp = tree.join(dir).join(".updated");
        fs::write(
            &stamp,
            format!(
                "# Written by the AtomixOS image build: this directory is as new as /usr.\n\
                 # See systemd-update-done.service(8).\nTIMESTAMP_NSEC={nsec}\n"
            ),
        )
        .with_context(|| format!("cannot write {}", stamp.display()))?;
        fs::File::options()
            .write(true)
            .open(&stamp)?
            .set_modified(usr)
            .with_context(|| format!("cannot date {}", stamp.display()))?;
    }
    Ok(())
}

/// The kernel version installed in the tree (exactly one).
pub fn kernel_version(tree: &Path) -> Result<String> {
    let modules = tree.join("usr/lib/modules");
    let versions: Vec<String> = fs::read_dir(&modules)
        .with_context(|| format!("cannot list {}", modules.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel in {}, found {versions:?}",
            modules.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_ignores_comments_and_blanks() {
        let text = "# head\nsystemd\n\n  podman  # containers\n#x\nrauc\n";
        assert_eq!(parse_packages(text), ["systemd", "podman", "rauc"]);
    }

    #[test]
    fn repo_package_list_has_what_the_appliance_needs() {
        let text = include_str!("../packages.txt");
        let packages = parse_packages(text);
        for needed in [
            "systemd",
            "udev",
            "systemd-repart",
            "dracut",
            "linux-image-arm64",
            "f2fs-tools",
            "dosfstools",
            "podman",
            "rauc",
            "dnsmasq",
            "chrony",
            "openssh-server",
            "nftables",
        ] {
            assert!(packages.iter().any(|p| p == needed), "{needed} missing");
        }
    }
}
