//! Progress of a long write or read: a bar with rate and time left on a terminal
//! (indicatif), plain lines every few seconds otherwise (logs, CI), so both show how far
//! the flash got and how fast the device is.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts reporting `what` (e.g. `writing /dev/sdb`) over `total` bytes.
    pub fn new(what: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_owned());
            bar
        });
        Progress {
            what: what.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            bar,
        }
    }

    pub fn add(&mut self, bytes: u64) {
        self.done += bytes;
        match &self.bar {
            Some(bar) => bar.inc(bytes),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("atomix-image: {}", self.line());
            }
            None => {}
        }
    }

    /// `writing /dev/sdb: 512 MiB of 1.2 GiB (41%), 48.2 MiB/s, 15 s left`.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let left = if rate > 0.0 {
            format!(", {:.0} s left", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        format!(
            "{}: {} of {} ({}%), {:.1} MiB/s{left}",
            self.what,
            size(self.done),
            size(self.total),
            (self.done * 100).checked_div(self.total).unwrap_or(100),
            rate / f64::from(1 << 20),
        )
    }

    /// Ends the report; returns the time taken.
    pub fn finish(self) -> Duration {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }
}

/// Bytes as MiB, or GiB from 10 GiB on.
pub fn size(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1 << 30))
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// MiB per second.
pub fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / f64::from(1 << 20) / took.as_secs_f64().max(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far_how_fast_and_how_long() {
        let mut p = Progress {
            what: "writing /dev/sdz".into(),
            total: 400 << 20,
            done: 0,
            started: Instant::now() - Duration::from_secs(10),
            last_line: Instant::now(),
            bar: None,
        };
        p.add(100 << 20);
        let line = p.line();
        assert!(
            line.starts_with("writing /dev/sdz: 100 MiB of 400 MiB (25%), 10.0 MiB/s, 30 s left"),
            "{line}"
        );
        assert_eq!(size(12 << 30), "12.0 GiB");
    }
}
