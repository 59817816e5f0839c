//! Finding the device by name: its LAN port on a real segment (a tap in a network
//! namespace the test makes), `atomixctl discover` run there sees it announced over
//! multicast DNS as `atomixos-<mac>` while unprovisioned, `atomixctl provision --device
//! <that name>` provisions it, and then it is announced under its host name, which
//! `atomixctl status --device` takes. One fresh boot and one apply: the least a
//! provisioned device costs.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atomix_qemu_tests::lan::Lan;
use atomix_qemu_tests::{test_config, test_key, Device};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(400);

/// eth0's MAC in the harness is 52:54:00:a7:00:01.
const UNPROVISIONED: &str = "atomixos-0001";

fn run(lan: &Lan, argv: &[&str]) -> Output {
    lan.command(argv).output().expect("ip netns exec runs")
}

/// `atomixctl discover --json` in the namespace until `ready` holds for what it found.
fn discover_until(
    device: &mut Device,
    lan: &Lan,
    ctl: &str,
    what: &str,
    pcap: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    device.step(&format!("atomixctl discover until {what}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = run(lan, &[ctl, "discover", "--json", "--timeout", "3"]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "discover failed: {said}{} (packets: {pcap})",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: Vec<Value> = serde_json::from_str(&said).expect("discover --json");
        if ready(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within 120 s; last: {said} (packets: {pcap})"
        );
        assert!(!device.exited(), "QEMU exited");
    }
}

/// `atomixctl discover --json` run over and over in the namespace from power-on until
/// stopped: queries arrive while the service starts, announces and re-announces, the
/// timing at which a responder that takes its own answers for another host's renames
/// itself. Every instance and host name seen, and the number of browses.
struct Browsing {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(BTreeSet<(String, String)>, u32)>,
}

impl Browsing {
    fn start(lan: &Lan, ctl: &str) -> Browsing {
        let stop = Arc::new(AtomicBool::new(false));
        let (netns, ctl, flag) = (lan.name.clone(), ctl.to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let (mut seen, mut browses) = (BTreeSet::new(), 0);
            while !flag.load(Ordering::Relaxed) {
                let out = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &netns,
                        &ctl,
                        "discover",
                        "--json",
                        "--timeout",
                        "2",
                    ])
                    .output()
                    .expect("ip netns exec runs");
                browses += 1;
                let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
                for d in found {
                    seen.insert((
                        d["name"].as_str().unwrap_or("?").to_owned(),
                        d["host"].as_str().unwrap_or("?").to_owned(),
                    ));
                }
            }
            (seen, browses)
        });
        Browsing { stop, thread }
    }

    fn stop(self) -> (BTreeSet<(String, String)>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the browsing thread panicked")
    }
}

fn named<'a>(found: &'a [Value], name: &str) -> Option<&'a Value> {
    found.iter().find(|d| d["name"] == name)
}

#[test]
fn the_device_is_discovered_by_name_before_and_after_provisioning() {
    let ctl = test_support::workspace_bin("atomixctl", "atomixctl");
    let ctl = ctl.to_str().unwrap();
    // Declared before the device: dropped after it, once QEMU has let go of the tap.
    let lan = Lan::create("atomix-discovery");
    let mut device = Device::flashed("discovery");
    let admin = test_key(&device.dir, "admin-key");
    device.attach_lan(&lan);
    // Every multicast DNS packet of the segment, for reading a failure.
    let capture = lan.capture_mdns(&device.dir.join("lan-mdns.pcap"));
    let pcap = capture.path.display().to_string();
    let browsing = Browsing::start(&lan, ctl);
    device.boot();
    let build_id = device.image.build_id().to_owned();

    let health = device.wait_for_health(device.wan_port, BOOT);
    assert_eq!(health["provisioned"], false, "{health}");

    // Unprovisioned: announced as atomixos-<last 4 hex of eth0's MAC>.
    let found = discover_until(
        &mut device,
        &lan,
        ctl,
        "atomixos-0001 answers",
        &pcap,
        |f| named(f, UNPROVISIONED).is_some(),
    );
    let fresh = named(&found, UNPROVISIONED).unwrap();
    assert_eq!(fresh["provisioned"], false, "{fresh}");
    assert_eq!(fresh["build_id"], build_id.as_str(), "{fresh}");
    assert_eq!(fresh["slot"], "a", "{fresh}");
    assert_eq!(fresh["url"], "http://192.168.100.1:8080", "{fresh}");

    // Provisioned by that name, from the LAN, as an operator would.
    device.step("atomixctl provision --device atomixos-0001");
    let config = device.dir.join("config.toml");
    std::fs::write(&config, test_config("qemu-mdns", &admin)).unwrap();
    let key = device.image.provisioning_key();
    let out = run(
        &lan,
        &[
            ctl,
            "provision",
            "--device",
            UNPROVISIONED,
            "-i",
            key.to_str().unwrap(),
            config.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "provision failed: {}{} (packets: {pcap})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Announced under its host name now, and no longer as the fresh device.
    let found = discover_until(&mut device, &lan, ctl, "qemu-mdns answers", &pcap, |f| {
        named(f, "qemu-mdns").is_some_and(|d| d["provisioned"] == true)
    });
    let provisioned = named(&found, "qemu-mdns").unwrap();
    assert_eq!(provisioned["build_id"], build_id.as_str(), "{provisioned}");
    assert_eq!(provisioned["slot"], "a", "{provisioned}");
    assert!(
        named(&found, UNPROVISIONED).is_none(),
        "the fresh name is still announced: {found:?}"
    );

    // `--device NAME` for status.
    device.step("atomixctl status --device qemu-mdns");
    let out = run(&lan, &[ctl, "status", "--device", "qemu-mdns", "--json"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status failed: {said}{} (packets: {pcap})",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_str(&said).expect("status --json");
    assert_eq!(status["provisioned"], true, "{status}");
    assert_eq!(status["build_id"], build_id.as_str(), "{status}");

    // Browsed all along, from power-on through both announcements: only the two names
    // the device is meant to have, never one renamed against itself.
    let (seen, browses) = browsing.stop();
    eprintln!("[discovery] {browses} browses from power-on: {seen:?}");
    let expected: BTreeSet<(String, String)> = [
        (UNPROVISIONED.to_owned(), "atomixos-0001.local.".to_owned()),
        ("qemu-mdns".to_owned(), "qemu-mdns.local.".to_owned()),
    ]
    .into();
    assert_eq!(
        seen, expected,
        "names seen in {browses} browses (packets: {pcap})"
    );

    // Multicast DNS is open on the LAN only.
    let rules = device.ssh(&admin, "sudo nft list chain inet atomix lan_input");
    assert!(rules.contains("udp dport 5353 accept"), "{rules}");
    let wan = device.ssh(&admin, "sudo nft list chain inet atomix wan_input");
    assert!(!wan.contains("5353"), "{wan}");
    drop(device);
    drop(capture);
}
