//! Bundle reading of arbitrary bytes (tar or gzip): never a panic, limits always held.
#![no_main]

use atomix_config::bundle::{read_bundle, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(bundle) = read_bundle(data, limits) {
        assert!(bundle.config.len() as u64 <= limits.config_bytes);
    }
});
