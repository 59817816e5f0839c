//! The on-disk structures of a dm-log-writes log, parsed from bytes.
//!
//! Nothing here touches a file: [`parse_super`] and [`parse_entry_header`] take the bytes
//! of one log sector (or its start), so they are tested with byte arrays. Everything is
//! little-endian, as in Linux's `drivers/md/dm-log-writes.c` and QEMU's
//! `block/blklogwrites.c`.

use std::fmt;

/// `log_write_super.magic`.
pub const MAGIC: u64 = 0x6a736677736872;
/// `log_write_super.version`, the only one there is.
pub const VERSION: u64 = 1;
/// Bytes of `struct log_write_super` (packed: three `u64` and a `u32`).
pub const SUPER_LEN: usize = 28;
/// Bytes of `struct log_write_entry` (four `u64`).
pub const ENTRY_HEADER_LEN: usize = 32;
/// Smallest sector size accepted: a sector must hold an entry header. QEMU accepts
/// powers of two from here on (it has checked this bound since 2024; before, 1 byte).
pub const MIN_SECTOR_SIZE: u32 = ENTRY_HEADER_LEN as u32;
/// QEMU's bound on `log-sector-size` (exclusive).
pub const MAX_SECTOR_SIZE: u32 = 1 << 24;

/// The flags of an entry (`log_write_entry.flags`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u64);

impl Flags {
    /// A flush (`REQ_PREFLUSH`): everything logged before it is on stable storage.
    pub const FLUSH: Flags = Flags(1 << 0);
    /// A write with Force Unit Access: this write is on stable storage when it completes.
    /// QEMU never sets it (see the crate documentation).
    pub const FUA: Flags = Flags(1 << 1);
    /// A discard: `sector`/`nr_sectors` give the range, the log holds no data for it.
    pub const DISCARD: Flags = Flags(1 << 2);
    /// A mark from `dmsetup message ... mark <text>` (kernel only): the text follows the
    /// header in the entry's sector, `data_len` bytes.
    pub const MARK: Flags = Flags(1 << 3);
    /// `REQ_META` (kernel only, informational).
    pub const METADATA: Flags = Flags(1 << 4);
    /// Every flag this crate knows.
    pub const KNOWN: Flags = Flags(0x1f);

    pub const fn empty() -> Flags {
        Flags(0)
    }

    pub const fn from_bits(bits: u64) -> Flags {
        Flags(bits)
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// The bits outside [`Flags::KNOWN`].
    pub const fn unknown(self) -> u64 {
        self.0 & !Self::KNOWN.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// `FLUSH|FUA`, `-` for none, unknown bits in hex.
impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Flags, &str); 5] = [
            (Flags::FLUSH, "FLUSH"),
            (Flags::FUA, "FUA"),
            (Flags::DISCARD, "DISCARD"),
            (Flags::MARK, "MARK"),
            (Flags::METADATA, "METADATA"),
        ];
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if !std::mem::replace(&mut first, false) {
                f.write_str("|")?;
            }
            Ok::<(), fmt::Error>(())
        };
        for (flag, name) in NAMES {
            if self.contains(flag) {
                sep(f)?;
                f.write_str(name)?;
            }
        }
        if self.unknown() != 0 {
            sep(f)?;
            write!(f, "{:#x}", self.unknown())?;
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({self})")
    }
}

/// The super block, sector 0 of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Super {
    /// Entries the writer had logged when it last wrote the super block.
    pub nr_entries: u64,
    /// The log's sector size in bytes: the unit of the log's layout and of the entries'
    /// `sector`/`nr_sectors`.
    pub sector_size: u32,
}

/// Why sector 0 is not a usable super block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SuperProblem {
    #[error("it is all zero (QEMU had not written it yet)")]
    Zero,
    #[error("its magic is {0:#x}, not {MAGIC:#x}")]
    Magic(u64),
    #[error("its version is {0}, not {VERSION}")]
    Version(u64),
    #[error(
        "its sector size {0} is not a power of two from {MIN_SECTOR_SIZE} to {MAX_SECTOR_SIZE}"
    )]
    SectorSize(u32),
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Whether a log sector size is one this crate (and QEMU) accepts.
pub fn sector_size_valid(size: u32) -> bool {
    size.is_power_of_two() && (MIN_SECTOR_SIZE..MAX_SECTOR_SIZE).contains(&size)
}

/// Parses the first [`SUPER_LEN`] bytes of the log.
pub fn parse_super(bytes: &[u8; SUPER_LEN]) -> Result<Super, SuperProblem> {
    if bytes.iter().all(|&b| b == 0) {
        return Err(SuperProblem::Zero);
    }
    let magic = le64(bytes, 0);
    if magic != MAGIC {
        return Err(SuperProblem::Magic(magic));
    }
    let version = le64(bytes, 8);
    if version != VERSION {
        return Err(SuperProblem::Version(version));
    }
    let sector_size = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    if !sector_size_valid(sector_size) {
        return Err(SuperProblem::SectorSize(sector_size));
    }
    Ok(Super {
        nr_entries: le64(bytes, 16),
        sector_size,
    })
}

/// Encodes a super block (for tests and for [`crate::LogBuilder`]).
pub fn encode_super(sup: &Super) -> [u8; SUPER_LEN] {
    let mut b = [0; SUPER_LEN];
    b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    b[8..16].copy_from_slice(&VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&sup.nr_entries.to_le_bytes());
    b[24..28].copy_from_slice(&sup.sector_size.to_le_bytes());
    b
}

/// `struct log_write_entry`, as stored: units are log sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub sector: u64,
    pub nr_sectors: u64,
    pub flags: Flags,
    /// Bytes of mark text after the header (kernel marks); 0 in everything QEMU writes.
    pub data_len: u64,
}

impl EntryHeader {
    pub fn is_zero(&self) -> bool {
        self.sector == 0 && self.nr_sectors == 0 && self.flags.bits() == 0 && self.data_len == 0
    }

    /// Log sectors the entry's data takes after its header sector: none for discards
    /// and marks, `nr_sectors` otherwise.
    pub fn data_sectors(&self) -> u64 {
        if self.flags.intersects(Flags::DISCARD | Flags::MARK) {
            0
        } else {
            self.nr_sectors
        }
    }
}

/// Parses the first [`ENTRY_HEADER_LEN`] bytes of an entry's sector.
pub fn parse_entry_header(bytes: &[u8; ENTRY_HEADER_LEN]) -> EntryHeader {
    EntryHeader {
        sector: le64(bytes, 0),
        nr_sectors: le64(bytes, 8),
        flags: Flags(le64(bytes, 16)),
        data_len: le64(bytes, 24),
    }
}

/// Encodes an entry header (for tests and for [`crate::LogBuilder`]).
pub fn encode_entry_header(h: &EntryHeader) -> [u8; ENTRY_HEADER_LEN] {
    let mut b = [0; ENTRY_HEADER_LEN];
    b[0..8].copy_from_slice(&h.sector.to_le_bytes());
    b[8..16].copy_from_slice(&h.nr_sectors.to_le_bytes());
    b[16..24].copy_from_slice(&h.flags.0.to_le_bytes());
    b[24..32].copy_from_slice(&h.data_len.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The super block of a log QEMU 7.2 wrote (`log-sector-size=512`, 11 entries),
    /// captured with `od`.
    const QEMU_SUPER: [u8; SUPER_LEN] = [
        0x72, 0x68, 0x73, 0x77, 0x66, 0x73, 0x6a, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0, 0, 0,
        0, 0, 0, 0, 0x00, 0x02, 0, 0,
    ];

    #[test]
    fn parses_a_super_block_qemu_wrote() {
        assert_eq!(
            parse_super(&QEMU_SUPER),
            Ok(Super {
                nr_entries: 11,
                sector_size: 512
            })
        );
        assert_eq!(
            encode_super(&Super {
                nr_entries: 11,
                sector_size: 512
            }),
            QEMU_SUPER
        );
    }

    #[test]
    fn rejects_bad_super_blocks() {
        let with = |at: usize, byte: u8| {
            let mut b = QEMU_SUPER;
            b[at] = byte;
            parse_super(&b)
        };
        assert_eq!(parse_super(&[0; SUPER_LEN]), Err(SuperProblem::Zero));
        assert_eq!(with(0, 0x73), Err(SuperProblem::Magic(0x6a736677736873)));
        assert_eq!(with(8, 2), Err(SuperProblem::Version(2)));
        // 0x201 bytes: not a power of two.
        assert_eq!(with(24, 1), Err(SuperProblem::SectorSize(0x201)));
        // 16 bytes: smaller than an entry header.
        let mut b = QEMU_SUPER;
        b[24..28].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(parse_super(&b), Err(SuperProblem::SectorSize(16)));
        b[24..28].copy_from_slice(&(1u32 << 24).to_le_bytes());
        assert_eq!(parse_super(&b), Err(SuperProblem::SectorSize(1 << 24)));
    }

    #[test]
    fn entry_headers_round_trip_and_count_their_data() {
        let table = [
            // (flags, nr_sectors, data sectors in the log)
            (Flags::empty(), 8, 8),
            (Flags::FLUSH, 0, 0),
            (Flags::FUA, 8, 8),
            (Flags::DISCARD, 128, 0),
            (Flags::MARK, 0, 0),
            (Flags::METADATA, 2, 2),
        ];
        for (flags, nr_sectors, data) in table {
            let h = EntryHeader {
                sector: 2048,
                nr_sectors,
                flags,
                data_len: 0,
            };
            assert_eq!(parse_entry_header(&encode_entry_header(&h)), h);
            assert_eq!(h.data_sectors(), data, "{flags}");
        }
    }

    #[test]
    fn flags_display() {
        assert_eq!(Flags::empty().to_string(), "-");
        assert_eq!((Flags::FLUSH | Flags::FUA).to_string(), "FLUSH|FUA");
        assert_eq!(Flags::from_bits(0x44).to_string(), "DISCARD|0x40");
        assert_eq!(Flags::from_bits(0x40).unknown(), 0x40);
    }
}
