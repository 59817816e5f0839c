//! The real multicast DNS responder (`announce::MdnsAnnouncer`) answering real browsers
//! (`mdns-sd`, as `atomixctl discover` browses) and hostile senders, over real sockets.
//!
//! Each test runs itself again under `unshare --net` (util-linux, with `ip` from
//! iproute2): that namespace is the device, so nothing on the host changes and no other
//! responder answers. Its two ports are veth pairs whose other ends are in namespaces of
//! their own, the computers beside the device: `eth1` (LAN, 192.168.100.1/24) to
//! `laptop0` (192.168.100.66), `eth0` (WAN, 192.168.1.10/24) to `wan0` (192.168.1.20).
//! The test's threads enter a computer's namespace (`setns`) to browse or send from it.
//!
//! Root only (creating interfaces needs it; it fails without, and `scripts/test.sh`
//! runs as root).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use atomix_api::discovery::Announcement;
use atomix_provision::announce::{plan, Announcer, MdnsAnnouncer, Publication, GROUP, PORT};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};
use simple_dns::rdata::{RData, A, TXT};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE};
use socket2::{Domain, Protocol, Socket, Type};

/// Set in the copy that runs inside the namespace.
const INSIDE: &str = "ATOMIX_MDNS_TEST_NETNS";

const INSTANCE: &str = "atomixos-0001._atomix._tcp.local.";

/// The computers beside the device: their namespaces, removed when dropped.
struct Net {
    lan: String,
    wan: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.lan, &self.wan] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `test` (this file's test of that name) again inside a new network namespace
/// and asserts that it passed there; in that copy, sets up the links and returns them.
fn in_namespace(test: &str) -> Option<Net> {
    if std::env::var_os(INSIDE).is_some() {
        return Some(setup_links(test));
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{test} needs root (network namespaces with veth pairs): run it through scripts/test.sh"
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
    // What the copy measured, for `--nocapture`.
    for line in said.lines().filter(|l| l.starts_with("flood:")) {
        eprintln!("{line}");
    }
    None
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &str) {
    run("ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// IPv4 only in namespace `ns` (`None`: this one): no duplicate address detection to
/// wait for, no IPv6 answers to tell apart.
fn ipv4_only(ns: Option<&str>) {
    let script = "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
                  echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6";
    match ns {
        None => run("sh", &["-c", script]),
        Some(ns) => run("ip", &["netns", "exec", ns, "sh", "-c", script]),
    }
}

/// The device's two ports and the computers at their other ends. The namespaces' names
/// carry this process's id: the tests of this file run side by side.
fn setup_links(test: &str) -> Net {
    let tag = format!("{}-{}", std::process::id(), test.len());
    let net = Net {
        lan: format!("atomix-mdns-lan-{tag}"),
        wan: format!("atomix-mdns-wan-{tag}"),
    };
    ipv4_only(None);
    ip("link set lo up");
    for (port, peer, ns, addr, peer_addr) in [
        (
            "eth1",
            "laptop0",
            &net.lan,
            "192.168.100.1/24",
            "192.168.100.66/24",
        ),
        (
            "eth0",
            "wan0",
            &net.wan,
            "192.168.1.10/24",
            "192.168.1.20/24",
        ),
    ] {
        ip(&format!("netns add {ns}"));
        ipv4_only(Some(ns));
        ip(&format!(
            "link add {port} type veth peer name {peer} netns {ns}"
        ));
        ip(&format!("addr add {addr} dev {port}"));
        ip(&format!("link set {port} up"));
        ip(&format!("-n {ns} addr add {peer_addr} dev {peer}"));
        ip(&format!("-n {ns} link set {peer} up"));
        ip(&format!("-n {ns} link set lo up"));
    }
    net
}

/// Runs `f` on a thread inside namespace `ns` (`/run/netns/NS`); what it creates there
/// (sockets, the threads it spawns) stays there.
fn within<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let handle = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn unprovisioned() -> Publication {
    plan(
        Announcement {
            name: "atomixos-0001".into(),
            build_id: Some("2026.11.1".into()),
            slot: Some("a".into()),
            provisioned: false,
        },
        "atomixos-0001".into(),
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

/// A browser on one interface, in namespace `ns` (`None`: the device's own), as a
/// computer there.
struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    seen: Vec<Seen>,
    /// The full names withdrawn (goodbye packets), in order.
    removed: Vec<String>,
}

impl Browser {
    fn on(ns: Option<&str>, interface: &str) -> Browser {
        let start = || {
            let daemon = ServiceDaemon::new().unwrap();
            daemon.disable_interface(IfKind::All).unwrap();
            daemon
                .enable_interface(IfKind::Name(interface.into()))
                .unwrap();
            let events = daemon.browse("_atomix._tcp.local.").unwrap();
            (daemon, events)
        };
        let (daemon, events) = match ns {
            Some(ns) => within(ns, start),
            None => start(),
        };
        Browser {
            daemon,
            events,
            seen: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Collects answers for `time`, or until `done` holds for what was seen.
    fn watch(&mut self, time: Duration, done: impl Fn(&[Seen]) -> bool) -> &[Seen] {
        self.watch_all(time, |seen, _| done(seen));
        &self.seen
    }

    /// Collects answers and withdrawals for `time`, or until `done` holds for them.
    fn watch_all(&mut self, time: Duration, done: impl Fn(&[Seen], &[String]) -> bool) {
        let deadline = Instant::now() + time;
        while !done(&self.seen, &self.removed) {
            let Ok(event) = self.events.recv_deadline(deadline) else {
                break;
            };
            if let ServiceEvent::ServiceRemoved(_, fullname) = &event {
                self.removed.push(fullname.clone());
            }
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

/// A browse question for the service type, as a packet.
fn browse_query() -> Vec<u8> {
    let mut q = Packet::new_query(0);
    q.questions.push(Question::new(
        Name::new_unchecked("_atomix._tcp.local"),
        QTYPE::TYPE(TYPE::PTR),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    q.build_bytes_vec_compressed().unwrap()
}

/// A response such as any host may multicast, about a name of its own (`n`), with a
/// long TTL and a large TXT record: what a caching responder would keep.
fn foreign_response(n: u32) -> Vec<u8> {
    let mut r = Packet::new_reply(0);
    r.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    let host = format!("host-{n}.local");
    let name = Name::new_unchecked(&host);
    r.answers.push(ResourceRecord::new(
        name.clone(),
        CLASS::IN,
        86_400,
        RData::A(A {
            address: 0x0a00_0000 | n,
        }),
    ));
    let mut txt = TXT::new();
    let filler = "x".repeat(200);
    for _ in 0..4 {
        txt.add_string(&filler).unwrap();
    }
    r.answers.push(ResourceRecord::new(
        name,
        CLASS::IN,
        86_400,
        RData::TXT(txt.into_owned()),
    ));
    r.build_bytes_vec_compressed().unwrap()
}

/// A UDP socket in namespace `ns`: bound to `bind`, sending to the group on the
/// interface with address `iface` (and from it, unless bound to another).
fn udp_in(ns: &str, bind: SocketAddrV4, iface: Ipv4Addr, join: bool) -> Socket {
    within(ns, || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.set_multicast_if_v4(&iface).unwrap();
        s.set_multicast_loop_v4(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s.bind(&bind.into()).unwrap();
        if join {
            s.join_multicast_v4(&GROUP, &iface).unwrap();
        }
        s
    })
}

fn to_group() -> socket2::SockAddr {
    SocketAddrV4::new(GROUP, PORT).into()
}

/// The answers to a browse that `listener` receives until `deadline`: responses that
/// carry a PTR record for the service type.
fn browse_answers(listener: &Socket, deadline: Instant) -> usize {
    let mut count = 0;
    let mut buf = vec![0u8; 9000];
    while Instant::now() < deadline {
        let Ok(n) = std::io::Read::read(&mut &*listener, &mut buf) else {
            continue;
        };
        let Ok(p) = Packet::parse(&buf[..n]) else {
            continue;
        };
        let ptr = p.answers.iter().any(|rr| {
            rr.name.to_string() == "_atomix._tcp.local" && matches!(rr.rdata, RData::PTR(_))
        });
        if p.has_flags(PacketFlag::RESPONSE) && ptr {
            count += 1;
        }
    }
    count
}

/// The test process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn answers_with_its_name_txt_and_address_on_the_ports_it_should() {
    let Some(net) = in_namespace("answers_with_its_name_txt_and_address_on_the_ports_it_should")
    else {
        return;
    };
    let announcer = MdnsAnnouncer::new();
    let fresh = unprovisioned();
    announcer.publish(&fresh).unwrap();

    // Unprovisioned: found from the LAN and from the WAN, each with its port's address.
    // The LAN's browser stays to see the name withdrawn.
    let mut lan_before = Browser::on(Some(&net.lan), "laptop0");
    let mut wan_before = Browser::on(Some(&net.wan), "wan0");
    for (b, side, address) in [
        (&mut lan_before, "laptop0", "192.168.100.1"),
        (&mut wan_before, "wan0", "192.168.1.10"),
    ] {
        let seen = b.watch(Duration::from_secs(10), |s| named(s, INSTANCE).is_some());
        let s =
            named(seen, INSTANCE).unwrap_or_else(|| panic!("nothing answered on {side}: {seen:?}"));
        assert_eq!(s.host, "atomixos-0001.local.", "{s:?}");
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
    // The fresh name's goodbye reaches the browser that had resolved it.
    lan_before.watch_all(Duration::from_secs(10), |_, removed| {
        removed.iter().any(|r| r == INSTANCE)
    });
    assert!(
        lan_before.removed.iter().any(|r| r == INSTANCE),
        "no goodbye for {INSTANCE}: {:?}",
        lan_before.removed
    );
    let mut lan = Browser::on(Some(&net.lan), "laptop0");
    let seen = lan.watch(Duration::from_secs(10), |s| {
        named(s, "edge-7._atomix._tcp.local.").is_some()
    });
    let s = named(seen, "edge-7._atomix._tcp.local.").expect("edge-7 on the LAN");
    assert_eq!(s.host, "edge-7.local.");
    assert_eq!(s.txt["provisioned"], "true");
    assert_eq!(s.addresses, ["192.168.100.1".parse::<IpAddr>().unwrap()]);
    assert!(
        named(seen, INSTANCE).is_none(),
        "the fresh name is withdrawn: {seen:?}"
    );
    let mut wan = Browser::on(Some(&net.wan), "wan0");
    let seen = wan.watch(Duration::from_secs(3), |s| !s.is_empty());
    assert!(seen.is_empty(), "answered on the WAN: {seen:?}");

    announcer.withdraw().unwrap();
}

/// The timing that renamed devices under systemd-resolved: browsers querying from before
/// the device announces to after it, one of them on the device's own port (its answers
/// looped back). Every one finds it under its one name.
#[test]
fn browsers_from_before_to_after_the_announcements_find_one_name() {
    let Some(net) = in_namespace("browsers_from_before_to_after_the_announcements_find_one_name")
    else {
        return;
    };
    let fresh = unprovisioned();
    let mut before = Browser::on(Some(&net.lan), "laptop0");
    let announcer = MdnsAnnouncer::new();
    announcer.publish(&fresh).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut early = Browser::on(Some(&net.lan), "laptop0");
    std::thread::sleep(Duration::from_millis(300));
    let mut during = Browser::on(None, "eth1");
    // Past the announcements (0, 1 and 3 s), then a browser from scratch.
    std::thread::sleep(Duration::from_secs(4));
    let mut after = Browser::on(Some(&net.lan), "laptop0");
    for (what, b) in [
        ("browsing before", &mut before),
        ("browsing at +0.2 s", &mut early),
        ("browsing at +0.5 s on the device's own port", &mut during),
        ("browsing at +4.5 s", &mut after),
    ] {
        let seen = b.watch(Duration::from_secs(4), |s| {
            named(s, INSTANCE).is_some_and(|s| !s.addresses.is_empty())
        });
        assert!(!seen.is_empty(), "{what}: nothing answered");
        for s in seen {
            assert_eq!(s.fullname, INSTANCE, "{what}: renamed: {seen:?}");
            assert_eq!(
                s.host, "atomixos-0001.local.",
                "{what}: host renamed: {seen:?}"
            );
        }
    }
    announcer.withdraw().unwrap();
}

/// Only multicast questions from the link, sent from the multicast DNS port, are
/// answered, and only by multicast: a query from an address off the LAN's subnet, one
/// sent to the device's address, and one from another port get nothing, so the device
/// cannot be made to send anything anywhere else.
#[test]
fn only_multicast_questions_from_the_link_are_answered() {
    let Some(net) = in_namespace("only_multicast_questions_from_the_link_are_answered") else {
        return;
    };
    let laptop: Ipv4Addr = "192.168.100.66".parse().unwrap();
    // A second, foreign address on the laptop's port: the source of an off-link query.
    let stranger: Ipv4Addr = "10.9.9.9".parse().unwrap();
    ip(&format!(
        "-n {} addr add {stranger}/24 dev laptop0",
        net.lan
    ));
    let listener = udp_in(
        &net.lan,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT),
        laptop,
        true,
    );
    let announcer = MdnsAnnouncer::new();
    announcer.publish(&unprovisioned()).unwrap();
    // Past the unsolicited announcements (at 0, 1 and 3 s), which carry the PTR.
    let settle = Instant::now() + Duration::from_secs(5);
    let announced = browse_answers(&listener, settle);
    assert!(announced >= 2, "{announced} announcements heard on the LAN");

    let query = browse_query();
    let off_link = udp_in(&net.lan, SocketAddrV4::new(stranger, PORT), laptop, false);
    off_link.send_to(&query, &to_group()).unwrap();
    let unicast = udp_in(&net.lan, SocketAddrV4::new(laptop, 0), laptop, false);
    unicast
        .send_to(
            &query,
            &SocketAddrV4::new("192.168.100.1".parse().unwrap(), PORT).into(),
        )
        .unwrap();
    let legacy = udp_in(&net.lan, SocketAddrV4::new(laptop, 0), laptop, false);
    legacy.send_to(&query, &to_group()).unwrap();
    let mut buf = [0u8; 1500];
    let n = browse_answers(&listener, Instant::now() + Duration::from_secs(2));
    assert_eq!(
        n, 0,
        "answered a query from off the link, to its address or from another port"
    );
    for (what, s) in [
        ("the unicast sender", &unicast),
        ("the legacy sender", &legacy),
    ] {
        assert!(
            std::io::Read::read(&mut &*s, &mut buf).is_err(),
            "{what} got a packet back"
        );
    }

    // The same question multicast from the laptop's own address and port is answered.
    let on_link = udp_in(&net.lan, SocketAddrV4::new(laptop, PORT), laptop, false);
    on_link.send_to(&query, &to_group()).unwrap();
    let n = browse_answers(&listener, Instant::now() + Duration::from_secs(2));
    assert_eq!(n, 1, "the laptop's browse");
    announcer.withdraw().unwrap();
}

/// A flood from the LAN: thousands of questions a second get about one answer a second,
/// and thousands of other hosts' responses (unique names, day-long TTLs, large TXT
/// records: what a caching responder keeps) leave the process no larger. A browser
/// afterwards still finds the device.
#[test]
fn a_flood_gets_an_answer_a_second_and_leaves_nothing_behind() {
    let Some(net) = in_namespace("a_flood_gets_an_answer_a_second_and_leaves_nothing_behind")
    else {
        return;
    };
    let laptop: Ipv4Addr = "192.168.100.66".parse().unwrap();
    let listener = udp_in(
        &net.lan,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT),
        laptop,
        true,
    );
    let announcer = MdnsAnnouncer::new();
    announcer.publish(&unprovisioned()).unwrap();
    browse_answers(&listener, Instant::now() + Duration::from_secs(5));

    let flooder = udp_in(&net.lan, SocketAddrV4::new(laptop, PORT), laptop, false);
    let rss_before = rss_kib();
    let query = browse_query();
    let flood = Duration::from_secs(3);
    let (sent, answers) = std::thread::scope(|s| {
        let counting = s.spawn(|| browse_answers(&listener, Instant::now() + flood));
        let start = Instant::now();
        let mut sent = 0u32;
        while start.elapsed() < flood {
            // Nine foreign responses for each question.
            let packet = if sent.is_multiple_of(10) {
                query.clone()
            } else {
                foreign_response(sent)
            };
            if flooder.send_to(&packet, &to_group()).is_ok() {
                sent += 1;
            }
        }
        (sent, counting.join().unwrap())
    });
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("flood: {sent} packets in {flood:?}, {answers} answers, RSS +{grown} KiB");
    assert!(sent > 10_000, "only {sent} packets sent");
    assert!(
        (2..=5).contains(&answers),
        "{answers} answers to {} questions in {flood:?}",
        sent / 10
    );
    assert!(grown < 2048, "the process grew by {grown} KiB");

    let mut b = Browser::on(Some(&net.lan), "laptop0");
    let seen = b.watch(Duration::from_secs(10), |s| named(s, INSTANCE).is_some());
    assert!(
        named(seen, INSTANCE).is_some(),
        "not found after the flood: {seen:?}"
    );
    announcer.withdraw().unwrap();
}

/// A port that loses its address (a lease gone, `ip addr flush`) and gets it back is
/// announced and answered again: the socket's membership there survives in between.
#[test]
fn a_port_whose_address_comes_back_is_answered_again() {
    let Some(net) = in_namespace("a_port_whose_address_comes_back_is_answered_again") else {
        return;
    };
    let announcer = MdnsAnnouncer::new();
    announcer.publish(&unprovisioned()).unwrap();
    let mut first = Browser::on(Some(&net.lan), "laptop0");
    let seen = first.watch(Duration::from_secs(10), |s| named(s, INSTANCE).is_some());
    assert!(
        named(seen, INSTANCE).is_some(),
        "not found at first: {seen:?}"
    );
    drop(first);

    ip("addr flush dev eth1");
    // Longer than the responder's look at the interfaces (every 5 s), each way.
    std::thread::sleep(Duration::from_secs(6));
    ip("addr add 192.168.100.1/24 dev eth1");
    std::thread::sleep(Duration::from_secs(6));
    let mut again = Browser::on(Some(&net.lan), "laptop0");
    let seen = again.watch(Duration::from_secs(10), |s| {
        named(s, INSTANCE).is_some_and(|s| !s.addresses.is_empty())
    });
    let s = named(seen, INSTANCE).unwrap_or_else(|| panic!("not answered again: {seen:?}"));
    assert_eq!(s.addresses, ["192.168.100.1".parse::<IpAddr>().unwrap()]);
    announcer.withdraw().unwrap();
}
