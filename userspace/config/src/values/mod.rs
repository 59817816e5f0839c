//! The value types of config.toml fields that carry more than a plain string: each is
//! parsed once (`FromStr`, used by serde through `try_from`), so a value that exists is
//! valid, and the error text is what the operator sees after the key's position.
//!
//! | module | holds |
//! |---|---|
//! | [`names`] | Names: host names, NTP servers, time zones, container names |
//! | [`network`] | Network values: addresses with prefixes, ports and published ports, DHCP lease times |
//! | [`containers`] | What containers mount and run: volume mounts under `/data/apps`, image references |
//! | [`ssh`] | The admin user's SSH public keys |
//! | [`update`] | Update values: the timer's bundle URL and interval; the hawkBit server's tenant, controller id and token file |

/// Declares serde (de)serialisation through `FromStr`/`Display` for a string-valued type.
macro_rules! string_value {
    ($ty:ty) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.to_string()
            }
        }
    };
}

mod containers;
mod names;
mod network;
mod ssh;
mod update;

pub use containers::*;
pub use names::*;
pub use network::*;
pub use ssh::*;
pub use update::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["edge-042", "a", "a.b-c.d", &"x".repeat(63)] {
            assert!(ok.parse::<Hostname>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a..b", "é", &"x".repeat(64), "a b"] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references() {
        for ok in [
            "ghcr.io/acme/web:1.4.2",
            "nginx",
            "docker.io/library/nginx:latest",
            "localhost:5000/a/b",
            "registry.example.com:443/x__y/z-w.v@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "quay.io/podman/hello:v1_2-3",
            "oci-archive:/data/apps/hello/hello-1.0.tar",
            "oci-archive:/data/apps/Hello_2.tar",
        ] {
            assert!(ok.parse::<ImageRef>().is_ok(), "{ok}");
        }
        let archive: ImageRef = "oci-archive:/data/apps/hello/image.tar".parse().unwrap();
        assert_eq!(
            archive.bundle_archive().as_deref(),
            Some("apps/hello/image.tar")
        );
        assert_eq!("nginx".parse::<ImageRef>().unwrap().bundle_archive(), None);
        for bad in [
            "",
            "upper/Case",
            "a//b",
            "a:",
            "a:-tag",
            "ghcr.io/Acme/web",
            "a@sha256:zz",
            "-a",
            "a/b_",
            "a b",
            "oci-archive:/tmp/x.tar",
            "oci-archive:/data/apps/../etc/x.tar",
            "oci-archive:/data/apps/a/./x.tar",
            "oci-archive:/data/apps//x.tar",
            "oci-archive:/data/apps/x.tar.gz",
            "oci-archive:/data/appsx/x.tar",
            "oci-archive:/data/apps/a b.tar",
            "oci-archive:data/apps/x.tar",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn publish_and_ports() {
        let p: Publish = "443:8443/tcp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (443, 8443, Proto::Tcp)
        );
        let p: Publish = "127.0.0.1:53:5353/udp".parse().unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:53:5353/udp");
        for bad in ["443", "0:1", "1:2/sctp", "a:1", "1:2:3:4", "1:70000"] {
            assert!(bad.parse::<Publish>().is_err(), "{bad}");
        }
        assert_eq!(
            "8000-8100".parse::<PortSpec>().unwrap(),
            PortSpec {
                first: 8000,
                last: 8100
            }
        );
        for bad in ["0", "9-8", "x", "1-", "+5"] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let cases: &[(&str, Result<VolumeSource, &str>)] = &[
            (
                "web-data:/var/lib/web",
                Ok(VolumeSource::Named("web-data".into())),
            ),
            (
                "/data/apps/web:/srv:ro",
                Ok(VolumeSource::HostPath("/data/apps/web".into())),
            ),
            (
                "/data/apps:/srv",
                Ok(VolumeSource::HostPath("/data/apps".into())),
            ),
            ("/data/appsx:/srv", Err("outside /data/apps")),
            ("/data/apps/../etc:/srv", Err("outside /data/apps")),
            ("/etc:/srv", Err("outside /data/apps")),
            ("web:relative", Err("clean absolute path")),
            ("web:/srv:rx", Err("unknown volume option")),
            ("-web:/srv", Err("neither a volume name")),
        ];
        for (input, expected) in cases {
            match (input.parse::<VolumeMount>(), expected) {
                (Ok(v), Ok(src)) => assert_eq!(&v.source, src, "{input}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn networks() {
        let lan: Ipv4Net = "192.168.100.1/24".parse().unwrap();
        assert_eq!(lan.network().to_string(), "192.168.100.0/24");
        assert!(lan.contains("192.168.100.200".parse().unwrap()));
        assert!(!lan.contains("192.168.1.5".parse().unwrap()));
        assert!(lan.overlaps("192.168.0.0/16".parse().unwrap()));
        assert!(!lan.overlaps("10.0.0.1/8".parse().unwrap()));
        for bad in [
            "192.168.1.1",
            "192.168.1.1/33",
            "1.2.3/8",
            "1.2.3.4/",
            "1.2.3.4/+1",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_keys_and_small_values() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop";
        assert!(key.parse::<SshPublicKey>().is_ok());
        assert!(
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V"
                .parse::<SshPublicKey>()
                .is_err()
        );
        assert!("ssh-ed25519 not-base64!".parse::<SshPublicKey>().is_err());
        assert!("Europe/Berlin".parse::<Timezone>().is_ok());
        assert!("Mars/Olympus".parse::<Timezone>().is_err());
        for ok in ["12h", "45m", "3600", "infinite", "1w"] {
            assert!(ok.parse::<LeaseTime>().is_ok(), "{ok}");
        }
        for bad in ["", "h", "12hh", "-1", "1y"] {
            assert!(bad.parse::<LeaseTime>().is_err(), "{bad}");
        }
        assert!("https://updates.example.com/x.raucb"
            .parse::<UpdateUrl>()
            .is_ok());
        assert!("ftp://x".parse::<UpdateUrl>().is_err());
    }

    #[test]
    fn hawkbit_values() {
        for ok in ["DEFAULT", "acme-prod", "a", "t_1.x", &"t".repeat(64)] {
            assert!(ok.parse::<Tenant>().is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "..", "é", "a?b", &"t".repeat(65)] {
            assert!(bad.parse::<Tenant>().is_err(), "{bad}");
        }
        for ok in [
            "edge-042",
            "edge-042.example.com",
            "E_1",
            "7",
            &"x".repeat(253),
        ] {
            assert!(ok.parse::<ControllerId>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", ".a", "a/b", "a b", "a%20", &"x".repeat(254)] {
            assert!(bad.parse::<ControllerId>().is_err(), "{bad}");
        }
        for ok in ["/data/apps/hawkbit/token", "/data/t", "/data/a b/c.token"] {
            assert!(ok.parse::<TokenFile>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "token",
            "/data",
            "/data/",
            "/etc/hawkbit-token",
            "/data/apps/../../etc/shadow",
            "/data/./t",
            "/data//t",
            "/data/t/",
            "/datax/t",
            "/data/t\nx",
        ] {
            assert!(bad.parse::<TokenFile>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn update_intervals() {
        /// Seconds and systemd's spelling, or the error.
        type Want = Result<(u64, &'static str), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("24h", Ok((86400, "1d"))),
            ("6h", Ok((21600, "6h"))),
            ("90min", Ok((5400, "1h 30min"))),
            ("1d 12h", Ok((129600, "1d 12h"))),
            ("5m", Ok((300, "5min"))),
            ("1h 0m 30s", Ok((3630, "1h 30s"))),
            ("365d", Ok((31536000, "365d"))),
            (
                "4min 59s",
                Err("\"4min 59s\" is shorter than the minimum of 5min"),
            ),
            ("366d", Err("\"366d\" is longer than the maximum of 365d")),
            ("10min 500ms", Err("\"10min 500ms\": give whole seconds")),
            (
                "3600",
                Err("\"3600\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""),
            ),
            (
                "",
                Err("\"\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""),
            ),
            (
                "6 parsecs",
                Err("\"6 parsecs\" is not a duration like \"6h\", \"90min\" or \"1d 12h\""),
            ),
        ];
        for (input, want) in cases {
            match (input.parse::<UpdateInterval>(), want) {
                (Ok(i), Ok((secs, systemd))) => {
                    assert_eq!(
                        (i.secs(), i.systemd().as_str()),
                        (*secs, *systemd),
                        "{input}"
                    );
                    assert_eq!(i.to_string(), *input, "shown as written");
                }
                (Err(e), Err(msg)) => assert_eq!(e, *msg, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let default = UpdateInterval::default();
        assert_eq!(
            (default.secs(), default.to_string()),
            (86400, "24h".to_owned())
        );
        assert_eq!(systemd_timespan(0), "0s");
        assert_eq!(systemd_timespan(90061), "1d 1h 1min 1s");
    }
}
