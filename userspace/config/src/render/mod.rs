//! Canonical rendering: a valid [`Config`] to the `rendered/` tree, as data first
//! ([`RenderedTree`], a sorted map of relative path to bytes) and written in one place
//! ([`RenderedTree::write_into`]). Same config text, same bytes: nothing here reads the
//! clock, the environment or the host.
//!
//! The tree (paths relative to `rendered/`):
//!
//! ```text
//! quadlet/rootful/<name>.container    containers with rootless = false
//! quadlet/rootful/<volume>.volume     named volumes they use
//! quadlet/rootless/<name>.container   containers with rootless = true (run as admin)
//! quadlet/rootless/<volume>.volume    named volumes they use
//! networkd/10-atomix-wan.network      eth0: DHCP or static
//! networkd/20-atomix-lan.network      eth1: static LAN address
//! dnsmasq/atomix.conf                 LAN DHCP and DNS
//! chrony/atomix.sources               NTP servers (for chrony's sourcedir)
//! nftables/atomix.nft                 the firewall: table inet atomix
//! hostname                            one line
//! timezone                            one line, an IANA zone
//! authorized_keys                     the admin user's SSH keys
//! systemd/atomix-update.timer         with update.rauc: runs the service every interval
//! systemd/atomix-update.service       with update.rauc: rauc install <update.url>
//! ```
//!
//! Every file that allows comments starts with a header naming the config's sha256.

pub mod quadlet;
pub mod system;
pub mod update;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::schema::Config;

/// The rendered tree as data: relative path to contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedTree {
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The comment header of rendered files.
pub fn header(sha256: &str) -> String {
    format!(
        "# Rendered by atomix-provision from config.toml sha256 {sha256}.\n# Do not edit: the next apply replaces this file.\n"
    )
}

/// Renders a valid config. `sha256` is that of the config text ([`crate::config_sha256`]).
pub fn render(config: &Config, sha256: &str) -> RenderedTree {
    let mut tree = RenderedTree::default();
    quadlet::render_into(config, sha256, &mut tree);
    system::render_into(config, sha256, &mut tree);
    update::render_into(config, sha256, &mut tree);
    tree
}

impl RenderedTree {
    fn add(&mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), contents.into());
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.files
            .get(path)
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Writes the tree into `dir`, which must be absent or empty (so the result is exactly
    /// this tree). Each file is written to a temporary name, synced and renamed; each
    /// directory is synced once its entries are in place.
    pub fn write_into(&self, dir: &Path) -> io::Result<()> {
        if dir.exists() && fs::read_dir(dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not empty", dir.display()),
            ));
        }
        fs::create_dir_all(dir)?;
        let mut dirs = std::collections::BTreeSet::new();
        for (rel, contents) in &self.files {
            let path = dir.join(rel);
            let parent = path.parent().unwrap_or(dir);
            fs::create_dir_all(parent)?;
            write_synced(&path, contents)?;
            dirs.insert(parent.to_path_buf());
        }
        dirs.insert(dir.to_path_buf());
        for d in dirs.iter().rev() {
            fs::File::open(d)?.sync_all()?;
        }
        Ok(())
    }
}

/// Write to `<path>.tmp`, fsync, rename over `path`. The directory is synced by the caller.
pub(crate) fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
