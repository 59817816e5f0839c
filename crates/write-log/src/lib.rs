//! Reads a block-device write log in the dm-log-writes format, as QEMU's `blklogwrites`
//! block driver writes it, and rebuilds the disk as a power cut at any point of the log
//! would leave it.
//!
//! ```no_run
//! use write_log::{Log, ReplayOptions, Replayer, TornOptions};
//!
//! let log = Log::open("boot.log")?;
//! let mut replayer = Replayer::new(&log, "base.img", "work.img", ReplayOptions::default())?;
//! for k in log.flush_points() {
//!     replayer.advance_to(k)?; // forward only: one pass over the log in all
//!     // judge(replayer.image_path());
//!     for seed in 0..4 {
//!         let torn = log.torn_subset(k, seed, &TornOptions::default());
//!         replayer.with_torn(&torn, |image| { /* judge(image) */ })?;
//!     }
//! }
//! # Ok::<(), write_log::Error>(())
//! ```
//!
//! # Points and windows
//!
//! A *point* `k` (0 to `entries().len()`) is the state of the disk with exactly the
//! entries of index `< k` applied to the base image. [`Log::flush_points`] lists the
//! points right after each FLUSH or FUA entry: what a device must have kept across a
//! power cut at that moment. A power cut before the next such barrier leaves that point
//! plus any subset of the writes in between ([`Log::window`]); [`Log::torn_subset`]
//! picks one, reproducibly from a seed, and [`Replayer::with_torn`] applies it on top of
//! the working copy and undoes it afterwards.
//!
//! # The format
//!
//! Little-endian throughout. Sector 0 of the log holds the super block
//! `{magic: u64 = 0x6a736677736872, version: u64 = 1, nr_entries: u64, sectorsize: u32}`,
//! zero-padded to a sector. Entries follow from sector 1, each a header sector
//! `{sector: u64, nr_sectors: u64, flags: u64, data_len: u64}` (zero-padded) and then,
//! unless it is a discard or a mark, `nr_sectors` sectors of data. Flags: FLUSH 1, FUA 2,
//! DISCARD 4, MARK 8, METADATA 16. The sector size is the log's `sectorsize`, and it is
//! also the unit of `sector` and `nr_sectors` (QEMU: `offset >> log2(log-sector-size)`;
//! Linux: the logical block size of the device). [`Entry`] gives them in bytes.
//! Linux writes a mark's text after the header in the header's sector, `data_len` bytes;
//! any other `data_len` is rejected here (QEMU always writes 0).
//!
//! # What QEMU 7.2 (Debian 12) writes
//!
//! From `block/blklogwrites.c`, checked against `qemu-io` 7.2.22 in `tests/qemu_io.rs`:
//!
//! - **Sector size**: `log-sector-size` (default 512, a power of two). The driver sets
//!   the node's request alignment to it, so smaller writes reach it read-modify-written
//!   and are logged as whole sectors.
//! - **Order**: a request is logged when its write to the disk file has completed, so
//!   the log is in completion order. QEMU writes no entry of its own: the first entry is
//!   the first request, there is no end mark (Linux logs `dm-log-writes-end`).
//! - **Writes**: flags 0, the data after the header. A "write zeroes" request (also with
//!   `unmap`) is logged as a write of zeros, never as a discard. In 7.2 its zeros are
//!   placed *after* the header is written, so another request logged meanwhile lands
//!   between them and corrupts the log (fixed upstream in 2024): record with
//!   `write-zeroes=off` on the guest's virtio-blk device and `detect-zeroes=off`.
//! - **Flushes**: `{sector 0, nr_sectors 0, flags FLUSH}`, logged after the disk file's
//!   flush completed. Only with a cache mode that flushes: with `cache=unsafe`
//!   (`cache.no-flush`) no flush is ever logged and the super block is never written.
//! - **FUA**: never logged. The driver does not support FUA, so the block layer
//!   emulates it with a flush after the write, logged as a FLUSH entry after the write,
//!   but skipped (no entry) when nothing had been written since the last flush: a FUA
//!   write right after a flush leaves no barrier in the log. A guest on virtio-blk
//!   sends no FUA (Linux turns it into flushes); with `cache=writethrough` every write is
//!   FUA (qemu-io's default, hence `-t writeback` in the tests).
//! - **Discards**: `{sector, nr_sectors, flags DISCARD}`, no data. Only when discards
//!   reach the driver (`discard=unmap`); QEMU's raw file then reads zeros there.
//! - **Super block**: not written when the log is opened, only after a FLUSH entry and
//!   after every `log-super-update-interval`-th entry (default 4096). A QEMU that is
//!   killed leaves the entries since the last update uncounted, or, before the first
//!   update, sector 0 all zero. [`Log::open`] reads exactly `nr_entries`;
//!   [`OpenOptions::scan_past_nr_entries`] (with [`OpenOptions::assume_sector_size`]
//!   for a missing super block) reads on while entries look valid.
//! - **Concurrency** (7.2, fixed upstream in 2024): an entry's place is reserved and
//!   counted before it is written, and super block updates can land out of order, so a
//!   QEMU killed with requests in flight can leave a counted slot unwritten (it reads as
//!   zero-length writes) or a count that lags. A clean shutdown leaves neither.
//! - **The log file** is neither created nor truncated: entries of an earlier, longer
//!   run stay after the new ones ([`Log::unread_bytes`]). Give QEMU a new empty file.
//!
//! Recording a whole boot: `-blockdev driver=file,node-name=disk,filename=disk.raw`,
//! `-blockdev driver=file,node-name=log,filename=boot.log`,
//! `-blockdev driver=blklogwrites,node-name=logged,file=disk,log=log`, the guest's disk on
//! `logged` with `cache.direct` as wanted but never `cache.no-flush`, and
//! `write-zeroes=off` on the device.

mod builder;
mod error;
pub mod format;
mod log;
mod replay;
mod sparse;
mod torn;

pub use builder::LogBuilder;
pub use error::{EntryProblem, Error};
pub use format::Flags;
pub use log::{Action, Entry, Log, OpenOptions, ScanStop, Summary};
pub use replay::{DiscardMode, ReplayOptions, Replayer};
pub use torn::{Piece, SplitMix64, TornOptions, TornSubset};

/// Copies a file sparsely: a reflink where the filesystem has them, else its data
/// segments (`SEEK_DATA`/`SEEK_HOLE`) with `copy_file_range`. For making base images
/// and judge copies the way [`Replayer::new`] makes its working copy.
pub fn sparse_copy(
    src: impl AsRef<std::path::Path>,
    dst: impl AsRef<std::path::Path>,
) -> Result<(), Error> {
    sparse::copy(src.as_ref(), dst.as_ref())
}

/// Copies the bytes `range` of `src` into `dst` from its offset 0, keeping holes: one
/// partition of a replayed disk as a disk of its own (for a judge that attaches it).
pub fn sparse_copy_part(
    src: impl AsRef<std::path::Path>,
    range: std::ops::Range<u64>,
    dst: impl AsRef<std::path::Path>,
) -> Result<(), Error> {
    sparse::copy_part(src.as_ref(), range, dst.as_ref())
}
