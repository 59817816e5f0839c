//! File operations inside a tree that containers can write (`/data/apps`), which never
//! follow a symbolic link and never leave the tree.
//!
//! A container with a read-write volume under `/data/apps` can replace a directory or a
//! file there by a symbolic link to anywhere on the host; the apply runs as root, so a
//! plain `write`/`remove` through that path would write or delete on the host. Every
//! path here is resolved one component at a time with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from a descriptor of the tree's root,
//! and the last component is created, renamed over or unlinked relative to its parent's
//! descriptor (neither follows a link). A symbolic link met on the way (the last
//! component included) is an error naming it: reported, never followed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

/// Why an operation beneath a root failed; `path` is the full path of the component
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error("{path} is a symbolic link (a container may have planted it): not followed")]
    Symlink { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: &'static str },
    #[error("{path} is larger than {limit} bytes: not read")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A directory tree whose contents are not trusted.
#[derive(Debug)]
pub struct Beneath {
    root: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

impl Beneath {
    /// `root` itself is trusted (containers cannot replace it; it is created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Beneath { root: root.into() }
    }

    fn io(&self, op: &'static str, rel: &Path) -> impl FnOnce(Errno) -> BeneathError {
        let path = self.root.join(rel);
        move |e| BeneathError::Io {
            op,
            path,
            source: e.into(),
        }
    }

    /// The components of a relative path; anything else is refused.
    fn components<'p>(&self, rel: &'p Path) -> Result<Vec<&'p std::ffi::OsStr>, BeneathError> {
        let mut out = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => out.push(n),
                _ => {
                    return Err(BeneathError::Invalid {
                        path: self.root.join(rel),
                        reason: "not a plain relative path",
                    })
                }
            }
        }
        if out.is_empty() {
            return Err(BeneathError::Invalid {
                path: self.root.join(rel),
                reason: "no file name",
            });
        }
        Ok(out)
    }

    fn open_root(&self, create: bool) -> Result<Option<OwnedFd>, BeneathError> {
        if create {
            std::fs::create_dir_all(&self.root).map_err(|source| BeneathError::Io {
                op: "create",
                path: self.root.clone(),
                source,
            })?;
        }
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, &self.root, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) if !create => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(BeneathError::Symlink {
                path: self.root.clone(),
            }),
            Err(e) => Err(self.io("open", Path::new(""))(e)),
        }
    }

    /// Opens one component beneath `dir` without following a link: the link, if it is
    /// one, is reported with `shown` as its path.
    fn open_in(
        &self,
        dir: &OwnedFd,
        name: &std::ffi::OsStr,
        flags: OFlags,
        mode: Mode,
        shown: &Path,
    ) -> Result<Option<OwnedFd>, BeneathError> {
        match rustix::fs::openat2(dir, name, flags | OFlags::CLOEXEC, mode, RESOLVE) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::XDEV) => Err(BeneathError::Symlink {
                path: self.root.join(shown),
            }),
            Err(Errno::NOTDIR) if self.is_symlink(dir, name) => Err(BeneathError::Symlink {
                path: self.root.join(shown),
            }),
            Err(e) => Err(self.io("open", shown)(e)),
        }
    }

    fn is_symlink(&self, dir: &OwnedFd, name: &std::ffi::OsStr) -> bool {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    }

    /// The directory holding `rel`'s last component, created if `create` (else None
    /// when a directory on the way is missing), and that component.
    fn parent<'p>(
        &self,
        rel: &'p Path,
        create: bool,
    ) -> Result<Option<(OwnedFd, &'p std::ffi::OsStr)>, BeneathError> {
        let parts = self.components(rel)?;
        let Some(mut dir) = self.open_root(create)? else {
            return Ok(None);
        };
        let mut shown = PathBuf::new();
        let (last, dirs) = parts.split_last().expect("at least one component");
        for name in dirs {
            shown.push(name);
            let flags = OFlags::DIRECTORY | OFlags::RDONLY;
            dir = match self.open_in(&dir, name, flags, Mode::empty(), &shown)? {
                Some(fd) => fd,
                None if create => {
                    match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.io("create", &shown)(e)),
                    }
                    self.open_in(&dir, name, flags, Mode::empty(), &shown)?
                        .ok_or_else(|| self.io("open", &shown)(Errno::NOENT))?
                }
                None => return Ok(None),
            };
        }
        Ok(Some((dir, last)))
    }

    /// Reports the last component if it is a symbolic link.
    fn refuse_link(
        &self,
        dir: &OwnedFd,
        name: &std::ffi::OsStr,
        rel: &Path,
    ) -> Result<(), BeneathError> {
        if self.is_symlink(dir, name) {
            return Err(BeneathError::Symlink {
                path: self.root.join(rel),
            });
        }
        Ok(())
    }

    /// Reads a file of at most `limit` bytes (a container may fill one without end);
    /// None if it (or a directory on its way) does not exist.
    pub fn read(&self, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>, BeneathError> {
        let Some(fd) = self.open_regular(rel)? else {
            return Ok(None);
        };
        let Some(fd) = fd else {
            return Err(BeneathError::Invalid {
                path: self.root.join(rel),
                reason: "not a regular file (a container may have planted it)",
            });
        };
        let mut bytes = Vec::new();
        File::from(fd)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| BeneathError::Io {
                op: "read",
                path: self.root.join(rel),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(BeneathError::TooLarge {
                path: self.root.join(rel),
                limit,
            });
        }
        Ok(Some(bytes))
    }

    /// Whether `rel` is a regular file holding exactly `expected`, compared as it is
    /// read. A missing file, or anything but a regular file, is not the same.
    pub fn same_contents(&self, rel: &Path, expected: &[u8]) -> Result<bool, BeneathError> {
        let Some(Some(fd)) = self.open_regular(rel)? else {
            return Ok(false);
        };
        let size = rustix::fs::fstat(&fd)
            .map_err(self.io("read", rel))?
            .st_size;
        if u64::try_from(size).ok() != Some(expected.len() as u64) {
            return Ok(false);
        }
        same_stream(File::from(fd), expected).map_err(|source| BeneathError::Io {
            op: "read",
            path: self.root.join(rel),
            source,
        })
    }

    /// Opens `rel` for reading: None if it is missing, Some(None) if it is not a regular
    /// file. Without blocking: a FIFO a container planted would hold an `O_RDONLY` open
    /// (and the boot's `atomix-provision restore` with it) for ever.
    fn open_regular(&self, rel: &Path) -> Result<Option<Option<OwnedFd>>, BeneathError> {
        let Some((dir, name)) = self.parent(rel, false)? else {
            return Ok(None);
        };
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let Some(fd) = self.open_in(&dir, name, flags, Mode::empty(), rel)? else {
            return Ok(None);
        };
        let st = rustix::fs::fstat(&fd).map_err(self.io("read", rel))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(Some(None));
        }
        Ok(Some(Some(fd)))
    }

    /// Writes a file whole: a temporary file beside it, fsync, rename over it, fsync the
    /// directory. Directories on the way are created.
    pub fn write(&self, rel: &Path, contents: &[u8]) -> Result<(), BeneathError> {
        let (dir, name) = self.parent(rel, true)?.expect("created");
        self.refuse_link(&dir, name, rel)?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".tmp{}", std::process::id()));
        let shown_tmp = rel.with_file_name(&tmp);
        match rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(self.io("remove", &shown_tmp)(e)),
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = self
            .open_in(&dir, &tmp, flags, Mode::from_raw_mode(0o644), &shown_tmp)?
            .ok_or_else(|| self.io("create", &shown_tmp)(Errno::NOENT))?;
        let mut file = File::from(fd);
        let written = file.write_all(contents).and_then(|()| file.sync_all());
        drop(file);
        let result = written
            .map_err(|source| BeneathError::Io {
                op: "write",
                path: self.root.join(&shown_tmp),
                source,
            })
            .and_then(|()| {
                rustix::fs::renameat(&dir, &tmp, &dir, name).map_err(self.io("rename into", rel))
            })
            .and_then(|()| rustix::fs::fsync(&dir).map_err(self.io("sync the directory of", rel)));
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
        }
        result
    }

    /// Removes a file; a missing one (or a missing directory on its way) is no error.
    pub fn remove(&self, rel: &Path) -> Result<(), BeneathError> {
        let Some((dir, name)) = self.parent(rel, false)? else {
            return Ok(());
        };
        self.refuse_link(&dir, name, rel)?;
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io("remove", rel)(e)),
        }
    }
}

/// Whether `reader` yields exactly `expected`, read in blocks.
pub(crate) fn same_stream(mut reader: impl Read, expected: &[u8]) -> io::Result<bool> {
    let mut block = vec![0u8; 64 << 10];
    let mut at = 0;
    loop {
        let n = match reader.read(&mut block) {
            Ok(0) => return Ok(at == expected.len()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if expected.get(at..at + n) != Some(&block[..n]) {
            return Ok(false);
        }
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_planted_fifo_is_neither_waited_on_nor_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let b = Beneath::new(dir.path().join("apps"));
        b.write(Path::new("web/index.html"), b"hi").unwrap();
        let fifo = dir.path().join("apps/web/index.html");
        std::fs::remove_file(&fifo).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Both return at once (a blocking open would hang the test).
        assert!(!b.same_contents(Path::new("web/index.html"), b"hi").unwrap());
        let err = b.read(Path::new("web/index.html"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // The write renames a regular file over it.
        b.write(Path::new("web/index.html"), b"hi").unwrap();
        assert!(b.same_contents(Path::new("web/index.html"), b"hi").unwrap());
        assert!(!b.same_contents(Path::new("web/index.html"), b"ho").unwrap());
        assert!(!b.same_contents(Path::new("web/index.htm"), b"hi").unwrap());
    }

    #[test]
    fn same_stream_compares_across_blocks() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert!(same_stream(&big[..], &big).unwrap());
        let mut other = big.clone();
        other[150_000] ^= 1;
        assert!(!same_stream(&other[..], &big).unwrap());
        assert!(!same_stream(&big[..199_999], &big).unwrap());
        assert!(!same_stream(&big[..], &big[..199_999]).unwrap());
    }

    #[test]
    fn writes_reads_and_removes_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let b = Beneath::new(dir.path().join("apps"));
        b.write(Path::new("web/sub/index.html"), b"hi").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("apps/web/sub/index.html")).unwrap(),
            b"hi"
        );
        b.write(Path::new("web/sub/index.html"), b"again").unwrap();
        assert_eq!(
            b.read(Path::new("web/sub/index.html"), 1 << 20)
                .unwrap()
                .unwrap(),
            b"again"
        );
        assert_eq!(b.read(Path::new("web/none/x"), 1 << 20).unwrap(), None);
        b.remove(Path::new("web/sub/index.html")).unwrap();
        b.remove(Path::new("web/sub/index.html")).unwrap();
        b.remove(Path::new("gone/x")).unwrap();
        assert!(!dir.path().join("apps/web/sub/index.html").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("apps/web/sub"))
            .unwrap()
            .collect();
        assert!(names.is_empty(), "no temporary file left: {names:?}");
        for bad in ["../x", "/etc/passwd", ""] {
            assert!(
                matches!(
                    b.write(Path::new(bad), b"x"),
                    Err(BeneathError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn planted_links_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("index.html"), b"host file").unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir_all(apps.join("web")).unwrap();
        symlink(&outside, apps.join("web/sub")).unwrap();
        symlink(outside.join("index.html"), apps.join("web/file")).unwrap();
        let b = Beneath::new(&apps);
        for (rel, link) in [
            ("web/sub/index.html", "web/sub"),
            ("web/sub/new/x", "web/sub"),
            ("web/file", "web/file"),
        ] {
            let want = format!(
                "{} is a symbolic link (a container may have planted it): not followed",
                apps.join(link).display()
            );
            for err in [
                b.write(Path::new(rel), b"evil").unwrap_err(),
                b.remove(Path::new(rel)).unwrap_err(),
                b.read(Path::new(rel), 1 << 20).unwrap_err(),
            ] {
                assert_eq!(err.to_string(), want, "{rel}");
            }
        }
        assert_eq!(
            std::fs::read(outside.join("index.html")).unwrap(),
            b"host file"
        );
        let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
        assert_eq!(left.len(), 1, "nothing created outside: {left:?}");
    }
}
