//! The set-up shared by the tests of the apply job and of `restore`: a device root in a
//! temporary directory, driven through an [`Applier`] over a [`FakeSystem`], with the
//! repository's example config.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use atomix_config::generations::{Origin, Store};
use tempfile::TempDir;

use super::generation::desired_of;
use super::{Admin, Applier, Desired, Outcome};
use crate::input::{check_text, Accepted};
use crate::jobs::{Job, Tracker};
use crate::paths::Paths;
use crate::system::FakeSystem;
use failpoints::Failpoints;

/// `examples/config.toml`: host name `edge-042`, a rootful and a rootless container, the
/// update timer on.
pub(crate) const EXAMPLE: &str = include_str!("../../../../examples/config.toml");

/// The admin of a passwd where it is not the image's uid 1000: 1001.
pub(crate) fn admin() -> Admin {
    Admin::from_passwd("root:x:0:0::/root:/bin/sh\nadmin:x:1001:1001::/home/admin:/bin/sh\n")
}

/// Config text that must pass every check.
pub(crate) fn accepted(text: &str) -> Accepted {
    check_text(text.to_owned(), BTreeMap::new()).expect("valid config")
}

/// What an apply of `text` syncs the live system to.
pub(crate) fn desired(text: &str) -> Desired {
    let accepted = accepted(text);
    desired_of(&accepted, &atomix_config::config_sha256(&accepted.text))
}

/// A device: its root, the fake system its applier acts through, and its job tracker.
#[derive(Debug)]
pub(crate) struct Device {
    pub dir: TempDir,
    pub sys: Arc<FakeSystem>,
    /// Acts through `sys`, with no failpoints.
    pub applier: Applier,
    pub tracker: Arc<Tracker>,
}

impl Device {
    /// A device with nothing applied yet.
    pub fn new() -> Device {
        Device::with_system(FakeSystem::default())
    }

    /// A device with nothing applied yet, whose applier acts through `sys`.
    pub fn with_system(sys: FakeSystem) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let sys = Arc::new(sys);
        let applier = applier(dir.path(), sys.clone(), "");
        let tracker = Tracker::new(applier.paths.jobs());
        Device {
            dir,
            sys,
            applier,
            tracker,
        }
    }

    /// A device provisioned with [`EXAMPLE`]: generation 1 applied.
    pub fn provisioned() -> Device {
        let device = Device::new();
        let (outcome, _) = device.import(EXAMPLE);
        assert!(outcome.succeeded(), "{outcome:?}");
        device
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Another applier on this device's root: its own system and failpoints.
    pub fn applier(&self, system: Arc<FakeSystem>, failpoints: &str) -> Applier {
        applier(self.root(), system, failpoints)
    }

    /// Imports `text` as an API job signed by `SHA256:x` through the device's applier;
    /// the outcome and the job as the tracker holds it.
    pub fn import(&self, text: &str) -> (Outcome, Job) {
        self.import_by(&self.applier, text)
    }

    /// [`Device::import`] through another applier.
    pub fn import_by(&self, a: &Applier, text: &str) -> (Outcome, Job) {
        self.import_accepted(a, accepted(text), Some("SHA256:x"))
    }

    /// Imports an accepted config (and its bundle files) as an API job through `a`.
    pub fn import_accepted(
        &self,
        a: &Applier,
        accepted: Accepted,
        signer: Option<&str>,
    ) -> (Outcome, Job) {
        let store = Store::new(a.paths.config_store());
        let job = self
            .tracker
            .start(Origin::Api, store.current().unwrap())
            .unwrap();
        let id = job.id.clone();
        let outcome = a.import(job, accepted, Origin::Api, signer.map(str::to_owned));
        (outcome, self.tracker.get(&id).unwrap())
    }

    /// The boot's re-apply of generation 1 through `a`.
    pub fn reapply_by(&self, a: &Applier) -> Outcome {
        a.reapply(self.tracker.start(Origin::Boot, Some(1)).unwrap(), 1)
    }

    /// The store of generations.
    pub fn store(&self) -> Store {
        Store::new(self.applier.paths.config_store())
    }

    /// A live file's text.
    pub fn live(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap()
    }

    /// A reboot: the tmpfs `/etc` and `/run` are gone (the image's `etc/hostname` is
    /// there again), `/data` stays; a new process with a new tracker, over a system
    /// that has run nothing yet.
    pub fn reboot(&mut self) {
        for tmpfs in ["etc", "run"] {
            std::fs::remove_dir_all(self.root().join(tmpfs)).unwrap();
        }
        std::fs::create_dir_all(self.root().join("etc")).unwrap();
        std::fs::write(self.root().join("etc/hostname"), "atomixos\n").unwrap();
        self.sys = Arc::new(FakeSystem::default());
        self.applier = applier(self.root(), self.sys.clone(), "");
        self.tracker = Tracker::new(self.applier.paths.jobs());
    }
}

fn applier(root: &Path, system: Arc<FakeSystem>, failpoints: &str) -> Applier {
    Applier {
        paths: Paths::new(root),
        system,
        failpoints: Failpoints::parse(failpoints).unwrap(),
        admin: admin(),
    }
}
