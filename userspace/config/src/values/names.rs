//! Names: host names, NTP servers, time zones, container names.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

pub(super) fn check_dns_name(s: &str) -> Result<(), &'static str> {
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
pub(crate) const TIMEZONES: &str = include_str!("../../data/timezones.txt");

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
