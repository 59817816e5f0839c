//! The one `/dev/kmsg` logger of AtomixOS's programs: a [`log::Log`] that writes
//! `<N>ident: message` lines with kernel log levels, so that the journal and the serial
//! console keep them, and writes to stderr as the program needs it.
//!
//! Two programs use it, with the stderr each had before:
//!
//! * `atomix-initrd` ([`Stderr::Fallback`]): everything to the kernel log; stderr only for
//!   a person at a terminal, or when the kernel log cannot be opened
//!   (`atomix-initrd: error: ...`).
//! * `atomix-provision` ([`Stderr::Prefixed`]): every record to stderr as `<N>message`,
//!   which journald reads as its priority; to the kernel log only errors and the records
//!   logged with target [`KMSG`] or [`NOTICE`] (what an operator at the serial console
//!   wants to see).
//!
//! A message of several lines becomes one kernel record per line.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Target of a record for the kernel log whatever [`Config::kmsg_level`] says:
/// `log::warn!(target: kmsg_log::KMSG, ...)`.
pub const KMSG: &str = "kmsg";

/// Target of an info record that is a milestone (a seed found, where the console
/// listens): written at the kernel's notice level (5), to the kernel log as well.
pub const NOTICE: &str = "notice";

/// The `<N>` prefix `/dev/kmsg` understands (syslog priorities) for a record of `level`
/// with `target`.
pub fn kernel_level(level: Level, target: &str) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info if target == NOTICE => 5,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Formats one record as `/dev/kmsg` lines, `<N>ident: line` for each line of `message`
/// (the kernel cuts records at newlines).
pub fn format_line(ident: &str, level: u8, message: &str) -> String {
    let mut out = String::new();
    for line in message.lines() {
        out.push_str(&format!("<{level}>{ident}: {line}\n"));
    }
    out
}

/// What goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// `ident: level: message`, only when stderr is a terminal or the kernel log could
    /// not be opened.
    Fallback,
    /// `<N>line` for every line of every record, whatever the kernel log gets.
    Prefixed,
}

/// How a program logs.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// The name in front of each kernel log line (`atomix-initrd`).
    pub ident: &'static str,
    /// The kernel log device (normally `/dev/kmsg`; tests name a file, created if
    /// missing); None: stderr only.
    pub kmsg: Option<&'a Path>,
    /// Records at this level or above go to the kernel log, and those logged with target
    /// [`KMSG`] or [`NOTICE`] whatever their level.
    pub kmsg_level: LevelFilter,
    pub stderr: Stderr,
}

#[derive(Debug)]
struct KmsgLogger {
    ident: &'static str,
    kmsg: Option<Mutex<File>>,
    kmsg_level: LevelFilter,
    stderr: Stderr,
    /// With [`Stderr::Fallback`]: whether stderr gets the records.
    fallback: bool,
}

impl KmsgLogger {
    fn to_kmsg(&self, record: &Record) -> bool {
        record.level() <= self.kmsg_level || matches!(record.target(), KMSG | NOTICE)
    }
}

impl Log for KmsgLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Debug
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let level = kernel_level(record.level(), record.target());
        if self.to_kmsg(record) {
            if let Some(Ok(mut file)) = self.kmsg.as_ref().map(Mutex::lock) {
                // One write per line: /dev/kmsg takes one record per write(2).
                for line in format_line(self.ident, level, &message).lines() {
                    let _ = file.write_all(format!("{line}\n").as_bytes());
                }
            }
        }
        match self.stderr {
            Stderr::Prefixed => {
                for line in message.lines() {
                    eprintln!("<{level}>{line}");
                }
            }
            Stderr::Fallback if self.fallback => eprintln!(
                "{}: {}: {message}",
                self.ident,
                record.level().as_str().to_lowercase()
            ),
            Stderr::Fallback => {}
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once per process; a second call changes nothing). When the
/// kernel log cannot be opened, messages still reach stderr.
pub fn init(config: Config) {
    let file = config.kmsg.and_then(|kmsg| {
        OpenOptions::new()
            .append(true)
            .create(kmsg != Path::new("/dev/kmsg"))
            .open(kmsg)
            .ok()
    });
    let logger = KmsgLogger {
        ident: config.ident,
        fallback: std::io::stderr().is_terminal() || file.is_none(),
        kmsg: file.map(Mutex::new),
        kmsg_level: config.kmsg_level,
        stderr: config.stderr,
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
        let line = |level, target, message| {
            format_line("atomix-initrd", kernel_level(level, target), message)
        };
        assert_eq!(
            line(Level::Error, "x", "mount failed"),
            "<3>atomix-initrd: mount failed\n"
        );
        assert_eq!(line(Level::Warn, KMSG, "w"), "<4>atomix-initrd: w\n");
        assert_eq!(line(Level::Info, "x", "i"), "<6>atomix-initrd: i\n");
        assert_eq!(line(Level::Info, KMSG, "i"), "<6>atomix-initrd: i\n");
        assert_eq!(line(Level::Info, NOTICE, "n"), "<5>atomix-initrd: n\n");
        assert_eq!(
            line(Level::Debug, "x", "a\nb"),
            "<7>atomix-initrd: a\n<7>atomix-initrd: b\n"
        );
    }

    #[test]
    fn the_kernel_log_gets_its_level_and_the_marked_targets() {
        let logger = |kmsg_level| KmsgLogger {
            ident: "t",
            kmsg: None,
            kmsg_level,
            stderr: Stderr::Prefixed,
            fallback: false,
        };
        let to_kmsg = |l: &KmsgLogger, level, target| {
            l.to_kmsg(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .args(format_args!("m"))
                    .build(),
            )
        };
        let everything = logger(LevelFilter::Debug);
        assert!(to_kmsg(&everything, Level::Debug, "atomix_initrd::apply"));
        let errors = logger(LevelFilter::Error);
        assert!(to_kmsg(&errors, Level::Error, "atomix_provision::jobs"));
        assert!(!to_kmsg(&errors, Level::Warn, "atomix_provision::jobs"));
        assert!(!to_kmsg(&errors, Level::Info, "atomix_provision::jobs"));
        assert!(to_kmsg(&errors, Level::Warn, KMSG));
        assert!(to_kmsg(&errors, Level::Info, KMSG));
        assert!(to_kmsg(&errors, Level::Info, NOTICE));
    }
}
