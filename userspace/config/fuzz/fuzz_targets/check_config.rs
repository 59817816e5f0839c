//! Parse + validate + render of arbitrary config.toml text: never a panic; a config that
//! validates always renders, and renders the same bytes twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = atomix_config::check("config.toml", text);
    if let Some(config) = checked.config.as_ref() {
        let sha = atomix_config::config_sha256(text);
        let first = atomix_config::render::render(config, &sha);
        let second = atomix_config::render::render(config, &sha);
        assert!(first == second, "rendering is not canonical");
    }
});
