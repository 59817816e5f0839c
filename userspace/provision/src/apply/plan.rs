//! The planner: what takes the live system from the files this service owns to a
//! desired generation (or back to the image's defaults), as plain data. [`plan_sync`]
//! returns one [`StepPlan`] per sync step, its file operations and actions in order;
//! [`live_path`] says where each rendered file goes. Nothing here touches the system.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use atomix_config::render::RenderedTree;

use super::Step;
use crate::system::Action;

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

/// One route: a rendered file, or every file under a rendered directory (a name ending
/// in `/`), and where it goes live.
struct Route {
    /// None for a live file made from another one, not rendered itself.
    rendered: Option<&'static str>,
    /// Relative to the root; a directory when `rendered` is one.
    live: String,
    step: Step,
}

/// Where rendered files go and which step puts them there, read both ways: forwards for
/// the files to write ([`live_path`]), backwards for the step of an owned file to remove.
fn routes(admin: &Admin) -> [Route; 12] {
    let route = |rendered, live: &str, step| Route {
        rendered,
        live: live.to_owned(),
        step,
    };
    [
        route(
            Some("quadlet/rootful/"),
            "etc/containers/systemd/",
            Step::SyncQuadlets,
        ),
        route(
            Some("quadlet/rootless/"),
            &format!("etc/containers/systemd/users/{}/", admin.uid),
            Step::SyncQuadlets,
        ),
        route(Some("networkd/"), "etc/systemd/network/", Step::Lan),
        // The image's default LAN service lives in this file: replace it, never both.
        route(
            Some("dnsmasq/atomix.conf"),
            "etc/dnsmasq.d/atomix-lan.conf",
            Step::Lan,
        ),
        route(Some("chrony/"), "etc/chrony/sources.d/", Step::Time),
        route(Some("timezone"), "etc/timezone", Step::Time),
        // The link to the zone, made from `timezone`.
        route(None, LOCALTIME, Step::Time),
        route(Some("nftables/"), "etc/nftables.d/", Step::Firewall),
        route(Some("hostname"), HOSTNAME, Step::Hostname),
        route(
            Some("authorized_keys"),
            &format!("etc/ssh/authorized_keys/{}", admin.name),
            Step::SshKeys,
        ),
        route(Some("systemd/"), "etc/systemd/system/", Step::UpdateTimer),
        route(Some("apps/"), "data/apps/", Step::Apps),
    ]
}

/// What follows `pattern` in `path` when the pattern covers it: the rest of the path
/// under a directory (ending in `/`), or "" for the file itself.
fn covered<'p>(pattern: &str, path: &'p str) -> Option<&'p str> {
    if pattern.ends_with('/') {
        path.strip_prefix(pattern)
    } else {
        (path == pattern).then_some("")
    }
}

/// Where a rendered file goes, and which step puts it there.
pub fn live_path(rel: &str, admin: &Admin) -> Option<(Step, PathBuf)> {
    routes(admin).into_iter().find_map(|route| {
        let rest = covered(route.rendered?, rel)?;
        Some((route.step, PathBuf::from(format!("{}{rest}", route.live))))
    })
}

/// The step that owns a live path (for removals).
fn step_of(path: &Path, admin: &Admin) -> Option<Step> {
    let s = path.to_str()?;
    routes(admin)
        .into_iter()
        .find(|route| covered(&route.live, s).is_some())
        .map(|route| route.step)
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
        if let Some(step) = step_of(path, admin) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fixture::{admin, desired, EXAMPLE};

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

    /// One table both ways: each rendered file's live path leads back to its step.
    #[test]
    fn a_live_path_routes_back_to_the_step_that_wrote_it() {
        let d = desired(EXAMPLE);
        let rendered = d.tree.files.keys().map(String::as_str);
        for rel in rendered.chain(["apps/web/sub/index.html"]) {
            let (step, path) = live_path(rel, &admin()).expect(rel);
            assert_eq!(step_of(&path, &admin()), Some(step), "{rel}");
        }
        assert_eq!(step_of(Path::new(LOCALTIME), &admin()), Some(Step::Time));
        assert_eq!(live_path("elsewhere/file", &admin()), None);
        assert_eq!(step_of(Path::new("etc/passwd"), &admin()), None);
    }

    #[test]
    fn plan_for_a_first_apply() {
        let d = desired(EXAMPLE);
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
        let d = desired(&without);
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
        let d = desired(&off);
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
        let d = desired(EXAMPLE);
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
}
