//! A Quadlet whose container cannot start: the apply job fails, the previous generation is
//! restored, and the slot is not marked good by that job.

use std::time::Duration;

use atomix_qemu_tests::{test_config, test_key, Device};

const BOOT: Duration = Duration::from_secs(400);

#[test]
fn a_container_that_fails_to_start_rolls_the_apply_back() {
    let mut device = Device::flashed("failing-container");
    let admin = test_key(&device.dir, "admin-key");
    device.boot();
    device.wait_for_health(device.wan_port, BOOT);

    // Generation 1: a working config.
    let good = test_config("qemu-good", &admin);
    let key = device.image.provisioning_key();
    let (status, body) = device
        .signed_post(
            device.wan_port,
            "/api/config",
            "application/toml",
            good.as_bytes(),
            &key,
        )
        .expect("POST /api/config");
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_owned();
    let done = device.wait_for_job(device.wan_port, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "succeeded", "{done}");

    // Generation 2 adds a container whose image no registry serves: its unit fails.
    let failing = format!(
        "{}\n[[containers]]\nname = \"broken\"\nimage = \"registry.invalid/atomix/missing:1\"\nrestart = \"no\"\n",
        test_config("qemu-broken", &admin)
    );
    device.step("POST a config whose container cannot start, signed by the admin key");
    let (status, body) = device
        .signed_post(
            device.lan_port,
            "/api/config",
            "application/toml",
            failing.as_bytes(),
            &admin,
        )
        .expect("POST /api/config");
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_owned();
    let done = device.wait_for_job(device.lan_port, &job, Duration::from_secs(400));
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["rollback"]["state"], "completed", "{done}");
    assert_eq!(done["rollback"]["generation"], 1, "{done}");
    let steps: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert!(
        !steps.contains(&"mark-good"),
        "a failed job never marks the slot good: {steps:?}"
    );

    // The device is back on generation 1.
    let health = device.wait_for_health(device.lan_port, Duration::from_secs(60));
    assert_eq!(health["provisioned"], true, "{health}");
    assert_eq!(device.ssh(&admin, "hostname").trim(), "qemu-good");
    assert!(
        device
            .ssh(&admin, "readlink /data/config/current")
            .trim()
            .ends_with("generations/1"),
        "current points at generation 1 again"
    );
    assert_eq!(
        device
            .ssh(
                &admin,
                "ls /etc/containers/systemd/ 2>/dev/null | grep -c broken || true"
            )
            .trim(),
        "0",
        "the failed generation's Quadlet is gone"
    );
}
