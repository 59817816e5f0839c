//! The device's serial console: one log file per boot, and waiting for text on it.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Device;

impl Device {
    /// The serial log of boot `n` (1-based).
    pub fn serial_log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("serial-{n}.log"))
    }

    /// The console text of the current boot so far.
    pub fn console(&self) -> String {
        fs::read_to_string(self.serial_log(self.boots)).unwrap_or_default()
    }

    /// Waits until the console of this boot shows `needle`; returns the console text.
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> String {
        self.step(&format!("waiting for console: {needle:?}"));
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if text.contains(needle) {
                return text;
            }
            if self.exited() {
                panic!("QEMU exited before the console showed {needle:?}");
            }
            if Instant::now() > deadline {
                panic!(
                    "no {needle:?} on the console within {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
