//! Replays a log through all its flush points and says how long it took:
//!
//! ```sh
//! cargo run --release -p write-log --example replay -- LOG BASE WORK [--scan] [--keep-discards] [--torn]
//! ```
//!
//! `--scan` reads past the super block's count (a killed QEMU; a missing super block is
//! taken as 512-byte sectors); `--keep-discards` leaves discarded ranges as they were;
//! `--torn` also applies and undoes one torn state (seed 0) at every flush point.

use std::process::ExitCode;
use std::time::Instant;

use write_log::{DiscardMode, Log, OpenOptions, ReplayOptions, Replayer, TornOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [log, base, work] = paths[..] else {
        eprintln!("usage: replay LOG BASE WORK [--scan] [--keep-discards] [--torn]");
        return ExitCode::from(2);
    };
    let flags = Flags {
        scan: flag("--scan"),
        keep_discards: flag("--keep-discards"),
        torn: flag("--torn"),
    };
    match run(log, base, work, &flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: each error names what it was doing, its source says why.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("replay: {msg}");
            ExitCode::FAILURE
        }
    }
}

struct Flags {
    scan: bool,
    keep_discards: bool,
    torn: bool,
}

fn run(log: &str, base: &str, work: &str, flags: &Flags) -> Result<(), write_log::Error> {
    let t = Instant::now();
    let options = OpenOptions::new()
        .scan_past_nr_entries(flags.scan)
        .assume_sector_size(512);
    let log = Log::open_with(log, &options)?;
    let s = log.summary();
    println!("indexed in {:.3} s: {s:?}", t.elapsed().as_secs_f64());
    if let Some(stop) = log.scan_stop() {
        println!("scan stopped: {stop:?}");
    }

    let t = Instant::now();
    let discard = if flags.keep_discards {
        DiscardMode::Keep
    } else {
        DiscardMode::Zero
    };
    let mut r = Replayer::new(&log, base, work, ReplayOptions { discard })?;
    println!("base copied in {:.3} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let points = log.flush_points();
    for &k in &points {
        r.advance_to(k)?;
    }
    r.advance_to_end()?;
    let secs = t.elapsed().as_secs_f64();
    report(&s, points.len(), secs);
    if !flags.torn {
        return Ok(());
    }

    let mut r = Replayer::new(&log, base, work, ReplayOptions { discard })?;
    let (t, mut pieces, mut torn_secs) = (Instant::now(), 0, 0.0);
    for &k in &points {
        r.advance_to(k)?;
        let subset = log.torn_subset(k, 0, &TornOptions::default());
        pieces += subset.pieces.len();
        let tt = Instant::now();
        r.with_torn(&subset, |_| ())?;
        torn_secs += tt.elapsed().as_secs_f64();
    }
    println!(
        "again with a torn state at each point ({pieces} pieces in all): {:.3} s, of which \
         {torn_secs:.3} s applying and undoing them",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn report(s: &write_log::Summary, points: usize, secs: f64) {
    println!(
        "replayed {} entries through {points} flush points in {secs:.3} s: {:.0} MiB/s of writes",
        s.entries,
        s.bytes_written as f64 / (1 << 20) as f64 / secs
    );
}
