//! Request and response bodies. JSON field names are snake_case, enum values
//! kebab-case, exactly as the service has always sent them (the tests of this module
//! pin the bytes).
//!
//! None of these types denies unknown fields, on purpose. They are written by the
//! service and read by clients that may be older than the device (`atomixctl` on an
//! operator's laptop, the QEMU harness): a field added by a newer service must not make
//! an older client fail to read its answer. The service itself reads back only what it
//! wrote, never a client's JSON (job records under `/data/config/jobs/`, which a newer
//! build may have written before an A/B fallback); what clients send is config.toml or
//! a tar bundle, checked by `atomix-config` with `deny_unknown_fields` on every config
//! type. Enum values are still closed: a new job state or step level is a contract
//! change.
//!
//! The one body the service reads from clients as JSON, [`FactoryReset`], is the
//! exception: it denies unknown fields, since what a client signs must mean exactly
//! what the service does with it.
//!
//! Field order is the order on the wire. Bodies the service used to build as JSON maps
//! ([`Nonce`], [`Validated`], [`Invalid`], [`Accepted`], [`ErrorBody`]) keep those maps'
//! sorted order.

use serde::{Deserialize, Serialize};

/// Where a config came from (a job's `origin`; also `source.json` of a generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Boot,
    Usb,
    Api,
}

/// One problem with a config, as the API reports it. Bundle refusals have no line or
/// column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "config.toml:{l}:{c}: {}: {}", self.path, self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A seed that was refused or failed to apply, as health reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportError {
    pub origin: Origin,
    /// Where the seed was found.
    pub location: String,
    pub time: String,
    pub errors: Vec<Problem>,
    /// The apply job, when the seed was valid but its apply failed.
    pub job: Option<String>,
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`: the service answers.
    pub status: String,
    pub provisioned: bool,
    pub build_id: Option<String>,
    /// `a` or `b`: the slot the device booted from.
    pub slot: Option<String>,
    /// The current config generation.
    pub generation: Option<u64>,
    pub last_import_error: Option<ImportError>,
    /// Addresses the listeners are bound to (`ip:port`).
    pub listening: Vec<String>,
    /// The running job's path (`/api/jobs/<id>`).
    pub job: Option<String>,
    /// The most recent update job's path (of this boot or an earlier one): what the
    /// last pushed bundle came to. Absent from older devices' answers.
    #[serde(default)]
    pub last_update: Option<String>,
    /// The hawkBit server the device polls (`[update.hawkbit]` in the current config).
    /// Absent from older devices' answers and from devices without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_server: Option<UpdateServer>,
}

/// `update_server` of [`Health`]: the fleet server, the last poll, the action in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateServer {
    /// The server's base URL, as configured.
    pub url: String,
    /// The device's id on the server.
    pub controller_id: String,
    /// None until the first poll of this service's run.
    pub last_poll: Option<LastPoll>,
    /// The deployment the device has taken on, until the server has its result.
    pub action: Option<ServerAction>,
}

/// How the last poll went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPoll {
    /// RFC 3339, UTC.
    pub time: String,
    /// The server answered the poll.
    pub ok: bool,
    /// What came of it (`ok`, or what went wrong, for the operator).
    pub outcome: String,
}

/// A server action in progress on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAction {
    /// The server's action id.
    pub id: String,
    /// The version the server names the software by.
    pub version: String,
    /// `downloading`, `installing`, `installed` (waiting for the reboot and the new
    /// slot's mark-good), `reporting` (the result waits for the server to take it).
    /// An open set: a client shows what it does not know as it is.
    pub state: String,
    /// With `reporting`: the result being reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
}

/// `GET /api/nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nonce {
    /// Seconds until the nonce expires.
    pub expires_in: u64,
    /// 64 lowercase hex characters.
    pub nonce: String,
}

/// `POST /api/validate`, 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validated {
    /// Always `true` (a 422 [`Invalid`] says `false`).
    pub valid: bool,
    pub warnings: Vec<Problem>,
}

/// 422 of `POST /api/validate` and `POST /api/config`: every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalid {
    pub error: String,
    pub errors: Vec<Problem>,
    /// Always `false`.
    pub valid: bool,
}

/// 202 of `POST /api/config` and `POST /api/update` (the job's path is also in
/// `Location`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
    /// `/api/jobs/<id>`.
    pub job: String,
}

/// Every refusal: what to fix, and for a 409 caused by a running job, that job's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    /// Succeeded or failed: the job will not change again.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// What a job does. Jobs written before kinds existed are config jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Applies a config (`POST /api/config`, a seed, the boot re-apply).
    #[default]
    Config,
    /// Installs a RAUC bundle pushed with `POST /api/update`.
    Update,
    /// Marks `/data` for wiping and reboots (`POST /api/factory-reset`).
    FactoryReset,
}

/// One step's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: String,
    pub step: String,
    pub level: Level,
    pub message: String,
}

/// The outcome of a finished job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The generation now current (on success: the new one).
    pub generation: Option<u64>,
    /// The step that failed.
    pub failed_step: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackState {
    None,
    Completed,
    Failed,
}

/// Whether (and to what) a failed job rolled back. `generation` null with `completed`
/// means back to the unprovisioned defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub state: RollbackState,
    pub generation: Option<u64>,
}

/// `/data/config/jobs/<id>.json`, and the body of `GET /api/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub kind: JobKind,
    pub state: JobState,
    pub origin: Origin,
    pub created: String,
    pub events: Vec<Event>,
    pub result: Option<JobResult>,
    pub rollback: Rollback,
    /// `current` when the job started, the rollback target.
    pub previous_generation: Option<u64>,
    /// The generation this job wrote, once persisted.
    pub staged_generation: Option<u64>,
}

/// `POST /api/factory-reset`: the signed request to erase `/data`. Its one field is the
/// word the operator typed to confirm, which must be [`FactoryReset::CONFIRM`]: the
/// signed bytes say what they are for, so a signature made for another body (a config,
/// the empty body of `GET /api/jobs`) never starts a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactoryReset {
    pub confirm: String,
}

impl FactoryReset {
    /// The confirmation word.
    pub const CONFIRM: &'static str = "erase";

    /// The request clients send: `{"confirm":"erase"}`.
    pub fn confirmed() -> FactoryReset {
        FactoryReset {
            confirm: FactoryReset::CONFIRM.into(),
        }
    }

    /// The exact body clients send and sign: [`FactoryReset::confirmed`] serialised (a
    /// test checks that they agree).
    pub const BODY: &'static [u8] = br#"{"confirm":"erase"}"#;
}

/// `GET /api/jobs`: the most recent jobs, newest first, each whole (events included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes `value`, checks the exact text, and reads it back.
    fn wire<T>(value: &T, text: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(value).unwrap(), text);
        assert_eq!(&serde_json::from_str::<T>(text).unwrap(), value);
    }

    fn problem() -> Problem {
        Problem {
            line: Some(3),
            column: Some(5),
            path: "device.hostname".into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn health_on_the_wire() {
        wire(
            &Health {
                status: "ok".into(),
                provisioned: true,
                build_id: Some("b1".into()),
                slot: Some("a".into()),
                generation: Some(2),
                last_import_error: Some(ImportError {
                    origin: Origin::Usb,
                    location: "sda1:/config.toml".into(),
                    time: "t".into(),
                    errors: vec![problem()],
                    job: None,
                }),
                listening: vec!["192.168.100.1:8080".into()],
                job: Some("/api/jobs/0123456789abcdef".into()),
                last_update: Some("/api/jobs/fedcba9876543210".into()),
                update_server: None,
            },
            r#"{"status":"ok","provisioned":true,"build_id":"b1","slot":"a","generation":2,"last_import_error":{"origin":"usb","location":"sda1:/config.toml","time":"t","errors":[{"line":3,"column":5,"path":"device.hostname","message":"bad"}],"job":null},"listening":["192.168.100.1:8080"],"job":"/api/jobs/0123456789abcdef","last_update":"/api/jobs/fedcba9876543210"}"#,
        );
    }

    #[test]
    fn the_update_server_on_the_wire() {
        wire(
            &UpdateServer {
                url: "https://updates.example.com".into(),
                controller_id: "edge-042".into(),
                last_poll: Some(LastPoll {
                    time: "2026-12-03T17:00:00Z".into(),
                    ok: true,
                    outcome: "ok".into(),
                }),
                action: Some(ServerAction {
                    id: "5".into(),
                    version: "2.0.0".into(),
                    state: "reporting".into(),
                    success: Some(true),
                }),
            },
            r#"{"url":"https://updates.example.com","controller_id":"edge-042","last_poll":{"time":"2026-12-03T17:00:00Z","ok":true,"outcome":"ok"},"action":{"id":"5","version":"2.0.0","state":"reporting","success":true}}"#,
        );
        wire(
            &ServerAction {
                id: "5".into(),
                version: "2.0.0".into(),
                state: "downloading".into(),
                success: None,
            },
            r#"{"id":"5","version":"2.0.0","state":"downloading"}"#,
        );
        // A device with a server: an older client reads its health all the same (the
        // field is unknown to it), and this client reads an older device's.
        let text = r#"{"status":"ok","provisioned":true,"build_id":"b1","slot":"a","generation":2,"last_import_error":null,"listening":[],"job":null,"last_update":null,"update_server":{"url":"http://10.0.2.2:60053","controller_id":"edge-043","last_poll":null,"action":null}}"#;
        let health: Health = serde_json::from_str(text).unwrap();
        assert_eq!(
            health.update_server.as_ref().unwrap().controller_id,
            "edge-043"
        );
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct OlderHealth {
            status: String,
            last_update: Option<String>,
        }
        assert!(serde_json::from_str::<OlderHealth>(text).is_ok());
    }

    #[test]
    fn small_bodies_on_the_wire() {
        wire(
            &Nonce {
                expires_in: 120,
                nonce: "ab".into(),
            },
            r#"{"expires_in":120,"nonce":"ab"}"#,
        );
        wire(
            &Validated {
                valid: true,
                warnings: vec![],
            },
            r#"{"valid":true,"warnings":[]}"#,
        );
        wire(
            &Invalid {
                error: "the config is not valid".into(),
                errors: vec![Problem {
                    line: None,
                    column: None,
                    path: "../x".into(),
                    message: "refused".into(),
                }],
                valid: false,
            },
            r#"{"error":"the config is not valid","errors":[{"line":null,"column":null,"path":"../x","message":"refused"}],"valid":false}"#,
        );
        wire(
            &Accepted {
                id: "0123456789abcdef".into(),
                job: "/api/jobs/0123456789abcdef".into(),
            },
            r#"{"id":"0123456789abcdef","job":"/api/jobs/0123456789abcdef"}"#,
        );
        wire(
            &ErrorBody {
                error: "not found".into(),
                job: None,
            },
            r#"{"error":"not found"}"#,
        );
        wire(
            &ErrorBody {
                error: "another apply job is running".into(),
                job: Some("/api/jobs/0123456789abcdef".into()),
            },
            r#"{"error":"another apply job is running","job":"/api/jobs/0123456789abcdef"}"#,
        );
    }

    #[test]
    fn jobs_on_the_wire() {
        wire(
            &Job {
                id: "0123456789abcdef".into(),
                kind: JobKind::Update,
                state: JobState::Failed,
                origin: Origin::Api,
                created: "2026-01-01T10:00:00Z".into(),
                events: vec![Event {
                    time: "2026-01-01T10:00:01Z".into(),
                    step: "install".into(),
                    level: Level::Error,
                    message: "boom".into(),
                }],
                result: Some(JobResult {
                    generation: Some(2),
                    failed_step: Some("install".into()),
                    error: Some("boom".into()),
                }),
                rollback: Rollback {
                    state: RollbackState::None,
                    generation: None,
                },
                previous_generation: Some(2),
                staged_generation: None,
            },
            r#"{"id":"0123456789abcdef","kind":"update","state":"failed","origin":"api","created":"2026-01-01T10:00:00Z","events":[{"time":"2026-01-01T10:00:01Z","step":"install","level":"error","message":"boom"}],"result":{"generation":2,"failed_step":"install","error":"boom"},"rollback":{"state":"none","generation":null},"previous_generation":2,"staged_generation":null}"#,
        );
        let enums = serde_json::json!([
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            Level::Info,
            Level::Warning,
            Level::Error,
            JobKind::Config,
            JobKind::FactoryReset,
            RollbackState::Completed,
            RollbackState::Failed,
            Origin::Boot,
            Origin::Usb,
        ]);
        assert_eq!(
            enums.to_string(),
            r#"["queued","running","succeeded","failed","info","warning","error","config","factory-reset","completed","failed","boot","usb"]"#
        );
        assert!(JobState::Failed.is_finished() && !JobState::Running.is_finished());
    }

    #[test]
    fn job_files_from_before_kinds_read_as_config_jobs() {
        let old = r#"{"id":"0123456789abcdef","state":"succeeded","origin":"api","created":"t",
            "events":[],"result":null,"rollback":{"state":"none","generation":null},
            "previous_generation":null,"staged_generation":null}"#;
        let job: Job = serde_json::from_str(old).unwrap();
        assert_eq!(job.kind, JobKind::Config);
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["kind"], "config");
    }

    /// A newer service may add fields; an older client still reads the answer.
    #[test]
    fn unknown_fields_are_ignored() {
        let job: Job = serde_json::from_str(
            r#"{"id":"j","kind":"config","state":"running","origin":"boot","created":"t",
            "events":[{"time":"t","step":"s","level":"info","message":"m","progress":0.5}],
            "result":null,"rollback":{"state":"none","generation":null,"reason":"x"},
            "previous_generation":null,"staged_generation":null,"priority":1}"#,
        )
        .unwrap();
        assert_eq!(job.events[0].step, "s");
        let health: Health = serde_json::from_str(
            r#"{"status":"ok","provisioned":false,"build_id":null,"slot":null,"generation":null,
            "last_import_error":null,"listening":[],"job":null,"uptime":3}"#,
        )
        .unwrap();
        assert!(!health.provisioned);
        assert_eq!(health.last_update, None, "an older device's health");
    }

    #[test]
    fn a_factory_reset_is_one_exact_body() {
        assert_eq!(
            serde_json::to_vec(&FactoryReset::confirmed()).unwrap(),
            FactoryReset::BODY
        );
        wire(&FactoryReset::confirmed(), r#"{"confirm":"erase"}"#);
        assert!(serde_json::from_str::<FactoryReset>(r#"{"confirm":"erase","also":1}"#).is_err());
        assert!(serde_json::from_str::<FactoryReset>("{}").is_err());
        wire(&JobList { jobs: vec![] }, r#"{"jobs":[]}"#);
    }

    #[test]
    fn problems_read_like_the_offline_validator() {
        assert_eq!(
            problem().to_string(),
            "config.toml:3:5: device.hostname: bad"
        );
        let refused = Problem {
            line: None,
            column: None,
            path: "../x".into(),
            message: "refused: a path outside the bundle".into(),
        };
        assert_eq!(
            refused.to_string(),
            "../x: refused: a path outside the bundle"
        );
    }
}
