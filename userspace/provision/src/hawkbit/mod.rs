//! The hawkBit DDI client: with `[update.hawkbit]` the device polls an update server
//! (Eclipse hawkBit, or goosebit, which speaks the same Direct Device Integration API),
//! reports its attributes, and installs the RAUC bundle of a deployment assigned to it,
//! reporting `proceeding` on the way and `success` or `failure` once the reboot has
//! decided.
//!
//! | module | holds |
//! |---|---|
//! | [`wire`] | the DDI JSON documents, read tolerantly |
//! | [`schedule`] | the server's `HH:MM:SS` sleep, jitter, capped back-off |
//! | [`decide`] | the decisions, pure: poll plan, deployment, hashes, cancel, how an action ended |
//! | [`record`] | the action in progress, persisted under `/data/atomix/hawkbit/` |
//! | [`transport`] | the HTTP behind a narrow trait: `ureq` for real, a scripted fake for tests |
//! | [`client`] | one round, carrying the decisions out |
//! | [`poller`] | the thread in the service: config, token, facts, installs, health |
//!
//! An action's life: taken on (record saved, `Downloading`), downloaded into
//! `/data/rauc/hawkbit/` and checked against the server's SHA-256/SHA-1, `Installing`
//! (from here on a cancel is refused: the other slot is being written), `Installed`
//! (reboot), then in the next boot `success` once that slot is marked good after its
//! config applied, or `failure` when the device is back on the old slot; a result the
//! server has not acknowledged yet stays in the record (`Reporting`) and is sent again
//! every round, to the server it was taken from only (a record of another server,
//! tenant or controller id is dropped with a warning), until the server refuses it for
//! good (a 4xx other than 401/403/408/429) or a week has passed; it never keeps a new
//! deployment out. A power cut while downloading restarts the download; one while
//! installing ends in `failure` saying so, unless the slot being installed (kept in the
//! record) is the one that boots: RAUC had finished, so it is an installed action.
//!
//! The transport speaks HTTP and HTTPS (rustls with ring, trusting the image's CA
//! bundle); it follows no redirect and no link off the configured server.

pub mod client;
pub mod decide;
pub mod poller;
pub mod record;
pub mod schedule;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod poller_tests;
#[cfg(test)]
mod tests;
