//! The executor: runs a [`StepPlan`] on the live system, in one place. File operations
//! go under the root (through [`Beneath`] in the trees containers can write), the
//! image's files they replace are saved first and put back later, actions go through
//! the [`System`]; what this service wrote is recorded in [`Owned`] as it happens.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{Act, Op, StepPlan};
use crate::beneath::Beneath;
use crate::paths::Paths;
use crate::system::{Action, System};

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

    pub(crate) fn save(&self, paths: &Paths) -> Result<()> {
        Ok(boot_state::write_record(&paths.owned_manifest(), self)?)
    }
}

/// Runs step plans: file operations under the root, actions through the [`System`].
#[derive(Debug)]
pub struct Executor<'a> {
    pub paths: &'a Paths,
    pub system: &'a dyn System,
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

    /// Reads a live file; None if it does not exist. One in a tree containers write is
    /// read up to the largest config bundle (what this service put there came from one).
    fn read_live(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return Ok(tree.read(rel, atomix_api::limits::CONFIG_BUNDLE_BYTES)?);
        }
        let full = self.paths.under(path);
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", full.display())),
        }
    }

    fn write_live(&self, path: &Path, contents: &[u8]) -> Result<()> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return Ok(tree.write(rel, contents)?);
        }
        Ok(boot_state::write_atomic(&self.paths.under(path), contents)?)
    }

    fn remove_live(&self, path: &Path) -> Result<()> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return Ok(tree.remove(rel)?);
        }
        let full = self.paths.under(path);
        match std::fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", full.display())),
        }
    }

    /// Whether a live file holds exactly `contents`, compared as it is read (an app's
    /// image archive is large); anything but a regular file is not the same.
    fn same_live(&self, path: &Path, contents: &[u8]) -> Result<bool> {
        if let Some((tree, rel)) = self.untrusted(path) {
            return Ok(tree.same_contents(rel, contents)?);
        }
        let full = self.paths.under(path);
        let reading = || format!("cannot read {}", full.display());
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_file() && m.len() == contents.len() as u64 => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(reading),
        }
        let file = std::fs::File::open(&full).with_context(reading)?;
        crate::beneath::same_stream(file, contents).with_context(reading)
    }

    /// Keeps the image's copy of a file about to be replaced (once). Not in the trees
    /// containers write: what is there is the service's own bundle files, or a
    /// container's changes to them, never the image's.
    fn save_original(&self, path: &Path) -> Result<()> {
        if self.untrusted(path).is_some() {
            return Ok(());
        }
        let saved = self.original(path);
        if saved.exists() {
            return Ok(());
        }
        match self.read_live(path)? {
            Some(bytes) => Ok(boot_state::write_atomic(&saved, &bytes)?),
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
    fn save_original_link(&self, path: &Path) -> Result<()> {
        let (saved, full) = (self.original_link(path), self.paths.under(path));
        if saved.exists() || self.original(path).exists() {
            return Ok(());
        }
        match std::fs::read_link(&full) {
            Ok(target) => Ok(boot_state::write_atomic(
                &saved,
                target.as_os_str().as_encoded_bytes(),
            )?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Not a link: a file, kept as one.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => self.save_original(path),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", full.display())),
        }
    }

    /// Replaces `path` by a link to `target` (a temporary link renamed over it).
    fn symlink(&self, path: &Path, target: &Path) -> Result<()> {
        let full = self.paths.under(path);
        let tmp = full.with_extension("atomix-tmp");
        let _ = std::fs::remove_file(&tmp);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::os::unix::fs::symlink(target, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &full))
            .with_context(|| format!("cannot link {}", full.display()))
    }

    /// Removes a file this service wrote, or puts the image's copy (file or link) back.
    fn remove_or_restore(&self, path: &Path) -> Result<()> {
        let link = self.original_link(path);
        match std::fs::read(&link) {
            Ok(target) => {
                let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                self.symlink(path, &target)?;
                let _ = std::fs::remove_file(&link);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", link.display())),
        }
        let saved = self.original(path);
        match std::fs::read(&saved) {
            Ok(bytes) => {
                self.write_live(path, &bytes)?;
                let _ = std::fs::remove_file(&saved);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", saved.display())),
        }
        self.remove_live(path)
    }

    /// Runs one step: its file operations, then its actions as [`StepPlan::act`] says.
    /// The owned list is updated (and saved) as files come and go.
    pub fn run(&self, plan: &StepPlan, owned: &mut Owned) -> Result<String> {
        self.run_ops(plan, owned, true)
    }

    /// Runs only the file operations of a step, no action at all: what
    /// `atomix-provision restore` does at boot, before the services that read the files
    /// start.
    pub fn put_files(&self, plan: &StepPlan, owned: &mut Owned) -> Result<String> {
        self.run_ops(plan, owned, false)
    }

    fn run_ops(&self, plan: &StepPlan, owned: &mut Owned, act: bool) -> Result<String> {
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
        let unsettle = |owned: &mut Owned| -> Result<()> {
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
                            self.system.run(&Action::Hostname { name })?;
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
                        self.system.run(&action)?;
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
                    self.system.run(check)?;
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
