//! `update-install URL`: what `atomix-update.service` runs. Installs the bundle at URL
//! with `rauc install` unless its version is the running build or is already in the
//! other slot (installed and waiting for a reboot, or fallen back from): a timer that
//! fires every few hours must not rewrite a slot, or retry a bad update, each time.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use atomix_provision::paths::Paths;
use atomix_provision::system::run_command;
use boot_state::BootRecord;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle's URL (or path).
    pub url: String,
    /// Prefix of the paths (the boot record).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

/// What to do with a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Install,
    Skip(String),
}

/// A rootfs slot that is not the booted one, as `rauc status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherSlot {
    pub bootname: String,
    /// The version of the bundle last installed into it, if any.
    pub version: Option<String>,
    /// `good` or `bad` (the bootloader's view).
    pub boot_status: Option<String>,
}

/// Install unless the version runs already or sits in another slot.
pub fn decide(bundle_version: &str, booted_build: Option<&str>, others: &[OtherSlot]) -> Decision {
    if booted_build == Some(bundle_version) {
        return Decision::Skip(format!("build {bundle_version} is the running one"));
    }
    for slot in others {
        if slot.version.as_deref() == Some(bundle_version) {
            let status = slot.boot_status.as_deref().unwrap_or("unknown");
            return Decision::Skip(format!(
                "build {bundle_version} is already installed in slot {} (boot status {status}){}",
                slot.bootname,
                if status == "bad" {
                    ": the device fell back from it, it is not retried"
                } else {
                    ": it boots at the next reboot"
                }
            ));
        }
    }
    Decision::Install
}

/// The rootfs slots other than the booted one, from `rauc status --detailed
/// --output-format=json`.
pub fn other_slots(status: &Value) -> Vec<OtherSlot> {
    let mut out = Vec::new();
    for entry in status["slots"].as_array().into_iter().flatten() {
        let Some(map) = entry.as_object() else {
            continue;
        };
        for slot in map.values() {
            if slot["class"] != "rootfs" || slot["state"] == "booted" {
                continue;
            }
            out.push(OtherSlot {
                bootname: slot["bootname"].as_str().unwrap_or("?").to_owned(),
                version: slot["slot_status"]["bundle"]["version"]
                    .as_str()
                    .map(str::to_owned),
                boot_status: slot["boot_status"].as_str().map(str::to_owned),
            });
        }
    }
    out
}

/// What a `rauc ... --output-format=json` command printed.
fn json_of(argv: &[&str]) -> anyhow::Result<Value> {
    let out = run_command(argv)?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: no JSON on stdout", argv.join(" ")))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let info = json_of(&["rauc", "info", "--output-format=json", &args.url])?;
    let version = info["version"]
        .as_str()
        .with_context(|| format!("{}: the bundle names no version", args.url))?;
    let status = json_of(&["rauc", "status", "--detailed", "--output-format=json"])?;
    let paths = Paths::new(&args.root);
    let record: Option<BootRecord> = boot_state::read_record(&paths.boot_record())
        .with_context(|| format!("cannot read {}", paths.boot_record().display()))?;
    let booted = record.as_ref().and_then(|r| r.build_id.as_deref());
    match decide(version, booted, &other_slots(&status)) {
        Decision::Skip(why) => {
            println!("{}: not installed: {why}", args.url);
            Ok(ExitCode::SUCCESS)
        }
        Decision::Install => {
            println!("{}: installing build {version}", args.url);
            // No wait or retry around this: `rauc info` of a verity bundle reads the
            // signature through the streaming server and sets up no NBD device, and the
            // install's own NBD device is kept from udev's early close by
            // 60-atomix-nbd-hold.rules (see atomix_provision::nbd).
            let status = Command::new("rauc")
                .arg("install")
                .arg(&args.url)
                .status()
                .context("cannot run rauc install")?;
            if !status.success() {
                bail!("rauc install {} failed ({status})", args.url);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_only_what_is_neither_running_nor_in_the_other_slot() {
        let other = |version: Option<&str>, status: &str| OtherSlot {
            bootname: "B".into(),
            version: version.map(str::to_owned),
            boot_status: Some(status.into()),
        };
        assert_eq!(
            decide("v2", Some("v1"), &[other(None, "bad")]),
            Decision::Install
        );
        assert_eq!(
            decide("v2", Some("v1"), &[other(Some("v1"), "good")]),
            Decision::Install
        );
        let Decision::Skip(why) = decide("v1", Some("v1"), &[]) else {
            panic!("running build installed again")
        };
        assert_eq!(why, "build v1 is the running one");
        let Decision::Skip(why) = decide("v2", Some("v1"), &[other(Some("v2"), "good")]) else {
            panic!("pending build installed again")
        };
        assert!(why.ends_with("it boots at the next reboot"), "{why}");
        let Decision::Skip(why) = decide("v3", Some("v1"), &[other(Some("v3"), "bad")]) else {
            panic!("a bad update retried")
        };
        assert!(why.contains("fell back from it"), "{why}");
    }

    #[test]
    fn reads_the_other_rootfs_slot_from_rauc_status() {
        let status: Value = serde_json::from_str(
            r#"{"compatible":"atomixos-rock64","booted":"A","boot_primary":"rootfs.1",
               "slots":[
                 {"boot.0":{"class":"boot","state":"active","bootname":null}},
                 {"rootfs.0":{"class":"rootfs","state":"booted","bootname":"A","boot_status":"good",
                   "slot_status":{"bundle":{"version":"v1"}}}},
                 {"rootfs.1":{"class":"rootfs","state":"inactive","bootname":"B","boot_status":"bad",
                   "slot_status":{"bundle":{"version":"v3"},"status":"ok"}}}
               ]}"#,
        )
        .unwrap();
        assert_eq!(
            other_slots(&status),
            [OtherSlot {
                bootname: "B".into(),
                version: Some("v3".into()),
                boot_status: Some("bad".into()),
            }]
        );
    }
}
