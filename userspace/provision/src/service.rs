//! The service's shared state: paths, the applier, the job tracker, nonces, what the
//! health endpoint reports, and the listen addresses the listener follows.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use atomix_config::generations::{Origin, Store};
use boot_state::BootRecord;
use tokio::sync::watch;

use crate::announce::{self, Announcer, Publication};
use crate::apply::{Applier, Outcome};
use crate::auth::{NonceStore, PublicKey};
use crate::input::Accepted;
use crate::jobs::{Busy, JobHandle, JobKind, Tracker};
use crate::paths::Paths;
use crate::update::{self, UploadSlot};

/// The console and API port.
pub use atomix_api::routes::PORT;

/// A seed that was refused or failed to apply, as health reports it.
pub use atomix_api::ImportError;

/// What health reports besides the basics.
#[derive(Debug, Default)]
pub struct Status {
    pub last_import_error: Option<ImportError>,
    /// Addresses the listeners are bound to.
    pub listening: Vec<String>,
    /// The hawkBit client's server, last poll and action (`crate::hawkbit::poller`).
    pub update_server: Option<atomix_api::UpdateServer>,
}

/// Everything the API handlers and the boot flow share.
#[derive(Debug)]
pub struct Service {
    pub paths: Paths,
    pub applier: Applier,
    pub tracker: Arc<Tracker>,
    pub nonces: Mutex<NonceStore>,
    pub status: Mutex<Status>,
    pub boot: Option<BootRecord>,
    /// `--listen`: fixed addresses that never narrow.
    pub fixed_listen: Option<Vec<SocketAddr>>,
    /// `--usb-dir`: a directory standing in for USB media.
    pub usb_dir: Option<PathBuf>,
    /// The port of the derived listen addresses ([`PORT`] unless `--port`).
    pub port: u16,
    /// One authenticated body (a config or a bundle upload) at a time.
    pub upload_slot: UploadSlot,
    /// `/api/validate` checks running at once (off the async runtime)...
    pub validations: Arc<tokio::sync::Semaphore>,
    /// ...and requests waiting for one; past this they are answered 503 at once.
    pub validation_waiters: Arc<tokio::sync::Semaphore>,
    /// `/proc/sys/kernel/random/boot_id`: which boot this is (the hawkBit client tells
    /// an install of this boot from one before the reboot by it).
    pub boot_id: String,
    /// Signalled when a config was applied or the slot marked good: the hawkBit client
    /// looks again at once.
    pub update_client_wake: crate::hawkbit::poller::Wake,
    /// The booted slot was marked good by an apply of this service's run.
    slot_good: AtomicBool,
    listen_tx: watch::Sender<Vec<SocketAddr>>,
    /// Publishes the device over multicast DNS ([`crate::announce`]).
    announcer: Arc<dyn Announcer>,
    /// What was published last; held while publishing, so one publication is made at
    /// a time (start, the naming thread, imports, a factory reset).
    announced: Mutex<Announced>,
}

/// The announcement's state in [`Service`].
#[derive(Debug, Default)]
struct Announced {
    /// What was published last (`None`: nothing, or the last publication failed).
    last: Option<Publication>,
    /// Withdrawn at shutdown: nothing is published again (the naming thread may still
    /// be running).
    withdrawn: bool,
}

/// This boot's id; a fixed stand-in where the kernel has none to give.
fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown-boot".into())
}

impl Service {
    pub fn new(
        applier: Applier,
        announcer: Arc<dyn Announcer>,
        fixed_listen: Option<Vec<SocketAddr>>,
        usb_dir: Option<PathBuf>,
    ) -> Arc<Service> {
        Service::with_port(applier, announcer, fixed_listen, usb_dir, PORT)
    }

    /// [`Service::new`] with the derived addresses on `port`.
    pub fn with_port(
        applier: Applier,
        announcer: Arc<dyn Announcer>,
        fixed_listen: Option<Vec<SocketAddr>>,
        usb_dir: Option<PathBuf>,
        port: u16,
    ) -> Arc<Service> {
        let paths = applier.paths.clone();
        let boot = match boot_state::read_record::<BootRecord>(&paths.boot_record()) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("{e}");
                None
            }
        };
        let tracker = Tracker::new(paths.jobs());
        let (listen_tx, _) = watch::channel(Vec::new());
        let svc = Arc::new(Service {
            paths,
            applier,
            tracker,
            nonces: Mutex::new(NonceStore::default()),
            status: Mutex::new(Status::default()),
            boot,
            fixed_listen,
            usb_dir,
            port,
            upload_slot: UploadSlot::default(),
            validations: Arc::new(tokio::sync::Semaphore::new(crate::api::VALIDATIONS)),
            validation_waiters: Arc::new(tokio::sync::Semaphore::new(
                crate::api::VALIDATION_WAITERS,
            )),
            boot_id: read_boot_id(),
            update_client_wake: Default::default(),
            slot_good: AtomicBool::new(false),
            listen_tx,
            announcer,
            announced: Mutex::default(),
        });
        svc.listen_tx.send_replace(svc.desired_listen());
        svc
    }

    pub fn store(&self) -> Store {
        Store::new(self.paths.config_store())
    }

    pub fn current(&self) -> Option<u64> {
        self.store().current().ok().flatten()
    }

    pub fn provisioned(&self) -> bool {
        self.current().is_some()
    }

    /// Unprovisioned: every address (WAN and LAN), port 8080 (or `--port`). Provisioned: the LAN
    /// gateway address only. `--listen` overrides both.
    pub fn desired_listen(&self) -> Vec<SocketAddr> {
        if let Some(fixed) = &self.fixed_listen {
            return fixed.clone();
        }
        let lan = self
            .current()
            .and_then(|n| crate::apply::lan_address(&self.store(), n));
        let ip = lan.unwrap_or(Ipv4Addr::UNSPECIFIED);
        vec![SocketAddr::V4(SocketAddrV4::new(ip, self.port))]
    }

    /// Re-derives the listen addresses (after a rollback found at start, for instance).
    pub fn refresh_listen(&self) {
        self.listen_tx.send_replace(self.desired_listen());
    }

    pub fn subscribe_listen(&self) -> watch::Receiver<Vec<SocketAddr>> {
        self.listen_tx.subscribe()
    }

    /// The trusted keys: the image's provisioning keys and, once provisioned, the
    /// current config's admin keys. Read on every request, so a new generation's keys
    /// count at once.
    pub fn trusted_keys(&self) -> Vec<PublicKey> {
        let mut keys = Vec::new();
        let files = [
            Some(self.paths.provisioning_keys()),
            self.current()
                .map(|n| self.store().path(n).join("authorized_keys")),
        ];
        for path in files.into_iter().flatten() {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    keys.extend(crate::auth::parse_keys(&text, &path.display().to_string()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::error!("cannot read {}: {e}", path.display()),
            }
        }
        keys
    }

    /// A nonce for a client (`owner`: its peer, for the per-peer quota).
    pub fn issue_nonce(&self, owner: crate::auth::Owner) -> String {
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .issue_for(owner, Instant::now())
    }

    /// Starts an import job; the work runs on its own thread.
    pub fn start_import(
        self: &Arc<Self>,
        accepted: Accepted,
        origin: Origin,
        signer: Option<String>,
    ) -> Result<String, Busy> {
        let job = self.tracker.start(origin, self.current())?;
        let id = job.id.clone();
        let svc = Arc::clone(self);
        std::thread::spawn(move || svc.import(job, accepted, origin, signer));
        Ok(id)
    }

    /// Starts an update job for a verified bundle; the work runs on its own thread. When
    /// a job runs already, the bundle is dropped (and so removed).
    pub fn start_update(self: &Arc<Self>, request: update::Request) -> Result<String, Busy> {
        let current = self.current();
        let job = self
            .tracker
            .start_kind(JobKind::Update, Origin::Api, current)?;
        let id = job.id.clone();
        let svc = Arc::clone(self);
        std::thread::spawn(move || {
            let a = &svc.applier;
            let trusted_now = || svc.trusted_keys();
            update::run(
                job,
                a.system.as_ref(),
                &a.failpoints,
                request,
                current,
                &trusted_now,
            )
        });
        Ok(id)
    }

    /// Starts a factory-reset job (`crate::reset`); the work runs on its own thread.
    pub fn start_factory_reset(self: &Arc<Self>, signer: String) -> Result<String, Busy> {
        let current = self.current();
        let job = self
            .tracker
            .start_kind(JobKind::FactoryReset, Origin::Api, current)?;
        let id = job.id.clone();
        let svc = Arc::clone(self);
        std::thread::spawn(move || {
            let a = &svc.applier;
            // Unprovisioned until the reboot: announced as such (on both ports, under
            // the MAC-derived name), as health reports it.
            let unprovisioned = || {
                svc.announce();
            };
            crate::reset::run(
                job,
                a.system.as_ref(),
                &a.failpoints,
                &svc.paths,
                &signer,
                current,
                &unprovisioned,
            )
        });
        Ok(id)
    }

    /// Runs an import job on this thread; narrows the listener on success.
    pub fn import(
        &self,
        job: JobHandle,
        accepted: Accepted,
        origin: Origin,
        signer: Option<String>,
    ) -> Outcome {
        let outcome = self.applier.import(job, accepted, origin, signer);
        if outcome.succeeded() {
            self.listen_tx.send_replace(self.desired_listen());
            // Mark-good is the import's last step: success means the slot is good. It
            // wakes the hawkBit client, which follows the config just applied (started,
            // rebuilt or stopped) and reports an update that this made good.
            self.note_marked_good();
        }
        // Provisioned now, or under another host name: a failed job changed nothing,
        // and then this finds the publication as it was.
        self.announce();
        outcome
    }

    /// What the device announces on the local network now ([`crate::announce`]): the
    /// current generation's host name once provisioned, else the name made from the WAN
    /// port's MAC address; the boot record's build id and slot; the interfaces.
    pub fn publication(&self) -> Publication {
        let port = match &self.fixed_listen {
            Some(fixed) => fixed.first().map_or(self.port, SocketAddr::port),
            None => self.port,
        };
        announce::publication(&self.paths, self.boot.as_ref(), port)
    }

    /// The WAN port's MAC address, once its driver has made the interface.
    fn wan_mac(&self) -> Option<String> {
        std::fs::read_to_string(announce::mac_path(&self.paths)).ok()
    }

    /// Brings the announcement up to date (at start, after an import, and from
    /// [`Service::announce_in_background`]'s thread): publishes only when it differs from
    /// what was published last. A failure is logged and the next call tries again: the
    /// device works without being found by name. `false` when it failed.
    pub fn announce(&self) -> bool {
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.publication();
        if announced.withdrawn || announced.last.as_ref() == Some(&p) {
            return true;
        }
        match self.announcer.publish(&p) {
            Ok(()) => {
                log::info!(
                    "announced on the local network as {} ({}, host {}.local, {}, on {})",
                    p.announcement.name,
                    atomix_api::discovery::SERVICE_TYPE,
                    p.host,
                    if p.announcement.provisioned {
                        "provisioned"
                    } else {
                        "unprovisioned"
                    },
                    p.interfaces.join(" and ")
                );
                announced.last = Some(p);
                true
            }
            Err(e) => {
                log::warn!("{:#}", anyhow::Error::new(e));
                announced.last = None;
                false
            }
        }
    }

    fn announcement_withdrawn(&self) -> bool {
        self.announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .withdrawn
    }

    /// Takes the announcement back (goodbye packets), when the service stops; nothing
    /// is announced after it.
    pub fn withdraw(&self) {
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        announced.withdrawn = true;
        if announced.last.take().is_some() {
            if let Err(e) = self.announcer.withdraw() {
                log::warn!("{:#}", anyhow::Error::new(e));
            }
        }
    }

    /// Announces the device from a thread of its own, off the way to listening, and
    /// keeps the announcement up to date until it is withdrawn. The service can start
    /// before udev has loaded the WAN port's driver, and then the unprovisioned name
    /// lacks its MAC digits: until the interface shows up the thread looks every 2 s
    /// (warning after 5 min). A publication that failed (UDP 5353 taken, say) is tried
    /// again after 2 s, doubling to a minute; otherwise the state is looked at every
    /// 30 s ([`Service::announce`] publishes only a change).
    pub fn announce_in_background(self: &Arc<Self>) {
        let svc = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("announce".into())
            .spawn(move || {
                use std::time::Duration;
                let started = Instant::now();
                let mut warned = false;
                let mut failures = 0u32;
                loop {
                    failures = if svc.announce() { 0 } else { failures + 1 };
                    if svc.announcement_withdrawn() {
                        return;
                    }
                    // Only the unprovisioned name is made from the MAC address.
                    let mac_missing = svc.wan_mac().is_none() && !svc.provisioned();
                    if mac_missing && !warned && started.elapsed() > Duration::from_secs(300) {
                        warned = true;
                        log::warn!(
                            "{} did not appear within 5 min: announced as {}",
                            announce::mac_path(&svc.paths).display(),
                            svc.publication().announcement.name
                        );
                    }
                    let wait = if failures > 0 {
                        Duration::from_secs(2 << (failures - 1).min(5)).min(Duration::from_secs(60))
                    } else if mac_missing {
                        Duration::from_secs(2)
                    } else {
                        Duration::from_secs(30)
                    };
                    std::thread::sleep(wait);
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot announce the device on the local network: {e}");
        }
    }

    pub fn record_import_error(&self, error: ImportError) {
        let lines: Vec<String> = error.errors.iter().map(ToString::to_string).collect();
        log::error!(
            "{} seed {} refused:\n{}",
            match error.origin {
                Origin::Boot => "boot",
                Origin::Usb => "USB",
                Origin::Api => "API",
            },
            error.location,
            lines.join("\n")
        );
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_import_error = Some(error);
    }

    /// An apply of this run ended with the slot marked good (its last step): the
    /// hawkBit client is woken to follow the config and report the update.
    pub fn note_marked_good(&self) {
        self.slot_good.store(true, Ordering::Release);
        self.wake_update_client();
    }

    pub fn slot_marked_good(&self) -> bool {
        self.slot_good.load(Ordering::Acquire)
    }

    /// Cuts the hawkBit client's sleep short (a config was applied, or the slot was
    /// marked good).
    pub fn wake_update_client(&self) {
        self.update_client_wake.notify();
    }

    pub fn update_server(&self) -> Option<atomix_api::UpdateServer> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update_server
            .clone()
    }

    pub fn set_update_server(&self, server: Option<atomix_api::UpdateServer>) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update_server = server;
    }

    pub fn set_listening(&self, addrs: Vec<String>) {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listening = addrs;
    }
}
