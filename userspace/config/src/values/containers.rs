//! What containers mount and run: volume mounts under `/data/apps`, image references.

use std::fmt;
use std::str::FromStr;

use super::names::check_dns_name;
use serde::{Deserialize, Serialize};

/// Where host paths given to containers must live.
pub const APPS_DIR: &str = "/data/apps";

/// The source of a volume mount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum VolumeSource {
    /// A named volume, rendered as a Quadlet `.volume` unit.
    Named(String),
    /// A host directory under [`APPS_DIR`].
    HostPath(String),
}

/// A volume mount: `SOURCE:DEST[:OPTIONS]` where SOURCE is a volume name or a path
/// under `/data/apps`, DEST an absolute path, OPTIONS from `ro`, `rw`, `z`, `Z`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeMount {
    pub source: VolumeSource,
    pub dest: String,
    pub options: Vec<String>,
}
string_value!(VolumeMount);

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, podman's rule for volume names.
pub fn is_volume_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && s.len() <= 128
}

fn is_clean_absolute_path(p: &str) -> bool {
    p.starts_with('/')
        && p.split('/').skip(1).all(|c| !matches!(c, "." | ".."))
        && !p.contains("//")
        && !p.chars().any(|c| c.is_control() || c == ':' || c == ',')
}

impl FromStr for VolumeMount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, dest, options) = match parts.as_slice() {
            [s, d] => (*s, *d, None),
            [s, d, o] => (*s, *d, Some(*o)),
            _ => {
                return Err(format!(
                    "{s:?} is not a volume like \"NAME:/path\" or \"/data/apps/DIR:/path:ro\""
                ))
            }
        };
        let source = if source.starts_with('/') {
            let inside = source
                .strip_prefix(APPS_DIR)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !is_clean_absolute_path(source) || !inside {
                return Err(format!("host path {source:?} is outside {APPS_DIR}"));
            }
            VolumeSource::HostPath(source.trim_end_matches('/').to_owned())
        } else if is_volume_name(source) {
            VolumeSource::Named(source.to_owned())
        } else {
            return Err(format!(
                "{source:?} is neither a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*) nor a path under {APPS_DIR}"
            ));
        };
        if !is_clean_absolute_path(dest) {
            return Err(format!(
                "container path {dest:?} must be a clean absolute path"
            ));
        }
        // A unit file trims a value's trailing white space, and a trailing backslash
        // joins the next line to it.
        if let Some(p) = [parts[0], dest]
            .into_iter()
            .find(|p| p.ends_with(|c: char| c == '\\' || c.is_whitespace()))
        {
            return Err(format!(
                "{p:?} ends in a backslash or white space, which a systemd unit cannot carry"
            ));
        }
        let options: Vec<String> = match options {
            None => Vec::new(),
            Some(o) => o.split(',').map(str::to_owned).collect(),
        };
        if let Some(bad) = options
            .iter()
            .find(|o| !matches!(o.as_str(), "ro" | "rw" | "z" | "Z"))
        {
            return Err(format!(
                "unknown volume option {bad:?} (expected ro, rw, z or Z)"
            ));
        }
        Ok(VolumeMount {
            source,
            dest: dest.to_owned(),
            options,
        })
    }
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            VolumeSource::Named(n) | VolumeSource::HostPath(n) => write!(f, "{n}:{}", self.dest)?,
        }
        if !self.options.is_empty() {
            write!(f, ":{}", self.options.join(","))?;
        }
        Ok(())
    }
}

/// An OCI image reference: `[REGISTRY[:PORT]/]PATH[:TAG][@ALGO:HEX]`, following the
/// distribution reference grammar (lower-case path components, tags of at most 128); or
/// `oci-archive:/data/apps/DIR/FILE.tar`, an image archive that came in the config
/// bundle (for devices no registry can reach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef(String);
string_value!(ImageRef);

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix(OCI_ARCHIVE) {
            Some(path) => check_archive_path(path),
            None => check_image_ref(s),
        }
        .map_err(|why| format!("{s:?} is not a valid image reference: {why}"))?;
        Ok(ImageRef(s.to_owned()))
    }
}

/// The transport prefix of an image archive reference.
const OCI_ARCHIVE: &str = "oci-archive:";

impl ImageRef {
    /// For `oci-archive:/data/apps/...`: the archive's path in the bundle
    /// (`apps/...`), which must come with the config.
    pub fn bundle_archive(&self) -> Option<String> {
        let path = self.0.strip_prefix(OCI_ARCHIVE)?;
        Some(format!("apps{}", path.strip_prefix(APPS_DIR)?))
    }
}

fn check_archive_path(path: &str) -> Result<(), &'static str> {
    const WHY: &str = "an archive is oci-archive:/data/apps/DIR/FILE.tar, components of [A-Za-z0-9._-] other than . and ..";
    let rest = path.strip_prefix(APPS_DIR).ok_or(WHY)?;
    let rest = rest.strip_prefix('/').ok_or(WHY)?;
    let ok_component = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if path.len() > 255 || !rest.split('/').all(ok_component) || !rest.ends_with(".tar") {
        return Err(WHY);
    }
    Ok(())
}

fn check_image_ref(s: &str) -> Result<(), &'static str> {
    if s.len() > 255 {
        return Err("longer than 255 characters");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("a digest looks like sha256:HEX")?;
        let algo_ok = !algo.is_empty()
            && algo.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'+' | b'.' | b'_' | b'-')
            });
        if !algo_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a digest looks like sha256:HEX");
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut b = tag.bytes();
        let ok = matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
            && tag.len() <= 128;
        if !ok {
            return Err("a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase())
        {
            let (host, port) = match first.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            if check_dns_name(host).is_err() {
                return Err("the registry is not a valid host name");
            }
            if port.is_some_and(|p| p.parse::<u16>().is_err()) {
                return Err("the registry port is not a number");
            }
            components.remove(0);
        }
    }
    for c in components {
        if !is_path_component(c) {
            return Err("a path component is lower-case letters and digits, separated by '.', '_', '__' or '-'");
        }
    }
    Ok(())
}

fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or one or more '-'.
        let start = i;
        match ch {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            return false;
        }
    }
    true
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
