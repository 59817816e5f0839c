//! Writing logs, for tests: this crate's and those of its users, who need a log with a
//! known sequence of entries without running QEMU.

use std::io;
use std::path::Path;

use crate::format::{encode_entry_header, encode_super, EntryHeader, Flags, Super};

/// Builds a log in memory, laid out as QEMU's blklogwrites lays it out: the super block
/// in sector 0, then each entry's header sector followed by its data sectors.
#[derive(Debug, Clone)]
pub struct LogBuilder {
    sector_size: u32,
    body: Vec<u8>,
    entries: u64,
}

impl LogBuilder {
    /// A log with sectors of `sector_size` bytes (512 in QEMU unless `log-sector-size`).
    ///
    /// # Panics
    /// If `sector_size` is not one [`crate::format::sector_size_valid`] accepts.
    pub fn new(sector_size: u32) -> LogBuilder {
        assert!(crate::format::sector_size_valid(sector_size));
        LogBuilder {
            sector_size,
            body: Vec::new(),
            entries: 0,
        }
    }

    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// Entries added so far.
    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// A write of `data` (whole sectors) at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> &mut LogBuilder {
        self.write_with(Flags::empty(), sector, data)
    }

    /// A write with the FUA flag (what Linux's dm-log-writes logs for `REQ_FUA`).
    pub fn fua_write(&mut self, sector: u64, data: &[u8]) -> &mut LogBuilder {
        self.write_with(Flags::FUA, sector, data)
    }

    /// A write with `flags` of `data` (whole sectors) at `sector`.
    ///
    /// # Panics
    /// If `data` is not whole sectors.
    pub fn write_with(&mut self, flags: Flags, sector: u64, data: &[u8]) -> &mut LogBuilder {
        let ss = self.sector_size as usize;
        assert_eq!(data.len() % ss, 0, "data must be whole sectors");
        let header = EntryHeader {
            sector,
            nr_sectors: (data.len() / ss) as u64,
            flags,
            data_len: 0,
        };
        self.raw(&header, b"", data)
    }

    /// A flush, as QEMU logs one: sector 0, no sectors.
    pub fn flush(&mut self) -> &mut LogBuilder {
        let header = EntryHeader {
            sector: 0,
            nr_sectors: 0,
            flags: Flags::FLUSH,
            data_len: 0,
        };
        self.raw(&header, b"", b"")
    }

    /// A discard of `nr_sectors` at `sector`: a header without data.
    pub fn discard(&mut self, sector: u64, nr_sectors: u64) -> &mut LogBuilder {
        let header = EntryHeader {
            sector,
            nr_sectors,
            flags: Flags::DISCARD,
            data_len: 0,
        };
        self.raw(&header, b"", b"")
    }

    /// A mark, as Linux logs one: the text after the header, in the header's sector.
    pub fn mark(&mut self, text: &str) -> &mut LogBuilder {
        let header = EntryHeader {
            sector: 0,
            nr_sectors: 0,
            flags: Flags::MARK,
            data_len: text.len() as u64,
        };
        self.raw(&header, text.as_bytes(), b"")
    }

    /// Any entry: `header`, then `in_header` in the rest of its sector, then `data` padded
    /// to whole sectors. Nothing is checked, so tests can write broken entries.
    pub fn raw(&mut self, header: &EntryHeader, in_header: &[u8], data: &[u8]) -> &mut LogBuilder {
        let ss = self.sector_size as usize;
        let start = self.body.len();
        self.body.extend_from_slice(&encode_entry_header(header));
        self.body.extend_from_slice(in_header);
        self.body.resize(start + ss, 0);
        self.body.extend_from_slice(data);
        self.body.resize(self.body.len().div_ceil(ss) * ss, 0);
        self.entries += 1;
        self
    }

    /// The log's bytes, with a super block that counts every entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_counting(self.entries)
    }

    /// The log's bytes, with a super block that counts `nr_entries` (what QEMU leaves when
    /// it is killed between super block updates).
    pub fn to_bytes_counting(&self, nr_entries: u64) -> Vec<u8> {
        let mut bytes = encode_super(&Super {
            nr_entries,
            sector_size: self.sector_size,
        })
        .to_vec();
        bytes.resize(self.sector_size as usize, 0);
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Writes [`LogBuilder::to_bytes`] to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}
