//! Crash consistency at every flush of a first boot (see `atomix_qemu_tests::crash`):
//! the fresh flash's first boot with a `/boot` seed is recorded write by write, the disk is
//! rebuilt at every flush and judged (partition table, data filesystem, slot state, what
//! early boot would decide, the crash-safe files as the device's kernel reads them), a
//! sample of points gets a torn set of in-flight writes, and a few points are booted to
//! the end.
//!
//! CI runs a small fixed-seed sample; `scripts/crash-campaign.sh` runs the whole campaign
//! (`ATOMIX_CRASH_BOOTS`, `ATOMIX_CRASH_TORN`, `ATOMIX_CRASH_SEED`).

use atomix_qemu_tests::crash::{record_first_boot, run, Options};

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn every_flush_point_of_a_first_boot_is_a_disk_the_next_boot_finishes() {
    let options = Options {
        boots: env_or("ATOMIX_CRASH_BOOTS", 2) as usize,
        torn: env_or("ATOMIX_CRASH_TORN", 24) as usize,
        seed: env_or("ATOMIX_CRASH_SEED", 1),
    };
    let recording = record_first_boot("crash-first-boot");
    eprintln!(
        "recorded the first boot in {:.0} s ({} MiB of log)",
        recording.took.as_secs_f64(),
        std::fs::metadata(&recording.log).unwrap().len() >> 20
    );
    let report = run(&recording, &options);
    let text = format!("{options:?}\n{report}");
    eprintln!("{text}");
    std::fs::write(recording.dir.join("report.txt"), &text).unwrap();
    // A first boot partitions, formats and writes its config: many flushes, and the disk
    // is seen both as flashed and as partitioned.
    assert!(
        report.points >= 20,
        "only {} flush points: {text}",
        report.points
    );
    assert!(
        report.layouts.0 > 0 && report.layouts.1 > 0,
        "both layouts must be among the points: {text}"
    );
    // The judge VM read the data filesystem of every partitioned point, flush and torn.
    assert!(
        report.files_judged >= report.layouts.1,
        "only {} data filesystems read: {text}",
        report.files_judged
    );
    // ... and found both phases: the marker before the seed's import, current after it.
    assert!(
        report.file_states.0 > 0 && report.file_states.2 > 0,
        "the judge VM never saw the marker alone or current alone: {text}"
    );
    // The spread, and every point where the partition table changes (at least one).
    assert!(report.transitions >= 1, "{text}");
    assert!(report.booted >= options.boots.min(report.points), "{text}");
    assert!(report.failures.is_empty(), "{text}");
}
