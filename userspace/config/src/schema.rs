//! The config.toml v1 schema (a contract: see `docs/configuration.md`, which a test keeps
//! in step with these types). Every type denies unknown keys and uses kebab-case keys.
//! Fields whose position matters to a cross-field check are [`Spanned`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::values::{
    ContainerName, ControllerId, Hostname, ImageRef, Ipv4Net, LeaseTime, NtpServer, PortSpec,
    Proto, Publish, SshPublicKey, Tenant, Timezone, TokenFile, UpdateInterval, UpdateUrl,
    VolumeMount,
};

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole config.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The schema version: must be 1.
    #[cfg_attr(feature = "json-schema", schemars(with = "u32", extend("const" = 1)))]
    pub schema: Spanned<u32>,
    pub device: Device,
    pub admin: Admin,
    pub network: Network,
    #[serde(default)]
    pub time: Time,
    #[serde(default)]
    pub firewall: Firewall,
    /// Quadlet containers.
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub update: Update,
}

/// `[device]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Device {
    /// The device's RFC 1123 host name.
    #[cfg_attr(feature = "json-schema", schemars(with = "Hostname"))]
    pub hostname: Spanned<Hostname>,
    /// An IANA time zone. Default `Etc/UTC`.
    #[serde(default)]
    pub timezone: Timezone,
}

/// `[admin]`: the image's `admin` user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admin {
    /// OpenSSH public keys of the `admin` user, at least one.
    #[cfg_attr(
        feature = "json-schema",
        schemars(with = "Vec<SshPublicKey>", length(min = 1))
    )]
    pub ssh_authorized_keys: Spanned<Vec<SshPublicKey>>,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Network {
    #[serde(default)]
    pub wan: Wan,
    pub lan: Lan,
}

/// `[network.wan]`: eth0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Wan {
    /// Default true; with false, `address`, `gateway` and `dns` are required.
    #[serde(default = "yes")]
    #[cfg_attr(feature = "json-schema", schemars(with = "bool"))]
    pub dhcp: Spanned<bool>,
    /// Static address with prefix, e.g. `203.0.113.10/24`; only with `dhcp = false`; must
    /// not overlap the LAN.
    #[cfg_attr(feature = "json-schema", schemars(with = "Option<Ipv4Net>"))]
    pub address: Option<Spanned<Ipv4Net>>,
    /// IPv4 gateway inside the WAN subnet; only with `dhcp = false`.
    #[cfg_attr(feature = "json-schema", schemars(with = "Option<Ipv4Addr>"))]
    pub gateway: Option<Spanned<Ipv4Addr>>,
    /// IPv4 DNS servers; with DHCP they replace the offered ones.
    #[serde(default)]
    #[cfg_attr(feature = "json-schema", schemars(with = "Vec<Ipv4Addr>"))]
    pub dns: Vec<Spanned<Ipv4Addr>>,
}

impl Default for Wan {
    fn default() -> Self {
        Wan {
            dhcp: Spanned::new(0..0, true),
            address: None,
            gateway: None,
            dns: Vec::new(),
        }
    }
}

fn yes() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

fn yes_plain() -> bool {
    true
}

/// `[network.lan]`: eth1, static.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lan {
    /// The device's own address and the LAN's prefix, e.g. `192.168.100.1/24` (/30 or
    /// shorter).
    #[cfg_attr(feature = "json-schema", schemars(with = "Ipv4Net"))]
    pub address: Spanned<Ipv4Net>,
    /// The DHCP server on the LAN; none without it.
    pub dhcp_range: Option<DhcpRange>,
    /// dnsmasq answers DNS on the LAN. Default true.
    #[serde(default = "yes_plain")]
    pub dns: bool,
}

/// `network.lan.dhcp-range`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DhcpRange {
    /// The first address, inside the LAN subnet.
    #[cfg_attr(feature = "json-schema", schemars(with = "Ipv4Addr"))]
    pub start: Spanned<Ipv4Addr>,
    /// The last address, inside the subnet, not before `start`; the range must not
    /// include the device's address.
    #[cfg_attr(feature = "json-schema", schemars(with = "Ipv4Addr"))]
    pub end: Spanned<Ipv4Addr>,
    /// The lease time. Default `12h`.
    #[serde(default)]
    pub lease: LeaseTime,
}

/// `[time]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Time {
    /// chrony sources; empty means the image's defaults.
    #[serde(default)]
    pub ntp_servers: Vec<NtpServer>,
}

/// `[firewall]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Firewall {
    /// Inbound rules; on the WAN everything else is dropped.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

/// `[[firewall.allow]]`: one inbound rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AllowRule {
    pub zone: Zone,
    pub proto: Proto,
    /// A port (`443`) or an inclusive range (`"8000-8100"`).
    #[cfg_attr(feature = "json-schema", schemars(with = "PortSpec"))]
    pub port: Spanned<PortSpec>,
    /// Only from this IPv4 network, e.g. `203.0.113.0/24`; default any.
    pub source: Option<Ipv4Net>,
}

/// Which interface a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Zone {
    /// eth0.
    Wan,
    /// eth1.
    Lan,
}

impl Zone {
    /// The interface the zone is on.
    pub fn interface(self) -> &'static str {
        match self {
            Zone::Wan => "eth0",
            Zone::Lan => "eth1",
        }
    }
}

/// `[[containers]]`: one Quadlet container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Container {
    /// Unique; the unit is `<name>.service`.
    #[cfg_attr(feature = "json-schema", schemars(with = "ContainerName"))]
    pub name: Spanned<ContainerName>,
    #[cfg_attr(feature = "json-schema", schemars(with = "ImageRef"))]
    pub image: Spanned<ImageRef>,
    /// true: runs as the admin user (rootless Quadlet).
    #[serde(default)]
    pub rootless: bool,
    /// Published ports; host ports 22 and 8080 (and 53/67 when the LAN serves DNS/DHCP)
    /// are the device's; each host port once.
    #[serde(default)]
    #[cfg_attr(feature = "json-schema", schemars(with = "Vec<Publish>"))]
    pub publish: Vec<Spanned<Publish>>,
    #[serde(default)]
    #[cfg_attr(feature = "json-schema", schemars(with = "Vec<VolumeMount>"))]
    pub volumes: Vec<Spanned<VolumeMount>>,
    /// Environment variables: names `[A-Za-z_][A-Za-z0-9_]*`, values without control
    /// characters.
    #[serde(default)]
    #[cfg_attr(
        feature = "json-schema",
        schemars(with = "BTreeMap<String, String>", extend("propertyNames" = { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }))
    )]
    pub environment: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Arguments after the entrypoint; none empty, none `";"`, no control characters.
    #[serde(default)]
    #[cfg_attr(feature = "json-schema", schemars(with = "Vec<String>"))]
    pub exec: Vec<Spanned<String>>,
    #[serde(default)]
    pub restart: Restart,
}

/// systemd's `Restart=` for the container's service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Always,
    OnFailure,
    No,
}

impl Restart {
    pub fn as_systemd(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::No => "no",
        }
    }
}

// The timer's keys are `Spanned` so that a clash with `[update.hawkbit]` is reported
// where the key is; a default has the span `0..0`, which no key written in a file has.
/// `[update]`: where updates come from. Either the timer (`rauc`, `url`, `interval`) or a
/// hawkBit server (`[update.hawkbit]`), never both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Update {
    /// Enables the RAUC update timer (`url` is then required). Default false.
    #[serde(default = "no")]
    #[cfg_attr(feature = "json-schema", schemars(with = "bool"))]
    pub rauc: Spanned<bool>,
    /// The bundle the timer installs.
    #[cfg_attr(feature = "json-schema", schemars(with = "Option<UpdateUrl>"))]
    pub url: Option<Spanned<UpdateUrl>>,
    /// How often the timer runs. Default `24h`.
    #[serde(default = "default_interval")]
    #[cfg_attr(feature = "json-schema", schemars(with = "UpdateInterval"))]
    pub interval: Spanned<UpdateInterval>,
    /// Updates from a hawkBit server (DDI API) instead of the timer.
    #[cfg_attr(feature = "json-schema", schemars(with = "Option<Hawkbit>"))]
    pub hawkbit: Option<Spanned<Hawkbit>>,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            rauc: no(),
            url: None,
            interval: default_interval(),
            hawkbit: None,
        }
    }
}

impl Update {
    /// Whether the timer is on (`rauc = true`).
    pub fn timer(&self) -> bool {
        *self.rauc.get_ref()
    }

    /// The timer's keys written in the file, with their spans and names: they clash with
    /// `[update.hawkbit]` (`rauc = false` does not).
    pub fn timer_keys(&self) -> Vec<(std::ops::Range<usize>, &'static str)> {
        let mut keys = Vec::new();
        if self.timer() {
            keys.push((self.rauc.span(), "rauc"));
        }
        if let Some(url) = &self.url {
            keys.push((url.span(), "url"));
        }
        if self.interval.span() != (0..0) {
            keys.push((self.interval.span(), "interval"));
        }
        keys
    }
}

fn no() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

fn default_interval() -> Spanned<UpdateInterval> {
    Spanned::new(0..0, UpdateInterval::default())
}

/// `[update.hawkbit]`: the device polls a hawkBit server through its Direct Device
/// Integration API (hawkBit itself, or a server speaking the same API such as goosebit),
/// reports its attributes, and installs the RAUC bundle of a deployment assigned to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hawkbit {
    /// The server's base URL, e.g. `https://updates.example.com` (the DDI resources are
    /// under `<url>/<tenant>/controller/v1/<controller-id>`).
    pub url: UpdateUrl,
    /// The tenant, e.g. `DEFAULT`.
    pub tenant: Tenant,
    /// The device's id on the server. Default: the host name.
    pub controller_id: Option<ControllerId>,
    /// The file holding the device's token (under `/data`); without it no token is sent
    /// (a server that lets devices in anonymously). Refused with an `http://` url (the
    /// token would travel in clear text) unless `insecure-http-token` is set.
    #[cfg_attr(feature = "json-schema", schemars(with = "Option<TokenFile>"))]
    pub token_file: Option<Spanned<TokenFile>>,
    /// What the token is: a `target` security token (one per device) or a `gateway`
    /// token (one per tenant). Default `target`.
    #[serde(default)]
    pub token_kind: TokenKind,
    /// Sends the token over an `http://` url all the same, in clear text: for test
    /// set-ups only (a server on the host of a virtual machine). Refused with an
    /// `https://` url. Default false.
    #[cfg_attr(feature = "json-schema", schemars(with = "Option<bool>"))]
    pub insecure_http_token: Option<Spanned<bool>>,
}

impl Hawkbit {
    /// The controller id: the configured one, else the host name.
    pub fn controller_id_or(&self, hostname: &Hostname) -> String {
        match &self.controller_id {
            Some(id) => id.to_string(),
            None => hostname.to_string(),
        }
    }
}

/// The kind of a hawkBit token, which names the `Authorization` scheme it is sent with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// `Authorization: TargetToken <token>`: the device's own security token.
    #[default]
    Target,
    /// `Authorization: GatewayToken <token>`: the tenant's gateway token.
    Gateway,
}
