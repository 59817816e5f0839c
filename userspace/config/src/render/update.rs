//! The RAUC update timer, rendered only with `update.rauc = true`:
//! `atomix-update.timer` starts `atomix-update.service`, which runs
//! `atomix-provision update-install <update.url>`: `rauc install` of the bundle unless
//! its build runs already or sits in the other slot (RAUC writes the other slot; it
//! boots next time).

use super::quadlet::{quote_word, UnitFile};
use super::{header, RenderedTree};
use crate::schema::Config;
use crate::values::systemd_timespan;

/// Where the timer is in the rendered tree (the service is next to it).
pub const TIMER: &str = "systemd/atomix-update.timer";
pub const SERVICE: &str = "systemd/atomix-update.service";
/// The timer unit's name, as `systemctl` wants it.
pub const TIMER_UNIT: &str = "atomix-update.timer";

/// The first run after boot: late enough that the network (and a re-applied config) is
/// up, early enough that a device rebooted to fix something gets its update soon.
pub const BOOT_DELAY_SECS: u64 = 5 * 60;
/// The longest an install may take (a few hundred MiB over a slow link, then the writes).
pub const INSTALL_TIMEOUT_SECS: u64 = 2 * 60 * 60;
/// Each run is delayed by a random part of interval / this, so a fleet powered on
/// together does not download together.
pub const SPREAD_DIVISOR: u64 = 10;

/// The timer and its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateTimer {
    pub url: String,
    pub interval_secs: u64,
}

impl UpdateTimer {
    /// The timer a config asks for: none unless `update.rauc` (validation guarantees a URL then).
    pub fn from_config(c: &Config) -> Option<UpdateTimer> {
        if !c.update.timer() {
            return None;
        }
        Some(UpdateTimer {
            url: c.update.url.as_ref()?.get_ref().to_string(),
            interval_secs: c.update.interval.get_ref().secs(),
        })
    }

    pub fn timer(&self) -> UnitFile {
        UnitFile {
            sections: vec![
                (
                    "Unit",
                    vec![(
                        "Description",
                        "Install the AtomixOS update bundle periodically".to_owned(),
                    )],
                ),
                (
                    "Timer",
                    vec![
                        ("OnBootSec", systemd_timespan(BOOT_DELAY_SECS)),
                        ("OnUnitActiveSec", systemd_timespan(self.interval_secs)),
                        (
                            "RandomizedDelaySec",
                            systemd_timespan(self.interval_secs / SPREAD_DIVISOR),
                        ),
                    ],
                ),
                ("Install", vec![("WantedBy", "timers.target".to_owned())]),
            ],
        }
    }

    pub fn service(&self) -> UnitFile {
        UnitFile {
            sections: vec![
                (
                    "Unit",
                    vec![
                        (
                            "Description",
                            "Install the AtomixOS update bundle from update.url".to_owned(),
                        ),
                        ("Wants", "network-online.target".to_owned()),
                        ("After", "network-online.target".to_owned()),
                    ],
                ),
                (
                    "Service",
                    vec![
                        ("Type", "oneshot".to_owned()),
                        // A stalled download must not block every later run until reboot.
                        ("TimeoutStartSec", systemd_timespan(INSTALL_TIMEOUT_SECS)),
                        (
                            "ExecStart",
                            format!(
                                "/usr/bin/atomix-provision update-install {}",
                                quote_word(&self.url, true)
                            ),
                        ),
                    ],
                ),
            ],
        }
    }
}

pub(super) fn render_into(config: &Config, sha256: &str, tree: &mut RenderedTree) {
    if let Some(t) = UpdateTimer::from_config(config) {
        let head = header(sha256);
        tree.add(TIMER, t.timer().to_text(&head));
        tree.add(SERVICE, t.service().to_text(&head));
    }
}

#[cfg(test)]
mod tests {
    use crate::render::render;

    const BASE: &str = "schema = 1\n[device]\nhostname = \"h\"\n[admin]\nssh-authorized-keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop\"]\n[network.lan]\naddress = \"192.168.100.1/24\"\n";

    fn rendered(update: &str) -> crate::render::RenderedTree {
        let text = format!("{BASE}{update}");
        let checked = crate::check("config.toml", &text);
        let config = checked
            .config
            .unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
        render(&config, "SHA")
    }

    #[test]
    fn the_timer_and_service_as_rendered() {
        let tree = rendered(
            "[update]\nrauc = true\nurl = \"https://updates.example.com/rock64.raucb\"\ninterval = \"6h\"\n",
        );
        let head = crate::render::header("SHA");
        assert_eq!(
            tree.get(super::TIMER).unwrap(),
            format!(
                "{head}
[Unit]
Description=Install the AtomixOS update bundle periodically

[Timer]
OnBootSec=5min
OnUnitActiveSec=6h
RandomizedDelaySec=36min

[Install]
WantedBy=timers.target
"
            )
        );
        assert_eq!(
            tree.get(super::SERVICE).unwrap(),
            format!(
                "{head}
[Unit]
Description=Install the AtomixOS update bundle from update.url
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
TimeoutStartSec=2h
ExecStart=/usr/bin/atomix-provision update-install https://updates.example.com/rock64.raucb
"
            )
        );
    }

    #[test]
    fn the_default_interval_and_a_url_that_needs_quoting() {
        let tree = rendered(
            "[update]\nrauc = true\nurl = \"https://u.example/b.raucb?token=a%20b&x=$HOME;\\\"\"\n",
        );
        let timer = tree.get(super::TIMER).unwrap();
        assert!(
            timer.contains("\nOnUnitActiveSec=1d\nRandomizedDelaySec=2h 24min\n"),
            "{timer}"
        );
        let service = tree.get(super::SERVICE).unwrap();
        assert!(
            service.contains(
                "\nExecStart=/usr/bin/atomix-provision update-install \"https://u.example/b.raucb?token=a%%20b&x=$$HOME;\\\"\"\n"
            ),
            "{service}"
        );
    }

    #[test]
    fn nothing_without_rauc() {
        for update in [
            "",
            "[update]\nrauc = false\nurl = \"https://u.example/b.raucb\"\n",
        ] {
            let tree = rendered(update);
            assert!(
                !tree.files.keys().any(|k| k.starts_with("systemd/")),
                "{update}"
            );
        }
    }
}
