//! The command line of `atomix-initrd`. Parsed with `lexopt` rather than clap: the binary
//! lives in the initramfs with a 1.25 MiB budget (scripts/build-initrd-binary.sh), and clap alone costs more than 100 KiB.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::plan::Stage;

/// Where the dracut module installs the partition definitions.
pub const DEFAULT_REPART_DIR: &str = "/usr/lib/atomix/repart.d";

pub const USAGE: &str = "\
atomix-initrd: AtomixOS early-boot provisioner (runs in the initramfs)

Usage:
  atomix-initrd [--kmsg PATH] setup [--cmdline FILE] [--root DIR] [--repart-dir DIR]
                                    [--stage all|pre-sysroot|post-sysroot] [--device-timeout SECS]
  atomix-initrd plan [--cmdline FILE] [--root DIR] [--repart-dir DIR] [--device-timeout SECS]
  atomix-initrd sysroot-unit
  atomix-initrd --help | --version

Commands:
  setup         run the early-boot sequence (or one stage of it)
  plan          inspect the boot disk and print what setup would decide, changing nothing
  sysroot-unit  print sysroot.mount (the overlay root), which the dracut module installs

Options:
  --kmsg PATH            where log lines go, with kernel levels [default: /dev/kmsg]
  --cmdline FILE         kernel command line to read atomix.* from [default: /proc/cmdline]
  --root DIR             prefix of every path mounted or written [default: /]
  --repart-dir DIR       systemd-repart definitions of the layout [default: /usr/lib/atomix/repart.d]
  --stage STAGE          all, pre-sysroot or post-sysroot [default: all]
  --device-timeout SECS  how long to wait for partitions to appear [default: 30]
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub kmsg: PathBuf,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Setup(SetupArgs),
    /// Inspect and print the plan, without side effects (`--stage` does not apply).
    Plan(SetupArgs),
    SysrootUnit,
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupArgs {
    pub cmdline: PathBuf,
    pub root: PathBuf,
    pub repart_dir: PathBuf,
    pub stage: Stage,
    pub device_timeout: u64,
}

impl Default for SetupArgs {
    fn default() -> Self {
        SetupArgs {
            cmdline: "/proc/cmdline".into(),
            root: "/".into(),
            repart_dir: DEFAULT_REPART_DIR.into(),
            stage: Stage::All,
            device_timeout: 30,
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut kmsg = PathBuf::from("/dev/kmsg");
    let mut command: Option<String> = None;
    let mut setup = SetupArgs::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => {
                return Ok(Cli {
                    kmsg,
                    command: Command::Help,
                })
            }
            Long("version") | Short('V') => {
                return Ok(Cli {
                    kmsg,
                    command: Command::Version,
                })
            }
            Long("kmsg") => kmsg = parser.value()?.into(),
            Long("cmdline") if takes_setup_options(&command) => {
                setup.cmdline = parser.value()?.into()
            }
            Long("root") if takes_setup_options(&command) => setup.root = parser.value()?.into(),
            Long("repart-dir") if takes_setup_options(&command) => {
                setup.repart_dir = parser.value()?.into()
            }
            Long("stage") if command.as_deref() == Some("setup") => {
                setup.stage = match parser.value()?.string()?.as_str() {
                    "all" => Stage::All,
                    "pre-sysroot" => Stage::PreSysroot,
                    "post-sysroot" => Stage::PostSysroot,
                    other => {
                        return Err(format!(
                            "invalid --stage {other:?}: expected all, pre-sysroot or post-sysroot"
                        )
                        .into())
                    }
                }
            }
            Long("device-timeout") if takes_setup_options(&command) => {
                setup.device_timeout = parser.value()?.parse()?
            }
            Value(value) if command.is_none() => command = Some(value.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let command = match command.as_deref() {
        Some("setup") => Command::Setup(setup),
        Some("plan") => Command::Plan(setup),
        Some("sysroot-unit") => Command::SysrootUnit,
        Some(other) => return Err(format!("unknown command {other:?}; see --help").into()),
        None => return Err("a command is required; see --help".into()),
    };
    Ok(Cli { kmsg, command })
}

/// `setup` and `plan` read the same disk the same way.
fn takes_setup_options(command: &Option<String>) -> bool {
    matches!(command.as_deref(), Some("setup" | "plan"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Cli, String> {
        parse(line.split_whitespace().map(OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_setup_with_every_option() {
        let cli = parse_str(
            "--kmsg /tmp/k setup --cmdline /c --root /r --repart-dir /d --stage pre-sysroot --device-timeout 5",
        )
        .unwrap();
        assert_eq!(cli.kmsg, PathBuf::from("/tmp/k"));
        assert_eq!(
            cli.command,
            Command::Setup(SetupArgs {
                cmdline: "/c".into(),
                root: "/r".into(),
                repart_dir: "/d".into(),
                stage: Stage::PreSysroot,
                device_timeout: 5,
            })
        );
        assert_eq!(
            parse_str("setup").unwrap().command,
            Command::Setup(SetupArgs::default())
        );
        assert_eq!(
            parse_str("setup --kmsg=/dev/null").unwrap().kmsg,
            PathBuf::from("/dev/null")
        );
    }

    #[test]
    fn parses_plan_with_the_options_that_read_the_disk() {
        assert_eq!(
            parse_str("plan --cmdline /c --root /r --repart-dir /d --device-timeout 1")
                .unwrap()
                .command,
            Command::Plan(SetupArgs {
                cmdline: "/c".into(),
                root: "/r".into(),
                repart_dir: "/d".into(),
                stage: Stage::All,
                device_timeout: 1,
            })
        );
        let err = parse_str("plan --stage pre-sysroot").unwrap_err();
        assert!(err.contains("--stage"), "{err}");
    }

    #[test]
    fn parses_sysroot_unit() {
        assert_eq!(
            parse_str("sysroot-unit").unwrap().command,
            Command::SysrootUnit
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "a command is required"),
            ("frobnicate", "unknown command \"frobnicate\""),
            ("setup --stage later", "invalid --stage \"later\""),
            ("setup --device-timeout soon", "soon"),
            ("setup --bogus", "--bogus"),
            ("sysroot-unit --root /", "--root"),
            ("generate", "unknown command \"generate\""),
            ("setup --root", "--root"),
        ];
        for (line, expected) in cases {
            let err = parse_str(line).unwrap_err();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
    }
}
