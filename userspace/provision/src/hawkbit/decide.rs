//! What to do next, as pure functions of the server's parsed answers, the persisted
//! [`ActionRecord`] and facts about this boot. Nothing here touches the network, the
//! disk or the clock; [`super::client`] carries the decisions out.

use std::collections::BTreeMap;

use super::record::{ActionRecord, Phase};
use super::wire::{Artifact, DeploymentBase, Handling, Hashes, MaintenanceWindow, PollAnswer};

/// The steps of a deployment, as reported in `proceeding` feedback (`cnt` of [`STEPS`]).
pub const STEP_DOWNLOAD: u32 = 1;
pub const STEP_DOWNLOADED: u32 = 2;
pub const STEP_INSTALL: u32 = 3;
pub const STEP_INSTALLED: u32 = 4;
pub const STEPS: u32 = 4;

/// What this boot is, for deciding how an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFacts {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// The booted slot (`a` or `b`).
    pub slot: String,
    pub build_id: String,
    /// The booted slot has been marked good in this boot (its config applied).
    pub slot_good: bool,
}

/// What a poll answer asks for, in the order to do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPlan {
    /// `PUT` the device's attributes here.
    pub config_data: Option<String>,
    /// Fetch this cancel request (before any deployment: hawkBit offers a cancel
    /// instead of the deployment it cancels).
    pub cancel: Option<String>,
    /// Fetch this deployment.
    pub deployment: Option<String>,
}

pub fn plan_poll(answer: &PollAnswer) -> PollPlan {
    let links = &answer.links;
    let cancel = links.cancel_action.as_ref().map(|l| l.href.clone());
    PollPlan {
        config_data: links.config_data.as_ref().map(|l| l.href.clone()),
        deployment: links
            .deployment_base
            .as_ref()
            .filter(|_| cancel.is_none())
            .map(|l| l.href.clone()),
        cancel,
    }
}

/// What to do with a deployment the server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentPlan {
    /// The server says not now (`download: skip`, or no maintenance window yet): poll on.
    Wait,
    /// This action is already past its download (installing, waiting for the reboot, or
    /// waiting for the server to take its result): nothing to start.
    InProgress,
    /// Another action holds the device past the point of no return; this one waits.
    Busy { other: String },
    /// The deployment cannot be carried out: report `closed`/`failure` with this.
    Refuse { action_id: String, reason: String },
    /// Download and install the bundle: the new record to save,
    /// in [`Phase::Downloading`], replacing a download in progress of another action.
    Download { record: Box<ActionRecord> },
}

/// Decides on a deployment, given the action in progress (if any) and this boot.
pub fn plan_deployment(
    dep: &DeploymentBase,
    current: Option<&ActionRecord>,
    boot: &BootFacts,
) -> DeploymentPlan {
    if let Some(r) = current {
        // A result the server has not taken yet was sent again earlier in the round:
        // it holds no slot, so it does not keep a new deployment out (the server may
        // never take it: its action deleted, its server no longer this one).
        let holds_slot = matches!(r.phase, Phase::Installing { .. } | Phase::Installed { .. });
        if r.action_id == dep.id && r.phase.wrote_slot() {
            return DeploymentPlan::InProgress;
        }
        if holds_slot {
            return DeploymentPlan::Busy {
                other: r.action_id.clone(),
            };
        }
    }
    let d = &dep.deployment;
    // The device downloads only what it can install at once (`update: skip` means a
    // maintenance window not yet open): a bundle kept on /data for later is a second
    // state to carry across reboots for little gain.
    if d.download == Handling::Skip
        || d.update == Handling::Skip
        || d.maintenance_window == Some(MaintenanceWindow::Unavailable)
    {
        return DeploymentPlan::Wait;
    }
    let refuse = |reason: String| DeploymentPlan::Refuse {
        action_id: dep.id.clone(),
        reason,
    };
    let (version, artifact) = match pick_bundle(dep) {
        Ok(found) => found,
        Err(reason) => return refuse(reason),
    };
    if let Err(reason) = check_hashes(&artifact.hashes) {
        return refuse(format!("{}: {reason}", artifact.filename));
    }
    let links = &artifact.links;
    let Some(url) = links.download.as_ref().or(links.download_http.as_ref()) else {
        return refuse(format!("{}: no download link", artifact.filename));
    };
    DeploymentPlan::Download {
        record: Box::new(ActionRecord {
            action_id: dep.id.clone(),
            version: version.to_owned(),
            artifact: artifact.filename.clone(),
            size: artifact.size,
            download_url: url.href.clone(),
            hashes: artifact.hashes.clone(),
            from_slot: boot.slot.clone(),
            from_build: boot.build_id.clone(),
            boot_id: boot.boot_id.clone(),
            phase: Phase::Downloading,
            server: None,
            unreported_since: None,
        }),
    }
}

/// The RAUC bundle of a deployment: the one artifact named `*.raucb` across its chunks,
/// or its only artifact whatever its name; with its chunk's version.
fn pick_bundle(dep: &DeploymentBase) -> Result<(&str, &Artifact), String> {
    let all: Vec<(&str, &Artifact)> = dep
        .deployment
        .chunks
        .iter()
        .flat_map(|c| c.artifacts.iter().map(move |a| (c.version.as_str(), a)))
        .collect();
    let bundles: Vec<_> = all
        .iter()
        .filter(|(_, a)| a.filename.ends_with(".raucb"))
        .collect();
    match (bundles.as_slice(), all.as_slice()) {
        ([one], _) => Ok(**one),
        ([], [only]) => Ok(*only),
        ([], []) => Err("the deployment has no artifact".into()),
        ([], many) => Err(format!(
            "no RAUC bundle (*.raucb) among the artifacts {}",
            names(many.iter().map(|(_, a)| a))
        )),
        (many, _) => Err(format!(
            "more than one RAUC bundle: {}",
            names(many.iter().map(|(_, a)| a))
        )),
    }
}

fn names<'a>(artifacts: impl Iterator<Item = &'a &'a Artifact>) -> String {
    artifacts
        .map(|a| a.filename.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hashes the download is checked against: SHA-256 and SHA-1 (at least one;
/// MD5 alone proves nothing). RAUC checks the bundle's signature in any case: these
/// catch a damaged or wrong download before a slot is touched.
pub fn check_hashes(h: &Hashes) -> Result<(), String> {
    let hex = |v: &Option<String>, len: usize, name: &str| match v {
        Some(s) if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(format!("the server's {name} {s:?} is not {len} hex digits"))
        }
        _ => Ok(()),
    };
    hex(&h.sha256, 64, "SHA-256")?;
    hex(&h.sha1, 40, "SHA-1")?;
    if h.sha256.is_none() && h.sha1.is_none() {
        return Err("the server gives no SHA-256 or SHA-1 hash to check the download with".into());
    }
    Ok(())
}

/// What a finished download came to: its size and digests (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub size: u64,
    pub sha1: String,
    pub sha256: String,
}

/// The download against what the server announced: every hash the server gave.
pub fn check_download(record: &ActionRecord, got: &Downloaded) -> Result<(), String> {
    if got.size != record.size {
        return Err(format!(
            "{}: downloaded {} bytes, the server announced {}",
            record.artifact, got.size, record.size
        ));
    }
    for (name, want, have) in [
        ("SHA-256", &record.hashes.sha256, &got.sha256),
        ("SHA-1", &record.hashes.sha1, &got.sha1),
    ] {
        if let Some(want) = want {
            if !want.eq_ignore_ascii_case(have) {
                return Err(format!(
                    "{}: {name} {have} differs from the server's {}",
                    record.artifact,
                    want.to_ascii_lowercase()
                ));
            }
        }
    }
    Ok(())
}

/// The answer to a cancel request for `stop_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelPlan {
    /// Confirm it; with `discard`, the download in progress and the record go.
    Confirm { discard: bool },
    /// Refuse it: a slot is being (or has been) written.
    Reject { reason: String },
}

pub fn plan_cancel(stop_id: &str, current: Option<&ActionRecord>) -> CancelPlan {
    match current {
        Some(r) if r.action_id == stop_id => match &r.phase {
            Phase::Downloading => CancelPlan::Confirm { discard: true },
            Phase::Installing { .. } | Phase::Installed { .. } => CancelPlan::Reject {
                reason: "the update is being installed: the other slot has been written".into(),
            },
            Phase::Reporting { .. } => CancelPlan::Reject {
                reason: "the update has finished; its result is being reported".into(),
            },
        },
        // An action the device never took on (or one it has finished with): nothing
        // to stop, so the cancel is confirmed and the server can close it.
        _ => CancelPlan::Confirm { discard: false },
    }
}

/// Where an action in progress stands in this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Download again from the start (a partial file is discarded).
    Download,
    /// Installed in this boot: waiting for the reboot into the new slot.
    AwaitReboot,
    /// Booted into the new slot; waiting for it to be marked good.
    AwaitGood,
    /// The result is known: report it (and keep reporting until the server takes it).
    Report { success: bool, details: Vec<String> },
}

/// Decides how an action in progress ended, or whether it still runs, from this boot's
/// facts: the heart of "a power cut never makes an action vanish".
pub fn resume(record: &ActionRecord, boot: &BootFacts) -> Resume {
    let same_boot = record.boot_id == boot.boot_id;
    // Booted from another slot than the one installed from: whether it is the new one
    // and good decides.
    let on_target = |target_slot: &str| {
        if target_slot != boot.slot {
            Resume::Report {
                success: false,
                details: vec![format!(
                    "slot {target_slot} with {} did not become good (its boot tries ran out or it was never booted): running build {} on slot {} again",
                    record.version, boot.build_id, boot.slot
                )],
            }
        } else if boot.slot_good {
            Resume::Report {
                success: true,
                details: vec![format!(
                    "running build {} on slot {}, marked good after its config applied",
                    boot.build_id, boot.slot
                )],
            }
        } else {
            Resume::AwaitGood
        }
    };
    match &record.phase {
        Phase::Downloading => Resume::Download,
        // `rauc install` finished and made the new slot primary, and the power went
        // before `Installed` was saved: this boot is the new slot's.
        Phase::Installing {
            target_slot: Some(t),
        } if !same_boot && *t == boot.slot => on_target(t),
        Phase::Installing { .. } => Resume::Report {
            success: false,
            details: vec![format!(
                "the installation of {} was interrupted ({}); still running build {} on slot {}",
                record.version,
                if same_boot {
                    "the update client stopped during it"
                } else {
                    "the device restarted during it"
                },
                boot.build_id,
                boot.slot
            )],
        },
        Phase::Installed { target_slot } => {
            if same_boot {
                Resume::AwaitReboot
            } else {
                on_target(target_slot)
            }
        }
        Phase::Reporting { success, details } => Resume::Report {
            success: *success,
            details: details.clone(),
        },
    }
}

/// The slot `rauc install` writes when `booted` runs: the other one of `a` and `b`.
pub fn other_slot(booted: &str) -> Option<String> {
    match booted {
        "a" => Some("b".into()),
        "b" => Some("a".into()),
        _ => None,
    }
}

/// How long a result the server does not take is sent again (every round) before it
/// is dropped: a server that answers 5xx for a week has lost the action.
pub const REPORT_FOR: u64 = 7 * 24 * 3600;

/// Whether the record was taken from the controller resource `base` (one written
/// before records kept their server counts as this server's).
pub fn from_server(record: &ActionRecord, base: &str) -> bool {
    record.server.as_deref().is_none_or(|s| s == base)
}

/// Why a result the server did not take is given up, if it is: a refusal that will not
/// change (an HTTP 4xx other than 401, 403, 408 and 429, which a token or a wait may
/// cure), or failures since `since` for [`REPORT_FOR`] or longer. `status` is the HTTP
/// status of the answer, `None` for no answer.
pub fn give_up_report(status: Option<u16>, since: u64, now: u64) -> Option<String> {
    match status {
        Some(s @ 400..=499) if !matches!(s, 401 | 403 | 408 | 429) => {
            return Some(format!("the server refuses it for good (HTTP {s})"));
        }
        _ => {}
    }
    let days = REPORT_FOR / 86400;
    (now.saturating_sub(since) >= REPORT_FOR)
        .then(|| format!("the server has not taken it for {days} days"))
}

/// The facts sent through `configData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub build_id: String,
    pub slot: String,
    pub board: String,
    /// RAUC's compatible (`atomixos-rock64`).
    pub compatible: String,
    /// The provisioned config generation, if any.
    pub generation: Option<u64>,
}

/// The attributes the device reports. `hw_boardname`, `hw_revision` and `sw_version`
/// are the names goosebit matches bundles and versions by (the bundle's RAUC
/// `compatible` and `version`); hawkBit shows them as they are. The `atomix.` ones say
/// what the device is in its own words.
pub fn attributes(f: &DeviceFacts) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("hw_boardname".into(), f.compatible.clone());
    a.insert("hw_revision".into(), "default".into());
    a.insert("sw_version".into(), f.build_id.clone());
    a.insert("atomix.build-id".into(), f.build_id.clone());
    a.insert("atomix.slot".into(), f.slot.clone());
    a.insert("atomix.board".into(), f.board.clone());
    a.insert("atomix.compatible".into(), f.compatible.clone());
    a.insert(
        "atomix.generation".into(),
        f.generation
            .map_or_else(|| "none".into(), |g| g.to_string()),
    );
    a
}
