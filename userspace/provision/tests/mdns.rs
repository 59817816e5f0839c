//! The real multicast DNS responder (`announce::MdnsAnnouncer`) answering real browsers
//! (`mdns-sd`, as `atomixctl discover` browses), over real sockets: in a network
//! namespace of the test's own (`unshare --net`, so nothing on the host changes and no
//! other responder answers), with two veth pairs standing for the device's ports and
//! the computers beside them: `eth1` (LAN, 192.168.100.1) to `laptop0`, `eth0` (WAN,
//! 192.168.1.10) to `wan0`.
//!
//! Root only (creating interfaces needs it; it fails without, and `scripts/test.sh`
//! runs as root): each test runs itself again under `unshare --net` (util-linux, with
//! `ip` from iproute2), and the copy inside does the work.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use atomix_api::discovery::Announcement;
use atomix_provision::announce::{plan, Announcer, MdnsAnnouncer, Publication};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};

/// Set in the copy that runs inside the namespace.
const INSIDE: &str = "ATOMIX_MDNS_TEST_NETNS";

/// Runs `test` (this file's test of that name) again inside a new network namespace
/// and asserts that it passed there; `true` when this is that copy.
fn in_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        setup_links();
        return true;
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{test} needs root (a network namespace with veth pairs): run it through scripts/test.sh"
    );
    let out = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inside the namespace:\n{said}");
    assert!(said.contains("1 passed"), "the copy ran no test:\n{said}");
    false
}

fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a sysctl of the namespace.
fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// The device's two ports and their peers, IPv4 only (no duplicate address detection
/// to wait for). Both ends are in this namespace, so a packet arrives from an address
/// of its own: accepted (`accept_local`), and not dropped by the reverse path filter.
fn setup_links() {
    sysctl("net.ipv6.conf.default.disable_ipv6", "1");
    sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    for conf in ["all", "default"] {
        sysctl(&format!("net.ipv4.conf.{conf}.accept_local"), "1");
        sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0");
    }
    ip("link set lo up");
    for (port, peer, addr, peer_addr) in [
        ("eth1", "laptop0", "192.168.100.1/24", "192.168.100.66/24"),
        ("eth0", "wan0", "192.168.1.10/24", "192.168.1.20/24"),
    ] {
        ip(&format!("link add {port} type veth peer name {peer}"));
        ip(&format!("addr add {addr} dev {port}"));
        ip(&format!("addr add {peer_addr} dev {peer}"));
        ip(&format!("link set {port} up"));
        ip(&format!("link set {peer} up"));
    }
}

fn unprovisioned() -> Publication {
    plan(
        Announcement {
            name: "atomixos-0001".into(),
            build_id: Some("2026.11.1".into()),
            slot: Some("a".into()),
            provisioned: false,
        },
        "atomixos".into(),
        8080,
    )
}

/// One answer a browser resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    fullname: String,
    host: String,
    port: u16,
    txt: BTreeMap<String, String>,
    addresses: Vec<IpAddr>,
}

/// A browser on one interface (`laptop0` or `wan0`), as a computer there.
struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    seen: Vec<Seen>,
}

impl Browser {
    fn on(interface: &str) -> Browser {
        let daemon = ServiceDaemon::new().unwrap();
        daemon.disable_interface(IfKind::All).unwrap();
        daemon
            .enable_interface(IfKind::Name(interface.into()))
            .unwrap();
        let events = daemon.browse("_atomix._tcp.local.").unwrap();
        Browser {
            daemon,
            events,
            seen: Vec::new(),
        }
    }

    /// Collects answers for `time`, or until `done` holds for what was seen.
    fn watch(&mut self, time: Duration, done: impl Fn(&[Seen]) -> bool) -> &[Seen] {
        let deadline = Instant::now() + time;
        while !done(&self.seen) {
            let Ok(event) = self.events.recv_deadline(deadline) else {
                break;
            };
            if let ServiceEvent::ServiceResolved(info) = event {
                let mut addresses: Vec<IpAddr> = info
                    .get_addresses()
                    .iter()
                    .map(|a| a.to_ip_addr())
                    .collect();
                addresses.sort();
                self.seen.push(Seen {
                    fullname: info.get_fullname().to_owned(),
                    host: info.host.clone(),
                    port: info.get_port(),
                    txt: info
                        .get_properties()
                        .iter()
                        .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
                        .collect(),
                    addresses,
                });
            }
        }
        &self.seen
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

fn named<'a>(seen: &'a [Seen], fullname: &str) -> Option<&'a Seen> {
    seen.iter().rev().find(|s| s.fullname == fullname)
}

#[test]
fn answers_with_its_name_txt_and_address_on_the_ports_it_should() {
    if !in_namespace("answers_with_its_name_txt_and_address_on_the_ports_it_should") {
        return;
    }
    let announcer = MdnsAnnouncer::new();
    let fresh = unprovisioned();
    announcer.publish(&fresh).unwrap();

    // Unprovisioned: found from the LAN and from the WAN, each with its port's address.
    for (side, address) in [("laptop0", "192.168.100.1"), ("wan0", "192.168.1.10")] {
        let mut b = Browser::on(side);
        let seen = b.watch(Duration::from_secs(10), |s| {
            named(s, "atomixos-0001._atomix._tcp.local.").is_some()
        });
        let s = named(seen, "atomixos-0001._atomix._tcp.local.")
            .unwrap_or_else(|| panic!("nothing answered on {side}: {seen:?}"));
        assert_eq!(s.host, "atomixos.local.", "{s:?}");
        assert_eq!(s.port, 8080);
        assert_eq!(
            s.txt,
            BTreeMap::from([
                ("build_id".into(), "2026.11.1".into()),
                ("slot".into(), "a".into()),
                ("provisioned".into(), "false".into()),
                ("name".into(), "atomixos-0001".into()),
            ])
        );
        assert_eq!(
            s.addresses,
            [address.parse::<IpAddr>().unwrap()],
            "on {side}: {s:?}"
        );
    }

    // Provisioned: its host name, on the LAN alone.
    let edge = plan(
        Announcement {
            name: "edge-7".into(),
            provisioned: true,
            ..fresh.announcement.clone()
        },
        "edge-7".into(),
        8080,
    );
    announcer.publish(&edge).unwrap();
    let mut lan = Browser::on("laptop0");
    let seen = lan.watch(Duration::from_secs(10), |s| {
        named(s, "edge-7._atomix._tcp.local.").is_some()
    });
    let s = named(seen, "edge-7._atomix._tcp.local.").expect("edge-7 on the LAN");
    assert_eq!(s.host, "edge-7.local.");
    assert_eq!(s.txt["provisioned"], "true");
    assert_eq!(s.addresses, ["192.168.100.1".parse::<IpAddr>().unwrap()]);
    assert!(
        named(seen, "atomixos-0001._atomix._tcp.local.").is_none(),
        "the fresh name is withdrawn: {seen:?}"
    );
    let mut wan = Browser::on("wan0");
    let seen = wan.watch(Duration::from_secs(3), |s| !s.is_empty());
    assert!(seen.is_empty(), "answered on the WAN: {seen:?}");

    announcer.withdraw().unwrap();
}

/// The timing that renamed devices under systemd-resolved: browsers querying while the
/// responder still probes its names (the first second after registration). Its own
/// answers and probes come back to it (multicast loop) and must not count as another
/// host's.
#[test]
fn browses_while_it_probes_rename_nothing() {
    if !in_namespace("browses_while_it_probes_rename_nothing") {
        return;
    }
    let fresh = unprovisioned();
    let mut before = Browser::on("laptop0");
    let announcer = MdnsAnnouncer::new();
    announcer.publish(&fresh).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut early = Browser::on("laptop0");
    std::thread::sleep(Duration::from_millis(300));
    let mut during = Browser::on("eth1");
    // Past the probes and both announcements, then a browser from scratch.
    std::thread::sleep(Duration::from_secs(3));
    let mut after = Browser::on("laptop0");
    for (what, b) in [
        ("browsing before", &mut before),
        ("browsing at +0.2 s", &mut early),
        ("browsing at +0.5 s on the device's own port", &mut during),
        ("browsing at +3.5 s", &mut after),
    ] {
        let seen = b.watch(Duration::from_secs(4), |s| {
            named(s, "atomixos-0001._atomix._tcp.local.").is_some_and(|s| !s.addresses.is_empty())
        });
        assert!(!seen.is_empty(), "{what}: nothing answered");
        for s in seen {
            assert_eq!(
                s.fullname, "atomixos-0001._atomix._tcp.local.",
                "{what}: renamed: {seen:?}"
            );
            assert_eq!(s.host, "atomixos.local.", "{what}: host renamed: {seen:?}");
        }
    }
    announcer.withdraw().unwrap();
}
