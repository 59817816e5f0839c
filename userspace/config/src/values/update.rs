//! Update values: the timer's bundle URL and interval; the hawkBit server's tenant,
//! controller id and token file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

/// A hawkBit tenant: it becomes a path segment of every DDI URL, so it is kept to
/// characters that need no escaping there: letters, digits, `.`, `_`, `-`, 1-64 long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);
string_value!(Tenant);

impl FromStr for Tenant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && s != "."
            && s != "..";
        if ok {
            Ok(Tenant(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a tenant name (letters, digits, '.', '_' and '-', 1-64 characters)"
            ))
        }
    }
}

impl Tenant {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id the device has on a hawkBit server (its `controllerId`): letters, digits, `.`,
/// `_` and `-`, starting and ending with a letter or digit, at most 253 characters, so
/// that every RFC 1123 host name (the default) is one and it needs no escaping in a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ControllerId(String);
string_value!(ControllerId);

impl FromStr for ControllerId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        let ok = s.len() <= 253
            && edge(s.bytes().next())
            && edge(s.bytes().last())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ControllerId(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a controller id (letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 253 characters)"
            ))
        }
    }
}

impl ControllerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ControllerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file holding the device's hawkBit token: a clean absolute path under `/data` (the
/// only place that survives a reboot, and never the config itself, which is kept and
/// shown), e.g. `/data/apps/hawkbit/token` shipped in the config bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenFile(String);
string_value!(TokenFile);

impl TokenFile {
    /// Longer is not a path Linux opens (PATH_MAX).
    pub const MAX_LEN: usize = 4095;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TokenFile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix("/data/") else {
            return Err(format!("{s:?} is not a path under /data"));
        };
        let clean = !rest.is_empty()
            && s.len() <= Self::MAX_LEN
            && rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && !s.chars().any(char::is_control);
        if clean {
            Ok(TokenFile(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a clean absolute path of a file under /data (no empty, '.' or '..' components, no control characters)"
            ))
        }
    }
}

impl fmt::Display for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
