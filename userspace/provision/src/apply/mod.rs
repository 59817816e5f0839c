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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atomix_config::generations::{Origin, SourceRecord, Store};
use atomix_config::render::RenderedTree;
use serde::{Deserialize, Serialize};

use crate::beneath::Beneath;
use crate::failpoints::Failpoints;
use crate::input::Accepted;
use crate::jobs::{Job, JobHandle, JobKind, JobResult, Level, Rollback, RollbackState, Tracker};
use crate::paths::Paths;
use crate::system::{Action, System};

/// Apply steps, in order. The names are those of events and failpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Validate,
    Render,
    Persist,
    Apps,
    SyncQuadlets,
    Units,
    Lan,
    Time,
    Firewall,
    Hostname,
    SshKeys,
    UpdateTimer,
    Switch,
    MarkGood,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::Validate,
        Step::Render,
        Step::Persist,
        // A container's files (its image archive, its volumes) before it starts.
        Step::Apps,
        Step::SyncQuadlets,
        Step::Units,
        Step::Lan,
        Step::Time,
        Step::Firewall,
        Step::Hostname,
        Step::SshKeys,
        Step::UpdateTimer,
        Step::Switch,
        Step::MarkGood,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Validate => "validate",
            Step::Render => "render",
            Step::Persist => "persist",
            Step::SyncQuadlets => "sync-quadlets",
            Step::Units => "units",
            Step::Apps => "apps",
            Step::Lan => "lan",
            Step::Time => "time",
            Step::Firewall => "firewall",
            Step::Hostname => "hostname",
            Step::SshKeys => "ssh-keys",
            Step::UpdateTimer => "update-timer",
            Step::Switch => "switch",
            Step::MarkGood => "mark-good",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The admin user, owner of the rootless Quadlets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub name: String,
    pub uid: u32,
}

impl Admin {
    /// `admin`'s uid from the passwd text; 1000 (the image's) when it is not there.
    pub fn from_passwd(text: &str) -> Admin {
        let uid = text
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"admin"))
            .and_then(|f| f.get(2)?.parse().ok())
            .unwrap_or(1000);
        Admin {
            name: "admin".into(),
            uid,
        }
    }
}

/// One operation; paths are relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write {
        path: PathBuf,
        contents: Vec<u8>,
    },
    /// Removes a file this service wrote (or puts back the image's copy it replaced).
    Remove {
        path: PathBuf,
    },
    /// Puts back the image's copy (file or link) of a file this service replaced.
    Restore {
        path: PathBuf,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    /// Sets the running host name to what the file (just restored) holds.
    HostnameFromFile {
        path: PathBuf,
    },
    Run(Action),
}

/// When a step's actions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Every time: what the actions act on is not (only) this step's files, e.g. units
    /// that the running systemd has not loaded yet even when their files are in place.
    Always,
    /// Only if a file operation of the step changed something: services that read their
    /// files when they start (networkd, dnsmasq, chrony, the ruleset, the host name) are
    /// left alone when the files they started with are already the wanted ones, as on a
    /// boot after `atomix-provision restore` put them back.
    IfChanged,
}

/// The operations of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    pub step: Step,
    pub ops: Vec<Op>,
    pub act: Act,
    /// Run instead of the actions when an [`Act::IfChanged`] step skips them: that the
    /// services which read the files at their start are running (`systemctl start` of
    /// a running unit does nothing; of a failed one it tries again and reports).
    pub checks: Vec<Action>,
}

/// What the live system should hold: a rendered tree and bundle files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub tree: RenderedTree,
    /// `apps/<container>/...` to contents.
    pub apps: BTreeMap<String, Vec<u8>>,
}

/// Where a rendered file goes, and which step puts it there.
pub fn live_path(rel: &str, admin: &Admin) -> Option<(Step, PathBuf)> {
    let p = |s: String| Some(PathBuf::from(s));
    let (step, path) = if let Some(f) = rel.strip_prefix("quadlet/rootful/") {
        (Step::SyncQuadlets, p(format!("etc/containers/systemd/{f}")))
    } else if let Some(f) = rel.strip_prefix("quadlet/rootless/") {
        (
            Step::SyncQuadlets,
            p(format!("etc/containers/systemd/users/{}/{f}", admin.uid)),
        )
    } else if let Some(f) = rel.strip_prefix("networkd/") {
        (Step::Lan, p(format!("etc/systemd/network/{f}")))
    } else if rel == "dnsmasq/atomix.conf" {
        // The image's default LAN service lives in this file: replace it, never both.
        (Step::Lan, p("etc/dnsmasq.d/atomix-lan.conf".into()))
    } else if let Some(f) = rel.strip_prefix("chrony/") {
        (Step::Time, p(format!("etc/chrony/sources.d/{f}")))
    } else if rel == "timezone" {
        (Step::Time, p("etc/timezone".into()))
    } else if let Some(f) = rel.strip_prefix("nftables/") {
        (Step::Firewall, p(format!("etc/nftables.d/{f}")))
    } else if rel == "hostname" {
        (Step::Hostname, p("etc/hostname".into()))
    } else if rel == "authorized_keys" {
        (
            Step::SshKeys,
            p(format!("etc/ssh/authorized_keys/{}", admin.name)),
        )
    } else if let Some(f) = rel.strip_prefix("systemd/") {
        (Step::UpdateTimer, p(format!("etc/systemd/system/{f}")))
    } else if rel.starts_with("apps/") {
        (Step::Apps, p(format!("data/{rel}")))
    } else {
        return None;
    };
    Some((step, path?))
}

/// The step that owns a live path (for removals).
fn step_of(path: &Path) -> Option<Step> {
    let s = path.to_str()?;
    let prefixes = [
        ("etc/containers/systemd/", Step::SyncQuadlets),
        ("data/apps/", Step::Apps),
        ("etc/systemd/network/", Step::Lan),
        ("etc/dnsmasq.d/", Step::Lan),
        ("etc/chrony/", Step::Time),
        ("etc/nftables.d/", Step::Firewall),
        ("etc/ssh/authorized_keys/", Step::SshKeys),
        ("etc/systemd/system/", Step::UpdateTimer),
        ("etc/timezone", Step::Time),
        ("etc/localtime", Step::Time),
        ("etc/hostname", Step::Hostname),
    ];
    prefixes
        .iter()
        .find(|(p, _)| s.starts_with(p))
        .map(|(_, step)| *step)
}

const HOSTNAME: &str = "etc/hostname";
const LOCALTIME: &str = "etc/localtime";

/// Files that exist in the image too: overwritten, and put back (never removed: on the
/// overlay root a removal would hide the image's own copy).
fn image_file(path: &Path) -> bool {
    [HOSTNAME, "etc/timezone", LOCALTIME]
        .iter()
        .any(|p| path == Path::new(p))
}

/// Container units (`<name>.service`) for `.container` files among `paths` in `dir`.
fn units_in<'a>(paths: impl Iterator<Item = &'a PathBuf>, dir: &str) -> BTreeSet<String> {
    paths
        .filter_map(|p| {
            let rest = p.to_str()?.strip_prefix(dir)?;
            let name = rest.strip_suffix(".container")?;
            (!name.contains('/')).then(|| format!("{name}.service"))
        })
        .collect()
}

/// The sync steps that take the live system from what this service `owned` to
/// `desired` (None: the unprovisioned defaults of the image).
pub fn plan_sync(
    desired: Option<&Desired>,
    owned: &BTreeSet<PathBuf>,
    admin: &Admin,
) -> Vec<StepPlan> {
    let mut writes: BTreeMap<Step, Vec<Op>> = BTreeMap::new();
    let mut wanted = BTreeSet::new();
    if let Some(d) = desired {
        if d.tree.get("timezone").is_some() {
            wanted.insert(PathBuf::from(LOCALTIME));
        }
        let files = d.tree.files.iter().chain(d.apps.iter());
        for (rel, contents) in files {
            if let Some((step, path)) = live_path(rel, admin) {
                wanted.insert(path.clone());
                writes.entry(step).or_default().push(Op::Write {
                    path,
                    contents: contents.clone(),
                });
            }
        }
    }
    let mut removes: BTreeMap<Step, Vec<Op>> = BTreeMap::new();
    for path in owned.iter().filter(|p| !wanted.contains(*p)) {
        if let Some(step) = step_of(path) {
            let path = path.clone();
            // The image's own files are put back, never removed: on the overlay root
            // a removal would hide the image's copy.
            removes.entry(step).or_default().push(if image_file(&path) {
                Op::Restore { path }
            } else {
                Op::Remove { path }
            });
        }
    }
    let files_of = |step: Step, writes: &mut BTreeMap<Step, Vec<Op>>| {
        let mut ops = removes.get(&step).cloned().unwrap_or_default();
        ops.extend(writes.remove(&step).unwrap_or_default());
        ops
    };

    let rootful = "etc/containers/systemd/";
    let rootless = format!("etc/containers/systemd/users/{}/", admin.uid);
    let new_rootful = units_in(wanted.iter(), rootful);
    let old_rootful = units_in(owned.iter(), rootful);
    let new_rootless = units_in(wanted.iter(), &rootless);
    let old_rootless = units_in(owned.iter(), &rootless);

    let mut plan = Vec::new();
    // A container's files (image archive, volume contents) are in place before it starts.
    plan.push(StepPlan {
        step: Step::Apps,
        ops: files_of(Step::Apps, &mut writes),
        act: Act::IfChanged,
        checks: Vec::new(),
    });
    plan.push(StepPlan {
        step: Step::SyncQuadlets,
        ops: files_of(Step::SyncQuadlets, &mut writes),
        act: Act::IfChanged,
        checks: Vec::new(),
    });

    // The Quadlet generator only runs on a reload, and a reload is worth it only when there
    // are Quadlet files to see or to forget: without containers it costs an apply seconds
    // of PID 1's time (the longest action of a steady boot's re-apply under emulation).
    let rootful_quadlets = wanted.iter().chain(owned.iter()).any(|p| {
        p.to_str().is_some_and(|s| {
            s.starts_with(rootful) && !s.starts_with("etc/containers/systemd/users/")
        })
    });
    let mut units = Vec::new();
    for u in old_rootful.difference(&new_rootful) {
        units.push(Op::Run(Action::systemctl(&["stop", u])));
    }
    if rootful_quadlets {
        units.push(Op::Run(Action::systemctl(&["daemon-reload"])));
    }
    for u in &new_rootful {
        units.push(Op::Run(Action::systemctl(&["restart", u])));
    }
    if !new_rootless.is_empty() || !old_rootless.is_empty() {
        let machine = format!("{}@", admin.name);
        let user = |args: &[&str]| {
            let mut all = vec!["--user", "-M", machine.as_str()];
            all.extend_from_slice(args);
            Op::Run(Action::systemctl(&all))
        };
        if !new_rootless.is_empty() {
            units.push(Op::Run(Action::EnableLinger {
                user: admin.name.clone(),
            }));
            // logind only queues the user manager's start: wait for it before talking
            // to it (the image does not linger, so at boot it is not running yet).
            let manager = format!("user@{}.service", admin.uid);
            units.push(Op::Run(Action::systemctl(&["start", &manager])));
        }
        for u in old_rootless.difference(&new_rootless) {
            units.push(user(&["stop", u]));
        }
        units.push(user(&["daemon-reload"]));
        for u in &new_rootless {
            units.push(user(&["restart", u]));
        }
    }
    // Always: Quadlet files put back at boot come after the generators ran, so the
    // container units exist only after this step's reload.
    plan.push(StepPlan {
        step: Step::Units,
        ops: units,
        act: Act::Always,
        checks: Vec::new(),
    });

    let mut lan = files_of(Step::Lan, &mut writes);
    lan.push(Op::Run(Action::Networkctl {
        args: vec!["reload".into()],
    }));
    lan.push(Op::Run(Action::systemctl(&["restart", "dnsmasq.service"])));
    plan.push(StepPlan {
        step: Step::Lan,
        ops: lan,
        act: Act::IfChanged,
        checks: vec![Action::systemctl(&["start", "dnsmasq.service"])],
    });

    let mut time = files_of(Step::Time, &mut writes);
    if let Some(zone) = desired.and_then(|d| d.tree.get("timezone")) {
        time.push(Op::Symlink {
            path: LOCALTIME.into(),
            target: Path::new("/usr/share/zoneinfo").join(zone.trim()),
        });
    }
    time.push(Op::Run(Action::systemctl(&["restart", "chrony.service"])));
    plan.push(StepPlan {
        step: Step::Time,
        ops: time,
        act: Act::IfChanged,
        checks: vec![Action::systemctl(&["start", "chrony.service"])],
    });

    let mut firewall = files_of(Step::Firewall, &mut writes);
    firewall.push(Op::Run(if desired.is_some() {
        Action::NftApply {
            file: "etc/nftables.d/atomix.nft".into(),
        }
    } else {
        Action::NftDeleteTable
    }));
    plan.push(StepPlan {
        step: Step::Firewall,
        ops: firewall,
        act: Act::IfChanged,
        checks: Vec::new(),
    });

    let mut hostname = files_of(Step::Hostname, &mut writes);
    if let Some(name) = desired.and_then(|d| d.tree.get("hostname")) {
        hostname.push(Op::Run(Action::Hostname {
            name: name.trim().to_owned(),
        }));
    } else if owned.contains(Path::new(HOSTNAME)) {
        // Back to the image's host name, which only the restored file knows.
        hostname.push(Op::HostnameFromFile {
            path: HOSTNAME.into(),
        });
    }
    plan.push(StepPlan {
        step: Step::Hostname,
        ops: hostname,
        act: Act::IfChanged,
        checks: Vec::new(),
    });

    plan.push(StepPlan {
        step: Step::SshKeys,
        ops: files_of(Step::SshKeys, &mut writes),
        act: Act::IfChanged,
        checks: Vec::new(),
    });

    // The timer is stopped before its files go, and (re)started once they are in place,
    // so a changed interval takes effect.
    let timer_unit = atomix_config::render::update::TIMER_UNIT;
    let timer = PathBuf::from(format!("etc/systemd/system/{timer_unit}"));
    let (had_timer, wants_timer) = (owned.contains(&timer), wanted.contains(&timer));
    let mut update = Vec::new();
    if had_timer && !wants_timer {
        update.push(Op::Run(Action::systemctl(&[
            "disable", "--now", timer_unit,
        ])));
    }
    update.extend(files_of(Step::UpdateTimer, &mut writes));
    if had_timer || wants_timer {
        update.push(Op::Run(Action::systemctl(&["daemon-reload"])));
    }
    if wants_timer {
        update.push(Op::Run(Action::systemctl(&["enable", timer_unit])));
        update.push(Op::Run(Action::systemctl(&["restart", timer_unit])));
    }
    // Always: the timer's unit files put back at boot are not loaded, nor enabled.
    plan.push(StepPlan {
        step: Step::UpdateTimer,
        ops: update,
        act: Act::Always,
        checks: Vec::new(),
    });
    plan
}

/// The live files this service wrote, kept in `/run/atomix/owned-files.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owned {
    pub files: BTreeSet<PathBuf>,
    /// Steps whose files changed and whose actions have not all succeeded since (a
    /// failed action, a crash in between, a ruleset `restore` could not load): their
    /// actions run again even when their files are unchanged.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unsettled: BTreeSet<String>,
}

impl Owned {
    pub fn load(paths: &Paths) -> Owned {
        boot_state::read_record(&paths.owned_manifest())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub(crate) fn save(&self, paths: &Paths) -> Result<(), String> {
        boot_state::write_record(&paths.owned_manifest(), self).map_err(|e| format!("{e:#}"))
    }
}

/// Runs step plans: file operations under the root, actions through the [`System`].
#[derive(Debug)]
pub struct Executor<'a> {
    pub paths: &'a Paths,
    pub system: &'a dyn System,
}

/// An error with its sources, `outer: inner: ...`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Live trees that containers can write (read-write volumes): every file operation in
/// them goes through [`Beneath`], which never follows a symbolic link.
pub const CONTAINER_WRITABLE: &[&str] = &["data/apps"];

impl Executor<'_> {
    fn original(&self, path: &Path) -> PathBuf {
        self.paths.run().join("originals").join(path)
    }

    /// The container-writable tree `path` is in, and the path inside it.
    fn untrusted<'p>(&self, path: &'p Path) -> Option<(Beneath, &'p Path)> {
        CONTAINER_WRITABLE.iter().find_map(|tree| {
            let rel = path.strip_prefix(tree).ok()?;
            Some((Beneath::new(self.paths.under(tree)), rel))
        })
    }

    /// Reads a live file; None if it does not exist.
    fn read_live(&self, path: &Path) -> Result<Option<Vec<u8>>, String> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return tree.read(rel).map_err(|e| chain(&e));
        }
        let full = self.paths.under(path);
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", full.display())),
        }
    }

    fn write_live(&self, path: &Path, contents: &[u8]) -> Result<(), String> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return tree.write(rel, contents).map_err(|e| chain(&e));
        }
        boot_state::write_atomic(&self.paths.under(path), contents).map_err(|e| chain(&e))
    }

    fn remove_live(&self, path: &Path) -> Result<(), String> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return tree.remove(rel).map_err(|e| chain(&e));
        }
        let full = self.paths.under(path);
        match std::fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", full.display())),
        }
    }

    /// Whether a live file holds exactly `contents`, compared as it is read (an app's
    /// image archive is large); anything but a regular file is not the same.
    fn same_live(&self, path: &Path, contents: &[u8]) -> Result<bool, String> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return tree.same_contents(rel, contents).map_err(|e| chain(&e));
        }
        let full = self.paths.under(path);
        let fail = |e: std::io::Error| format!("cannot read {}: {e}", full.display());
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_file() && m.len() == contents.len() as u64 => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(fail(e)),
        }
        let file = std::fs::File::open(&full).map_err(fail)?;
        crate::beneath::same_stream(file, contents).map_err(fail)
    }

    /// Keeps the image's copy of a file about to be replaced (once). Not in the trees
    /// containers write: what is there is the service's own bundle files, or a
    /// container's changes to them, never the image's.
    fn save_original(&self, path: &Path) -> Result<(), String> {
        if self.untrusted(path).is_some() {
            return Ok(());
        }
        let saved = self.original(path);
        if saved.exists() {
            return Ok(());
        }
        match self.read_live(path)? {
            Some(bytes) => boot_state::write_atomic(&saved, &bytes).map_err(|e| chain(&e)),
            None => Ok(()),
        }
    }

    /// Where the target of an image's link that this service replaced is kept.
    fn original_link(&self, path: &Path) -> PathBuf {
        let mut p = self.original(path).into_os_string();
        p.push(".symlink");
        PathBuf::from(p)
    }

    /// Keeps the image's link (its target) or file at `path` before it is replaced.
    fn save_original_link(&self, path: &Path) -> Result<(), String> {
        let (saved, full) = (self.original_link(path), self.paths.under(path));
        if saved.exists() || self.original(path).exists() {
            return Ok(());
        }
        match std::fs::read_link(&full) {
            Ok(target) => boot_state::write_atomic(&saved, target.as_os_str().as_encoded_bytes())
                .map_err(|e| chain(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Not a link: a file, kept as one.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => self.save_original(path),
            Err(e) => Err(format!("cannot read {}: {e}", full.display())),
        }
    }

    /// Replaces `path` by a link to `target` (a temporary link renamed over it).
    fn symlink(&self, path: &Path, target: &Path) -> Result<(), String> {
        let full = self.paths.under(path);
        let tmp = full.with_extension("atomix-tmp");
        let _ = std::fs::remove_file(&tmp);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::os::unix::fs::symlink(target, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &full))
            .map_err(|e| format!("cannot link {}: {e}", full.display()))
    }

    /// Removes a file this service wrote, or puts the image's copy (file or link) back.
    fn remove_or_restore(&self, path: &Path) -> Result<(), String> {
        let link = self.original_link(path);
        match std::fs::read(&link) {
            Ok(target) => {
                let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                self.symlink(path, &target)?;
                let _ = std::fs::remove_file(&link);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", link.display())),
        }
        let saved = self.original(path);
        match std::fs::read(&saved) {
            Ok(bytes) => {
                self.write_live(path, &bytes)?;
                let _ = std::fs::remove_file(&saved);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", saved.display())),
        }
        self.remove_live(path)
    }

    /// Runs one step: its file operations, then its actions as [`StepPlan::act`] says.
    /// The owned list is updated (and saved) as files come and go.
    pub fn run(&self, plan: &StepPlan, owned: &mut Owned) -> Result<String, String> {
        self.run_ops(plan, owned, true)
    }

    /// Runs only the file operations of a step, no action at all: what
    /// `atomix-provision restore` does at boot, before the services that read the files
    /// start.
    pub fn put_files(&self, plan: &StepPlan, owned: &mut Owned) -> Result<String, String> {
        self.run_ops(plan, owned, false)
    }

    fn run_ops(&self, plan: &StepPlan, owned: &mut Owned, act: bool) -> Result<String, String> {
        let step = plan.step.name();
        let (mut written, mut unchanged, mut removed, mut actions, mut checked) = (0, 0, 0, 0, 0);
        let mut changed = false;
        // Whether the step's actions run, asked at each of them: files changed before it
        // in this run, or in an earlier run whose actions did not all succeed.
        let acts = |changed: bool, owned: &Owned| {
            act && (plan.act == Act::Always || changed || owned.unsettled.contains(step))
        };
        // Before a step's first change: unsettled until its actions have succeeded, so
        // that a failure or a crash in between makes the next run act again.
        let unsettle = |owned: &mut Owned| -> Result<(), String> {
            if act && owned.unsettled.insert(step.to_owned()) {
                owned.save(self.paths)?;
            }
            Ok(())
        };
        let result = (|| {
            for op in &plan.ops {
                match op {
                    Op::Write { path, contents } => {
                        if !owned.files.contains(path) {
                            self.save_original(path)?;
                            // Recorded before the write: a crash in between must not
                            // leave a file nobody removes.
                            owned.files.insert(path.clone());
                            owned.save(self.paths)?;
                        }
                        if self.same_live(path, contents)? {
                            unchanged += 1;
                        } else {
                            unsettle(owned)?;
                            self.write_live(path, contents)?;
                            written += 1;
                            changed = true;
                        }
                    }
                    Op::Remove { path } | Op::Restore { path } => {
                        unsettle(owned)?;
                        self.remove_or_restore(path)?;
                        owned.files.remove(path);
                        owned.save(self.paths)?;
                        removed += 1;
                        changed = true;
                    }
                    Op::Symlink { path, target } => {
                        if !owned.files.contains(path) {
                            self.save_original_link(path)?;
                            owned.files.insert(path.clone());
                            owned.save(self.paths)?;
                        }
                        let live = std::fs::read_link(self.paths.under(path)).ok();
                        if live.as_deref() == Some(target.as_path()) {
                            unchanged += 1;
                        } else {
                            unsettle(owned)?;
                            self.symlink(path, target)?;
                            written += 1;
                            changed = true;
                        }
                    }
                    Op::HostnameFromFile { path } if acts(changed, owned) => {
                        let name = self.read_live(path)?.unwrap_or_default();
                        let name = String::from_utf8_lossy(&name).trim().to_owned();
                        if !name.is_empty() {
                            self.system
                                .run(&Action::Hostname { name })
                                .map_err(|e| e.to_string())?;
                            actions += 1;
                        }
                    }
                    Op::Run(action) if acts(changed, owned) => {
                        let action = match action {
                            // The ruleset file is named relative to the root.
                            Action::NftApply { file } => Action::NftApply {
                                file: self.paths.under(file),
                            },
                            a => a.clone(),
                        };
                        self.system.run(&action).map_err(|e| e.to_string())?;
                        actions += 1;
                    }
                    Op::HostnameFromFile { .. } | Op::Run(_) => {}
                }
            }
            if acts(changed, owned) {
                if owned.unsettled.remove(step) {
                    owned.save(self.paths)?;
                }
            } else if act {
                for check in &plan.checks {
                    self.system.run(check).map_err(|e| e.to_string())?;
                    checked += 1;
                }
            }
            Ok(())
        })();
        result.map(|()| {
            let mut m = format!(
                "{written} files written, {unchanged} unchanged, {removed} removed, {actions} actions"
            );
            if checked > 0 {
                m.push_str(&format!(", {checked} checked"));
            }
            m
        })
    }
}

/// A generation read back from the store, checked and rendered by this build.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub n: u64,
    pub desired: Desired,
    pub lan_address: std::net::Ipv4Addr,
}

/// Reads generation `n`: its config.toml is checked and rendered again (so a new image's
/// renderer applies), its bundle files read from `apps/`.
pub fn load_generation(store: &Store, n: u64) -> Result<Loaded, String> {
    let dir = store.path(n);
    let text = std::fs::read_to_string(dir.join("config.toml"))
        .map_err(|e| format!("cannot read generation {n}: {e}"))?;
    let accepted = crate::input::check_text(text, read_apps(&dir.join("apps"))?).map_err(|r| {
        format!(
            "generation {n} is not valid for this build: {}",
            r.lines().join("; ")
        )
    })?;
    Ok(Loaded {
        n,
        lan_address: accepted.config.network.lan.address.get_ref().addr,
        desired: desired_of(&accepted),
    })
}

fn desired_of(a: &Accepted) -> Desired {
    let sha = atomix_config::config_sha256(&a.text);
    Desired {
        tree: atomix_config::render::render(&a.config, &sha),
        apps: a.apps.clone(),
    }
}

fn read_apps(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir");
                let bytes =
                    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                out.insert(format!("apps/{}", rel.display()), bytes);
            }
        }
    }
    Ok(out)
}

/// What a finished job reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: JobResult,
    pub rollback: Rollback,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.result.error.is_none()
    }
}

/// Runs apply jobs.
#[derive(Debug, Clone)]
pub struct Applier {
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub failpoints: Failpoints,
    pub admin: Admin,
}

/// A step failure: which step, and what went wrong.
struct Failed(Step, String);

impl Applier {
    pub(crate) fn store(&self) -> Store {
        Store::new(self.paths.config_store())
    }

    pub(crate) fn executor(&self) -> Executor<'_> {
        Executor {
            paths: &self.paths,
            system: self.system.as_ref(),
        }
    }

    /// Runs one step: holds it for a `sleep` failpoint, does the work, checks the
    /// failpoint, records the event.
    fn step<T>(
        &self,
        job: &JobHandle,
        step: Step,
        work: impl FnOnce() -> Result<(T, String), String>,
    ) -> Result<T, Failed> {
        self.failpoints.hold(step.name());
        let (value, message) = work().map_err(|e| Failed(step, e))?;
        self.failpoints
            .check(step.name())
            .map_err(|e| Failed(step, e.to_string()))?;
        job.event(step.name(), Level::Info, message);
        Ok(value)
    }

    fn sync(&self, job: &JobHandle, desired: &Desired, owned: &mut Owned) -> Result<(), Failed> {
        for plan in plan_sync(Some(desired), &owned.files.clone(), &self.admin) {
            self.step(job, plan.step, || {
                self.executor().run(&plan, owned).map(|m| ((), m))
            })?;
        }
        Ok(())
    }

    /// Marks the booted slot good. Always, whatever `update.rauc` says: that setting only
    /// enables the update timer, while the slot's state is what keeps the bootloader from
    /// falling back to the other slot.
    fn mark_good(&self, job: &JobHandle) -> Result<(), Failed> {
        self.step(job, Step::MarkGood, || {
            self.system
                .run(&Action::RaucMarkGood)
                .map(|()| ((), "slot marked good".into()))
                .map_err(|e| e.to_string())
        })
    }

    /// Applies an accepted config as a new generation; rolls back on failure.
    pub fn import(
        &self,
        job: JobHandle,
        accepted: Accepted,
        origin: Origin,
        signer: Option<String>,
    ) -> Outcome {
        let store = self.store();
        let previous = job.snapshot().and_then(|j| j.previous_generation);
        let mut owned = Owned::load(&self.paths);
        let mut staged = None;
        let result = (|| {
            self.step(&job, Step::Validate, || {
                // The names validation accepted (bundle::read_bundle checks them with
                // the same function): files that cannot be written are refused here,
                // before anything is.
                atomix_config::bundle::check_names(
                    accepted.apps.keys().map(String::as_str),
                    std::iter::empty(),
                )
                .map_err(|e| e.to_string())?;
                Ok(((), format!("valid, {} warnings", accepted.warnings.len())))
            })?;
            let desired = self.step(&job, Step::Render, || {
                let d = desired_of(&accepted);
                let m = format!("{} files", d.tree.files.len());
                Ok((d, m))
            })?;
            let n = self.step(&job, Step::Persist, || {
                let source = SourceRecord {
                    origin,
                    sha256: atomix_config::config_sha256(&accepted.text),
                    signer: signer.clone(),
                    time: crate::now_rfc3339(),
                };
                let apps = RenderedTree {
                    files: desired.apps.clone(),
                };
                let n = store
                    .stage(&accepted.text, &source, &desired.tree, &apps)
                    .map_err(|e| chain(&e))?;
                staged = Some(n);
                job.set_staged(n);
                Ok((n, format!("generation {n} written")))
            })?;
            self.sync(&job, &desired, &mut owned)?;
            self.step(&job, Step::Switch, || {
                store.switch(n).map_err(|e| chain(&e))?;
                store.prune().map_err(|e| chain(&e))?;
                Ok(((), format!("current -> generation {n}")))
            })?;
            self.mark_good(&job)?;
            Ok(n)
        })();
        let outcome = match result {
            Ok(n) => Outcome {
                result: JobResult {
                    generation: Some(n),
                    ..JobResult::default()
                },
                rollback: Rollback {
                    state: RollbackState::None,
                    generation: None,
                },
            },
            Err(Failed(step, error)) => {
                job.event(step.name(), Level::Error, error.clone());
                let rollback = match staged {
                    None => Rollback {
                        state: RollbackState::None,
                        generation: None,
                    },
                    Some(n) => self.roll_back(&job, n, previous, &mut owned),
                };
                Outcome {
                    result: JobResult {
                        generation: store.current().ok().flatten(),
                        failed_step: Some(step.name().into()),
                        error: Some(error),
                    },
                    rollback,
                }
            }
        };
        job.finish(outcome.result.clone(), outcome.rollback);
        outcome
    }

    /// Back to `previous` (None: the unprovisioned defaults) after generation `staged`
    /// failed to apply.
    fn roll_back(
        &self,
        job: &JobHandle,
        staged: u64,
        previous: Option<u64>,
        owned: &mut Owned,
    ) -> Rollback {
        let target = previous.map_or("the unprovisioned defaults".to_owned(), |p| {
            format!("generation {p}")
        });
        job.event("rollback", Level::Warning, format!("restoring {target}"));
        let result = (|| {
            self.failpoints.hold("rollback");
            self.failpoints
                .check("rollback")
                .map_err(|e| e.to_string())?;
            let desired = self.restore_store(staged, previous)?;
            let plans = plan_sync(desired.as_ref(), &owned.files.clone(), &self.admin);
            for plan in plans {
                self.executor().run(&plan, owned)?;
            }
            Ok::<_, String>(())
        })();
        match result {
            Ok(()) => {
                job.event("rollback", Level::Info, format!("restored {target}"));
                Rollback {
                    state: RollbackState::Completed,
                    generation: previous,
                }
            }
            Err(e) => {
                job.event("rollback", Level::Error, format!("rollback failed: {e}"));
                Rollback {
                    state: RollbackState::Failed,
                    generation: previous,
                }
            }
        }
    }

    /// Points `current` back at `previous`, discards `staged`, and reads what the live
    /// system should hold.
    fn restore_store(&self, staged: u64, previous: Option<u64>) -> Result<Option<Desired>, String> {
        let store = self.store();
        match previous {
            Some(p) => store.switch(p).map_err(|e| chain(&e))?,
            None => store.clear_current().map_err(|e| chain(&e))?,
        }
        store.discard(staged).map_err(|e| chain(&e))?;
        previous
            .map(|p| load_generation(&store, p).map(|l| l.desired))
            .transpose()
    }

    /// Re-applies the current generation at boot (the live paths start empty). No
    /// rollback: a failure leaves the slot unmarked, so RAUC can fall back.
    pub fn reapply(&self, job: JobHandle, n: u64) -> Outcome {
        let mut owned = Owned::load(&self.paths);
        let result = (|| {
            let loaded = self.step(&job, Step::Validate, || {
                let l = load_generation(&self.store(), n)?;
                Ok((l, format!("generation {n} is valid")))
            })?;
            self.sync(&job, &loaded.desired, &mut owned)?;
            self.mark_good(&job)?;
            Ok(())
        })();
        let mut outcome = Outcome {
            result: JobResult {
                generation: Some(n),
                ..JobResult::default()
            },
            rollback: Rollback {
                state: RollbackState::None,
                generation: None,
            },
        };
        if let Err(Failed(step, error)) = result {
            job.event(step.name(), Level::Error, error.clone());
            outcome.result.failed_step = Some(step.name().into());
            outcome.result.error = Some(error);
        }
        job.finish(outcome.result.clone(), outcome.rollback);
        outcome
    }

    /// Finishes jobs a crash cut off: the store goes back to the job's previous
    /// generation and, if that is "unprovisioned", the live files go too (a provisioned
    /// previous generation is re-applied by the boot flow right after). An update job
    /// changed no config: it is only marked failed (RAUC's own state says whether the
    /// install got through; the bundle is removed with the other leftover uploads).
    pub fn recover(&self, tracker: &Tracker) {
        for job in tracker.interrupted() {
            if job.kind == JobKind::Update {
                let message = "cut off by a restart; whether RAUC finished the install is unknown: see `rauc status`";
                crate::logging::warn(&format!("job {}: {message}", job.id));
                let current = self.store().current().ok().flatten();
                let rollback = Rollback {
                    state: RollbackState::None,
                    generation: None,
                };
                tracker.close_interrupted(job, current, rollback, message);
                continue;
            }
            let rollback = self.recover_one(&job);
            let target = job
                .previous_generation
                .map_or("the unprovisioned defaults".into(), |p| {
                    format!("generation {p}")
                });
            let message = match rollback.state {
                RollbackState::Failed => {
                    format!("cut off by a restart; restoring {target} failed")
                }
                _ => format!("cut off by a restart; rolled back to {target}"),
            };
            crate::logging::warn(&format!("job {}: {message}", job.id));
            tracker.close_interrupted(job, rollback.generation, rollback, &message);
        }
    }

    fn recover_one(&self, job: &Job) -> Rollback {
        let previous = job.previous_generation;
        let result = (|| {
            let store = self.store();
            if let Some(n) = job.staged_generation {
                self.restore_store(n, previous)?;
            } else if store.current().map_err(|e| chain(&e))? != previous {
                // A job with nothing staged changed nothing.
                return Err("the store changed outside of this job".to_owned());
            }
            if previous.is_none() {
                let mut owned = Owned::load(&self.paths);
                for plan in plan_sync(None, &owned.files.clone(), &self.admin) {
                    self.executor().run(&plan, &mut owned)?;
                }
            }
            Ok(())
        })();
        Rollback {
            state: match result {
                Ok(()) => RollbackState::Completed,
                Err(e) => {
                    crate::logging::error(&format!("job {}: recovery: {e}", job.id));
                    RollbackState::Failed
                }
            },
            generation: previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::check_text;
    use crate::jobs::JobState;
    use crate::system::FakeSystem;

    const EXAMPLE: &str = include_str!("../../../../examples/config.toml");

    fn admin() -> Admin {
        Admin::from_passwd("root:x:0:0::/root:/bin/sh\nadmin:x:1001:1001::/home/admin:/bin/sh\n")
    }

    fn accepted(text: &str) -> Accepted {
        check_text(text.to_owned(), BTreeMap::new()).expect("valid config")
    }

    fn applier(root: &Path, system: Arc<FakeSystem>, failpoints: &str) -> Applier {
        Applier {
            paths: Paths::new(root),
            system,
            failpoints: Failpoints::parse(failpoints).unwrap(),
            admin: admin(),
        }
    }

    fn ops_text(plan: &[StepPlan], step: Step) -> Vec<String> {
        plan.iter()
            .find(|p| p.step == step)
            .unwrap()
            .ops
            .iter()
            .map(|op| match op {
                Op::Write { path, .. } => format!("write {}", path.display()),
                Op::Remove { path } => format!("remove {}", path.display()),
                Op::Restore { path } => format!("restore {}", path.display()),
                Op::HostnameFromFile { path } => {
                    format!("hostnamectl hostname from {}", path.display())
                }
                Op::Symlink { path, target } => {
                    format!("link {} {}", path.display(), target.display())
                }
                Op::Run(a) => a.to_string(),
            })
            .collect()
    }

    #[test]
    fn admin_uid_comes_from_passwd() {
        assert_eq!(admin().uid, 1001);
        assert_eq!(Admin::from_passwd("").uid, 1000);
    }

    #[test]
    fn plan_for_a_first_apply() {
        let d = desired_of(&accepted(EXAMPLE));
        let plan = plan_sync(Some(&d), &BTreeSet::new(), &admin());
        let steps: Vec<Step> = plan.iter().map(|p| p.step).collect();
        assert_eq!(steps, Step::ALL[3..12]);
        assert_eq!(
            ops_text(&plan, Step::SyncQuadlets),
            [
                "write etc/containers/systemd/web-data.volume",
                "write etc/containers/systemd/web.container",
                "write etc/containers/systemd/users/1001/metrics.container",
            ]
        );
        assert_eq!(
            ops_text(&plan, Step::Units),
            [
                "systemctl daemon-reload",
                "systemctl restart web.service",
                "loginctl enable-linger admin",
                "systemctl start user@1001.service",
                "systemctl --user -M admin@ daemon-reload",
                "systemctl --user -M admin@ restart metrics.service",
            ]
        );
        assert_eq!(
            ops_text(&plan, Step::Time),
            [
                "write etc/chrony/sources.d/atomix.sources",
                "write etc/timezone",
                "link etc/localtime /usr/share/zoneinfo/Europe/Berlin",
                "systemctl restart chrony.service",
            ]
        );
        assert_eq!(
            ops_text(&plan, Step::Firewall),
            [
                "write etc/nftables.d/atomix.nft",
                "nft -f etc/nftables.d/atomix.nft"
            ]
        );
        assert_eq!(
            ops_text(&plan, Step::Hostname),
            ["write etc/hostname", "hostnamectl hostname edge-042"]
        );
        assert_eq!(
            ops_text(&plan, Step::SshKeys),
            ["write etc/ssh/authorized_keys/admin"]
        );
        assert_eq!(
            ops_text(&plan, Step::UpdateTimer),
            [
                "write etc/systemd/system/atomix-update.service",
                "write etc/systemd/system/atomix-update.timer",
                "systemctl daemon-reload",
                "systemctl enable atomix-update.timer",
                "systemctl restart atomix-update.timer",
            ]
        );
    }

    #[test]
    fn plan_reloads_units_only_when_there_are_quadlet_files() {
        let (head, rest) = EXAMPLE.split_once("[[containers]]").unwrap();
        let without = format!("{head}{}", &rest[rest.find("[update]").unwrap()..]);
        assert!(!without.contains("[[containers]]"));
        let d = desired_of(&accepted(&without));
        let plan = plan_sync(Some(&d), &BTreeSet::new(), &admin());
        assert!(
            ops_text(&plan, Step::Units).is_empty(),
            "no containers, before or after: no reload"
        );
        // A container removed: the generator must forget it.
        let owned: BTreeSet<PathBuf> = ["etc/containers/systemd/old.container"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let plan = plan_sync(Some(&d), &owned, &admin());
        assert_eq!(
            ops_text(&plan, Step::Units),
            ["systemctl stop old.service", "systemctl daemon-reload"]
        );
    }

    #[test]
    fn plan_stops_the_update_timer_before_removing_it() {
        let owned: BTreeSet<PathBuf> = [
            "etc/systemd/system/atomix-update.service",
            "etc/systemd/system/atomix-update.timer",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let off = EXAMPLE.replace("rauc = true", "rauc = false");
        let d = desired_of(&accepted(&off));
        for plan in [
            plan_sync(Some(&d), &owned, &admin()),
            plan_sync(None, &owned, &admin()),
        ] {
            assert_eq!(
                ops_text(&plan, Step::UpdateTimer),
                [
                    "systemctl disable --now atomix-update.timer",
                    "remove etc/systemd/system/atomix-update.service",
                    "remove etc/systemd/system/atomix-update.timer",
                    "systemctl daemon-reload",
                ]
            );
        }
        let never = plan_sync(Some(&d), &BTreeSet::new(), &admin());
        assert!(
            ops_text(&never, Step::UpdateTimer).is_empty(),
            "no timer before or after: nothing to do"
        );
    }

    #[test]
    fn plan_removes_only_owned_files_and_stops_their_units() {
        let owned: BTreeSet<PathBuf> = [
            "etc/containers/systemd/old.container",
            "etc/hostname",
            "etc/nftables.d/atomix.nft",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let d = desired_of(&accepted(EXAMPLE));
        let plan = plan_sync(Some(&d), &owned, &admin());
        let quadlets = ops_text(&plan, Step::SyncQuadlets);
        assert_eq!(quadlets[0], "remove etc/containers/systemd/old.container");
        assert_eq!(quadlets.len(), 4);
        let units = ops_text(&plan, Step::Units);
        assert_eq!(
            units[..2],
            ["systemctl stop old.service", "systemctl daemon-reload"]
        );

        let defaults = plan_sync(None, &owned, &admin());
        assert_eq!(
            ops_text(&defaults, Step::SyncQuadlets),
            ["remove etc/containers/systemd/old.container"]
        );
        assert_eq!(
            ops_text(&defaults, Step::Firewall),
            [
                "remove etc/nftables.d/atomix.nft",
                "nft add table inet atomix ; delete table inet atomix"
            ]
        );
        assert_eq!(
            ops_text(&defaults, Step::Hostname),
            [
                "restore etc/hostname",
                "hostnamectl hostname from etc/hostname"
            ],
            "the image's /etc/hostname is put back, never removed"
        );
    }

    fn run_import(a: &Applier, tracker: &Arc<Tracker>, text: &str) -> (Outcome, Job) {
        let store = Store::new(a.paths.config_store());
        let job = tracker
            .start(Origin::Api, store.current().unwrap())
            .unwrap();
        let id = job.id.clone();
        let outcome = a.import(job, accepted(text), Origin::Api, Some("SHA256:x".into()));
        (outcome, tracker.get(&id).unwrap())
    }

    #[test]
    fn a_first_apply_writes_switches_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        let (outcome, job) = run_import(&a, &tracker, EXAMPLE);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result.unwrap().generation, Some(1));
        let steps: Vec<&str> = job.events.iter().map(|e| e.step.as_str()).collect();
        let all: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(steps, all);
        let store = Store::new(a.paths.config_store());
        assert_eq!(store.current().unwrap(), Some(1));
        let source: SourceRecord =
            serde_json::from_slice(&std::fs::read(store.path(1).join("source.json")).unwrap())
                .unwrap();
        assert_eq!(
            (source.origin, source.signer.as_deref()),
            (Origin::Api, Some("SHA256:x"))
        );
        let live = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(live("etc/hostname"), "edge-042\n");
        assert!(
            live("etc/containers/systemd/web.container").contains("Image=ghcr.io/acme/web:1.4.2")
        );
        assert!(sys.commands().contains(&"rauc status mark-good".to_owned()));
        // The 13 written files and the etc/localtime link.
        assert_eq!(Owned::load(&a.paths).files.len(), 14);
    }

    #[test]
    fn a_failed_first_apply_returns_to_unprovisioned_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::failing_on("nft -f"));
        let a = applier(dir.path(), sys.clone(), "");
        let image_default = dir.path().join("etc/dnsmasq.d/atomix-lan.conf");
        std::fs::create_dir_all(image_default.parent().unwrap()).unwrap();
        std::fs::write(&image_default, "# image default\n").unwrap();
        // The image's host name, time zone and localtime link.
        let etc = dir.path().join("etc");
        std::fs::write(etc.join("hostname"), "atomix\n").unwrap();
        std::fs::write(etc.join("timezone"), "Etc/UTC\n").unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", etc.join("localtime")).unwrap();
        let tracker = Tracker::new(a.paths.jobs());
        let (outcome, job) = run_import(&a, &tracker, EXAMPLE);
        assert_eq!(job.state, JobState::Failed);
        let result = job.result.unwrap();
        assert_eq!(result.failed_step.as_deref(), Some("firewall"));
        assert!(result.error.unwrap().contains("nft -f"));
        assert_eq!(
            outcome.rollback,
            Rollback {
                state: RollbackState::Completed,
                generation: None
            }
        );
        let store = Store::new(a.paths.config_store());
        assert_eq!(store.current().unwrap(), None);
        assert!(
            store.list().unwrap().is_empty(),
            "the failed generation is discarded"
        );
        assert!(!dir
            .path()
            .join("etc/containers/systemd/web.container")
            .exists());
        assert_eq!(Owned::load(&a.paths).files, BTreeSet::new());
        assert_eq!(
            std::fs::read_to_string(&image_default).unwrap(),
            "# image default\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname")).unwrap(),
            "atomix\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("timezone")).unwrap(),
            "Etc/UTC\n"
        );
        assert_eq!(
            std::fs::read_link(etc.join("localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        let cmds = sys.commands();
        assert!(
            cmds.contains(&"systemctl stop web.service".to_owned()),
            "{cmds:?}"
        );
        assert_eq!(
            cmds.last().unwrap(),
            "nft add table inet atomix ; delete table inet atomix"
        );
    }

    #[test]
    fn every_step_after_persist_rolls_back_to_the_previous_generation() {
        let second = EXAMPLE.replace("edge-042", "edge-043");
        for step in &Step::ALL[2..] {
            let dir = tempfile::tempdir().unwrap();
            let sys = Arc::new(FakeSystem::default());
            let good = applier(dir.path(), sys.clone(), "");
            let tracker = Tracker::new(good.paths.jobs());
            assert!(run_import(&good, &tracker, EXAMPLE).0.succeeded());
            let failing = applier(dir.path(), sys, &format!("{}=error", step.name()));
            let (outcome, job) = run_import(&failing, &tracker, &second);
            assert_eq!(job.state, JobState::Failed, "{step}");
            assert_eq!(
                outcome.rollback,
                Rollback {
                    state: RollbackState::Completed,
                    generation: Some(1)
                },
                "{step}"
            );
            let store = Store::new(good.paths.config_store());
            assert_eq!(store.current().unwrap(), Some(1), "{step}");
            assert_eq!(store.list().unwrap(), [1], "{step}");
            assert_eq!(
                std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
                "edge-042\n",
                "{step}"
            );
        }
    }

    #[test]
    fn turning_the_update_timer_off_is_undone_by_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        let timer = dir.path().join("etc/systemd/system/atomix-update.timer");
        let timer_text = std::fs::read_to_string(&timer).unwrap();
        assert!(timer_text.contains("OnUnitActiveSec=1d"), "{timer_text}");

        sys.actions.lock().unwrap().clear();
        let off = EXAMPLE.replace("rauc = true", "rauc = false");
        let failing = applier(dir.path(), sys.clone(), "switch=error");
        let (_, job) = run_import(&failing, &tracker, &off);
        assert_eq!(job.rollback.state, RollbackState::Completed);
        assert_eq!(std::fs::read_to_string(&timer).unwrap(), timer_text);
        let cmds = sys.commands();
        let disabled = cmds
            .iter()
            .position(|c| c == "systemctl disable --now atomix-update.timer")
            .expect("the timer was stopped");
        let restarted = cmds
            .iter()
            .rposition(|c| c == "systemctl restart atomix-update.timer")
            .expect("and started again by the rollback");
        assert!(disabled < restarted, "{cmds:?}");

        let (outcome, _) = run_import(&a, &tracker, &off);
        assert!(outcome.succeeded());
        assert!(!timer.exists());
        assert!(!dir
            .path()
            .join("etc/systemd/system/atomix-update.service")
            .exists());
    }

    #[test]
    fn failures_before_persist_change_nothing_and_a_failed_rollback_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "render=error");
        let tracker = Tracker::new(a.paths.jobs());
        let (outcome, _) = run_import(&a, &tracker, EXAMPLE);
        assert_eq!(outcome.rollback.state, RollbackState::None);
        assert!(sys.commands().is_empty());
        assert!(!dir.path().join("etc").exists());

        let a = applier(dir.path(), sys, "lan=error,rollback=error");
        let (outcome, job) = run_import(&a, &tracker, EXAMPLE);
        assert_eq!(outcome.rollback.state, RollbackState::Failed);
        assert!(job
            .events
            .iter()
            .any(|e| e.step == "rollback" && e.level == Level::Error));
    }

    #[test]
    fn reapply_marks_good_only_on_full_success() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        sys.actions.lock().unwrap().clear();
        let failing = applier(dir.path(), sys.clone(), "units=error");
        let outcome = failing.reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1);
        assert!(!outcome.succeeded());
        assert!(!sys.commands().contains(&"rauc status mark-good".to_owned()));
        let outcome = a.reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(sys.commands().last().unwrap(), "rauc status mark-good");
    }

    /// What a re-apply over a live system that already holds the generation runs: the
    /// units and the update timer (the running systemd has to load them), and mark-good;
    /// no service that read its files is restarted or reloaded.
    #[test]
    fn a_reapply_over_identical_files_restarts_nothing_that_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        sys.actions.lock().unwrap().clear();
        let job = tracker.start(Origin::Boot, Some(1)).unwrap();
        let id = job.id.clone();
        assert!(a.reapply(job, 1).succeeded());
        assert_eq!(
            sys.commands(),
            [
                "systemctl daemon-reload",
                "systemctl restart web.service",
                "loginctl enable-linger admin",
                "systemctl start user@1001.service",
                "systemctl --user -M admin@ daemon-reload",
                "systemctl --user -M admin@ restart metrics.service",
                // Checks instead of restarts: that they are running.
                "systemctl start dnsmasq.service",
                "systemctl start chrony.service",
                "systemctl daemon-reload",
                "systemctl enable atomix-update.timer",
                "systemctl restart atomix-update.timer",
                "rauc status mark-good",
            ]
        );
        let events = tracker.get(&id).unwrap().events;
        let lan = events.iter().find(|e| e.step == "lan").unwrap();
        assert_eq!(
            lan.message,
            "0 files written, 3 unchanged, 0 removed, 0 actions, 1 checked"
        );
    }

    /// A service that did not come up with files that were already in place still fails
    /// the boot's re-apply (so an update that breaks it is not marked good).
    #[test]
    fn a_service_that_failed_with_unchanged_files_fails_the_reapply() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        let failing = Arc::new(FakeSystem::failing_on("start dnsmasq.service"));
        let b = applier(dir.path(), failing.clone(), "");
        let outcome = b.reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1);
        assert_eq!(outcome.result.failed_step.as_deref(), Some("lan"));
        assert!(!failing
            .commands()
            .contains(&"rauc status mark-good".to_owned()));
    }

    /// Files written whose actions failed (or were cut off) are not "in place": the next
    /// run acts again although the files are unchanged, until the actions succeed.
    #[test]
    fn a_step_whose_actions_failed_acts_again_with_its_files_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        std::fs::write(dir.path().join("etc/hostname"), "old\n").unwrap();
        let failing = Arc::new(FakeSystem::failing_on("hostnamectl"));
        let b = applier(dir.path(), failing, "");
        let outcome = b.reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1);
        assert_eq!(outcome.result.failed_step.as_deref(), Some("hostname"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
            "edge-042\n"
        );
        assert!(Owned::load(&a.paths).unsettled.contains("hostname"));
        sys.actions.lock().unwrap().clear();
        assert!(a
            .reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1)
            .succeeded());
        assert!(sys
            .commands()
            .contains(&"hostnamectl hostname edge-042".to_owned()));
        assert!(Owned::load(&a.paths).unsettled.is_empty());
        // Settled: the next run leaves it alone.
        sys.actions.lock().unwrap().clear();
        assert!(a
            .reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1)
            .succeeded());
        assert!(!sys.commands().iter().any(|c| c.starts_with("hostnamectl")));
    }

    #[test]
    fn a_reapply_runs_the_actions_of_the_steps_whose_files_changed() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        sys.actions.lock().unwrap().clear();
        std::fs::write(dir.path().join("etc/hostname"), "someone-else\n").unwrap();
        std::fs::remove_file(dir.path().join("etc/localtime")).unwrap();
        assert!(a
            .reapply(tracker.start(Origin::Boot, Some(1)).unwrap(), 1)
            .succeeded());
        let commands = sys.commands();
        assert!(commands.contains(&"hostnamectl hostname edge-042".to_owned()));
        assert!(commands.contains(&"systemctl restart chrony.service".to_owned()));
        for untouched in [
            "networkctl reload",
            "systemctl restart dnsmasq.service",
            "nft -f",
        ] {
            assert!(
                !commands.iter().any(|c| c.starts_with(untouched)),
                "{untouched} in {commands:?}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
            "edge-042\n"
        );
    }

    #[test]
    fn recovery_only_closes_an_update_job_and_touches_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        let job = tracker
            .start_kind(JobKind::Update, Origin::Api, Some(1))
            .unwrap();
        let id = job.id.clone();
        std::mem::forget(job);
        sys.actions.lock().unwrap().clear();

        let tracker = Tracker::new(a.paths.jobs());
        a.recover(&tracker);
        let job = tracker.get(&id).unwrap();
        assert_eq!((job.kind, job.state), (JobKind::Update, JobState::Failed));
        assert_eq!(job.rollback.state, RollbackState::None);
        let result = job.result.unwrap();
        assert_eq!(result.generation, Some(1));
        assert!(result.error.unwrap().contains("rauc status"));
        assert!(sys.commands().is_empty(), "{:?}", sys.commands());
        assert_eq!(
            Store::new(a.paths.config_store()).current().unwrap(),
            Some(1)
        );
    }

    #[test]
    fn recovery_rolls_back_a_job_cut_off_after_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(FakeSystem::default());
        let a = applier(dir.path(), sys, "");
        let tracker = Tracker::new(a.paths.jobs());
        assert!(run_import(&a, &tracker, EXAMPLE).0.succeeded());
        // A job staged generation 2 and switched, then the power went.
        let store = Store::new(a.paths.config_store());
        let job = tracker.start(Origin::Api, Some(1)).unwrap();
        let d = desired_of(&accepted(EXAMPLE));
        let source = SourceRecord {
            origin: Origin::Api,
            sha256: "x".into(),
            signer: None,
            time: "t".into(),
        };
        let n = store
            .stage(EXAMPLE, &source, &d.tree, &RenderedTree::default())
            .unwrap();
        job.set_staged(n);
        store.switch(n).unwrap();
        let id = job.id.clone();
        std::mem::forget(job);

        let tracker = Tracker::new(a.paths.jobs());
        a.recover(&tracker);
        let job = tracker.get(&id).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.rollback,
            Rollback {
                state: RollbackState::Completed,
                generation: Some(1)
            }
        );
        assert_eq!(store.current().unwrap(), Some(1));
        assert_eq!(store.list().unwrap(), [1]);
    }

    fn with_apps(files: &[(&str, &str)]) -> Accepted {
        let text = format!(
            "{}\n[[containers]]\nname = \"web\"\nimage = \"docker.io/library/nginx\"\nvolumes = [\"/data/apps/web:/usr/share/nginx/html:ro\"]\n",
            EXAMPLE
                .split("[[containers]]")
                .next()
                .unwrap()
        );
        let apps = files
            .iter()
            .map(|(p, c)| (format!("apps/web/{p}"), c.as_bytes().to_vec()))
            .collect();
        check_text(text, apps).expect("valid config")
    }

    /// A container with the apps dir as a read-write volume swaps a directory or a file
    /// for a symbolic link to the host between two applies: the next apply (and its
    /// rollback) report the link by its path and touch nothing outside.
    #[test]
    fn a_symlink_planted_under_the_apps_dir_is_reported_not_followed() {
        type Files = &'static [(&'static str, &'static str)];
        let cases: &[(&str, &str, Files)] = &[
            // (what is replaced by a link, where the link points, the second bundle)
            (
                "sub",
                "outside",
                &[("sub/index.html", "new"), ("file.txt", "new")],
            ),
            (
                "file.txt",
                "outside/file.txt",
                &[("sub/index.html", "new"), ("file.txt", "new")],
            ),
            // The second bundle drops the files: their removal goes through the link.
            ("sub", "outside", &[("file.txt", "old")]),
        ];
        for (replaced, target, second) in cases {
            let dir = tempfile::tempdir().unwrap();
            let a = applier(dir.path(), Arc::new(FakeSystem::default()), "");
            let tracker = Tracker::new(a.paths.jobs());
            let outside = dir.path().join("outside");
            std::fs::create_dir_all(&outside).unwrap();
            std::fs::write(outside.join("index.html"), "host").unwrap();
            std::fs::write(outside.join("file.txt"), "host").unwrap();

            let run = |acc: Accepted| {
                let store = Store::new(a.paths.config_store());
                let job = tracker
                    .start(Origin::Api, store.current().unwrap())
                    .unwrap();
                let id = job.id.clone();
                let outcome = a.import(job, acc, Origin::Api, None);
                (outcome, tracker.get(&id).unwrap())
            };
            let (first, _) = run(with_apps(&[("sub/index.html", "old"), ("file.txt", "old")]));
            assert!(first.succeeded(), "{first:?}");
            let apps = dir.path().join("data/apps/web");
            assert_eq!(
                std::fs::read_to_string(apps.join("sub/index.html")).unwrap(),
                "old"
            );

            // What the container does through its volume.
            let planted = apps.join(replaced);
            if planted.is_dir() {
                std::fs::remove_dir_all(&planted).unwrap();
            } else {
                std::fs::remove_file(&planted).unwrap();
            }
            std::os::unix::fs::symlink(dir.path().join(target), &planted).unwrap();

            let (outcome, job) = run(with_apps(second));
            let result = job.result.unwrap();
            assert_eq!(result.failed_step.as_deref(), Some("apps"), "{replaced}");
            let want = format!(
                "{} is a symbolic link (a container may have planted it): not followed",
                planted.display()
            );
            assert_eq!(result.error.as_deref(), Some(want.as_str()), "{replaced}");
            // The rollback meets the same link: it says so rather than claiming success.
            assert_eq!(outcome.rollback.state, RollbackState::Failed, "{replaced}");
            assert!(
                job.events
                    .iter()
                    .any(|e| e.message.contains(&want) && e.step == "rollback"),
                "{replaced}: {:?}",
                job.events
            );
            for f in ["index.html", "file.txt"] {
                assert_eq!(
                    std::fs::read_to_string(outside.join(f)).unwrap(),
                    "host",
                    "{replaced}: outside/{f}"
                );
            }
            let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
            assert_eq!(
                left.len(),
                2,
                "{replaced}: nothing created outside: {left:?}"
            );
        }
    }

    /// A first apply that fails after the host name and time zone were set goes back to
    /// the image's: files, the localtime link and the running host name.
    #[test]
    fn a_failed_first_apply_puts_back_the_images_host_name_and_time_zone() {
        for step in [
            Step::SshKeys,
            Step::UpdateTimer,
            Step::Switch,
            Step::MarkGood,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let sys = Arc::new(FakeSystem::default());
            let a = applier(dir.path(), sys.clone(), &format!("{}=error", step.name()));
            let etc = dir.path().join("etc");
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(etc.join("hostname"), "atomix\n").unwrap();
            std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", etc.join("localtime"))
                .unwrap();
            // The image has no etc/timezone: the one the apply wrote goes again.
            let tracker = Tracker::new(a.paths.jobs());
            let (outcome, job) = run_import(&a, &tracker, EXAMPLE);
            assert_eq!(job.state, JobState::Failed, "{step}");
            assert_eq!(outcome.rollback.state, RollbackState::Completed, "{step}");
            assert_eq!(
                std::fs::read_to_string(etc.join("hostname")).unwrap(),
                "atomix\n",
                "{step}"
            );
            assert!(!etc.join("timezone").exists(), "{step}");
            assert_eq!(
                std::fs::read_link(etc.join("localtime")).unwrap(),
                Path::new("/usr/share/zoneinfo/Etc/UTC"),
                "{step}"
            );
            let cmds = sys.commands();
            let hostnames: Vec<&String> = cmds
                .iter()
                .filter(|c| c.starts_with("hostnamectl"))
                .collect();
            assert_eq!(
                hostnames,
                [
                    "hostnamectl hostname edge-042",
                    "hostnamectl hostname atomix"
                ],
                "{step}: the rollback sets the image's host name again"
            );
            assert_eq!(Owned::load(&a.paths).files, BTreeSet::new(), "{step}");
            let originals: Vec<_> = walk(&a.paths.run().join("originals"));
            assert!(
                originals.is_empty(),
                "{step}: saved originals left: {originals:?}"
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    /// Bundle files whose names no apply can write (a file where another needs a
    /// directory, a name past NAME_MAX) are refused at validate, before anything is
    /// written, with the rule validation uses.
    #[test]
    fn the_apply_refuses_bundle_names_validation_refuses() {
        let long = format!("{}.html", "x".repeat(250));
        let cases: &[(&[&str], String)] = &[
            (
                &["a", "a/b"],
                "apps/web/a/b: refused: apps/web/a is a file in the bundle: a file and a directory cannot share a name".into(),
            ),
            (
                &[long.as_str()],
                format!("apps/web/{long}: refused: a name component is longer than 240 bytes"),
            ),
        ];
        for (names, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let a = applier(dir.path(), Arc::new(FakeSystem::default()), "");
            let tracker = Tracker::new(a.paths.jobs());
            let files: Vec<(&str, &str)> = names.iter().map(|n| (*n, "x")).collect();
            let store = Store::new(a.paths.config_store());
            let job = tracker.start(Origin::Api, None).unwrap();
            let id = job.id.clone();
            a.import(job, with_apps(&files), Origin::Api, None);
            let result = tracker.get(&id).unwrap().result.unwrap();
            assert_eq!(result.failed_step.as_deref(), Some("validate"));
            assert_eq!(result.error.as_ref(), Some(want));
            assert_eq!(store.list().unwrap(), Vec::<u64>::new());
            assert!(!dir.path().join("data/apps").exists());
        }
    }
}
