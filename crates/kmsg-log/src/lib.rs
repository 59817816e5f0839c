//! Logging to the kernel log (`/dev/kmsg`) with kernel levels, so that the journal and the
//! serial console keep them, and to stderr when a person is watching a terminal.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

const IDENT: &str = "atomix-initrd";

/// The `<N>` prefix `/dev/kmsg` understands (syslog priorities).
pub fn kernel_level(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Formats one record as a `/dev/kmsg` line. Each line of a multi-line message becomes a
/// record of its own, since the kernel cuts records at newlines.
pub fn format_line(level: Level, message: &str) -> String {
    let mut out = String::new();
    for line in message.lines() {
        out.push_str(&format!("<{}>{IDENT}: {line}\n", kernel_level(level)));
    }
    out
}

#[derive(Debug)]
struct KmsgLogger {
    kmsg: Option<Mutex<File>>,
    stderr: bool,
}

impl Log for KmsgLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Debug
    }

    fn log(&self, record: &Record) {
        let message = record.args().to_string();
        if let Some(kmsg) = &self.kmsg {
            if let Ok(mut file) = kmsg.lock() {
                // One write per record: /dev/kmsg takes one record per write(2).
                for line in format_line(record.level(), &message).lines() {
                    let _ = file.write_all(format!("{line}\n").as_bytes());
                }
            }
        }
        if self.stderr {
            eprintln!(
                "{IDENT}: {}: {message}",
                record.level().as_str().to_lowercase()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. `kmsg` is normally `/dev/kmsg`; tests point it at a file. When it
/// cannot be opened, messages still reach stderr.
pub fn init(kmsg: &Path) {
    let file = OpenOptions::new()
        .append(true)
        .create(kmsg != Path::new("/dev/kmsg"))
        .open(kmsg)
        .ok();
    let stderr = std::io::stderr().is_terminal() || file.is_none();
    let logger = KmsgLogger {
        kmsg: file.map(Mutex::new),
        stderr,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_kernel_levels() {
        assert_eq!(
            format_line(Level::Error, "mount failed"),
            "<3>atomix-initrd: mount failed\n"
        );
        assert_eq!(format_line(Level::Warn, "w"), "<4>atomix-initrd: w\n");
        assert_eq!(format_line(Level::Info, "i"), "<6>atomix-initrd: i\n");
        assert_eq!(
            format_line(Level::Debug, "a\nb"),
            "<7>atomix-initrd: a\n<7>atomix-initrd: b\n"
        );
    }
}
