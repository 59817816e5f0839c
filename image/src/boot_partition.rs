//! The FAT boot partition (`boot-a`), built as a file with mtools, without mounting:
//! `boot.scr`, the kernel `Image`, `initrd.img` and `dtbs/rockchip/rk3328-rock64.dtb`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::command::run;

/// Where the board's device tree lives on the boot partition (boot.cmd loads it).
pub const ROCK64_DTB: &str = "dtbs/rockchip/rk3328-rock64.dtb";

#[derive(Debug)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub dtb: PathBuf,
    pub boot_scr: PathBuf,
}

/// `boot.cmd` with the build id filled in.
pub fn boot_script(template: &str, build_id: &str) -> String {
    template.replace("@BUILD_ID@", build_id)
}

/// Compiles `boot.cmd` into `boot.scr` with mkimage.
pub fn compile_boot_script(repo: &Path, build_id: &str, work: &Path) -> Result<PathBuf> {
    let template_path = repo.join("image/boot/boot.cmd");
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("cannot read {}", template_path.display()))?;
    let cmd = work.join("boot.cmd");
    fs::write(&cmd, boot_script(&template, build_id))?;
    let scr = work.join("boot.scr");
    run(Command::new("mkimage")
        .args([
            "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n",
        ])
        .arg(format!("AtomixOS {build_id}"))
        .arg("-d")
        .arg(&cmd)
        .arg(&scr)
        .stdout(std::process::Stdio::null()))?;
    Ok(scr)
}

/// Makes the FAT image of `size_bytes` at `out` holding `files`.
pub fn build(out: &Path, size_bytes: u64, files: &BootFiles) -> Result<()> {
    let _ = fs::remove_file(out);
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", "BOOT-A"])
        .arg(out)
        .arg((size_bytes / 1024).to_string())
        .stdout(std::process::Stdio::null()))?;
    let image = out.display().to_string();
    run(Command::new("mmd").args(["-i", &image, "::/dtbs", "::/dtbs/rockchip"]))?;
    for (file, name) in [
        (&files.boot_scr, "boot.scr"),
        (&files.kernel, "Image"),
        (&files.initrd, "initrd.img"),
        (&files.dtb, ROCK64_DTB),
    ] {
        run(Command::new("mcopy")
            .args(["-i", &image, "-o"])
            .arg(file)
            .arg(format!("::/{name}")))
        .with_context(|| format!("cannot copy {} into the boot partition", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_script_names_the_build_and_passes_the_contract_arguments() {
        let template = include_str!("../boot/boot.cmd");
        let script = boot_script(template, "20261127.1");
        assert!(script.contains("echo \"AtomixOS build 20261127.1\""));
        assert!(!script.contains("@BUILD_ID@"));
        for arg in [
            "atomix.slot=${atomix_slot}",
            "rauc.slot=${rauc_slot}",
            "atomix.root=PARTUUID=${atomix_rootuuid}",
            "atomix.build=20261127.1",
            "console=${atomix_console}",
        ] {
            assert!(script.contains(arg), "{arg} missing");
        }
        assert!(
            script.contains("part uuid ${devtype} ${devnum}:${atomix_rootpart} atomix_rootuuid")
        );
        assert!(script.contains("ums 0 ${devtype} ${devnum}"));
        assert!(script.contains(ROCK64_DTB));
    }
}
