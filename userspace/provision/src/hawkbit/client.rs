//! One round of the DDI client: report how the action in progress ended (or carry it
//! on), poll, and do what the answer asks, through a [`Ddi`] transport and an
//! [`Installer`]. Decisions are [`super::decide`]'s; this is the one place they are
//! carried out, so that tests drive the real sequence against [`super::transport::FakeDdi`].

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::decide::{self, BootFacts, CancelPlan, DeploymentPlan, DeviceFacts, Downloaded, Resume};
use super::record::{ActionRecord, Phase, RecordStore};
use super::schedule;
use super::transport::{Ddi, DdiError, Method};
use super::wire::{CancelAnswer, ConfigData, ConfigMode, DeploymentBase, Feedback, PollAnswer};

/// Installs a downloaded bundle (`rauc install`, the path the timer and
/// `POST /api/update` take) and names the slot it wrote. `action` says which server
/// action it is for, for the install's own record.
pub trait Installer {
    fn install(&mut self, bundle: &Path, got: &Downloaded, action: &str) -> Result<String, String>;

    /// What holds the device's single install slot now (a job, an upload over the
    /// API), if anything: a deployment is not downloaded meanwhile, it waits for the
    /// next poll.
    fn busy(&self) -> Option<String> {
        None
    }
}

/// The largest bundle downloaded (the API's limit for a pushed one): a server that
/// announces more is refused before a byte is written to `/data`.
pub const MAX_BUNDLE: u64 = atomix_api::limits::UPDATE_BUNDLE_BYTES;

/// What a download leaves free on `/data` at least (jobs, records, the containers'
/// data): a bundle that would eat into it is refused, not downloaded until the disk is full.
pub const DATA_RESERVE: u64 = 64 << 20;

/// The bytes an unprivileged writer may still use where `dir` is (made if missing);
/// `None` when that cannot be told.
fn free_space(dir: &Path) -> Option<u64> {
    fs::create_dir_all(dir).ok()?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The scheme, host and port of a URL (`http://h:1`), lowercased; `None` for what is
/// not an absolute http(s) URL.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in a URL would be sent to whoever the host is: refused.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let with_port = if authority.starts_with('[') {
        match authority.rsplit_once("]:") {
            Some(_) => authority,
            None => format!("{authority}:{default_port}"),
        }
    } else if authority.contains(':') {
        authority
    } else {
        format!("{authority}:{default_port}")
    };
    Some(format!("{scheme}://{with_port}"))
}

/// What a round came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Sleep this long before the next round.
    pub sleep: Duration,
    /// A bundle was installed: reboot into it.
    pub reboot: bool,
    /// What went wrong, for the log (the round carried on where it could).
    pub problems: Vec<String>,
}

#[derive(Debug)]
pub struct Client<D, I> {
    pub ddi: D,
    pub installer: I,
    pub store: RecordStore,
    /// Where bundles are downloaded (`/data/rauc/hawkbit`).
    pub downloads: PathBuf,
    /// `<url>/<tenant>/controller/v1/<controller-id>`.
    pub base: String,
    pub device: DeviceFacts,
    pub boot: BootFacts,
    /// Failed polls in a row.
    pub failures: u32,
    /// Rounds in a row in which the device had no route to the server.
    pub offline: u32,
    /// This round's time, seconds since the epoch (how long a result has waited).
    pub now: u64,
}

/// The controller resource of a device.
pub fn controller_url(url: &str, tenant: &str, controller_id: &str) -> String {
    format!(
        "{}/{tenant}/controller/v1/{controller_id}",
        url.trim_end_matches('/')
    )
}

impl<D: Ddi, I: Installer> Client<D, I> {
    fn feedback_url(&self, action_id: &str) -> String {
        format!("{}/deploymentBase/{action_id}/feedback", self.base)
    }

    /// Whatever the server calls the action, the bundle lands in [`Client::downloads`]
    /// under a name of at most 64 safe characters.
    fn bundle_path(&self, action_id: &str) -> PathBuf {
        let safe: String = action_id
            .chars()
            .take(64)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.downloads.join(format!("{safe}.raucb"))
    }

    /// A link the server gave, if it points at the server itself: the token goes with
    /// every request, so the device follows no link to another host (or scheme, or port).
    fn linked(&self, href: &str) -> Result<String, String> {
        match (origin(&self.base), origin(href)) {
            (Some(server), Some(link)) if server == link => Ok(href.to_owned()),
            _ => Err(format!(
                "the server links to {:?}, which is not on {}: not followed",
                href.chars().take(256).collect::<String>(),
                origin(&self.base).unwrap_or_else(|| self.base.clone())
            )),
        }
    }

    fn post(&mut self, url: &str, feedback: &Feedback) -> Result<(), DdiError> {
        let body = serde_json::to_string(feedback).expect("feedback serializes");
        self.ddi.json(Method::Post, url, Some(&body)).map(drop)
    }

    fn save(&self, record: &ActionRecord, problems: &mut Vec<String>) -> bool {
        match self.store.save(record) {
            Ok(()) => true,
            Err(e) => {
                problems.push(format!("saving {}: {e}", self.store.path().display()));
                false
            }
        }
    }

    /// Records the final result and reports it; the record goes once the server took it.
    fn finish(
        &mut self,
        mut record: ActionRecord,
        success: bool,
        details: Vec<String>,
        problems: &mut Vec<String>,
    ) {
        let _ = fs::remove_file(self.bundle_path(&record.action_id));
        if !success {
            problems.push(format!(
                "action {} failed: {}",
                record.action_id,
                details.join("; ")
            ));
        }
        record.phase = Phase::Reporting {
            success,
            details: details.clone(),
        };
        if !self.save(&record, problems) {
            return;
        }
        let url = self.feedback_url(&record.action_id);
        let e = match self.post(&url, &Feedback::closed(success, details.clone())) {
            Ok(()) => return self.clear(problems),
            Err(e) => e,
        };
        let status = match &e {
            DdiError::Status { status, .. } => Some(*status),
            _ => None,
        };
        let since = *record.unreported_since.get_or_insert(self.now);
        match decide::give_up_report(status, since, self.now) {
            Some(why) => {
                problems.push(format!(
                    "dropping the result of action {} ({}: {}): {why}: {e}",
                    record.action_id,
                    if success { "success" } else { "failure" },
                    details.join("; ")
                ));
                self.clear(problems);
            }
            None => {
                problems.push(format!(
                    "reporting the result of action {}: {e}",
                    record.action_id
                ));
                self.save(&record, problems);
            }
        }
    }

    fn clear(&self, problems: &mut Vec<String>) {
        if let Err(e) = self.store.clear() {
            problems.push(format!("removing {}: {e}", self.store.path().display()));
        }
    }

    fn failed_poll(&mut self, random: u64, problem: String, mut problems: Vec<String>) -> Round {
        self.failures = self.failures.saturating_add(1);
        problems.push(problem);
        Round {
            sleep: schedule::backoff(self.failures, random),
            reboot: false,
            problems,
        }
    }

    /// One round; `random` feeds the jitter and the back-off.
    pub fn round(&mut self, random: u64) -> Round {
        let mut problems = Vec::new();
        // The action whose result this round reported: a server still offering it
        // (its answer raced the report) does not get it installed a second time.
        let mut reported = None;
        let mut current = match self.store.load() {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("reading {}: {e}", self.store.path().display()));
                None
            }
        };
        if let Some(record) = current.take_if(|r| !decide::from_server(r, &self.base)) {
            // Taken from another server, tenant or controller id (the config changed
            // while it was open): this server never heard of it, so it is reported
            // nowhere; kept, it would be sent to the wrong server for ever.
            problems.push(format!(
                "dropping action {} ({}, {:?}): it was taken from {}, not {}; its result is not reported",
                record.action_id,
                record.version,
                record.phase,
                record.server.as_deref().unwrap_or_default(),
                self.base
            ));
            let _ = fs::remove_file(self.bundle_path(&record.action_id));
            self.clear(&mut problems);
        }
        if let Some(mut record) = current.clone() {
            match decide::resume(&record, &self.boot) {
                Resume::Report { success, details } => {
                    reported = Some(record.action_id.clone());
                    self.finish(record, success, details, &mut problems);
                    current = self.store.load().ok().flatten();
                }
                // The install had finished when the power went: from here on it is
                // an installed action, whose fallback is reported as such.
                Resume::AwaitGood => {
                    if let Phase::Installing {
                        target_slot: Some(t),
                    } = &record.phase
                    {
                        record.phase = Phase::Installed {
                            target_slot: t.clone(),
                        };
                        self.save(&record, &mut problems);
                        current = Some(record);
                    }
                }
                Resume::Download | Resume::AwaitReboot => {}
            }
        }

        let answer = match self.ddi.json(Method::Get, &self.base.clone(), None) {
            Ok(text) => text,
            Err(e @ DdiError::Offline { .. }) => {
                // Not counted as a failure of the server: retried soon, without back-off.
                self.offline = self.offline.saturating_add(1);
                problems.push(format!("polling: {e}"));
                return Round {
                    sleep: schedule::offline_retry(self.offline),
                    reboot: false,
                    problems,
                };
            }
            Err(e) => return self.failed_poll(random, format!("polling: {e}"), problems),
        };
        let answer: PollAnswer = match serde_json::from_str(&answer) {
            Ok(a) => a,
            Err(e) => {
                return self.failed_poll(
                    random,
                    format!(
                        "polling {}: the answer is not a DDI poll answer: {e}",
                        self.base
                    ),
                    problems,
                )
            }
        };
        self.failures = 0;
        self.offline = 0;
        let sleep = match schedule::parse_sleep(&answer.config.polling.sleep) {
            Ok(s) => schedule::bounded(s),
            Err(e) => {
                problems.push(e);
                schedule::DEFAULT_SLEEP
            }
        };
        let mut round = Round {
            sleep: schedule::with_jitter(sleep, random),
            reboot: false,
            problems,
        };
        let mut plan = decide::plan_poll(&answer);
        for link in [
            &mut plan.config_data,
            &mut plan.cancel,
            &mut plan.deployment,
        ] {
            if let Some(href) = link.take() {
                match self.linked(&href) {
                    Ok(href) => *link = Some(href),
                    Err(e) => round.problems.push(e),
                }
            }
        }

        if let Some(href) = plan.config_data {
            let body = ConfigData {
                mode: ConfigMode::Merge,
                data: decide::attributes(&self.device),
            };
            let body = serde_json::to_string(&body).expect("config data serializes");
            if let Err(e) = self.ddi.json(Method::Put, &href, Some(&body)) {
                round
                    .problems
                    .push(format!("sending the device's attributes: {e}"));
            }
        }

        if let Some(href) = plan.cancel {
            self.cancel(&href, current.as_ref(), &mut round.problems);
            return round;
        }

        match plan.deployment {
            Some(href) => self.deployment(&href, current, reported.as_deref(), &mut round),
            None => {
                // The server no longer offers an action we had only started to
                // download: it was withdrawn while the device was away.
                if let Some(r) = current.filter(|r| r.phase == Phase::Downloading) {
                    let _ = fs::remove_file(self.bundle_path(&r.action_id));
                    if let Err(e) = self.store.clear() {
                        round
                            .problems
                            .push(format!("removing {}: {e}", self.store.path().display()));
                    }
                }
            }
        }
        round
    }

    fn cancel(&mut self, href: &str, current: Option<&ActionRecord>, problems: &mut Vec<String>) {
        let answer = match self.ddi.json(Method::Get, href, None) {
            Ok(text) => text,
            Err(e) => return problems.push(format!("fetching the cancel request: {e}")),
        };
        let cancel: CancelAnswer = match serde_json::from_str(&answer) {
            Ok(c) => c,
            Err(e) => return problems.push(format!("{href}: not a DDI cancel request: {e}")),
        };
        let stop_id = cancel.cancel_action.stop_id;
        let url = format!("{}/cancelAction/{}/feedback", self.base, cancel.id);
        let feedback = match decide::plan_cancel(&stop_id, current) {
            CancelPlan::Confirm { discard } => {
                if discard {
                    let _ = fs::remove_file(self.bundle_path(&stop_id));
                    if let Err(e) = self.store.clear() {
                        problems.push(format!("removing {}: {e}", self.store.path().display()));
                    }
                }
                Feedback::cancel_confirmed(format!(
                    "action {stop_id} canceled: nothing had been written"
                ))
            }
            CancelPlan::Reject { reason } => Feedback::cancel_rejected(reason),
        };
        if let Err(e) = self.post(&url, &feedback) {
            problems.push(format!("answering the cancel request: {e}"));
        }
    }

    fn deployment(
        &mut self,
        href: &str,
        current: Option<ActionRecord>,
        reported: Option<&str>,
        round: &mut Round,
    ) {
        let answer = match self.ddi.json(Method::Get, href, None) {
            Ok(text) => text,
            Err(e) => return round.problems.push(format!("fetching the deployment: {e}")),
        };
        let dep: DeploymentBase = match serde_json::from_str(&answer) {
            Ok(d) => d,
            Err(e) => {
                return round
                    .problems
                    .push(format!("{href}: not a DDI deployment: {e}"))
            }
        };
        if reported == Some(dep.id.as_str()) {
            return;
        }
        let record = match decide::plan_deployment(&dep, current.as_ref(), &self.boot) {
            DeploymentPlan::Wait | DeploymentPlan::InProgress | DeploymentPlan::Busy { .. } => {
                return
            }
            DeploymentPlan::Refuse { action_id, reason } => {
                let url = self.feedback_url(&action_id);
                if let Err(e) = self.post(&url, &Feedback::closed(false, vec![reason])) {
                    round
                        .problems
                        .push(format!("refusing action {action_id}: {e}"));
                }
                return;
            }
            DeploymentPlan::Download { record } => ActionRecord {
                server: Some(self.base.clone()),
                ..*record
            },
        };
        let refused = if record.size > MAX_BUNDLE {
            Some(format!(
                "{}: {} bytes, more than the {MAX_BUNDLE} a bundle may have",
                record.artifact, record.size
            ))
        } else if let Err(e) = self.linked(&record.download_url) {
            Some(format!("{}: {e}", record.artifact))
        } else {
            match free_space(&self.downloads) {
                Some(free) if free < record.size.saturating_add(DATA_RESERVE) => Some(format!(
                    "{}: {} bytes, and {} has {free} bytes free (of which {DATA_RESERVE} stay for the device)",
                    record.artifact,
                    record.size,
                    self.downloads.display()
                )),
                _ => None,
            }
        };
        if let Some(reason) = refused {
            let url = self.feedback_url(&record.action_id);
            if let Err(e) = self.post(&url, &Feedback::closed(false, vec![reason.clone()])) {
                round
                    .problems
                    .push(format!("refusing action {}: {e}", record.action_id));
            }
            return round.problems.push(reason);
        }
        if let Some(holder) = self.installer.busy() {
            return round.problems.push(format!(
                "action {}: waiting for {holder} to finish",
                record.action_id
            ));
        }
        if let Some(old) = current.filter(|r| r.action_id != record.action_id) {
            let _ = fs::remove_file(self.bundle_path(&old.action_id));
            if let Phase::Reporting { success, details } = &old.phase {
                round.problems.push(format!(
                    "dropping the result of action {} ({}: {}), which the server has not taken, for action {}",
                    old.action_id,
                    if *success { "success" } else { "failure" },
                    details.join("; "),
                    record.action_id
                ));
            }
        }
        if !self.save(&record, &mut round.problems) {
            return;
        }
        let url = self.feedback_url(&record.action_id);
        let step = |cnt, what: String| Feedback::proceeding(cnt, decide::STEPS, what);
        let _ = self.post(
            &url,
            &step(
                decide::STEP_DOWNLOAD,
                format!("downloading {} ({} bytes)", record.artifact, record.size),
            ),
        );

        let path = self.bundle_path(&record.action_id);
        let got = match self.fetch(&record, &path) {
            Ok(got) => got,
            Err(e) => {
                // The download is retried at the next poll while the server offers it.
                let _ = fs::remove_file(&path);
                return round
                    .problems
                    .push(format!("downloading {}: {e}", record.artifact));
            }
        };
        if let Err(reason) = decide::check_download(&record, &got) {
            return self.finish(record, false, vec![reason], &mut round.problems);
        }
        let _ = self.post(
            &url,
            &step(
                decide::STEP_DOWNLOADED,
                format!("{} downloaded, hashes checked", record.artifact),
            ),
        );

        let mut record = record;
        record.phase = Phase::Installing {
            target_slot: decide::other_slot(&self.boot.slot),
        };
        if !self.save(&record, &mut round.problems) {
            return;
        }
        let _ = self.post(
            &url,
            &step(
                decide::STEP_INSTALL,
                format!("installing {}", record.version),
            ),
        );
        let installed = self.installer.install(
            &path,
            &got,
            &format!(
                "hawkBit action {} ({}, {})",
                record.action_id, record.artifact, record.version
            ),
        );
        let _ = fs::remove_file(&path);
        match installed {
            Ok(target_slot) => {
                let detail = format!(
                    "{} installed into slot {target_slot}; rebooting into it",
                    record.version
                );
                record.phase = Phase::Installed { target_slot };
                record.boot_id = self.boot.boot_id.clone();
                // RAUC has made the slot the next boot's: it boots whatever the record
                // says, and one left at `Installing` is told apart by its target slot.
                if !self.save(&record, &mut round.problems) {
                    round.problems.push(format!(
                        "{} is installed all the same: rebooting",
                        record.version
                    ));
                }
                let _ = self.post(&url, &step(decide::STEP_INSTALLED, detail));
                round.reboot = true;
            }
            Err(reason) => self.finish(
                record,
                false,
                vec![format!("rauc install failed: {reason}")],
                &mut round.problems,
            ),
        }
    }

    /// Downloads the bundle to `path`, hashing it on the way, and syncs it.
    fn fetch(&mut self, record: &ActionRecord, path: &Path) -> Result<Downloaded, String> {
        fs::create_dir_all(&self.downloads)
            .map_err(|e| format!("{}: {e}", self.downloads.display()))?;
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut sink = Hashing {
            file,
            sha1: Sha1::new(),
            sha256: Sha256::new(),
        };
        let size = self
            .ddi
            .download(&record.download_url, record.size, &mut sink)
            .map_err(|e| e.to_string())?;
        sink.file
            .sync_all()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Downloaded {
            size,
            sha1: atomix_api::hex(&sink.sha1.finalize()),
            sha256: atomix_api::hex(&sink.sha256.finalize()),
        })
    }
}

/// A file that hashes what is written to it.
struct Hashing {
    file: File,
    sha1: Sha1,
    sha256: Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sha1.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
