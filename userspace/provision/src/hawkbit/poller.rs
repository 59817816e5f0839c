//! The DDI client inside the service: a thread that follows the current generation's
//! `[update.hawkbit]` (started when a config has it, rebuilt when it changes, idle when
//! it goes), reads the token file at every round, gathers the device's facts and this
//! boot's, runs [`Client::round`], shows the outcome in `/api/health`, and reboots
//! after an install. Installs go through [`ServiceInstaller`]: an update job in the
//! service's single-flight tracker, [`crate::update::install`] as for `POST /api/update`.
//!
//! Nothing here runs on the API's request path: handlers only read the status this
//! thread publishes, and [`Service::wake_update_client`] only signals it; it is called
//! through [`Service::note_marked_good`], the last step of every successful config
//! apply (an import over the API, from USB or from the boot bundle, and the boot
//! flow's re-apply), so a config with `[update.hawkbit]` is polled as soon as it is
//! applied.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use atomix_api::{LastPoll, ServerAction, UpdateServer};
use atomix_config::generations::Origin;
use atomix_config::schema::{Config, TokenKind};

use super::client::{controller_url, Client, Installer, Round};
use super::decide::{BootFacts, DeviceFacts, Downloaded};
use super::record::{Phase, RecordStore};
use super::schedule;
use super::transport::{self, Auth, Ddi, UreqDdi};
use crate::jobs::{Hold, JobKind, Level};
use crate::service::Service;
use crate::update;

/// Where downloads go, under `/data` (inside RAUC's data directory, beside uploads).
pub const DOWNLOADS_IN_DATA: &str = "rauc/hawkbit";
/// A token longer than this is not a token (and is not read into a header).
pub const MAX_TOKEN: usize = 1024;
/// Without `[update.hawkbit]` the thread looks at the current generation this often
/// (besides being woken when a config is applied).
pub const IDLE_CHECK: Duration = Duration::from_secs(60);
/// How long an install waits for a job (an API update, a config apply) to end before
/// it gives up and reports a failure.
pub const INSTALL_WAIT: Duration = Duration::from_secs(10 * 60);

/// The most of one problem, and of a poll's outcome, kept for the log and health:
/// enough to say what went wrong, bounded whatever the server answers.
pub const MAX_PROBLEM: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, ending in `...` when cut.
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

/// What `[update.hawkbit]` says, with the controller id resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub tenant: String,
    pub controller_id: String,
    /// Absolute, under `/data` (validated by the config).
    pub token_file: Option<String>,
    pub token_kind: TokenKind,
}

impl Settings {
    pub fn of(config: &Config) -> Option<Settings> {
        let h = config.update.hawkbit.as_ref()?.get_ref();
        Some(Settings {
            url: h.url.to_string(),
            tenant: h.tenant.to_string(),
            controller_id: h.controller_id_or(config.device.hostname.get_ref()),
            token_file: h
                .token_file
                .as_ref()
                .map(|t| t.get_ref().as_str().to_owned()),
            token_kind: h.token_kind,
        })
    }

    pub fn controller(&self) -> String {
        controller_url(&self.url, &self.tenant, &self.controller_id)
    }
}

/// The `Authorization` value for a token file's contents. The file may end in a newline;
/// the token itself must be one word of visible ASCII. Errors never quote the token.
pub fn parse_token(bytes: &[u8], kind: TokenKind) -> Result<Auth, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_owned())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("it is empty".into());
    }
    if token.len() > MAX_TOKEN {
        return Err(format!("it holds more than {MAX_TOKEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token holds spaces or control characters".into());
    }
    let scheme = match kind {
        TokenKind::Target => "TargetToken",
        TokenKind::Gateway => "GatewayToken",
    };
    Ok(Auth(Some(format!("{scheme} {token}"))))
}

/// Reads the token file beneath `/data` without following symlinks (the file may sit
/// in a tree a container can write: a link planted there must not make the device send
/// another file to the server).
pub fn read_token(data: &Path, file: &str, kind: TokenKind) -> Result<Auth, String> {
    let fail = |why: String| format!("cannot use the token file {file}: {why}");
    let rel = file
        .strip_prefix("/data/")
        .ok_or_else(|| fail("not under /data".into()))?;
    // The token and its line end, with room for a file written with CRLF or padding.
    let limit = 4 * MAX_TOKEN as u64;
    match crate::beneath::Beneath::new(data).read(Path::new(rel), limit) {
        Ok(Some(bytes)) => parse_token(&bytes, kind).map_err(fail),
        Ok(None) => Err(fail("it does not exist".into())),
        Err(e) => Err(fail(format!("{:#}", anyhow::Error::new(e)))),
    }
}

/// RAUC's `compatible=` from `system.conf`.
pub fn parse_compatible(system_conf: &str) -> Option<String> {
    let mut in_system = false;
    for line in system_conf.lines().map(str::trim) {
        if line.starts_with('[') {
            in_system = line == "[system]";
        } else if in_system {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "compatible" && !v.trim().is_empty() {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

/// The device tree's `model` (NUL-terminated), e.g. `Pine64 Rock64`.
pub fn parse_model(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let model = text.trim_end_matches('\0').trim();
    (!model.is_empty()).then(|| model.to_owned())
}

/// The state of the action record as health shows it.
pub fn action_of(record: &super::record::ActionRecord) -> ServerAction {
    let (state, success) = match &record.phase {
        Phase::Downloading => ("downloading", None),
        Phase::Installing { .. } => ("installing", None),
        Phase::Installed { .. } => ("installed", None),
        Phase::Reporting { success, .. } => ("reporting", Some(*success)),
    };
    ServerAction {
        id: record.action_id.clone(),
        version: record.version.clone(),
        state: state.into(),
        success,
    }
}

/// Wakes the poller early: a config was applied, or the slot was marked good.
#[derive(Debug, Default)]
pub struct Wake {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }

    /// Waits up to `timeout` for a notification newer than `seen`; updates `seen`.
    /// Returns whether one came.
    pub fn wait(&self, seen: &mut u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count == *seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            count = self
                .cv
                .wait_timeout(count, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *seen = *count;
        true
    }

    pub fn seen(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes the transport for a server.
pub trait Connect {
    type Ddi: Ddi;
    fn connect(&self, settings: &Settings) -> Result<Self::Ddi, String>;
}

/// ureq; for `https://` the trusted roots of the image's CA bundle.
#[derive(Debug, Clone)]
pub struct RealConnect {
    pub ca_bundle: PathBuf,
    pub timeouts: transport::Timeouts,
}

impl Connect for RealConnect {
    type Ddi = UreqDdi;
    fn connect(&self, settings: &Settings) -> Result<UreqDdi, String> {
        let roots = if settings.url.starts_with("https://") {
            transport::load_roots(&self.ca_bundle)
                .map_err(|e| format!("no trusted CA certificates for {}: {e}", settings.url))?
        } else {
            Vec::new()
        };
        Ok(UreqDdi::new(Auth(None), roots, self.timeouts))
    }
}

/// Installs through the service's update path, as an update job.
#[derive(Debug)]
pub struct ServiceInstaller {
    svc: Arc<Service>,
    /// The job's single-flight slot, kept from a successful install until the reboot
    /// has been requested (nothing else starts in between), dropped by any round that
    /// requests none.
    pub hold: Option<Hold>,
    /// How long to wait for another job to end.
    pub wait: Duration,
}

impl ServiceInstaller {
    pub fn new(svc: Arc<Service>) -> ServiceInstaller {
        ServiceInstaller {
            svc,
            hold: None,
            wait: INSTALL_WAIT,
        }
    }
}

impl Installer for ServiceInstaller {
    fn busy(&self) -> Option<String> {
        if let Some(id) = self.svc.tracker.running() {
            return Some(format!("job {id}"));
        }
        self.svc
            .upload_slot
            .is_taken()
            .then(|| "an upload over the API".to_owned())
    }

    fn install(&mut self, bundle: &Path, got: &Downloaded, action: &str) -> Result<String, String> {
        let svc = &self.svc;
        let target = svc
            .boot
            .as_ref()
            .map(|b| b.slot.other().to_string())
            .ok_or("the booted slot is unknown (no boot record): not installed")?;
        let stored = update::Bundle::stored(bundle.to_owned(), got.sha256.clone(), got.size);
        let started = Instant::now();
        let mut told = false;
        let job = loop {
            match svc
                .tracker
                .start_kind(JobKind::Update, Origin::Api, svc.current())
            {
                Ok(job) => break job,
                Err(busy) if started.elapsed() < self.wait => {
                    if !std::mem::replace(&mut told, true) {
                        log::info!("{action}: waiting for job {} to end", busy.0);
                    }
                    std::thread::sleep(Duration::from_secs(1).min(self.wait));
                }
                Err(busy) => {
                    return Err(format!(
                        "job {} kept the device busy for {} s: not installed",
                        busy.0,
                        self.wait.as_secs()
                    ))
                }
            }
        };
        let request = update::Request {
            bundle: stored,
            signer: action.to_owned(),
            key: None,
            reboot: false,
        };
        let a = &svc.applier;
        let outcome = update::install(
            &job,
            a.system.as_ref(),
            &a.failpoints,
            request,
            svc.current(),
            &Vec::new,
        );
        if let Some(e) = &outcome.result.error {
            let e = e.clone();
            job.finish(outcome.result, outcome.rollback);
            return Err(e);
        }
        job.event(
            update::REBOOT,
            Level::Info,
            "rebooting once the server has been told",
        );
        self.hold = Some(job.finish_and_hold(outcome.result, outcome.rollback));
        Ok(target)
    }
}

/// What one turn came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub sleep: Duration,
    pub reboot: bool,
}

/// The client's state across turns.
pub struct Poller<C: Connect> {
    svc: Arc<Service>,
    connect: C,
    client: Option<(Settings, Client<C::Ddi, ServiceInstaller>)>,
    /// Failed turns in a row before a client exists (token, transport).
    failures: u32,
}

impl<C: Connect> std::fmt::Debug for Poller<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("settings", &self.client.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

impl<C: Connect> Poller<C> {
    pub fn new(svc: Arc<Service>, connect: C) -> Self {
        Poller {
            svc,
            connect,
            client: None,
            failures: 0,
        }
    }

    /// The client, once one was built (tests look at its transport).
    pub fn client(&self) -> Option<&Client<C::Ddi, ServiceInstaller>> {
        self.client.as_ref().map(|(_, c)| c)
    }

    pub fn client_mut(&mut self) -> Option<&mut Client<C::Ddi, ServiceInstaller>> {
        self.client.as_mut().map(|(_, c)| c)
    }

    /// The settings of the current generation, if it has `[update.hawkbit]`.
    pub fn settings(&self) -> Option<Settings> {
        let n = self.svc.current()?;
        let config = crate::apply::config_of(&self.svc.store(), n)?;
        Settings::of(&config)
    }

    fn device_facts(&self) -> DeviceFacts {
        let paths = &self.svc.paths;
        let boot = self.svc.boot.as_ref();
        let read = |rel: &str| std::fs::read(paths.under(rel)).ok();
        DeviceFacts {
            build_id: boot
                .and_then(|b| b.build_id.clone())
                .unwrap_or_else(|| "unknown".into()),
            slot: boot.map_or_else(|| "unknown".into(), |b| b.slot.to_string()),
            board: read("sys/firmware/devicetree/base/model")
                .and_then(|m| parse_model(&m))
                .unwrap_or_else(|| "unknown".into()),
            compatible: read("etc/rauc/system.conf")
                .and_then(|c| parse_compatible(&String::from_utf8_lossy(&c)))
                .unwrap_or_else(|| "unknown".into()),
            generation: self.svc.current(),
        }
    }

    fn boot_facts(&self) -> Option<BootFacts> {
        let boot = self.svc.boot.as_ref()?;
        Some(BootFacts {
            boot_id: self.svc.boot_id.clone(),
            slot: boot.slot.to_string(),
            build_id: boot.build_id.clone().unwrap_or_else(|| "unknown".into()),
            slot_good: self.svc.slot_marked_good(),
        })
    }

    fn publish(&self, settings: Option<&Settings>, poll: Option<LastPoll>) {
        let action = self
            .client
            .as_ref()
            .and_then(|(_, c)| c.store.load().ok().flatten())
            .map(|r| action_of(&r));
        let status = settings.map(|s| UpdateServer {
            url: s.url.clone(),
            controller_id: s.controller_id.clone(),
            last_poll: poll.or_else(|| {
                self.svc
                    .update_server()
                    .filter(|old| old.url == s.url && old.controller_id == s.controller_id)
                    .and_then(|old| old.last_poll)
            }),
            action,
        });
        self.svc.set_update_server(status);
    }

    fn failed(&mut self, settings: &Settings, why: String, random: u64) -> Turn {
        log::error!("hawkBit client: {why}");
        self.failures = self.failures.saturating_add(1);
        self.publish(
            Some(settings),
            Some(LastPoll {
                time: crate::now_rfc3339(),
                ok: false,
                outcome: bounded(why, MAX_PROBLEM),
            }),
        );
        Turn {
            sleep: schedule::backoff(self.failures, random),
            reboot: false,
        }
    }

    /// One turn: follow the config, read the token, run a round, publish.
    pub fn turn(&mut self, random: u64) -> Turn {
        let Some(settings) = self.settings() else {
            if self.client.take().is_some() {
                log::info!("hawkBit client stopped: the current config has no [update.hawkbit]");
            }
            self.failures = 0;
            self.publish(None, None);
            return Turn {
                sleep: IDLE_CHECK,
                reboot: false,
            };
        };
        let Some(boot) = self.boot_facts() else {
            let why = format!(
                "no boot record ({}): the booted slot is unknown, so an update's result could not be told; not polling",
                self.svc.paths.boot_record().display()
            );
            return self.failed(&settings, why, random);
        };
        if self.client.as_ref().map(|(s, _)| s) != Some(&settings) {
            let ddi = match self.connect.connect(&settings) {
                Ok(d) => d,
                Err(why) => return self.failed(&settings, why, random),
            };
            log::info!(
                "hawkBit client: polling {} as {}",
                settings.url,
                settings.controller_id
            );
            let data = self.svc.paths.data();
            let installer = ServiceInstaller::new(Arc::clone(&self.svc));
            let client = Client {
                ddi,
                installer,
                store: RecordStore::new(&data),
                downloads: data.join(DOWNLOADS_IN_DATA),
                base: settings.controller(),
                device: self.device_facts(),
                boot: boot.clone(),
                failures: self.failures,
                offline: 0,
                now: 0,
            };
            self.client = Some((settings.clone(), client));
        }
        let auth = match &settings.token_file {
            None => Auth(None),
            Some(file) => match read_token(&self.svc.paths.data(), file, settings.token_kind) {
                Ok(auth) => auth,
                Err(why) => return self.failed(&settings, why, random),
            },
        };
        let device = self.device_facts();
        // A server may quote the token back in an error answer: it is not logged or shown.
        // The transport redacts what it quotes before cutting it; this is for the rest.
        let secret = auth.secret().map(str::to_owned);
        let (_, client) = self.client.as_mut().expect("built above");
        client.ddi.set_auth(auth);
        client.failures = self.failures;
        client.device = device;
        client.boot = boot;
        client.now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut round: Round = client.round(random);
        if let Some(secret) = &secret {
            for p in &mut round.problems {
                *p = p.replace(secret.as_str(), transport::REDACTED);
            }
        }
        for p in &mut round.problems {
            *p = bounded(std::mem::take(p), MAX_PROBLEM);
        }
        if !round.reboot {
            // Held from an install until its reboot is requested; a round that asks
            // for none must not leave the API refusing jobs (409) until a restart.
            client.installer.hold = None;
        }
        self.failures = client.failures;
        let ok = client.failures == 0;
        for p in &round.problems {
            log::warn!("hawkBit client: {p}");
        }
        let outcome = if ok && round.problems.is_empty() {
            "ok".to_owned()
        } else {
            bounded(round.problems.join("; "), MAX_PROBLEM)
        };
        self.publish(
            Some(&settings),
            Some(LastPoll {
                time: crate::now_rfc3339(),
                ok,
                outcome,
            }),
        );
        Turn {
            sleep: round.sleep,
            reboot: round.reboot,
        }
    }

    /// After an install: reboot as `POST /api/update?reboot=true` does, then give the
    /// job's slot back (should the reboot not come).
    pub fn reboot(&mut self) {
        let hold = self
            .client
            .as_mut()
            .and_then(|(_, c)| c.installer.hold.take());
        log::info!(target: kmsg_log::NOTICE, "hawkBit client: update installed, rebooting");
        update::reboot_later(self.svc.applier.system.as_ref(), "hawkBit install");
        drop(hold);
    }
}

/// A random number for jitter and back-off.
pub fn random() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source works");
    u64::from_le_bytes(b)
}

/// The poller's thread: turns for ever, sleeping what each asks (cut short when a
/// config is applied or the slot is marked good).
pub fn run<C: Connect>(mut poller: Poller<C>) {
    let wake = Arc::clone(&poller.svc);
    let mut seen = wake.update_client_wake.seen();
    loop {
        let turn = poller.turn(random());
        if turn.reboot {
            poller.reboot();
        }
        wake.update_client_wake.wait(&mut seen, turn.sleep);
    }
}

/// Starts the poller's thread.
pub fn spawn(svc: &Arc<Service>) -> std::io::Result<()> {
    let connect = RealConnect {
        ca_bundle: svc.paths.under(transport::CA_BUNDLE),
        timeouts: transport::Timeouts::default(),
    };
    let poller = Poller::new(Arc::clone(svc), connect);
    std::thread::Builder::new()
        .name("hawkbit".into())
        .spawn(move || run(poller))
        .map(drop)
}
