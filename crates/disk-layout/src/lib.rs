//! The AtomixOS partition layout (DESIGN.md section 2).
//!
//! The `systemd-repart` definitions in `repart.d/` are the one place where partitions, their
//! types and their sizes are written down. Early boot hands them to `systemd-repart` to add
//! what a freshly flashed disk lacks; the image builder reads the same files to size the
//! partitions it writes, so slot A and slot B can never disagree.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// PARTLABELs of the layout (contract).
pub const BOOT_A: &str = "boot-a";
pub const ROOTFS_A: &str = "rootfs-a";
pub const BOOT_B: &str = "boot-b";
pub const ROOTFS_B: &str = "rootfs-b";
pub const DATA: &str = "data";

/// The first LBA (512-byte sectors) any partition may use: the Rock64 boot ROM reads
/// `idbloader.img` at sector 64 and `u-boot.itb` at sector 16384, so everything below
/// 16 MiB belongs to the bootloader.
pub const FIRST_USABLE_LBA: u64 = 32768;

/// One `[Partition]` definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDefinition {
    /// File name, e.g. `50-data.conf`; definitions apply in file name order.
    pub file_name: String,
    /// `Label=`: the PARTLABEL, by which early boot tells which partitions exist.
    pub label: String,
    /// `Type=` as written (a repart type name or a UUID).
    pub type_name: String,
    /// `Format=`, if repart formats the partition.
    pub format: Option<String>,
    pub size_min_bytes: Option<u64>,
    pub size_max_bytes: Option<u64>,
    /// The file's text, so it can be handed on to `systemd-repart` unchanged.
    pub text: String,
}

impl PartitionDefinition {
    /// The fixed size of the partition, when `SizeMinBytes=` and `SizeMaxBytes=` agree.
    pub fn fixed_size_bytes(&self) -> Option<u64> {
        match (self.size_min_bytes, self.size_max_bytes) {
            (Some(min), Some(max)) if min == max => Some(min),
            _ => None,
        }
    }

    /// The GPT partition type GUID for `Type=`, for the repart type names this layout uses.
    pub fn type_guid(&self) -> Option<&'static str> {
        type_guid(&self.type_name)
    }
}

/// GPT type GUIDs of the repart type names the layout uses (systemd's Discoverable
/// Partitions Specification).
pub fn type_guid(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "xbootldr" => "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        "esp" => "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "root-arm64" => "b921b045-1df0-41c3-af44-4c6f280d3fae",
        "linux-generic" => "0fc63daf-8483-4772-8e79-3d69d8477de4",
        _ => return None,
    })
}

/// What is wrong with a definition file.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: no {key}= in [Partition]")]
    MissingKey { file: String, key: &'static str },
    #[error("cannot read partition definitions in {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: no *.conf partition definitions")]
    Empty { dir: PathBuf },
    #[error("{dir}: label {label:?} is defined by both {first} and {second}")]
    DuplicateLabel {
        dir: PathBuf,
        label: String,
        first: String,
        second: String,
    },
}

/// Parses one repart definition file. Only the keys the layout relies on are interpreted;
/// every other key is kept in [`PartitionDefinition::text`] for repart itself.
pub fn parse_definition(file_name: &str, text: &str) -> Result<PartitionDefinition, LayoutError> {
    let syntax = |line: usize, message: String| LayoutError::Syntax {
        file: file_name.to_owned(),
        line,
        message,
    };
    let mut section: Option<String> = None;
    let mut label = None;
    let mut type_name = None;
    let mut format = None;
    let mut size_min_bytes = None;
    let mut size_max_bytes = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| syntax(line_no, format!("unterminated section header {line:?}")))?;
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| syntax(line_no, format!("expected KEY=VALUE, found {line:?}")))?;
        let (key, value) = (key.trim(), value.trim());
        match section.as_deref() {
            Some("Partition") => {}
            Some(_) => continue,
            None => return Err(syntax(line_no, format!("{key}= outside of a section"))),
        }
        let bytes =
            |v: &str| parse_bytes(v).map_err(|m| syntax(line_no, format!("{key}={v}: {m}")));
        match key {
            "Label" => label = Some(value.to_owned()),
            "Type" => type_name = Some(value.to_owned()),
            "Format" => format = Some(value.to_owned()),
            "SizeMinBytes" => size_min_bytes = Some(bytes(value)?),
            "SizeMaxBytes" => size_max_bytes = Some(bytes(value)?),
            _ => {}
        }
    }
    let missing = |key| LayoutError::MissingKey {
        file: file_name.to_owned(),
        key,
    };
    Ok(PartitionDefinition {
        file_name: file_name.to_owned(),
        label: label.ok_or_else(|| missing("Label"))?,
        type_name: type_name.ok_or_else(|| missing("Type"))?,
        format,
        size_min_bytes,
        size_max_bytes,
        text: text.to_owned(),
    })
}

/// Parses a repart size: a number with an optional `K`, `M`, `G` or `T` suffix (base 1024).
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, factor) = match value.chars().last() {
        Some('K') => (&value[..value.len() - 1], 1u64 << 10),
        Some('M') => (&value[..value.len() - 1], 1 << 20),
        Some('G') => (&value[..value.len() - 1], 1 << 30),
        Some('T') => (&value[..value.len() - 1], 1 << 40),
        _ => (value, 1),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| "expected a size such as 512M or 1G".to_owned())?;
    number
        .checked_mul(factor)
        .ok_or_else(|| "size too large".to_owned())
}

/// All definitions of a `repart.d/` directory, in the order repart applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub definitions: Vec<PartitionDefinition>,
}

impl Layout {
    /// Reads every `*.conf` in `dir`.
    pub fn read(dir: &Path) -> Result<Layout, LayoutError> {
        let read_err = |source| LayoutError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                files.push(name);
            }
        }
        files.sort();
        let mut pairs = Vec::new();
        for name in files {
            let path = dir.join(&name);
            let text = fs::read_to_string(&path).map_err(|source| LayoutError::Read {
                path: path.clone(),
                source,
            })?;
            pairs.push((name, text));
        }
        Layout::from_files(dir, &pairs)
    }

    /// Builds the layout from `(file name, text)` pairs, as [`Layout::read`] would.
    pub fn from_files(dir: &Path, files: &[(String, String)]) -> Result<Layout, LayoutError> {
        let mut sorted: Vec<_> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut definitions: Vec<PartitionDefinition> = Vec::new();
        for (name, text) in sorted {
            let def = parse_definition(name, text)?;
            if let Some(first) = definitions.iter().find(|d| d.label == def.label) {
                return Err(LayoutError::DuplicateLabel {
                    dir: dir.to_owned(),
                    label: def.label,
                    first: first.file_name.clone(),
                    second: def.file_name,
                });
            }
            definitions.push(def);
        }
        if definitions.is_empty() {
            return Err(LayoutError::Empty {
                dir: dir.to_owned(),
            });
        }
        Ok(Layout {
            dir: dir.to_owned(),
            definitions,
        })
    }

    /// The definition with this label.
    pub fn get(&self, label: &str) -> Option<&PartitionDefinition> {
        self.definitions.iter().find(|d| d.label == label)
    }

    /// Labels in repart order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.definitions.iter().map(|d| d.label.as_str())
    }
}

impl fmt::Display for PartitionDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, self.file_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_layout() -> Layout {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../repart.d");
        Layout::read(&dir).expect("repart.d parses")
    }

    #[test]
    fn repo_definitions_describe_the_contract_layout() {
        let layout = repo_layout();
        let labels: Vec<_> = layout.labels().collect();
        assert_eq!(labels, [BOOT_A, ROOTFS_A, BOOT_B, ROOTFS_B, DATA]);
        let data = layout.get(DATA).unwrap();
        assert_eq!(data.format.as_deref(), Some("f2fs"));
        assert_eq!(
            data.fixed_size_bytes(),
            None,
            "data takes all remaining space"
        );
        assert_eq!(layout.get(BOOT_B).unwrap().format.as_deref(), Some("vfat"));
        for def in &layout.definitions {
            assert!(
                def.type_guid().is_some(),
                "{def}: unknown Type={}",
                def.type_name
            );
        }
    }

    #[test]
    fn slots_a_and_b_have_the_same_fixed_sizes_and_types() {
        let layout = repo_layout();
        for (a, b) in [(BOOT_A, BOOT_B), (ROOTFS_A, ROOTFS_B)] {
            let (a, b) = (layout.get(a).unwrap(), layout.get(b).unwrap());
            assert!(a.fixed_size_bytes().is_some(), "{a} needs a fixed size");
            assert_eq!(a.fixed_size_bytes(), b.fixed_size_bytes(), "{a} vs {b}");
            assert_eq!(a.type_name, b.type_name, "{a} vs {b}");
        }
    }

    #[test]
    fn parses_sizes() {
        let cases = [
            ("512", Ok(512)),
            ("4K", Ok(4096)),
            ("256M", Ok(256 << 20)),
            ("1G", Ok(1 << 30)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_bytes(text), expected, "{text}");
        }
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "[Partition]\nLabel=data\n",
                "x.conf: no Type= in [Partition]",
            ),
            (
                "[Partition]\nType=linux-generic\n",
                "x.conf: no Label= in [Partition]",
            ),
            (
                "[Partition]\nLabel=d\nType=esp\nSizeMinBytes=big\n",
                "x.conf:4: SizeMinBytes=big",
            ),
            ("Label=d\n", "x.conf:1: Label= outside of a section"),
            ("[Partition\n", "x.conf:1: unterminated section header"),
            ("[Partition]\nLabel\n", "x.conf:2: expected KEY=VALUE"),
        ];
        for (text, expected) in cases {
            let err = parse_definition("x.conf", text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn duplicate_labels_and_empty_dirs_are_refused() {
        let def = "[Partition]\nLabel=data\nType=linux-generic\n".to_owned();
        let files = [
            ("10-a.conf".to_owned(), def.clone()),
            ("20-b.conf".to_owned(), def),
        ];
        let err = Layout::from_files(Path::new("/d"), &files)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/d: label \"data\" is defined by both 10-a.conf and 20-b.conf"
        );
        let err = Layout::from_files(Path::new("/d"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/d: no *.conf partition definitions");
    }
}
