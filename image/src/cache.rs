//! Keys for the build cache outside the clone: a stage's output is reused when the
//! digest of everything that went into it is unchanged.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Takes the cache for one build, waiting (and saying so) while another build holds it:
/// builds share the cache's work tree, and a second one would replace the tree under
/// the first one's chroot (seen as dracut failing with missing libraries). The lock is
/// released when the returned file is dropped, or when the process dies.
pub fn lock(cache: &Path) -> Result<std::fs::File> {
    let path = cache.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "atomix-image: another build is using {}: waiting for it to finish",
                cache.display()
            );
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    Ok(file)
}

/// Accumulates the inputs of one stage.
#[derive(Debug, Default)]
pub struct Key(Sha256);

impl Key {
    pub fn new(stage: &str) -> Key {
        let mut key = Key::default();
        key.text("stage", stage);
        key
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut Key {
        self.bytes(name, value.as_bytes())
    }

    pub fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Key {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// Adds a file, or every file under a directory (sorted, with relative names).
    pub fn path(&mut self, path: &Path) -> Result<&mut Key> {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .collect::<std::io::Result<_>>()?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                self.text("entry", &entry.file_name().to_string_lossy());
                self.path(&entry.path())?;
            }
        } else {
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            self.bytes("file", &data);
        }
        Ok(self)
    }

    /// The first 16 hex digits of the digest.
    pub fn finish(&self) -> String {
        let digest = self.0.clone().finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_build_waits_for_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let second = std::fs::File::open(dir.path().join(".lock")).unwrap();
        assert!(
            matches!(second.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "the cache is held"
        );
        drop(first);
        second.try_lock().expect("free once the first build ends");
    }

    #[test]
    fn keys_change_with_any_input() {
        let a = Key::new("s").text("x", "1").finish();
        assert_eq!(a, Key::new("s").text("x", "1").finish());
        assert_ne!(a, Key::new("s").text("x", "2").finish());
        assert_ne!(a, Key::new("t").text("x", "1").finish());
        // Field boundaries count: ("ab","c") differs from ("a","bc").
        assert_ne!(
            Key::new("s").text("ab", "c").finish(),
            Key::new("s").text("a", "bc").finish()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "1").unwrap();
        let before = Key::new("s").path(dir.path()).unwrap().finish();
        std::fs::write(dir.path().join("f"), "2").unwrap();
        assert_ne!(before, Key::new("s").path(dir.path()).unwrap().finish());
    }
}
