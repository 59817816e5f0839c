//! The kernel command line arguments U-Boot's `boot.scr` passes to early boot:
//! `atomix.slot=a|b`, `atomix.root=PARTUUID=<uuid>` and the optional `atomix.build=<id>`.

use boot_state::Slot;
use uuid::Uuid;

/// What early boot needs from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub slot: Slot,
    /// PARTUUID of the booted slot's root filesystem partition; the boot record spells it lower-case.
    pub root_partuuid: Uuid,
    pub build_id: Option<String>,
}

/// A missing or malformed `atomix.*` argument.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("kernel command line has no {0}= argument (boot.scr must pass it)")]
    Missing(&'static str),
    #[error("kernel command line argument {arg}={value:?} is malformed: {reason}")]
    Malformed {
        arg: &'static str,
        value: String,
        reason: String,
    },
}

const SLOT: &str = "atomix.slot";
const ROOT: &str = "atomix.root";
const BUILD: &str = "atomix.build";

/// Parses the contents of `/proc/cmdline`. The last occurrence of an argument wins, as
/// for the kernel's own parameters.
pub fn parse(cmdline: &str) -> Result<BootArgs, CmdlineError> {
    let mut slot = None;
    let mut root = None;
    let mut build = None;
    for word in split_words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        let target = match key {
            SLOT => &mut slot,
            ROOT => &mut root,
            BUILD => &mut build,
            _ => continue,
        };
        *target = Some(value.unwrap_or("").to_owned());
    }

    let slot_value = slot.ok_or(CmdlineError::Missing(SLOT))?;
    let slot = match slot_value.as_str() {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => {
            return Err(CmdlineError::Malformed {
                arg: SLOT,
                value: slot_value,
                reason: "expected \"a\" or \"b\"".into(),
            })
        }
    };

    let root_value = root.ok_or(CmdlineError::Missing(ROOT))?;
    let malformed_root = |reason: &str| CmdlineError::Malformed {
        arg: ROOT,
        value: root_value.clone(),
        reason: reason.to_owned(),
    };
    let uuid_text = root_value
        .strip_prefix("PARTUUID=")
        .ok_or_else(|| malformed_root("expected PARTUUID=<uuid>"))?;
    let root_partuuid =
        Uuid::parse_str(uuid_text).map_err(|e| malformed_root(&format!("not a UUID ({e})")))?;

    let build_id = match build {
        None => None,
        Some(id) if id.is_empty() => {
            return Err(CmdlineError::Malformed {
                arg: BUILD,
                value: id,
                reason: "empty build id".into(),
            })
        }
        Some(id) => Some(id),
    };

    Ok(BootArgs {
        slot,
        root_partuuid,
        build_id,
    })
}

/// Splits the command line into words the way the kernel does: on whitespace, with
/// double quotes grouping (and being removed).
fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            c => {
                current.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8c4e2f4e-6d1a-4b1e-9f31-2b2f4a0f6a01";

    #[test]
    fn parses_full_command_lines() {
        let cases: &[(&str, Slot, Option<&str>)] = &[
            (
                "console=ttyS2,1500000 atomix.slot=a atomix.root=PARTUUID=8c4e2f4e-6d1a-4b1e-9f31-2b2f4a0f6a01 rauc.slot=A atomix.build=20261127.3\n",
                Slot::A,
                Some("20261127.3"),
            ),
            (
                "atomix.root=PARTUUID=8C4E2F4E-6D1A-4B1E-9F31-2B2F4A0F6A01 atomix.slot=b quiet",
                Slot::B,
                None,
            ),
            (
                "atomix.slot=b atomix.slot=a atomix.root=\"PARTUUID=8c4e2f4e-6d1a-4b1e-9f31-2b2f4a0f6a01\"",
                Slot::A,
                None,
            ),
        ];
        for (line, slot, build) in cases {
            let args = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(args.slot, *slot, "{line}");
            assert_eq!(args.root_partuuid, Uuid::parse_str(UUID).unwrap(), "{line}");
            assert_eq!(args.build_id.as_deref(), *build, "{line}");
        }
    }

    #[test]
    fn errors_name_the_argument() {
        let cases: &[(&str, &str)] = &[
            ("quiet", "no atomix.slot= argument"),
            ("atomix.slot=a", "no atomix.root= argument"),
            ("atomix.slot=c atomix.root=PARTUUID=x", "atomix.slot=\"c\" is malformed"),
            ("atomix.slot atomix.root=PARTUUID=x", "atomix.slot=\"\" is malformed"),
            ("atomix.slot=a atomix.root=/dev/mmcblk0p2", "expected PARTUUID=<uuid>"),
            ("atomix.slot=a atomix.root=PARTUUID=1234", "atomix.root=\"PARTUUID=1234\" is malformed: not a UUID"),
            (
                "atomix.slot=a atomix.root=PARTUUID=8c4e2f4e-6d1a-4b1e-9f31-2b2f4a0f6a01 atomix.build=",
                "atomix.build=\"\" is malformed: empty build id",
            ),
        ];
        for (line, expected) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn ignores_lookalike_keys() {
        let err = parse("xatomix.slot=a atomix.slotx=a").unwrap_err();
        assert_eq!(err, CmdlineError::Missing(SLOT));
    }
}
