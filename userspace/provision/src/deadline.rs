//! The mark-good deadline of a provisioned device (`atomix-mark-good-deadline.service`,
//! `atomix-provision slot wait-good`).
//!
//! PID 1 pets the hardware watchdog whatever its services do, so a boot whose re-apply
//! hangs would sit on an unconfirmed slot for ever and its tries would never run out.
//! The deadline watches the booted slot until it is marked good; when it is not, and the
//! apply jobs under `/data/config/jobs/` have made no progress (no job file written) for
//! the stall time, it gives up and the unit's `FailureAction=reboot-force` reboots: the
//! bootloader counts the try. A slow apply that keeps finishing steps is never cut off,
//! and an unprovisioned device has no deadline at all (the unit's condition and
//! [`run`]'s first check).
//!
//! An apply that *ended* in failure is not a hang: the deadline stands down (the slot
//! stays unconfirmed, as before; the job says why). A device whose config keeps failing
//! on its only good slot must stay up for its operator, not reboot every few minutes.
//!
//! Time is measured on the monotonic clock from the moment a change was *seen*, never
//! from file times: the wall clock jumps when chrony first sets it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Environment variable overriding the stall time (a humantime duration, e.g. `60s`);
/// set for a test through `systemd.setenv=` on the kernel command line.
pub const ENV: &str = "ATOMIX_MARK_GOOD_STALL";

/// How long the apply may go without progress before the device reboots.
pub const DEFAULT_STALL: Duration = Duration::from_secs(15 * 60);

/// A stall time that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{ENV}: cannot parse {0:?}: expected a duration such as 15min or 90s")]
pub struct ParseError(pub String);

/// The stall time from `ENV`'s value (unset: [`DEFAULT_STALL`]).
pub fn stall_from(value: Option<&str>) -> Result<Duration, ParseError> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_STALL),
        Some(v) => humantime::parse_duration(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ParseError(v.to_owned())),
    }
}

/// What the job files look like: name, size and modification time of each, by name.
/// Any difference from one look to the next is progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress(Vec<(String, u64, Option<SystemTime>)>);

/// Looks at the job files in `jobs` (missing directory: no jobs yet).
pub fn progress(jobs: &Path) -> Progress {
    let mut files = Vec::new();
    if let Ok(dir) = std::fs::read_dir(jobs) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(meta) = entry.metadata() {
                files.push((name, meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    Progress(files)
}

/// The config jobs whose files appeared or changed since `initial` and ended in
/// failure: an apply of this boot that failed rather than hung.
pub fn failed_since(jobs: &Path, initial: &Progress, now: &Progress) -> Vec<String> {
    now.0
        .iter()
        .filter(|entry| !initial.0.contains(entry))
        .filter(|(name, _, _)| name.ends_with(".json"))
        .filter_map(|(name, _, _)| {
            let job: crate::jobs::Job = boot_state::read_record(&jobs.join(name)).ok()??;
            (job.kind == crate::jobs::JobKind::Config && job.state == crate::jobs::JobState::Failed)
                .then_some(job.id)
        })
        .collect()
}

/// Where the boot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The booted slot is marked good: the deadline is met.
    Good,
    /// Not yet, and the apply last moved `idle` ago.
    Waiting { idle: Duration },
    /// No progress for `idle`, at least the stall time.
    Stalled { idle: Duration },
}

/// Follows one boot until its slot is marked good or the apply stalls.
#[derive(Debug, Clone)]
pub struct Watch {
    stall: Duration,
    seen: Progress,
    since: Instant,
}

impl Watch {
    /// Starts watching at `now`, with the job files as they are: the stall time counts
    /// from here until the first change.
    pub fn new(stall: Duration, now: Instant, initial: Progress) -> Watch {
        Watch {
            stall,
            seen: initial,
            since: now,
        }
    }

    /// One look: whether the booted slot is marked good, and the job files now.
    pub fn observe(&mut self, now: Instant, marked_good: bool, progress: Progress) -> Verdict {
        if marked_good {
            return Verdict::Good;
        }
        if progress != self.seen {
            self.seen = progress;
            self.since = now;
        }
        let idle = now.saturating_duration_since(self.since);
        if idle >= self.stall {
            Verdict::Stalled { idle }
        } else {
            Verdict::Waiting { idle }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn p(files: &[(&str, u64)]) -> Progress {
        Progress(
            files
                .iter()
                .map(|(n, l)| ((*n).to_owned(), *l, None))
                .collect(),
        )
    }

    #[test]
    fn progress_restarts_the_stall_time_and_marking_good_ends_the_watch() {
        let t0 = Instant::now();
        let mut w = Watch::new(60 * S, t0, p(&[("old.json", 10)]));
        assert_eq!(
            w.observe(t0 + 30 * S, false, p(&[("old.json", 10)])),
            Verdict::Waiting { idle: 30 * S }
        );
        // The boot's job appears at 50 s, gets a step at 100 s: a slow apply lives on.
        let job = p(&[("old.json", 10), ("new.json", 5)]);
        assert_eq!(
            w.observe(t0 + 50 * S, false, job.clone()),
            Verdict::Waiting {
                idle: Duration::ZERO
            }
        );
        let stepped = p(&[("old.json", 10), ("new.json", 9)]);
        assert_eq!(
            w.observe(t0 + 100 * S, false, stepped.clone()),
            Verdict::Waiting {
                idle: Duration::ZERO
            }
        );
        assert_eq!(
            w.observe(t0 + 159 * S, false, stepped.clone()),
            Verdict::Waiting { idle: 59 * S }
        );
        // Then nothing for the stall time: a hang.
        assert_eq!(
            w.observe(t0 + 160 * S, false, stepped.clone()),
            Verdict::Stalled { idle: 60 * S }
        );
        // Marked good wins whatever the time.
        assert_eq!(w.observe(t0 + 500 * S, true, stepped), Verdict::Good);
    }

    #[test]
    fn nothing_at_all_stalls_from_the_start() {
        let t0 = Instant::now();
        let mut w = Watch::new(60 * S, t0, Progress::default());
        assert_eq!(
            w.observe(t0 + 61 * S, false, Progress::default()),
            Verdict::Stalled { idle: 61 * S }
        );
    }

    #[test]
    fn job_files_written_are_progress() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        assert_eq!(progress(&jobs), Progress::default(), "no directory yet");
        std::fs::create_dir(&jobs).unwrap();
        std::fs::write(jobs.join("a.json"), "{}").unwrap();
        let first = progress(&jobs);
        assert_eq!(first.0.len(), 1);
        assert_eq!(progress(&jobs), first, "unchanged");
        std::fs::write(jobs.join("a.json"), "{\"events\":[]}").unwrap();
        assert_ne!(progress(&jobs), first, "rewritten with an event");
    }

    #[test]
    fn a_config_job_of_this_boot_that_failed_is_found_and_older_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path();
        let job = |id: &str, state: &str, kind: &str| {
            format!(
                r#"{{"id":"{id}","kind":"{kind}","state":"{state}","origin":"boot","created":"t","events":[],"result":null,"rollback":{{"state":"none","generation":null}},"previous_generation":null,"staged_generation":null}}"#
            )
        };
        std::fs::write(
            jobs.join("0000000000000001.json"),
            job("0000000000000001", "failed", "config"),
        )
        .unwrap();
        let initial = progress(jobs);
        assert!(
            failed_since(jobs, &initial, &progress(jobs)).is_empty(),
            "an earlier boot's failure"
        );
        std::fs::write(
            jobs.join("0000000000000002.json"),
            job("0000000000000002", "running", "config"),
        )
        .unwrap();
        assert!(
            failed_since(jobs, &initial, &progress(jobs)).is_empty(),
            "still running"
        );
        std::fs::write(
            jobs.join("0000000000000003.json"),
            job("0000000000000003", "failed", "update"),
        )
        .unwrap();
        assert!(
            failed_since(jobs, &initial, &progress(jobs)).is_empty(),
            "an update upload is not the apply"
        );
        std::fs::write(
            jobs.join("0000000000000002.json"),
            job("0000000000000002", "failed", "config") + " ",
        )
        .unwrap();
        assert_eq!(
            failed_since(jobs, &initial, &progress(jobs)),
            ["0000000000000002"]
        );
    }

    #[test]
    fn stall_time_from_the_environment() {
        assert_eq!(stall_from(None), Ok(DEFAULT_STALL));
        assert_eq!(stall_from(Some("")), Ok(DEFAULT_STALL));
        assert_eq!(stall_from(Some("90s")), Ok(90 * S));
        assert_eq!(stall_from(Some("20min")), Ok(1200 * S));
        for bad in ["soon", "0s", "-5s"] {
            assert_eq!(stall_from(Some(bad)), Err(ParseError(bad.into())), "{bad}");
        }
    }
}
