//! Logs written by QEMU itself: `qemu-io` (Debian's qemu-utils, 7.2 on Debian 12) drives
//! a disk through the blklogwrites driver, and the log it writes must parse into the
//! requests issued and replay into the disk QEMU wrote.
//!
//! The expected entries are written out by hand for each request, with QEMU 7.2's
//! quirks spelled out where they show (see the crate documentation). qemu-io runs with
//! `-t writeback`: its default, writethrough, makes every write FUA.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use write_log::{
    Action, DiscardMode, EntryProblem, Error, Flags, Log, OpenOptions, ReplayOptions, Replayer,
    TornOptions,
};

const DISK: u64 = 8 << 20;

fn qemu_io_command() -> Command {
    match Command::new("qemu-io").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`qemu-io --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "qemu-io is needed to record real blklogwrites logs and cannot be run ({e}): \
             install it with `apt-get install qemu-utils`"
        ),
    }
    Command::new("qemu-io")
}

/// A request to issue through qemu-io, and what it does to the disk.
#[derive(Debug, Clone, Copy)]
enum Req {
    Write { offset: u64, len: u64, pattern: u8 },
    FuaWrite { offset: u64, len: u64, pattern: u8 },
    Zeroes { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
}

impl Req {
    fn command(&self) -> String {
        match *self {
            Req::Write {
                offset,
                len,
                pattern,
            } => format!("write -P {pattern:#x} {offset} {len}"),
            Req::FuaWrite {
                offset,
                len,
                pattern,
            } => format!("write -f -P {pattern:#x} {offset} {len}"),
            Req::Zeroes { offset, len } => format!("write -z {offset} {len}"),
            Req::Discard { offset, len } => format!("discard {offset} {len}"),
            Req::Flush => "flush".into(),
        }
    }

    /// Applies the request to an in-memory disk (discards read as zeros in a raw file).
    fn apply(&self, disk: &mut [u8]) {
        let (offset, len, byte) = match *self {
            Req::Write {
                offset,
                len,
                pattern,
            }
            | Req::FuaWrite {
                offset,
                len,
                pattern,
            } => (offset, len, pattern),
            Req::Zeroes { offset, len } | Req::Discard { offset, len } => (offset, len, 0),
            Req::Flush => return,
        };
        disk[offset as usize..(offset + len) as usize].fill(byte);
    }
}

/// An entry as expected: (flags, disk offset, length in bytes, what it does).
type Expected = (Flags, u64, u64, &'static str);

const W: Flags = Flags::empty();

/// A base image with data in its first MiB and at 2..3 MiB, holes elsewhere.
fn base_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; DISK as usize];
    for (i, b) in bytes[..1 << 20].iter_mut().enumerate() {
        *b = (i % 253) as u8 + 1;
    }
    bytes[2 << 20..3 << 20].fill(0x77);
    let path = dir.join("base.img");
    let f = File::create(&path).unwrap();
    f.set_len(DISK).unwrap();
    f.write_all_at(&bytes[..1 << 20], 0).unwrap();
    f.write_all_at(&bytes[2 << 20..3 << 20], 2 << 20).unwrap();
    (path, bytes)
}

struct Recording {
    dir: tempfile::TempDir,
    base: Vec<u8>,
}

impl Recording {
    fn new() -> Recording {
        let dir = tempfile::tempdir().unwrap();
        let (base_path, base) = base_image(dir.path());
        write_log::sparse_copy(&base_path, dir.path().join("disk.raw")).unwrap();
        // QEMU neither creates nor truncates the log.
        File::create(dir.path().join("boot.log")).unwrap();
        Recording { dir, base }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The base image with every entry of `log` applied (a fresh working copy).
    fn replayed(&self, log: &Log, options: ReplayOptions) -> Vec<u8> {
        let mut r =
            Replayer::new(log, self.path("base.img"), self.path("work.img"), options).unwrap();
        r.advance_to_end().unwrap();
        std::fs::read(r.image_path()).unwrap()
    }

    fn qemu_io(&self, driver_opts: &str, commands: &[String]) -> Command {
        let mut cmd = qemu_io_command();
        cmd.args(["-t", "writeback", "--image-opts"]).arg(format!(
            "driver=blklogwrites,file.driver=file,file.filename={},\
             log.driver=file,log.filename={}{driver_opts}",
            self.path("disk.raw").display(),
            self.path("boot.log").display(),
        ));
        for c in commands {
            cmd.args(["-c", c]);
        }
        cmd
    }

    fn record(&self, driver_opts: &str, reqs: &[Req]) -> Output {
        let commands: Vec<String> = reqs.iter().map(Req::command).collect();
        let out = self.qemu_io(driver_opts, &commands).output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "qemu-io {commands:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts qemu-io on `reqs` followed by a long sleep, waits until the log holds
    /// `log_len` bytes, and kills it: a QEMU that dies with the log as it is.
    fn record_and_kill(&self, driver_opts: &str, reqs: &[Req], log_len: u64) {
        let mut commands: Vec<String> = reqs.iter().map(Req::command).collect();
        commands.push("sleep 600000".into());
        let mut child: Child = self
            .qemu_io(driver_opts, &commands)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(self.path("boot.log")).unwrap().len() < log_len {
            assert!(
                Instant::now() < deadline,
                "qemu-io did not log {log_len} bytes"
            );
            assert!(child.try_wait().unwrap().is_none(), "qemu-io exited early");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The entries are written; give the super block update that may follow a moment.
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn disk(&self) -> Vec<u8> {
        std::fs::read(self.path("disk.raw")).unwrap()
    }

    /// The base with `reqs` applied.
    fn model(&self, reqs: &[Req]) -> Vec<u8> {
        let mut disk = self.base.clone();
        for r in reqs {
            r.apply(&mut disk);
        }
        disk
    }
}

fn entries_of(log: &Log) -> Vec<Expected> {
    log.entries()
        .iter()
        .map(|e| {
            let what = match e.action {
                Action::Write { .. } => "write",
                Action::Discard => "discard",
                Action::Nothing => "nothing",
            };
            (e.flags, e.disk_offset, e.len, what)
        })
        .collect()
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {at}: {:#04x}, expected {:#04x}",
            got[at], want[at]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

#[test]
fn qemu_log_parses_into_the_requests_issued_and_replays_into_qemus_disk() {
    let rec = Recording::new();
    let k = 1024;
    // Each request with the entries QEMU 7.2 logs for it.
    let script: Vec<(Req, Vec<Expected>)> = vec![
        (
            Req::Write {
                offset: 0,
                len: 64 * k,
                pattern: 0xa1,
            },
            vec![(W, 0, 64 * k, "write")],
        ),
        (
            Req::Write {
                offset: 128 * k,
                len: 4 * k,
                pattern: 0xa2,
            },
            vec![(W, 128 * k, 4 * k, "write")],
        ),
        (Req::Flush, vec![(Flags::FLUSH, 0, 0, "nothing")]),
        // Nothing written since: the block layer skips the flush, nothing is logged.
        (Req::Flush, vec![]),
        // FUA is emulated by a flush after the write, skipped here as well, because
        // nothing had been written since the last flush when it ran.
        (
            Req::FuaWrite {
                offset: 1 << 20,
                len: 4 * k,
                pattern: 0xb1,
            },
            vec![(W, 1 << 20, 4 * k, "write")],
        ),
        (
            Req::Write {
                offset: (1 << 20) + k,
                len: k,
                pattern: 0xb2,
            },
            vec![(W, (1 << 20) + k, k, "write")],
        ),
        (
            Req::Discard {
                offset: 2 << 20,
                len: 64 * k,
            },
            vec![(Flags::DISCARD, 2 << 20, 64 * k, "discard")],
        ),
        // "Write zeroes" is a write of zeros in the log, not a discard.
        (
            Req::Zeroes {
                offset: (2 << 20) + 128 * k,
                len: 8 * k,
            },
            vec![(W, (2 << 20) + 128 * k, 8 * k, "write")],
        ),
        // Dirty now: the FUA write's flush is logged, as a FLUSH entry after it.
        (
            Req::FuaWrite {
                offset: 4 << 20,
                len: 4 * k,
                pattern: 0xc1,
            },
            vec![
                (W, 4 << 20, 4 * k, "write"),
                (Flags::FLUSH, 0, 0, "nothing"),
            ],
        ),
        (
            Req::Write {
                offset: 5 << 20,
                len: 512,
                pattern: 0xc2,
            },
            vec![(W, 5 << 20, 512, "write")],
        ),
        (
            Req::Write {
                offset: 6 << 20,
                len: 3584,
                pattern: 0xc3,
            },
            vec![(W, 6 << 20, 3584, "write")],
        ),
    ];
    let reqs: Vec<Req> = script.iter().map(|(r, _)| *r).collect();
    rec.record("", &reqs);

    let log = Log::open(rec.path("boot.log")).unwrap();
    assert_eq!(log.sector_size(), 512);
    let mut want: Vec<Expected> = script.iter().flat_map(|(_, e)| e.clone()).collect();
    // Closing the image flushes.
    want.push((Flags::FLUSH, 0, 0, "nothing"));
    assert_eq!(entries_of(&log), want);
    assert_eq!(log.super_nr_entries(), Some(want.len() as u64));
    assert_eq!(log.unread_bytes(), 0);
    // The data of the first write is in the log right after its header.
    let first = &log.entries()[0];
    assert_eq!(
        first.action,
        Action::Write {
            data_offset: first.log_offset + 512
        }
    );

    let s = log.summary();
    assert_eq!(
        (s.writes, s.flushes, s.fua_writes, s.discards),
        (8, 3, 0, 1),
        "{s:?}"
    );
    assert_eq!(s.bytes_written, (64 + 4 + 4 + 1 + 8 + 4) * k + 512 + 3584);
    assert_eq!(s.bytes_discarded, 64 * k);

    // Flush points: after the first flush (entry 2), the FUA write's flush (entry 8) and
    // the close (entry 11); each is the state of the requests issued before it.
    assert_eq!(log.flush_points(), [3, 9, 12]);
    let reqs_before = [(3, 3), (9, 9), (12, reqs.len())];
    let mut r = Replayer::new(
        &log,
        rec.path("base.img"),
        rec.path("work.img"),
        ReplayOptions::default(),
    )
    .unwrap();
    for (point, n) in reqs_before {
        r.advance_to(point).unwrap();
        assert_same(
            &std::fs::read(r.image_path()).unwrap(),
            &rec.model(&reqs[..n]),
            &format!("point {point}"),
        );
    }
    assert_same(
        &std::fs::read(r.image_path()).unwrap(),
        &rec.disk(),
        "the whole log",
    );
}

#[test]
fn torn_states_of_a_qemu_log_are_the_point_plus_the_kept_writes() {
    let rec = Recording::new();
    let mut reqs = Vec::new();
    for i in 0..6u64 {
        reqs.push(Req::Write {
            offset: i * (300 << 10),
            len: 64 << 10,
            pattern: 0x10 + i as u8,
        });
        reqs.push(Req::Discard {
            offset: (2 << 20) + i * (64 << 10),
            len: 32 << 10,
        });
        reqs.push(Req::Write {
            offset: (i + 1) * (200 << 10),
            len: 8 << 10,
            pattern: 0x20 + i as u8,
        });
        reqs.push(Req::Flush);
    }
    rec.record("", &reqs);
    let log = Log::open(rec.path("boot.log")).unwrap();
    // Four entries per round: write, discard, write, flush; no flush at close.
    assert_eq!(log.entries().len(), 24);
    assert_eq!(log.flush_points(), [4, 8, 12, 16, 20, 24]);

    let mut r = Replayer::new(
        &log,
        rec.path("base.img"),
        rec.path("work.img"),
        ReplayOptions::default(),
    )
    .unwrap();
    for k in [0usize, 4, 8, 12, 16, 20] {
        r.advance_to(k).unwrap();
        let exact = std::fs::read(r.image_path()).unwrap();
        for seed in 0..4 {
            let subset = log.torn_subset(k, seed, &TornOptions::default());
            assert_eq!(subset.window, k..k + 4);
            assert_eq!(subset.candidates, 3);
            // Entry index in the log == request index here.
            let mut want = rec.model(&reqs[..k]);
            for p in &subset.pieces {
                reqs[p.entry].apply(&mut want);
            }
            let got = r
                .with_torn(&subset, |image| std::fs::read(image).unwrap())
                .unwrap();
            assert_same(&got, &want, &format!("point {k} seed {seed}"));
        }
        assert_same(
            &std::fs::read(r.image_path()).unwrap(),
            &exact,
            "after torn states",
        );
    }
    r.advance_to_end().unwrap();
    assert_same(
        &std::fs::read(r.image_path()).unwrap(),
        &rec.disk(),
        "the whole log",
    );
}

#[test]
fn log_sector_size_4096_is_the_unit_of_sectors_and_of_read_modify_write() {
    let rec = Recording::new();
    let reqs = [
        // Smaller than a log sector: QEMU reads the rest of the sector and logs all of it.
        Req::Write {
            offset: 512,
            len: 512,
            pattern: 0xd1,
        },
        Req::Zeroes {
            offset: 2 << 20,
            len: 8192,
        },
        Req::Discard {
            offset: 3 << 20,
            len: 4096,
        },
        Req::Flush,
    ];
    rec.record(",log-sector-size=4096", &reqs);
    let log = Log::open(rec.path("boot.log")).unwrap();
    assert_eq!(log.sector_size(), 4096);
    assert_eq!(
        entries_of(&log),
        [
            (W, 0, 4096, "write"),
            (W, 2 << 20, 8192, "write"),
            (Flags::DISCARD, 3 << 20, 4096, "discard"),
            (Flags::FLUSH, 0, 0, "nothing"),
        ]
    );
    assert_eq!(log.entries()[1].log_offset, 3 * 4096);
    let disk = rec.disk();
    assert_same(
        &rec.replayed(&log, ReplayOptions::default()),
        &disk,
        "the whole log",
    );
    assert_same(&disk, &rec.model(&reqs), "QEMU's disk");
}

#[test]
fn a_killed_qemu_leaves_entries_the_super_block_does_not_count() {
    let rec = Recording::new();
    let reqs: Vec<Req> = (0..7u64)
        .map(|i| Req::Write {
            offset: i << 20,
            len: 4096,
            pattern: 0x30 + i as u8,
        })
        .collect();
    // The super block is rewritten every 3 entries: after entry 6, not after 7.
    rec.record_and_kill(
        ",log-super-update-interval=3",
        &reqs,
        512 + 7 * (512 + 4096),
    );

    let log = Log::open(rec.path("boot.log")).unwrap();
    assert_eq!(log.super_nr_entries(), Some(6));
    assert_eq!(log.entries().len(), 6);
    assert_eq!(log.unread_bytes(), 512 + 4096);

    let log = Log::open_with(
        rec.path("boot.log"),
        &OpenOptions::new().scan_past_nr_entries(true),
    )
    .unwrap();
    assert_eq!(log.entries().len(), 7);
    assert_eq!(log.recovered_entries(), 1);
    assert_eq!(log.scan_stop().unwrap().problem, None);
    assert_eq!(log.flush_points(), Vec::<usize>::new());
    assert_same(
        &rec.replayed(&log, ReplayOptions::default()),
        &rec.disk(),
        "all 7 writes",
    );
}

#[test]
fn a_qemu_killed_before_its_first_flush_leaves_no_super_block() {
    let rec = Recording::new();
    let reqs = [
        Req::Write {
            offset: 0,
            len: 8192,
            pattern: 0x41,
        },
        Req::Discard {
            offset: 2 << 20,
            len: 4096,
        },
    ];
    rec.record_and_kill("", &reqs, 512 + (512 + 8192) + 512);

    let err = Log::open(rec.path("boot.log")).unwrap_err();
    assert!(
        matches!(err, Error::Super { .. }) && err.to_string().contains("all zero"),
        "{err}"
    );
    let log = Log::open_with(
        rec.path("boot.log"),
        &OpenOptions::new()
            .scan_past_nr_entries(true)
            .assume_sector_size(512),
    )
    .unwrap();
    assert_eq!(log.super_nr_entries(), None);
    assert_eq!(
        entries_of(&log),
        [
            (W, 0, 8192, "write"),
            (Flags::DISCARD, 2 << 20, 4096, "discard")
        ]
    );
    for (mode, want) in [
        (DiscardMode::Zero, rec.disk()),
        (DiscardMode::Keep, rec.model(&reqs[..1])),
    ] {
        assert_same(
            &rec.replayed(&log, ReplayOptions { discard: mode }),
            &want,
            &format!("{mode:?}"),
        );
    }
    assert!(matches!(
        log.scan_stop().unwrap().problem,
        None | Some(EntryProblem::ZeroHeader)
    ));
}
