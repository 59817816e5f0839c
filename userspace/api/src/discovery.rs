//! How a device is found on the local network: a DNS-SD service of type
//! [`SERVICE_TYPE`] on the API's port, announced over multicast DNS (by the provisioning
//! service itself, with `mdns-sd`). The instance name says which device it is; the TXT
//! record says what it runs.
//!
//! The device renders an [`Announcement`] with [`Announcement::txt`], `atomixctl
//! discover` reads one back with [`Announcement::from_txt`]: one definition of the keys.

use serde::{Deserialize, Serialize};

/// The DNS-SD service type (RFC 6763), without the domain.
pub const SERVICE_TYPE: &str = "_atomix._tcp";

/// The name of an unprovisioned device: this, a dash and the last 4 hex digits of its
/// WAN port's MAC address (every fresh device has the same host name, `atomixos`).
pub const UNPROVISIONED_PREFIX: &str = "atomixos";

/// The TXT keys.
pub mod txt {
    /// The build id of the running image (absent when the boot record has none).
    pub const BUILD_ID: &str = "build_id";
    /// The slot the device booted from, `a` or `b` (absent when unknown).
    pub const SLOT: &str = "slot";
    /// `true` or `false`.
    pub const PROVISIONED: &str = "provisioned";
    /// The instance name again, for clients that show TXT records alone.
    pub const NAME: &str = "name";
}

/// What a device announces: its instance name and TXT fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The DNS-SD instance name: `atomixos-<mac4>` unprovisioned, else the configured
    /// host name.
    pub name: String,
    pub build_id: Option<String>,
    pub slot: Option<String>,
    pub provisioned: bool,
}

impl Announcement {
    /// The instance name of a device: its configured host name once provisioned, else
    /// [`unprovisioned_name`] of its WAN MAC address (`atomixos` alone when the address
    /// could not be read).
    pub fn instance_name(hostname: Option<&str>, wan_mac: Option<&str>) -> String {
        match (hostname, wan_mac.and_then(unprovisioned_name)) {
            (Some(h), _) => h.to_owned(),
            (None, Some(name)) => name,
            (None, None) => UNPROVISIONED_PREFIX.to_owned(),
        }
    }

    /// The TXT record's key=value pairs, in this order.
    pub fn txt(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(b) = &self.build_id {
            pairs.push((txt::BUILD_ID, b.clone()));
        }
        if let Some(s) = &self.slot {
            pairs.push((txt::SLOT, s.clone()));
        }
        pairs.push((txt::PROVISIONED, self.provisioned.to_string()));
        pairs.push((txt::NAME, self.name.clone()));
        pairs
    }

    /// An announcement read back: `instance` (the DNS-SD instance name) and the TXT
    /// pairs. Unknown keys are ignored (a newer device may add some); `provisioned` is
    /// `false` unless it says `true`.
    pub fn from_txt<'a>(
        instance: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Announcement {
        let mut a = Announcement {
            name: instance.to_owned(),
            build_id: None,
            slot: None,
            provisioned: false,
        };
        for (key, value) in pairs {
            match key {
                txt::BUILD_ID => a.build_id = Some(value.to_owned()),
                txt::SLOT => a.slot = Some(value.to_owned()),
                txt::PROVISIONED => a.provisioned = value == "true",
                _ => {}
            }
        }
        a
    }
}

/// `atomixos-<last 4 hex digits>` of a MAC address as sysfs shows it
/// (`52:54:00:a7:00:01`, a newline allowed); `None` when it is not one.
pub fn unprovisioned_name(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.trim().split(':').collect();
    let hex = |o: &&str| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit());
    if octets.len() != 6 || !octets.iter().all(hex) {
        return None;
    }
    Some(format!(
        "{UNPROVISIONED_PREFIX}-{}{}",
        octets[4].to_ascii_lowercase(),
        octets[5].to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprovisioned_names_from_mac_addresses() {
        let cases = [
            ("52:54:00:a7:00:01\n", Some("atomixos-0001")),
            ("DA:6E:1F:22:AB:CD", Some("atomixos-abcd")),
            ("00:00:00:00:00:00", Some("atomixos-0000")),
            ("", None),
            ("52:54:00:a7:00", None),
            ("52:54:00:a7:00:0g", None),
            ("52-54-00-a7-00-01", None),
            ("52:54:00:a7:00:001", None),
        ];
        for (mac, want) in cases {
            assert_eq!(unprovisioned_name(mac).as_deref(), want, "{mac:?}");
        }
    }

    #[test]
    fn instance_names() {
        let mac = Some("52:54:00:a7:00:01");
        assert_eq!(Announcement::instance_name(None, mac), "atomixos-0001");
        assert_eq!(Announcement::instance_name(Some("edge-7"), mac), "edge-7");
        assert_eq!(Announcement::instance_name(Some("edge-7"), None), "edge-7");
        assert_eq!(Announcement::instance_name(None, None), "atomixos");
        assert_eq!(Announcement::instance_name(None, Some("junk")), "atomixos");
    }

    #[test]
    fn txt_pairs_and_back() {
        let a = Announcement {
            name: "atomixos-0001".into(),
            build_id: Some("2026.11.1".into()),
            slot: Some("a".into()),
            provisioned: false,
        };
        let pairs = a.txt();
        assert_eq!(
            pairs,
            [
                ("build_id", "2026.11.1".to_owned()),
                ("slot", "a".to_owned()),
                ("provisioned", "false".to_owned()),
                ("name", "atomixos-0001".to_owned()),
            ]
        );
        let back =
            Announcement::from_txt("atomixos-0001", pairs.iter().map(|(k, v)| (*k, v.as_str())));
        assert_eq!(back, a);

        let bare = Announcement {
            name: "edge".into(),
            build_id: None,
            slot: None,
            provisioned: true,
        };
        assert_eq!(
            bare.txt(),
            [("provisioned", "true".into()), ("name", "edge".into())]
        );
        let newer = Announcement::from_txt(
            "edge",
            [("provisioned", "true"), ("color", "blue"), ("slot", "b")],
        );
        assert_eq!(newer.slot.as_deref(), Some("b"));
        assert!(newer.provisioned);
    }
}
