//! The apply job runner ([`Applier`]): a new config imported as a generation step by
//! step, rolled back to the previous one when a step fails; the current generation
//! re-applied at boot; jobs a crash cut off finished on the next start.

use std::sync::Arc;

use anyhow::{bail, Result};
use atomix_config::generations::{Origin, SourceRecord, Store};
use atomix_config::render::RenderedTree;

use super::generation::desired_of;
use super::{load_generation, plan_sync, Admin, Desired, Executor, Owned, Step};
use crate::input::Accepted;
use crate::jobs::{Job, JobHandle, JobKind, JobResult, Level, Rollback, RollbackState, Tracker};
use crate::paths::Paths;
use crate::system::{Action, System};
use failpoints::Failpoints;

/// What a finished job reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: JobResult,
    pub rollback: Rollback,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.result.error.is_none()
    }
}

/// Runs apply jobs.
#[derive(Debug, Clone)]
pub struct Applier {
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub failpoints: Failpoints,
    pub admin: Admin,
}

/// A step failure: which step, and what went wrong.
struct Failed(Step, anyhow::Error);

impl Failed {
    /// The step's name and the error as a job reports it: the whole chain, `outer: inner`.
    fn report(&self) -> (&'static str, String) {
        (self.0.name(), format!("{:#}", self.1))
    }
}

impl Applier {
    pub(crate) fn store(&self) -> Store {
        Store::new(self.paths.config_store())
    }

    pub(crate) fn executor(&self) -> Executor<'_> {
        Executor {
            paths: &self.paths,
            system: self.system.as_ref(),
        }
    }

    /// Runs one step: holds it for a `sleep` failpoint, does the work, checks the
    /// failpoint, records the event.
    fn step<T>(
        &self,
        job: &JobHandle,
        step: Step,
        work: impl FnOnce() -> Result<(T, String)>,
    ) -> Result<T, Failed> {
        self.failpoints.hold(step.name());
        let (value, message) = work().map_err(|e| Failed(step, e))?;
        self.failpoints
            .check(step.name())
            .map_err(|e| Failed(step, e.into()))?;
        job.event(step.name(), Level::Info, message);
        Ok(value)
    }

    fn sync(&self, job: &JobHandle, desired: &Desired, owned: &mut Owned) -> Result<(), Failed> {
        for plan in plan_sync(Some(desired), &owned.files.clone(), &self.admin) {
            self.step(job, plan.step, || {
                self.executor().run(&plan, owned).map(|m| ((), m))
            })?;
        }
        Ok(())
    }

    /// Marks the booted slot good. Always, whatever `update.rauc` says: that setting only
    /// enables the update timer, while the slot's state is what keeps the bootloader from
    /// falling back to the other slot.
    fn mark_good(&self, job: &JobHandle) -> Result<(), Failed> {
        self.step(job, Step::MarkGood, || {
            self.system.run(&Action::RaucMarkGood)?;
            Ok(((), "slot marked good".into()))
        })
    }

    /// Applies an accepted config as a new generation; rolls back on failure.
    pub fn import(
        &self,
        job: JobHandle,
        accepted: Accepted,
        origin: Origin,
        signer: Option<String>,
    ) -> Outcome {
        let store = self.store();
        let previous = job.snapshot().and_then(|j| j.previous_generation);
        let mut owned = Owned::load(&self.paths);
        let mut staged = None;
        let result = (|| {
            self.step(&job, Step::Validate, || {
                // The names validation accepted (bundle::read_bundle checks them with
                // the same function): files that cannot be written are refused here,
                // before anything is.
                atomix_config::bundle::check_names(
                    accepted.apps.keys().map(String::as_str),
                    std::iter::empty(),
                )?;
                Ok(((), format!("valid, {} warnings", accepted.warnings.len())))
            })?;
            // The hash the rendered headers name is the one source.json records.
            let (desired, sha256) = self.step(&job, Step::Render, || {
                let sha256 = atomix_config::config_sha256(&accepted.text);
                let d = desired_of(&accepted, &sha256);
                let m = format!("{} files", d.tree.files.len());
                Ok(((d, sha256), m))
            })?;
            let n = self.step(&job, Step::Persist, || {
                let source = SourceRecord {
                    origin,
                    sha256,
                    signer: signer.clone(),
                    time: crate::now_rfc3339(),
                };
                let apps = RenderedTree {
                    files: desired.apps.clone(),
                };
                // The job's record names the generation before any of it is written:
                // a power cut from here on leaves a job that recovery rolls back,
                // generation and all. (Recorded after the write, a power cut between
                // the two left a generation no job owned, never applied, and the seed's
                // next import took the number after it; the crash campaign found it.)
                let n = store.next()?;
                job.set_staged(n);
                if let Err(e) = store.stage_as(n, &accepted.text, &source, &desired.tree, &apps) {
                    let _ = store.discard(n);
                    return Err(e.into());
                }
                staged = Some(n);
                Ok((n, format!("generation {n} written")))
            })?;
            self.sync(&job, &desired, &mut owned)?;
            self.step(&job, Step::Switch, || {
                store.switch(n)?;
                store.prune()?;
                Ok(((), format!("current -> generation {n}")))
            })?;
            self.mark_good(&job)?;
            Ok::<_, Failed>(n)
        })();
        let outcome = match result {
            Ok(n) => Outcome {
                result: JobResult {
                    generation: Some(n),
                    ..JobResult::default()
                },
                rollback: Rollback {
                    state: RollbackState::None,
                    generation: None,
                },
            },
            Err(failed) => {
                let (step, error) = failed.report();
                job.event(step, Level::Error, error.clone());
                let rollback = match staged {
                    None => Rollback {
                        state: RollbackState::None,
                        generation: None,
                    },
                    Some(n) => self.roll_back(&job, n, previous, &mut owned),
                };
                Outcome {
                    result: JobResult {
                        generation: store.current().ok().flatten(),
                        failed_step: Some(step.into()),
                        error: Some(error),
                    },
                    rollback,
                }
            }
        };
        job.finish(outcome.result.clone(), outcome.rollback);
        outcome
    }

    /// Back to `previous` (None: the unprovisioned defaults) after generation `staged`
    /// failed to apply.
    fn roll_back(
        &self,
        job: &JobHandle,
        staged: u64,
        previous: Option<u64>,
        owned: &mut Owned,
    ) -> Rollback {
        let target = previous.map_or("the unprovisioned defaults".to_owned(), |p| {
            format!("generation {p}")
        });
        job.event("rollback", Level::Warning, format!("restoring {target}"));
        let result = (|| {
            self.failpoints.hold("rollback");
            self.failpoints.check("rollback")?;
            let desired = self.restore_store(staged, previous)?;
            let plans = plan_sync(desired.as_ref(), &owned.files.clone(), &self.admin);
            for plan in plans {
                self.executor().run(&plan, owned)?;
            }
            Ok::<_, anyhow::Error>(())
        })();
        match result {
            Ok(()) => {
                job.event("rollback", Level::Info, format!("restored {target}"));
                Rollback {
                    state: RollbackState::Completed,
                    generation: previous,
                }
            }
            Err(e) => {
                job.event("rollback", Level::Error, format!("rollback failed: {e:#}"));
                Rollback {
                    state: RollbackState::Failed,
                    generation: previous,
                }
            }
        }
    }

    /// Points `current` back at `previous`, discards `staged`, and reads what the live
    /// system should hold.
    fn restore_store(&self, staged: u64, previous: Option<u64>) -> Result<Option<Desired>> {
        let store = self.store();
        match previous {
            Some(p) => store.switch(p)?,
            None => store.clear_current()?,
        }
        store.discard(staged)?;
        previous
            .map(|p| load_generation(&store, p).map(|l| l.desired))
            .transpose()
    }

    /// Re-applies the current generation at boot (the live paths start empty). No
    /// rollback: a failure leaves the slot unmarked, so RAUC can fall back.
    pub fn reapply(&self, job: JobHandle, n: u64) -> Outcome {
        let mut owned = Owned::load(&self.paths);
        let result = (|| {
            let loaded = self.step(&job, Step::Validate, || {
                let l = load_generation(&self.store(), n)?;
                Ok((l, format!("generation {n} is valid")))
            })?;
            self.sync(&job, &loaded.desired, &mut owned)?;
            self.mark_good(&job)?;
            Ok::<_, Failed>(())
        })();
        let mut outcome = Outcome {
            result: JobResult {
                generation: Some(n),
                ..JobResult::default()
            },
            rollback: Rollback {
                state: RollbackState::None,
                generation: None,
            },
        };
        if let Err(failed) = result {
            let (step, error) = failed.report();
            job.event(step, Level::Error, error.clone());
            outcome.result.failed_step = Some(step.into());
            outcome.result.error = Some(error);
        }
        job.finish(outcome.result.clone(), outcome.rollback);
        outcome
    }

    /// Finishes jobs a crash cut off: the store goes back to the job's previous
    /// generation and, if that is "unprovisioned", the live files go too (a provisioned
    /// previous generation is re-applied by the boot flow right after). An update job
    /// changed no config: it is only marked failed (RAUC's own state says whether the
    /// install got through; the bundle is removed with the other leftover uploads). A
    /// factory-reset job cut off before it recorded its request erased nothing (one
    /// that recorded it was completed, job records and all, before this runs).
    pub fn recover(&self, tracker: &Tracker) {
        for job in tracker.interrupted() {
            if job.kind != JobKind::Config {
                let message = match job.kind {
                    JobKind::Update => "cut off by a restart; whether RAUC finished the install is unknown: see `rauc status`",
                    _ => "cut off by a restart before the reset was recorded; nothing was erased: request it again",
                };
                log::warn!("job {}: {message}", job.id);
                let current = self.store().current().ok().flatten();
                let rollback = Rollback {
                    state: RollbackState::None,
                    generation: None,
                };
                tracker.close_interrupted(job, current, rollback, message);
                continue;
            }
            let rollback = self.recover_one(&job);
            let target = job
                .previous_generation
                .map_or("the unprovisioned defaults".into(), |p| {
                    format!("generation {p}")
                });
            let message = match rollback.state {
                RollbackState::Failed => {
                    format!("cut off by a restart; restoring {target} failed")
                }
                _ => format!("cut off by a restart; rolled back to {target}"),
            };
            log::warn!("job {}: {message}", job.id);
            tracker.close_interrupted(job, rollback.generation, rollback, &message);
        }
    }

    fn recover_one(&self, job: &Job) -> Rollback {
        let previous = job.previous_generation;
        let result = (|| {
            let store = self.store();
            if let Some(n) = job.staged_generation {
                self.restore_store(n, previous)?;
            } else if store.current()? != previous {
                // A job with nothing staged changed nothing.
                bail!("the store changed outside of this job");
            }
            if previous.is_none() {
                let mut owned = Owned::load(&self.paths);
                for plan in plan_sync(None, &owned.files.clone(), &self.admin) {
                    self.executor().run(&plan, &mut owned)?;
                }
            }
            Ok(())
        })();
        Rollback {
            state: match result {
                Ok(()) => RollbackState::Completed,
                Err(e) => {
                    log::error!("job {}: recovery: {e:#}", job.id);
                    RollbackState::Failed
                }
            },
            generation: previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::apply::fixture::{accepted, desired, Device, EXAMPLE};
    use crate::input::check_text;
    use crate::jobs::JobState;
    use crate::system::FakeSystem;

    #[test]
    fn a_first_apply_writes_switches_and_records() {
        let dev = Device::new();
        let (outcome, job) = dev.import(EXAMPLE);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result.unwrap().generation, Some(1));
        let steps: Vec<&str> = job.events.iter().map(|e| e.step.as_str()).collect();
        let all: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(steps, all);
        let store = dev.store();
        assert_eq!(store.current().unwrap(), Some(1));
        let source: SourceRecord =
            serde_json::from_slice(&std::fs::read(store.path(1).join("source.json")).unwrap())
                .unwrap();
        assert_eq!(
            (source.origin, source.signer.as_deref()),
            (Origin::Api, Some("SHA256:x"))
        );
        // The hash source.json records is the one the rendered headers name.
        assert_eq!(source.sha256, atomix_config::config_sha256(EXAMPLE));
        assert!(dev
            .live("etc/containers/systemd/web.container")
            .contains(&format!("config.toml sha256 {}", source.sha256)));
        assert_eq!(dev.live("etc/hostname"), "edge-042\n");
        assert!(dev
            .live("etc/containers/systemd/web.container")
            .contains("Image=ghcr.io/acme/web:1.4.2"));
        assert!(dev
            .sys
            .commands()
            .contains(&"rauc status mark-good".to_owned()));
        // The 13 written files and the etc/localtime link.
        assert_eq!(Owned::load(&dev.applier.paths).files.len(), 14);
    }

    #[test]
    fn a_failed_first_apply_returns_to_unprovisioned_defaults() {
        let dev = Device::with_system(FakeSystem::failing_on("nft -f"));
        let image_default = dev.root().join("etc/dnsmasq.d/atomix-lan.conf");
        std::fs::create_dir_all(image_default.parent().unwrap()).unwrap();
        std::fs::write(&image_default, "# image default\n").unwrap();
        // The image's host name, time zone and localtime link.
        let etc = dev.root().join("etc");
        std::fs::write(etc.join("hostname"), "atomix\n").unwrap();
        std::fs::write(etc.join("timezone"), "Etc/UTC\n").unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", etc.join("localtime")).unwrap();
        let (outcome, job) = dev.import(EXAMPLE);
        assert_eq!(job.state, JobState::Failed);
        let result = job.result.unwrap();
        assert_eq!(result.failed_step.as_deref(), Some("firewall"));
        assert!(result.error.unwrap().contains("nft -f"));
        assert_eq!(
            outcome.rollback,
            Rollback {
                state: RollbackState::Completed,
                generation: None
            }
        );
        let store = dev.store();
        assert_eq!(store.current().unwrap(), None);
        assert!(
            store.list().unwrap().is_empty(),
            "the failed generation is discarded"
        );
        assert!(!dev
            .root()
            .join("etc/containers/systemd/web.container")
            .exists());
        assert_eq!(Owned::load(&dev.applier.paths).files, BTreeSet::new());
        assert_eq!(
            std::fs::read_to_string(&image_default).unwrap(),
            "# image default\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname")).unwrap(),
            "atomix\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("timezone")).unwrap(),
            "Etc/UTC\n"
        );
        assert_eq!(
            std::fs::read_link(etc.join("localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        let cmds = dev.sys.commands();
        assert!(
            cmds.contains(&"systemctl stop web.service".to_owned()),
            "{cmds:?}"
        );
        assert_eq!(
            cmds.last().unwrap(),
            "nft add table inet atomix ; delete table inet atomix"
        );
    }

    #[test]
    fn every_step_after_persist_rolls_back_to_the_previous_generation() {
        let second = EXAMPLE.replace("edge-042", "edge-043");
        for step in &Step::ALL[2..] {
            let dev = Device::provisioned();
            let failing = dev.applier(dev.sys.clone(), &format!("{}=error", step.name()));
            let (outcome, job) = dev.import_by(&failing, &second);
            assert_eq!(job.state, JobState::Failed, "{step}");
            assert_eq!(
                outcome.rollback,
                Rollback {
                    state: RollbackState::Completed,
                    generation: Some(1)
                },
                "{step}"
            );
            let store = dev.store();
            assert_eq!(store.current().unwrap(), Some(1), "{step}");
            assert_eq!(store.list().unwrap(), [1], "{step}");
            assert_eq!(dev.live("etc/hostname"), "edge-042\n", "{step}");
        }
    }

    #[test]
    fn turning_the_update_timer_off_is_undone_by_a_rollback() {
        let dev = Device::provisioned();
        let timer = dev.root().join("etc/systemd/system/atomix-update.timer");
        let timer_text = std::fs::read_to_string(&timer).unwrap();
        assert!(timer_text.contains("OnUnitActiveSec=1d"), "{timer_text}");

        dev.sys.actions.lock().unwrap().clear();
        let off = EXAMPLE.replace("rauc = true", "rauc = false");
        let failing = dev.applier(dev.sys.clone(), "switch=error");
        let (_, job) = dev.import_by(&failing, &off);
        assert_eq!(job.rollback.state, RollbackState::Completed);
        assert_eq!(std::fs::read_to_string(&timer).unwrap(), timer_text);
        let cmds = dev.sys.commands();
        let disabled = cmds
            .iter()
            .position(|c| c == "systemctl disable --now atomix-update.timer")
            .expect("the timer was stopped");
        let restarted = cmds
            .iter()
            .rposition(|c| c == "systemctl restart atomix-update.timer")
            .expect("and started again by the rollback");
        assert!(disabled < restarted, "{cmds:?}");

        let (outcome, _) = dev.import(&off);
        assert!(outcome.succeeded());
        assert!(!timer.exists());
        assert!(!dev
            .root()
            .join("etc/systemd/system/atomix-update.service")
            .exists());
    }

    #[test]
    fn failures_before_persist_change_nothing_and_a_failed_rollback_says_so() {
        let dev = Device::new();
        let a = dev.applier(dev.sys.clone(), "render=error");
        let (outcome, _) = dev.import_by(&a, EXAMPLE);
        assert_eq!(outcome.rollback.state, RollbackState::None);
        assert!(dev.sys.commands().is_empty());
        assert!(!dev.root().join("etc").exists());

        let a = dev.applier(dev.sys.clone(), "lan=error,rollback=error");
        let (outcome, job) = dev.import_by(&a, EXAMPLE);
        assert_eq!(outcome.rollback.state, RollbackState::Failed);
        assert!(job
            .events
            .iter()
            .any(|e| e.step == "rollback" && e.level == Level::Error));
    }

    #[test]
    fn reapply_marks_good_only_on_full_success() {
        let dev = Device::provisioned();
        let sys = &dev.sys;
        sys.actions.lock().unwrap().clear();
        let failing = dev.applier(sys.clone(), "units=error");
        let outcome = dev.reapply_by(&failing);
        assert!(!outcome.succeeded());
        assert!(!sys.commands().contains(&"rauc status mark-good".to_owned()));
        let outcome = dev.reapply_by(&dev.applier);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(sys.commands().last().unwrap(), "rauc status mark-good");
    }

    /// What a re-apply over a live system that already holds the generation runs: the
    /// units and the update timer (the running systemd has to load them), and mark-good;
    /// no service that read its files is restarted or reloaded.
    #[test]
    fn a_reapply_over_identical_files_restarts_nothing_that_read_them() {
        let dev = Device::provisioned();
        dev.sys.actions.lock().unwrap().clear();
        let job = dev.tracker.start(Origin::Boot, Some(1)).unwrap();
        let id = job.id.clone();
        assert!(dev.applier.reapply(job, 1).succeeded());
        assert_eq!(
            dev.sys.commands(),
            [
                "systemctl daemon-reload",
                "systemctl restart web.service",
                "loginctl enable-linger admin",
                "systemctl start user@1001.service",
                "systemctl --user -M admin@ daemon-reload",
                "systemctl --user -M admin@ restart metrics.service",
                // Checks instead of restarts: that they are running.
                "systemctl start dnsmasq.service",
                "systemctl start chrony.service",
                "systemctl daemon-reload",
                "systemctl enable atomix-update.timer",
                "systemctl restart atomix-update.timer",
                "rauc status mark-good",
            ]
        );
        let events = dev.tracker.get(&id).unwrap().events;
        let lan = events.iter().find(|e| e.step == "lan").unwrap();
        assert_eq!(
            lan.message,
            "0 files written, 3 unchanged, 0 removed, 0 actions, 1 checked"
        );
    }

    /// A service that did not come up with files that were already in place still fails
    /// the boot's re-apply (so an update that breaks it is not marked good).
    #[test]
    fn a_service_that_failed_with_unchanged_files_fails_the_reapply() {
        let dev = Device::provisioned();
        let failing = Arc::new(FakeSystem::failing_on("start dnsmasq.service"));
        let outcome = dev.reapply_by(&dev.applier(failing.clone(), ""));
        assert_eq!(outcome.result.failed_step.as_deref(), Some("lan"));
        assert!(!failing
            .commands()
            .contains(&"rauc status mark-good".to_owned()));
    }

    /// Files written whose actions failed (or were cut off) are not "in place": the next
    /// run acts again although the files are unchanged, until the actions succeed.
    #[test]
    fn a_step_whose_actions_failed_acts_again_with_its_files_in_place() {
        let dev = Device::provisioned();
        let (a, sys) = (&dev.applier, &dev.sys);
        std::fs::write(dev.root().join("etc/hostname"), "old\n").unwrap();
        let failing = Arc::new(FakeSystem::failing_on("hostnamectl"));
        let outcome = dev.reapply_by(&dev.applier(failing, ""));
        assert_eq!(outcome.result.failed_step.as_deref(), Some("hostname"));
        assert_eq!(dev.live("etc/hostname"), "edge-042\n");
        assert!(Owned::load(&a.paths).unsettled.contains("hostname"));
        sys.actions.lock().unwrap().clear();
        assert!(dev.reapply_by(a).succeeded());
        assert!(sys
            .commands()
            .contains(&"hostnamectl hostname edge-042".to_owned()));
        assert!(Owned::load(&a.paths).unsettled.is_empty());
        // Settled: the next run leaves it alone.
        sys.actions.lock().unwrap().clear();
        assert!(dev.reapply_by(a).succeeded());
        assert!(!sys.commands().iter().any(|c| c.starts_with("hostnamectl")));
    }

    #[test]
    fn a_reapply_runs_the_actions_of_the_steps_whose_files_changed() {
        let dev = Device::provisioned();
        dev.sys.actions.lock().unwrap().clear();
        std::fs::write(dev.root().join("etc/hostname"), "someone-else\n").unwrap();
        std::fs::remove_file(dev.root().join("etc/localtime")).unwrap();
        assert!(dev.reapply_by(&dev.applier).succeeded());
        let commands = dev.sys.commands();
        assert!(commands.contains(&"hostnamectl hostname edge-042".to_owned()));
        assert!(commands.contains(&"systemctl restart chrony.service".to_owned()));
        for untouched in [
            "networkctl reload",
            "systemctl restart dnsmasq.service",
            "nft -f",
        ] {
            assert!(
                !commands.iter().any(|c| c.starts_with(untouched)),
                "{untouched} in {commands:?}"
            );
        }
        assert_eq!(dev.live("etc/hostname"), "edge-042\n");
    }

    #[test]
    fn recovery_only_closes_an_update_job_and_touches_no_config() {
        let dev = Device::provisioned();
        let (a, sys) = (&dev.applier, &dev.sys);
        let job = dev
            .tracker
            .start_kind(JobKind::Update, Origin::Api, Some(1))
            .unwrap();
        let id = job.id.clone();
        std::mem::forget(job);
        sys.actions.lock().unwrap().clear();

        let tracker = Tracker::new(a.paths.jobs());
        a.recover(&tracker);
        let job = tracker.get(&id).unwrap();
        assert_eq!((job.kind, job.state), (JobKind::Update, JobState::Failed));
        assert_eq!(job.rollback.state, RollbackState::None);
        let result = job.result.unwrap();
        assert_eq!(result.generation, Some(1));
        assert!(result.error.unwrap().contains("rauc status"));
        assert!(sys.commands().is_empty(), "{:?}", sys.commands());
        assert_eq!(dev.store().current().unwrap(), Some(1));
    }

    #[test]
    fn recovery_rolls_back_a_job_cut_off_after_the_switch() {
        let dev = Device::provisioned();
        let a = &dev.applier;
        // A job staged generation 2 and switched, then the power went.
        let store = dev.store();
        let (id, n) = cut_off_after_staging(&dev, Origin::Api, Some(1));
        store.switch(n).unwrap();

        let tracker = Tracker::new(a.paths.jobs());
        a.recover(&tracker);
        let job = tracker.get(&id).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.rollback,
            Rollback {
                state: RollbackState::Completed,
                generation: Some(1)
            }
        );
        assert_eq!(store.current().unwrap(), Some(1));
        assert_eq!(store.list().unwrap(), [1]);
    }

    /// The crash campaign's flush point where a first import's generation was on disk
    /// and its job's record did not name it yet: the record names it before it is
    /// written now. A staging that fails shows the order: the job names generation 1,
    /// and nothing of it is left.
    #[test]
    fn a_job_names_its_generation_before_writing_it() {
        let dev = Device::new();
        let store = dev.store();
        // A file where staging clears its partial directories: staging fails there,
        // after the number is chosen.
        std::fs::create_dir_all(store.path(1).parent().unwrap()).unwrap();
        std::fs::write(store.path(1).with_file_name(".tmp-1"), "not a directory").unwrap();
        let (outcome, job) = dev.import(EXAMPLE);
        assert!(!outcome.succeeded(), "{outcome:?}");
        assert_eq!(job.result.unwrap().failed_step.as_deref(), Some("persist"));
        assert_eq!(
            job.staged_generation,
            Some(1),
            "named before it was written"
        );
        assert_eq!(store.list().unwrap(), Vec::<u64>::new());
        assert_eq!(store.current().unwrap(), None);
    }

    /// The same point with the record written first: a first import cut off after its
    /// generation was staged and before the switch. Recovery removes the generation, and
    /// the seed's next import is generation 1 again, as in a boot that was not cut off.
    #[test]
    fn recovery_removes_a_first_generation_staged_but_never_switched() {
        let dev = Device::new();
        let a = &dev.applier;
        let store = dev.store();
        let (id, _) = cut_off_after_staging(&dev, Origin::Boot, None);

        let tracker = Tracker::new(a.paths.jobs());
        a.recover(&tracker);
        let job = tracker.get(&id).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.rollback.state, RollbackState::Completed);
        assert_eq!(store.list().unwrap(), Vec::<u64>::new());
        assert_eq!(store.current().unwrap(), None);
        let job = tracker.start(Origin::Boot, None).unwrap();
        let outcome = a.import(job, accepted(EXAMPLE), Origin::Boot, None);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.result.generation, Some(1));
        assert_eq!(store.list().unwrap(), [1]);
    }

    /// A config job on `dev` that recorded and staged its generation of [`EXAMPLE`] the
    /// way an import does, then was cut off (its handle forgotten, so it stays running on
    /// disk): its id and the generation's number.
    fn cut_off_after_staging(dev: &Device, origin: Origin, previous: Option<u64>) -> (String, u64) {
        let store = dev.store();
        let job = dev.tracker.start(origin, previous).unwrap();
        let source = SourceRecord {
            origin,
            sha256: "x".into(),
            signer: None,
            time: "t".into(),
        };
        let n = store.next().unwrap();
        job.set_staged(n);
        store
            .stage_as(
                n,
                EXAMPLE,
                &source,
                &desired(EXAMPLE).tree,
                &RenderedTree::default(),
            )
            .unwrap();
        let id = job.id.clone();
        std::mem::forget(job);
        (id, n)
    }

    fn with_apps(files: &[(&str, &str)]) -> Accepted {
        let text = format!(
            "{}\n[[containers]]\nname = \"web\"\nimage = \"docker.io/library/nginx\"\nvolumes = [\"/data/apps/web:/usr/share/nginx/html:ro\"]\n",
            EXAMPLE
                .split("[[containers]]")
                .next()
                .unwrap()
        );
        let apps: BTreeMap<String, Vec<u8>> = files
            .iter()
            .map(|(p, c)| (format!("apps/web/{p}"), c.as_bytes().to_vec()))
            .collect();
        check_text(text, apps).expect("valid config")
    }

    /// A container with the apps dir as a read-write volume swaps a directory or a file
    /// for a symbolic link to the host between two applies: the next apply (and its
    /// rollback) report the link by its path and touch nothing outside.
    #[test]
    fn a_symlink_planted_under_the_apps_dir_is_reported_not_followed() {
        type Files = &'static [(&'static str, &'static str)];
        let cases: &[(&str, &str, Files)] = &[
            // (what is replaced by a link, where the link points, the second bundle)
            (
                "sub",
                "outside",
                &[("sub/index.html", "new"), ("file.txt", "new")],
            ),
            (
                "file.txt",
                "outside/file.txt",
                &[("sub/index.html", "new"), ("file.txt", "new")],
            ),
            // The second bundle drops the files: their removal goes through the link.
            ("sub", "outside", &[("file.txt", "old")]),
        ];
        for (replaced, target, second) in cases {
            let dev = Device::new();
            let outside = dev.root().join("outside");
            std::fs::create_dir_all(&outside).unwrap();
            std::fs::write(outside.join("index.html"), "host").unwrap();
            std::fs::write(outside.join("file.txt"), "host").unwrap();

            let run = |acc: Accepted| dev.import_accepted(&dev.applier, acc, None);
            let (first, _) = run(with_apps(&[("sub/index.html", "old"), ("file.txt", "old")]));
            assert!(first.succeeded(), "{first:?}");
            let apps = dev.root().join("data/apps/web");
            assert_eq!(
                std::fs::read_to_string(apps.join("sub/index.html")).unwrap(),
                "old"
            );

            // What the container does through its volume.
            let planted = apps.join(replaced);
            if planted.is_dir() {
                std::fs::remove_dir_all(&planted).unwrap();
            } else {
                std::fs::remove_file(&planted).unwrap();
            }
            std::os::unix::fs::symlink(dev.root().join(target), &planted).unwrap();

            let (outcome, job) = run(with_apps(second));
            let result = job.result.unwrap();
            assert_eq!(result.failed_step.as_deref(), Some("apps"), "{replaced}");
            let want = format!(
                "{} is a symbolic link (a container may have planted it): not followed",
                planted.display()
            );
            assert_eq!(result.error.as_deref(), Some(want.as_str()), "{replaced}");
            // The rollback meets the same link: it says so rather than claiming success.
            assert_eq!(outcome.rollback.state, RollbackState::Failed, "{replaced}");
            assert!(
                job.events
                    .iter()
                    .any(|e| e.message.contains(&want) && e.step == "rollback"),
                "{replaced}: {:?}",
                job.events
            );
            for f in ["index.html", "file.txt"] {
                assert_eq!(
                    std::fs::read_to_string(outside.join(f)).unwrap(),
                    "host",
                    "{replaced}: outside/{f}"
                );
            }
            let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
            assert_eq!(
                left.len(),
                2,
                "{replaced}: nothing created outside: {left:?}"
            );
        }
    }

    /// A first apply that fails after the host name and time zone were set goes back to
    /// the image's: files, the localtime link and the running host name.
    #[test]
    fn a_failed_first_apply_puts_back_the_images_host_name_and_time_zone() {
        for step in [
            Step::SshKeys,
            Step::UpdateTimer,
            Step::Switch,
            Step::MarkGood,
        ] {
            let dev = Device::new();
            let a = dev.applier(dev.sys.clone(), &format!("{}=error", step.name()));
            let etc = dev.root().join("etc");
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("hostname"), "atomix\n").unwrap();
            std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", etc.join("localtime"))
                .unwrap();
            // The image has no etc/timezone: the one the apply wrote goes again.
            let (outcome, job) = dev.import_by(&a, EXAMPLE);
            assert_eq!(job.state, JobState::Failed, "{step}");
            assert_eq!(outcome.rollback.state, RollbackState::Completed, "{step}");
            assert_eq!(
                std::fs::read_to_string(etc.join("hostname")).unwrap(),
                "atomix\n",
                "{step}"
            );
            assert!(!etc.join("timezone").exists(), "{step}");
            assert_eq!(
                std::fs::read_link(etc.join("localtime")).unwrap(),
                Path::new("/usr/share/zoneinfo/Etc/UTC"),
                "{step}"
            );
            let cmds = dev.sys.commands();
            let hostnames: Vec<&String> = cmds
                .iter()
                .filter(|c| c.starts_with("hostnamectl"))
                .collect();
            assert_eq!(
                hostnames,
                [
                    "hostnamectl hostname edge-042",
                    "hostnamectl hostname atomix"
                ],
                "{step}: the rollback sets the image's host name again"
            );
            assert_eq!(Owned::load(&a.paths).files, BTreeSet::new(), "{step}");
            let originals: Vec<_> = walk(&a.paths.run().join("originals"));
            assert!(
                originals.is_empty(),
                "{step}: saved originals left: {originals:?}"
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    /// Bundle files whose names no apply can write (a file where another needs a
    /// directory, a name past NAME_MAX) are refused at validate, before anything is
    /// written, with the rule validation uses.
    #[test]
    fn the_apply_refuses_bundle_names_validation_refuses() {
        let long = format!("{}.html", "x".repeat(250));
        let cases: &[(&[&str], String)] = &[
            (
                &["a", "a/b"],
                "apps/web/a/b: refused: apps/web/a is a file in the bundle: a file and a directory cannot share a name".into(),
            ),
            (
                &[long.as_str()],
                format!("apps/web/{long}: refused: a name component is longer than 240 bytes"),
            ),
        ];
        for (names, want) in cases {
            let dev = Device::new();
            let files: Vec<(&str, &str)> = names.iter().map(|n| (*n, "x")).collect();
            let (_, job) = dev.import_accepted(&dev.applier, with_apps(&files), None);
            let result = job.result.unwrap();
            assert_eq!(result.failed_step.as_deref(), Some("validate"));
            assert_eq!(result.error.as_ref(), Some(want));
            assert_eq!(dev.store().list().unwrap(), Vec::<u64>::new());
            assert!(!dev.root().join("data/apps").exists());
        }
    }
}
