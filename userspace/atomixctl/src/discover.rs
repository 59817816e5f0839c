//! Devices on the local network: a multicast DNS browse for the `_atomix._tcp` DNS-SD
//! service every device announces (`atomix_api::discovery`), with `mdns-sd`. `discover`
//! lists what answered within its time; `--device NAME` browses until that instance
//! answers and talks to its address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use atomix_api::discovery::{Announcement, SERVICE_TYPE};
use serde::Serialize;

use crate::device::{DeviceError, DeviceUrl};

/// How long `--device NAME` browses for NAME before giving up (it stops as soon as
/// NAME answers; an emulated or busy device can take seconds to).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The browsed type with its domain, as mDNS names it.
fn service_domain() -> String {
    format!("{SERVICE_TYPE}.local.")
}

/// One device that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The DNS-SD instance name (what `--device` accepts).
    pub name: String,
    /// Its API, from the first usable address (IPv4 first); `None` when it gave only
    /// link-local IPv6 addresses.
    pub url: Option<String>,
    pub build_id: Option<String>,
    pub slot: Option<String>,
    pub provisioned: bool,
    /// Its multicast DNS host name (`atomixos.local.`, or `<hostname>.local.`).
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

/// The instance name of a service's full name (`edge-7._atomix._tcp.local.`), `None`
/// for another type.
pub fn instance_of(fullname: &str) -> Option<&str> {
    fullname
        .strip_suffix(&service_domain())
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|name| !name.is_empty())
}

impl Found {
    /// A device from what mDNS resolved: the instance, host, port, addresses and TXT.
    pub fn new<'a>(
        instance: &str,
        host: &str,
        port: u16,
        addresses: impl IntoIterator<Item = IpAddr>,
        txt: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Found {
        let a = Announcement::from_txt(instance, txt);
        let mut addresses: Vec<IpAddr> = addresses.into_iter().collect();
        // IPv4 first, then by address: one order, whatever the packets' order was.
        addresses.sort_by_key(|a| (a.is_ipv6(), *a));
        addresses.dedup();
        let usable = addresses.iter().find(|a| match a {
            IpAddr::V4(_) => true,
            // fe80::/10 needs a scope the URL would have to carry.
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        });
        let url = usable.map(|a| match a {
            IpAddr::V4(v4) => format!("http://{v4}:{port}"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        });
        Found {
            name: a.name,
            url,
            build_id: a.build_id,
            slot: a.slot,
            provisioned: a.provisioned,
            host: host.to_owned(),
            addresses,
            port,
        }
    }
}

/// Browses for `timeout`, or until `wanted` (an instance name, compared without case as
/// DNS does) has answered. The devices found, by name.
pub fn browse(timeout: Duration, wanted: Option<&str>) -> anyhow::Result<Vec<Found>> {
    use mdns_sd::{ServiceDaemon, ServiceEvent};
    let daemon = ServiceDaemon::new().context("cannot start multicast DNS (UDP port 5353)")?;
    let events = daemon
        .browse(&service_domain())
        .context("cannot browse for devices over multicast DNS")?;
    let mut deadline = Instant::now() + timeout;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    // Every address any answer gave for a name: another host answering for it shows.
    let mut addresses: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    while let Ok(event) = events.recv_deadline(deadline) {
        match event {
            ServiceEvent::ServiceResolved(info) => {
                let Some(instance) = instance_of(info.get_fullname()) else {
                    continue;
                };
                let txt: Vec<(&str, &str)> = info
                    .get_properties()
                    .iter()
                    .map(|p| (p.key(), p.val_str()))
                    .collect();
                let seen = addresses.entry(info.get_fullname().to_owned()).or_default();
                seen.extend(info.get_addresses().iter().map(|a| a.to_ip_addr()));
                let device = Found::new(
                    instance,
                    &info.host,
                    info.get_port(),
                    seen.iter().copied(),
                    txt,
                );
                // The first answer may carry only some of its addresses (the AAAA
                // record before the A): wait for one a URL can use. Then listen a
                // moment longer, for a second host answering for the same name.
                if device.url.is_some()
                    && wanted.is_some_and(|w| w.eq_ignore_ascii_case(&device.name))
                {
                    deadline = deadline.min(Instant::now() + CONFIRM);
                }
                found.insert(info.get_fullname().to_owned(), device);
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                found.remove(&fullname);
            }
            _ => {}
        }
    }
    // Stopping is best effort: the process ends right after.
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}

/// How long `--device NAME` keeps listening after NAME answered, for another host
/// answering for the same name.
const CONFIRM: Duration = Duration::from_secs(1);

/// The API address of the device announced as `name`. Names are not authenticated, so
/// the address is said on a terminal, and a name answered from two IPv4 addresses is
/// refused.
pub fn resolve(name: &str) -> anyhow::Result<DeviceUrl> {
    let devices = browse(RESOLVE_TIMEOUT, Some(name))?;
    let url = url_of(&devices, name)?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("atomixctl: {name} is {url} (found over multicast DNS)");
    }
    DeviceUrl::parse(&url).map_err(anyhow::Error::msg)
}

/// The one URL the answers give for `name`.
fn url_of(devices: &[Found], name: &str) -> Result<String, DeviceError> {
    let device = devices
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| DeviceError::NotDiscovered {
            name: name.to_owned(),
            secs: RESOLVE_TIMEOUT.as_secs(),
        })?;
    let listed = |only_v4: bool| {
        device
            .addresses
            .iter()
            .filter(|a| !only_v4 || a.is_ipv4())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if device.addresses.iter().filter(|a| a.is_ipv4()).count() > 1 {
        return Err(DeviceError::AmbiguousName {
            name: name.to_owned(),
            addresses: listed(true),
        });
    }
    device
        .url
        .clone()
        .ok_or_else(|| DeviceError::NoUsableAddress {
            name: name.to_owned(),
            addresses: listed(false),
        })
}

/// The text listing: a header and one aligned line per device.
pub fn lines(devices: &[Found]) -> Vec<String> {
    let rows: Vec<[String; 5]> = devices
        .iter()
        .map(|d| {
            [
                d.name.clone(),
                d.url.clone().unwrap_or_else(|| "-".into()),
                d.build_id.clone().unwrap_or_else(|| "-".into()),
                d.slot.clone().unwrap_or_else(|| "-".into()),
                if d.provisioned { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    let header = [
        "NAME".to_owned(),
        "URL".into(),
        "BUILD".into(),
        "SLOT".into(),
        "PROVISIONED".into(),
    ];
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str, addresses: &[&str]) -> Found {
        Found::new(
            name,
            "atomixos.local.",
            8080,
            addresses.iter().map(|a| a.parse().unwrap()),
            [("provisioned", "false")],
        )
    }

    #[test]
    fn a_name_resolves_to_one_ipv4_address_or_is_refused() {
        let one = [found("atomixos-0001", &["fe80::1", "192.168.100.1"])];
        assert_eq!(
            url_of(&one, "ATOMIXOS-0001").unwrap(),
            "http://192.168.100.1:8080"
        );
        let two = [found("atomixos-0001", &["192.168.100.1", "192.168.100.66"])];
        let err = url_of(&two, "atomixos-0001").unwrap_err().to_string();
        assert!(err.contains("192.168.100.1, 192.168.100.66"), "{err}");
        assert!(err.contains("atomixos-0001"), "{err}");
        let link_local = [found("atomixos-0001", &["fe80::1"])];
        let err = url_of(&link_local, "atomixos-0001")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fe80::1"), "{err}");
        let err = url_of(&one, "edge-7").unwrap_err().to_string();
        assert!(err.contains("\"edge-7\""), "{err}");
    }

    #[test]
    fn instance_names_of_full_names() {
        let cases = [
            ("edge-7._atomix._tcp.local.", Some("edge-7")),
            ("atomixos-0001._atomix._tcp.local.", Some("atomixos-0001")),
            ("two words._atomix._tcp.local.", Some("two words")),
            ("._atomix._tcp.local.", None),
            ("edge-7._http._tcp.local.", None),
            ("_atomix._tcp.local.", None),
        ];
        for (full, want) in cases {
            assert_eq!(instance_of(full), want, "{full}");
        }
    }

    #[test]
    fn a_found_device_takes_its_fields_from_txt_and_an_ipv4_url() {
        let d = Found::new(
            "atomixos-0001",
            "atomixos.local.",
            8080,
            [
                "fe80::5054:ff:fea7:2".parse().unwrap(),
                "192.168.100.1".parse().unwrap(),
            ],
            [
                ("build_id", "2026.11.1"),
                ("slot", "a"),
                ("provisioned", "false"),
                ("name", "atomixos-0001"),
            ],
        );
        assert_eq!(d.name, "atomixos-0001");
        assert_eq!(d.url.as_deref(), Some("http://192.168.100.1:8080"));
        assert_eq!(d.build_id.as_deref(), Some("2026.11.1"));
        assert_eq!(d.slot.as_deref(), Some("a"));
        assert!(!d.provisioned);
        assert_eq!(d.addresses[0], "192.168.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "name": "atomixos-0001",
                "url": "http://192.168.100.1:8080",
                "build_id": "2026.11.1",
                "slot": "a",
                "provisioned": false,
                "host": "atomixos.local.",
                "addresses": ["192.168.100.1", "fe80::5054:ff:fea7:2"],
                "port": 8080
            })
        );
    }

    #[test]
    fn link_local_only_has_no_url_and_global_ipv6_is_bracketed() {
        let ll = Found::new(
            "edge",
            "edge.local.",
            8080,
            ["fe80::1".parse().unwrap()],
            [("provisioned", "true")],
        );
        assert_eq!(ll.url, None);
        assert!(ll.provisioned);
        let v6 = Found::new(
            "edge",
            "edge.local.",
            8080,
            ["2001:db8::1".parse().unwrap()],
            [],
        );
        assert_eq!(v6.url.as_deref(), Some("http://[2001:db8::1]:8080"));
        assert!(!v6.provisioned);
    }

    #[test]
    fn the_listing_is_aligned() {
        let devices = [
            Found::new(
                "atomixos-0001",
                "atomixos.local.",
                8080,
                ["192.168.100.1".parse().unwrap()],
                [("build_id", "b1"), ("slot", "a"), ("provisioned", "false")],
            ),
            Found::new("edge-7", "edge-7.local.", 8080, [], []),
        ];
        assert_eq!(
            lines(&devices),
            [
                "NAME           URL                        BUILD  SLOT  PROVISIONED",
                "atomixos-0001  http://192.168.100.1:8080  b1     a     no",
                "edge-7         -                          -      -     no",
            ]
        );
    }
}
