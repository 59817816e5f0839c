//! The records that early boot (`atomix-initrd`) hands to the booted system
//! (`atomix-provision`), and the crash-safe way both write files.
//!
//! * [`FreshFlashMarker`] — `/data/atomix/fresh-flash`: present from the first boot after a
//!   flash until the provisioning service has dealt with `/boot/config.toml`.
//! * [`BootRecord`] — `/run/atomix/boot.json`: what this boot's initrd found and did.
//!
//! Both are contracts (DESIGN.md sections 2-4): the field names are relied on by tests and
//! by the provisioning service, so they are declared here once and imported everywhere.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the fresh-flash marker lives, relative to the mount point of the data partition.
pub const MARKER_IN_DATA: &str = "atomix/fresh-flash";
/// Where the boot record lives, relative to the root of the running system (or initrd).
pub const BOOT_RECORD_PATH: &str = "run/atomix/boot.json";

/// An A/B slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The lower-case letter used on the kernel command line and in partition labels.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    /// The other slot of the pair.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A slot name that is neither `a` nor `b`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown slot {0:?}: expected \"a\" or \"b\"")]
pub struct UnknownSlot(pub String);

impl FromStr for Slot {
    type Err = UnknownSlot;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" | "A" => Ok(Slot::A),
            "b" | "B" => Ok(Slot::B),
            other => Err(UnknownSlot(other.to_owned())),
        }
    }
}

/// `/data/atomix/fresh-flash` (contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FreshFlashMarker {
    /// `atomix.build=` of the boot that found the freshly flashed disk, if it had one.
    pub build_id: Option<String>,
    /// The slot that boot ran from.
    pub slot: Slot,
    /// When the marker was made, RFC 3339 in UTC.
    pub created: String,
}

/// `/run/atomix/boot.json` (contract): what this boot's initrd found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct BootRecord {
    pub slot: Slot,
    /// `atomix.build=` from the kernel command line, if given.
    pub build_id: Option<String>,
    /// PARTUUID of the root filesystem partition of the booted slot.
    pub root_partuuid: String,
    /// The root partition's device node, e.g. `/dev/mmcblk0p2`.
    pub root_device: String,
    /// The whole disk that holds the booted slot, e.g. `/dev/mmcblk0`.
    pub disk: String,
    /// The booted slot's boot partition (`boot-a` or `boot-b`), mounted at `/boot`.
    pub boot_device: Option<String>,
    /// True when this boot found the disk as flashed (no `boot-b` partition yet).
    pub fresh_flash: bool,
    /// PARTLABELs of the partitions `systemd-repart` added during this boot.
    pub partitions_created: Vec<String>,
    /// True when this boot formatted a `data` partition that had no filesystem.
    pub data_formatted: bool,
    /// The data partition's device node, once known.
    pub data_device: Option<String>,
    /// Filesystem type found (or made) on the data partition.
    pub data_fstype: Option<String>,
    /// Each step that ran, in order, with its duration.
    pub steps: Vec<StepTiming>,
}

/// How long one early-boot step took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct StepTiming {
    pub step: String,
    pub duration_ms: u64,
}

/// Failure to read or write one of these records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid record")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Parses a record from its JSON text.
pub fn parse_record<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads and parses a record; `Ok(None)` when the file does not exist.
pub fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    parse_record(&text)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Serialises a record as pretty JSON and writes it with [`write_atomic`].
pub fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<(), StateError> {
    let mut text = serde_json::to_vec_pretty(record).expect("records always serialise");
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Writes `contents` to `path` so that after a power cut at any instant the path holds
/// either its old contents or all of the new ones: a temporary file in the same directory,
/// fsync, rename over the target, fsync of the directory. Missing parent directories are
/// created (and made durable) first.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir_all_durable(dir).map_err(err)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))
        .map_err(err)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// `create_dir_all`, then fsync of every directory whose entry list changed, so the new
/// directories survive a power cut together with what is written into them.
fn create_dir_all_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut first_existing = dir;
    while let Some(parent) = first_existing.parent() {
        first_existing = parent;
        if parent.as_os_str().is_empty() || parent.is_dir() {
            break;
        }
    }
    fs::create_dir_all(dir)?;
    let mut d = dir;
    loop {
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
        if parent == first_existing || d == first_existing {
            break;
        }
        d = parent;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_parses_both_cases_and_rejects_others() {
        assert_eq!("a".parse(), Ok(Slot::A));
        assert_eq!("B".parse(), Ok(Slot::B));
        assert_eq!("c".parse::<Slot>(), Err(UnknownSlot("c".into())));
        assert_eq!(Slot::A.other(), Slot::B);
    }

    #[test]
    fn marker_round_trips_and_rejects_unknown_fields() {
        let marker = FreshFlashMarker {
            build_id: Some("20261127.1".into()),
            slot: Slot::A,
            created: "2026-11-27T05:00:00Z".into(),
        };
        let text = serde_json::to_string(&marker).unwrap();
        assert_eq!(
            text,
            r#"{"build_id":"20261127.1","slot":"a","created":"2026-11-27T05:00:00Z"}"#
        );
        assert_eq!(parse_record::<FreshFlashMarker>(&text).unwrap(), marker);
        let extra = r#"{"build_id":null,"slot":"a","created":"x","extra":1}"#;
        let err = parse_record::<FreshFlashMarker>(extra).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn write_atomic_creates_parents_and_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/record.json");
        write_atomic(&path, b"first, longer contents").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("record.json")]);
    }

    #[test]
    fn read_record_missing_is_none_and_garbage_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.json");
        assert!(read_record::<BootRecord>(&path).unwrap().is_none());
        fs::write(&path, "{not json").unwrap();
        let err = read_record::<BootRecord>(&path).unwrap_err();
        assert!(err.to_string().contains("boot.json"), "{err}");
    }
}
