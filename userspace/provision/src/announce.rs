//! The device's announcement on the local network: the `_atomix._tcp` DNS-SD service
//! (`atomix_api::discovery`) and the host name it points at, answered over multicast DNS
//! by the service itself.
//!
//! What is announced is plain data, a [`Publication`], computed from the device's state
//! ([`publication`]): the instance name and TXT record, the host name, the port and the
//! interfaces to answer on. Publishing it is a side effect behind [`Announcer`]:
//! [`MdnsAnnouncer`] answers with the `mdns-sd` crate, [`RecordAnnouncer`] writes the
//! publication to a file (`--system record`), [`FakeAnnouncer`] keeps it in memory.
//!
//! Why not systemd-resolved: its prober (257) renames the device against itself when a
//! query arrives while it probes (upstream systemd #42072, #35780, #41342), so a phone
//! browsing while a device boots could rename it. `mdns-sd` takes an answer for a name it
//! probes as a conflict only when the record's data differs from its own (RFC 6762
//! section 9), so its own answers, looped back, rename nothing.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use atomix_api::discovery::{Announcement, SERVICE_TYPE, UNPROVISIONED_PREFIX};
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

/// Where [`RecordAnnouncer`] writes the publication, relative to the root.
pub const RECORD_FILE: &str = "run/atomix/announcement.json";

/// Everything the device publishes over multicast DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Publication {
    /// The instance name and TXT record.
    pub announcement: Announcement,
    /// The host name (one label) the SRV record points at and whose A/AAAA records
    /// carry the interfaces' addresses: `<host>.local`.
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

/// The publication for the device's state: [`announcement`], on `port`, with the host
/// name the device has (the image's `atomixos` until a config names it), on the
/// interfaces where multicast DNS is on: the LAN always, the WAN too while
/// unprovisioned (so that a fresh device can be found from either port; the firewall
/// opens UDP 5353 on the LAN alone once provisioned).
pub fn publication(paths: &Paths, boot: Option<&boot_state::BootRecord>, port: u16) -> Publication {
    let announcement = announcement(paths, boot);
    let host = configured_hostname(paths).unwrap_or_else(|| UNPROVISIONED_PREFIX.to_owned());
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

/// A publication that could not be made or taken back.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("cannot start the multicast DNS responder (UDP port 5353)")]
    Start(#[source] mdns_sd::Error),
    #[error("multicast DNS refused the service {name:?}")]
    Service {
        name: String,
        #[source]
        source: mdns_sd::Error,
    },
    #[error("the multicast DNS responder did not stop")]
    Stop(#[source] mdns_sd::Error),
    #[error("cannot record the announcement in {}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("announcing {name:?} failed (a test's fake said so)")]
    Fake { name: String },
}

/// Publishes the device on the local network. `publish` replaces what was published
/// before; `withdraw` takes it back (goodbye packets), at shutdown.
pub trait Announcer: Send + Sync + std::fmt::Debug {
    fn publish(&self, p: &Publication) -> Result<(), AnnounceError>;
    fn withdraw(&self) -> Result<(), AnnounceError>;
}

/// How long a stop or an unregistration is waited for: the daemon answers at once
/// unless its thread is gone.
const DAEMON_REPLY: Duration = Duration::from_secs(2);

/// The `mdns-sd` responder. Each publication gets a daemon of its own: the previous one
/// is shut down first (its goodbye packets withdraw the old names, TTL 0, which a new
/// daemon ignores as expired), so a new daemon never meets a stale answer of its own
/// with other data, the one thing it would take for a conflict. The daemon probes the
/// names (RFC 6762 section 8.1) and then answers PTR, SRV, TXT and A/AAAA queries on the
/// chosen interfaces, with their addresses as they come and go (checked every 5 s), so
/// a DHCP lease or an interface that appears after the start is answered for too.
#[derive(Default)]
pub struct MdnsAnnouncer {
    daemon: Mutex<Option<mdns_sd::ServiceDaemon>>,
}

impl std::fmt::Debug for MdnsAnnouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.daemon.lock().is_ok_and(|d| d.is_some());
        f.debug_struct("MdnsAnnouncer")
            .field("running", &running)
            .finish()
    }
}

impl MdnsAnnouncer {
    pub fn new() -> Self {
        MdnsAnnouncer::default()
    }

    /// A daemon answering for `p` on its interfaces alone.
    fn start(p: &Publication) -> Result<mdns_sd::ServiceDaemon, AnnounceError> {
        use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
        let daemon = ServiceDaemon::new().map_err(AnnounceError::Start)?;
        let refused = |source| AnnounceError::Service {
            name: p.announcement.name.clone(),
            source,
        };
        // It starts on every interface (loopback included); the selections apply in
        // order, before the service is registered.
        let mut kinds = vec![];
        kinds.extend(p.interfaces.iter().map(|i| IfKind::Name(i.clone())));
        daemon.disable_interface(IfKind::All).map_err(refused)?;
        daemon.enable_interface(kinds).map_err(refused)?;
        log_renames(&daemon);
        let txt: Vec<(&str, String)> = p.announcement.txt();
        let info = ServiceInfo::new(
            &format!("{SERVICE_TYPE}.local."),
            &p.announcement.name,
            &format!("{}.local.", p.host),
            "",
            p.port,
            &txt[..],
        )
        .map_err(refused)?
        // The addresses of the selected interfaces, kept current by the daemon.
        .enable_addr_auto();
        daemon.register(info).map_err(refused)?;
        Ok(daemon)
    }
}

/// Stops `daemon` (goodbye packets for what it announced) and waits for it.
fn stop(daemon: mdns_sd::ServiceDaemon) -> Result<(), AnnounceError> {
    let status = daemon.shutdown().map_err(AnnounceError::Stop)?;
    match status.recv_timeout(DAEMON_REPLY) {
        Ok(_) => Ok(()),
        Err(e) => Err(AnnounceError::Stop(mdns_sd::Error::Msg(e.to_string()))),
    }
}

/// Logs the names the daemon gives up: another host on the segment answered for one
/// while it probed, and it probes and announces a new one (`edge-7 (2)`, host
/// `edge-7-2.local`) on that interface instead. The thread ends with the daemon.
fn log_renames(daemon: &mdns_sd::ServiceDaemon) {
    let Ok(events) = daemon.monitor() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("mdns-monitor".into())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                if let mdns_sd::DaemonEvent::NameChange(c) = event {
                    log::warn!(
                        "another host on {} answers for {}: announced as {} there",
                        c.intf_name,
                        c.original,
                        c.new_name
                    );
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch multicast DNS for name conflicts: {e}");
    }
}

impl Announcer for MdnsAnnouncer {
    fn publish(&self, p: &Publication) -> Result<(), AnnounceError> {
        let mut daemon = self.daemon.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = daemon.take() {
            if let Err(e) = stop(old) {
                log::warn!("{:#}", anyhow::Error::new(e));
            }
        }
        *daemon = Some(MdnsAnnouncer::start(p)?);
        Ok(())
    }

    fn withdraw(&self) -> Result<(), AnnounceError> {
        let old = self.daemon.lock().unwrap_or_else(|e| e.into_inner()).take();
        old.map_or(Ok(()), stop)
    }
}

/// Writes the publication as JSON to `ROOT/run/atomix/announcement.json` (crash-safe:
/// temp file, fsync, rename, fsync of the directory) and removes it on withdrawal: the
/// announcer of `--system record`, for end-to-end tests.
#[derive(Debug)]
pub struct RecordAnnouncer {
    pub path: PathBuf,
}

impl RecordAnnouncer {
    pub fn new(paths: &Paths) -> Self {
        RecordAnnouncer {
            path: paths.under(RECORD_FILE),
        }
    }
}

impl Announcer for RecordAnnouncer {
    fn publish(&self, p: &Publication) -> Result<(), AnnounceError> {
        let mut json = serde_json::to_vec_pretty(p).expect("publications serialise");
        json.push(b'\n');
        boot_state::write_atomic(&self.path, &json).map_err(|e| AnnounceError::Record {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })
    }

    fn withdraw(&self) -> Result<(), AnnounceError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AnnounceError::Record {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// What a [`FakeAnnouncer`] was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announced {
    Published(Publication),
    Withdrawn,
}

/// Keeps what it was asked in memory; can be told to fail a publication (unit tests).
#[derive(Debug, Default)]
pub struct FakeAnnouncer {
    pub calls: Mutex<Vec<Announced>>,
    /// When set, publishing fails (and is not recorded).
    pub failing: Mutex<bool>,
}

impl FakeAnnouncer {
    pub fn calls(&self) -> Vec<Announced> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The publications, in order.
    pub fn published(&self) -> Vec<Publication> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Announced::Published(p) => Some(p),
                Announced::Withdrawn => None,
            })
            .collect()
    }
}

impl Announcer for FakeAnnouncer {
    fn publish(&self, p: &Publication) -> Result<(), AnnounceError> {
        if *self.failing.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(AnnounceError::Fake {
                name: p.announcement.name.clone(),
            });
        }
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Announced::Published(p.clone()));
        Ok(())
    }

    fn withdraw(&self) -> Result<(), AnnounceError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Announced::Withdrawn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unprovisioned() -> Announcement {
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
        assert_eq!(p.host, "atomixos", "every fresh device's host name");
        assert_eq!(p.port, 9000);
        assert_eq!(p.interfaces, ["eth0", "eth1"]);
    }

    #[test]
    fn the_record_is_the_publication_and_goes_with_it() {
        let root = tempfile::tempdir().unwrap();
        let record = RecordAnnouncer::new(&Paths::new(root.path()));
        let p = plan(unprovisioned(), "atomixos".into(), 8080);
        record.publish(&p).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.path().join(RECORD_FILE)).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "announcement": {
                    "name": "atomixos-0001",
                    "build_id": "2026.11.1",
                    "slot": "a",
                    "provisioned": false
                },
                "host": "atomixos",
                "port": 8080,
                "interfaces": ["eth0", "eth1"]
            })
        );
        record.withdraw().unwrap();
        assert!(!root.path().join(RECORD_FILE).exists());
        record.withdraw().unwrap();
    }
}
