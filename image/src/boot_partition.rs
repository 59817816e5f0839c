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

/// `boot.cmd` with the build id and the extra kernel arguments filled in.
pub fn boot_script(template: &str, build_id: &str, kernel_args: &[String]) -> String {
    let extra: String = kernel_args.iter().map(|a| format!(" {a}")).collect();
    template
        .replace("@BUILD_ID@", build_id)
        .replace("@KERNEL_ARGS@", &extra)
}

/// Refuses a kernel argument U-Boot's shell would read as more than a word.
pub fn check_kernel_arg(arg: &str) -> Result<()> {
    if arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'$;\\`{}".contains(c))
    {
        anyhow::bail!(
            "kernel argument {arg:?}: one word without quotes, '$', ';', '\\', '`', braces or control characters"
        );
    }
    Ok(())
}

/// Compiles `boot.cmd` into `boot.scr` with mkimage.
pub fn compile_boot_script(
    repo: &Path,
    build_id: &str,
    kernel_args: &[String],
    work: &Path,
) -> Result<PathBuf> {
    let template_path = repo.join("image/boot/boot.cmd");
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("cannot read {}", template_path.display()))?;
    for arg in kernel_args {
        check_kernel_arg(arg)?;
    }
    let cmd = work.join("boot.cmd");
    fs::write(&cmd, boot_script(&template, build_id, kernel_args))?;
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
        let script = boot_script(template, "20261127.1", &[]);
        assert!(script.contains("echo \"AtomixOS build 20261127.1\""));
        assert!(!script.contains("@BUILD_ID@"));
        assert!(!script.contains("@KERNEL_ARGS@"));
        assert!(script.contains("systemd.show_status=auto\""));
        let with_args = boot_script(template, "x", &["quiet".into(), "a.b=c".into()]);
        assert!(with_args.contains("systemd.show_status=auto quiet a.b=c\""));
        assert!(check_kernel_arg("systemd.setenv=A=b=c").is_ok());
        for bad in ["", "a b", "a;reset", "${x}", "\"", "a\\"] {
            assert!(check_kernel_arg(bad).is_err(), "{bad:?}");
        }
        // Slot choice: both copies of the state read, counted down, written back.
        // The slot-state crate's layout, which Linux reads and writes.
        let sectors = slot_state::BLOCK_SIZE as u64 / slot_state::SECTOR;
        let size = slot_state::BLOCK_SIZE;
        let vars = "BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT";
        let mut needles = vec![
            format!("env import -c ${{kernel_addr_r}} {size:#x} {vars}"),
            format!("env export -c -s {size:#x} ${{kernel_addr_r}} {vars}"),
        ];
        for lba in slot_state::COPY_LBAS {
            needles.push(format!(
                "${{devtype}} read ${{kernel_addr_r}} {lba:#x} {sectors}"
            ));
            needles.push(format!(
                "${{devtype}} write ${{kernel_addr_r}} {lba:#x} {sectors}"
            ));
        }
        for needle in needles {
            assert!(script.contains(&needle), "{needle} missing");
        }
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
