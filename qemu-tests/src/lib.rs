//! The harness of the QEMU boot tests: boots the flashable image built by
//! `scripts/build-image.sh` (never a special test image) through U-Boot in
//! `qemu-system-aarch64`, each test on its own copy-on-write overlay with its own forwarded
//! ports, and checks what a user would see: the serial console, the API, the disk.
//!
//! Artifacts (serial logs of every boot, the overlay) stay in `target/qemu-tests/<test>/`.
//! When a test fails, the step it was at and the tail of the console are printed.
//!
//! The harness by concern: [`image`] (the build output under test), [`device`] (one
//! emulated board: its disk, boots, console, boot partition, USB stick, power and SSH),
//! [`api`] (the device's HTTP API as a client: health, signed requests, jobs), [`qmp`]
//! (QEMU's machine protocol: buttons and events), [`lan`] (a real LAN segment in a
//! network namespace, for multicast DNS), [`keys`] and [`config`] (what a test
//! provisions a device with), [`host`](mod@host) (commands on the host), [`crash`] (the
//! first boot recorded write by write, replayed and judged at every flush), [`updates`]
//! (update bundles and a server streaming them), [`update_server`] (goosebit, a hawkBit
//! DDI server, and its operator API).

pub mod api;
pub mod config;
pub mod crash;
pub mod device;
pub mod host;
pub mod image;
pub mod keys;
pub mod lan;
pub mod oci;
pub mod qmp;
pub mod update_server;
pub mod updates;

pub use config::test_config;
pub use device::{Device, DISK_SIZE};
pub use host::host;
pub use image::{Image, BOOT_A_OFFSET, SECTOR};
pub use keys::{public_key, test_key};
pub use qmp::Qmp;
