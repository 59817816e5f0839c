//! The generations store under `/data/config` (DESIGN.md section 4, a contract):
//!
//! ```text
//! current -> generations/N          switched atomically (rename of a symlink)
//! generations/N/config.toml         the imported config, as received
//! generations/N/source.json         origin, sha256, signer, time
//! generations/N/rendered/...        the rendered tree (see crate::render)
//! generations/N/authorized_keys     admin SSH keys
//! ```
//!
//! Crash safety: a generation is built under `generations/.tmp-N`, every file and
//! directory synced, then renamed to `N`; only a complete generation ever gets a number.
//! `current` is switched by creating `current.tmp` and renaming it over `current`. A crash
//! leaves either the old or the new link, and at worst a `.tmp-N` that the next commit
//! removes. The last [`KEEP`] generations (and always the current one) are kept.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::render::{write_synced, RenderedTree};

/// How many generations are kept.
pub const KEEP: usize = 3;

/// Where a config came from: the origin the API reports for a job is the one recorded.
pub use atomix_api::Origin;

/// `generations/N/source.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceRecord {
    pub origin: Origin,
    /// Hex SHA-256 of config.toml.
    pub sha256: String,
    /// Fingerprint of the SSH key that signed the request, when there was one.
    pub signer: Option<String>,
    /// RFC 3339, UTC.
    pub time: String,
}

/// A store operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct StoreError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

trait At<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The store rooted at a data directory (`/data/config` on a device).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    fs::File::open(path).and_then(|d| d.sync_all()).at(path)
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    fn generations(&self) -> PathBuf {
        self.root.join("generations")
    }

    /// The directory of generation `n`.
    pub fn path(&self, n: u64) -> PathBuf {
        self.generations().join(n.to_string())
    }

    /// Complete generations, oldest first.
    pub fn list(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.generations();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(&dir),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.at(&dir)?;
            if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The generation `current` points at, if any.
    pub fn current(&self) -> Result<Option<u64>, StoreError> {
        let link = self.root.join("current");
        match fs::read_link(&link) {
            Ok(target) => Ok(target
                .strip_prefix("generations")
                .ok()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&link),
        }
    }

    /// Stores a new generation, makes it current and prunes old ones. Returns its number.
    pub fn commit(
        &self,
        config_text: &str,
        source: &SourceRecord,
        rendered: &RenderedTree,
    ) -> Result<u64, StoreError> {
        let n = self.stage(config_text, source, rendered, &RenderedTree::default())?;
        self.switch(n)?;
        self.prune()?;
        Ok(n)
    }

    /// Stores a complete new generation without making it current (the provisioning
    /// service switches only once the live system has taken it). `apps` holds bundle
    /// files (`apps/<container>/...`), kept under `generations/N/apps/` so that a rollback
    /// can reinstall them. Returns the new generation's number.
    pub fn stage(
        &self,
        config_text: &str,
        source: &SourceRecord,
        rendered: &RenderedTree,
        apps: &RenderedTree,
    ) -> Result<u64, StoreError> {
        let n = self.next()?;
        self.stage_as(n, config_text, source, rendered, apps)?;
        Ok(n)
    }

    /// The number the next staged generation takes: one more than the newest.
    pub fn next(&self) -> Result<u64, StoreError> {
        Ok(self.list()?.last().map_or(1, |last| last + 1))
    }

    /// [`Store::stage`] under a number chosen beforehand with [`Store::next`], so that the
    /// caller can record it before any of the generation is written (a power cut then
    /// leaves a record naming what to undo). Refuses a number that is taken.
    pub fn stage_as(
        &self,
        n: u64,
        config_text: &str,
        source: &SourceRecord,
        rendered: &RenderedTree,
        apps: &RenderedTree,
    ) -> Result<(), StoreError> {
        let gens = self.generations();
        fs::create_dir_all(&gens).at(&gens)?;
        self.remove_partial()?;
        if self.path(n).exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the generation exists already",
            ))
            .at(&self.path(n));
        }
        let tmp = gens.join(format!(".tmp-{n}"));
        fs::create_dir(&tmp).at(&tmp)?;
        let file =
            |name: &str, bytes: &[u8]| write_synced(&tmp.join(name), bytes).at(&tmp.join(name));
        file("config.toml", config_text.as_bytes())?;
        let json = serde_json::to_vec_pretty(source).expect("a source record serialises");
        file("source.json", &json)?;
        file(
            "authorized_keys",
            rendered
                .files
                .get("authorized_keys")
                .map_or(&[][..], Vec::as_slice),
        )?;
        rendered
            .write_into(&tmp.join("rendered"))
            .at(&tmp.join("rendered"))?;
        if !apps.files.is_empty() {
            let dir = tmp.join("apps");
            let stripped = RenderedTree {
                files: apps
                    .files
                    .iter()
                    .map(|(k, v)| (k.strip_prefix("apps/").unwrap_or(k).to_owned(), v.clone()))
                    .collect(),
            };
            stripped.write_into(&dir).at(&dir)?;
        }
        sync_dir(&tmp)?;
        let done = self.path(n);
        fs::rename(&tmp, &done).at(&done)?;
        sync_dir(&gens)
    }

    /// Removes generation `n`, which must not be current: a staged generation whose apply
    /// failed, so that it never becomes anyone's rollback target.
    pub fn discard(&self, n: u64) -> Result<(), StoreError> {
        if self.current()? == Some(n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the current generation cannot be discarded",
            ))
            .at(&self.path(n));
        }
        match fs::remove_dir_all(self.path(n)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).at(&self.path(n)),
        }
        sync_dir(&self.generations())
    }

    /// Points `current` at generation `n` atomically (also used to roll back).
    pub fn switch(&self, n: u64) -> Result<(), StoreError> {
        let target = self.path(n);
        if !target.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such generation",
            ))
            .at(&target);
        }
        let tmp = self.root.join("current.tmp");
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&tmp),
        }
        std::os::unix::fs::symlink(Path::new("generations").join(n.to_string()), &tmp).at(&tmp)?;
        let link = self.root.join("current");
        fs::rename(&tmp, &link).at(&link)?;
        sync_dir(&self.root)
    }

    /// Removes `current`: the store is back to unprovisioned (its generations stay until
    /// the next commit prunes them). Used to roll back the first apply.
    pub fn clear_current(&self) -> Result<(), StoreError> {
        let link = self.root.join("current");
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).at(&link),
        }
        sync_dir(&self.root)
    }

    /// Removes `.tmp-N` directories left by an interrupted commit.
    fn remove_partial(&self) -> Result<(), StoreError> {
        let gens = self.generations();
        for e in fs::read_dir(&gens).at(&gens)? {
            let e = e.at(&gens)?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_dir_all(e.path()).at(&e.path())?;
            }
        }
        Ok(())
    }

    /// Keeps the newest [`KEEP`] generations and the current one.
    pub fn prune(&self) -> Result<(), StoreError> {
        let all = self.list()?;
        let current = self.current()?;
        let keep_from = all.len().saturating_sub(KEEP);
        for (i, n) in all.iter().enumerate() {
            if i < keep_from && Some(*n) != current {
                fs::remove_dir_all(self.path(*n)).at(&self.path(*n))?;
            }
        }
        sync_dir(&self.generations())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(tag: &str) -> RenderedTree {
        let mut t = RenderedTree::default();
        t.files.insert(
            "authorized_keys".into(),
            format!("key {tag}\n").into_bytes(),
        );
        t.files.insert(
            "quadlet/rootful/web.container".into(),
            format!("[Container]\n# {tag}\n").into_bytes(),
        );
        t
    }

    fn source(sha: &str) -> SourceRecord {
        SourceRecord {
            origin: Origin::Api,
            sha256: sha.into(),
            signer: None,
            time: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn commits_switch_and_keep_the_last_three() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.current().unwrap(), None);
        for i in 1..=5u64 {
            let n = store
                .commit(
                    &format!("# config {i}\n"),
                    &source(&i.to_string()),
                    &tree(&i.to_string()),
                )
                .unwrap();
            assert_eq!(n, i);
            assert_eq!(store.current().unwrap(), Some(i));
        }
        assert_eq!(store.list().unwrap(), [3, 4, 5]);
        let cur = dir.path().join("current");
        assert_eq!(fs::read_link(&cur).unwrap(), Path::new("generations/5"));
        assert_eq!(
            fs::read_to_string(cur.join("config.toml")).unwrap(),
            "# config 5\n"
        );
        assert_eq!(
            fs::read_to_string(cur.join("authorized_keys")).unwrap(),
            "key 5\n"
        );
        assert!(cur.join("rendered/quadlet/rootful/web.container").is_file());
        let rec: SourceRecord =
            serde_json::from_slice(&fs::read(cur.join("source.json")).unwrap()).unwrap();
        assert_eq!(rec, source("5"));
        assert!(!dir.path().join("current.tmp").exists());
    }

    #[test]
    fn a_commit_after_a_crash_clears_partials_and_stale_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for i in 1..=3u64 {
            store
                .commit("", &source("x"), &tree(&i.to_string()))
                .unwrap();
        }
        store.switch(1).unwrap();
        assert_eq!(store.current().unwrap(), Some(1), "rolled back");
        // A crash mid-commit left a partial generation and a stale link name.
        fs::create_dir_all(dir.path().join("generations/.tmp-4/rendered")).unwrap();
        std::os::unix::fs::symlink("generations/2", dir.path().join("current.tmp")).unwrap();
        assert_eq!(
            store.current().unwrap(),
            Some(1),
            "a partial commit changes nothing"
        );
        let n = store.commit("", &source("y"), &tree("4")).unwrap();
        assert_eq!(n, 4);
        assert!(!dir.path().join("generations/.tmp-4").exists());
        assert_eq!(store.list().unwrap(), [2, 3, 4]);
        assert!(
            store.switch(1).is_err(),
            "pruned generations cannot be switched to"
        );
    }

    #[test]
    fn staged_generations_are_not_current_until_switched_and_can_be_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let one = store.commit("# one\n", &source("1"), &tree("1")).unwrap();
        let mut apps = RenderedTree::default();
        apps.files
            .insert("apps/web/index.html".into(), b"hi".to_vec());
        let two = store
            .stage("# two\n", &source("2"), &tree("2"), &apps)
            .unwrap();
        assert_eq!((one, two), (1, 2));
        assert_eq!(store.current().unwrap(), Some(1), "staging does not switch");
        assert_eq!(
            fs::read(store.path(2).join("apps/web/index.html")).unwrap(),
            b"hi"
        );
        assert!(store.discard(1).is_err(), "current cannot be discarded");
        store.discard(2).unwrap();
        assert_eq!(store.list().unwrap(), [1]);
        store.discard(2).unwrap();
    }
}
