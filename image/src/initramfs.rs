//! The initramfs: dracut run inside the arm64 tree (through qemu-user), configured by
//! `dracut-module/dracut.conf.d/atomix.conf` (the drivers, the opt-in `atomix` module,
//! what is left out). Cached by everything that goes into it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cache::Key;
use crate::command::run;

/// Builds (or takes from the cache) the initramfs for the customised `tree`.
pub fn build(
    repo: &Path,
    tree: &Path,
    cache: &Path,
    base_key: &str,
    initrd_binary: &Path,
    kver: &str,
) -> Result<PathBuf> {
    let key = Key::new("initrd-v2")
        .text("base", base_key)
        .text("kver", kver)
        .path(&repo.join("dracut-module"))?
        .path(&repo.join("repart.d"))?
        .path(initrd_binary)?
        .finish();
    let out = cache.join("initrd").join(format!("initrd-{key}.img"));
    if out.exists() {
        eprintln!("atomix-image: initrd {key} from the cache");
        return Ok(out);
    }
    eprintln!(
        "atomix-image: building the initrd {key} with dracut (under qemu-user: a few minutes)"
    );
    fs::create_dir_all(out.parent().expect("in the cache"))?;
    let inside = "/var/tmp/atomix-initrd.img";
    let script = format!(
        "mount -t proc proc {t}/proc && mount --rbind /sys {t}/sys && mount --rbind /dev {t}/dev && \
         chroot {t} dracut --force --quiet --kver {kver} {inside}",
        t = tree.display()
    );
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(&script))
    .context("dracut failed in the image tree")?;
    let built = tree.join(inside.trim_start_matches('/'));
    let tmp = out.with_extension("tmp");
    fs::copy(&built, &tmp)?;
    fs::remove_file(&built)?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}
