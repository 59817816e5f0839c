//! `atomix-image`: builds the flashable AtomixOS Rock64 disk image, boots it in QEMU, and
//! flashes it.
//!
//! `build` stages: base tree (mmdebstrap, cached by package list) → customised tree
//! (this repository's files) → initramfs (dracut, cached by its inputs) → squashfs →
//! boot partition (FAT, mtools) → U-Boot (built from Debian's source, cached by its
//! inputs) → GPT disk image with U-Boot → sha256 and bmap.
//! `bundle` builds the same and adds the signed RAUC update bundle of the build.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use sha2::{Digest, Sha256};

mod boot_partition;
mod bundle;
mod cache;
mod command;
mod disk_image;
mod flash;
mod initramfs;
mod qemu;
mod rootfs;
mod uboot;

use command::run;

/// The image file name in the output directory.
const IMAGE_NAME: &str = "atomixos-rock64.img";
/// The update bundle's file name in the output directory.
const BUNDLE_NAME: &str = "atomixos-rock64.raucb";

#[derive(Debug, Parser)]
#[command(version, about = "Build, boot and flash the AtomixOS Rock64 image")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the flashable disk image.
    Build(BuildArgs),
    /// Build the image and the signed RAUC update bundle of the same build.
    Bundle(BuildArgs),
    /// Build U-Boot alone (or take it from the cache); prints its directory.
    #[command(name = "u-boot")]
    Uboot {
        /// The repository (image/uboot/).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Downloaded packages and cached stages, kept between builds.
        #[arg(long, env = "ATOMIX_CACHE", default_value = "/var/cache/atomix")]
        cache: PathBuf,
    },
    /// Boot the built image in qemu-system-aarch64 through U-Boot, console on this terminal.
    Qemu(QemuArgs),
    /// Write the image's used blocks (its bmap) to a device, then verify them.
    Flash {
        image: PathBuf,
        device: PathBuf,
        /// Also write to a device that is not removable.
        #[arg(long)]
        force: bool,
        /// A config.toml or config bundle, checked first, placed on boot-a as the boot seed.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The repository (sysroot/, repart.d/, dracut-module/, image/).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Where the image and its companions go.
    #[arg(long, default_value = "build")]
    out: PathBuf,
    /// Downloaded packages and cached stages, kept between builds.
    #[arg(long, env = "ATOMIX_CACHE", default_value = "/var/cache/atomix")]
    cache: PathBuf,
    /// Build id shown by U-Boot and in /etc/os-release (default: dev-<git commit>).
    #[arg(long)]
    build_id: Option<String>,
    /// Public keys (authorized_keys format) trusted to provision devices of this build.
    /// Without it a development key pair is generated in the output directory.
    #[arg(long)]
    provisioning_key: Option<PathBuf>,
    /// The static aarch64 atomix-initrd.
    #[arg(long)]
    initrd_binary: PathBuf,
    /// The static aarch64 atomix-provision, when built.
    #[arg(long)]
    provision_binary: Option<PathBuf>,
    /// An extra kernel argument for boot.scr (repeatable), e.g. `quiet`.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    kernel_args: Vec<String>,
    /// Private key (PEM) signing this build's update bundles. Without it and
    /// --signing-cert, a development pair is generated in the output directory.
    #[arg(long, requires = "signing_cert")]
    signing_key: Option<PathBuf>,
    /// Certificate (PEM) of --signing-key.
    #[arg(long, requires = "signing_key")]
    signing_cert: Option<PathBuf>,
    /// Certificates devices of this image accept bundles under (default: the signing
    /// certificate).
    #[arg(long)]
    rauc_keyring: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct QemuArgs {
    /// The output directory of `build`.
    #[arg(long, default_value = "build")]
    out: PathBuf,
    /// Host port forwarded to the device's port 8080 on WAN (eth0).
    #[arg(long, default_value_t = 8080)]
    wan_port: u16,
    /// Host port forwarded to the device's LAN gateway address, port 8080 (eth1).
    #[arg(long, default_value_t = 8081)]
    lan_port: u16,
    /// Host port forwarded to the device's SSH on WAN.
    #[arg(long, default_value_t = 2222)]
    ssh_port: u16,
    /// Keep the disk of the previous run instead of starting from the pristine image.
    #[arg(long)]
    keep_disk: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build(args) => build(&args).map(|_| ()),
        Cmd::Bundle(args) => build_bundle(&args),
        Cmd::Uboot { repo, cache } => build_uboot(&repo, &cache),
        Cmd::Qemu(args) => run_qemu(&args),
        Cmd::Flash {
            image,
            device,
            force,
            config,
        } => flash::flash(&flash::Request {
            image: &image,
            device: &device,
            force,
            config: config.as_deref(),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atomix-image: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a build made, written to `build.json`.
#[derive(Debug, Serialize)]
struct Manifest {
    build_id: String,
    image: String,
    image_bytes: u64,
    sha256: String,
    rootfs_squashfs_bytes: u64,
    initrd_bytes: u64,
    kernel_version: String,
    rootfs_partuuid: String,
    /// Where the U-Boot builds the image took its blobs from.
    uboot_dir: String,
    stages: Vec<(String, u64)>,
}

struct Stages(Vec<(String, u64)>, Instant);

impl Stages {
    fn done(&mut self, name: &str) {
        let ms = u64::try_from(self.1.elapsed().as_millis()).unwrap_or(u64::MAX);
        eprintln!("atomix-image: stage {name}: {:.1} s", ms as f64 / 1000.0);
        self.0.push((name.to_owned(), ms));
        self.1 = Instant::now();
    }
}

/// What `bundle` needs from a build.
struct Built {
    build_id: String,
    out: PathBuf,
    boot_vfat: PathBuf,
    squashfs: PathBuf,
    signing: bundle::Signing,
}

fn build_bundle(args: &BuildArgs) -> Result<()> {
    let built = build(args)?;
    let started = Instant::now();
    let out = built.out.join(BUNDLE_NAME);
    bundle::build(
        &built.build_id,
        &built.boot_vfat,
        &built.squashfs,
        &built.signing,
        &built.out.join("work"),
        &out,
    )?;
    eprintln!(
        "atomix-image: bundle {} (build {}) in {:.0} s: {} MiB",
        out.display(),
        built.build_id,
        started.elapsed().as_secs_f64(),
        fs::metadata(&out)?.len() >> 20
    );
    Ok(())
}

fn build(args: &BuildArgs) -> Result<Built> {
    let started = Instant::now();
    let repo = fs::canonicalize(&args.repo).context("no repository")?;
    fs::create_dir_all(&args.out)?;
    let out = fs::canonicalize(&args.out)?;
    fs::create_dir_all(&args.cache)?;
    let cache = fs::canonicalize(&args.cache)?;
    // Held until the image is written: builds share the cache's work tree.
    let _cache_lock = cache::lock(&cache)?;
    let build_id = match &args.build_id {
        Some(id) => id.clone(),
        None => default_build_id(&repo),
    };
    let layout = disk_layout::Layout::read(&repo.join("repart.d"))?;
    let keys = provisioning_keys(args.provisioning_key.as_deref(), &out)?;
    for arg in &args.kernel_args {
        boot_partition::check_kernel_arg(arg)?;
    }
    let signing = bundle::signing(
        args.signing_key.as_deref(),
        args.signing_cert.as_deref(),
        args.rauc_keyring.as_deref(),
        &out,
    )?;
    let mut stages = Stages(Vec::new(), Instant::now());

    let base = rootfs::base_tree(&repo, &cache)?;
    stages.done("base-tree");

    let tree = cache.join("work/tree");
    rootfs::unpack(&base, &tree)?;
    rootfs::customize(
        &tree,
        &rootfs::Additions {
            repo: &repo,
            build_id: &build_id,
            initrd_binary: &args.initrd_binary,
            provision_binary: args.provision_binary.as_deref(),
            provisioning_keys: &keys,
            rauc_keyring: &signing.keyring,
        },
    )?;
    stages.done("customize");

    let kver = rootfs::kernel_version(&tree)?;
    let initrd = initramfs::build(&repo, &tree, &cache, &base.key, &args.initrd_binary, &kver)?;
    stages.done("initrd");

    // Kernel and device tree go to the boot partition; the squashfs keeps an empty /boot.
    let work = out.join("work");
    fs::create_dir_all(&work)?;
    let kernel = work.join("Image");
    fs::copy(tree.join(format!("boot/vmlinuz-{kver}")), &kernel)
        .context("no kernel in the tree")?;
    let dtb = work.join("rk3328-rock64.dtb");
    fs::copy(
        tree.join(format!(
            "usr/lib/linux-image-{kver}/rockchip/rk3328-rock64.dtb"
        )),
        &dtb,
    )
    .context("no rk3328-rock64.dtb in the kernel package")?;
    for entry in fs::read_dir(tree.join("boot"))? {
        let path = entry?.path();
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }

    let squashfs = work.join("rootfs.squashfs");
    let _ = fs::remove_file(&squashfs);
    run(Command::new("mksquashfs")
        .arg(&tree)
        .arg(&squashfs)
        .args(["-comp", "zstd", "-noappend", "-quiet", "-no-progress"])
        .args(["-e", "var/cache/apt/archives", "var/lib/apt/lists"])
        .env("SOURCE_DATE_EPOCH", "0"))?;
    stages.done("squashfs");

    let boot_scr = boot_partition::compile_boot_script(&repo, &build_id, &args.kernel_args, &work)?;
    let boot_def = layout
        .get(disk_layout::BOOT_A)
        .context("no boot-a definition")?;
    let boot_vfat = work.join("boot-a.vfat");
    boot_partition::build(
        &boot_vfat,
        boot_def
            .fixed_size_bytes()
            .context("boot-a needs a fixed size")?,
        &boot_partition::BootFiles {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            dtb,
            boot_scr,
        },
    )?;
    stages.done("boot-partition");

    let uboot = uboot::build(&repo, &cache)?;
    stages.done("u-boot");

    let plan = disk_image::DiskPlan::new(&layout, &build_id)?;
    let image = out.join(IMAGE_NAME);
    disk_image::write(
        &plan,
        &disk_image::DiskContents {
            idbloader: &uboot.join("rock64-rk3328/idbloader.img"),
            uboot_itb: &uboot.join("rock64-rk3328/u-boot.itb"),
            boot_vfat: &boot_vfat,
            rootfs_squashfs: &squashfs,
        },
        &image,
    )?;
    fs::copy(
        uboot.join("qemu_arm64/u-boot.bin"),
        out.join("u-boot-qemu.bin"),
    )
    .context("no qemu_arm64/u-boot.bin in the U-Boot build")?;
    let sha256 = sha256_file(&image)?;
    fs::write(
        out.join(format!("{IMAGE_NAME}.sha256")),
        format!("{sha256}  {IMAGE_NAME}\n"),
    )?;
    let bmap = out.join(format!("{IMAGE_NAME}.bmap"));
    let _ = fs::remove_file(&bmap);
    command::output(
        Command::new("bmaptool")
            .arg("create")
            .arg("-o")
            .arg(&bmap)
            .arg(&image),
    )?;
    stages.done("disk-image");

    let manifest = Manifest {
        build_id: build_id.clone(),
        image: image.display().to_string(),
        image_bytes: fs::metadata(&image)?.len(),
        sha256,
        rootfs_squashfs_bytes: fs::metadata(&squashfs)?.len(),
        initrd_bytes: fs::metadata(&initrd)?.len(),
        kernel_version: kver,
        rootfs_partuuid: plan.partition(disk_layout::ROOTFS_A).partuuid.to_string(),
        uboot_dir: uboot.display().to_string(),
        stages: stages.0,
    };
    fs::write(
        out.join("build.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    eprintln!(
        "atomix-image: built {} (build {build_id}) in {:.0} s: image {} MiB, squashfs {} MiB, initrd {} MiB",
        image.display(),
        started.elapsed().as_secs_f64(),
        manifest.image_bytes >> 20,
        manifest.rootfs_squashfs_bytes >> 20,
        manifest.initrd_bytes >> 20,
    );
    Ok(Built {
        build_id,
        out,
        boot_vfat,
        squashfs,
        signing,
    })
}

fn build_uboot(repo: &Path, cache: &Path) -> Result<()> {
    let started = Instant::now();
    let repo = fs::canonicalize(repo).context("no repository")?;
    fs::create_dir_all(cache)?;
    let dir = uboot::build(&repo, &fs::canonicalize(cache)?)?;
    eprintln!(
        "atomix-image: U-Boot ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("{}", dir.display());
    Ok(())
}

fn default_build_id(repo: &Path) -> String {
    let commit = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--short=8", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["status", "--porcelain"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    format!("dev-{commit}{}", if dirty { "-dirty" } else { "" })
}

/// The trusted provisioning keys: the given file, or a development key pair generated
/// (once) in the output directory.
fn provisioning_keys(given: Option<&Path>, out: &Path) -> Result<PathBuf> {
    if let Some(path) = given {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read provisioning keys {}", path.display()))?;
        if !text
            .lines()
            .any(|l| l.trim_start().starts_with("ssh-") || l.trim_start().starts_with("ecdsa-"))
        {
            bail!("{} holds no OpenSSH public key", path.display());
        }
        return Ok(path.to_owned());
    }
    let key = out.join("dev-provisioning-key");
    if !key.exists() {
        command::output(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "atomixos-development-provisioning",
                    "-f",
                ])
                .arg(&key),
        )?;
    }
    eprintln!(
        "atomix-image: WARNING: no --provisioning-key given: devices of this image trust the \
         DEVELOPMENT key {} (private key beside it). Never ship such an image.",
        key.display()
    );
    Ok(out.join("dev-provisioning-key.pub"))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn run_qemu(args: &QemuArgs) -> Result<()> {
    let image = args.out.join(IMAGE_NAME);
    if !image.exists() {
        bail!("no image at {}: run the build first", image.display());
    }
    let disk = args.out.join("qemu-disk.qcow2");
    if !(args.keep_disk && disk.exists()) {
        qemu::create_overlay(&image, &disk)?;
    }
    qemu::run_interactive(&qemu::Machine {
        bios: args.out.join("u-boot-qemu.bin"),
        disk,
        wan_port: args.wan_port,
        lan_port: args.lan_port,
        ssh_port: args.ssh_port,
        memory_mib: 1024,
    })
}
