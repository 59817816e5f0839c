//! Applying a config: the plan as data ([`plan_sync`]: which files go where, which
//! actions run, grouped by [`Step`]), executed in one place ([`Executor`]), and the apply
//! job around it ([`Applier`]): validate, render, persist a generation, sync the live
//! system, switch `current`, mark the slot good; on a failed step, roll back to the
//! previous generation (or to the unprovisioned defaults).
//!
//! Live paths (under `--root`):
//!
//! ```text
//! rendered/quadlet/rootful/*      etc/containers/systemd/
//! rendered/quadlet/rootless/*     etc/containers/systemd/users/<admin uid>/
//! rendered/networkd/*             etc/systemd/network/
//! rendered/dnsmasq/atomix.conf    etc/dnsmasq.d/atomix-lan.conf (replaces the image's default)
//! rendered/chrony/atomix.sources  etc/chrony/sources.d/atomix.sources
//! rendered/timezone               etc/timezone (and etc/localtime -> /usr/share/zoneinfo/<zone>)
//! rendered/nftables/atomix.nft    etc/nftables.d/atomix.nft (loaded with nft -f)
//! rendered/hostname               etc/hostname (and hostnamectl)
//! rendered/authorized_keys        etc/ssh/authorized_keys/admin
//! rendered/systemd/atomix-update.* etc/systemd/system/ (the RAUC update timer, enabled)
//! bundle apps/<container>/...     data/apps/<container>/...
//! ```
//!
//! The service removes only files it wrote: their list (`/run/atomix/owned-files.json`)
//! lives exactly as long as `/etc` does on the tmpfs overlay root. A file of the image
//! that a rendered one replaces (the default dnsmasq LAN config) is saved under
//! `/run/atomix/originals/` first and put back instead of being removed.
//!
//! | file | holds |
//! |---|---|
//! | `step.rs` | [`Step`]: the steps in order, the names of events and failpoints |
//! | `plan.rs` | the planner: [`plan_sync`] and [`live_path`], plans as data |
//! | `executor.rs` | the [`Executor`] of plans and the [`Owned`] record of what it wrote |
//! | `generation.rs` | a stored generation read back: [`load_generation`], [`lan_address`], [`config_of`] |
//! | `job.rs` | the job runner [`Applier`]: import with rollback, re-apply, crash recovery |

mod executor;
#[cfg(test)]
pub(crate) mod fixture;
mod generation;
mod job;
mod plan;
mod step;

pub use executor::{Executor, Owned, CONTAINER_WRITABLE};
pub use generation::{config_of, lan_address, load_generation, Loaded};
pub use job::{Applier, Outcome};
pub use plan::{live_path, plan_sync, Act, Admin, Desired, Op, StepPlan};
pub use step::Step;
