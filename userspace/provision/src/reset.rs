//! Factory reset: everything under `/data` erased, so the device boots unprovisioned
//! with its A/B layout intact (DESIGN.md "Reprovisioning"). The fresh-flash marker goes
//! too, so `/boot/config.toml` is not replayed: the next boot looks for a USB seed, then
//! opens the console.
//!
//! Two ways in:
//!
//! * [`wipe`] erases at once (`atomix-provision factory-reset`, run by hand when nothing
//!   else uses `/data`).
//! * [`request`] is what the running service does (`POST /api/factory-reset`): it cannot
//!   erase `/data` under itself and the containers, which hold files open there and
//!   would write some back (their data under `/data/apps`, the image store under
//!   `/data/containers`, RAUC's status under `/data/rauc`). So it writes the request
//!   marker ([`Paths::reset_request`]), unprovisions (`current` removed) and the job
//!   reboots. Early in the next boot, before any container or the service starts,
//!   `atomix-provision restore` (and `serve`, should restore not have run) calls
//!   [`complete_pending`], which erases everything but the marker, then the marker.
//!
//! Power cuts: the marker is written (temp file, fsync, rename) before `current` goes,
//! so once a reset is accepted every later boot erases until an erase has finished; the
//! marker is removed last, so an erase cut short starts again. Until the reboot the
//! device is unprovisioned already (health says so, and only the image's keys are
//! trusted).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use atomix_config::generations::Store;
use failpoints::Failpoints;
use serde::{Deserialize, Serialize};

use crate::apply::Outcome;
use crate::jobs::{JobHandle, JobResult, Level, Rollback, RollbackState};
use crate::paths::Paths;
use crate::system::{Action, System};
use crate::update::REBOOT_DELAY;

/// The job's step names (events; `reset` is also a failpoint name).
pub const RESET: &str = "reset";
pub const REBOOT: &str = "reboot";

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("cannot unprovision (remove {})", .path.display())]
    Unprovision {
        path: PathBuf,
        #[source]
        source: atomix_config::generations::StoreError,
    },
    #[error("cannot write the reset request")]
    Request(#[source] boot_state::StateError),
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ResetError + 'a {
    move |source| ResetError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The request marker's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Request {
    /// When the reset was accepted (RFC 3339).
    pub requested: String,
    /// The job that accepted it.
    pub job: Option<String>,
    /// The `SHA256:` fingerprint of the key that signed it.
    pub signer: Option<String>,
}

/// Marks `/data` for erasing at the next boot, then unprovisions. Nothing is erased yet.
pub fn request(paths: &Paths, request: &Request) -> Result<(), ResetError> {
    let marker = paths.reset_request();
    boot_state::write_record(&marker, request).map_err(ResetError::Request)?;
    unprovision(paths)
}

/// A reset accepted but not yet completed.
pub fn pending(paths: &Paths) -> bool {
    paths.reset_request().exists()
}

/// Completes a requested reset: erases everything under `/data` but the marker, then
/// the marker. `Ok(false)`: none was requested.
pub fn complete_pending(paths: &Paths) -> Result<bool, ResetError> {
    if !pending(paths) {
        return Ok(false);
    }
    unprovision(paths)?;
    let marker = paths.reset_request();
    erase(paths, Some(&marker))?;
    std::fs::remove_file(&marker).map_err(io("remove", &marker))?;
    // The marker's directory (`/data/atomix`) was kept for it; it goes now.
    if let Some(dir) = marker.parent().filter(|d| *d != paths.data()) {
        if let Err(e) = std::fs::remove_dir(dir) {
            log::warn!("factory reset: {} left: {e}", dir.display());
        }
    }
    sync_dir(&paths.data())?;
    Ok(true)
}

/// Erases `/data` now: unprovisions first (a power cut mid-erase leaves an
/// unprovisioned device), then removes everything, never crossing into another mount.
pub fn wipe(paths: &Paths) -> Result<(), ResetError> {
    unprovision(paths)?;
    erase(paths, None)?;
    sync_dir(&paths.data())
}

fn unprovision(paths: &Paths) -> Result<(), ResetError> {
    Store::new(paths.config_store())
        .clear_current()
        .map_err(|source| ResetError::Unprovision {
            path: paths.config_store().join("current"),
            source,
        })
}

fn erase(paths: &Paths, keep: Option<&Path>) -> Result<(), ResetError> {
    let data = paths.data();
    let dev = std::fs::metadata(&data).map_err(io("read", &data))?.dev();
    remove_children(&data, dev, keep)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ResetError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// Removes what is in `dir` (not following links, not crossing mounts). A directory on
/// the way to `keep` is kept with `keep`. Returns whether `dir` still holds something.
fn remove_children(dir: &Path, dev: u64, keep: Option<&Path>) -> Result<bool, ResetError> {
    let mut kept = false;
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let path = entry.map_err(io("read", dir))?.path();
        if keep == Some(path.as_path()) {
            kept = true;
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(io("read", &path))?;
        if meta.is_dir() {
            if meta.dev() != dev {
                log::warn!("{}: a mount point, left alone", path.display());
                kept = true;
                continue;
            }
            if remove_children(&path, dev, keep.filter(|k| k.starts_with(&path)))? {
                kept = true;
                continue;
            }
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(io("remove", &path))?;
    }
    Ok(kept)
}

/// Runs a factory-reset job on this thread: [`request`], then, once the job is recorded
/// as succeeded, `systemctl reboot` [`REBOOT_DELAY`] later (the job holds the
/// single-flight slot until then, so no apply starts on a device about to be erased).
/// `current` is the generation when the job started (`result.generation`: none after).
/// `unprovisioned` is called once the request is made, before the wait for the reboot
/// (the service announces the device as unprovisioned then).
pub fn run(
    job: JobHandle,
    system: &dyn System,
    failpoints: &Failpoints,
    paths: &Paths,
    signer: &str,
    current: Option<u64>,
    unprovisioned: &dyn Fn(),
) -> Outcome {
    job.event(
        RESET,
        Level::Info,
        format!(
            "factory reset signed by {signer}: generation {} and everything else under {} will be erased",
            current.map_or("none".into(), |n| n.to_string()),
            paths.data().display()
        ),
    );
    failpoints.hold(RESET);
    let marked = request(
        paths,
        &Request {
            requested: crate::now_rfc3339(),
            job: Some(job.id.clone()),
            signer: Some(signer.to_owned()),
        },
    )
    .map_err(anyhow::Error::from)
    .and_then(|()| Ok(failpoints.check(RESET)?))
    .map_err(|e| format!("{e:#}"));
    let rollback = Rollback {
        state: RollbackState::None,
        generation: None,
    };
    let result = match &marked {
        Ok(()) => {
            job.event(
                RESET,
                Level::Info,
                "unprovisioned; the erase completes early in the next boot, before any container starts",
            );
            JobResult::default()
        }
        Err(e) => {
            job.event(RESET, Level::Error, e.clone());
            JobResult {
                generation: Store::new(paths.config_store()).current().ok().flatten(),
                failed_step: Some(RESET.into()),
                error: Some(e.clone()),
            }
        }
    };
    let outcome = Outcome { result, rollback };
    if !outcome.succeeded() {
        job.finish(outcome.result.clone(), outcome.rollback);
        return outcome;
    }
    unprovisioned();
    job.event(
        REBOOT,
        Level::Info,
        format!("rebooting in {} s", REBOOT_DELAY.as_secs()),
    );
    let id = job.id.clone();
    let _hold = job.finish_and_hold(outcome.result.clone(), outcome.rollback);
    std::thread::sleep(REBOOT_DELAY);
    if let Err(e) = system.run(&Action::systemctl(&["reboot"])) {
        log::error!("job {id}: the factory reset is pending but the reboot failed: {e}; it completes at the next boot");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let data = paths.data();
        for d in [
            "config/generations/1",
            "apps/web",
            "containers/storage",
            "rauc",
        ] {
            std::fs::create_dir_all(data.join(d)).unwrap();
        }
        std::fs::write(data.join("config/generations/1/config.toml"), "x").unwrap();
        std::os::unix::fs::symlink("generations/1", data.join("config/current")).unwrap();
        std::fs::write(data.join("apps/web/db"), "rows").unwrap();
        std::fs::create_dir_all(paths.marker().parent().unwrap()).unwrap();
        std::fs::write(paths.marker(), "{}").unwrap();
        // A container's link out of /data: erased, never followed.
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/keep"), "k").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), data.join("apps/web/link")).unwrap();
        (dir, paths)
    }

    fn request_now() -> Request {
        Request {
            requested: "2026-01-01T00:00:00Z".into(),
            job: Some("0123456789abcdef".into()),
            signer: None,
        }
    }

    #[test]
    fn a_request_unprovisions_and_erases_nothing_until_completed() {
        let (dir, paths) = device();
        assert!(!complete_pending(&paths).unwrap(), "nothing requested");
        assert!(paths.data().join("apps/web/db").exists());

        request(&paths, &request_now()).unwrap();
        assert!(pending(&paths));
        let store = Store::new(paths.config_store());
        assert_eq!(store.current().unwrap(), None, "unprovisioned at once");
        assert!(
            paths.data().join("apps/web/db").exists(),
            "erased only later"
        );

        assert!(complete_pending(&paths).unwrap());
        let left: Vec<_> = std::fs::read_dir(paths.data()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!pending(&paths));
        assert!(
            dir.path().join("outside/keep").exists(),
            "links are not followed"
        );
        assert!(!complete_pending(&paths).unwrap(), "done once");
    }

    /// An erase cut short (here: the marker is all that is left, or everything is) is
    /// started again by the next boot: the marker goes last.
    #[test]
    fn the_marker_outlives_everything_else() {
        let (_dir, paths) = device();
        request(&paths, &request_now()).unwrap();
        erase(&paths, Some(&paths.reset_request())).unwrap();
        assert!(pending(&paths));
        let left: Vec<_> = std::fs::read_dir(paths.data())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["atomix"]);
        let read: Request = boot_state::read_record(&paths.reset_request())
            .unwrap()
            .unwrap();
        assert_eq!(read, request_now());
        assert!(complete_pending(&paths).unwrap());
        assert_eq!(std::fs::read_dir(paths.data()).unwrap().count(), 0);
    }

    #[test]
    fn wipe_erases_at_once() {
        let (_dir, paths) = device();
        wipe(&paths).unwrap();
        assert_eq!(std::fs::read_dir(paths.data()).unwrap().count(), 0);
    }
}
