//! The config.toml v1 schema (a contract: see `docs/configuration.md`, which a test keeps
//! in step with these types). Every type denies unknown keys and uses kebab-case keys.
//! Fields whose position matters to a cross-field check are [`Spanned`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::values::{
    ContainerName, Hostname, ImageRef, Ipv4Net, LeaseTime, NtpServer, PortSpec, Proto, Publish,
    SshPublicKey, Timezone, UpdateInterval, UpdateUrl, VolumeMount,
};

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole config.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Must be 1.
    pub schema: Spanned<u32>,
    pub device: Device,
    pub admin: Admin,
    pub network: Network,
    #[serde(default)]
    pub time: Time,
    #[serde(default)]
    pub firewall: Firewall,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub update: Update,
}

/// `[device]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Device {
    pub hostname: Spanned<Hostname>,
    /// Default `Etc/UTC`.
    #[serde(default)]
    pub timezone: Timezone,
}

/// `[admin]`: the image's `admin` user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admin {
    /// At least one.
    pub ssh_authorized_keys: Spanned<Vec<SshPublicKey>>,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Network {
    #[serde(default)]
    pub wan: Wan,
    pub lan: Lan,
}

/// `[network.wan]`: eth0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Wan {
    /// Default true; with false, `address`, `gateway` and `dns` are required.
    #[serde(default = "yes")]
    pub dhcp: Spanned<bool>,
    pub address: Option<Spanned<Ipv4Net>>,
    pub gateway: Option<Spanned<Ipv4Addr>>,
    #[serde(default)]
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
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lan {
    /// The device's own address and the LAN's prefix, e.g. `192.168.100.1/24`.
    pub address: Spanned<Ipv4Net>,
    pub dhcp_range: Option<DhcpRange>,
    /// dnsmasq answers DNS on the LAN. Default true.
    #[serde(default = "yes_plain")]
    pub dns: bool,
}

/// `network.lan.dhcp-range`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DhcpRange {
    pub start: Spanned<Ipv4Addr>,
    pub end: Spanned<Ipv4Addr>,
    /// Default `12h`.
    #[serde(default)]
    pub lease: LeaseTime,
}

/// `[time]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Time {
    /// chrony sources; empty means the image's defaults.
    #[serde(default)]
    pub ntp_servers: Vec<NtpServer>,
}

/// `[firewall]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Firewall {
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

/// `[[firewall.allow]]`: one inbound rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AllowRule {
    pub zone: Zone,
    pub proto: Proto,
    pub port: Spanned<PortSpec>,
    pub source: Option<Ipv4Net>,
}

/// Which interface a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Zone {
    Wan,
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
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Container {
    pub name: Spanned<ContainerName>,
    pub image: Spanned<ImageRef>,
    /// true: runs as the admin user (rootless Quadlet).
    #[serde(default)]
    pub rootless: bool,
    #[serde(default)]
    pub publish: Vec<Spanned<Publish>>,
    #[serde(default)]
    pub volumes: Vec<Spanned<VolumeMount>>,
    #[serde(default)]
    pub environment: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub exec: Vec<Spanned<String>>,
    #[serde(default)]
    pub restart: Restart,
}

/// systemd's `Restart=` for the container's service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// `[update]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Update {
    /// Enables the RAUC update timer (`url` is then required). Default false.
    #[serde(default = "no")]
    pub rauc: Spanned<bool>,
    /// The bundle the timer installs.
    pub url: Option<UpdateUrl>,
    /// How often the timer runs. Default `24h`.
    #[serde(default)]
    pub interval: UpdateInterval,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            rauc: no(),
            url: None,
            interval: UpdateInterval::default(),
        }
    }
}

fn no() -> Spanned<bool> {
    Spanned::new(0..0, false)
}
