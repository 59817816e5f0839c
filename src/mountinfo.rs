//! `/proc/self/mountinfo`: which paths are mount points, so every mount step can tell
//! "already done" (a restarted unit) from "to do".

use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields early boot uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

/// Parses the text of `/proc/self/mountinfo`. Malformed lines are skipped: the kernel
/// writes this file, and one odd line must not stop the boot.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (before, after) = line.split_once(" - ")?;
    let target = before.split(' ').nth(4)?;
    let mut rest = after.split(' ');
    let fstype = rest.next()?;
    let source = rest.next()?;
    let super_options = rest.next().unwrap_or("");
    let mount_options = before.split(' ').nth(5).unwrap_or("");
    Some(MountEntry {
        target: PathBuf::from(unescape(target)),
        fstype: fstype.to_owned(),
        source: unescape(source),
        options: format!("{mount_options},{super_options}"),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The topmost mount at exactly `target`, if any.
pub fn find<'a>(entries: &'a [MountEntry], target: &Path) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.target == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/run/rootfs-base,upperdir=/run/overlay-root/upper,workdir=/run/overlay-root/work
30 22 7:1 / /run/rootfs-base ro,relatime shared:2 - squashfs /dev/loop0p2 ro,errors=continue
31 22 0:40 / /run/overlay-root rw,relatime shared:3 - tmpfs tmpfs rw,mode=755
32 22 7:5 / /tmp/with\\040space rw - ext4 /dev/loop0p5 rw
garbage line
";

    #[test]
    fn parses_targets_types_and_sources() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 4);
        let base = find(&entries, Path::new("/run/rootfs-base")).unwrap();
        assert_eq!(base.fstype, "squashfs");
        assert_eq!(base.source, "/dev/loop0p2");
        assert!(base.options.starts_with("ro,"));
        let root = find(&entries, Path::new("/")).unwrap();
        assert!(root.options.contains("upperdir=/run/overlay-root/upper"));
        assert!(find(&entries, Path::new("/tmp/with space")).is_some());
        assert!(find(&entries, Path::new("/sysroot")).is_none());
    }
}
