//! `flash --config`: the boot seed a freshly flashed device imports on its first boot,
//! checked with the device's own validation (the `atomix-config` crate) before anything is
//! written, then copied onto the written `boot-a` with mtools at the partition's offset and
//! read back.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use atomix_config::bundle::looks_like_bundle;
use atomix_config::report::{check_input, Loaded};

use crate::command;

/// The largest seed the device reads from the boot partition.
const MAX_SEED: u64 = atomix_api::limits::CONFIG_BUNDLE_BYTES;

/// A checked seed and the name the device looks for on the boot partition (the names of
/// `atomix-provision`'s `seed::SEED_NAMES`).
#[derive(Debug)]
pub struct Seed {
    pub source: PathBuf,
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// Reads and checks a `config.toml` or config bundle; every problem is in the error.
pub fn load(path: &Path) -> Result<Seed> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read the config {}", path.display()))?
        .len();
    ensure!(
        len <= MAX_SEED,
        "{}: {len} bytes, more than the {MAX_SEED} a device reads from its boot partition",
        path.display()
    );
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the config {}", path.display()))?;
    let shown = path.display().to_string();
    let loaded = check_input(&shown, &bytes);
    let lines = loaded.lines(&shown);
    if !loaded.is_valid() {
        bail!(
            "{shown} is not a valid config; nothing was written:\n  {}",
            lines.join("\n  ")
        );
    }
    for warning in lines.iter().skip(1) {
        eprintln!("atomix-image: warning: {warning}");
    }
    let name = match &loaded {
        Loaded::Checked { .. } if bytes.starts_with(&[0x1f, 0x8b]) => "atomix-config.tar.gz",
        Loaded::Checked { .. } if looks_like_bundle(&bytes) => "atomix-config.tar",
        _ => "config.toml",
    };
    Ok(Seed {
        source: path.to_owned(),
        name,
        bytes,
    })
}

/// The byte offset and size of the `boot-a` partition in the image's GPT.
pub fn boot_a(image: &Path) -> Result<(u64, u64)> {
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .open(image)
        .with_context(|| format!("cannot read the GPT of {}", image.display()))?;
    let sector = 512;
    gpt.partitions()
        .values()
        .find(|p| p.is_used() && p.name == disk_layout::BOOT_A)
        .map(|p| {
            (
                p.first_lba * sector,
                (p.last_lba + 1 - p.first_lba) * sector,
            )
        })
        .with_context(|| {
            format!(
                "{} has no {} partition for the seed",
                image.display(),
                disk_layout::BOOT_A
            )
        })
}

/// mtools' name for the FAT filesystem at `offset` of `disk`.
fn fat_at(disk: &Path, offset: u64) -> String {
    format!("{}@@{offset}", disk.display())
}

fn mtools(tool: &str, fat: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(fat);
    cmd
}

/// The files (not directories) on the FAT filesystem, as `::/path`.
pub fn files(disk: &Path, offset: u64) -> Result<Vec<String>> {
    let listing = command::output(mtools("mdir", &fat_at(disk, offset)).args(["-/", "-b", "::/"]))?;
    Ok(listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("::/") && !l.ends_with('/'))
        .map(str::to_owned)
        .collect())
}

/// One file's bytes from the FAT filesystem.
pub fn read_file(disk: &Path, offset: u64, file: &str) -> Result<Vec<u8>> {
    let out = mtools("mcopy", &fat_at(disk, offset))
        .args(["-n", file, "-"])
        .output()
        .context("cannot start mcopy: run scripts/setup-host.sh")?;
    if !out.status.success() {
        bail!(
            "cannot read {file} from {}: {}",
            fat_at(disk, offset),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Copies the seed to the root of the FAT filesystem at `offset` of `device`, refusing to
/// add a second seed next to one the image already carries (the device would read only
/// the first of them).
pub fn place(seed: &Seed, device: &Path, offset: u64) -> Result<()> {
    let present = files(device, offset)?;
    if let Some(other) = present.iter().find(|f| {
        ["config.toml", "atomix-config.tar.gz", "atomix-config.tar"]
            .iter()
            .any(|n| f.eq_ignore_ascii_case(&format!("::/{n}")))
    }) {
        bail!(
            "the image's {} already holds a seed, {other}: flash without --config",
            disk_layout::BOOT_A
        );
    }
    // The bytes that were checked, not the file again: it could have changed since.
    let checked = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    std::fs::write(checked.path(), &seed.bytes)?;
    // Its output only in an error: on a block device it warns about the geometry.
    command::output(
        mtools("mcopy", &fat_at(device, offset))
            .arg(checked.path())
            .arg(format!("::/{}", seed.name)),
    )
    .with_context(|| {
        format!(
            "cannot copy {} onto {} of {}",
            seed.source.display(),
            disk_layout::BOOT_A,
            device.display()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &[u8]) -> Result<Seed> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn a_valid_config_is_a_config_toml_seed() {
        let example = include_bytes!("../../../examples/config.toml");
        let seed = load_text(example).unwrap();
        assert_eq!(seed.name, "config.toml");
        assert_eq!(seed.bytes, example);
    }

    #[test]
    fn an_invalid_config_is_refused_with_its_positions() {
        let err = format!("{:#}", load_text(b"schema = 2\n").unwrap_err());
        assert!(
            err.contains("not a valid config; nothing was written"),
            "{err}"
        );
        assert!(err.contains("c.toml:1:"), "{err}");
        let err = format!("{:#}", load_text(&[0x1f, 0x8b, 0, 1, 2]).unwrap_err());
        assert!(err.contains("gzip"), "{err}");
    }
}
