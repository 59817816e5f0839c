//! U-Boot built here from Debian's own source package of the suite the image ships
//! (Debian's patches applied), with this repository's additions (`image/uboot/`): the
//! Rock64's recovery key as a U-Boot button and `ums` over its OTG port, and the same
//! boot-script-relevant options for QEMU's `qemu_arm64`. Cross-compiled with
//! gcc-aarch64-linux-gnu, BL31 from Debian's `arm-trusted-firmware`, and cached by its
//! inputs: the source package's version and checksums, BL31's, and `image/uboot/`.
//!
//! The cached directory has the layout of Debian's U-Boot packages:
//! `rock64-rk3328/{idbloader.img,u-boot.itb}` and `qemu_arm64/u-boot.bin`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cache::Key;
use crate::command::{output, run};
use crate::rootfs::SUITE;

/// The Debian archive the source and BL31 come from (mmdebstrap's default mirror).
const MIRROR: &str = "http://deb.debian.org/debian";
/// The Rock64's BL31 in Debian's `arm-trusted-firmware` package.
const BL31: &str = "usr/lib/arm-trusted-firmware/rk3328/bl31.elf";

/// One U-Boot configuration: Debian's defconfig plus our fragment, and what the image
/// takes from its build.
struct Platform {
    name: &'static str,
    outputs: &'static [&'static str],
}

const PLATFORMS: &[Platform] = &[
    Platform {
        name: "rock64-rk3328",
        outputs: &["idbloader.img", "u-boot.itb"],
    },
    Platform {
        name: "qemu_arm64",
        outputs: &["u-boot.bin"],
    },
];

/// A package's files as an apt index lists them.
#[derive(Debug, PartialEq)]
pub struct Record {
    pub package: String,
    pub version: String,
    /// `(sha256, size, file name)`.
    pub files: Vec<(String, u64, String)>,
    /// The `Files:` (md5) lines of a source record, as `(md5, size, file name)`.
    pub md5: Vec<(String, u64, String)>,
}

/// Parses the first stanza of `apt-cache showsrc` (`Checksums-Sha256:`/`Files:`) or
/// `apt-cache show` (`SHA256:`/`Size:`/`Filename:`) output.
pub fn parse_record(text: &str) -> Result<Record> {
    let stanza = text.split("\n\n").next().unwrap_or("");
    let mut fields: Vec<(String, String, Vec<String>)> = Vec::new();
    for line in stanza.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if let Some(last) = fields.last_mut() {
                last.2.push(rest.trim().to_owned());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_owned(), value.trim().to_owned(), Vec::new()));
        }
    }
    let field = |name: &str| fields.iter().find(|f| f.0 == name);
    let value = |name: &str| -> Result<String> {
        field(name)
            .map(|f| f.1.clone())
            .filter(|v| !v.is_empty())
            .with_context(|| format!("no {name}: in the apt record:\n{stanza}"))
    };
    let list = |name: &str| -> Result<Vec<(String, u64, String)>> {
        field(name)
            .map(|f| f.2.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|line| {
                let parts: Vec<&str> = line.split_whitespace().collect();
                match parts.as_slice() {
                    [sum, size, name] => Ok((
                        (*sum).to_owned(),
                        size.parse()
                            .with_context(|| format!("bad size in {name}: line {line:?}"))?,
                        (*name).to_owned(),
                    )),
                    _ => bail!("bad {name}: line {line:?} in the apt record"),
                }
            })
            .collect()
    };
    let package = value("Package")?;
    let version = value("Version")?;
    if field("Checksums-Sha256").is_some() {
        let files = list("Checksums-Sha256")?;
        let md5 = list("Files")?;
        if files.is_empty() {
            bail!("no files in the source record of {package} {version}");
        }
        return Ok(Record {
            package,
            version,
            files,
            md5,
        });
    }
    let filename = value("Filename")?;
    let name = filename.rsplit('/').next().unwrap_or(&filename).to_owned();
    let size = value("Size")?
        .parse()
        .context("bad Size: in the apt record")?;
    Ok(Record {
        package,
        version,
        files: vec![(value("SHA256")?, size, name)],
        md5: Vec::new(),
    })
}

/// The source package's tarballs (the `.dsc` aside: its signature adds nothing to the
/// signed index these checksums come from, and some mirrors lack it).
fn is_tarball(name: &str) -> bool {
    name.contains(".tar.") && !name.ends_with(".asc")
}

/// A `.dsc` for `dpkg-source -x` made of the index's record of the source package.
pub fn dsc(record: &Record) -> String {
    let mut text = format!(
        "Format: 3.0 (quilt)\nSource: {}\nVersion: {}\nFiles:\n",
        record.package, record.version
    );
    for (sum, size, name) in record.md5.iter().filter(|f| is_tarball(&f.2)) {
        text.push_str(&format!(" {sum} {size} {name}\n"));
    }
    text.push_str("Checksums-Sha256:\n");
    for (sum, size, name) in record.files.iter().filter(|f| is_tarball(&f.2)) {
        text.push_str(&format!(" {sum} {size} {name}\n"));
    }
    text
}

/// apt pointed at the suite's sources and arm64 packages, apart from the host's own apt.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        let opt = |name: &str, value: &Path| format!("{name}={}", value.display());
        cmd.arg("-q")
            .arg("-o")
            .arg(opt("Dir::Etc::sourcelist", &self.dir.join("sources.list")))
            .arg("-o")
            .arg(opt(
                "Dir::Etc::SourceParts",
                &self.dir.join("sources.list.d"),
            ))
            .arg("-o")
            .arg(opt("Dir::State::Lists", &self.dir.join("lists")))
            .arg("-o")
            .arg(opt("Dir::Cache", &self.dir.join("cache")))
            .args(["-o", "Dir::State::Status=/dev/null"])
            .args([
                "-o",
                "APT::Architecture=arm64",
                "-o",
                "APT::Architectures=arm64",
            ])
            // Downloads land in directories only root can write.
            .args(["-o", "APT::Sandbox::User=root"]);
        cmd
    }

    fn update(&self) -> Result<()> {
        for sub in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        fs::write(
            self.dir.join("sources.list"),
            format!("deb-src {MIRROR} {SUITE} main\ndeb [arch=arm64] {MIRROR} {SUITE} main\n"),
        )?;
        output(self.command("apt-get").args(["-qq", "update"]))
            .context("cannot read the Debian archive's index for U-Boot's sources")?;
        Ok(())
    }
}

fn sha256_of(path: &Path) -> Result<String> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks that `dir` holds every file of `record` that `want` selects, with its checksum.
fn verify(dir: &Path, record: &Record, want: impl Fn(&str) -> bool) -> Result<()> {
    for (sum, _, name) in record.files.iter().filter(|f| want(&f.2)) {
        let got = sha256_of(&dir.join(name))?;
        if &got != sum {
            bail!(
                "{} has sha256 {got}, the archive's index says {sum}",
                dir.join(name).display()
            );
        }
    }
    Ok(())
}

/// The configuration fragment lines that must hold in the final `.config`.
pub fn fragment_settings(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
        })
        .collect()
}

/// Builds (or takes from the cache) both U-Boot configurations; returns their directory.
pub fn build(repo: &Path, cache: &Path) -> Result<PathBuf> {
    let additions = repo.join("image/uboot");
    // One build at a time per cache (clones share it): apt's lists, the work directory.
    fs::create_dir_all(cache.join("uboot"))?;
    let lock_path = cache.join("uboot/lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let apt = Apt {
        dir: cache.join("uboot/apt"),
    };
    apt.update()?;
    let source = parse_record(&output(
        apt.command("apt-cache").args(["showsrc", "u-boot"]),
    )?)
    .context("no u-boot source package in the index")?;
    let atf = parse_record(&output(
        apt.command("apt-cache")
            .args(["show", "arm-trusted-firmware"]),
    )?)
    .context("no arm-trusted-firmware package in the index")?;

    let mut key = Key::new("uboot-v1");
    key.text("suite", SUITE)
        .text("u-boot", &source.version)
        .text("arm-trusted-firmware", &atf.version);
    for (sum, _, name) in source.files.iter().chain(&atf.files) {
        key.text(name, sum);
    }
    key.path(&additions)?;
    let gcc = output(Command::new("aarch64-linux-gnu-gcc").arg("--version"))?;
    key.text("gcc", gcc.lines().next().unwrap_or(""));
    let key = key.finish();
    let dir = cache.join("uboot").join(&key);
    if dir.join("complete").exists() {
        eprintln!(
            "atomix-image: U-Boot {} {key} from the cache",
            source.version
        );
        return Ok(dir);
    }
    eprintln!(
        "atomix-image: building U-Boot {} (Debian's source, BL31 {}) {key} (cold: several minutes)",
        source.version, atf.version
    );

    let downloads = cache.join("uboot/downloads");
    fs::create_dir_all(&downloads)?;
    if verify(&downloads, &source, is_tarball).is_err() {
        for part in ["--tar-only", "--diff-only"] {
            run(apt
                .command("apt-get")
                .args(["source", "--download-only", part])
                .arg(format!("u-boot={}", source.version))
                .current_dir(&downloads))?;
        }
        verify(&downloads, &source, is_tarball)?;
    }
    if verify(&downloads, &atf, |_| true).is_err() {
        run(apt
            .command("apt-get")
            .arg("download")
            .arg(format!("arm-trusted-firmware={}", atf.version))
            .current_dir(&downloads))?;
        verify(&downloads, &atf, |_| true)?;
    }

    let work = cache.join("uboot/work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot empty {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let dsc = downloads.join(format!("{}_{}.atomix.dsc", source.package, source.version));
    fs::write(&dsc, self::dsc(&source))?;
    let src = work.join("src");
    // Unpacks the tarballs (checksums checked again) and applies Debian's patches.
    run(Command::new("dpkg-source")
        .args(["--no-check", "-x"])
        .arg(&dsc)
        .arg(&src))?;
    let patches = additions.join("patches");
    let mut names: Vec<PathBuf> = fs::read_dir(&patches)
        .with_context(|| format!("cannot list {}", patches.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for patch in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
    {
        run(Command::new("patch")
            .args([
                "-p1",
                "--forward",
                "--batch",
                "--no-backup-if-mismatch",
                "-s",
                "-i",
            ])
            .arg(patch)
            .current_dir(&src))
        .with_context(|| {
            format!(
                "{} does not apply to U-Boot {}",
                patch.display(),
                source.version
            )
        })?;
    }
    let atf_tree = work.join("atf");
    let atf_deb = downloads.join(&atf.files[0].2);
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&atf_deb)
        .arg(&atf_tree))?;
    let bl31 = atf_tree.join(BL31);
    if !bl31.exists() {
        bail!("no {BL31} in {}", atf_deb.display());
    }

    // Dates in the banner are the Debian upload's, as in Debian's own build.
    let epoch = output(
        Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(src.join("debian/changelog"))
            .args(["-S", "Timestamp"]),
    )?
    .trim()
    .to_owned();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let staged = work.join("out");
    for platform in PLATFORMS {
        let build = work.join(platform.name);
        fs::create_dir_all(&build)?;
        let fragment_path = additions.join(format!("{}.config", platform.name));
        let fragment = fs::read_to_string(&fragment_path)
            .with_context(|| format!("cannot read {}", fragment_path.display()))?;
        let make = |args: &[&str]| {
            let mut cmd = Command::new("make");
            cmd.arg(format!("O={}", build.display()))
                .arg("CROSS_COMPILE=aarch64-linux-gnu-")
                .arg(format!("BL31={}", bl31.display()))
                .args(args)
                .current_dir(&src)
                .stdin(std::process::Stdio::null())
                .env("SOURCE_DATE_EPOCH", &epoch)
                // binman and the other Python tools need Debian's python3 with its
                // modules (pyelftools, libfdt), not another python3 earlier on PATH.
                .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
            cmd
        };
        run(&mut make(&[&format!("{}_defconfig", platform.name)]))?;
        // Debian's build names its revision in the version string; ours adds "atomix".
        let config_path = build.join(".config");
        let config = fs::read_to_string(&config_path)?;
        let local = format!(
            "CONFIG_LOCALVERSION=\"-{}-atomix\"",
            source.version.split_once('-').map_or("", |v| v.1)
        );
        let config: String = config
            .lines()
            .map(|l| {
                if l.starts_with("CONFIG_LOCALVERSION=") {
                    local.clone()
                } else {
                    l.to_owned()
                }
            })
            .chain([String::new(), fragment.clone()])
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&config_path, config)?;
        run(&mut make(&["-s", "olddefconfig"]))?;
        let merged = fs::read_to_string(&config_path)?;
        let missing: Vec<&str> = fragment_settings(&fragment)
            .into_iter()
            .filter(|s| !merged.lines().any(|l| l == *s))
            .collect();
        if !missing.is_empty() {
            bail!(
                "U-Boot {} drops {} of {} (unmet dependencies?)",
                platform.name,
                missing.join(", "),
                fragment_path.display()
            );
        }
        let started = std::time::Instant::now();
        run(&mut make(&["-s", &format!("-j{jobs}")]))
            .with_context(|| format!("building U-Boot {}", platform.name))?;
        eprintln!(
            "atomix-image: U-Boot {} built in {:.0} s",
            platform.name,
            started.elapsed().as_secs_f64()
        );
        fs::create_dir_all(staged.join(platform.name))?;
        for out in platform.outputs {
            fs::copy(build.join(out), staged.join(platform.name).join(out))
                .with_context(|| format!("no {out} from U-Boot {}", platform.name))?;
        }
        fs::copy(&config_path, staged.join(platform.name).join("config"))?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staged, &dir)?;
    fs::write(
        dir.join("complete"),
        format!(
            "{key} u-boot {} arm-trusted-firmware {}\n",
            source.version, atf.version
        ),
    )?;
    fs::remove_dir_all(&work)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWSRC: &str = "Package: u-boot
Binary: u-boot, u-boot-qemu
Version: 2025.01-3+deb13u1
Format: 3.0 (quilt)
Files:
 82fbae83a04f7d35ec1fe70ded8b7e27 4329 u-boot_2025.01-3+deb13u1.dsc
 a9b03ef9a6a0fce2f913abc97a6f4bc5 32890299 u-boot_2025.01.orig.tar.bz2
 748fdffefb540d3e84e005b61449a4ba 687 u-boot_2025.01.orig.tar.bz2.asc
 d4d7c9789bbab728091ba1d3a8e99a59 174476 u-boot_2025.01-3+deb13u1.debian.tar.xz
Vcs-Browser: https://salsa.debian.org/debian/u-boot
Checksums-Sha256:
 21dbfd7fe193b127636814284b109382589eaa544a159d4b73b1cdae20a0094f 4329 u-boot_2025.01-3+deb13u1.dsc
 cdef7d507c93f1bbd9f015ea9bc21fa074268481405501945abc6f854d5b686f 32890299 u-boot_2025.01.orig.tar.bz2
 1111111111111111111111111111111111111111111111111111111111111111 687 u-boot_2025.01.orig.tar.bz2.asc
 c73a4efe85614af359f0be220e061a0b5c36bb4b3a121ca776dd988444b536f1 174476 u-boot_2025.01-3+deb13u1.debian.tar.xz

Package: u-boot
Version: 2024.01-1
";

    #[test]
    fn source_record_becomes_a_dsc_of_its_tarballs() {
        let record = parse_record(SHOWSRC).unwrap();
        assert_eq!(record.version, "2025.01-3+deb13u1");
        assert_eq!(record.files.len(), 4);
        assert_eq!(record.md5.len(), 4);
        let dsc = dsc(&record);
        assert!(
            dsc.starts_with("Format: 3.0 (quilt)\nSource: u-boot\nVersion: 2025.01-3+deb13u1\n")
        );
        assert!(dsc.contains(
            "\n cdef7d507c93f1bbd9f015ea9bc21fa074268481405501945abc6f854d5b686f 32890299 u-boot_2025.01.orig.tar.bz2\n"
        ));
        assert!(dsc.contains(
            "\n d4d7c9789bbab728091ba1d3a8e99a59 174476 u-boot_2025.01-3+deb13u1.debian.tar.xz\n"
        ));
        assert!(!dsc.contains(".asc"), "{dsc}");
        assert!(!dsc.contains(".dsc"), "{dsc}");
    }

    #[test]
    fn binary_record_names_its_deb() {
        let record = parse_record(
            "Package: arm-trusted-firmware\nVersion: 2.12.1+dfsg-1\nArchitecture: arm64\n\
             Filename: pool/main/a/arm-trusted-firmware/arm-trusted-firmware_2.12.1+dfsg-1_arm64.deb\n\
             Size: 515772\nSHA256: 59b4a600156ea2aea09c6dd38fcdec5077aa790a5c39d40dab6d61b7e52b59b3\n",
        )
        .unwrap();
        assert_eq!(
            record.files,
            vec![(
                "59b4a600156ea2aea09c6dd38fcdec5077aa790a5c39d40dab6d61b7e52b59b3".to_owned(),
                515772,
                "arm-trusted-firmware_2.12.1+dfsg-1_arm64.deb".to_owned()
            )]
        );
    }

    #[test]
    fn bad_records_are_refused() {
        assert!(parse_record("").is_err());
        assert!(parse_record("Package: u-boot\nVersion: 1\nChecksums-Sha256:\n abc\n").is_err());
        assert!(parse_record("Package: u-boot\nVersion: 1\nChecksums-Sha256:\n").is_err());
    }

    #[test]
    fn fragment_settings_are_the_option_lines() {
        let settings = fragment_settings(
            "# comment\nCONFIG_BUTTON=y\n\n# CONFIG_USB_FUNCTION_FASTBOOT is not set\nCONFIG_X=\"a b\"\n",
        );
        assert_eq!(
            settings,
            vec![
                "CONFIG_BUTTON=y",
                "# CONFIG_USB_FUNCTION_FASTBOOT is not set",
                "CONFIG_X=\"a b\""
            ]
        );
    }
}
