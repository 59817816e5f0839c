//! The A/B slot state of an AtomixOS disk, shared by U-Boot's `boot.scr` and Linux.
//!
//! Three variables, as RAUC's U-Boot integration names them: `BOOT_ORDER` (`"A B"`:
//! slots by preference), `BOOT_A_LEFT` and `BOOT_B_LEFT` (boot tries left, 0 to
//! [`ATTEMPTS`]). `boot.scr` takes the first slot of the order with tries left and a
//! kernel, counts one try down and boots it; Linux marks the running slot good once
//! the device is up (tries back to [`ATTEMPTS`]), and an update makes the other slot
//! primary. A slot whose tries run out is passed over: the device falls back.
//!
//! Storage: two copies of one [`BLOCK_SIZE`] block in the bootloader area before the
//! first partition (LBAs [`COPY_LBAS`]), in the format of U-Boot's `env export -c`: a
//! little-endian CRC-32 (zlib) of the rest of the block, then sorted `name=value\0`
//! entries, an empty entry, zero padding. Writers write copy 0, flush, then copy 1,
//! flush; readers take copy 0 if its CRC holds, else copy 1, else the [factory
//! state](SlotState::factory). A power cut during either write leaves one whole copy,
//! old or new.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Where the two copies start, in 512-byte sectors (6 MiB and 6 MiB + 16 KiB): past
/// the Rock64's `idbloader.img` (sector 64), before `u-boot.itb` (sector 16384).
pub const COPY_LBAS: [u64; 2] = [0x3000, 0x3020];
/// Sector size of the LBAs.
pub const SECTOR: u64 = 512;
/// Size of one copy (`env export -c -s 0x1000`).
pub const BLOCK_SIZE: usize = 0x1000;
/// Tries a slot gets when it is made primary or marked good (RAUC's default).
pub const ATTEMPTS: u8 = 3;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The RAUC bootname (`A`, `B`).
    pub fn bootname(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// A bootname, case-insensitively (`a` is the kernel command line's `atomix.slot=`).
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" | "a" => Some(Slot::A),
            "B" | "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.bootname())
    }
}

/// Why a stored copy was not used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("the block is {0} bytes, not {BLOCK_SIZE}")]
    Size(usize),
    #[error("bad CRC (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("entry {0:?} is not name=value text")]
    Entry(String),
    #[error("{name}={value:?}: {why}")]
    Value {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{0} is missing")]
    Missing(&'static str),
}

/// The state itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Slots by preference; a slot marked bad is not in it.
    pub order: Vec<Slot>,
    /// Tries left, by [`Slot`] (`[A, B]`).
    pub left: [u8; 2],
}

impl SlotState {
    /// What `boot.scr` assumes when neither copy is valid (a fresh flash): A first, then
    /// B, full tries (B is passed over while its boot partition holds no kernel).
    pub fn factory() -> SlotState {
        SlotState {
            order: vec![Slot::A, Slot::B],
            left: [ATTEMPTS; 2],
        }
    }

    pub fn left(&self, slot: Slot) -> u8 {
        self.left[slot as usize]
    }

    fn set_left(&mut self, slot: Slot, n: u8) {
        self.left[slot as usize] = n;
    }

    /// Good, as RAUC's U-Boot backend defines it: in the order, with tries left.
    pub fn is_good(&self, slot: Slot) -> bool {
        self.order.contains(&slot) && self.left(slot) > 0
    }

    /// The slot the next boot takes (kernel presence aside): the first of the order with
    /// tries left.
    pub fn primary(&self) -> Option<Slot> {
        self.order.iter().copied().find(|s| self.left(*s) > 0)
    }

    /// Makes `slot` the first choice with full tries; the other keeps its place after it.
    pub fn set_primary(&mut self, slot: Slot) {
        self.order.retain(|s| *s != slot);
        self.order.insert(0, slot);
        self.set_left(slot, ATTEMPTS);
    }

    /// Good: full tries again (order unchanged). Bad: out of the order, no tries.
    pub fn mark(&mut self, slot: Slot, good: bool) {
        if good {
            self.set_left(slot, ATTEMPTS);
        } else {
            self.order.retain(|s| *s != slot);
            self.set_left(slot, 0);
        }
    }

    /// Parses one stored copy.
    pub fn parse_block(block: &[u8]) -> Result<SlotState, StateError> {
        if block.len() != BLOCK_SIZE {
            return Err(StateError::Size(block.len()));
        }
        let stored = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        let computed = crc32fast::hash(&block[4..]);
        if stored != computed {
            return Err(StateError::Crc { stored, computed });
        }
        let mut order = None;
        let mut left: [Option<u8>; 2] = [None, None];
        for entry in block[4..].split(|b| *b == 0).take_while(|e| !e.is_empty()) {
            let text = std::str::from_utf8(entry)
                .map_err(|_| StateError::Entry(String::from_utf8_lossy(entry).into_owned()))?;
            let (name, value) = text
                .split_once('=')
                .ok_or_else(|| StateError::Entry(text.to_owned()))?;
            match name {
                "BOOT_ORDER" => order = Some(parse_order(value)?),
                "BOOT_A_LEFT" => left[0] = Some(parse_left("BOOT_A_LEFT", value)?),
                "BOOT_B_LEFT" => left[1] = Some(parse_left("BOOT_B_LEFT", value)?),
                // Other variables (none written today) are left alone.
                _ => {}
            }
        }
        Ok(SlotState {
            order: order.ok_or(StateError::Missing("BOOT_ORDER"))?,
            left: [
                left[0].ok_or(StateError::Missing("BOOT_A_LEFT"))?,
                left[1].ok_or(StateError::Missing("BOOT_B_LEFT"))?,
            ],
        })
    }

    /// One copy, byte for byte what `env export -c -s 0x1000 ADDR BOOT_ORDER BOOT_A_LEFT
    /// BOOT_B_LEFT` writes for the same values.
    pub fn to_block(&self) -> Vec<u8> {
        let order: Vec<&str> = self.order.iter().map(|s| s.bootname()).collect();
        // Sorted by name, as U-Boot exports them.
        let entries = [
            format!("BOOT_A_LEFT={:x}", self.left[0]),
            format!("BOOT_B_LEFT={:x}", self.left[1]),
            format!("BOOT_ORDER={}", order.join(" ")),
        ];
        let mut block = vec![0u8; BLOCK_SIZE];
        let mut at = 4;
        for e in &entries {
            block[at..at + e.len()].copy_from_slice(e.as_bytes());
            at += e.len() + 1;
        }
        let crc = crc32fast::hash(&block[4..]);
        block[..4].copy_from_slice(&crc.to_le_bytes());
        block
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order: Vec<&str> = self.order.iter().map(|s| s.bootname()).collect();
        write!(
            f,
            "BOOT_ORDER=\"{}\" BOOT_A_LEFT={} BOOT_B_LEFT={}",
            order.join(" "),
            self.left[0],
            self.left[1]
        )
    }
}

fn parse_order(value: &str) -> Result<Vec<Slot>, StateError> {
    let bad = |why| StateError::Value {
        name: "BOOT_ORDER",
        value: value.to_owned(),
        why,
    };
    let mut order = Vec::new();
    for word in value.split_whitespace() {
        let slot = match word {
            "A" => Slot::A,
            "B" => Slot::B,
            _ => return Err(bad("slots are A and B")),
        };
        if order.contains(&slot) {
            return Err(bad("a slot is named twice"));
        }
        order.push(slot);
    }
    Ok(order)
}

fn parse_left(name: &'static str, value: &str) -> Result<u8, StateError> {
    // Hexadecimal, as U-Boot's setexpr and RAUC's backend write it.
    match u8::from_str_radix(value, 16) {
        Ok(n) if n <= ATTEMPTS => Ok(n),
        _ => Err(StateError::Value {
            name,
            value: value.to_owned(),
            why: "tries left are 0 to 3",
        }),
    }
}

/// Which copy a state was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Copy(usize),
    /// Neither copy was valid: the factory state, with why each copy was not used.
    Factory([StateError; 2]),
}

/// The byte offset of copy `i` on the disk.
pub fn copy_offset(i: usize) -> u64 {
    COPY_LBAS[i] * SECTOR
}

/// Reads the state from a disk (or an image file): copy 0, else copy 1, else factory.
pub fn read(disk: &File) -> io::Result<(SlotState, Source)> {
    let mut errors = Vec::new();
    for i in 0..COPY_LBAS.len() {
        let mut block = vec![0u8; BLOCK_SIZE];
        disk.read_exact_at(&mut block, copy_offset(i))?;
        match SlotState::parse_block(&block) {
            Ok(state) => return Ok((state, Source::Copy(i))),
            Err(e) => errors.push(e),
        }
    }
    let [e0, e1]: [StateError; 2] = errors.try_into().expect("two copies");
    Ok((SlotState::factory(), Source::Factory([e0, e1])))
}

/// Writes both copies, in order, each flushed to the device before the next.
pub fn write(disk: &File, state: &SlotState) -> io::Result<()> {
    let block = state.to_block();
    for i in 0..COPY_LBAS.len() {
        disk.write_all_at(&block, copy_offset(i))?;
        disk.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block as U-Boot 2025.01 wrote it (`env export -c -s 0x1000`), checked against
    /// its CRC: BOOT_ORDER="B A", BOOT_A_LEFT=3, BOOT_B_LEFT=2.
    fn uboot_block() -> Vec<u8> {
        let mut block = vec![0u8; BLOCK_SIZE];
        let text = b"BOOT_A_LEFT=3\0BOOT_B_LEFT=2\0BOOT_ORDER=B A\0";
        block[4..4 + text.len()].copy_from_slice(text);
        let crc = crc32fast::hash(&block[4..]);
        block[..4].copy_from_slice(&crc.to_le_bytes());
        block
    }

    #[test]
    fn round_trip_and_the_uboot_layout() {
        let state = SlotState::parse_block(&uboot_block()).unwrap();
        assert_eq!(
            state,
            SlotState {
                order: vec![Slot::B, Slot::A],
                left: [3, 2]
            }
        );
        assert_eq!(state.to_block(), uboot_block());
        assert_eq!(
            state.to_string(),
            "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=2"
        );
    }

    #[test]
    fn refuses_bad_blocks_with_the_reason() {
        let mut torn = uboot_block();
        torn[20] ^= 1;
        assert!(matches!(
            SlotState::parse_block(&torn),
            Err(StateError::Crc { .. })
        ));
        assert_eq!(
            SlotState::parse_block(&[0xff; 16]),
            Err(StateError::Size(16))
        );
        let with = |text: &[u8]| {
            let mut block = vec![0u8; BLOCK_SIZE];
            block[4..4 + text.len()].copy_from_slice(text);
            let crc = crc32fast::hash(&block[4..]);
            block[..4].copy_from_slice(&crc.to_le_bytes());
            SlotState::parse_block(&block)
        };
        assert_eq!(
            with(b"BOOT_A_LEFT=3\0BOOT_B_LEFT=9\0BOOT_ORDER=A B\0")
                .unwrap_err()
                .to_string(),
            "BOOT_B_LEFT=\"9\": tries left are 0 to 3"
        );
        assert_eq!(
            with(b"BOOT_A_LEFT=3\0BOOT_B_LEFT=1\0BOOT_ORDER=A C\0")
                .unwrap_err()
                .to_string(),
            "BOOT_ORDER=\"A C\": slots are A and B"
        );
        assert_eq!(
            with(b"BOOT_A_LEFT=3\0BOOT_ORDER=A\0").unwrap_err(),
            StateError::Missing("BOOT_B_LEFT")
        );
        // An empty order is valid: both slots marked bad.
        assert_eq!(
            with(b"BOOT_A_LEFT=0\0BOOT_B_LEFT=0\0BOOT_ORDER=\0")
                .unwrap()
                .order,
            vec![]
        );
    }

    #[test]
    fn rauc_operations_follow_the_uboot_backend() {
        let mut s = SlotState::factory();
        assert_eq!(s.primary(), Some(Slot::A));
        // An install to B: B marked bad while written, then made primary.
        s.mark(Slot::B, false);
        assert_eq!((s.order.clone(), s.left), (vec![Slot::A], [3, 0]));
        s.set_primary(Slot::B);
        assert_eq!((s.order.clone(), s.left), (vec![Slot::B, Slot::A], [3, 3]));
        assert_eq!(s.primary(), Some(Slot::B));
        // B's tries used up by boots that never marked it good: A is next.
        s.left = [3, 0];
        assert!(!s.is_good(Slot::B));
        assert!(s.is_good(Slot::A));
        assert_eq!(s.primary(), Some(Slot::A));
        s.mark(Slot::A, true);
        assert_eq!(s.left, [3, 0]);
        s.mark(Slot::A, false);
        assert_eq!(s.primary(), None);
    }

    #[test]
    fn copy_zero_wins_copy_one_covers_a_torn_write_factory_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let disk = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        disk.set_len(8 << 20).unwrap();
        let (state, source) = read(&disk).unwrap();
        assert_eq!(state, SlotState::factory());
        assert!(matches!(source, Source::Factory(_)));

        let mut next = SlotState::factory();
        next.set_primary(Slot::B);
        write(&disk, &next).unwrap();
        assert_eq!(read(&disk).unwrap(), (next.clone(), Source::Copy(0)));

        // A cut while copy 0 was half written: copy 1 still holds the last whole state.
        let mut torn = SlotState::factory().to_block();
        torn[BLOCK_SIZE / 2..].fill(0xff);
        disk.write_all_at(&torn, copy_offset(0)).unwrap();
        assert_eq!(read(&disk).unwrap(), (next, Source::Copy(1)));
        // Nothing outside the two blocks is touched.
        let mut before = vec![0u8; 512];
        disk.read_exact_at(&mut before, copy_offset(0) - 512)
            .unwrap();
        assert!(before.iter().all(|b| *b == 0));
    }
}
