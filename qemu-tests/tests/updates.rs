//! A/B updates over the air: a RAUC bundle streamed from the host (its streamed set-up
//! repeated), the slot it went to booted and marked good; a power cut during the install;
//! an unprovisioned device never taking the empty slot. (An update that hangs and falls
//! back by itself is in `fleet.rs`, installed from an update server.)

use std::path::Path;
use std::time::{Duration, Instant};

use atomix_qemu_tests::updates::{slot_state, update_build_id, FileServer};
use atomix_qemu_tests::{test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);
const INSTALL: Duration = Duration::from_secs(900);
/// Rounds of streamed `rauc mount` through the NBD hold rule.
const MOUNT_ROUNDS: u32 = 20;

/// A device flashed with the image under test, provisioned from `/boot/config.toml`
/// (the test config and `extra`).
fn provisioned(name: &str, extra: &str) -> (Device, std::path::PathBuf) {
    let mut device = Device::flashed(name);
    let admin = test_key(&device.dir, "admin-key");
    let config = format!("{}{extra}", test_config(&format!("qemu-{name}"), &admin));
    device.write_boot_config(&config);
    device.boot();
    device.wait_until_provisioned(BOOT);
    (device, admin)
}

/// Starts `atomix-update.service` (what the timer starts) and waits for it; its journal
/// on failure.
fn start_update_service(device: &mut Device, admin: &Path) {
    device.step("systemctl start atomix-update.service");
    if device
        .ssh_unchecked(
            admin,
            "sudo systemctl start atomix-update.service && echo started",
        )
        .is_none_or(|out| !out.contains("started"))
    {
        let log = device
            .ssh_unchecked(
                admin,
                "sudo journalctl -b --no-pager -u atomix-update.service",
            )
            .unwrap_or_default();
        panic!("atomix-update.service failed:\n{log}");
    }
}

/// Runs on the device (as root, `sh -c SCRIPT sh URL ROUNDS`): `rauc mount URL` then
/// `umount`, ROUNDS times; each round sets up the streamed bundle exactly as an install
/// does (`mount_bundle()`: an NBD device, dm-verity on it, the squashfs), and waits until
/// no NBD device is connected any more before the next. The output names each failed
/// round with RAUC's output and the kernel's last words on it, then
/// `rounds=N failed=F`. (`rauc mount URL` returns once mounted but leaves its streaming
/// server behind, which holds whatever output it was given: hence the file.)
/// `rauc info URL` would not do: for a verity bundle its manifest is in the signature,
/// and RAUC 1.13 reads it without setting up any device.
const MOUNT_ROUNDS_SCRIPT: &str = r#"
url=$1; rounds=$2; failed=0; log=/run/atomix-mount-round.log
for i in $(seq 1 "$rounds"); do
  if rauc mount "$url" >"$log" 2>&1 </dev/null; then
    mnt=$(sed -n "s/^Mounted bundle at \(.*\)\. Use .*/\1/p" "$log")
    if [ -z "$mnt" ] || ! umount "$mnt"; then
      echo "round $i: cannot unmount [$mnt]: $(tr "\n" " " <"$log")"; exit 1
    fi
  else
    failed=$((failed + 1))
    echo "round $i failed: $(tr "\n" " " <"$log")"
    echo "  kernel: $(dmesg | grep -i "verity\|nbd\|device-mapper" | tail -n 3 | tr "\n" " ")"
  fi
  t=0
  while ls /sys/block/nbd*/pid >/dev/null 2>&1; do
    t=$((t + 1))
    if [ "$t" -gt 300 ]; then echo "round $i: an NBD device is still connected after 30 s"; exit 1; fi
    sleep 0.1
  done
done
echo "rounds=$rounds failed=$failed"
"#;

/// [`MOUNT_ROUNDS_SCRIPT`] on the device: the number of failed rounds and the output.
fn mount_rounds(device: &mut Device, admin: &Path, url: &str, rounds: u32) -> (u32, String) {
    assert!(!MOUNT_ROUNDS_SCRIPT.contains('\''));
    let started = Instant::now();
    let out = device.ssh(
        admin,
        &format!("sudo sh -c '{MOUNT_ROUNDS_SCRIPT}' sh {url} {rounds}"),
    );
    let summary = out.lines().last().unwrap_or_default();
    let failed = summary
        .strip_prefix(&format!("rounds={rounds} failed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the mount rounds did not finish:\n{out}"));
    eprintln!(
        "[{}] {rounds} rounds in {:.0} s, {failed} failed",
        device.name,
        started.elapsed().as_secs_f64()
    );
    (failed, out)
}

#[test]
fn an_update_streamed_from_the_host_boots_slot_b_and_is_marked_good() {
    let image = atomix_qemu_tests::Image::built();
    let v1 = image.build_id().to_owned();
    let v2 = update_build_id(&v1, 2, None);
    eprintln!("building the v2 bundle");
    let bundle = image.update_bundle(&v2, &[]);
    let server = FileServer::serve(&bundle);
    // The update timer of the config, pointed at the host.
    let update = format!(
        "\n[update]\nrauc = true\nurl = \"{}\"\ninterval = \"1d\"\n",
        server.url("atomixos-rock64.raucb")
    );
    let (mut device, admin) = provisioned("update-v2", &update);

    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"A B\" BOOT_A_LEFT=3 BOOT_B_LEFT=3",
        "slot A marked good by the first boot's apply"
    );
    assert_eq!(
        device
            .ssh(&admin, "systemctl is-enabled atomix-update.timer")
            .trim(),
        "enabled"
    );
    // Streamed set-ups, repeated: each must succeed through the NBD hold rule (the race it
    // closes cost one install in a full suite run before it).
    let url = server.url("atomixos-rock64.raucb");
    device.step(&format!(
        "{MOUNT_ROUNDS} rounds of rauc mount {url}, through the NBD hold rule"
    ));
    let (failed, out) = mount_rounds(&mut device, &admin, &url, MOUNT_ROUNDS);
    assert_eq!(
        failed, 0,
        "streamed set-ups failed through the rule:\n{out}"
    );

    // What the timer would start, now rather than in 5 minutes.
    start_update_service(&mut device, &admin);
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3",
        "B primary after the install"
    );

    device.reboot(&admin);
    device.wait_for_console(&format!("AtomixOS build {v2}"), BOOT);
    device.wait_for_console("AtomixOS: slot B chosen, tries left now A 3 B 2", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    assert_eq!(health["build_id"], v2.as_str(), "{health}");
    assert_eq!(health["slot"], "b", "{health}");
    let os_release = device.ssh(&admin, "cat /etc/os-release");
    assert!(os_release.contains(&v2), "{os_release}");
    // /data came along: the same generation, re-applied.
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-update-v2");
    assert_eq!(
        device.ssh(&admin, "ls /data/config/generations").trim(),
        "1"
    );
    assert!(device
        .ssh(&admin, "ip -4 -o addr show dev eth1")
        .contains("192.168.100.1/24"));
    // Marked good by the re-apply: B's tries are full again.
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3"
    );
    let rauc = device.ssh(&admin, "sudo rauc status --detailed");
    assert!(rauc.contains("Booted from: rootfs.1 (B)"), "{rauc}");

    // The timer firing again finds the build running and installs nothing.
    start_update_service(&mut device, &admin);
    let log = device.ssh(
        &admin,
        "sudo journalctl -b --no-pager -u atomix-update.service",
    );
    assert!(
        log.contains(&format!("not installed: build {v2} is the running one")),
        "{log}"
    );
    assert_eq!(
        slot_state(&device, &admin),
        "BOOT_ORDER=\"B A\" BOOT_A_LEFT=3 BOOT_B_LEFT=3"
    );
}

#[test]
fn a_power_cut_during_the_install_leaves_the_old_slot_booting() {
    let (mut device, admin) = provisioned("update-cut", "");
    let v1 = device.image.build_id().to_owned();
    let v2 = update_build_id(&v1, 2, None);
    let bundle = device.image.update_bundle(&v2, &[]);

    device.step("POST /api/update signed by the admin key, power cut once it writes slot B");
    let body = std::fs::read(&bundle).unwrap();
    let (status, reply) = device
        .signed_post(
            device.lan_port,
            "/api/update",
            "application/octet-stream",
            &body,
            &admin,
        )
        .expect("POST /api/update");
    assert_eq!(status, 202, "{reply}");
    let deadline = Instant::now() + INSTALL;
    loop {
        let log = device
            .ssh_unchecked(
                &admin,
                "sudo journalctl -b --no-pager -u rauc.service -u atomix-test-install.service",
            )
            .unwrap_or_default();
        // RAUC logs each slot device as it starts writing it (boot-b, then rootfs-b).
        if log.contains("opening slot device") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the install never started writing slot B:\n{log}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    device.power_cut();

    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen", BOOT);
    let health = device.wait_until_provisioned(BOOT);
    assert_eq!(health["build_id"], v1.as_str(), "{health}");
    assert_eq!(health["slot"], "a", "{health}");
    let state = slot_state(&device, &admin);
    assert!(
        state.starts_with("BOOT_ORDER=\"A\""),
        "B marked bad before it was written, never made primary: {state}"
    );
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-update-cut");
}

#[test]
fn an_unprovisioned_device_never_walks_onto_the_empty_slot() {
    // Nothing marks slot A good while the device waits unprovisioned: its tries run out
    // boot after boot, and slot B (created empty by the first boot) must never be taken.
    let mut device = Device::flashed("unprovisioned-tries");
    device.boot();
    device.wait_for_console("AtomixOS: slot A chosen, tries left now A 2 B 3", BOOT);
    device.wait_for_health(device.wan_port, BOOT);
    for expected in [
        "AtomixOS: slot A chosen, tries left now A 1 B 3",
        "AtomixOS: slot A chosen, tries left now A 0 B 3",
        "AtomixOS: slot A chosen, tries left now A 2 B 3",
    ] {
        device.power_cut();
        device.boot();
        let console = device.wait_for_console(expected, BOOT);
        assert!(!console.contains("slot B chosen"), "{console}");
    }
    let console = device.console();
    assert!(
        console.contains("has tries left and a kernel: tries reset to 3"),
        "{console}"
    );
    // And the device still comes up into the console.
    let health = device.wait_for_health(device.wan_port, BOOT);
    assert_eq!(health["slot"], "a", "{health}");
    assert_eq!(health["provisioned"], false, "{health}");
}
