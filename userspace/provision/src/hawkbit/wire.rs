//! The hawkBit DDI API's JSON documents, as the device reads and writes them
//! (`/{tenant}/controller/v1/{controllerId}` and the resources it links to).
//!
//! The server's answers are read tolerantly: no `deny_unknown_fields` on them. The DDI
//! API is versioned by its path (`v1`) but its documents are open: hawkBit has added
//! members over the years (`actionHistory`, `maintenanceWindow`, `metadata`,
//! `confirmationBase`, `installedBase`, more hash algorithms), goosebit answers a subset,
//! and a device in the field must not stop updating because its server learned
//! something new. What the device relies on is required here (a missing `sleep`,
//! action id or artifact size is an error); the enumerations the API fixes (`skip`,
//! `attempt`, `forced`) are closed enums, so an unknown value is refused rather than
//! guessed at. What the device sends is written by serde from the types below, which
//! hold only members every server accepts.
//!
//! The server's text that the device keeps, shows and logs (ids, versions, file names,
//! links) is bounded as it is read: it reaches the action record, the journal, job
//! events and the unauthenticated `/api/health`, so a hostile answer is refused with an
//! error naming the member, never carried along.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// The longest action id taken (hawkBit's and goosebit's are decimal numbers).
pub const MAX_ID: usize = 64;
/// The longest version or file name taken.
pub const MAX_NAME: usize = 256;
/// The longest link taken.
pub const MAX_HREF: usize = 2048;

/// The start of a refused value, for the error (never the whole of it).
fn quoted(s: &str) -> String {
    let start: String = s.chars().take(MAX_ID).collect();
    if start.len() < s.len() {
        format!("{start:?}...")
    } else {
        format!("{start:?}")
    }
}

/// An id: 1 to [`MAX_ID`] letters, digits, `.`, `_` or `-`.
pub fn check_id(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an id (1 to {MAX_ID} letters, digits, '.', '_' or '-')",
            quoted(s)
        ))
    }
}

/// Text of at most `max` characters and no control characters.
fn check_text(s: &str, max: usize) -> Result<(), String> {
    if s.chars().count() > max {
        Err(format!("{} is longer than {max} characters", quoted(s)))
    } else if s.chars().any(char::is_control) {
        Err(format!("{} holds control characters", quoted(s)))
    } else {
        Ok(())
    }
}

fn checked<'de, D: Deserializer<'de>>(
    d: D,
    member: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check(&s).map_err(|why| D::Error::custom(format!("{member}: {why}")))?;
    Ok(s)
}

fn href<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "href", |s| check_text(s, MAX_HREF))
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "id", check_id)
}

fn stop_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "stopId", check_id)
}

fn version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "version", |s| check_text(s, MAX_NAME))
}

fn filename<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "filename", |s| check_text(s, MAX_NAME))
}

/// A HAL link: `{"href": "..."}` (other members, such as `templated`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    #[serde(deserialize_with = "href")]
    pub href: String,
}

/// The answer to a poll of the controller resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PollAnswer {
    pub config: PollConfig,
    /// The actions waiting for the device; none is `{}` or, on some servers, absent.
    #[serde(rename = "_links", default)]
    pub links: PollLinks,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PollConfig {
    pub polling: Polling,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Polling {
    /// When to poll next, `HH:MM:SS` (see `schedule::parse_sleep`).
    pub sleep: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollLinks {
    pub deployment_base: Option<Link>,
    pub cancel_action: Option<Link>,
    pub config_data: Option<Link>,
}

/// `GET .../deploymentBase/{actionId}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeploymentBase {
    /// The action id (a string on the wire, digits in practice).
    #[serde(deserialize_with = "id")]
    pub id: String,
    pub deployment: Deployment,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub download: Handling,
    pub update: Handling,
    /// Present only when the action has a maintenance schedule.
    pub maintenance_window: Option<MaintenanceWindow>,
    #[serde(default)]
    pub chunks: Vec<Chunk>,
}

/// How the server wants a step handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handling {
    /// Not now (e.g. outside the maintenance window).
    Skip,
    /// The device may decide.
    Attempt,
    /// Now.
    Forced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceWindow {
    Available,
    Unavailable,
}

/// A software module of the distribution set (`part` is e.g. `os`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub part: String,
    #[serde(deserialize_with = "version")]
    pub version: String,
    pub name: String,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Artifact {
    #[serde(deserialize_with = "filename")]
    pub filename: String,
    #[serde(default)]
    pub hashes: Hashes,
    pub size: u64,
    #[serde(rename = "_links", default)]
    pub links: ArtifactLinks,
}

/// The artifact's digests as lowercase or uppercase hex; hawkBit gives all three,
/// goosebit SHA-1 only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ArtifactLinks {
    /// HTTPS (hawkBit) or whatever the server serves (goosebit).
    pub download: Option<Link>,
    #[serde(rename = "download-http")]
    pub download_http: Option<Link>,
}

/// `GET .../cancelAction/{actionId}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelAnswer {
    #[serde(deserialize_with = "id")]
    pub id: String,
    pub cancel_action: CancelAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelAction {
    /// The action to stop.
    #[serde(deserialize_with = "stop_id")]
    pub stop_id: String,
}

/// The body of `POST .../deploymentBase/{id}/feedback` and `.../cancelAction/{id}/feedback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub execution: Execution,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// The DDI execution states the device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// Working on it.
    Proceeding,
    /// Done: `result.finished` says how.
    Closed,
    /// A cancel the device will not carry out (the slot is being written).
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub finished: Finished,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    /// Not finished (with `proceeding`).
    None,
}

/// Step `cnt` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub cnt: u32,
    pub of: u32,
}

/// The body of `PUT .../configData`: the device's attributes, merged into what the
/// server knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigData {
    pub mode: ConfigMode,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigMode {
    Merge,
}

impl Feedback {
    fn new(execution: Execution, finished: Finished, details: Vec<String>) -> Feedback {
        Feedback {
            status: Status {
                execution,
                result: Outcome {
                    finished,
                    progress: None,
                },
                details,
            },
        }
    }

    /// Step `cnt` of `of` under way.
    pub fn proceeding(cnt: u32, of: u32, detail: impl Into<String>) -> Feedback {
        let mut f = Feedback::new(Execution::Proceeding, Finished::None, vec![detail.into()]);
        f.status.result.progress = Some(Progress { cnt, of });
        f
    }

    /// The action's final result.
    pub fn closed(success: bool, details: Vec<String>) -> Feedback {
        let finished = if success {
            Finished::Success
        } else {
            Finished::Failure
        };
        Feedback::new(Execution::Closed, finished, details)
    }

    /// A cancel carried out (nothing had been written).
    pub fn cancel_confirmed(detail: impl Into<String>) -> Feedback {
        Feedback::new(Execution::Closed, Finished::Success, vec![detail.into()])
    }

    /// A cancel refused.
    pub fn cancel_rejected(detail: impl Into<String>) -> Feedback {
        Feedback::new(Execution::Rejected, Finished::Success, vec![detail.into()])
    }
}
