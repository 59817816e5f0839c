//! The crate's error type: every error names the file, and for a bad entry its index and
//! the byte offset in the log.

use std::io;
use std::path::PathBuf;

use crate::format::{Flags, SuperProblem};

/// What is wrong with one entry of a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("its header is cut off: the file ends at byte {file_len}")]
    TruncatedHeader { file_len: u64 },
    #[error(
        "its data ({len} bytes from byte {data_offset}) runs past the end of the file at byte {file_len}"
    )]
    DataBeyondEof {
        data_offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error("unknown flags {unknown:#x} (flags {flags})")]
    UnknownFlags { flags: Flags, unknown: u64 },
    #[error(
        "data_len is {data_len} on an entry that is not a mark (inline data is not supported)"
    )]
    InlineData { data_len: u64 },
    #[error("its mark text of {data_len} bytes does not fit in its sector of {sector_size} bytes")]
    MarkTooLong { data_len: u64, sector_size: u32 },
    #[error("sector {sector} + {nr_sectors} sectors overflows a 64-bit byte offset")]
    Overflow { sector: u64, nr_sectors: u64 },
    #[error("it covers bytes {start}..{end}, past the end of the disk ({disk_size} bytes)")]
    OutsideDisk {
        start: u64,
        end: u64,
        disk_size: u64,
    },
    #[error(
        "its header is all zero: an entry slot that was never written, or a zero-length write"
    )]
    ZeroHeader,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot {action}", path = .path.display())]
    Io {
        path: PathBuf,
        /// What was being done, e.g. `read the header of entry 12 at byte 4096`.
        action: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: the super block is unusable: {problem}{hint}",
        path = .path.display(),
        hint = if *.problem == SuperProblem::Zero {
            "; QEMU writes it at the first flush or after log-super-update-interval entries, \
             so a QEMU killed before that leaves none: open with \
             OpenOptions::scan_past_nr_entries and assume_sector_size to read the entries"
        } else {
            ""
        }
    )]
    Super {
        path: PathBuf,
        problem: SuperProblem,
    },
    #[error("{path}: the log is shorter than its super block ({len} bytes)", path = .path.display())]
    NoSuper { path: PathBuf, len: u64 },
    #[error(
        "{path}: entry {index} (of {nr_entries} the super block counts) at byte {offset}: {problem}",
        path = .path.display()
    )]
    Entry {
        path: PathBuf,
        index: usize,
        nr_entries: u64,
        offset: u64,
        problem: EntryProblem,
    },
    #[error(
        "{path}: the base image is {size} bytes, but entry {index} of the log writes up to byte {end}",
        path = .path.display()
    )]
    BaseTooSmall {
        path: PathBuf,
        size: u64,
        index: usize,
        end: u64,
    },
    #[error("invalid assumed sector size {0}: not a power of two from 32 to 2^24")]
    AssumedSectorSize(u32),
    #[error(
        "cannot go back from point {position} to point {requested}: replay only moves forward"
    )]
    Backwards { position: usize, requested: usize },
    #[error("point {requested} is past the end of the log ({entries} entries)")]
    PastEnd { requested: usize, entries: usize },
    #[error("the torn subset is for point {subset_point}, the replayer is at point {position}")]
    SubsetPosition {
        subset_point: usize,
        position: usize,
    },
    #[error(
        "{path}: a torn state could not be undone, the working copy no longer matches any point",
        path = .path.display()
    )]
    Poisoned { path: PathBuf },
}

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: impl Into<String>,
        source: io::Error,
    ) -> Error {
        Error::Io {
            path: path.into(),
            action: action.into(),
            source,
        }
    }
}
