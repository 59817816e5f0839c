//! Jobs: config applies and pushed updates ([`JobKind`]), one at a time (single-flight,
//! whatever their kind), each with an event list clients poll, persisted as
//! `/data/config/jobs/<id>.json` after every change so a job's outcome survives a
//! restart. A job found queued or running at start was cut off (crash, power loss):
//! [`Tracker::interrupted`] hands it to the caller, which rolls back and marks it
//! failed — never left "running".

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use atomix_config::generations::Origin;

/// The job types are the API's: what is persisted is what `GET /api/jobs/{id}` answers.
pub use atomix_api::{Event, Job, JobKind, JobResult, JobState, Level, Rollback, RollbackState};

/// How many finished jobs are kept in memory (older ones are read from disk).
const IN_MEMORY: usize = 32;

/// A second job while one runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("another apply job is running: {0}")]
pub struct Busy(pub String);

#[derive(Debug, Default)]
struct Inner {
    running: Option<String>,
    jobs: BTreeMap<String, Job>,
    finished_order: VecDeque<String>,
    /// The most recent update job (health's `last_update`).
    last_update: Option<String>,
}

/// The tracker; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Tracker {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn new_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source works");
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Orders jobs by creation time (RFC 3339 UTC, so text order), then id.
fn newest_last(a: &Job, b: &Job) -> std::cmp::Ordering {
    a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id))
}

fn valid_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Tracker {
    pub fn new(dir: PathBuf) -> Arc<Self> {
        let tracker = Tracker {
            dir,
            inner: Mutex::new(Inner::default()),
        };
        let last_update = tracker
            .on_disk()
            .into_iter()
            .filter(|j| j.kind == JobKind::Update)
            .max_by(newest_last)
            .map(|j| j.id);
        tracker.lock().last_update = last_update;
        Arc::new(tracker)
    }

    /// Every job recorded on disk (unreadable records are skipped and logged).
    fn on_disk(&self) -> Vec<Job> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !valid_id(id) {
                continue;
            }
            match boot_state::read_record::<Job>(&e.path()) {
                Ok(Some(job)) => out.push(job),
                Ok(None) => {}
                Err(e) => log::warn!("ignoring {e}"),
            }
        }
        out
    }

    /// The `n` most recent jobs, newest first: this boot's from memory, older ones from
    /// disk.
    pub fn recent(&self, n: usize) -> Vec<Job> {
        let mut all: BTreeMap<String, Job> = self
            .on_disk()
            .into_iter()
            .map(|j| (j.id.clone(), j))
            .collect();
        for (id, job) in &self.lock().jobs {
            all.insert(id.clone(), job.clone());
        }
        let mut jobs: Vec<Job> = all.into_values().collect();
        jobs.sort_by(|a, b| newest_last(b, a));
        jobs.truncate(n);
        jobs
    }

    /// The most recent update job's id, if any was ever recorded.
    pub fn last_update(&self) -> Option<String> {
        self.lock().last_update.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, job: &Job) {
        let path = self.dir.join(format!("{}.json", job.id));
        if let Err(e) = boot_state::write_record(&path, job) {
            // The job still runs; its outcome is only lost across a restart.
            log::error!("job {}: {e}", job.id);
        }
    }

    /// Starts a config job unless a job runs. The job is `running` (and on disk) when
    /// this returns.
    pub fn start(
        self: &Arc<Self>,
        origin: Origin,
        previous_generation: Option<u64>,
    ) -> Result<JobHandle, Busy> {
        self.start_kind(JobKind::Config, origin, previous_generation)
    }

    /// Starts a job of any kind unless a job (of any kind) runs.
    pub fn start_kind(
        self: &Arc<Self>,
        kind: JobKind,
        origin: Origin,
        previous_generation: Option<u64>,
    ) -> Result<JobHandle, Busy> {
        let job = {
            let mut inner = self.lock();
            if let Some(id) = &inner.running {
                return Err(Busy(id.clone()));
            }
            let job = Job {
                id: new_id(),
                kind,
                state: JobState::Running,
                origin,
                created: crate::now_rfc3339(),
                events: Vec::new(),
                result: None,
                rollback: Rollback {
                    state: RollbackState::None,
                    generation: None,
                },
                previous_generation,
                staged_generation: None,
            };
            inner.running = Some(job.id.clone());
            if kind == JobKind::Update {
                inner.last_update = Some(job.id.clone());
            }
            inner.jobs.insert(job.id.clone(), job.clone());
            job
        };
        self.persist(&job);
        Ok(JobHandle {
            tracker: Arc::clone(self),
            id: job.id,
            finished: false,
        })
    }

    /// The running job's id, if any.
    pub fn running(&self) -> Option<String> {
        self.lock().running.clone()
    }

    /// A job by id: from memory, else from disk (jobs of earlier boots).
    pub fn get(&self, id: &str) -> Option<Job> {
        if !valid_id(id) {
            return None;
        }
        if let Some(job) = self.lock().jobs.get(id) {
            return Some(job.clone());
        }
        boot_state::read_record(&self.dir.join(format!("{id}.json")))
            .ok()
            .flatten()
    }

    /// Jobs on disk still queued or running: cut off by a crash. Call once, at start,
    /// before any job starts.
    pub fn interrupted(&self) -> Vec<Job> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match boot_state::read_record::<Job>(&path) {
                Ok(Some(job)) if matches!(job.state, JobState::Queued | JobState::Running) => {
                    out.push(job)
                }
                Ok(_) => {}
                Err(e) => log::warn!("ignoring {e}"),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        out
    }

    /// Records the end of a job found interrupted; `generation` is the one current now.
    pub fn close_interrupted(
        &self,
        mut job: Job,
        generation: Option<u64>,
        rollback: Rollback,
        message: &str,
    ) {
        job.events.push(Event {
            time: crate::now_rfc3339(),
            step: "restart".into(),
            level: Level::Error,
            message: message.into(),
        });
        job.state = JobState::Failed;
        job.result = Some(JobResult {
            generation,
            failed_step: Some("restart".into()),
            error: Some(message.into()),
        });
        job.rollback = rollback;
        self.persist(&job);
        self.lock().jobs.insert(job.id.clone(), job);
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        self.update_and(id, f, false);
    }

    /// Updates a job and, if `release`, frees the single-flight slot under the same
    /// lock: a client that sees the job finished can start the next one at once. The
    /// record is written under that lock too, so what a client reads is on disk (a
    /// power cut after it has seen "succeeded" cannot bring back "running"), and two
    /// updates never reach the disk in the other order.
    fn update_and(&self, id: &str, f: impl FnOnce(&mut Job), release: bool) {
        let mut inner = self.lock();
        if let Some(job) = inner.jobs.get_mut(id) {
            f(job);
            let snapshot = job.clone();
            self.persist(&snapshot);
        }
        if release {
            Self::release_locked(&mut inner, id);
        }
    }
}

/// The running job, held by whoever does the work. Dropping it unfinished (a panic)
/// marks the job failed and frees the slot.
#[derive(Debug)]
pub struct JobHandle {
    tracker: Arc<Tracker>,
    pub id: String,
    finished: bool,
}

impl JobHandle {
    pub fn event(&self, step: &str, level: Level, message: impl Into<String>) {
        let event = Event {
            time: crate::now_rfc3339(),
            step: step.into(),
            level,
            message: message.into(),
        };
        let line = format!("job {} {}: {}", self.id, event.step, event.message);
        match level {
            Level::Error => log::error!("{line}"),
            Level::Warning => log::warn!("{line}"),
            Level::Info => log::info!(target: kmsg_log::NOTICE, "{line}"),
        }
        self.tracker.update(&self.id, |j| j.events.push(event));
    }

    pub fn set_staged(&self, n: u64) {
        self.tracker
            .update(&self.id, |j| j.staged_generation = Some(n));
    }

    pub fn snapshot(&self) -> Option<Job> {
        self.tracker.get(&self.id)
    }

    /// Ends the job: succeeded when `result.error` is none.
    pub fn finish(mut self, result: JobResult, rollback: Rollback) {
        self.record(result, rollback, true);
    }

    /// Ends the job like [`JobHandle::finish`], so clients see its outcome, but keeps
    /// other jobs out until the returned [`Hold`] is dropped (a reboot requested once an
    /// update has succeeded must not cut a config job short).
    pub fn finish_and_hold(mut self, result: JobResult, rollback: Rollback) -> Hold {
        self.record(result, rollback, false);
        Hold {
            tracker: Arc::clone(&self.tracker),
            id: self.id.clone(),
        }
    }

    fn record(&mut self, result: JobResult, rollback: Rollback, release: bool) {
        self.finished = true;
        self.tracker.update_and(
            &self.id,
            |j| {
                j.state = if result.error.is_none() {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                };
                j.result = Some(result);
                j.rollback = rollback;
            },
            release,
        );
    }
}

/// A finished job still holding the single-flight slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Hold {
    tracker: Arc<Tracker>,
    id: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.tracker.release(&self.id);
    }
}

impl Tracker {
    /// Frees the slot a finished job held.
    fn release(&self, id: &str) {
        Self::release_locked(&mut self.lock(), id);
    }

    fn release_locked(inner: &mut Inner, id: &str) {
        if inner.running.as_deref() == Some(id) {
            inner.running = None;
        }
        inner.finished_order.push_back(id.to_owned());
        while inner.finished_order.len() > IN_MEMORY {
            if let Some(old) = inner.finished_order.pop_front() {
                inner.jobs.remove(&old);
            }
        }
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.record(
                JobResult {
                    generation: None,
                    failed_step: None,
                    error: Some("the job stopped unexpectedly".into()),
                },
                Rollback {
                    state: RollbackState::Failed,
                    generation: None,
                },
                true,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> (JobResult, Rollback) {
        (
            JobResult {
                generation: Some(1),
                ..JobResult::default()
            },
            Rollback {
                state: RollbackState::None,
                generation: None,
            },
        )
    }

    #[test]
    fn single_flight_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::new(dir.path().to_path_buf());
        let job = t.start(Origin::Api, None).unwrap();
        assert_eq!(
            t.start(Origin::Api, None).unwrap_err(),
            Busy(job.id.clone())
        );
        job.event("validate", Level::Info, "ok");
        let id = job.id.clone();
        let on_disk: Job = boot_state::read_record(&dir.path().join(format!("{id}.json")))
            .unwrap()
            .unwrap();
        assert_eq!(on_disk.state, JobState::Running);
        assert_eq!(on_disk.events[0].step, "validate");
        let (r, rb) = ok();
        job.finish(r, rb);
        assert_eq!(t.running(), None);
        assert_eq!(t.get(&id).unwrap().state, JobState::Succeeded);
        let second = t.start(Origin::Usb, Some(1)).unwrap();
        assert_ne!(second.id, id);
        drop(second);
        assert_eq!(t.running(), None, "a dropped handle frees the slot");
    }

    #[test]
    fn update_jobs_share_the_slot_and_a_held_slot_outlives_the_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::new(dir.path().to_path_buf());
        let update = t.start_kind(JobKind::Update, Origin::Api, Some(2)).unwrap();
        let id = update.id.clone();
        assert_eq!(t.start(Origin::Api, Some(2)).unwrap_err(), Busy(id.clone()));
        let (r, rb) = ok();
        let hold = update.finish_and_hold(r, rb);
        let job = t.get(&id).unwrap();
        assert_eq!(
            (job.kind, job.state),
            (JobKind::Update, JobState::Succeeded)
        );
        assert_eq!(t.running(), Some(id.clone()), "still held");
        assert_eq!(t.start(Origin::Api, Some(2)).unwrap_err(), Busy(id.clone()));
        drop(hold);
        assert_eq!(t.running(), None);
        let config = t.start(Origin::Api, Some(2)).unwrap();
        assert_eq!(t.get(&config.id).unwrap().kind, JobKind::Config);
    }

    #[test]
    fn recent_jobs_are_newest_first_across_restarts_and_the_last_update_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::new(dir.path().to_path_buf());
        assert!(t.recent(10).is_empty());
        assert_eq!(t.last_update(), None);
        let mut ids = Vec::new();
        for kind in [JobKind::Config, JobKind::Update, JobKind::Config] {
            let job = t.start_kind(kind, Origin::Api, None).unwrap();
            ids.push(job.id.clone());
            let (r, rb) = ok();
            job.finish(r, rb);
            // Creation times have a resolution of a second.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        let listed = |t: &Tracker, n| t.recent(n).into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(listed(&t, 10), newest_first);
        assert_eq!(listed(&t, 2), newest_first[..2]);
        assert_eq!(t.last_update(), Some(ids[1].clone()));

        let t2 = Tracker::new(dir.path().to_path_buf());
        assert_eq!(listed(&t2, 10), newest_first, "read back from disk");
        assert_eq!(t2.last_update(), Some(ids[1].clone()));
    }

    #[test]
    fn a_restarted_tracker_finds_interrupted_jobs_and_reads_old_ones_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::new(dir.path().to_path_buf());
        let done = t.start(Origin::Api, None).unwrap();
        let done_id = done.id.clone();
        let (r, rb) = ok();
        done.finish(r, rb);
        let cut = t.start(Origin::Api, Some(3)).unwrap();
        let cut_id = cut.id.clone();
        std::mem::forget(cut); // the process dies: no Drop runs

        let t2 = Tracker::new(dir.path().to_path_buf());
        assert_eq!(t2.get(&done_id).unwrap().state, JobState::Succeeded);
        let found = t2.interrupted();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, cut_id);
        let rollback = Rollback {
            state: RollbackState::Completed,
            generation: Some(3),
        };
        t2.close_interrupted(found[0].clone(), Some(3), rollback, "interrupted");
        let job = t2.get(&cut_id).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.rollback, rollback);
        assert!(t2.interrupted().is_empty());
        assert_eq!(job.result.unwrap().generation, Some(3));
        assert!(t2.get("../../etc/passwd").is_none());
        assert!(t2.get("0123456789abcdef").is_none());
    }
}
