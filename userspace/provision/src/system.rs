//! Side effects on the running system, behind one narrow trait. The caller picks the
//! implementation: [`RealSystem`] runs the commands, [`RecordSystem`] appends one JSON
//! line per action to `/run/atomix/actions.log` and succeeds (`--system record`, used by
//! end-to-end and browser tests), [`FakeSystem`] keeps them in memory and can be told to
//! fail one (unit tests). Files are not side effects of this kind: the apply executor
//! writes them itself, under `--root`.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

use serde::Serialize;

/// One action on the running system, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// `systemctl ARGS...` (daemon-reload, restart, stop, and `--user -M admin@ ...`).
    Systemctl { args: Vec<String> },
    /// `networkctl ARGS...`
    Networkctl { args: Vec<String> },
    /// `loginctl enable-linger USER`: the admin's rootless units run without a login.
    EnableLinger { user: String },
    /// `nft -f FILE`
    NftApply { file: PathBuf },
    /// Removes `table inet atomix` (back to the image's firewall).
    NftDeleteTable,
    /// `hostnamectl hostname NAME`
    Hostname { name: String },
    /// The kernel's host name alone, early in boot (hostnamectl needs D-Bus and
    /// systemd-hostnamed): [`RealSystem`] writes `/proc/sys/kernel/hostname` itself
    /// (shown as `hostname NAME`).
    KernelHostname { name: String },
    /// `rauc status mark-good`
    RaucMarkGood,
    /// `rauc install BUNDLE`: writes the other slot and makes it the next boot's.
    RaucInstall { bundle: PathBuf },
    /// `mount -o ro,nosuid,nodev,noexec DEVICE TARGET`
    MountReadOnly { device: PathBuf, target: PathBuf },
    /// `umount TARGET`
    Unmount { target: PathBuf },
}

impl Action {
    pub fn systemctl(args: &[&str]) -> Self {
        Action::Systemctl {
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The command line that [`RealSystem`] runs.
    pub fn command(&self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = |p: &PathBuf| p.display().to_string();
        match self {
            Action::Systemctl { args } => [vec!["systemctl".into()], args.clone()].concat(),
            Action::Networkctl { args } => [vec!["networkctl".into()], args.clone()].concat(),
            Action::EnableLinger { user } => s(&["loginctl", "enable-linger", user]),
            Action::NftApply { file } => vec!["nft".into(), "-f".into(), p(file)],
            Action::NftDeleteTable => s(&[
                "nft", "add", "table", "inet", "atomix", ";", "delete", "table", "inet", "atomix",
            ]),
            Action::Hostname { name } => s(&["hostnamectl", "hostname", name]),
            Action::KernelHostname { name } => s(&["hostname", name]),
            Action::RaucMarkGood => s(&["rauc", "status", "mark-good"]),
            Action::RaucInstall { bundle } => vec!["rauc".into(), "install".into(), p(bundle)],
            Action::MountReadOnly { device, target } => vec![
                "mount".into(),
                "-o".into(),
                "ro,nosuid,nodev,noexec".into(),
                p(device),
                p(target),
            ],
            Action::Unmount { target } => vec!["umount".into(), p(target)],
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command().join(" "))
    }
}

/// An action that failed; the message says what ran and what it said.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{action}` failed: {detail}")]
pub struct SystemError {
    pub action: String,
    pub detail: String,
}

/// Performs actions on the running system.
pub trait System: Send + Sync + fmt::Debug {
    fn run(&self, action: &Action) -> Result<(), SystemError>;
}

/// Runs the real commands.
#[derive(Debug, Default)]
pub struct RealSystem;

impl System for RealSystem {
    fn run(&self, action: &Action) -> Result<(), SystemError> {
        if let Action::KernelHostname { name } = action {
            const KERNEL_HOSTNAME: &str = "/proc/sys/kernel/hostname";
            return std::fs::write(KERNEL_HOSTNAME, name).map_err(|e| SystemError {
                action: action.to_string(),
                detail: format!("cannot write {KERNEL_HOSTNAME}: {e}"),
            });
        }
        run_command(&action.command()).map(drop)
    }
}

/// Runs a program (`argv[0]`) to completion and returns its output. The error names the
/// command line, its exit status and what it said ([`failure_detail`]). The one place
/// this crate runs a command and keeps what it said on stderr.
pub fn run_command(argv: &[impl AsRef<str>]) -> Result<Output, SystemError> {
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let err = |detail: String| SystemError {
        action: argv.join(" "),
        detail,
    };
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", argv[0])))?;
    if out.status.success() {
        return Ok(out);
    }
    Err(err(format!(
        "{}: {}",
        out.status,
        failure_detail(
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr)
        )
    )))
}

/// What a failed command said: its last line on stderr, and the reason `rauc` gives
/// only on stdout (`LastError: ...`; its stderr just says that installing failed).
pub fn failure_detail(stdout: &str, stderr: &str) -> String {
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let reason = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LastError:"))
        .map(str::trim)
        .rfind(|l| !l.is_empty());
    match reason {
        Some(r) if last.is_empty() => r.to_owned(),
        Some(r) => format!("{last}: {r}"),
        None => last.to_owned(),
    }
}

/// Appends `{"time":...,"action":...,...}` lines to a file and succeeds.
#[derive(Debug)]
pub struct RecordSystem {
    log: PathBuf,
    lock: Mutex<()>,
}

impl RecordSystem {
    pub fn new(log: PathBuf) -> Self {
        RecordSystem {
            log,
            lock: Mutex::new(()),
        }
    }
}

impl System for RecordSystem {
    fn run(&self, action: &Action) -> Result<(), SystemError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = serde_json::to_value(action).expect("actions serialise");
        value
            .as_object_mut()
            .expect("actions are objects")
            .insert("time".into(), crate::now_rfc3339().into());
        let mut line = serde_json::to_vec(&value).expect("values serialise");
        line.push(b'\n');
        let err = |e: std::io::Error| SystemError {
            action: action.to_string(),
            detail: format!("cannot record to {}: {e}", self.log.display()),
        };
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| f.write_all(&line))
            .map_err(err)
    }
}

/// Keeps actions in memory; fails every action whose command line contains `fail_on`.
#[derive(Debug, Default)]
pub struct FakeSystem {
    pub actions: Mutex<Vec<Action>>,
    pub fail_on: Mutex<Option<String>>,
}

impl FakeSystem {
    pub fn failing_on(pattern: &str) -> Self {
        FakeSystem {
            fail_on: Mutex::new(Some(pattern.to_owned())),
            ..Self::default()
        }
    }

    /// The command lines run so far.
    pub fn commands(&self) -> Vec<String> {
        self.actions
            .lock()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

impl System for FakeSystem {
    fn run(&self, action: &Action) -> Result<(), SystemError> {
        self.actions.lock().unwrap().push(action.clone());
        let line = action.to_string();
        match &*self.fail_on.lock().unwrap() {
            Some(p) if line.contains(p.as_str()) => Err(SystemError {
                action: line,
                detail: "fake failure".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_appends_one_json_line_per_action() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run/atomix/actions.log");
        let sys = RecordSystem::new(log.clone());
        sys.run(&Action::systemctl(&["daemon-reload"])).unwrap();
        sys.run(&Action::RaucMarkGood).unwrap();
        sys.run(&Action::RaucInstall {
            bundle: "/data/rauc/uploads/x.raucb".into(),
        })
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["action"], "systemctl");
        assert_eq!(lines[0]["args"][0], "daemon-reload");
        assert_eq!(lines[1]["action"], "rauc-mark-good");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[2]["action"], "rauc-install");
        assert_eq!(lines[2]["bundle"], "/data/rauc/uploads/x.raucb");
    }

    #[test]
    fn real_system_reports_the_failing_command() {
        let err = RealSystem
            .run(&Action::Systemctl {
                args: vec!["--definitely-not-an-option".into()],
            })
            .unwrap_err();
        assert!(err.action.starts_with("systemctl --definitely"), "{err}");
    }

    #[test]
    fn failure_details_keep_raucs_reason() {
        // rauc 1.x: progress and the reason on stdout, the verdict on stderr.
        let stdout = "installing\n  0% Installing\n 20% Checking bundle\n 40% Checking bundle failed.\n100% Installing failed.\nLastError: Failed to verify bundle signature: signature verification failed: certificate signature failure\n";
        let stderr = "Installing `/data/rauc/uploads/0f.raucb` failed\n";
        assert_eq!(
            failure_detail(stdout, stderr),
            "Installing `/data/rauc/uploads/0f.raucb` failed: Failed to verify bundle signature: signature verification failed: certificate signature failure"
        );
        assert_eq!(
            failure_detail("", "warning\nunit not found\n\n"),
            "unit not found"
        );
        assert_eq!(failure_detail("LastError: no space\n", ""), "no space");
        assert_eq!(failure_detail("", ""), "");
        assert_eq!(
            Action::RaucInstall {
                bundle: "/data/rauc/uploads/x.raucb".into()
            }
            .to_string(),
            "rauc install /data/rauc/uploads/x.raucb"
        );
    }

    #[test]
    fn fake_fails_only_matching_actions() {
        let sys = FakeSystem::failing_on("nft");
        assert!(sys.run(&Action::systemctl(&["daemon-reload"])).is_ok());
        assert!(sys.run(&Action::NftDeleteTable).is_err());
        assert_eq!(sys.commands().len(), 2);
    }
}
