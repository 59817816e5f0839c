//! A block written by Debian's U-Boot 2025.01 (qemu_arm64) with
//! `env export -c -s 0x1000 ADDR BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT` after
//! `setenv BOOT_A_LEFT 0; setexpr BOOT_B_LEFT a - 1; setenv BOOT_ORDER "B A"`: the CRC
//! and layout are U-Boot's, so it passes the CRC check and fails only on the value 9,
//! which AtomixOS never writes.

use slot_state::{SlotState, StateError, BLOCK_SIZE};

#[test]
fn a_block_written_by_uboot_passes_the_crc_and_is_read_entry_by_entry() {
    let block = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/uboot-2025.01-env-export-c.bin"
    ))
    .unwrap();
    assert_eq!(block.len(), BLOCK_SIZE);
    assert_eq!(
        SlotState::parse_block(&block),
        Err(StateError::Value {
            name: "BOOT_B_LEFT",
            value: "9".into(),
            why: "tries left are 0 to 3",
        })
    );
    // The same entries with an allowed value, laid out by this crate, match U-Boot's
    // bytes except for the value and the CRC.
    let ours = SlotState {
        order: vec![slot_state::Slot::B, slot_state::Slot::A],
        left: [0, 3],
    }
    .to_block();
    let differing: Vec<usize> = (0..BLOCK_SIZE).filter(|i| ours[*i] != block[*i]).collect();
    let value_at = 4 + "BOOT_A_LEFT=0\0BOOT_B_LEFT=".len();
    assert!(
        differing.iter().all(|i| *i < 4 || *i == value_at),
        "{differing:?}"
    );
}
