//! Every path the service reads or writes, derived from one root (`--root`, default `/`)
//! so that tests run the real service against a temporary directory.

use std::path::{Path, PathBuf};

/// The image's baked-in trusted keys, relative to the root.
pub const PROVISIONING_KEYS: &str = "usr/share/atomix/provisioning-keys";

/// Paths of one service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub root: PathBuf,
    /// The trusted provisioning keys (`--keys`; default under the root).
    pub keys: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Paths {
            keys: root.join(PROVISIONING_KEYS),
            root,
        }
    }

    /// `rel` under the root (`rel` is relative, e.g. `etc/hostname`).
    pub fn under(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub fn data(&self) -> PathBuf {
        self.under("data")
    }

    /// The generations store, `/data/config`.
    pub fn config_store(&self) -> PathBuf {
        self.under("data/config")
    }

    pub fn jobs(&self) -> PathBuf {
        self.under("data/config/jobs")
    }

    /// Where pushed RAUC bundles are received, inside RAUC's data directory.
    pub fn uploads(&self) -> PathBuf {
        self.under("data/rauc/uploads")
    }

    pub fn marker(&self) -> PathBuf {
        self.data().join(boot_state::MARKER_IN_DATA)
    }

    /// A factory reset accepted by the service, completed early in the next boot
    /// (`crate::reset`).
    pub fn reset_request(&self) -> PathBuf {
        self.data().join("atomix/factory-reset")
    }

    /// The boot partition, where a fresh flash's seed is looked for.
    pub fn boot(&self) -> PathBuf {
        self.under("boot")
    }

    pub fn boot_record(&self) -> PathBuf {
        self.under(boot_state::BOOT_RECORD_PATH)
    }

    /// `/run/atomix`: what lives as long as this boot's `/etc` does.
    pub fn run(&self) -> PathBuf {
        self.under("run/atomix")
    }

    /// The files this service wrote into the live system (so it removes only its own).
    pub fn owned_manifest(&self) -> PathBuf {
        self.run().join("owned-files.json")
    }

    /// Where `--system record` appends its actions.
    pub fn actions_log(&self) -> PathBuf {
        self.run().join("actions.log")
    }

    pub fn provisioning_keys(&self) -> PathBuf {
        self.keys.clone()
    }

    pub fn passwd(&self) -> PathBuf {
        self.under("etc/passwd")
    }
}
