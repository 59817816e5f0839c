//! The NBD device of a streamed RAUC bundle, kept alive through udev's probing of it
//! (`atomix-provision nbd-hold`, run by `60-atomix-nbd-hold.rules`).
//!
//! RAUC 1.13 (the one Debian 13 ships) streams `rauc install|mount URL` through an NBD
//! device it connects over netlink with `NBD_CFLAG_DISCONNECT_ON_CLOSE`, then opens it
//! only when it loads the dm-verity table on top of it (`mount_bundle()` →
//! `r_nbd_setup_device()` → `prepare_verity()` → `r_dm_setup()`). With that flag the
//! kernel disconnects the device at its *last close* (`nbd_release()`:
//! `disk_openers(disk) == 0` → `nbd_disconnect_and_put()`), and the teardown that
//! follows sets its capacity to 0 (`nbd_config_put()` → `invalidate_disk()`).
//!
//! The connect announces the device's new size with a change uevent, and every udev
//! worker opens a block device's whole disk for the event (the shared `flock` of
//! `worker_lock_whole_disk()`, then `blkid`) and closes it when the event is done. When
//! that close comes after the connect but before dm-verity opened the device, it is the
//! last close: the device is disconnected under RAUC, and `verity_ctr()` finds the hash
//! area beyond its (now zero) size: "Hash device is too small", `-E2BIG`, which RAUC
//! reports as `Failed to load dm table: Argument list too long`. Usually RAUC wins by
//! milliseconds; now and then udev does, and the install fails. (RAUC 1.15 keeps its own
//! descriptor open across the setup instead.)
//!
//! The fix is an ordering, not a retry: udev runs this for each NBD event while its
//! worker still holds the device open, and it returns only once the device no longer
//! needs udev's reference: something holds it (`holders/`: dm-verity has opened it), it
//! is not connected, or the task that connected it is gone (RAUC gave up; closing then
//! lets the kernel clean up as designed). While udev's worker holds the device, it
//! cannot go from unconnected to connected (`nbd_genl_connect()` skips a device with a
//! config reference), so one reading of "not connected" is final.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long udev's reference is kept at most: far above RAUC's milliseconds from the
/// connect to the table load, well below udev's 180 s event timeout.
pub const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// How often the device is looked at while held.
pub const POLL: Duration = Duration::from_millis(20);

/// The whole disk of an NBD kernel name: `nbd3` and `nbd3p1` → `nbd3`.
pub fn whole_disk(name: &str) -> Option<&str> {
    let digits = name.strip_prefix("nbd")?;
    let (index, part) = match digits.split_once('p') {
        Some((index, part)) => (index, Some(part)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(index) || part.is_some_and(|p| !all_digits(p)) {
        return None;
    }
    Some(&name[..3 + index.len()])
}

/// What sysfs and procfs say about one NBD device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The task that connected it (`/sys/block/nbdN/pid`); `None`: not connected.
    pub connector: Option<u32>,
    /// Whether that task still exists (`/proc/<pid>`; a thread id works too).
    pub connector_alive: bool,
    /// Devices stacked on it (`/sys/block/nbdN/holders/`), e.g. `dm-0`.
    pub holders: Vec<String>,
}

/// Why udev's reference may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Not connected: nothing to keep.
    NotConnected,
    /// Held by these devices: udev's close is not the last one.
    Claimed(Vec<String>),
    /// The connecting task is gone without stacking anything on it.
    ConnectorGone(u32),
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Release::NotConnected => write!(f, "it is not connected"),
            Release::Claimed(by) => write!(f, "{} holds it", by.join(", ")),
            Release::ConnectorGone(pid) => write!(f, "task {pid}, which connected it, is gone"),
        }
    }
}

/// Keep udev's reference (`None`) or let it go. A connected device whose size still
/// reads 0 is held: the connect creates `pid` before it sets the size, and the
/// disconnect-on-close flag is already set by then.
pub fn decide(facts: &Facts) -> Option<Release> {
    let Some(pid) = facts.connector else {
        return Some(Release::NotConnected);
    };
    if !facts.holders.is_empty() {
        return Some(Release::Claimed(facts.holders.clone()));
    }
    if !facts.connector_alive {
        return Some(Release::ConnectorGone(pid));
    }
    None
}

/// Reads the facts of `disk` (e.g. `nbd0`) under `root` (`sys/block/...`, `proc/...`).
/// A device that vanishes reads as not connected.
pub fn read_facts(root: &Path, disk: &str) -> Facts {
    let dev = root.join("sys/block").join(disk);
    let read = |name: &str| std::fs::read_to_string(dev.join(name)).ok();
    let connector = read("pid").and_then(|s| s.trim().parse::<u32>().ok());
    let connector_alive =
        connector.is_some_and(|pid| root.join("proc").join(pid.to_string()).exists());
    let mut holders: Vec<String> = std::fs::read_dir(dev.join("holders"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    holders.sort();
    Facts {
        connector,
        connector_alive,
        holders,
    }
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `None`: the limit ran out with the device still connected and unclaimed.
    pub release: Option<Release>,
    /// How long the device was held.
    pub waited: Duration,
    /// Whether it was held at all (not released at the first look).
    pub held: bool,
}

/// Waits until [`decide`] lets `disk` go, at most `limit`.
pub fn hold(root: &Path, disk: &str, limit: Duration, poll: Duration) -> Held {
    let started = Instant::now();
    let mut held = false;
    loop {
        if let Some(release) = decide(&read_facts(root, disk)) {
            return Held {
                release: Some(release),
                waited: started.elapsed(),
                held,
            };
        }
        if started.elapsed() >= limit {
            return Held {
                release: None,
                waited: started.elapsed(),
                held: true,
            };
        }
        held = true;
        std::thread::sleep(poll);
    }
}

/// `sys/block/<disk>` under `root`, for messages.
pub fn sys_dir(root: &Path, disk: &str) -> PathBuf {
    root.join("sys/block").join(disk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_disks_of_nbd_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("nbd0", Some("nbd0")),
            ("nbd15", Some("nbd15")),
            ("nbd3p1", Some("nbd3")),
            ("nbd12p10", Some("nbd12")),
            ("nbd", None),
            ("nbdp1", None),
            ("nbd3p", None),
            ("nbd3x", None),
            ("sda", None),
            ("loop0", None),
        ];
        for (name, want) in cases {
            assert_eq!(whole_disk(name), *want, "{name}");
        }
    }

    fn facts(connector: Option<u32>, alive: bool, holders: &[&str]) -> Facts {
        Facts {
            connector,
            connector_alive: alive,
            holders: holders.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn holds_only_a_connected_unclaimed_device_whose_connector_lives() {
        let cases: &[(Facts, Option<Release>)] = &[
            (facts(None, false, &[]), Some(Release::NotConnected)),
            (facts(None, true, &["dm-0"]), Some(Release::NotConnected)),
            (
                facts(Some(7), true, &["dm-0"]),
                Some(Release::Claimed(vec!["dm-0".into()])),
            ),
            (
                facts(Some(7), false, &["dm-0"]),
                Some(Release::Claimed(vec!["dm-0".into()])),
            ),
            (facts(Some(7), false, &[]), Some(Release::ConnectorGone(7))),
            (facts(Some(7), true, &[]), None),
        ];
        for (f, want) in cases {
            assert_eq!(decide(f), *want, "{f:?}");
        }
    }

    /// A fake `/sys/block/nbd0` and `/proc` under a temporary root.
    fn fake(root: &Path, pid: Option<u32>, holders: &[&str]) {
        let dev = sys_dir(root, "nbd0");
        std::fs::create_dir_all(dev.join("holders")).unwrap();
        if let Some(pid) = pid {
            std::fs::write(dev.join("pid"), format!("{pid}\n")).unwrap();
            std::fs::create_dir_all(root.join("proc").join(pid.to_string())).unwrap();
        }
        for h in holders {
            std::fs::create_dir_all(dev.join("holders").join(h)).unwrap();
        }
    }

    #[test]
    fn reads_sysfs_and_procfs() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), Some(42), &["dm-1", "dm-0"]);
        assert_eq!(
            read_facts(dir.path(), "nbd0"),
            facts(Some(42), true, &["dm-0", "dm-1"])
        );
        std::fs::remove_dir(dir.path().join("proc/42")).unwrap();
        assert!(!read_facts(dir.path(), "nbd0").connector_alive);
        assert_eq!(
            read_facts(dir.path(), "nbd9"),
            facts(None, false, &[]),
            "a missing device reads as not connected"
        );
    }

    #[test]
    fn a_hold_ends_when_dm_claims_the_device() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), Some(42), &[]);
        let holders = sys_dir(dir.path(), "nbd0").join("holders/dm-0");
        // The hold's clock starts inside hold(), later than this thread's sleep (by the
        // time a loaded machine takes to get there): compare instants, not 150 ms.
        let claim = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            // Taken before the claim: the hold cannot see it any earlier.
            let claiming = Instant::now();
            std::fs::create_dir_all(holders).unwrap();
            claiming
        });
        let started = Instant::now();
        let held = hold(
            dir.path(),
            "nbd0",
            Duration::from_secs(10),
            Duration::from_millis(5),
        );
        let ended = Instant::now();
        let claimed = claim.join().unwrap();
        assert_eq!(held.release, Some(Release::Claimed(vec!["dm-0".into()])));
        assert!(held.held);
        // It ended because of the claim, so not before it, and soon after.
        assert!(ended >= claimed, "{held:?}");
        assert!(held.waited <= ended - started, "{held:?}");
        assert!(held.waited < Duration::from_secs(5), "{held:?}");
    }

    #[test]
    fn a_hold_runs_out_and_an_idle_device_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), Some(42), &[]);
        let held = hold(
            dir.path(),
            "nbd0",
            Duration::from_millis(50),
            Duration::from_millis(5),
        );
        assert_eq!(held.release, None);
        assert!(held.waited >= Duration::from_millis(50));

        let idle = tempfile::tempdir().unwrap();
        fake(idle.path(), None, &[]);
        let held = hold(
            idle.path(),
            "nbd0",
            Duration::from_secs(10),
            Duration::from_millis(5),
        );
        assert_eq!(held.release, Some(Release::NotConnected));
        assert!(!held.held);
        assert!(held.waited < Duration::from_secs(1));
    }
}
