//! `atomixctl bundle`: a config bundle from a config.toml and a directory of files for
//! containers, under the device's own rules and in its words
//! ([`atomix_config::bundle::BundleWriter`]), the same bytes for the same inputs, written
//! whole or not at all.
//!
//! Collecting the members is the plan (every refusal names the local file and the member);
//! [`write_atomically`] is the one side effect.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use atomix_config::bundle::{BundleWriter, Limits, MemberKind};

/// Adds the config and the files under `apps` (which become `apps/<container>/...`) to a
/// writer, each checked before it is read. Errors name the local path, then say what the
/// device would say of the member.
pub fn collect(config: &Path, apps: Option<&Path>) -> anyhow::Result<BundleWriter> {
    let mut writer = BundleWriter::new(Limits::default());
    add_file(&mut writer, config, "config.toml")?;
    if let Some(apps) = apps {
        let meta = fs::metadata(apps).with_context(|| format!("cannot read {}", apps.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory (--apps)", apps.display());
        }
        add_dir(&mut writer, apps, "apps")?;
    }
    Ok(writer)
}

/// A file the operator named (config.toml): links are followed, it must be a file.
fn add_file(writer: &mut BundleWriter, path: &Path, member: &str) -> anyhow::Result<()> {
    let shown = path.display();
    let meta = fs::metadata(path).with_context(|| format!("cannot read {shown}"))?;
    let kind = MemberKind::of_file_type(meta.file_type());
    if kind != MemberKind::File {
        bail!("{shown} is not a regular file");
    }
    writer
        .check(member, kind, meta.len())
        .with_context(|| format!("cannot bundle {shown}"))?;
    let data = fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    writer
        .add(member, data)
        .with_context(|| format!("cannot bundle {shown}"))
}

/// A directory's entries, in byte order of their names, as members under `member`;
/// nothing in it is followed (a link in it is refused, as the device refuses one).
fn add_dir(writer: &mut BundleWriter, dir: &Path, member: &str) -> anyhow::Result<()> {
    let shown = dir.display();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {shown}"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {shown}"))?;
    entries.sort();
    for path in entries {
        let shown = path.display();
        let name = path.file_name().unwrap_or_default();
        let Some(name) = name.to_str() else {
            bail!("cannot bundle {shown}: its name is not UTF-8, and member names must be");
        };
        let member = format!("{member}/{name}");
        let meta = fs::symlink_metadata(&path).with_context(|| format!("cannot read {shown}"))?;
        let kind = MemberKind::of_file_type(meta.file_type());
        writer
            .check(&member, kind, meta.len())
            .with_context(|| format!("cannot bundle {shown}"))?;
        if kind == MemberKind::Directory {
            add_dir(writer, &path, &member)?;
        } else {
            let data = fs::read(&path).with_context(|| format!("cannot read {shown}"))?;
            writer
                .add(&member, data)
                .with_context(|| format!("cannot bundle {shown}"))?;
        }
    }
    Ok(())
}

/// Whether `out` gets a plain tar (its name ends in `.tar`) rather than gzip.
pub fn is_plain_tar(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "tar")
}

/// Writes `bytes` to `out` whole or not at all: a temporary file beside it, synced, then
/// renamed over it, then the directory synced. A failure removes the temporary file and
/// leaves `out` as it was.
pub fn write_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let shown = out.display();
    let Some(name) = out.file_name() else {
        bail!("{shown} does not name a file (-o)");
    };
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, out).with_context(|| format!("cannot rename it to {shown}"))
    })();
    if let Err(e) = written {
        // It may not exist (create failed); nothing more to say then.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory of {shown}"))
}
