//! Log lines on stderr with kernel-style level prefixes (`<3>` error, `<4>` warning, `<6>`
//! info), which journald turns into priorities. Errors also go to the kernel log
//! (`--kmsg /dev/kmsg`), so an operator watching the serial console sees a refused seed.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

static KMSG: OnceLock<PathBuf> = OnceLock::new();

/// Also write error lines to this kernel log device (set once, at start).
pub fn set_kmsg(path: PathBuf) {
    let _ = KMSG.set(path);
}

fn line(level: u8, msg: &str) {
    for l in msg.lines() {
        eprintln!("<{level}>{l}");
    }
}

fn kmsg(level: u8, msg: &str) {
    if let Some(path) = KMSG.get() {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            for l in msg.lines() {
                // One write per line: /dev/kmsg takes one record per write.
                let _ = f.write_all(format!("<{level}>atomix-provision: {l}\n").as_bytes());
            }
        }
    }
}

pub fn error(msg: &str) {
    line(3, msg);
    kmsg(3, msg);
}

/// A milestone an operator at the serial console wants to see (seed found, apply steps,
/// where the console listens): the journal, and the kernel log at notice level.
pub fn notice(msg: &str) {
    line(5, msg);
    kmsg(5, msg);
}

pub fn warn(msg: &str) {
    line(4, msg);
}

/// A warning for the kernel log too: for programs udev runs, whose stderr udev keeps
/// only at debug level.
pub fn warn_kmsg(msg: &str) {
    line(4, msg);
    kmsg(4, msg);
}

/// Routine news for the kernel log too (see [`warn_kmsg`]).
pub fn info_kmsg(msg: &str) {
    line(6, msg);
    kmsg(6, msg);
}

pub fn info(msg: &str) {
    line(6, msg);
}
