//! The AtomixOS provisioning service behind `first-boot.service` (DESIGN.md section 5).
//!
//! * [`paths`] — every filesystem path the service touches, under one `--root`.
//! * [`system`] — the side-effect trait (systemctl, nft, rauc, mount...): real, record, fake.
//! * [`failpoints`] — `ATOMIX_FAILPOINTS` (the `failpoints` crate, re-exported: the
//!   [`apply::Applier`] holds them): make a chosen apply step fail, sleep or crash.
//! * [`input`] — request bodies and seeds to a checked config (or positioned errors).
//! * [`apply`] — applying a config: the step names, the planner (plans as data), the
//!   executor, stored generations read back, and the job runner with rollback.
//! * [`restore`] — the current generation's files put back at boot, before the services
//!   that read them start.
//! * [`jobs`] — the single-flight job tracker (config and update jobs), persisted under
//!   `/data/config/jobs/`.
//! * [`update`] — RAUC bundles pushed over the API: streamed to disk, installed by a job.
//! * [`nbd`] — the NBD device of a streamed bundle kept alive through udev's probing.
//! * [`auth`] — nonces and SSHSIG verification of requests.
//! * [`seed`] — finding a seed on `/boot` and on USB mass storage.
//! * [`boot_flow`] — what to do at boot (a decision table) and doing it.
//! * [`api`] — the axum router.
//! * [`console`] — the bootstrap web console at `/` (assets compiled in from `web/`).
//! * [`listen`] — the listeners, narrowed to the LAN address once provisioned.
//! * [`service`] — the shared state that ties them together.
//! * [`announce`] — the `_atomix._tcp` DNS-SD service the service answers for over multicast DNS.
//! * [`deadline`] — the mark-good deadline: a provisioned boot whose apply stalls reboots.
//! * [`hawkbit`] — the hawkBit DDI client (`[update.hawkbit]`): decisions, record, transport.

pub mod announce;
pub mod api;
pub mod apply;
pub mod auth;
pub mod beneath;
pub mod boot_flow;
pub mod console;
pub mod deadline;
pub mod hawkbit;
pub use failpoints;
pub mod input;
pub mod jobs;
pub mod listen;
pub mod nbd;
pub mod paths;
pub mod reset;
pub mod restore;
pub mod seed;
pub mod service;
pub mod system;
pub mod update;

/// Now, RFC 3339 in UTC (seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
