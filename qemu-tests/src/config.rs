//! The `config.toml` the tests provision a device with.

use std::path::Path;

use crate::public_key;

/// A config.toml for tests: the admin key, SSH allowed on WAN (the harness's way in),
/// the LAN defaults.
pub fn test_config(hostname: &str, admin_key: &Path) -> String {
    format!(
        r#"schema = 1

[device]
hostname = "{hostname}"

[admin]
ssh-authorized-keys = ["{key}"]

[network.lan]
address = "192.168.100.1/24"
dhcp-range = {{ start = "192.168.100.50", end = "192.168.100.150", lease = "12h" }}

[[firewall.allow]]
zone = "wan"
proto = "tcp"
port = 22
"#,
        key = public_key(admin_key)
    )
}
