//! RAUC update bundles of a build: the boot partition image (kernel, initrd, device tree,
//! boot.scr) for the `boot.N` slot and the squashfs for the `rootfs.N` slot, in a signed
//! verity bundle made by `rauc bundle`. The development signing pair is made here too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::command::{output, run};

/// The `compatible` of AtomixOS Rock64 systems (`sysroot/etc/rauc/system.conf`).
pub const COMPATIBLE: &str = "atomixos-rock64";

/// Who signs bundles and what devices trust.
#[derive(Debug, Clone)]
pub struct Signing {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// Installed as `/etc/rauc/keyring.pem`.
    pub keyring: PathBuf,
}

/// The given signing key and certificate (keyring: the given one, else the certificate),
/// or a development pair generated once in `out` (a self-signed certificate that is its
/// own keyring).
pub fn signing(
    key: Option<&Path>,
    cert: Option<&Path>,
    keyring: Option<&Path>,
    out: &Path,
) -> Result<Signing> {
    let (key, cert) = match (key, cert) {
        (Some(k), Some(c)) => (k.to_owned(), c.to_owned()),
        (None, None) => {
            let key = out.join("dev-rauc-key.pem");
            let cert = out.join("dev-rauc-cert.pem");
            if !key.exists() || !cert.exists() {
                output(
                    Command::new("openssl")
                        .args(["req", "-x509", "-newkey", "ec"])
                        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                        .args(["-days", "3650", "-subj"])
                        .arg("/O=AtomixOS/CN=AtomixOS development update signing")
                        .arg("-keyout")
                        .arg(&key)
                        .arg("-out")
                        .arg(&cert),
                )?;
            }
            eprintln!(
                "atomix-image: WARNING: no --signing-key given: devices of this image accept \
                 bundles signed by the DEVELOPMENT key {}. Never ship such an image.",
                key.display()
            );
            (key, cert)
        }
        _ => bail!("--signing-key and --signing-cert go together"),
    };
    for (what, path) in [("signing key", &key), ("signing certificate", &cert)] {
        fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    }
    let keyring = keyring.map_or_else(|| cert.clone(), Path::to_owned);
    let text = fs::read_to_string(&keyring)
        .with_context(|| format!("cannot read the keyring {}", keyring.display()))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} holds no PEM certificate", keyring.display());
    }
    Ok(Signing { key, cert, keyring })
}

/// The bundle manifest: one image per slot class, named so RAUC writes both raw.
pub fn manifest(build_id: &str) -> String {
    format!(
        "[update]\n\
         compatible={COMPATIBLE}\n\
         version={build_id}\n\
         build={build_id}\n\
         description=AtomixOS {build_id}\n\
         \n\
         [bundle]\n\
         format=verity\n\
         \n\
         [image.boot]\n\
         filename=boot.img\n\
         \n\
         [image.rootfs]\n\
         filename=rootfs.img\n"
    )
}

/// Makes `out` (a `.raucb`) from the boot partition image and the squashfs.
pub fn build(
    build_id: &str,
    boot_vfat: &Path,
    squashfs: &Path,
    signing: &Signing,
    work: &Path,
    out: &Path,
) -> Result<()> {
    let content = work.join("bundle");
    if content.exists() {
        fs::remove_dir_all(&content)?;
    }
    fs::create_dir_all(&content)?;
    fs::write(content.join("manifest.raucm"), manifest(build_id))?;
    // Hard links where the filesystem allows: the images are hundreds of MiB.
    for (from, name) in [(boot_vfat, "boot.img"), (squashfs, "rootfs.img")] {
        let to = content.join(name);
        if fs::hard_link(from, &to).is_err() {
            fs::copy(from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    let _ = fs::remove_file(out);
    run(Command::new("rauc")
        .arg("bundle")
        .arg("--cert")
        .arg(&signing.cert)
        .arg("--key")
        .arg(&signing.key)
        .arg(&content)
        .arg(out))?;
    fs::remove_dir_all(&content)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_both_slot_classes_and_the_compatible() {
        let m = manifest("20261127.1");
        for line in [
            "compatible=atomixos-rock64",
            "version=20261127.1",
            "format=verity",
            "[image.boot]",
            "filename=boot.img",
            "[image.rootfs]",
            "filename=rootfs.img",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
        }
        let conf = include_str!("../../sysroot/etc/rauc/system.conf");
        assert!(conf.contains(&format!("compatible={COMPATIBLE}\n")));
        assert!(conf.contains("[slot.boot.0]") && conf.contains("[slot.rootfs.1]"));
    }

    #[test]
    fn key_and_certificate_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let err = signing(Some(&dir.path().join("k")), None, None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
    }
}
