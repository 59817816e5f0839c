//! The apply steps, in the order a job runs them. Their names are a contract: they are
//! the `step` of job events (what the API and `atomixctl` show) and the names
//! `ATOMIX_FAILPOINTS` takes.

use std::fmt;

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
