//! The device's announcement on the local network: the `_atomix._tcp` DNS-SD service
//! (`atomix_api::discovery`) and the host name it points at, answered over multicast DNS
//! by the service itself.
//!
//! What is announced is plain data, a [`Publication`], computed from the device's state
//! ([`publication`], in `plan`). Publishing it is a side effect behind [`Announcer`]:
//! [`MdnsAnnouncer`] answers on the network (`responder`, its packets in `packet`),
//! [`RecordAnnouncer`] writes the publication to a file (`--system record`),
//! [`FakeAnnouncer`] keeps it in memory.
//!
//! The responder is the service's own, small and bounded: it answers questions for its
//! names and never reads answers, so other hosts' packets leave no state behind (a
//! general responder such as `mdns-sd` caches every response it hears, from anyone,
//! with the sender's TTL). It does not probe (RFC 6762 section 8.1): instance names are
//! made from the WAN port's MAC address or are the operator's host name, and a name
//! another host also answers for is the operator's conflict to resolve. Nor does it
//! rename on a conflict, so its own answers looped back can never rename it, as
//! systemd-resolved's prober did (upstream systemd #42072, #35780, #41342).

mod packet;
mod plan;
mod responder;

use std::path::PathBuf;
use std::sync::Mutex;

pub use plan::{announcement, mac_path, plan, publication, Publication, NAMING_INTERFACE};
pub use responder::{GROUP, PORT};

use crate::paths::Paths;

/// Where [`RecordAnnouncer`] writes the publication, relative to the root.
pub const RECORD_FILE: &str = "run/atomix/announcement.json";

/// A publication that could not be made or taken back.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("cannot start the multicast DNS responder (UDP port 5353)")]
    Start(#[source] std::io::Error),
    #[error("{name:?} cannot be announced over DNS: {reason}")]
    Name { name: String, reason: String },
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

/// The service's own multicast DNS responder ([`responder`]). Each publication gets a
/// responder of its own: its records are made and its socket opened first (a failure
/// leaves the running one answering), then the previous one is stopped (its goodbye
/// packets, TTL 0, withdraw the old names), then the new one announces.
#[derive(Debug, Default)]
pub struct MdnsAnnouncer {
    running: Mutex<Option<responder::Responder>>,
}

impl MdnsAnnouncer {
    pub fn new() -> Self {
        MdnsAnnouncer::default()
    }
}

impl Announcer for MdnsAnnouncer {
    fn publish(&self, p: &Publication) -> Result<(), AnnounceError> {
        let prepared = responder::Responder::prepare(p)?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = running.take() {
            old.stop();
        }
        *running = Some(responder::Responder::start(prepared)?);
        Ok(())
    }

    fn withdraw(&self) -> Result<(), AnnounceError> {
        let old = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(old) = old {
            old.stop();
        }
        Ok(())
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
    use super::plan::tests::unprovisioned;
    use super::*;

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
