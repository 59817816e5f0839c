//! What the device publishes: a [`Publication`], plain data computed from the device's
//! state (the instance name and TXT record, the host name, the port, the interfaces).

use std::path::PathBuf;

use atomix_api::discovery::{Announcement, SERVICE_TYPE};
use atomix_config::render::system::{LAN_IF, WAN_IF};
use serde::Serialize;

use crate::paths::Paths;

/// The interface whose MAC address names an unprovisioned device (the WAN port, as
/// printed on the board's label).
pub const NAMING_INTERFACE: &str = WAN_IF;

/// Where the naming interface's MAC address is read, under the root.
pub fn mac_path(paths: &Paths) -> PathBuf {
    paths.under(format!("sys/class/net/{NAMING_INTERFACE}/address"))
}

/// Everything the device publishes over multicast DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Publication {
    /// The instance name and TXT record.
    pub announcement: Announcement,
    /// The host name (one label) the SRV record points at and whose A records carry
    /// the interfaces' addresses: `<host>.local`.
    pub host: String,
    /// The service's port.
    pub port: u16,
    /// The interfaces answered on, by name.
    pub interfaces: Vec<String>,
}

impl Publication {
    /// The service's full DNS-SD name, `<instance>._atomix._tcp.local.`.
    pub fn fullname(&self) -> String {
        format!("{}.{SERVICE_TYPE}.local.", self.announcement.name)
    }
}

/// What the device announces now: the current generation's host name once provisioned,
/// else the name made from the WAN port's MAC address (when its driver has made the
/// interface); the boot record's build id and slot.
pub fn announcement(paths: &Paths, boot: Option<&boot_state::BootRecord>) -> Announcement {
    let hostname = configured_hostname(paths);
    let mac = std::fs::read_to_string(mac_path(paths)).ok();
    Announcement {
        name: Announcement::instance_name(hostname.as_deref(), mac.as_deref()),
        build_id: boot.and_then(|b| b.build_id.clone()),
        slot: boot.map(|b| b.slot.to_string()),
        provisioned: current(paths).is_some(),
    }
}

fn current(paths: &Paths) -> Option<u64> {
    atomix_config::generations::Store::new(paths.config_store())
        .current()
        .ok()
        .flatten()
}

/// The current generation's host name (`None` unprovisioned).
fn configured_hostname(paths: &Paths) -> Option<String> {
    let store = atomix_config::generations::Store::new(paths.config_store());
    let n = current(paths)?;
    std::fs::read_to_string(store.path(n).join("rendered/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The publication for the device's state: [`announcement`], on `port`, with the
/// configured host name once provisioned and the instance name before (every fresh
/// device's kernel host name is the image's `atomixos`: as the target of the SRV record
/// and of A queries, `atomixos-<4 hex>.local` reaches this device alone), on the
/// interfaces where multicast DNS is on: the LAN always, the WAN too while
/// unprovisioned (so that a fresh device can be found from either port; the firewall
/// opens UDP 5353 on the LAN alone once provisioned).
pub fn publication(paths: &Paths, boot: Option<&boot_state::BootRecord>, port: u16) -> Publication {
    let announcement = announcement(paths, boot);
    let host = configured_hostname(paths).unwrap_or_else(|| announcement.name.clone());
    plan(announcement, host, port)
}

/// The publication of `announcement` as host `host` on `port`: the interfaces follow
/// from whether the device is provisioned.
pub fn plan(announcement: Announcement, host: String, port: u16) -> Publication {
    let interfaces = if announcement.provisioned {
        vec![LAN_IF.to_owned()]
    } else {
        vec![WAN_IF.to_owned(), LAN_IF.to_owned()]
    };
    Publication {
        announcement,
        host,
        port,
        interfaces,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh device's announcement, for the tests of `announce`.
    pub(crate) fn unprovisioned() -> Announcement {
        Announcement {
            name: "atomixos-0001".into(),
            build_id: Some("2026.11.1".into()),
            slot: Some("a".into()),
            provisioned: false,
        }
    }

    #[test]
    fn unprovisioned_on_both_ports_provisioned_on_the_lan() {
        let fresh = plan(unprovisioned(), "atomixos".into(), 8080);
        assert_eq!(fresh.interfaces, ["eth0", "eth1"]);
        assert_eq!(fresh.fullname(), "atomixos-0001._atomix._tcp.local.");
        let done = plan(
            Announcement {
                name: "edge-7".into(),
                provisioned: true,
                ..unprovisioned()
            },
            "edge-7".into(),
            8080,
        );
        assert_eq!(done.interfaces, ["eth1"]);
        assert_eq!(done.host, "edge-7");
    }

    #[test]
    fn the_publication_of_a_fresh_root() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        let p = publication(&paths, None, 8080);
        assert_eq!(p.announcement.name, "atomixos", "no MAC address yet");
        assert_eq!(p.host, "atomixos");
        assert!(!p.announcement.provisioned);

        let mac = mac_path(&paths);
        std::fs::create_dir_all(mac.parent().unwrap()).unwrap();
        std::fs::write(&mac, "52:54:00:a7:00:01\n").unwrap();
        let p = publication(&paths, None, 9000);
        assert_eq!(p.announcement.name, "atomixos-0001");
        assert_eq!(
            p.host, "atomixos-0001",
            "not the host name every fresh device has"
        );
        assert_eq!(p.port, 9000);
        assert_eq!(p.interfaces, ["eth0", "eth1"]);
    }
}
