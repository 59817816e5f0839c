//! The provisioning API's wire contract (userspace/README.md, "HTTP API"), in one place:
//! the service (`atomix-provision`) answers with these types, `atomixctl` and the QEMU
//! harness read them, and the web console is handed the constants by the service
//! ([`Contract`]) rather than repeating them.
//!
//! | module | holds |
//! |---|---|
//! | [`routes`] | the route paths and the port |
//! | [`headers`] | the authentication headers |
//! | [`media_types`] | the body types clients send |
//! | [`limits`] | body sizes and the nonce lifetime |
//! | [`signing`] | the SSHSIG namespace and the exact signed message |
//! | [`types`] | request and response bodies, jobs and their events |
//! | [`contract`] | the constants as the web console receives them |
//! | [`discovery`] | the DNS-SD service a device announces on the LAN: type, instance name, TXT keys |
//!
//! Everything here is data and pure functions: no HTTP client or server, so that the
//! static aarch64 service, the laptop CLI and the test harness all link it cheaply.

pub mod contract;
pub mod discovery;
pub mod signing;
pub mod types;

pub use contract::Contract;
pub use signing::{hex, sha256_hex, signed_message, signed_message_for_digest, NAMESPACE};
pub use types::{
    Accepted, ErrorBody, Event, FactoryReset, Health, ImportError, Invalid, Job, JobKind, JobList,
    JobResult, JobState, LastPoll, Level, Nonce, Origin, Problem, Rollback, RollbackState,
    ServerAction, UpdateServer, Validated,
};

/// Route paths. Every route is under `/api/`; the console is served at `/`.
pub mod routes {
    /// The port the service listens on (derived listen addresses; `--port` overrides it).
    pub const PORT: u16 = 8080;

    /// `GET`: [`crate::Health`].
    pub const HEALTH: &str = "/api/health";
    /// `GET`: a [`crate::Nonce`] to sign with.
    pub const NONCE: &str = "/api/nonce";
    /// `POST` a config or bundle: [`crate::Validated`] or 422 [`crate::Invalid`].
    pub const VALIDATE: &str = "/api/validate";
    /// `POST` a signed config or bundle: 202 [`crate::Accepted`] (an apply job).
    pub const CONFIG: &str = "/api/config";
    /// `POST` a signed RAUC bundle (`?reboot=true|false`): 202 [`crate::Accepted`] (an
    /// update job).
    pub const UPDATE: &str = "/api/update";
    /// `POST` a signed [`crate::FactoryReset`]: 202 [`crate::Accepted`] (a factory-reset
    /// job: `/data` is marked for wiping, the device unprovisioned and rebooted; the wipe
    /// completes early in the next boot).
    pub const FACTORY_RESET: &str = "/api/factory-reset";
    /// `GET`, signed over the empty body: the recent jobs with their events, newest first
    /// ([`crate::JobList`]). Signed because events name what a config does (host names,
    /// addresses, units, signers) and an unprovisioned device answers on its WAN port.
    pub const JOB_LIST: &str = "/api/jobs";
    /// `GET {JOBS}<id>`: a [`crate::Job`]. Job URLs are also handed out whole (202,
    /// 409, health), so clients rarely build one.
    pub const JOBS: &str = "/api/jobs/";

    /// A job's path: `/api/jobs/<id>`.
    pub fn job(id: &str) -> String {
        format!("{JOBS}{id}")
    }
}

/// The headers that authenticate a mutating request before any of its body is read
/// (lowercase: HTTP header names are case-insensitive, and `http`'s `HeaderName` is
/// lowercase).
pub mod headers {
    /// The nonce from [`crate::routes::NONCE`], used up by an accepted request.
    pub const NONCE: &str = "x-atomix-nonce";
    /// The body's SHA-256 in lowercase hex, signed with the nonce.
    pub const CONTENT_SHA256: &str = "x-atomix-content-sha256";
    /// Base64 of the whole armored `ssh-keygen -Y sign` output, newlines included.
    pub const SIGNATURE: &str = "x-atomix-signature";
}

/// The `Content-Type` of the bodies clients send. The service also takes `text/plain`
/// for config text and `application/x-gzip` for a compressed bundle.
pub mod media_types {
    /// `config.toml` text (to `/api/validate`, `/api/config`).
    pub const CONFIG: &str = "application/toml";
    /// A config bundle, uncompressed.
    pub const TAR: &str = "application/x-tar";
    /// A config bundle, gzip-compressed.
    pub const GZIP: &str = "application/gzip";
    /// A RAUC bundle (to `/api/update`).
    pub const UPDATE_BUNDLE: &str = "application/octet-stream";
    /// A JSON request body (a [`crate::FactoryReset`] to `/api/factory-reset`).
    pub const JSON: &str = "application/json";
}

/// What the service takes. A body past its limit is refused (413) from its
/// `Content-Length` before it is read, or as soon as it grows past it.
pub mod limits {
    use std::time::Duration;

    /// Largest `config.toml`, in bytes, plain or inside a bundle. A real config is a few
    /// KiB (the annotated example is under 8 KiB); the limit bounds what validating a
    /// hostile one costs (atomix-config's `benches/worst_inputs.rs`: its parse tree is the
    /// largest part).
    pub const CONFIG_TEXT_BYTES: u64 = 256 << 10;
    /// Largest config bundle, counted uncompressed (so a small gzip cannot expand past
    /// it), and so the largest body of `/api/config` and `/api/validate`; also the
    /// largest seed file read from a boot partition or USB stick.
    pub const CONFIG_BUNDLE_BYTES: u64 = 16 << 20;
    /// Largest RAUC bundle taken by `/api/update` (the image is a few hundred MiB).
    pub const UPDATE_BUNDLE_BYTES: u64 = 2 << 30;
    /// Largest body of `/api/factory-reset` (a [`crate::FactoryReset`] is 19 bytes).
    pub const FACTORY_RESET_BYTES: u64 = 1 << 10;
    /// How many jobs `GET /api/jobs` lists at most (newest first).
    pub const JOB_LIST_LEN: usize = 20;
    /// How long a nonce stays valid after it was issued.
    pub const NONCE_TTL: Duration = Duration::from_secs(120);

    /// A limit as people write it: `256 KiB`, `16 MiB`, `2 GiB` (bytes when it is not a
    /// whole number of KiB).
    pub fn describe(bytes: u64) -> String {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if bytes >= size && bytes.is_multiple_of(size) {
                return format!("{} {unit}", bytes / size);
            }
        }
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire values, literally: a change here changes what every deployed client
    /// sends or expects.
    #[test]
    fn wire_constants_are_what_clients_send() {
        assert_eq!(routes::PORT, 8080);
        assert_eq!(
            [
                routes::HEALTH,
                routes::NONCE,
                routes::VALIDATE,
                routes::CONFIG,
                routes::UPDATE,
                routes::FACTORY_RESET,
                routes::JOB_LIST
            ],
            [
                "/api/health",
                "/api/nonce",
                "/api/validate",
                "/api/config",
                "/api/update",
                "/api/factory-reset",
                "/api/jobs"
            ]
        );
        assert_eq!(
            routes::job("0123456789abcdef"),
            "/api/jobs/0123456789abcdef"
        );
        assert_eq!(
            [headers::NONCE, headers::CONTENT_SHA256, headers::SIGNATURE],
            [
                "x-atomix-nonce",
                "x-atomix-content-sha256",
                "x-atomix-signature"
            ]
        );
        assert_eq!(
            [
                media_types::CONFIG,
                media_types::TAR,
                media_types::GZIP,
                media_types::UPDATE_BUNDLE,
                media_types::JSON
            ],
            [
                "application/toml",
                "application/x-tar",
                "application/gzip",
                "application/octet-stream",
                "application/json"
            ]
        );
    }

    #[test]
    fn limits_are_exact() {
        assert_eq!(limits::CONFIG_TEXT_BYTES, 262_144);
        assert_eq!(limits::CONFIG_BUNDLE_BYTES, 16_777_216);
        assert_eq!(limits::UPDATE_BUNDLE_BYTES, 2_147_483_648);
        assert_eq!(limits::NONCE_TTL.as_secs(), 120);
        assert_eq!(limits::FACTORY_RESET_BYTES, 1024);
        assert_eq!(limits::JOB_LIST_LEN, 20);
        assert_eq!(limits::describe(limits::CONFIG_TEXT_BYTES), "256 KiB");
        assert_eq!(limits::describe(limits::CONFIG_BUNDLE_BYTES), "16 MiB");
        assert_eq!(limits::describe(limits::UPDATE_BUNDLE_BYTES), "2 GiB");
        assert_eq!(limits::describe(1536), "1536 bytes");
        assert_eq!(limits::describe(3 << 10), "3 KiB");
    }
}
