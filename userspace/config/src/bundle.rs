//! Config bundles: a tar, optionally gzip-compressed, with `config.toml` at its root and
//! files for containers under `apps/<container>/...`.
//!
//! Reading is defensive because a bundle may come from anyone who can reach the console:
//! absolute paths, `..`, links, device nodes and duplicates are refused, as are bundles
//! past the [`Limits`], which are counted on the decompressed stream while it is read
//! (so a small gzip cannot expand past them). A refusal names the offending member.
//!
//! Writing ([`BundleWriter`], what `atomixctl bundle` uses) applies the same rules with
//! the same messages ([`check_member`], [`check_names`], the [`Limits`]) and reads what
//! it wrote back with [`read_bundle`], so a bundle written here is one the device takes.

use std::collections::BTreeMap;
use std::io::{self, Read};

use flate2::read::GzDecoder;

/// Size and count limits for bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `config.toml`, in bytes (default: the API's
    /// [`atomix_api::limits::CONFIG_TEXT_BYTES`], which says why).
    pub config_bytes: u64,
    /// Largest uncompressed bundle (the whole tar stream), in bytes (default: the API's
    /// [`atomix_api::limits::CONFIG_BUNDLE_BYTES`]).
    pub bundle_bytes: u64,
    /// Most tar entries (files and directories).
    pub entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            config_bytes: atomix_api::limits::CONFIG_TEXT_BYTES,
            bundle_bytes: atomix_api::limits::CONFIG_BUNDLE_BYTES,
            entries: 1024,
        }
    }
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("{member}: refused: {reason}")]
    Refused { member: String, reason: String },
    /// `member` is the one being read when the count passed the limit (or, when that
    /// happened between members, "the member after X").
    #[error("the bundle is larger than {limit} bytes uncompressed: {member} crosses the limit")]
    TooLarge { limit: u64, member: String },
    #[error("the bundle has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("the bundle has no config.toml at its root")]
    NoConfig,
    #[error("config.toml is not UTF-8 text")]
    ConfigNotUtf8,
    #[error("the bundle is not a readable tar{}: {reason}", if *.gzip { " (gzip)" } else { "" })]
    Corrupt { gzip: bool, reason: String },
}

/// A bundle's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub config: String,
    /// Regular files under `apps/`, by their path in the bundle (`apps/web/index.html`).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Container names that have files in the bundle (`apps/<name>/...`).
    pub fn app_dirs(&self) -> Vec<&str> {
        let mut dirs: Vec<&str> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix("apps/")?.split('/').next())
            .collect();
        dirs.dedup();
        dirs
    }
}

/// What a file handed to `validate` or the API holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Config(String),
    Bundle(Bundle),
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// Whether bytes look like a bundle (gzip, or a tar with the ustar magic) rather than text.
pub fn looks_like_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(GZIP_MAGIC) || bytes.get(257..262) == Some(b"ustar")
}

/// Classifies and reads an input: a bundle, or config.toml text.
pub fn read_input(bytes: &[u8], limits: Limits) -> Result<Input, BundleError> {
    if looks_like_bundle(bytes) {
        return read_bundle(bytes, limits).map(Input::Bundle);
    }
    if bytes.len() as u64 > limits.config_bytes {
        return Err(BundleError::Refused {
            member: "config.toml".into(),
            reason: format!("larger than {} bytes", limits.config_bytes),
        });
    }
    String::from_utf8(bytes.to_vec())
        .map(Input::Config)
        .map_err(|_| BundleError::ConfigNotUtf8)
}

/// Counts bytes as they are read and fails once past the limit.
struct Counted<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(LimitExceeded));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

/// Reads a bundle from its bytes (tar or gzip'd tar).
pub fn read_bundle(bytes: &[u8], limits: Limits) -> Result<Bundle, BundleError> {
    let gzip = bytes.starts_with(GZIP_MAGIC);
    let stream: Box<dyn Read + '_> = if gzip {
        Box::new(GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let counted = Counted {
        inner: stream,
        read: 0,
        limit: limits.bundle_bytes,
    };
    // The member being read, for naming the one that crosses the size limit.
    let mut current = String::from("the first member");
    let io_error = |e: io::Error, member: &str| -> BundleError {
        let over = e.get_ref().is_some_and(|i| i.is::<LimitExceeded>());
        if over {
            BundleError::TooLarge {
                limit: limits.bundle_bytes,
                member: member.to_owned(),
            }
        } else {
            BundleError::Corrupt {
                gzip,
                reason: e.to_string(),
            }
        }
    };
    let mut archive = tar::Archive::new(counted);
    let mut config = None;
    let mut files = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut dirs = std::collections::BTreeSet::new();
    let entries = archive.entries().map_err(|e| io_error(e, &current))?;
    for (count, entry) in entries.enumerate() {
        if count >= limits.entries {
            return Err(BundleError::TooManyEntries {
                limit: limits.entries,
            });
        }
        let mut entry = entry.map_err(|e| io_error(e, &current))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        current = raw.clone();
        let refuse = |reason: &str| BundleError::Refused {
            member: raw.clone(),
            reason: reason.to_owned(),
        };
        let kind = MemberKind::of_entry(entry.header().entry_type());
        let path = check_member(&raw, kind)?;
        if !seen.insert(path.clone()) {
            return Err(refuse("duplicate member"));
        }
        if kind == MemberKind::Directory {
            dirs.insert(path);
            current = format!("the member after {raw}");
            continue;
        }
        let size = entry.header().size().map_err(|e| io_error(e, &raw))?;
        if path == "config.toml" {
            check_config_size(&raw, size, limits)?;
            let mut data = Vec::new();
            (&mut entry)
                .take(limits.config_bytes + 1)
                .read_to_end(&mut data)
                .map_err(|e| io_error(e, &raw))?;
            config = Some(String::from_utf8(data).map_err(|_| BundleError::ConfigNotUtf8)?);
        } else {
            // check_member has placed it under apps/<container>/.
            let mut data = Vec::new();
            (&mut entry)
                .take(limits.bundle_bytes + 1)
                .read_to_end(&mut data)
                .map_err(|e| io_error(e, &raw))?;
            files.insert(path, data);
        }
    }
    check_names(
        files.keys().map(String::as_str),
        dirs.iter().map(String::as_str),
    )?;
    let config = config.ok_or(BundleError::NoConfig)?;
    Ok(Bundle { config, files })
}

/// What a member is, as far as the rules care: a tar entry's type when a bundle is read,
/// a file's type on disk when one is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Directory,
    Symlink,
    HardLink,
    /// Character and block devices, FIFOs.
    Device,
    /// Anything else (sockets, tar's special entries).
    Other,
}

impl MemberKind {
    fn of_entry(kind: tar::EntryType) -> MemberKind {
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::File,
            tar::EntryType::Directory => MemberKind::Directory,
            tar::EntryType::Symlink => MemberKind::Symlink,
            tar::EntryType::Link => MemberKind::HardLink,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                MemberKind::Device
            }
            _ => MemberKind::Other,
        }
    }

    /// The kind of a file on disk, from `symlink_metadata` (a link is not followed, so
    /// it is a [`MemberKind::Symlink`]). A file with several hard links is a file.
    pub fn of_file_type(t: std::fs::FileType) -> MemberKind {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_symlink() {
            MemberKind::Symlink
        } else if t.is_dir() {
            MemberKind::Directory
        } else if t.is_file() {
            MemberKind::File
        } else if t.is_block_device() || t.is_char_device() || t.is_fifo() {
            MemberKind::Device
        } else {
            MemberKind::Other
        }
    }
}

/// The rules for one member, by its name and kind, as reading and writing a bundle both
/// apply them: the name must not escape (no absolute path, no `..`, no control characters, lengths the file system holds), only regular files and
/// directories are allowed, files may only be `config.toml` or under
/// `apps/<container>/`, directories only `apps` or under it. Returns the normalised name.
pub fn check_member(raw: &str, kind: MemberKind) -> Result<String, BundleError> {
    let refuse = |reason: &str| BundleError::Refused {
        member: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let path = member_path(raw).map_err(refuse)?;
    let is_dir = match kind {
        MemberKind::File => false,
        MemberKind::Directory => true,
        MemberKind::Symlink => return Err(refuse("symbolic links are not allowed")),
        MemberKind::HardLink => return Err(refuse("hard links are not allowed")),
        MemberKind::Device => return Err(refuse("device nodes and FIFOs are not allowed")),
        MemberKind::Other => return Err(refuse("only regular files and directories are allowed")),
    };
    let outside = "only config.toml and apps/<container>/... belong in a bundle";
    if is_dir {
        if path != "apps" && !path.starts_with("apps/") {
            return Err(refuse(outside));
        }
    } else if let Some(rest) = path.strip_prefix("apps/") {
        // A normalised name has no empty components: `rest` names a container and a
        // file in it, or just a container.
        if !rest.contains('/') {
            return Err(refuse("files go under apps/<container>/"));
        }
    } else if path != "config.toml" {
        return Err(refuse(outside));
    }
    Ok(path)
}

/// `config.toml` (named `member` in the bundle) may be at most [`Limits::config_bytes`].
fn check_config_size(member: &str, size: u64, limits: Limits) -> Result<(), BundleError> {
    if size > limits.config_bytes {
        return Err(BundleError::Refused {
            member: member.to_owned(),
            reason: format!("larger than {} bytes", limits.config_bytes),
        });
    }
    Ok(())
}

/// A tar block; headers and padded data come in these.
const BLOCK: u64 = 512;

/// The end-of-archive marker [`BundleWriter`] writes: two zero blocks.
const TRAILER: u64 = 2 * BLOCK;

/// The longest name a GNU tar header holds itself; longer ones take a long-name entry.
const GNU_NAME_BYTES: usize = 100;

/// Bytes a file takes in the tar stream [`BundleWriter`] writes: a GNU long-name entry
/// when the name does not fit the header (its header and the name with a NUL, padded),
/// the header, and the data padded to a block.
fn member_bytes(name: &str, size: u64) -> u64 {
    let long_name = if name.len() > GNU_NAME_BYTES {
        BLOCK + (name.len() as u64 + 1).div_ceil(BLOCK) * BLOCK
    } else {
        0
    };
    long_name + BLOCK + size.div_ceil(BLOCK) * BLOCK
}

/// Writes a bundle under exactly the rules [`read_bundle`] enforces, in its words: each
/// member is checked as it is added ([`BundleWriter::check`] first, before its bytes are
/// read, so an oversized file is refused unread), the set of names as a whole when it is
/// finished, and the tar written is read back with [`read_bundle`] before it is returned.
///
/// The output depends only on the members: `config.toml` first, then the files under
/// `apps/` in byte order of their names; GNU headers with mode 0644, uid and gid 0, no
/// user or group names, mtime 0; no directory entries (a bundle's directories carry
/// nothing the device keeps). With [`gzip`], the same inputs give the same bytes.
#[derive(Debug)]
pub struct BundleWriter {
    limits: Limits,
    config: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
    /// The size of the tar stream so far, its trailer included.
    bytes: u64,
}

impl BundleWriter {
    pub fn new(limits: Limits) -> BundleWriter {
        BundleWriter {
            limits,
            config: None,
            files: BTreeMap::new(),
            bytes: TRAILER,
        }
    }

    /// Whether a member named `name` (as it will be in the bundle: `config.toml`,
    /// `apps/web/index.html`) of this kind and size may be added: its name, kind and
    /// place, no duplicate, the entry count, config.toml's size and the uncompressed size
    /// of the whole bundle. A directory is checked for its name and place only (none is
    /// written). Returns the normalised name.
    pub fn check(&self, name: &str, kind: MemberKind, size: u64) -> Result<String, BundleError> {
        let path = check_member(name, kind)?;
        let duplicate = if path == "config.toml" {
            self.config.is_some()
        } else {
            self.files.contains_key(&path)
        };
        if duplicate {
            return Err(BundleError::Refused {
                member: name.to_owned(),
                reason: "duplicate member".to_owned(),
            });
        }
        if kind == MemberKind::Directory {
            return Ok(path);
        }
        if path == "config.toml" {
            check_config_size(name, size, self.limits)?;
        }
        if self.entries() >= self.limits.entries {
            return Err(BundleError::TooManyEntries {
                limit: self.limits.entries,
            });
        }
        if self.bytes.saturating_add(member_bytes(&path, size)) > self.limits.bundle_bytes {
            return Err(BundleError::TooLarge {
                limit: self.limits.bundle_bytes,
                member: name.to_owned(),
            });
        }
        Ok(path)
    }

    /// Adds a regular file (after the same checks as [`BundleWriter::check`]).
    pub fn add(&mut self, name: &str, data: Vec<u8>) -> Result<(), BundleError> {
        let size = data.len() as u64;
        let path = self.check(name, MemberKind::File, size)?;
        self.bytes += member_bytes(&path, size);
        if path == "config.toml" {
            self.config = Some(String::from_utf8(data).map_err(|_| BundleError::ConfigNotUtf8)?);
        } else {
            self.files.insert(path, data);
        }
        Ok(())
    }

    /// The config text added so far.
    pub fn config(&self) -> Option<&str> {
        self.config.as_deref()
    }

    /// The names of the files under `apps/` added so far, in order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    fn entries(&self) -> usize {
        self.files.len() + usize::from(self.config.is_some())
    }

    /// The tar (uncompressed), checked by reading it back as the device does.
    pub fn finish(self) -> Result<Vec<u8>, BundleError> {
        check_names(self.files(), [])?;
        let config = self.config.as_deref().ok_or(BundleError::NoConfig)?;
        let written = |e: io::Error| BundleError::Corrupt {
            gzip: false,
            reason: format!("cannot write it: {e}"),
        };
        let mut tar = tar::Builder::new(Vec::with_capacity(self.bytes as usize));
        let members = std::iter::once(("config.toml", config.as_bytes()))
            .chain(self.files.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            tar.append_data(&mut header, name, data).map_err(written)?;
        }
        let tar = tar.into_inner().map_err(written)?;
        debug_assert_eq!(tar.len() as u64, self.bytes, "member_bytes is the layout");
        let back = read_bundle(&tar, self.limits)?;
        if back.config != config || back.files != self.files {
            return Err(BundleError::Corrupt {
                gzip: false,
                reason: "the bundle written does not read back as its members".to_owned(),
            });
        }
        Ok(tar)
    }
}

/// Compresses a tar with a fixed gzip header (no file name, mtime 0, OS "unknown") at
/// the best level, so the same tar gives the same bytes.
pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut out = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    io::Write::write_all(&mut out, tar).expect("writing to memory");
    out.finish().expect("writing to memory")
}

/// The longest component of a member's name, in bytes: the file system's NAME_MAX (255)
/// less room for the temporary name a file is written under (`.NAME.tmpPID`).
pub const MAX_NAME_BYTES: usize = 240;

/// The longest member name, in bytes: PATH_MAX (4096) less room for the directory it is
/// kept in (`/data/config/generations/N/`).
pub const MAX_PATH_BYTES: usize = 3072;

/// The rules for the names of a bundle's files and directories, which both reading a
/// bundle (what `validate` accepts) and the apply (what it writes) check: each name as
/// [`member_path`] leaves it, and no file where another member needs a directory.
pub fn check_names<'a>(
    files: impl IntoIterator<Item = &'a str>,
    dirs: impl IntoIterator<Item = &'a str>,
) -> Result<(), BundleError> {
    let refuse = |member: &str, reason: String| BundleError::Refused {
        member: member.to_owned(),
        reason,
    };
    let files: std::collections::BTreeSet<&str> = files.into_iter().collect();
    for (name, is_dir) in files
        .iter()
        .map(|f| (*f, false))
        .chain(dirs.into_iter().map(|d| (d, true)))
    {
        match member_path(name) {
            Ok(normal) if normal == name => {}
            Ok(_) => return Err(refuse(name, "not a normalised name".into())),
            Err(reason) => return Err(refuse(name, reason.into())),
        }
        if is_dir && files.contains(name) {
            return Err(refuse(
                name,
                "a file and a directory cannot share a name".into(),
            ));
        }
        // Every directory on the way must not be a file of the bundle.
        for (i, _) in name.match_indices('/') {
            let dir = &name[..i];
            if files.contains(dir) {
                return Err(refuse(
                    name,
                    format!(
                        "{dir} is a file in the bundle: a file and a directory cannot share a name"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Normalises a member path (drops `./` and a trailing `/`), refusing what could escape.
fn member_path(raw: &str) -> Result<String, &'static str> {
    if raw.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if raw.contains('\\') || raw.chars().any(|c| c.is_control()) {
        return Err("backslashes and control characters are not allowed in names");
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("'..' is not allowed"),
            c if c.len() > MAX_NAME_BYTES => {
                return Err("a name component is longer than 240 bytes")
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("empty member name");
    }
    let path = parts.join("/");
    if path.len() > MAX_PATH_BYTES {
        return Err("the name is longer than 3072 bytes");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    enum Member<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Link(tar::EntryType, &'a str),
    }

    /// Writes raw headers so that names the `tar` builder would refuse can be tested.
    fn tar(members: &[Member<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in members {
            let mut h = tar::Header::new_ustar();
            let (name, kind, data): (&str, tar::EntryType, &[u8]) = match m {
                Member::File(n, d) => (n, tar::EntryType::Regular, d),
                Member::Dir(n) => (n, tar::EntryType::Directory, b""),
                Member::Link(k, n) => (n, *k, b""),
            };
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_config_and_apps_plain_and_gzip() {
        let t = tar(&[
            Member::File("./config.toml", b"schema = 1\n"),
            Member::Dir("apps/"),
            Member::Dir("apps/web/"),
            Member::File("apps/web/index.html", b"hi"),
        ]);
        for bytes in [t.clone(), gzip(&t)] {
            assert!(looks_like_bundle(&bytes));
            let b = read_bundle(&bytes, Limits::default()).unwrap();
            assert_eq!(b.config, "schema = 1\n");
            assert_eq!(b.files.keys().collect::<Vec<_>>(), ["apps/web/index.html"]);
            assert_eq!(b.app_dirs(), ["web"]);
        }
    }

    #[test]
    fn refusals_name_the_member() {
        use tar::EntryType as E;
        let cases: Vec<(Vec<Member<'_>>, &str)> = vec![
            (
                vec![Member::File("/etc/passwd", b"x")],
                "/etc/passwd: refused: absolute",
            ),
            (
                vec![Member::File("apps/web/../../x", b"x")],
                "apps/web/../../x: refused: '..'",
            ),
            (
                vec![Member::Link(E::Symlink, "apps/web/l")],
                "apps/web/l: refused: symbolic",
            ),
            (
                vec![Member::Link(E::Link, "apps/web/h")],
                "apps/web/h: refused: hard",
            ),
            (
                vec![Member::Link(E::Char, "apps/web/c")],
                "apps/web/c: refused: device",
            ),
            (
                vec![Member::Link(E::Block, "apps/web/b")],
                "apps/web/b: refused: device",
            ),
            (
                vec![
                    Member::File("apps/web/a", b"1"),
                    Member::File("apps/web/./a", b"2"),
                ],
                "apps/web/./a: refused: duplicate",
            ),
            (
                vec![
                    Member::File("config.toml", b"a"),
                    Member::File("./config.toml", b"b"),
                ],
                "./config.toml: refused: duplicate",
            ),
            (
                vec![Member::File("etc/x", b"x")],
                "etc/x: refused: only config.toml",
            ),
            (
                vec![Member::File("apps/x", b"x")],
                "apps/x: refused: files go under",
            ),
        ];
        for (members, want) in cases {
            let mut all = vec![];
            all.extend(members);
            all.push(Member::File("zz-config.toml", b""));
            let err = read_bundle(&tar(&all), Limits::default())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err} (want {want})");
        }
        let err = read_bundle(&tar(&[Member::Dir("apps/")]), Limits::default()).unwrap_err();
        assert_eq!(err, BundleError::NoConfig);
    }

    #[test]
    fn limits_are_counted_while_decompressing() {
        let big = vec![b'a'; 64 << 10];
        let t = tar(&[
            Member::File("config.toml", b""),
            Member::File("apps/web/big", &big),
        ]);
        let small = Limits {
            bundle_bytes: 32 << 10,
            ..Limits::default()
        };
        let gz = gzip(&t);
        assert!(
            gz.len() < 32 << 10,
            "the compressed bundle is under the limit"
        );
        assert_eq!(
            read_bundle(&gz, small).unwrap_err().to_string(),
            "the bundle is larger than 32768 bytes uncompressed: apps/web/big crosses the limit"
        );

        let cfg = vec![b'#'; 2 << 20];
        let err = read_bundle(
            &tar(&[Member::File("config.toml", &cfg)]),
            Limits::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config.toml: refused: larger than"),
            "{err}"
        );

        let names: Vec<String> = (0..1100).map(|i| format!("apps/web/{i}")).collect();
        let many: Vec<Member<'_>> = names.iter().map(|n| Member::File(n, b"")).collect();
        let err = read_bundle(&tar(&many), Limits::default()).unwrap_err();
        assert_eq!(err, BundleError::TooManyEntries { limit: 1024 });
    }

    fn long_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn names_the_file_system_cannot_hold_are_refused() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let just = "x".repeat(MAX_NAME_BYTES);
        let deep = format!("apps/web/{}", vec![just.as_str(); 13].join("/"));
        let cases = [
            (
                format!("apps/web/{long}"),
                "a name component is longer than 240 bytes",
            ),
            (deep.clone(), "the name is longer than 3072 bytes"),
        ];
        for (name, want) in &cases {
            let t = long_tar(&[("config.toml", b""), (name, b"x")]);
            let err = read_bundle(&t, Limits::default()).unwrap_err();
            assert_eq!(err.to_string(), format!("{name}: refused: {want}"));
            let err = check_names([name.as_str()], []).unwrap_err();
            assert_eq!(err.to_string(), format!("{name}: refused: {want}"));
        }
        let ok = format!("apps/web/{just}");
        let t = long_tar(&[("config.toml", b""), (&ok, b"x")]);
        assert!(read_bundle(&t, Limits::default()).is_ok());
    }

    #[test]
    fn a_file_and_a_directory_cannot_share_a_name() {
        let cases: Vec<(Vec<Member<'_>>, &str)> = vec![
            (
                vec![Member::File("apps/web/a", b"1"), Member::File("apps/web/a/b", b"2")],
                "apps/web/a/b: refused: apps/web/a is a file in the bundle: a file and a directory cannot share a name",
            ),
            (
                vec![Member::File("apps/web/a/b/c", b"2"), Member::File("apps/web/a", b"1")],
                "apps/web/a/b/c: refused: apps/web/a is a file in the bundle: a file and a directory cannot share a name",
            ),
            (
                vec![Member::Dir("apps/web/a/b/"), Member::File("apps/web/a", b"1")],
                "apps/web/a/b: refused: apps/web/a is a file in the bundle: a file and a directory cannot share a name",
            ),
        ];
        for (mut members, want) in cases {
            members.push(Member::File("config.toml", b""));
            let err = read_bundle(&tar(&members), Limits::default()).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        // Names that only look alike are fine.
        let t = tar(&[
            Member::File("config.toml", b""),
            Member::File("apps/web/a", b"1"),
            Member::File("apps/web/a-b/c", b"2"),
            Member::File("apps/web/ab/c", b"3"),
        ]);
        assert!(read_bundle(&t, Limits::default()).is_ok());
        assert_eq!(
            check_names(["apps/web/a", "apps/web/a/b"], []).unwrap_err().to_string(),
            "apps/web/a/b: refused: apps/web/a is a file in the bundle: a file and a directory cannot share a name"
        );
        assert!(check_names(["apps/web/./a"], []).is_err());
    }

    #[test]
    fn written_bundles_read_back_and_are_byte_for_byte_stable() {
        let write = |order: &[&str]| {
            let mut w = BundleWriter::new(Limits::default());
            for name in order {
                let data = if *name == "config.toml" {
                    b"schema = 1\n".to_vec()
                } else {
                    name.as_bytes().repeat(300)
                };
                w.add(name, data).unwrap();
            }
            w.finish().unwrap()
        };
        let long = format!("apps/web/{}", "n".repeat(200));
        let a = write(&[
            "config.toml",
            "apps/web/b",
            "apps/web/a",
            "apps/db/x",
            &long,
        ]);
        let b = write(&[
            &long,
            "apps/db/x",
            "apps/web/a",
            "config.toml",
            "apps/web/b",
        ]);
        assert!(a == b, "the order of adding does not matter");
        assert!(gzip(&a) == gzip(&b));
        let gz = gzip(&a);
        // No flags (no name, no comment), mtime 0, OS unknown.
        assert_eq!(&gz[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(gz[9], 255);
        for bytes in [a.clone(), gz] {
            let back = read_bundle(&bytes, Limits::default()).unwrap();
            assert_eq!(back.config, "schema = 1\n");
            assert_eq!(
                back.files.keys().collect::<Vec<_>>(),
                ["apps/db/x", "apps/web/a", "apps/web/b", long.as_str()]
            );
            assert_eq!(back.files["apps/web/a"], b"apps/web/a".repeat(300));
        }
        // config.toml first, then the files by name; the fixed header fields.
        let mut archive = tar::Archive::new(&a[..]);
        let headers: Vec<(String, u32, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap() + h.gid().unwrap(),
                )
            })
            .collect();
        assert_eq!(headers[0].0, "config.toml");
        assert_eq!(headers[4].0, long);
        assert!(
            headers.iter().all(|h| (h.1, h.2, h.3) == (0o644, 0, 0)),
            "{headers:?}"
        );
    }

    #[test]
    fn the_writer_predicts_the_tar_layout() {
        // Names of these lengths in bytes, around the header's 100 and the blocks' 512.
        for len in [10, 99, 100, 101, 510, 511, 512, 513, 3000] {
            let mut name = String::from("apps/web/x");
            while name.len() < len {
                let slash = name.len() % 200 == 0 && name.len() + 1 < len;
                name.push(if slash { '/' } else { 'x' });
            }
            assert_eq!(name.len(), len);
            for size in [0u64, 1, 511, 512, 513] {
                let mut w = BundleWriter::new(Limits::default());
                w.add("config.toml", vec![b'#'; 7]).unwrap();
                w.add(&name, vec![0; size as usize]).unwrap();
                let predicted = w.bytes;
                // finish() asserts the prediction in debug builds; this holds in release.
                assert_eq!(w.finish().unwrap().len() as u64, predicted, "{name} {size}");
            }
        }
    }

    #[test]
    fn the_writer_refuses_what_the_reader_refuses_in_its_words() {
        use MemberKind as K;
        let w = BundleWriter::new(Limits::default());
        let cases = [
            ("/etc/passwd", K::File, "/etc/passwd: refused: absolute paths are not allowed"),
            ("apps/web/../x", K::File, "apps/web/../x: refused: '..' is not allowed"),
            ("apps/web/l", K::Symlink, "apps/web/l: refused: symbolic links are not allowed"),
            ("apps/web/h", K::HardLink, "apps/web/h: refused: hard links are not allowed"),
            ("apps/web/f", K::Device, "apps/web/f: refused: device nodes and FIFOs are not allowed"),
            ("apps/web/s", K::Other, "apps/web/s: refused: only regular files and directories are allowed"),
            ("etc/x", K::File, "etc/x: refused: only config.toml and apps/<container>/... belong in a bundle"),
            ("etc", K::Directory, "etc: refused: only config.toml and apps/<container>/... belong in a bundle"),
            ("apps/x", K::File, "apps/x: refused: files go under apps/<container>/"),
            ("apps/web/a\tb", K::File, "apps/web/a\tb: refused: backslashes and control characters are not allowed in names"),
        ];
        for (name, kind, want) in cases {
            assert_eq!(w.check(name, kind, 1).unwrap_err().to_string(), want);
            // The reader says the same of the same member.
            if kind == K::File {
                let t = tar(&[Member::File(name, b"x"), Member::File("config.toml", b"")]);
                assert_eq!(
                    read_bundle(&t, Limits::default()).unwrap_err().to_string(),
                    want
                );
            }
        }
        assert_eq!(w.check("apps/web", K::Directory, 0).unwrap(), "apps/web");

        let long = format!("apps/web/{}", "x".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(
            w.check(&long, K::File, 1).unwrap_err().to_string(),
            format!("{long}: refused: a name component is longer than 240 bytes")
        );
        assert_eq!(
            w.check("config.toml", K::File, (256 << 10) + 1)
                .unwrap_err()
                .to_string(),
            "config.toml: refused: larger than 262144 bytes"
        );
        assert_eq!(
            w.check("apps/web/big", K::File, 16 << 20)
                .unwrap_err()
                .to_string(),
            "the bundle is larger than 16777216 bytes uncompressed: apps/web/big crosses the limit"
        );

        let mut w = BundleWriter::new(Limits::default());
        w.add("apps/web/a", b"1".to_vec()).unwrap();
        assert_eq!(
            w.add("apps/web/./a", b"2".to_vec())
                .unwrap_err()
                .to_string(),
            "apps/web/./a: refused: duplicate member"
        );
        assert_eq!(
            w.add("config.toml", vec![0xff]).unwrap_err(),
            BundleError::ConfigNotUtf8
        );
        assert_eq!(w.finish().unwrap_err(), BundleError::NoConfig);

        let few = Limits {
            entries: 2,
            ..Limits::default()
        };
        let mut w = BundleWriter::new(few);
        w.add("config.toml", vec![]).unwrap();
        w.add("apps/web/a", vec![]).unwrap();
        assert_eq!(
            w.add("apps/web/b", vec![]).unwrap_err(),
            BundleError::TooManyEntries { limit: 2 }
        );

        // The whole stream counts: headers, padding and the trailer, as the reader counts.
        let small = Limits {
            bundle_bytes: 8 << 10,
            ..Limits::default()
        };
        let mut w = BundleWriter::new(small);
        w.add("config.toml", vec![]).unwrap();
        w.add("apps/web/a", vec![0; 4 << 10]).unwrap();
        // 1024 (trailer) + 512 + 512 + 4096 = 6144; 1536 more bytes take 2048: exactly
        // the limit; one more takes another block.
        assert_eq!(
            w.check("apps/web/b", K::File, 1537)
                .unwrap_err()
                .to_string(),
            "the bundle is larger than 8192 bytes uncompressed: apps/web/b crosses the limit"
        );
        w.add("apps/web/b", vec![0; 1536]).unwrap();
        let t = w.finish().unwrap();
        assert_eq!(t.len(), 8 << 10);
        assert!(read_bundle(&t, small).is_ok());
    }

    #[test]
    fn the_size_refusal_names_the_member_between_members_too() {
        let big = vec![b'a'; 40 << 10];
        let small = Limits {
            bundle_bytes: 32 << 10,
            ..Limits::default()
        };
        let t = tar(&[
            Member::File("config.toml", &big[..(31 << 10)]),
            Member::Dir("apps/"),
            Member::Dir("apps/web/"),
            Member::File("apps/web/x", &big),
        ]);
        // 512 + 31744 bytes of config.toml, 512 of apps/: the header of apps/web/
        // crosses 32768.
        assert_eq!(
            read_bundle(&t, small).unwrap_err().to_string(),
            "the bundle is larger than 32768 bytes uncompressed: the member after apps/ crosses the limit"
        );
    }
}
