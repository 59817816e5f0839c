//! Rebuilding the disk: a working copy of the base image that entries are applied to,
//! forward only, and torn states applied on top and undone.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::log::{Action, Entry, Log};
use crate::sparse;
use crate::torn::TornSubset;

/// What a replayed discard leaves in its range.
///
/// A device may return the old data after a discard, or zeros, or either, block by block;
/// a filesystem must not rely on either. `Zero` is what QEMU's raw files do (it punches a
/// hole), so replaying a whole log with it gives the disk QEMU wrote; `Keep` is a device
/// that ignores discards (xfstests' `replay-log --no-discard`). Judge both where it
/// matters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiscardMode {
    /// Punch a hole: the range reads as zeros.
    #[default]
    Zero,
    /// Leave the old data.
    Keep,
}

#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub discard: DiscardMode,
}

/// A working copy of the base image and the point of the log it is at.
///
/// The copy is at point `k` ([`Replayer::position`]) when exactly the entries of index
/// `< k` have been applied to the base, in log order. [`Replayer::advance_to`] moves it
/// forward without starting over, so visiting every flush point costs one pass over the
/// log. The file at [`Replayer::image_path`] is the replayer's: read it, or boot it with
/// QEMU's `snapshot=on` or through an overlay, but a judge that writes (a mount, a
/// repairing fsck) needs a copy of its own ([`Replayer::copy_image_to`]). Nothing is
/// fsynced: the working copy is scratch, readers see it through the page cache.
#[derive(Debug)]
pub struct Replayer<'log> {
    log: &'log Log,
    writer: Writer,
    image: File,
    image_path: PathBuf,
    /// The image's size and its filesystem's block size: undo records cover whole blocks,
    /// so that putting them back restores the holes too.
    image_len: u64,
    block_size: u64,
    position: usize,
    poisoned: bool,
}

/// Copies entries from the log to an image.
#[derive(Debug)]
struct Writer {
    log_file: File,
    log_path: PathBuf,
    discard: DiscardMode,
    buf: Vec<u8>,
}

/// What [`Replayer::with_torn`] overwrote: the range and the data it held (holes are
/// not stored).
#[derive(Debug)]
struct Undo {
    range: Range<u64>,
    data: Vec<(u64, Vec<u8>)>,
}

const CHUNK: usize = 1 << 20;

impl<'log> Replayer<'log> {
    /// Copies `base` (the disk before the recording) to `work`, sparsely, and opens it at
    /// point 0. `work` is created or overwritten.
    pub fn new(
        log: &'log Log,
        base: impl AsRef<Path>,
        work: impl AsRef<Path>,
        options: ReplayOptions,
    ) -> Result<Replayer<'log>, Error> {
        let (base, work) = (base.as_ref(), work.as_ref());
        let base_len = std::fs::metadata(base)
            .map_err(|e| Error::io(base, "read the base image's size", e))?
            .len();
        if let Some(entry) = log
            .entries()
            .iter()
            .find(|e| e.changes_disk() && e.disk_range().end > base_len)
        {
            return Err(Error::BaseTooSmall {
                path: base.into(),
                size: base_len,
                index: entry.index,
                end: entry.disk_range().end,
            });
        }
        sparse::copy(base, work)?;
        let image = OpenOptions::new()
            .read(true)
            .write(true)
            .open(work)
            .map_err(|e| Error::io(work, "open the working copy", e))?;
        let meta = image
            .metadata()
            .map_err(|e| Error::io(work, "read the working copy's metadata", e))?;
        let log_file =
            File::open(log.path()).map_err(|e| Error::io(log.path(), "open the log", e))?;
        Ok(Replayer {
            log,
            writer: Writer {
                log_file,
                log_path: log.path().into(),
                discard: options.discard,
                buf: vec![0; CHUNK],
            },
            image,
            image_path: work.into(),
            image_len: meta.len(),
            block_size: meta.blksize().max(1),
            position: 0,
            poisoned: false,
        })
    }

    /// The point the working copy is at.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn image_path(&self) -> &Path {
        &self.image_path
    }

    pub fn log(&self) -> &'log Log {
        self.log
    }

    /// Applies the entries from [`Replayer::position`] up to (not including) `k`.
    pub fn advance_to(&mut self, k: usize) -> Result<(), Error> {
        self.check_usable()?;
        let entries = self.log.entries();
        if k > entries.len() {
            return Err(Error::PastEnd {
                requested: k,
                entries: entries.len(),
            });
        }
        if k < self.position {
            return Err(Error::Backwards {
                position: self.position,
                requested: k,
            });
        }
        for entry in &entries[self.position..k] {
            if let Err(e) =
                self.writer
                    .apply(entry, entry.disk_range(), &self.image, &self.image_path)
            {
                // Part of the entry may be on the copy: it is at no point any more.
                self.poisoned = true;
                return Err(e);
            }
            self.position = entry.index + 1;
        }
        Ok(())
    }

    /// Applies the rest of the log.
    pub fn advance_to_end(&mut self) -> Result<(), Error> {
        self.advance_to(self.log.entries().len())
    }

    /// Applies the torn state `subset` (of this replayer's log, for its position) to the working
    /// copy, calls `judge` with the image's path, and undoes it: the overwritten bytes
    /// are saved before each piece and put back, holes as holes, so the working copy is
    /// exactly at its point again afterwards. `judge` must not write to the image. The
    /// saved bytes are held in memory: the data (not the holes) under each kept piece,
    /// rounded out to filesystem blocks.
    ///
    /// If undoing fails (also after `judge` panicked) the replayer refuses all further
    /// work with [`Error::Poisoned`], as it does after an error halfway through an entry
    /// in [`Replayer::advance_to`].
    pub fn with_torn<R>(
        &mut self,
        subset: &TornSubset,
        judge: impl FnOnce(&Path) -> R,
    ) -> Result<R, Error> {
        self.check_usable()?;
        if subset.point != self.position {
            return Err(Error::SubsetPosition {
                subset_point: subset.point,
                position: self.position,
            });
        }
        let mut guard = UndoGuard {
            replayer: self,
            undo: Vec::new(),
        };
        for piece in &subset.pieces {
            let r = &mut *guard.replayer;
            let entry = &r.log.entries()[piece.entry];
            let range = piece.disk_range();
            let bs = r.block_size;
            let whole_blocks =
                range.start / bs * bs..range.end.div_ceil(bs).saturating_mul(bs).min(r.image_len);
            let undo = save(&r.image, whole_blocks.clone())
                .map_err(|e| Error::io(&r.image_path, format!("save bytes {whole_blocks:?}"), e))?;
            guard.undo.push(undo);
            r.writer.apply(entry, range, &r.image, &r.image_path)?;
        }
        let verdict = judge(&guard.replayer.image_path);
        guard.finish()?;
        Ok(verdict)
    }

    /// Writes the torn state `subset` to a new file `dest` (a sparse copy of the working
    /// copy with the pieces applied), for a judge that writes to the image. The working
    /// copy is not touched.
    pub fn write_torn_copy(
        &mut self,
        subset: &TornSubset,
        dest: impl AsRef<Path>,
    ) -> Result<(), Error> {
        self.check_usable()?;
        if subset.point != self.position {
            return Err(Error::SubsetPosition {
                subset_point: subset.point,
                position: self.position,
            });
        }
        let dest = dest.as_ref();
        sparse::copy(&self.image_path, dest)?;
        let copy = OpenOptions::new()
            .write(true)
            .open(dest)
            .map_err(|e| Error::io(dest, "open the copy", e))?;
        for piece in &subset.pieces {
            let entry = &self.log.entries()[piece.entry];
            self.writer.apply(entry, piece.disk_range(), &copy, dest)?;
        }
        Ok(())
    }

    /// Copies the image at its current point to `dest`, sparsely.
    pub fn copy_image_to(&self, dest: impl AsRef<Path>) -> Result<(), Error> {
        self.check_usable()?;
        sparse::copy(&self.image_path, dest.as_ref())
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned {
                path: self.image_path.clone(),
            });
        }
        Ok(())
    }
}

/// Puts back what a torn state overwrote, also when the judge panics.
struct UndoGuard<'r, 'log> {
    replayer: &'r mut Replayer<'log>,
    undo: Vec<Undo>,
}

impl UndoGuard<'_, '_> {
    fn finish(mut self) -> Result<(), Error> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), Error> {
        while let Some(undo) = self.undo.pop() {
            if let Err(e) = restore(&self.replayer.image, &undo) {
                self.replayer.poisoned = true;
                self.undo.clear();
                return Err(Error::io(
                    &self.replayer.image_path,
                    format!("put back bytes {:?} after a torn state", undo.range),
                    e,
                ));
            }
        }
        Ok(())
    }
}

impl Drop for UndoGuard<'_, '_> {
    fn drop(&mut self) {
        // Only left to do after an early return or a panic; `finish` reports its errors.
        let _ = self.restore();
    }
}

fn save(image: &File, range: Range<u64>) -> io::Result<Undo> {
    let mut data = Vec::new();
    for segment in sparse::data_segments(image, range.clone())? {
        let mut bytes = vec![0; (segment.end - segment.start) as usize];
        image.read_exact_at(&mut bytes, segment.start)?;
        data.push((segment.start, bytes));
    }
    Ok(Undo { range, data })
}

fn restore(image: &File, undo: &Undo) -> io::Result<()> {
    sparse::zero_range(image, undo.range.clone())?;
    for (offset, bytes) in &undo.data {
        image.write_all_at(bytes, *offset)?;
    }
    Ok(())
}

impl Writer {
    /// Applies the part `range` of `entry` to `image`.
    fn apply(
        &mut self,
        entry: &Entry,
        range: Range<u64>,
        image: &File,
        image_path: &Path,
    ) -> Result<(), Error> {
        debug_assert!(
            entry.disk_range().start <= range.start && range.end <= entry.disk_range().end
        );
        match entry.action {
            Action::Nothing => Ok(()),
            Action::Discard => match self.discard {
                DiscardMode::Keep => Ok(()),
                DiscardMode::Zero => sparse::zero_range(image, range.clone()).map_err(|e| {
                    Error::io(
                        image_path,
                        format!("discard bytes {range:?} (entry {})", entry.index),
                        e,
                    )
                }),
            },
            Action::Write { data_offset } => {
                let mut disk = range.start;
                let mut from = data_offset + (range.start - entry.disk_offset);
                while disk < range.end {
                    let n = ((range.end - disk) as usize).min(self.buf.len());
                    let buf = &mut self.buf[..n];
                    self.log_file.read_exact_at(buf, from).map_err(|e| {
                        Error::io(
                            &self.log_path,
                            format!("read the data of entry {} at byte {from}", entry.index),
                            e,
                        )
                    })?;
                    image.write_all_at(buf, disk).map_err(|e| {
                        Error::io(
                            image_path,
                            format!("write entry {} at byte {disk}", entry.index),
                            e,
                        )
                    })?;
                    disk += n as u64;
                    from += n as u64;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::torn::{SplitMix64, TornOptions};
    use crate::{Flags, LogBuilder, OpenOptions};

    const DISK: usize = 4 << 20;
    const SS: usize = 512;

    /// What a test log does, kept to compute the expected disk without the replayer.
    #[derive(Debug, Clone)]
    enum Op {
        Write { offset: usize, data: Vec<u8> },
        Discard { offset: usize, len: usize },
        Barrier,
    }

    struct Fixture {
        dir: tempfile::TempDir,
        ops: Vec<Op>,
        base: Vec<u8>,
        log: Log,
    }

    impl Fixture {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// The disk at point `k`, computed from the ops.
        fn model(&self, k: usize, discard: DiscardMode) -> Vec<u8> {
            let mut disk = self.base.clone();
            for op in &self.ops[..k] {
                apply_op(&mut disk, op, discard);
            }
            disk
        }
    }

    fn apply_op(disk: &mut [u8], op: &Op, discard: DiscardMode) {
        match op {
            Op::Write { offset, data } => disk[*offset..offset + data.len()].copy_from_slice(data),
            Op::Discard { offset, len } if discard == DiscardMode::Zero => {
                disk[*offset..offset + len].fill(0)
            }
            Op::Discard { .. } | Op::Barrier => {}
        }
    }

    /// A base image with data in its first and last MiB and a hole between, and a log of
    /// `n` random writes, discards, flushes and FUA writes, all seeded.
    fn fixture(seed: u64, n: usize) -> Fixture {
        let mut rng = SplitMix64::new(seed);
        let mut base = vec![0u8; DISK];
        for (i, b) in base[..1 << 20].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        for b in &mut base[DISK - (1 << 20)..] {
            *b = 0xee;
        }
        let dir = tempfile::tempdir().unwrap();
        let base_path = dir.path().join("base.img");
        let f = File::create(&base_path).unwrap();
        f.set_len(DISK as u64).unwrap();
        f.write_all_at(&base[..1 << 20], 0).unwrap();
        f.write_all_at(&base[DISK - (1 << 20)..], (DISK - (1 << 20)) as u64)
            .unwrap();

        let mut b = LogBuilder::new(SS as u32);
        let mut ops = Vec::new();
        for i in 0..n {
            let r = rng.next_u64();
            let sectors = (r >> 8) as usize % 64 + 1;
            let offset = ((r >> 20) as usize % (DISK / SS - sectors)) * SS;
            let op = match r % 10 {
                0 | 1 => {
                    b.flush();
                    Op::Barrier
                }
                2 => {
                    b.discard((offset / SS) as u64, sectors as u64);
                    Op::Discard {
                        offset,
                        len: sectors * SS,
                    }
                }
                k => {
                    let data: Vec<u8> = (0..sectors * SS)
                        .map(|j| (i as u8).wrapping_mul(31) ^ (j / SS) as u8)
                        .collect();
                    if k == 3 {
                        b.fua_write((offset / SS) as u64, &data);
                    } else {
                        b.write((offset / SS) as u64, &data);
                    }
                    Op::Write { offset, data }
                }
            };
            ops.push(op);
        }
        b.write_to(dir.path().join("boot.log")).unwrap();
        let log = Log::open(dir.path().join("boot.log")).unwrap();
        Fixture {
            dir,
            ops,
            base,
            log,
        }
    }

    fn replayer<'l>(fx: &'l Fixture, discard: DiscardMode) -> Replayer<'l> {
        Replayer::new(
            &fx.log,
            fx.path("base.img"),
            fx.path("work.img"),
            ReplayOptions { discard },
        )
        .unwrap()
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn forward_replay_through_every_flush_point_equals_writing_everything() {
        for seed in 0..4 {
            let fx = fixture(seed, 120);
            let points = fx.log.flush_points();
            assert!(points.len() > 10, "seed {seed}: {points:?}");
            let mut r = replayer(&fx, DiscardMode::Zero);
            assert_eq!(read(r.image_path()), fx.base, "point 0 is the base");
            for &k in &points {
                r.advance_to(k).unwrap();
                assert_eq!(r.position(), k);
                assert!(
                    read(r.image_path()) == fx.model(k, DiscardMode::Zero),
                    "seed {seed}: the image at point {k} differs from the model"
                );
            }
            r.advance_to_end().unwrap();
            let all = fx.model(fx.ops.len(), DiscardMode::Zero);
            assert!(read(r.image_path()) == all, "seed {seed}: at the end");

            // One step to the end gives the same disk.
            let mut once = Replayer::new(
                &fx.log,
                fx.path("base.img"),
                fx.path("once.img"),
                ReplayOptions::default(),
            )
            .unwrap();
            once.advance_to(fx.ops.len()).unwrap();
            assert!(read(&fx.path("once.img")) == all);
        }
    }

    #[test]
    fn the_working_copy_stays_sparse() {
        let fx = fixture(1, 40);
        let mut r = replayer(&fx, DiscardMode::Zero);
        r.advance_to_end().unwrap();
        let used = std::fs::metadata(r.image_path()).unwrap().blocks() * 512;
        // 2 MiB of base data plus at most 40 writes of 32 KiB.
        assert!(
            used < (2 << 20) + 40 * (32 << 10) + (1 << 20),
            "{used} bytes used"
        );
    }

    #[test]
    fn discards_zero_or_keep_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.img");
        std::fs::write(&base, vec![0x5a; 64 << 10]).unwrap();
        let mut b = LogBuilder::new(512);
        b.write(0, &[1; 1024]).discard(0, 16).flush().discard(64, 8);
        b.write_to(dir.path().join("log")).unwrap();
        let log = Log::open(dir.path().join("log")).unwrap();

        let work = dir.path().join("work.img");
        let mut r = Replayer::new(&log, &base, &work, ReplayOptions::default()).unwrap();
        r.advance_to_end().unwrap();
        let img = read(&work);
        assert!(img[..8192].iter().all(|&b| b == 0));
        assert!(img[8192..32768].iter().all(|&b| b == 0x5a));
        assert!(img[32768..36864].iter().all(|&b| b == 0));
        assert!(img[36864..].iter().all(|&b| b == 0x5a));
        let img_file = File::open(&work).unwrap();
        assert!(
            sparse::data_segments(&img_file, 0..8192)
                .unwrap()
                .is_empty(),
            "a zeroed discard is a hole"
        );

        let keep = ReplayOptions {
            discard: DiscardMode::Keep,
        };
        let mut r = Replayer::new(&log, &base, &work, keep).unwrap();
        r.advance_to_end().unwrap();
        let img = read(&work);
        assert!(img[..1024].iter().all(|&b| b == 1), "the write stays");
        assert!(
            img[1024..].iter().all(|&b| b == 0x5a),
            "the discards change nothing"
        );
    }

    #[test]
    fn replay_moves_forward_only_and_within_the_log() {
        let fx = fixture(2, 20);
        let mut r = replayer(&fx, DiscardMode::Zero);
        r.advance_to(10).unwrap();
        assert!(matches!(
            r.advance_to(9),
            Err(Error::Backwards {
                position: 10,
                requested: 9
            })
        ));
        assert!(matches!(
            r.advance_to(21),
            Err(Error::PastEnd {
                requested: 21,
                entries: 20
            })
        ));
        r.advance_to(10).unwrap();
        assert_eq!(r.position(), 10);
    }

    #[test]
    fn a_base_image_smaller_than_the_log_is_refused() {
        let fx = fixture(3, 30);
        let small = fx.path("small.img");
        File::create(&small).unwrap().set_len(1 << 20).unwrap();
        let err =
            Replayer::new(&fx.log, &small, fx.path("w"), ReplayOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::BaseTooSmall { size: 1048576, .. }),
            "{err}"
        );
    }

    /// The expected torn image: the model at the subset's point plus its pieces.
    fn torn_model(fx: &Fixture, subset: &TornSubset, discard: DiscardMode) -> Vec<u8> {
        let mut disk = fx.model(subset.point, discard);
        for p in &subset.pieces {
            let (start, end) = (p.disk_offset as usize, (p.disk_offset + p.len) as usize);
            match &fx.ops[p.entry] {
                Op::Write { offset, data } => {
                    disk[start..end].copy_from_slice(&data[start - offset..end - offset])
                }
                op => apply_op(&mut disk, op, discard),
            }
        }
        disk
    }

    #[test]
    fn torn_states_are_reproducible_and_leave_the_working_copy_exact() {
        let fx = fixture(4, 150);
        let options = TornOptions::default();
        let mut r = replayer(&fx, DiscardMode::Zero);
        let mut checked = 0;
        for k in fx.log.flush_points() {
            r.advance_to(k).unwrap();
            let exact = read(r.image_path());
            let layout =
                sparse::data_segments(&File::open(r.image_path()).unwrap(), 0..DISK as u64)
                    .unwrap();
            for seed in 0..3 {
                let subset = fx.log.torn_subset(k, seed, &options);
                assert_eq!(
                    subset,
                    fx.log.torn_subset(k, seed, &options),
                    "reproducible"
                );
                assert_eq!(subset.window, fx.log.window(k));
                let want = torn_model(&fx, &subset, DiscardMode::Zero);
                let seen = r.with_torn(&subset, read).unwrap();
                assert!(seen == want, "point {k} seed {seed}: torn image differs");
                checked += usize::from(!subset.pieces.is_empty());

                // The separate copy is the same state.
                r.write_torn_copy(&subset, fx.path("torn.img")).unwrap();
                assert!(read(&fx.path("torn.img")) == want);
            }
            assert!(
                read(r.image_path()) == exact,
                "point {k}: working copy changed"
            );
            let after = sparse::data_segments(&File::open(r.image_path()).unwrap(), 0..DISK as u64)
                .unwrap();
            assert_eq!(after, layout, "point {k}: holes were not put back");
        }
        assert!(checked > 10, "only {checked} non-empty torn states");
    }

    #[test]
    fn torn_subsets_depend_on_the_seed_and_the_point() {
        let fx = fixture(5, 300);
        let options = TornOptions::default();
        // The biggest window, so that subsets have room to differ.
        let k = fx
            .log
            .flush_points()
            .into_iter()
            .max_by_key(|&k| fx.log.window(k).len())
            .unwrap();
        let subsets: Vec<_> = (0..8)
            .map(|seed| fx.log.torn_subset(k, seed, &options).pieces)
            .collect();
        let distinct: std::collections::HashSet<_> =
            subsets.iter().map(|p| format!("{p:?}")).collect();
        assert!(
            distinct.len() >= 4,
            "{} distinct subsets of 8",
            distinct.len()
        );

        let none = fx
            .log
            .torn_subset(k, 0, &TornOptions::new().keep_probability(0.0));
        assert!(none.pieces.is_empty());
        let all = fx
            .log
            .torn_subset(k, 0, &TornOptions::new().keep_probability(1.0));
        assert_eq!(all.pieces.len(), all.candidates);
        let changing = fx.log.entries()[fx.log.window(k)]
            .iter()
            .filter(|e| e.changes_disk())
            .count();
        assert_eq!(all.candidates, changing);
    }

    #[test]
    fn split_torn_writes_keep_aligned_blocks() {
        let fx = fixture(6, 150);
        let unit = NonZeroU64::new(4096).unwrap();
        let options = TornOptions::new().split_writes(unit);
        let mut r = replayer(&fx, DiscardMode::Keep);
        let mut partial = 0;
        for k in fx.log.flush_points() {
            r.advance_to(k).unwrap();
            let subset = fx.log.torn_subset(k, 9, &options);
            for p in &subset.pieces {
                let e = &fx.log.entries()[p.entry];
                assert!(
                    p.disk_range().start >= e.disk_offset
                        && p.disk_range().end <= e.disk_range().end
                );
                if e.action != Action::Discard {
                    assert!(p.len <= 4096);
                    assert_eq!(p.disk_offset / 4096, (p.disk_range().end - 1) / 4096);
                }
                partial += usize::from(p.len < e.len);
            }
            let want = torn_model(&fx, &subset, DiscardMode::Keep);
            assert!(r.with_torn(&subset, read).unwrap() == want);
        }
        assert!(partial > 0);
    }

    #[test]
    fn torn_subsets_must_match_the_position() {
        let fx = fixture(7, 60);
        let k = fx.log.flush_points()[1];
        let subset = fx.log.torn_subset(k, 0, &TornOptions::default());
        let mut r = replayer(&fx, DiscardMode::Zero);
        let err = r.with_torn(&subset, |_| ()).unwrap_err();
        assert!(
            matches!(err, Error::SubsetPosition { position: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_panicking_judge_still_gets_the_working_copy_restored() {
        let fx = fixture(8, 100);
        let k = fx.log.flush_points()[0];
        let mut r = replayer(&fx, DiscardMode::Zero);
        r.advance_to(k).unwrap();
        let exact = read(r.image_path());
        let subset = fx
            .log
            .torn_subset(k, 1, &TornOptions::new().keep_probability(1.0));
        assert!(!subset.pieces.is_empty());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.with_torn(&subset, |_| panic!("judge failed")).ok();
        }));
        assert!(panicked.is_err());
        assert!(read(r.image_path()) == exact);
        r.advance_to_end().unwrap();
    }

    #[test]
    fn recovered_entries_replay_like_counted_ones() {
        let fx = fixture(9, 50);
        let bytes = std::fs::read(fx.path("boot.log")).unwrap();
        let mut short = bytes.clone();
        short[16..24].copy_from_slice(&3u64.to_le_bytes());
        std::fs::write(fx.path("short.log"), &short).unwrap();
        let log = Log::open_with(
            fx.path("short.log"),
            &OpenOptions::new().scan_past_nr_entries(true),
        )
        .unwrap();
        assert_eq!(log.entries().len(), 50);
        let mut r = Replayer::new(
            &log,
            fx.path("base.img"),
            fx.path("w"),
            ReplayOptions::default(),
        )
        .unwrap();
        r.advance_to_end().unwrap();
        assert!(read(&fx.path("w")) == fx.model(50, DiscardMode::Zero));
        assert!(log.entries().iter().any(|e| e.flags.contains(Flags::FUA)));
    }
}
