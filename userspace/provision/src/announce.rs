//! The device's announcement on the local network: the `_atomix._tcp` DNS-SD service
//! (`atomix_api::discovery`) that systemd-resolved publishes over multicast DNS on the
//! links whose networkd file says `MulticastDNS=yes`.
//!
//! Its values change (the instance name and `provisioned` at provisioning, the build id
//! and slot with an update), so they are not in the image: the service writes
//! `/run/systemd/dnssd/atomix.dnssd` when it starts and whenever the provisioned state
//! may have changed, and only when the file's text changed does it restart resolved
//! (`systemctl restart systemd-resolved.service`; its reload keeps announcing what it had
//! read before). On a provisioned device `atomix-restore.service` writes the file before
//! resolved starts, so a boot where nothing changed restarts nothing.

use std::path::PathBuf;

use atomix_api::discovery::{Announcement, SERVICE_TYPE};

use crate::paths::Paths;
use crate::system::{Action, System};

/// The file systemd-resolved reads, relative to the root (`/run`: it lives as long as
/// the boot whose state it describes).
pub const DNSSD_FILE: &str = "run/systemd/dnssd/atomix.dnssd";

/// The interface whose MAC address names an unprovisioned device (the WAN port, as
/// printed on the board's label).
pub const NAMING_INTERFACE: &str = atomix_config::render::system::WAN_IF;

/// The unit that publishes the file.
pub const RESOLVED: &str = "systemd-resolved.service";

/// Where the naming interface's MAC address is read, under the root.
pub fn mac_path(paths: &Paths) -> PathBuf {
    paths.under(format!("sys/class/net/{NAMING_INTERFACE}/address"))
}

/// What the device announces now: the current generation's host name once provisioned,
/// else the name made from the WAN port's MAC address (when its driver has made the
/// interface); the boot record's build id and slot.
pub fn announcement(paths: &Paths, boot: Option<&boot_state::BootRecord>) -> Announcement {
    let store = atomix_config::generations::Store::new(paths.config_store());
    let current = store.current().ok().flatten();
    let hostname = current.and_then(|n| {
        std::fs::read_to_string(store.path(n).join("rendered/hostname"))
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    });
    let mac = std::fs::read_to_string(mac_path(paths)).ok();
    Announcement {
        name: Announcement::instance_name(hostname.as_deref(), mac.as_deref()),
        build_id: boot.and_then(|b| b.build_id.clone()),
        slot: boot.map(|b| b.slot.to_string()),
        provisioned: current.is_some(),
    }
}

/// Writes the announcement for resolved to read when it starts, without asking it to
/// re-read anything: what `atomix-restore.service`, ordered before resolved, does for a
/// provisioned device, so that the service finds the file as it would write it and no
/// boot restarts resolved.
pub fn write_before_resolved(paths: &Paths, a: &Announcement, port: u16) -> anyhow::Result<()> {
    use anyhow::Context as _;
    boot_state::write_atomic(&paths.under(DNSSD_FILE), dnssd_file(a, port).as_bytes())
        .with_context(|| format!("cannot announce the device as {}", a.name))
}

/// The `.dnssd` text for `a`, with the service on `port`.
pub fn dnssd_file(a: &Announcement, port: u16) -> String {
    let txt: Vec<String> = a
        .txt()
        .iter()
        .map(|(k, v)| quote_txt(&format!("{k}={v}")))
        .collect();
    format!(
        "# Written by atomix-provision when it starts and when the device's provisioned\n\
         # state changes; systemd-resolved announces it over multicast DNS.\n\
         [Service]\n\
         Name={}\n\
         Type={SERVICE_TYPE}\n\
         Port={port}\n\
         TxtText={}\n",
        a.name.replace('%', "%%"),
        txt.join(" ")
    )
}

/// One `TxtText=` word: double-quoted, with `\` and `"` C-escaped (resolved splits the
/// value into words with unquoting and C unescaping; it expands no specifiers there).
fn quote_txt(word: &str) -> String {
    let mut s = String::with_capacity(word.len() + 2);
    s.push('"');
    for c in word.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// What happened to the announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announced {
    /// The file already said this: nothing done.
    Unchanged,
    /// Written, and resolved asked to re-read it.
    Updated,
}

/// Writes the announcement (crash-safe: temp file, fsync, rename, fsync of the
/// directory) when its text differs from the file's, then has resolved re-read it. When
/// resolved does not take it, the file is removed again, so that the next call writes it
/// and asks again rather than finding it unchanged.
pub fn announce(
    paths: &Paths,
    system: &dyn System,
    a: &Announcement,
    port: u16,
) -> anyhow::Result<Announced> {
    use anyhow::Context as _;
    let path = paths.under(DNSSD_FILE);
    let text = dnssd_file(a, port);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(Announced::Unchanged);
    }
    boot_state::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot announce the device as {}", a.name))?;
    // A restart, not a reload: resolved 257's reload (SIGHUP) reads the file again but
    // keeps announcing the service it had read before, so an unprovisioned name stayed
    // announced beside the host name (seen in the discovery test).
    if let Err(e) = system.run(&Action::systemctl(&["restart", RESOLVED])) {
        let _ = std::fs::remove_file(&path);
        return Err(e).context("systemd-resolved did not take the new announcement");
    }
    Ok(Announced::Updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::FakeSystem;

    fn unprovisioned() -> Announcement {
        Announcement {
            name: "atomixos-0001".into(),
            build_id: Some("2026.11.1".into()),
            slot: Some("a".into()),
            provisioned: false,
        }
    }

    #[test]
    fn the_dnssd_file_as_written() {
        assert_eq!(
            dnssd_file(&unprovisioned(), 8080),
            "# Written by atomix-provision when it starts and when the device's provisioned\n\
             # state changes; systemd-resolved announces it over multicast DNS.\n\
             [Service]\n\
             Name=atomixos-0001\n\
             Type=_atomix._tcp\n\
             Port=8080\n\
             TxtText=\"build_id=2026.11.1\" \"slot=a\" \"provisioned=false\" \"name=atomixos-0001\"\n"
        );
    }

    #[test]
    fn odd_values_are_quoted_for_resolved() {
        let a = Announcement {
            name: "100%".into(),
            build_id: Some("dev \"x\" \\y".into()),
            slot: None,
            provisioned: true,
        };
        let text = dnssd_file(&a, 9000);
        assert!(text.contains("\nName=100%%\n"), "{text}");
        assert!(text.contains("\nPort=9000\n"), "{text}");
        assert!(
            text.contains(
                "\nTxtText=\"build_id=dev \\\"x\\\" \\\\y\" \"provisioned=true\" \"name=100%\"\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn written_once_and_resolved_reloaded_only_on_change() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        let system = FakeSystem::default();
        let a = unprovisioned();

        assert_eq!(
            announce(&paths, &system, &a, 8080).unwrap(),
            Announced::Updated
        );
        let file = root.path().join(DNSSD_FILE);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            dnssd_file(&a, 8080)
        );
        let reload = Action::systemctl(&["restart", "systemd-resolved.service"]);
        assert_eq!(system.commands(), [reload.to_string()]);

        assert_eq!(
            announce(&paths, &system, &a, 8080).unwrap(),
            Announced::Unchanged
        );
        assert_eq!(system.commands().len(), 1, "no reload for the same text");

        let provisioned = Announcement {
            name: "edge-7".into(),
            provisioned: true,
            ..a
        };
        assert_eq!(
            announce(&paths, &system, &provisioned, 8080).unwrap(),
            Announced::Updated
        );
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("\nName=edge-7\n"));
        assert_eq!(system.commands(), [reload.to_string(), reload.to_string()]);
        // Nothing but the file is left in the directory (no temporary file).
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["atomix.dnssd"]);
    }

    #[test]
    fn a_failed_reload_is_an_error_and_is_tried_again_next_time() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        let failing = FakeSystem::failing_on("systemd-resolved");
        let err = announce(&paths, &failing, &unprovisioned(), 8080).unwrap_err();
        assert!(format!("{err:#}").contains("systemd-resolved"), "{err:#}");
        assert!(!root.path().join(DNSSD_FILE).exists());
        *failing.fail_on.lock().unwrap() = None;
        assert_eq!(
            announce(&paths, &failing, &unprovisioned(), 8080).unwrap(),
            Announced::Updated
        );
        assert_eq!(failing.commands().len(), 2, "asked again");
    }
}
