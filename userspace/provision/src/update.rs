//! Updates pushed over the API (`POST /api/update`): a RAUC bundle is written to
//! `/data/rauc/uploads/` while it arrives ([`Upload`]: a temporary name, hashed on the
//! way, synced and renamed; never held in memory), and once its signature checks out an
//! update job ([`run`]) installs it with `rauc install` and removes it, whatever the
//! outcome. RAUC writes the other A/B slot; that slot is the rollback, so an update job
//! has none of its own.
//!
//! Job steps (event names; `install` is also a failpoint): `receive` (size, SHA-256,
//! signer), `install`, `cleanup` (the bundle removed) and, with `?reboot=true` after a
//! successful install, `reboot` (`systemctl reboot` [`REBOOT_DELAY`] after the job is
//! recorded as succeeded, so a client polling the job sees that first).

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use sha2::{Digest, Sha256};

use crate::apply::Outcome;
use crate::jobs::{JobHandle, JobResult, Level, Rollback, RollbackState};
use crate::system::{Action, System};
use failpoints::Failpoints;

/// How long after a successful update job is recorded the reboot is requested.
pub const REBOOT_DELAY: Duration = Duration::from_secs(3);

/// The step names of an update job.
pub const RECEIVE: &str = "receive";
pub const INSTALL: &str = "install";
pub const CLEANUP: &str = "cleanup";
pub const REBOOT: &str = "reboot";

/// Why a bundle could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the bundle is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("not enough space in {} for the bundle", .dir.display())]
    NoSpace { dir: PathBuf },
    #[error("cannot write {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn random_token() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source works");
    atomix_api::hex(&b)
}

/// A bundle being received: `.<token>.raucb.tmp` in the uploads directory, removed
/// unless [`Upload::finish`] renamed it.
#[derive(Debug)]
pub struct Upload {
    dir: PathBuf,
    token: String,
    tmp: PathBuf,
    file: File,
    hasher: Sha256,
    size: u64,
    limit: u64,
    done: bool,
}

impl Upload {
    pub fn create(dir: &Path, limit: u64) -> Result<Upload, UploadError> {
        let io_err = |path: &Path, source: io::Error| UploadError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let token = random_token();
        let tmp = dir.join(format!(".{token}.raucb.tmp"));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        Ok(Upload {
            dir: dir.to_owned(),
            token,
            tmp,
            file,
            hasher: Sha256::new(),
            size: 0,
            limit,
            done: false,
        })
    }

    fn error(&self, source: io::Error) -> UploadError {
        if source.kind() == io::ErrorKind::StorageFull {
            UploadError::NoSpace {
                dir: self.dir.clone(),
            }
        } else {
            UploadError::Io {
                path: self.tmp.clone(),
                source,
            }
        }
    }

    /// Appends and hashes a chunk; past the limit nothing more is written.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(UploadError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).map_err(|e| self.error(e))
    }

    /// The whole bundle has arrived: synced, renamed to `<token>.raucb`, directory synced.
    pub fn finish(mut self) -> Result<Bundle, UploadError> {
        self.file.sync_all().map_err(|e| self.error(e))?;
        let path = self.dir.join(format!("{}.raucb", self.token));
        std::fs::rename(&self.tmp, &path).map_err(|e| self.error(e))?;
        self.done = true;
        let bundle = Bundle {
            path,
            sha256: atomix_api::hex(&self.hasher.clone().finalize()),
            size: self.size,
            removed: false,
        };
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| UploadError::Io {
                path: self.dir.clone(),
                source,
            })?;
        Ok(bundle)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A received bundle on disk. It is removed when this is dropped (a refused signature,
/// a busy device, the end of its job), so no path leaves a bundle behind.
#[derive(Debug)]
pub struct Bundle {
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    pub size: u64,
    removed: bool,
}

impl Bundle {
    /// A bundle stored by another path (the hawkBit client's download, hashed and
    /// synced there); removed when dropped, like a received one.
    pub fn stored(path: PathBuf, sha256: String, size: u64) -> Bundle {
        Bundle {
            path,
            sha256,
            size,
            removed: false,
        }
    }

    /// Removes the file now, saying whether that worked.
    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::error!("cannot remove {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// Removes whatever a cut-off upload or job left in the uploads directory. Call at
/// start, before the API listens: no upload or job can be using them then.
pub fn clear_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                log::warn!("removed a left-over upload {}", path.display())
            }
            Err(e) => log::error!("cannot remove {}: {e}", path.display()),
        }
    }
}

/// `POST /api/update`'s query: `reboot=true|false`, nothing else.
pub fn parse_query(query: Option<&str>) -> Result<bool, String> {
    let mut reboot = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("reboot", "true")) => reboot = true,
            Some(("reboot", "false")) => reboot = false,
            Some(("reboot", v)) => {
                return Err(format!("reboot={v}: give reboot=true or reboot=false"))
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {pair:?}: the only one is reboot=true|false"
                ))
            }
        }
    }
    Ok(reboot)
}

/// One upload at a time: bundles are large, and `/data` is not.
#[derive(Debug, Default)]
pub struct UploadSlot(AtomicBool);

/// The upload slot, taken; dropping it frees the slot.
#[derive(Debug)]
pub struct UploadTaken<'a>(&'a UploadSlot);

impl UploadSlot {
    /// Whether an upload is being received now.
    pub fn is_taken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn try_take(&self) -> Option<UploadTaken<'_>> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| UploadTaken(self))
    }
}

impl Drop for UploadTaken<'_> {
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Release);
    }
}

/// A verified bundle and what to do with it.
#[derive(Debug)]
pub struct Request {
    pub bundle: Bundle,
    /// The signer's `SHA256:` fingerprint, decided when the request's headers were
    /// authenticated; what the job records.
    pub signer: String,
    /// The signer's key: checked again against the then-current trusted keys right
    /// before the install (a key revoked during the upload installs nothing).
    pub key: Option<crate::auth::PublicKey>,
    pub reboot: bool,
}

/// Runs an update job on this thread: install, remove the bundle, finish; with
/// `reboot` after a successful install, reboot [`REBOOT_DELAY`] later (the job's slot is
/// held until the reboot has been requested). `current` is the config generation,
/// reported unchanged as the job's `result.generation`; `trusted_now` gives the trusted
/// keys at install time (the job holds the single-flight slot, so no apply changes them
/// between that check and the install).
pub fn run(
    job: JobHandle,
    system: &dyn System,
    failpoints: &Failpoints,
    request: Request,
    current: Option<u64>,
    trusted_now: &dyn Fn() -> Vec<crate::auth::PublicKey>,
) -> Outcome {
    let reboot = request.reboot;
    let outcome = install(&job, system, failpoints, request, current, trusted_now);
    if !(reboot && outcome.succeeded()) {
        job.finish(outcome.result.clone(), outcome.rollback);
        return outcome;
    }
    job.event(
        REBOOT,
        Level::Info,
        format!("rebooting in {} s", REBOOT_DELAY.as_secs()),
    );
    let id = job.id.clone();
    let _hold = job.finish_and_hold(outcome.result.clone(), outcome.rollback);
    reboot_later(system, &id);
    outcome
}

/// Waits [`REBOOT_DELAY`] (a client polling the job sees it succeeded), then asks
/// systemd to reboot; a failure is logged (the update is installed either way).
pub fn reboot_later(system: &dyn System, job: &str) {
    std::thread::sleep(REBOOT_DELAY);
    if let Err(e) = system.run(&Action::systemctl(&["reboot"])) {
        log::error!("job {job}: the update is installed but the reboot failed: {e}");
    }
}

/// The install of an update job, every update's one path (`POST /api/update` and the
/// hawkBit client): `receive`, `install` (`rauc install`, failpoint `install`) and
/// `cleanup` (the bundle removed, whatever the outcome). The job is left running: the
/// caller finishes it (and reboots) as its client needs. `request.reboot` is not looked at.
pub fn install(
    job: &JobHandle,
    system: &dyn System,
    failpoints: &Failpoints,
    request: Request,
    current: Option<u64>,
    trusted_now: &dyn Fn() -> Vec<crate::auth::PublicKey>,
) -> Outcome {
    let Request {
        bundle,
        signer,
        key,
        ..
    } = request;
    job.event(
        RECEIVE,
        Level::Info,
        format!(
            "{} bytes, sha256 {}, signed by {signer}",
            bundle.size, bundle.sha256
        ),
    );
    failpoints.hold(INSTALL);
    let revoked = key
        .as_ref()
        .is_some_and(|key| !trusted_now().iter().any(|k| k.key_data() == key.key_data()));
    let installed = if revoked {
        Err(anyhow!(
            "the signer's key {signer} is no longer trusted by this device (it was revoked during the upload); nothing was installed"
        ))
    } else {
        job.event(
            INSTALL,
            Level::Info,
            format!("rauc install {}", bundle.path.display()),
        );
        system
            .run(&Action::RaucInstall {
                bundle: bundle.path.clone(),
            })
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(failpoints.check(INSTALL)?))
    };
    // As the job reports it: the whole chain, `outer: inner`.
    let installed = installed.map_err(|e| format!("{e:#}"));
    match &installed {
        Ok(()) => job.event(
            INSTALL,
            Level::Info,
            "installed into the other slot, which boots next",
        ),
        Err(e) => job.event(INSTALL, Level::Error, e.clone()),
    }
    let path = bundle.path.clone();
    match bundle.remove() {
        Ok(()) => job.event(CLEANUP, Level::Info, "bundle removed"),
        Err(e) => job.event(
            CLEANUP,
            Level::Warning,
            format!("cannot remove {}: {e}", path.display()),
        ),
    }
    Outcome {
        result: JobResult {
            generation: current,
            failed_step: installed.is_err().then(|| INSTALL.to_owned()),
            error: installed.err(),
        },
        rollback: Rollback {
            state: RollbackState::None,
            generation: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobKind, JobState, Tracker};
    use crate::system::FakeSystem;
    use atomix_config::generations::Origin;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn an_upload_is_hashed_synced_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = dir.path().join("data/rauc/uploads");
        let mut up = Upload::create(&uploads, 100).unwrap();
        let tmp_name = files(&uploads);
        assert_eq!(tmp_name.len(), 1);
        assert!(
            tmp_name[0].starts_with('.') && tmp_name[0].ends_with(".raucb.tmp"),
            "{tmp_name:?}"
        );
        up.write(b"hello ").unwrap();
        up.write(b"world").unwrap();
        let bundle = up.finish().unwrap();
        assert_eq!(bundle.size, 11);
        assert_eq!(
            bundle.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(std::fs::read(&bundle.path).unwrap(), b"hello world");
        assert!(bundle.path.extension().is_some_and(|e| e == "raucb"));
        assert_eq!(files(&uploads).len(), 1, "the temporary name is gone");
        drop(bundle);
        assert!(files(&uploads).is_empty(), "a dropped bundle is removed");
    }

    #[test]
    fn an_upload_past_the_limit_or_cut_off_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Upload::create(dir.path(), 10).unwrap();
        up.write(b"0123456789").unwrap();
        let err = up.write(b"x").unwrap_err();
        assert_eq!(err.to_string(), "the bundle is larger than 10 bytes");
        drop(up);
        assert!(files(dir.path()).is_empty());

        let mut up = Upload::create(dir.path(), 10).unwrap();
        up.write(b"part").unwrap();
        drop(up);
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn leftovers_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.raucb"), b"x").unwrap();
        std::fs::write(dir.path().join(".b.raucb.tmp"), b"x").unwrap();
        clear_leftovers(dir.path());
        assert!(files(dir.path()).is_empty());
        clear_leftovers(&dir.path().join("missing"));
    }

    #[test]
    fn the_query_takes_reboot_only() {
        let cases: &[(Option<&str>, Result<bool, &str>)] = &[
            (None, Ok(false)),
            (Some(""), Ok(false)),
            (Some("reboot=true"), Ok(true)),
            (Some("reboot=false"), Ok(false)),
            (
                Some("reboot=yes"),
                Err("reboot=yes: give reboot=true or reboot=false"),
            ),
            (
                Some("reboot=true&force=1"),
                Err("unknown query parameter \"force=1\": the only one is reboot=true|false"),
            ),
            (
                Some("reboot"),
                Err("unknown query parameter \"reboot\": the only one is reboot=true|false"),
            ),
        ];
        for (q, want) in cases {
            assert_eq!(parse_query(*q), want.map_err(str::to_owned), "{q:?}");
        }
    }

    #[test]
    fn the_upload_slot_is_single() {
        let slot = UploadSlot::default();
        let taken = slot.try_take().unwrap();
        assert!(slot.try_take().is_none());
        drop(taken);
        assert!(slot.try_take().is_some());
    }

    fn bundle_in(dir: &Path) -> Bundle {
        let mut up = Upload::create(dir, 1 << 20).unwrap();
        up.write(b"a bundle").unwrap();
        up.finish().unwrap()
    }

    fn run_job(sys: &FakeSystem, failpoints: &str, reboot: bool) -> (Outcome, crate::jobs::Job) {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::new(dir.path().join("jobs"));
        let bundle = bundle_in(&dir.path().join("uploads"));
        let path = bundle.path.clone();
        let job = tracker
            .start_kind(JobKind::Update, Origin::Api, Some(4))
            .unwrap();
        let id = job.id.clone();
        let request = Request {
            bundle,
            signer: "SHA256:k".into(),
            key: None,
            reboot,
        };
        let outcome = run(
            job,
            sys,
            &Failpoints::parse(failpoints).unwrap(),
            request,
            Some(4),
            &Vec::new,
        );
        assert!(!path.exists(), "the bundle is removed either way");
        assert_eq!(tracker.running(), None);
        (outcome, tracker.get(&id).unwrap())
    }

    #[test]
    fn a_job_installs_then_removes_the_bundle() {
        let sys = FakeSystem::default();
        let (outcome, job) = run_job(&sys, "", false);
        assert!(outcome.succeeded());
        assert_eq!(job.state, JobState::Succeeded);
        let cmds = sys.commands();
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(
            cmds[0].starts_with("rauc install ") && cmds[0].ends_with(".raucb"),
            "{cmds:?}"
        );
        let steps: Vec<(&str, Level)> = job
            .events
            .iter()
            .map(|e| (e.step.as_str(), e.level))
            .collect();
        assert_eq!(
            steps,
            [
                (RECEIVE, Level::Info),
                (INSTALL, Level::Info),
                (INSTALL, Level::Info),
                (CLEANUP, Level::Info)
            ]
        );
        assert!(job.events[0].message.contains("8 bytes, sha256 "));
        assert!(job.events[0].message.ends_with("signed by SHA256:k"));
        assert_eq!(
            job.result.unwrap(),
            JobResult {
                generation: Some(4),
                failed_step: None,
                error: None
            }
        );
    }

    #[test]
    fn a_failed_install_says_what_rauc_said_and_does_not_reboot() {
        let sys = FakeSystem::failing_on("rauc install");
        let (outcome, job) = run_job(&sys, "", true);
        assert!(!outcome.succeeded());
        assert_eq!(job.state, JobState::Failed);
        let result = job.result.unwrap();
        assert_eq!(result.failed_step.as_deref(), Some(INSTALL));
        assert!(
            result.error.as_deref().unwrap().contains("fake failure"),
            "{result:?}"
        );
        assert_eq!(job.rollback.state, RollbackState::None);
        assert!(!sys.commands().iter().any(|c| c.contains("reboot")));
        assert_eq!(job.events.last().unwrap().step, CLEANUP);
    }

    #[test]
    fn a_signer_revoked_during_the_upload_installs_nothing() {
        let key: crate::auth::PublicKey =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V"
                .parse()
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::new(dir.path().join("jobs"));
        let sys = FakeSystem::default();
        let run_with = |trusted: Vec<crate::auth::PublicKey>| {
            let bundle = bundle_in(&dir.path().join("uploads"));
            let path = bundle.path.clone();
            let job = tracker
                .start_kind(JobKind::Update, Origin::Api, None)
                .unwrap();
            let id = job.id.clone();
            let request = Request {
                bundle,
                signer: "SHA256:k".into(),
                key: Some(key.clone()),
                reboot: false,
            };
            let trusted_now = move || trusted.clone();
            run(
                job,
                &sys,
                &Failpoints::default(),
                request,
                None,
                &trusted_now,
            );
            assert!(!path.exists(), "the bundle is removed either way");
            tracker.get(&id).unwrap()
        };
        let job = run_with(vec![]);
        assert_eq!(job.state, JobState::Failed);
        let result = job.result.unwrap();
        assert_eq!(result.failed_step.as_deref(), Some(INSTALL));
        assert!(
            result
                .error
                .as_deref()
                .unwrap()
                .contains("no longer trusted"),
            "{result:?}"
        );
        assert!(sys.commands().is_empty(), "{:?}", sys.commands());
        // Still trusted: installed.
        let job = run_with(vec![key.clone()]);
        assert_eq!(job.state, JobState::Succeeded);
        assert!(sys.commands()[0].starts_with("rauc install "));
    }

    #[test]
    fn a_reboot_is_requested_after_the_job_succeeded() {
        let sys = FakeSystem::default();
        let (outcome, job) = run_job(&sys, "", true);
        assert!(outcome.succeeded());
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.events.last().unwrap().step, REBOOT);
        assert_eq!(sys.commands().last().unwrap(), "systemctl reboot");

        let sys = FakeSystem::default();
        let (_, job) = run_job(&sys, "install=error", true);
        assert_eq!(
            job.result.unwrap().error.as_deref(),
            Some("failpoint install triggered")
        );
        assert!(!sys.commands().contains(&"systemctl reboot".to_owned()));
    }
}
