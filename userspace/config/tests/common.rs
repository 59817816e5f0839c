//! Shared by the integration tests: a minimal valid config to vary.
#![allow(dead_code)]

pub const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop";

/// A valid config of 9 lines; `extra` is appended from line 10 on.
pub fn minimal(extra: &str) -> String {
    format!(
        "schema = 1\n\
         [device]\n\
         hostname = \"edge-042\"\n\
         [admin]\n\
         ssh-authorized-keys = [\"{KEY}\"]\n\
         [network.lan]\n\
         address = \"192.168.100.1/24\"\n\
         dhcp-range = {{ start = \"192.168.100.50\", end = \"192.168.100.150\" }}\n\
         # line 9\n\
         {extra}"
    )
}
