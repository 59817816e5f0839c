//! A log file, indexed: where each entry is and what it does, never the data itself.
//!
//! [`Log::open`] reads the super block and the headers of the entries it counts; the
//! data stays in the file until [`crate::Replayer`] copies it. The rest are pure
//! functions of the index: [`Log::flush_points`], [`Log::window`], [`Log::summary`].

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{EntryProblem, Error};
use crate::format::{
    parse_entry_header, parse_super, sector_size_valid, Flags, SuperProblem, ENTRY_HEADER_LEN,
    SUPER_LEN,
};

/// How [`Log::open_with`] reads a log beyond what its super block vouches for.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    scan: bool,
    assumed_sector_size: Option<u32>,
    disk_size: Option<u64>,
}

impl OpenOptions {
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// After the `nr_entries` entries the super block counts, go on reading entries for
    /// as long as they look valid (see [`Log::scan_stop`] for where and why it stopped).
    ///
    /// For the log of a QEMU that was killed: QEMU rewrites the super block only at a
    /// flush and every `log-super-update-interval` entries (4096 by default), so the
    /// entries logged since are in the file but not counted. Entries found this way are
    /// best effort: a log file reused without truncating it still holds the entries of
    /// the earlier, longer run, and they look just as valid (give QEMU a new, empty log
    /// file each time). Scanning stops at an all-zero header: what a slot holds that
    /// QEMU had reserved for an entry but not yet written (also what QEMU logs for a
    /// zero-length write, which guests do not send).
    pub fn scan_past_nr_entries(mut self, scan: bool) -> OpenOptions {
        self.scan = scan;
        self
    }

    /// The sector size to use when sector 0 is all zero or the file is empty (QEMU was
    /// killed before it first wrote the super block). Only used with
    /// [`OpenOptions::scan_past_nr_entries`]; a super block that is there always wins.
    pub fn assume_sector_size(mut self, size: u32) -> OpenOptions {
        self.assumed_sector_size = Some(size);
        self
    }

    /// The size of the recorded disk: an entry outside it is an error (or, while
    /// scanning, the end of the log).
    pub fn disk_size(mut self, size: u64) -> OpenOptions {
        self.disk_size = Some(size);
        self
    }
}

/// What replaying an entry does to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy [`Entry::len`] bytes from `data_offset` in the log file to
    /// [`Entry::disk_offset`]. A "write zeroes" request is logged as a write whose data
    /// is zeros.
    Write { data_offset: u64 },
    /// The range was discarded (see [`crate::DiscardMode`]).
    Discard,
    /// Flushes, marks and zero-length writes change no byte.
    Nothing,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: usize,
    pub flags: Flags,
    /// First byte on the disk, in bytes: the entry's `sector` times the log's sector
    /// size. 0 for flushes.
    pub disk_offset: u64,
    /// Bytes on the disk: `nr_sectors` times the sector size. 0 for flushes and marks.
    pub len: u64,
    /// Where the entry's header sector starts in the log file.
    pub log_offset: u64,
    pub action: Action,
    /// The text of a mark (kernel logs only).
    pub mark: Option<String>,
}

impl Entry {
    /// A FLUSH or FUA entry: after it, everything up to and including it is on stable
    /// storage.
    pub fn is_barrier(&self) -> bool {
        self.flags.intersects(Flags::FLUSH | Flags::FUA)
    }

    /// Whether replaying it changes bytes of the disk (a write or discard of at least
    /// one sector).
    pub fn changes_disk(&self) -> bool {
        self.action != Action::Nothing
    }

    /// The bytes of the disk it covers.
    pub fn disk_range(&self) -> Range<u64> {
        self.disk_offset..self.disk_offset + self.len
    }
}

/// Why [`OpenOptions::scan_past_nr_entries`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    /// Index the next entry would have had.
    pub index: usize,
    /// Byte offset in the log where it would have started.
    pub offset: u64,
    /// `None`: the file ends exactly there.
    pub problem: Option<EntryProblem>,
}

/// Counts over the whole log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: usize,
    /// Entries that write data (including FUA writes and logged "write zeroes").
    pub writes: usize,
    pub bytes_written: u64,
    /// FLUSH entries.
    pub flushes: usize,
    /// Writes with the FUA flag (QEMU never sets it; see the crate documentation).
    pub fua_writes: usize,
    pub discards: usize,
    pub bytes_discarded: u64,
    pub marks: usize,
    /// Entries found past the super block's `nr_entries` by scanning.
    pub recovered: usize,
    /// [`Log::flush_points`]`().len()`.
    pub flush_points: usize,
}

/// An indexed log.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    sector_size: u32,
    super_nr_entries: Option<u64>,
    entries: Vec<Entry>,
    scan_stop: Option<ScanStop>,
    end_offset: u64,
    file_len: u64,
}

impl Log {
    /// Reads exactly the entries the super block counts; any problem is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<Log, Error> {
        Log::open_with(path, &OpenOptions::new())
    }

    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Log, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, "open the log", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(path, "read the log's size", e))?
            .len();
        Log::index(path, &file, file_len, options)
    }

    fn index(path: &Path, file: &File, file_len: u64, options: &OpenOptions) -> Result<Log, Error> {
        let assumed = match options.assumed_sector_size {
            Some(size) if !sector_size_valid(size) => return Err(Error::AssumedSectorSize(size)),
            Some(size) if options.scan => Some(size),
            _ => None,
        };
        // Without a super block (QEMU had not written it yet) the count is `None` and the
        // sector size the assumed one.
        let (sector_size, super_nr_entries) = if file_len < SUPER_LEN as u64 {
            // QEMU never writes less than a sector; an empty file is a log QEMU opened and
            // never wrote to.
            match (file_len, assumed) {
                (0, Some(size)) => (size, None),
                _ => {
                    return Err(Error::NoSuper {
                        path: path.into(),
                        len: file_len,
                    })
                }
            }
        } else {
            let mut buf = [0; SUPER_LEN];
            file.read_exact_at(&mut buf, 0)
                .map_err(|e| Error::io(path, "read the super block", e))?;
            match (parse_super(&buf), assumed) {
                (Ok(sup), _) => (sup.sector_size, Some(sup.nr_entries)),
                (Err(SuperProblem::Zero), Some(size)) => (size, None),
                (Err(problem), _) => {
                    return Err(Error::Super {
                        path: path.into(),
                        problem,
                    })
                }
            }
        };
        let mut reader = EntryReader {
            file,
            file_len,
            sector_size,
            disk_size: options.disk_size,
        };
        let nr_entries = super_nr_entries.unwrap_or(0);
        let mut entries = Vec::new();
        let mut offset = u64::from(sector_size);
        for index in 0..nr_entries {
            let index = usize::try_from(index).unwrap_or(usize::MAX);
            let (entry, next) = reader.read(index, offset, false).map_err(|e| match e {
                ReadError::Io(e) => Error::io(
                    path,
                    format!("read the header of entry {index} at byte {offset}"),
                    e,
                ),
                ReadError::Problem(problem) => Error::Entry {
                    path: path.into(),
                    index,
                    nr_entries,
                    offset,
                    problem,
                },
            })?;
            entries.push(entry);
            offset = next;
        }
        let mut scan_stop = None;
        if options.scan {
            loop {
                let index = entries.len();
                if offset == file_len {
                    scan_stop = Some(ScanStop {
                        index,
                        offset,
                        problem: None,
                    });
                    break;
                }
                match reader.read(index, offset, true) {
                    Ok((entry, next)) => {
                        entries.push(entry);
                        offset = next;
                    }
                    Err(ReadError::Problem(problem)) => {
                        scan_stop = Some(ScanStop {
                            index,
                            offset,
                            problem: Some(problem),
                        });
                        break;
                    }
                    Err(ReadError::Io(e)) => {
                        return Err(Error::io(
                            path,
                            format!("read the header of entry {index} at byte {offset}"),
                            e,
                        ))
                    }
                }
            }
        }
        Ok(Log {
            path: path.into(),
            sector_size,
            super_nr_entries,
            entries,
            scan_stop,
            end_offset: offset,
            file_len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's sector size in bytes (QEMU's `log-sector-size`, 512 by default): the
    /// unit of the entries' `sector` and `nr_sectors` and of the log's layout.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// `nr_entries` of the super block; `None` when there was none and a sector size was
    /// assumed.
    pub fn super_nr_entries(&self) -> Option<u64> {
        self.super_nr_entries
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries read past the super block's count.
    pub fn recovered_entries(&self) -> usize {
        self.entries.len() - self.super_nr_entries.unwrap_or(0) as usize
    }

    /// Where and why scanning stopped; `None` without
    /// [`OpenOptions::scan_past_nr_entries`].
    pub fn scan_stop(&self) -> Option<&ScanStop> {
        self.scan_stop.as_ref()
    }

    /// Bytes of the file after the last entry read. Non-zero without scanning hints at
    /// entries the super block does not count yet (a killed QEMU), or at a reused log.
    pub fn unread_bytes(&self) -> u64 {
        self.file_len.saturating_sub(self.end_offset)
    }

    /// The points at which a power cut is interesting: `i + 1` for every FLUSH or FUA
    /// entry `i`, in increasing order, leaving out a point whose state is the same as the
    /// previous one's (no write or discard between them; the first point is compared with
    /// point 0, the base image).
    ///
    /// A point `k` names a state of the disk: the base image with every entry of index
    /// `< k` applied, nothing else. After a power cut between point `k` and the next, the
    /// disk holds that state plus any part of [`Log::window`]`(k)`.
    pub fn flush_points(&self) -> Vec<usize> {
        let mut points = Vec::new();
        let mut changed = false;
        for entry in &self.entries {
            changed |= entry.changes_disk();
            if entry.is_barrier() && changed {
                points.push(entry.index + 1);
                changed = false;
            }
        }
        points
    }

    /// The entries that may or may not have reached the disk after a power cut following
    /// point `k`: from `k` up to and including the first barrier that comes after a write
    /// or discard of that range (a FUA write is its own barrier), or to the end of the
    /// log. `k` may be any point from 0 to `entries().len()`.
    pub fn window(&self, k: usize) -> Range<usize> {
        let k = k.min(self.entries.len());
        let mut changed = false;
        for entry in &self.entries[k..] {
            changed |= entry.changes_disk();
            if entry.is_barrier() && changed {
                return k..entry.index + 1;
            }
        }
        k..self.entries.len()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            entries: self.entries.len(),
            recovered: self.recovered_entries(),
            flush_points: self.flush_points().len(),
            ..Summary::default()
        };
        for e in &self.entries {
            match e.action {
                Action::Write { .. } => {
                    s.writes += 1;
                    s.bytes_written += e.len;
                    if e.flags.contains(Flags::FUA) {
                        s.fua_writes += 1;
                    }
                }
                Action::Discard => {
                    s.discards += 1;
                    s.bytes_discarded += e.len;
                }
                Action::Nothing => {}
            }
            if e.flags.contains(Flags::FLUSH) {
                s.flushes += 1;
            }
            if e.mark.is_some() {
                s.marks += 1;
            }
        }
        s
    }

    /// Largest byte on the disk any entry touches.
    pub fn disk_extent(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.changes_disk())
            .map(|e| e.disk_range().end)
            .max()
            .unwrap_or(0)
    }
}

enum ReadError {
    Io(io::Error),
    Problem(EntryProblem),
}

impl From<EntryProblem> for ReadError {
    fn from(p: EntryProblem) -> ReadError {
        ReadError::Problem(p)
    }
}

struct EntryReader<'f> {
    file: &'f File,
    file_len: u64,
    sector_size: u32,
    disk_size: Option<u64>,
}

impl EntryReader<'_> {
    /// Reads the entry at `offset`; returns it and the offset of the next one.
    fn read(
        &mut self,
        index: usize,
        offset: u64,
        scanning: bool,
    ) -> Result<(Entry, u64), ReadError> {
        let ss = u64::from(self.sector_size);
        let file_len = self.file_len;
        if offset.checked_add(ss).is_none_or(|end| end > file_len) {
            return Err(EntryProblem::TruncatedHeader { file_len }.into());
        }
        let mut buf = [0; ENTRY_HEADER_LEN];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(ReadError::Io)?;
        let h = parse_entry_header(&buf);
        if scanning && h.is_zero() {
            return Err(EntryProblem::ZeroHeader.into());
        }
        if h.flags.unknown() != 0 {
            return Err(EntryProblem::UnknownFlags {
                flags: h.flags,
                unknown: h.flags.unknown(),
            }
            .into());
        }
        let is_mark = h.flags.contains(Flags::MARK);
        if h.data_len != 0 && !is_mark {
            return Err(EntryProblem::InlineData {
                data_len: h.data_len,
            }
            .into());
        }
        if is_mark && h.data_len > ss - ENTRY_HEADER_LEN as u64 {
            return Err(EntryProblem::MarkTooLong {
                data_len: h.data_len,
                sector_size: self.sector_size,
            }
            .into());
        }
        let overflow = EntryProblem::Overflow {
            sector: h.sector,
            nr_sectors: h.nr_sectors,
        };
        let disk_offset = h.sector.checked_mul(ss).ok_or(overflow.clone())?;
        let len = h.nr_sectors.checked_mul(ss).ok_or(overflow.clone())?;
        let disk_end = disk_offset.checked_add(len).ok_or(overflow.clone())?;
        let data_offset = offset + ss;
        let data_len = h.data_sectors() * ss;
        let next = data_offset.checked_add(data_len).ok_or(overflow)?;
        if next > file_len {
            return Err(EntryProblem::DataBeyondEof {
                data_offset,
                len: data_len,
                file_len,
            }
            .into());
        }
        let action = if h.flags.contains(Flags::DISCARD) && len > 0 {
            Action::Discard
        } else if !is_mark && !h.flags.contains(Flags::DISCARD) && len > 0 {
            Action::Write { data_offset }
        } else {
            Action::Nothing
        };
        if let Some(disk_size) = self.disk_size {
            if action != Action::Nothing && disk_end > disk_size {
                return Err(EntryProblem::OutsideDisk {
                    start: disk_offset,
                    end: disk_end,
                    disk_size,
                }
                .into());
            }
        }
        let mark = if is_mark {
            let mut text = vec![0; h.data_len as usize];
            self.file
                .read_exact_at(&mut text, offset + ENTRY_HEADER_LEN as u64)
                .map_err(ReadError::Io)?;
            let text = String::from_utf8_lossy(&text);
            Some(text.trim_end_matches('\0').to_owned())
        } else {
            None
        };
        let len = if action == Action::Nothing { 0 } else { len };
        Ok((
            Entry {
                index,
                flags: h.flags,
                disk_offset,
                len,
                log_offset: offset,
                action,
                mark,
            },
            next,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_super, EntryHeader, Super};
    use crate::LogBuilder;

    fn open_bytes(bytes: &[u8], options: &OpenOptions) -> (tempfile::TempDir, Result<Log, Error>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.log");
        std::fs::write(&path, bytes).unwrap();
        let log = Log::open_with(&path, options);
        (dir, log)
    }

    fn open(b: &LogBuilder) -> Log {
        let (_dir, log) = open_bytes(&b.to_bytes(), &OpenOptions::new());
        log.unwrap()
    }

    /// A log with one of each kind of entry.
    fn every_kind(sector_size: u32) -> LogBuilder {
        let ss = sector_size as usize;
        let mut b = LogBuilder::new(sector_size);
        b.write(0, &vec![0xaa; 16 * ss])
            .flush()
            .fua_write(2048, &vec![0xbb; ss])
            .discard(4096, 128)
            .mark("mkfs")
            .write_with(Flags::METADATA, 7, &vec![0xcc; 2 * ss]);
        b
    }

    #[test]
    fn parses_every_kind_of_entry_in_bytes() {
        for ss in [512u32, 4096] {
            let s = u64::from(ss);
            let log = open(&every_kind(ss));
            assert_eq!(log.sector_size(), ss);
            assert_eq!(log.super_nr_entries(), Some(6));
            let got: Vec<_> = log
                .entries()
                .iter()
                .map(|e| {
                    (
                        e.index,
                        e.flags,
                        e.disk_offset,
                        e.len,
                        e.log_offset,
                        e.action,
                    )
                })
                .collect();
            let write = |data_offset| Action::Write { data_offset };
            assert_eq!(
                got,
                [
                    (0, Flags::empty(), 0, 16 * s, s, write(2 * s)),
                    (1, Flags::FLUSH, 0, 0, 18 * s, Action::Nothing),
                    (2, Flags::FUA, 2048 * s, s, 19 * s, write(20 * s)),
                    (
                        3,
                        Flags::DISCARD,
                        4096 * s,
                        128 * s,
                        21 * s,
                        Action::Discard
                    ),
                    (4, Flags::MARK, 0, 0, 22 * s, Action::Nothing),
                    (5, Flags::METADATA, 7 * s, 2 * s, 23 * s, write(24 * s)),
                ],
                "sector size {ss}"
            );
            assert_eq!(log.entries()[4].mark.as_deref(), Some("mkfs"));
            assert_eq!(log.unread_bytes(), 0);
            assert_eq!(
                log.summary(),
                Summary {
                    entries: 6,
                    writes: 3,
                    bytes_written: 19 * s,
                    flushes: 1,
                    fua_writes: 1,
                    discards: 1,
                    bytes_discarded: 128 * s,
                    marks: 1,
                    recovered: 0,
                    flush_points: 2,
                }
            );
            assert_eq!(log.disk_extent(), 4096 * s + 128 * s);
        }
    }

    #[test]
    fn a_zero_length_write_counted_by_the_super_block_is_an_entry() {
        // `qemu-io -c 'write 0 0'` logs an all-zero header.
        let mut b = LogBuilder::new(512);
        b.raw(
            &EntryHeader {
                sector: 0,
                nr_sectors: 0,
                flags: Flags::empty(),
                data_len: 0,
            },
            b"",
            b"",
        )
        .flush();
        let log = open(&b);
        assert_eq!(log.entries().len(), 2);
        assert_eq!(log.entries()[0].action, Action::Nothing);
        assert_eq!(log.flush_points(), Vec::<usize>::new());
    }

    fn err_of(bytes: &[u8], options: &OpenOptions) -> (String, Error) {
        let (dir, log) = open_bytes(bytes, options);
        let path = dir.path().join("boot.log").display().to_string();
        (path, log.unwrap_err())
    }

    #[test]
    fn bad_super_blocks_are_errors_that_name_the_file() {
        let good = every_kind(512).to_bytes();
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        let mut bad_version = good.clone();
        bad_version[8] = 2;
        let mut zero = good.clone();
        zero[..512].fill(0);
        let table: [(&[u8], &str); 5] = [
            (
                &bad_magic,
                "magic is 0x6a736677736873, not 0x6a736677736872",
            ),
            (&bad_version, "version is 2, not 1"),
            (
                &zero,
                "all zero (QEMU had not written it yet); QEMU writes it at the first flush",
            ),
            (&good[..20], "shorter than its super block (20 bytes)"),
            (b"", "shorter than its super block (0 bytes)"),
        ];
        for (bytes, want) in table {
            let (path, err) = err_of(bytes, &OpenOptions::new());
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{path}: ")), "{msg}");
            assert!(msg.contains(want), "{msg}\nwanted: {want}");
        }
    }

    #[test]
    fn bad_entries_are_errors_with_index_and_offset() {
        let ss = 512usize;
        let good = every_kind(512).to_bytes();
        // Entry 5's data starts at sector 24 and has 2 sectors.
        let truncated_data = &good[..25 * ss];
        let mut too_many = good.clone();
        too_many[16] = 7;
        let with_entry = |header: EntryHeader, in_header: &[u8]| {
            let mut b = every_kind(512);
            b.raw(&header, in_header, b"");
            b.to_bytes()
        };
        let h = |sector, nr_sectors, flags: u64, data_len| EntryHeader {
            sector,
            nr_sectors,
            flags: Flags::from_bits(flags),
            data_len,
        };
        let table: Vec<(Vec<u8>, OpenOptions, Error)> = vec![
            (
                truncated_data.to_vec(),
                OpenOptions::new(),
                entry_err(
                    5,
                    6,
                    23 * 512,
                    EntryProblem::DataBeyondEof {
                        data_offset: 24 * 512,
                        len: 1024,
                        file_len: 25 * 512,
                    },
                ),
            ),
            (
                too_many,
                OpenOptions::new(),
                entry_err(
                    6,
                    7,
                    26 * 512,
                    EntryProblem::TruncatedHeader { file_len: 26 * 512 },
                ),
            ),
            (
                with_entry(h(0, 1, 0x20, 0), b""),
                OpenOptions::new(),
                entry_err(
                    6,
                    7,
                    26 * 512,
                    EntryProblem::UnknownFlags {
                        flags: Flags::from_bits(0x20),
                        unknown: 0x20,
                    },
                ),
            ),
            (
                with_entry(h(0, 0, 0, 5), b"hello"),
                OpenOptions::new(),
                entry_err(6, 7, 26 * 512, EntryProblem::InlineData { data_len: 5 }),
            ),
            (
                with_entry(h(0, 0, 8, 481), b""),
                OpenOptions::new(),
                entry_err(
                    6,
                    7,
                    26 * 512,
                    EntryProblem::MarkTooLong {
                        data_len: 481,
                        sector_size: 512,
                    },
                ),
            ),
            (
                with_entry(h(u64::MAX / 256, 1, 4, 0), b""),
                OpenOptions::new(),
                entry_err(
                    6,
                    7,
                    26 * 512,
                    EntryProblem::Overflow {
                        sector: u64::MAX / 256,
                        nr_sectors: 1,
                    },
                ),
            ),
            (
                good.clone(),
                OpenOptions::new().disk_size(1 << 20),
                entry_err(
                    2,
                    6,
                    19 * 512,
                    EntryProblem::OutsideDisk {
                        start: 1 << 20,
                        end: (1 << 20) + 512,
                        disk_size: 1 << 20,
                    },
                ),
            ),
        ];
        for (bytes, options, want) in table {
            let (path, err) = err_of(&bytes, &options);
            assert_eq!(
                format!("{err:?}"),
                format!("{want:?}").replace("PATH", &path)
            );
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{path}: entry ")), "{msg}");
        }
        // The message a person reads.
        let (path, err) = err_of(truncated_data, &OpenOptions::new());
        assert_eq!(
            err.to_string(),
            format!(
                "{path}: entry 5 (of 6 the super block counts) at byte 11776: its data \
                 (1024 bytes from byte 12288) runs past the end of the file at byte 12800"
            )
        );
    }

    fn entry_err(index: usize, nr_entries: u64, offset: u64, problem: EntryProblem) -> Error {
        Error::Entry {
            path: "PATH".into(),
            index,
            nr_entries,
            offset,
            problem,
        }
    }

    #[test]
    fn scanning_reads_the_entries_a_killed_qemu_did_not_count() {
        let b = every_kind(512);
        let bytes = b.to_bytes_counting(2);
        let (_dir, strict) = open_bytes(&bytes, &OpenOptions::new());
        let strict = strict.unwrap();
        assert_eq!(strict.entries().len(), 2);
        assert_eq!(strict.unread_bytes(), (26 - 19) * 512);
        assert_eq!(strict.scan_stop(), None);

        let scan = OpenOptions::new().scan_past_nr_entries(true);
        let (_dir, log) = open_bytes(&bytes, &scan);
        let log = log.unwrap();
        assert_eq!(log.entries(), open(&b).entries());
        assert_eq!(log.recovered_entries(), 4);
        assert_eq!(log.summary().recovered, 4);
        assert_eq!(
            log.scan_stop(),
            Some(&ScanStop {
                index: 6,
                offset: 26 * 512,
                problem: None
            })
        );
    }

    #[test]
    fn scanning_stops_at_the_first_entry_that_does_not_look_valid() {
        let scan = OpenOptions::new().scan_past_nr_entries(true);
        let mut b = every_kind(512);
        let count = b.len();
        // A slot QEMU reserved but did not write, then a valid-looking entry.
        b.raw(
            &EntryHeader {
                sector: 0,
                nr_sectors: 0,
                flags: Flags::empty(),
                data_len: 0,
            },
            b"",
            b"",
        )
        .write(0, &[1; 512]);
        let (_dir, log) = open_bytes(&b.to_bytes_counting(count), &scan);
        let log = log.unwrap();
        assert_eq!(log.entries().len(), 6);
        assert_eq!(
            log.scan_stop().unwrap().problem,
            Some(EntryProblem::ZeroHeader)
        );
        assert_eq!(log.scan_stop().unwrap().offset, 26 * 512);

        // Garbage: stops there, no error.
        let mut bytes = every_kind(512).to_bytes_counting(1);
        bytes.extend_from_slice(&[0xff; 512]);
        let (_dir, log) = open_bytes(&bytes, &scan);
        let log = log.unwrap();
        assert_eq!(log.entries().len(), 6);
        assert!(matches!(
            log.scan_stop().unwrap().problem,
            Some(EntryProblem::UnknownFlags { .. })
        ));

        // Scanning past the count never turns what the super block counts into guesses:
        // a bad counted entry is still an error.
        let mut bytes = every_kind(512).to_bytes();
        bytes[18 * 512 + 16] = 0x40;
        let (_dir, log) = open_bytes(&bytes, &scan);
        assert!(matches!(log, Err(Error::Entry { index: 1, .. })));
    }

    #[test]
    fn without_a_super_block_a_sector_size_can_be_assumed() {
        let b = every_kind(4096);
        let mut bytes = b.to_bytes();
        bytes[..4096].fill(0);
        let scan = OpenOptions::new()
            .scan_past_nr_entries(true)
            .assume_sector_size(4096);
        let (_dir, log) = open_bytes(&bytes, &scan);
        let log = log.unwrap();
        assert_eq!(log.super_nr_entries(), None);
        assert_eq!(log.sector_size(), 4096);
        assert_eq!(log.entries(), open(&b).entries());

        // An empty log: QEMU opened it and logged nothing.
        let (_dir, log) = open_bytes(b"", &scan);
        assert_eq!(log.unwrap().entries(), []);

        // A super block that is there wins over the assumption.
        let (_dir, log) = open_bytes(&every_kind(512).to_bytes(), &scan);
        assert_eq!(log.unwrap().sector_size(), 512);

        // The assumption alone does not scan.
        let (_dir, log) = open_bytes(&bytes, &OpenOptions::new().assume_sector_size(4096));
        assert!(matches!(log, Err(Error::Super { .. })));
        let bad = OpenOptions::new()
            .scan_past_nr_entries(true)
            .assume_sector_size(1000);
        let (_dir, log) = open_bytes(&bytes, &bad);
        assert!(matches!(log, Err(Error::AssumedSectorSize(1000))));
    }

    /// A log from a compact description: `w` write, `f` flush, `u` FUA write, `d`
    /// discard, `m` mark, `z` zero-length write.
    fn log_of(kinds: &str) -> Log {
        let mut b = LogBuilder::new(512);
        for (i, c) in kinds.chars().enumerate() {
            let sector = i as u64 * 8;
            match c {
                'w' => b.write(sector, &[c as u8; 512]),
                'u' => b.fua_write(sector, &[c as u8; 512]),
                'f' => b.flush(),
                'd' => b.discard(sector, 8),
                'm' => b.mark("m"),
                'z' => b.raw(
                    &EntryHeader {
                        sector: 0,
                        nr_sectors: 0,
                        flags: Flags::empty(),
                        data_len: 0,
                    },
                    b"",
                    b"",
                ),
                _ => panic!("{c}"),
            };
        }
        open(&b)
    }

    #[test]
    fn flush_points_are_after_barriers_that_follow_a_change() {
        let table: [(&str, &[usize]); 9] = [
            ("", &[]),
            ("f", &[]),
            ("wf", &[2]),
            ("wwfwf", &[3, 5]),
            // Two flushes in a row: one state.
            ("wff", &[2]),
            // A FUA write is its own barrier; the flush after it adds nothing.
            ("wuf", &[2]),
            ("wfuw", &[2, 3]),
            ("dfwmfzf", &[2, 5]),
            // Writes after the last barrier: no point (they are a window).
            ("wfww", &[2]),
        ];
        for (kinds, want) in table {
            assert_eq!(log_of(kinds).flush_points(), want, "{kinds}");
        }
    }

    #[test]
    fn windows_run_to_the_barrier_after_the_next_change() {
        let table: [(&str, usize, Range<usize>); 8] = [
            ("wwfwf", 0, 0..3),
            ("wwfwf", 3, 3..5),
            ("wwfwf", 5, 5..5),
            // Flushes with nothing before them do not close a window.
            ("wfffwf", 2, 2..6),
            ("wfu", 2, 2..3),
            ("wfww", 2, 2..4),
            // From inside a window to its end.
            ("wwwf", 1, 1..4),
            ("wf", 9, 2..2),
        ];
        for (kinds, k, want) in table {
            assert_eq!(log_of(kinds).window(k), want, "{kinds} at {k}");
        }
    }

    #[test]
    fn super_block_encoding_is_what_the_reader_reads() {
        let sup = Super {
            nr_entries: 3,
            sector_size: 1024,
        };
        let mut bytes = encode_super(&sup).to_vec();
        bytes.resize(1024, 0);
        let (_dir, log) = open_bytes(&bytes, &OpenOptions::new());
        let err = log.unwrap_err().to_string();
        assert!(
            err.contains("entry 0 (of 3 the super block counts) at byte 1024"),
            "{err}"
        );
    }
}
