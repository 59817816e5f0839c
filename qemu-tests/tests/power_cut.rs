//! Power cuts during the first boot: whatever the moment, the next boot ends provisioned
//! from `/boot/config.toml`, and the data filesystem checks clean from the host.

use std::process::Command;
use std::time::Duration;

use atomix_qemu_tests::{host, test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);

/// Where to cut: a console line, then how long after it.
const MOMENTS: &[(&str, &str, u64)] = &[
    ("during-repart", "atomix-initrd: step repart: starting", 0),
    ("after-repart", "atomix-initrd: systemd-repart created", 0),
    ("during-apply", "persist: generation 1 written", 0),
];

#[test]
fn power_cut_during_first_boot_is_finished_by_the_next_boot() {
    for (name, line, delay) in MOMENTS {
        let mut device = Device::flashed(&format!("power-cut-{name}"));
        let admin = test_key(&device.dir, "admin-key");
        device.write_boot_config(&test_config("qemu-power-cut", &admin));
        device.boot();
        device.wait_for_console(line, BOOT);
        std::thread::sleep(Duration::from_secs(*delay));
        device.power_cut();

        device.boot();
        device.wait_until_provisioned(BOOT);
        assert_eq!(
            device.ssh(&admin, "hostname").trim(),
            "qemu-power-cut",
            "{name}"
        );
        let source = device.ssh(&admin, "cat /data/config/current/source.json");
        assert!(
            source.contains("\"boot\""),
            "{name}: provisioned from the boot seed: {source}"
        );
        device.poweroff(&admin);

        // The data partition, from the host: a clean f2fs.
        let raw = device.raw_disk();
        let table: serde_json::Value =
            serde_json::from_str(&host(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
        let data = table["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "data")
            .unwrap_or_else(|| panic!("{name}: no data partition"))
            .clone();
        let offset = data["start"].as_u64().unwrap() * 512;
        let size = data["size"].as_u64().unwrap() * 512;
        let loopdev = host(
            Command::new("losetup")
                .args(["--find", "--show", "--read-only", "--offset"])
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(size.to_string())
                .arg(&raw),
        );
        let loopdev = loopdev.trim().to_owned();
        let fsck = Command::new("fsck.f2fs").arg(&loopdev).output().unwrap();
        let _ = Command::new("losetup").arg("-d").arg(&loopdev).status();
        let report = String::from_utf8_lossy(&fsck.stdout);
        assert!(
            fsck.status.success() && !report.contains("Fail"),
            "{name}: fsck.f2fs found problems:\n{report}"
        );
        let _ = std::fs::remove_file(&raw);
    }
}
