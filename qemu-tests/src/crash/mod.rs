//! Crash consistency at every flush: the first boot of a fresh flash with a `/boot` seed
//! is recorded write by write (QEMU's `blklogwrites`), then the disk is rebuilt as a
//! power cut would have left it at each flush the guest issued ([`write_log`]), judged
//! there without booting ([`judge`]), its crash-safe files read by the device's own kernel
//! in a judge VM ([`files`]), and, for a sample of points, booted to see that it still
//! ends provisioned from the seed with the same generation.
//!
//! A flush is where a real eMMC promises that what was written before it is durable; what
//! was written after it may be lost or kept in any part. So beside each flush point, a
//! sample of points gets a random subset of the writes in flight after it ("torn").

pub mod files;
pub mod judge;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use write_log::{Log, ReplayOptions, Replayer, SplitMix64, TornOptions};

use files::{JudgeVm, Listing};

use crate::{test_config, test_key, Device, Image};
pub use judge::{Judges, Layout, Verdict};

const BOOT: Duration = Duration::from_secs(600);

/// The host name of the seed the recorded device is provisioned with.
pub const HOSTNAME: &str = "crash-seed";

/// One recorded first boot.
#[derive(Debug)]
pub struct Recording {
    pub image: Image,
    pub dir: PathBuf,
    /// The disk as flashed, with the seed on `boot-a`, before the boot (raw).
    pub base: PathBuf,
    /// Every write and flush of the boot, in dm-log-writes format.
    pub log: PathBuf,
    /// The admin key of the seed (SSH to a booted point).
    pub admin: PathBuf,
    /// `/data/config/current` after the uninterrupted boot.
    pub generation: String,
    pub took: Duration,
}

/// Records a fresh flash's first boot with a `/boot/config.toml` seed, until the device
/// is provisioned and then powered off cleanly.
pub fn record_first_boot(name: &str) -> Recording {
    let started = Instant::now();
    let mut device = Device::flashed(name);
    let admin = test_key(&device.dir, "admin-key");
    device.write_boot_config(&test_config(HOSTNAME, &admin));
    let flashed = device.raw_disk();
    let base = device.dir.join("base.raw");
    fs::rename(&flashed, &base).unwrap();
    let log = device.dir.join("writes.log");
    device.record_writes(&log);
    device.boot();
    device.wait_until_provisioned(BOOT);
    let generation = current_generation(&device, &admin);
    device.poweroff(&admin);
    Recording {
        image: device.image.clone(),
        dir: device.dir.clone(),
        base,
        log,
        admin,
        generation,
        took: started.elapsed(),
    }
}

fn current_generation(device: &Device, admin: &Path) -> String {
    device
        .ssh(admin, "readlink /data/config/current")
        .trim()
        .to_owned()
}

/// How much of the campaign to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Flush points that also get a torn variant (a random subset of the writes in flight).
    pub torn: usize,
    /// Points booted, spread over the whole log; the points where the partition table
    /// changes are booted besides.
    pub boots: usize,
    /// Seed of every random choice: the same seed, the same campaign.
    pub seed: u64,
}

/// One point that failed, with what was wrong.
#[derive(Debug, Clone)]
pub struct Failure {
    pub point: String,
    pub problems: Vec<String>,
}

/// What a campaign did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub writes: usize,
    pub flushes: usize,
    pub entries: usize,
    pub points: usize,
    pub judged: usize,
    /// Points whose data filesystem the judge VM read (flush and torn points).
    pub files_judged: usize,
    /// Boots of the judge VM, and the time they took.
    pub judge_vm_boots: usize,
    pub judge_vm_took: Duration,
    /// What the data filesystems held: points with the marker only, with both the marker
    /// and `config/current`, with `current` only.
    pub file_states: (usize, usize, usize),
    pub torn: usize,
    pub booted: usize,
    /// Points where the layout changed (each booted).
    pub transitions: usize,
    pub layouts: (usize, usize),
    pub failures: Vec<Failure>,
    pub took: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "log: {} entries, {} writes, {} flushes",
            self.entries, self.writes, self.flushes
        )?;
        writeln!(
            f,
            "points: {} replayed, {} judged cheaply ({} as flashed, {} partitioned), {} torn, \
             {} booted ({} where the layout changed)",
            self.points,
            self.judged,
            self.layouts.0,
            self.layouts.1,
            self.torn,
            self.booted,
            self.transitions
        )?;
        writeln!(
            f,
            "files: {} data filesystems read by the device's kernel in {} boots of the judge VM \
             ({:.0} s): {} with the fresh-flash marker only, {} with the marker and config/current, \
             {} with config/current only",
            self.files_judged,
            self.judge_vm_boots,
            self.judge_vm_took.as_secs_f64(),
            self.file_states.0,
            self.file_states.1,
            self.file_states.2
        )?;
        writeln!(f, "campaign time: {:.0} s", self.took.as_secs_f64())?;
        if self.failures.is_empty() {
            writeln!(f, "failures: none")
        } else {
            writeln!(f, "failures: {}", self.failures.len())?;
            for failure in &self.failures {
                writeln!(f, "  at {}:", failure.point)?;
                for p in &failure.problems {
                    writeln!(f, "    - {p}")?;
                }
            }
            Ok(())
        }
    }
}

/// `n` distinct indices below `len`, in order, drawn from `rng`.
pub fn sample(rng: &mut SplitMix64, len: usize, n: usize) -> BTreeSet<usize> {
    let mut chosen = BTreeSet::new();
    while chosen.len() < n.min(len) {
        chosen.insert((rng.next_u64() % len as u64) as usize);
    }
    chosen
}

/// `n` points spread evenly inside `points`, at the quantiles `1/(n+1) .. n/(n+1)`: the
/// first and last points (the disk as flashed, the disk provisioned) are judged anyway.
pub fn spread(points: &[usize], n: usize) -> BTreeSet<usize> {
    (1..=n)
        .filter_map(|i| points.get(i * points.len() / (n + 1)).copied())
        .collect()
}

/// Replays the recording at every flush point and judges each; boots a sample.
pub fn run(rec: &Recording, options: &Options) -> Report {
    let started = Instant::now();
    let log = Log::open(&rec.log).unwrap_or_else(|e| panic!("{e}"));
    // A fresh log of a cleanly stopped QEMU: every entry is counted by its super block.
    assert_eq!(
        log.unread_bytes(),
        0,
        "{}: bytes past the entries its super block counts",
        rec.log.display()
    );
    let summary = log.summary();
    let points = log.flush_points();
    let mut report = Report {
        writes: summary.writes,
        flushes: summary.flushes,
        entries: log.entries().len(),
        points: points.len(),
        ..Report::default()
    };
    eprintln!(
        "campaign: {} entries, {} writes, {} flushes, {} flush points",
        report.entries,
        report.writes,
        report.flushes,
        points.len()
    );
    let judges = Judges::new(rec.image.build_id(), &rec.dir.join("judge"));
    let mut files = FileJudging::new(JudgeVm::new(&rec.image, &rec.dir.join("judge-vm")));
    let work = rec.dir.join("replayed.raw");
    judge::detach_loops_of(&work);
    let mut replayer = Replayer::new(&log, &rec.base, &work, ReplayOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = SplitMix64::new(options.seed);
    let torn_at = sample(&mut rng, points.len(), options.torn);
    let boot_at = spread(&points, options.boots);

    // Slot states seen at flush points: a torn point must show one of them.
    let mut slot_states: BTreeSet<String> = BTreeSet::new();
    // The points where the layout changes (the partition table written) are booted too.
    let mut previous_layout = None;
    let mut torn_verdicts: Vec<(String, Verdict)> = Vec::new();
    for (i, &point) in points.iter().enumerate() {
        replayer.advance_to(point).unwrap_or_else(|e| panic!("{e}"));
        let verdict = judges.judge(&work);
        report.judged += 1;
        match verdict.layout {
            Some(Layout::Flashed) => report.layouts.0 += 1,
            Some(Layout::Partitioned) => report.layouts.1 += 1,
            None => {}
        }
        if let Some(s) = &verdict.slot_state {
            slot_states.insert(s.clone());
        }
        let name = format!("flush point {i} (log entry {point})");
        if let Some(data) = &verdict.data {
            files.add(&format!("p{i}"), &name, replayer.image_path(), data.clone());
        }
        if !verdict.passed() {
            eprintln!("campaign: {name} FAILED: {:?}", verdict.problems);
            report.failures.push(Failure {
                point: name.clone(),
                problems: verdict.problems.clone(),
            });
        }
        if torn_at.contains(&i) {
            let subset = log.torn_subset(point, rng.next_u64(), &TornOptions::new());
            let torn_name = format!(
                "{name} + {} of the {} writes in flight after it (seed {})",
                subset.pieces.len(),
                subset.candidates,
                subset.seed
            );
            let torn = replayer
                .with_torn(&subset, |image| {
                    let verdict = judges.judge(image);
                    if let Some(data) = &verdict.data {
                        files.add(&format!("t{i}"), &torn_name, image, data.clone());
                    }
                    verdict
                })
                .unwrap_or_else(|e| panic!("{e}"));
            report.torn += 1;
            torn_verdicts.push((torn_name, torn));
        }
        let transition = i > 0 && verdict.layout != previous_layout;
        previous_layout = verdict.layout;
        if transition {
            report.transitions += 1;
        }
        if boot_at.contains(&point) || transition {
            let snapshot = rec.dir.join("booted.raw");
            replayer
                .copy_image_to(&snapshot)
                .unwrap_or_else(|e| panic!("{e}"));
            let problems = boot_point(rec, &judges, &snapshot, report.booted);
            report.booted += 1;
            eprintln!(
                "campaign: booted {name}: {}",
                if problems.is_empty() { "ok" } else { "FAILED" }
            );
            if !problems.is_empty() {
                report.failures.push(Failure {
                    point: format!("{name}, booted"),
                    problems,
                });
            }
        }
        if i % 50 == 0 {
            eprintln!(
                "campaign: {}/{} points judged, {:.0} s",
                i + 1,
                points.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    for (name, mut verdict) in torn_verdicts {
        if let Some(s) = &verdict.slot_state {
            if !slot_states.contains(s) {
                verdict
                    .problems
                    .push(format!("slot state {s} is none that a flush point had"));
            }
        }
        if !verdict.passed() {
            report.failures.push(Failure {
                point: name,
                problems: verdict.problems,
            });
        }
    }
    drop(replayer);
    let _ = fs::remove_file(&work);
    // The files of every point against the last flush point's: the clean shutdown
    // after the uninterrupted boot.
    let last = format!("p{}", points.len() - 1);
    let listings = files.finish();
    report.files_judged = listings.len();
    report.judge_vm_boots = files.vm.boots();
    report.judge_vm_took = files.took;
    for (_, listing, _) in listings.values() {
        if let Ok(f) = listing {
            match (
                f.nodes.contains_key(files::MARKER),
                f.nodes.contains_key(files::CURRENT),
            ) {
                (true, false) => report.file_states.0 += 1,
                (true, true) => report.file_states.1 += 1,
                (false, true) => report.file_states.2 += 1,
                (false, false) => {}
            }
        }
    }
    // The reference is what the uninterrupted boot showed over SSH.
    let ends_on = files::Node::Link(rec.generation.clone());
    match listings.get(&last) {
        Some((_, Ok(reference), _)) if reference.nodes.get(files::CURRENT) == Some(&ends_on) => {
            for (name, listing, copy) in listings.values() {
                let problems = files::judge(listing, reference);
                if problems.is_empty() {
                    let _ = fs::remove_file(copy);
                } else {
                    eprintln!("campaign: {name} FAILED (files): {problems:?}");
                    report.failures.push(Failure {
                        point: format!("{name}, files (its data partition: {})", copy.display()),
                        problems,
                    });
                }
            }
        }
        other => report.failures.push(Failure {
            point: format!("flush point {} (the end of the log), files", points.len() - 1),
            problems: vec![format!(
                "the uninterrupted boot's data filesystem is no reference (config/current is not {}): {other:?}",
                rec.generation
            )],
        }),
    }
    report.took = started.elapsed();
    report
}

/// The data partitions of the points waiting for the judge VM, and what it listed.
struct FileJudging {
    vm: JudgeVm,
    pending: Vec<(String, String, PathBuf)>,
    /// By serial: the point's name, its listing and its partition's copy (kept until
    /// the point is judged, and after that only when it failed).
    listed: BTreeMap<String, (String, Listing, PathBuf)>,
    /// Time spent in the judge VM.
    took: Duration,
}

impl FileJudging {
    fn new(vm: JudgeVm) -> FileJudging {
        FileJudging {
            vm,
            pending: Vec::new(),
            listed: BTreeMap::new(),
            took: Duration::ZERO,
        }
    }

    /// Copies the data partition (`range` of `image`) of the point `name` for the next
    /// boot of the judge VM, which happens once a batch is full.
    fn add(&mut self, serial: &str, name: &str, image: &Path, range: std::ops::Range<u64>) {
        let copy = self.vm.dir().join(format!("{serial}.raw"));
        write_log::sparse_copy_part(image, range, &copy).unwrap_or_else(|e| panic!("{e}"));
        self.pending
            .push((serial.to_owned(), name.to_owned(), copy));
        if self.pending.len() == files::BATCH {
            self.judge_pending();
        }
    }

    fn judge_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let disks: Vec<(String, PathBuf)> = self
            .pending
            .iter()
            .map(|(serial, _, path)| (serial.clone(), path.clone()))
            .collect();
        let started = Instant::now();
        let mut listings = self.vm.list(&disks);
        self.took += started.elapsed();
        for (serial, name, path) in self.pending.drain(..) {
            let listing = listings.remove(&serial).expect("one listing per disk");
            self.listed.insert(serial, (name, listing, path));
        }
    }

    fn finish(&mut self) -> BTreeMap<String, (String, Listing, PathBuf)> {
        self.judge_pending();
        std::mem::take(&mut self.listed)
    }
}

/// Boots a copy of the replayed disk; it must end provisioned from the seed with the
/// uninterrupted boot's generation, and power off to a clean data filesystem.
fn boot_point(rec: &Recording, judges: &Judges, snapshot: &Path, n: usize) -> Vec<String> {
    let name = format!(
        "{}-boot-{n}",
        rec.dir.file_name().unwrap().to_string_lossy()
    );
    // A boot that never ends provisioned panics in the harness (with the console's
    // tail): a problem of this point, not the end of the campaign.
    let booted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut problems = Vec::new();
        let mut device = Device::from_raw_disk(rec.image.clone(), &name, snapshot);
        device.boot();
        device.wait_until_provisioned(BOOT);
        let generation = current_generation(&device, &rec.admin);
        if generation != rec.generation {
            problems.push(format!(
                "ended on generation {generation}, the uninterrupted boot on {}",
                rec.generation
            ));
        }
        device.poweroff(&rec.admin);
        let after = device.raw_disk();
        let verdict = judges.judge(&after);
        if verdict.layout != Some(Layout::Partitioned) {
            problems.push(format!("after booting: layout {:?}", verdict.layout));
        }
        problems.extend(
            verdict
                .problems
                .into_iter()
                .map(|p| format!("after booting: {p}")),
        );
        let _ = fs::remove_file(&after);
        if problems.is_empty() {
            let _ = fs::remove_file(device.dir.join("disk.qcow2"));
        }
        problems
    }));
    let problems = booted.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the harness panicked".to_owned());
        vec![format!(
            "booting it failed: {why} (console: target/qemu-tests/{name}/)"
        )]
    });
    if problems.is_empty() {
        let _ = fs::remove_file(snapshot);
    } else {
        // The disk of the failed point stays, beside its overlay, to be booted again.
        let kept = rec.dir.join(format!("point-{n}.raw"));
        let _ = fs::rename(snapshot, &kept);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_inner_quantiles() {
        let points: Vec<usize> = (0..100).map(|i| i * 3).collect();
        assert_eq!(spread(&points, 1), [150].into());
        assert_eq!(spread(&points, 3), [75, 150, 225].into());
        assert!(spread(&points, 0).is_empty());
        assert_eq!(spread(&points[..2], 5), [0, 3].into());
        assert_eq!(spread(&points, 20).len(), 20);
    }

    #[test]
    fn samples_are_distinct_bounded_and_reproducible() {
        let a = sample(&mut SplitMix64::new(7), 50, 10);
        assert_eq!(a.len(), 10);
        assert!(a.iter().all(|&i| i < 50));
        assert_eq!(a, sample(&mut SplitMix64::new(7), 50, 10));
        assert_ne!(a, sample(&mut SplitMix64::new(8), 50, 10));
        assert_eq!(sample(&mut SplitMix64::new(1), 3, 10).len(), 3);
    }
}
