//! The value types of config.toml fields that carry more than a plain string: each is
//! parsed once (`FromStr`, used by serde through `try_from`), so a value that exists is
//! valid, and the error text is what the operator sees after the key's position.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Declares serde (de)serialisation through `FromStr`/`Display` for a string-valued type.
macro_rules! string_value {
    ($ty:ty) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.to_string()
            }
        }
    };
}

/// An RFC 1123 host name: labels of letters, digits and `-`, 1-63 long, not starting or
/// ending with `-`, 253 characters in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);
string_value!(Hostname);

impl FromStr for Hostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        check_dns_name(s).map_err(|why| format!("{s:?} is not an RFC 1123 host name: {why}"))?;
        Ok(Hostname(s.to_owned()))
    }
}

fn check_dns_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must be 1-63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An NTP server: a DNS name or an IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NtpServer(String);
string_value!(NtpServer);

impl FromStr for NtpServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.parse::<Ipv4Addr>().is_ok() || check_dns_name(s).is_ok() {
            Ok(NtpServer(s.to_owned()))
        } else {
            Err(format!("{s:?} is neither a host name nor an IPv4 address"))
        }
    }
}

impl fmt::Display for NtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The IANA time zones known when this was built (from tzdata's `tzdata.zi`: zones and links).
pub(crate) const TIMEZONES: &str = include_str!("../data/timezones.txt");

/// A real IANA time zone name such as `Europe/Berlin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timezone(String);
string_value!(Timezone);

impl Default for Timezone {
    fn default() -> Self {
        Timezone("Etc/UTC".to_owned())
    }
}

impl FromStr for Timezone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if TIMEZONES.lines().any(|z| z == s) {
            Ok(Timezone(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a known time zone (expected e.g. \"Europe/Berlin\" or \"Etc/UTC\")"
            ))
        }
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 address with its prefix length, e.g. `192.168.100.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}
string_value!(Ipv4Net);

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not an IPv4 address with a prefix length, like \"192.168.100.1/24\"")
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(format!("{s:?}: the prefix length must be 0-32"));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// The network itself, e.g. `192.168.100.0/24` for `192.168.100.1/24`.
    pub fn network(self) -> Ipv4Net {
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    pub fn overlaps(self, other: Ipv4Net) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if self.prefix <= other.prefix {
            other
        } else {
            self
        };
        shorter.contains(longer.addr)
    }

    /// Whether the address is the network or broadcast address (for prefixes that have both).
    pub fn is_network_or_broadcast(self, ip: Ipv4Addr) -> bool {
        self.prefix < 31 && (ip == self.network().addr || ip == self.broadcast())
    }
}

/// A port (`443`) or an inclusive port range (`"8000-8100"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct PortSpec {
    pub first: u16,
    pub last: u16,
}

impl From<PortSpec> for String {
    fn from(p: PortSpec) -> String {
        p.to_string()
    }
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(format!(
                    "{s:?} is not a port (1-65535) or a range like \"8000-8100\""
                )),
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("{s:?}: the range's first port is above its last"));
        }
        Ok(PortSpec { first, last })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl PortSpec {
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn overlaps(self, other: PortSpec) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a range like \"8000-8100\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortSpec, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(PortSpec { first: p, last: p }),
                    _ => Err(E::custom(format!("{v} is not a port (1-65535)"))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortSpec, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A published port: `[HOST-IP:]HOST-PORT:CONTAINER-PORT[/tcp|udp]`, as podman's `-p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Publish {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}
string_value!(Publish);

impl FromStr for Publish {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a published port like \"443:8443/tcp\" or \"127.0.0.1:8080:80\"")
        };
        let (ports, proto) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(bad()),
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(ip.parse::<Ipv4Addr>().map_err(|_| bad())?), *h, *c),
            _ => return Err(bad()),
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad()),
        };
        Ok(Publish {
            host_ip,
            host_port: port(host)?,
            container_port: port(container)?,
            proto,
        })
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.proto
        )
    }
}

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

/// A container name: `[a-z0-9][a-z0-9-]*`, at most 63 characters (it becomes a unit name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);
string_value!(ContainerName);

impl FromStr for ContainerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut bytes = s.bytes();
        let ok = matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.len() <= 63;
        if ok {
            Ok(ContainerName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a container name ([a-z0-9][a-z0-9-]*, at most 63 characters)"
            ))
        }
    }
}

impl ContainerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

/// Key types accepted for the admin user.
pub(crate) const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// An OpenSSH public key line: `TYPE BASE64 [COMMENT]`, whose base64 blob decodes and
/// names the same key type. Options (`from="..."`) are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SshPublicKey(String);
string_value!(SshPublicKey);

impl FromStr for SshPublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.chars().any(|c| c.is_control()) {
            return Err("an SSH key must be one line without control characters".into());
        }
        let mut fields = s.split_whitespace();
        let kind = fields.next().unwrap_or("");
        if !SSH_KEY_TYPES.contains(&kind) {
            return Err(format!(
                "{kind:?} is not an OpenSSH public key type (expected one of {})",
                SSH_KEY_TYPES.join(", ")
            ));
        }
        let blob = fields.next().unwrap_or("");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| format!("the {kind} key's data is not valid base64"))?;
        let named = raw
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|n| raw.get(4..4 + n));
        if named != Some(kind.as_bytes()) {
            return Err(format!("the key data is not a {kind} public key"));
        }
        Ok(SshPublicKey(s.trim().to_owned()))
    }
}

impl fmt::Display for SshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dnsmasq lease time: `infinite`, or a number with an optional unit s, m, h, d, w.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeaseTime(String);
string_value!(LeaseTime);

impl Default for LeaseTime {
    fn default() -> Self {
        LeaseTime("12h".into())
    }
}

impl FromStr for LeaseTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim_end_matches(['s', 'm', 'h', 'd', 'w']);
        let unit_len = s.len() - digits.len();
        let ok = s == "infinite"
            || (unit_len <= 1
                && !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Ok(LeaseTime(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a lease time like \"12h\", \"45m\", \"3600\" or \"infinite\""
            ))
        }
    }
}

impl fmt::Display for LeaseTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The RAUC bundle URL: `https://` or `http://`, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpdateUrl(String);
string_value!(UpdateUrl);

impl FromStr for UpdateUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        match rest {
            Some(r)
                if !r.is_empty()
                    && !r.starts_with('/')
                    && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Ok(UpdateUrl(s.to_owned()))
            }
            _ => Err(format!("{s:?} is not an http(s) URL")),
        }
    }
}

impl fmt::Display for UpdateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How often the RAUC update timer runs: a duration like `"6h"`, `"90min"` or `"1d 12h"`
/// (humantime syntax), whole seconds, between [`UpdateInterval::MIN`] and
/// [`UpdateInterval::MAX`]. Rendered in systemd's own syntax ([`UpdateInterval::systemd`]),
/// never passed through: the two disagree on units such as `M`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpdateInterval {
    text: String,
    secs: u64,
}
string_value!(UpdateInterval);

impl UpdateInterval {
    /// More often would mostly download the same bundle again.
    pub const MIN: u64 = 5 * 60;
    /// A year: longer is a typo, and stays far from systemd's limits.
    pub const MAX: u64 = 365 * 24 * 3600;

    pub fn secs(&self) -> u64 {
        self.secs
    }

    /// The interval in systemd's time span syntax, e.g. `1d 12h`.
    pub fn systemd(&self) -> String {
        systemd_timespan(self.secs)
    }
}

impl Default for UpdateInterval {
    fn default() -> Self {
        UpdateInterval {
            text: "24h".into(),
            secs: 24 * 3600,
        }
    }
}

impl FromStr for UpdateInterval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(s)
            .map_err(|_| format!("{s:?} is not a duration like \"6h\", \"90min\" or \"1d 12h\""))?;
        if d.subsec_nanos() != 0 {
            return Err(format!("{s:?}: give whole seconds"));
        }
        let secs = d.as_secs();
        if secs < Self::MIN {
            return Err(format!(
                "{s:?} is shorter than the minimum of {}",
                systemd_timespan(Self::MIN)
            ));
        }
        if secs > Self::MAX {
            return Err(format!(
                "{s:?} is longer than the maximum of {}",
                systemd_timespan(Self::MAX)
            ));
        }
        Ok(UpdateInterval {
            text: s.to_owned(),
            secs,
        })
    }
}

impl fmt::Display for UpdateInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Seconds as a systemd time span (`systemd.time(7)`): `1d 2h 3min 4s`, zero parts left
/// out; `0` is `0s`.
pub fn systemd_timespan(secs: u64) -> String {
    let parts = [
        (secs / 86400, "d"),
        (secs % 86400 / 3600, "h"),
        (secs % 3600 / 60, "min"),
        (secs % 60, "s"),
    ];
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if words.is_empty() {
        "0s".to_owned()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["edge-042", "a", "a.b-c.d", &"x".repeat(63)] {
            assert!(ok.parse::<Hostname>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a..b", "é", &"x".repeat(64), "a b"] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references() {
        for ok in [
            "ghcr.io/acme/web:1.4.2",
            "nginx",
            "docker.io/library/nginx:latest",
            "localhost:5000/a/b",
            "registry.example.com:443/x__y/z-w.v@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "quay.io/podman/hello:v1_2-3",
            "oci-archive:/data/apps/hello/hello-1.0.tar",
            "oci-archive:/data/apps/Hello_2.tar",
        ] {
            assert!(ok.parse::<ImageRef>().is_ok(), "{ok}");
        }
        let archive: ImageRef = "oci-archive:/data/apps/hello/image.tar".parse().unwrap();
        assert_eq!(
            archive.bundle_archive().as_deref(),
            Some("apps/hello/image.tar")
        );
        assert_eq!("nginx".parse::<ImageRef>().unwrap().bundle_archive(), None);
        for bad in [
            "",
            "upper/Case",
            "a//b",
            "a:",
            "a:-tag",
            "ghcr.io/Acme/web",
            "a@sha256:zz",
            "-a",
            "a/b_",
            "a b",
            "oci-archive:/tmp/x.tar",
            "oci-archive:/data/apps/../etc/x.tar",
            "oci-archive:/data/apps/a/./x.tar",
            "oci-archive:/data/apps//x.tar",
            "oci-archive:/data/apps/x.tar.gz",
            "oci-archive:/data/appsx/x.tar",
            "oci-archive:/data/apps/a b.tar",
            "oci-archive:data/apps/x.tar",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn publish_and_ports() {
        let p: Publish = "443:8443/tcp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (443, 8443, Proto::Tcp)
        );
        let p: Publish = "127.0.0.1:53:5353/udp".parse().unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:53:5353/udp");
        for bad in ["443", "0:1", "1:2/sctp", "a:1", "1:2:3:4", "1:70000"] {
            assert!(bad.parse::<Publish>().is_err(), "{bad}");
        }
        assert_eq!(
            "8000-8100".parse::<PortSpec>().unwrap(),
            PortSpec {
                first: 8000,
                last: 8100
            }
        );
        for bad in ["0", "9-8", "x", "1-", "+5"] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let cases: &[(&str, Result<VolumeSource, &str>)] = &[
            (
                "web-data:/var/lib/web",
                Ok(VolumeSource::Named("web-data".into())),
            ),
            (
                "/data/apps/web:/srv:ro",
                Ok(VolumeSource::HostPath("/data/apps/web".into())),
            ),
            (
                "/data/apps:/srv",
                Ok(VolumeSource::HostPath("/data/apps".into())),
            ),
            ("/data/appsx:/srv", Err("outside /data/apps")),
            ("/data/apps/../etc:/srv", Err("outside /data/apps")),
            ("/etc:/srv", Err("outside /data/apps")),
            ("web:relative", Err("clean absolute path")),
            ("web:/srv:rx", Err("unknown volume option")),
            ("-web:/srv", Err("neither a volume name")),
        ];
        for (input, expected) in cases {
            match (input.parse::<VolumeMount>(), expected) {
                (Ok(v), Ok(src)) => assert_eq!(&v.source, src, "{input}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn networks() {
        let lan: Ipv4Net = "192.168.100.1/24".parse().unwrap();
        assert_eq!(lan.network().to_string(), "192.168.100.0/24");
        assert!(lan.contains("192.168.100.200".parse().unwrap()));
        assert!(!lan.contains("192.168.1.5".parse().unwrap()));
        assert!(lan.overlaps("192.168.0.0/16".parse().unwrap()));
        assert!(!lan.overlaps("10.0.0.1/8".parse().unwrap()));
        for bad in [
            "192.168.1.1",
            "192.168.1.1/33",
            "1.2.3/8",
            "1.2.3.4/",
            "1.2.3.4/+1",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_keys_and_small_values() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop";
        assert!(key.parse::<SshPublicKey>().is_ok());
        assert!(
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V"
                .parse::<SshPublicKey>()
                .is_err()
        );
        assert!("ssh-ed25519 not-base64!".parse::<SshPublicKey>().is_err());
        assert!("Europe/Berlin".parse::<Timezone>().is_ok());
        assert!("Mars/Olympus".parse::<Timezone>().is_err());
        for ok in ["12h", "45m", "3600", "infinite", "1w"] {
            assert!(ok.parse::<LeaseTime>().is_ok(), "{ok}");
        }
        for bad in ["", "h", "12hh", "-1", "1y"] {
            assert!(bad.parse::<LeaseTime>().is_err(), "{bad}");
        }
        assert!("https://updates.example.com/x.raucb"
            .parse::<UpdateUrl>()
            .is_ok());
        assert!("ftp://x".parse::<UpdateUrl>().is_err());
    }

    #[test]
    fn update_intervals() {
        /// Seconds and systemd's spelling, or the error.
        type Want = Result<(u64, &'static str), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("24h", Ok((86400, "1d"))),
            ("6h", Ok((21600, "6h"))),
            ("90min", Ok((5400, "1h 30min"))),
            ("1d 12h", Ok((129600, "1d 12h"))),
            ("5m", Ok((300, "5min"))),
            ("1h 0m 30s", Ok((3630, "1h 30s"))),
            ("365d", Ok((31536000, "365d"))),
            (
                "4min 59s",
                Err("\"4min 59s\" is shorter than the minimum of 5min"),
            ),
            ("366d", Err("\"366d\" is longer than the maximum of 365d")),
            ("10min 500ms", Err("\"10min 500ms\": give whole seconds")),
            (
                "3600",
                Err("\"3600\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""),
            ),
            (
                "",
                Err("\"\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""),
            ),
            (
                "6 parsecs",
                Err("\"6 parsecs\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""),
            ),
        ];
        for (input, want) in cases {
            match (input.parse::<UpdateInterval>(), want) {
                (Ok(i), Ok((secs, systemd))) => {
                    assert_eq!(
                        (i.secs(), i.systemd().as_str()),
                        (*secs, *systemd),
                        "{input}"
                    );
                    assert_eq!(i.to_string(), *input, "shown as written");
                }
                (Err(e), Err(msg)) => assert_eq!(e, *msg, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let default = UpdateInterval::default();
        assert_eq!(
            (default.secs(), default.to_string()),
            (86400, "24h".to_owned())
        );
        assert_eq!(systemd_timespan(0), "0s");
        assert_eq!(systemd_timespan(90061), "1d 1h 1min 1s");
    }
}
