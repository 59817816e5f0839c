//! How far hashing or uploading a file has got, for a person: on a terminal a bar with
//! the rate and the time left (indicatif, on stderr); otherwise (a log, CI, a pipe) a
//! plain line each time another tenth is done, saying the same. Never on stdout, whose
//! output is the command's result; nothing at all with `--json`.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// An indicatif bar on stderr.
    Bar,
    /// A plain line on stderr at every new tenth.
    Lines,
    /// Nothing (`--json`, or too small a file to be worth it).
    Off,
}

impl Display {
    /// A bar when stderr is a terminal, lines when it is not, nothing with `--json`.
    pub fn for_stderr(json: bool) -> Display {
        if json {
            Display::Off
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// The progress of one pass over `total` bytes.
#[derive(Debug)]
pub struct Progress {
    /// The past tense that starts each line: `hashed`, `uploaded`.
    done_verb: &'static str,
    display: Display,
    total: u64,
    done: u64,
    /// From the first byte on: an upload waits for the device's go-ahead first.
    started: Option<Instant>,
    /// The last tenth a line was printed for.
    shown_tenth: u64,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing `doing` (`hashing NAME`, on the bar) over `total` bytes; lines start
    /// with `done_verb`.
    pub fn new(display: Display, doing: &str, done_verb: &'static str, total: u64) -> Progress {
        let bar = (display == Display::Bar).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(doing.to_owned());
            bar
        });
        Progress {
            done_verb,
            display,
            total,
            done: 0,
            started: None,
            shown_tenth: 0,
            bar,
        }
    }

    /// `done` bytes of the total are done.
    pub fn set(&mut self, done: u64) {
        let started = *self.started.get_or_insert_with(|| {
            if let Some(bar) = &self.bar {
                // The rate and time left count from the first byte, not from the wait.
                bar.reset_elapsed();
                bar.reset_eta();
            }
            Instant::now()
        });
        self.done = done.min(self.total);
        match (&self.bar, self.display) {
            (Some(bar), _) => bar.set_position(self.done),
            (None, Display::Lines) => {
                let tenth = tenth(self.done, self.total);
                if tenth > self.shown_tenth {
                    self.shown_tenth = tenth;
                    eprintln!(
                        "{}",
                        line(self.done_verb, self.done, self.total, started.elapsed())
                    );
                }
            }
            (None, _) => {}
        }
    }

    /// Ends the pass: the bar gives way to the last line, which lines mode has printed.
    pub fn finish(mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if self.done == self.total {
                let took = self.started.map_or(Duration::ZERO, |s| s.elapsed());
                eprintln!("{}", line(self.done_verb, self.done, self.total, took));
            }
        }
    }
}

impl Drop for Progress {
    /// A pass cut short (an error, a refusal) leaves no half-drawn bar behind.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The tenths of `total` that `done` has reached (10 when all is done, or nothing was to
/// be done).
fn tenth(done: u64, total: u64) -> u64 {
    done.saturating_mul(10).checked_div(total).unwrap_or(10)
}

/// `uploaded 40% (2.3 of 5.7 MiB, 12.1 MiB/s, 1 s left)`, or when all is done
/// `uploaded 100% (5.7 MiB in 0.5 s, 12.1 MiB/s)`.
fn line(verb: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let per_sec = format!("{:.1} MiB/s", rate / MIB);
    if done >= total {
        return format!("{verb} 100% ({} MiB in {secs:.1} s, {per_sec})", mib(total));
    }
    let left = if rate > 0.0 {
        format!(", {} left", duration((total - done) as f64 / rate))
    } else {
        String::new()
    };
    format!(
        "{verb} {}% ({} of {} MiB, {per_sec}{left})",
        tenth(done, total) * 10,
        mib(done),
        mib(total)
    )
}

const MIB: f64 = (1u64 << 20) as f64;

/// Bytes in MiB, one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

/// `45 s`, `3 min 05 s`.
fn duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// A reader that reports the bytes read through it so far.
#[derive(Debug)]
pub struct Tracked<'a, R> {
    inner: R,
    read: u64,
    progress: &'a mut Progress,
}

impl<'a, R> Tracked<'a, R> {
    pub fn new(inner: R, progress: &'a mut Progress) -> Self {
        Tracked {
            inner,
            read: 0,
            progress,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.set(self.read);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_how_far_how_fast_and_how_long() {
        let total = 10 << 20;
        assert_eq!(
            line("uploaded", 4 << 20, total, Duration::from_secs(2)),
            "uploaded 40% (4.0 of 10.0 MiB, 2.0 MiB/s, 3 s left)"
        );
        assert_eq!(
            line("hashed", 1 << 20, 200 << 20, Duration::from_secs(1)),
            "hashed 0% (1.0 of 200.0 MiB, 1.0 MiB/s, 3 min 19 s left)"
        );
        assert_eq!(
            line("uploaded", total, total, Duration::from_millis(2500)),
            "uploaded 100% (10.0 MiB in 2.5 s, 4.0 MiB/s)"
        );
        // No time yet: no rate to tell the time left by.
        assert_eq!(
            line("hashed", 0, total, Duration::ZERO),
            "hashed 0% (0.0 of 10.0 MiB, 0.0 MiB/s)"
        );
    }

    #[test]
    fn a_line_for_each_new_tenth_only() {
        let total = 1000;
        let mut seen = Vec::new();
        let mut shown = 0;
        for done in [0, 50, 99, 100, 150, 199, 420, 999, 1000, 1000] {
            let t = tenth(done, total);
            if t > shown {
                shown = t;
                seen.push(t * 10);
            }
        }
        assert_eq!(seen, [10, 40, 90, 100]);
        assert_eq!(tenth(0, 0), 10, "an empty file is done");
    }
}
