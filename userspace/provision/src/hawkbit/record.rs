//! The action in progress, persisted so that a reboot or a power cut in the middle of a
//! deployment ends with a report to the server, never with the action forgotten:
//! `/data/atomix/hawkbit/action.json`, written atomically (temporary file, fsync,
//! rename, fsync of the directory). It exists from the moment the device takes a
//! deployment on until the server has accepted its final feedback.
//!
//! This is the device's own format, so unlike the server's documents it is read with
//! `deny_unknown_fields`: a record that does not parse is a bug to report, not to guess.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::wire::Hashes;

/// Where the record lives under `/data`.
pub const RECORD_IN_DATA: &str = "atomix/hawkbit/action.json";

/// One deployment the device has taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActionRecord {
    /// The server's action id.
    pub action_id: String,
    /// The chunk's version, as the server names the software.
    pub version: String,
    /// The RAUC bundle's artifact.
    pub artifact: String,
    pub size: u64,
    pub download_url: String,
    pub hashes: Hashes,
    /// The slot and build the device ran when it took the action on.
    pub from_slot: String,
    pub from_build: String,
    /// The boot (`/proc/sys/kernel/random/boot_id`) in which `phase` last changed.
    pub boot_id: String,
    pub phase: Phase,
    /// The controller resource the action was taken from
    /// (`<url>/<tenant>/controller/v1/<controller-id>`): its result is reported there
    /// and nowhere else. Absent in records written before it was kept: those count as
    /// the current server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// When the server first failed to take the result (seconds since the epoch): a
    /// result refused for [`super::decide::REPORT_FOR`] is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreported_since: Option<u64>,
}

/// How far the action got. Before [`Phase::Installing`] nothing has been written to a
/// slot, so a cancel is still honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "state")]
pub enum Phase {
    /// The bundle is being fetched into `/data` (a partial file is discarded on restart).
    Downloading,
    /// `rauc install` is writing `target_slot` (the other slot; absent in records
    /// written before it was kept, or when the booted slot was unknown). RAUC makes it
    /// the next boot's as its last step, so a power cut between that and saving
    /// [`Phase::Installed`] boots the new slot: `target_slot` tells it apart from a cut
    /// mid-write. The build installed from is the record's `from_build`: the record
    /// is made again whenever a download restarts, so that is this boot's build.
    Installing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_slot: Option<String>,
    },
    /// RAUC wrote `target_slot` and made it the next boot's: the result is known once
    /// that slot boots and is marked good, or the device falls back.
    Installed { target_slot: String },
    /// The result is known; the server has not acknowledged it yet.
    Reporting { success: bool, details: Vec<String> },
}

impl Phase {
    /// Whether a slot may have been written (a cancel is refused from here on).
    pub fn wrote_slot(&self) -> bool {
        !matches!(self, Phase::Downloading)
    }
}

/// The record's file under one root.
#[derive(Debug, Clone)]
pub struct RecordStore {
    path: PathBuf,
}

impl RecordStore {
    pub fn new(data: &Path) -> RecordStore {
        RecordStore {
            path: data.join(RECORD_IN_DATA),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record, if an action is in progress.
    pub fn load(&self) -> io::Result<Option<ActionRecord>> {
        match fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the record atomically.
    pub fn save(&self, record: &ActionRecord) -> io::Result<()> {
        let dir = self.path.parent().expect("the record has a directory");
        fs::create_dir_all(dir)?;
        let tmp = dir.join(".action.json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(record).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }

    /// The action is over (its final feedback accepted, or a cancel confirmed).
    pub fn clear(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        File::open(self.path.parent().expect("the record has a directory"))?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(phase: Phase) -> ActionRecord {
        ActionRecord {
            action_id: "1".into(),
            version: "2.0.0".into(),
            artifact: "v2.raucb".into(),
            size: 75407,
            download_url: "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043/download".into(),
            hashes: Hashes {
                sha1: Some("360d6ca5d055c1b51450900acaad9c09109fd18a".into()),
                ..Hashes::default()
            },
            from_slot: "a".into(),
            from_build: "1.0.0".into(),
            boot_id: "boot-1".into(),
            phase,
            server: Some("http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043".into()),
            unreported_since: None,
        }
    }

    #[test]
    fn the_record_survives_a_round_trip_and_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        assert_eq!(store.load().unwrap(), None);
        for phase in [
            Phase::Downloading,
            Phase::Installing { target_slot: None },
            Phase::Installing {
                target_slot: Some("b".into()),
            },
            Phase::Installed {
                target_slot: "b".into(),
            },
            Phase::Reporting {
                success: false,
                details: vec!["fell back".into()],
            },
        ] {
            let r = record(phase);
            store.save(&r).unwrap();
            assert_eq!(store.load().unwrap(), Some(r));
        }
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"state\": \"reporting\""), "{text}");
        store.clear().unwrap();
        store.clear().unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert_eq!(
            fs::read_dir(store.path().parent().unwrap())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_record_written_before_the_server_was_kept_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        let mut v = serde_json::to_value(record(Phase::Reporting {
            success: true,
            details: vec![],
        }))
        .unwrap();
        let fields = v.as_object_mut().unwrap();
        fields.remove("server");
        assert!(!fields.contains_key("unreported-since"));
        fs::write(store.path(), v.to_string()).unwrap();
        let r = store.load().unwrap().unwrap();
        assert_eq!((r.server, r.unreported_since), (None, None));
    }

    #[test]
    fn an_installing_record_without_its_target_still_reads() {
        let mut v = serde_json::to_value(record(Phase::Downloading)).unwrap();
        v["phase"] = serde_json::json!({"state": "installing"});
        let r: ActionRecord = serde_json::from_value(v).unwrap();
        assert_eq!(r.phase, Phase::Installing { target_slot: None });
    }

    #[test]
    fn a_record_of_another_format_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        let mut v = serde_json::to_value(record(Phase::Downloading)).unwrap();
        v["surprise"] = 1.into();
        fs::write(store.path(), v.to_string()).unwrap();
        assert_eq!(store.load().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
