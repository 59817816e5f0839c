//! End to end: the real `atomixctl` binary against the real
//! `atomix-provision serve --system record` on loopback with a temporary root, keys made
//! by the real `ssh-keygen`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{atomixctl, code, json, provision_bin, start, text};
use test_support::{config_with_admin, keygen, EXAMPLE};

#[test]
fn provision_follows_the_job_then_status_shows_it_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_with_admin(&key, "edge-100")).unwrap();

    let out = atomixctl(&["status", "--device", &s.url()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("provisioned:  no"),
        "{}",
        text(&out.stdout)
    );

    let key_arg = key.private.to_str().unwrap();
    let out = atomixctl(&[
        "provision",
        "--device",
        &s.url(),
        "--identity",
        key_arg,
        cfg.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Live progress: every step as an event line, in order, then the result.
    let validate = stderr.find(" validate ").expect("a validate event");
    let switch = stderr.find(" switch ").expect("a switch event");
    assert!(validate < switch, "{stderr}");
    assert!(
        stdout.contains("succeeded: generation 1 is current"),
        "{stdout}"
    );
    assert!(stderr.contains("http://192.168.100.1:8080"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(s.root.join("etc/hostname")).unwrap(),
        "edge-100\n"
    );

    let out = atomixctl(&["status", "--device", &s.url(), "--json"]);
    let h = json(&out);
    assert_eq!(
        (h["provisioned"].clone(), h["generation"].clone()),
        (true.into(), 1.into())
    );

    // `job` shows the finished job, by id.
    let id = std::fs::read_dir(s.root.join("data/config/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let id = id.file_stem().unwrap().to_str().unwrap();
    let out = atomixctl(&["job", "--device", &s.url(), id]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("succeeded"),
        "{}",
        text(&out.stdout)
    );
    let out = atomixctl(&["job", "--device", &s.url(), id, "--json"]);
    assert_eq!(json(&out)["state"], "succeeded");
}

#[test]
fn a_failing_step_rolls_back_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "firewall=error");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_with_admin(&key, "edge-300")).unwrap();
    let key_arg = key.private.to_str().unwrap();

    let out = atomixctl(&[
        "provision",
        "--device",
        &s.url(),
        "-i",
        key_arg,
        cfg.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&out), 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("FAILED at step firewall"), "{stdout}");
    assert!(
        stdout.contains("rollback: completed; the device is unprovisioned again"),
        "{stdout}"
    );
    assert!(
        stderr.contains("[error]"),
        "the failing event is shown live: {stderr}"
    );
    assert!(!s.root.join("data/config/current").exists());

    // The same, for scripts.
    let out = atomixctl(&[
        "provision",
        "--json",
        "--device",
        &s.url(),
        "-i",
        key_arg,
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    let job = json(&out);
    assert_eq!(job["state"], "failed");
    assert_eq!(job["result"]["failed_step"], "firewall");
    assert_eq!(job["rollback"]["state"], "completed");
    assert!(
        out.stderr.is_empty(),
        "--json prints no progress: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_key_the_device_does_not_trust_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let stranger = keygen(dir.path(), "stranger", "ed25519");
    let s = start(dir.path(), &key, "");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_with_admin(&key, "edge-400")).unwrap();

    let out = atomixctl(&[
        "provision",
        "--device",
        &s.url(),
        "-i",
        stranger.private.to_str().unwrap(),
        cfg.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 4, "{stderr}");
    assert!(stderr.contains("refused the signature (401"), "{stderr}");
    assert!(
        stderr.contains("sign with a key the device trusts"),
        "{stderr}"
    );
    assert!(!s.root.join("data/config/current").exists());
}

#[test]
fn a_busy_device_and_an_unreachable_one_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "render=sleep(4000)");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_with_admin(&key, "edge-500")).unwrap();
    let key_arg = key.private.to_str().unwrap().to_owned();
    let url = s.url();
    let cfg_arg = cfg.to_str().unwrap().to_owned();
    let first = std::thread::spawn({
        let (url, key_arg, cfg_arg) = (url.clone(), key_arg.clone(), cfg_arg.clone());
        move || atomixctl(&["provision", "--device", &url, "-i", &key_arg, &cfg_arg])
    });
    // Wait until the first job holds the device.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = json(&atomixctl(&["status", "--device", &url, "--json"]));
        if !h["job"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the first job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = atomixctl(&["provision", "--device", &url, "-i", &key_arg, &cfg_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 5, "{stderr}");
    assert!(stderr.contains("busy with another apply job"), "{stderr}");
    assert_eq!(code(&first.join().unwrap()), 0);

    drop(s);
    let out = atomixctl(&["status", "--device", &url]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 3, "{stderr}");
    assert!(stderr.contains("cannot reach the device at"), "{stderr}");
}

/// `atomixctl validate` prints, byte for byte, what `atomix-provision validate` prints.
#[test]
fn validate_is_the_devices_validate() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "schema = 1\n[device]\nhostname = \"-no-\"\ntimezone = \"Mars/Base\"\n[admin]\nssh-authorized-keys = []\n",
    )
    .unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    let not_a_bundle = dir.path().join("b.tar");
    let mut tar = vec![0u8; 1024];
    tar[257..263].copy_from_slice(b"ustar\0");
    std::fs::write(&not_a_bundle, &tar).unwrap();

    for file in [&bad, &good, &not_a_bundle] {
        for json in [false, true] {
            let mut args = vec!["validate", file.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            let ours = atomixctl(&args);
            let device = Command::new(provision_bin()).args(&args).output().unwrap();
            assert_eq!(text(&ours.stdout), text(&device.stdout), "{args:?}");
            assert_eq!(ours.status.code(), device.status.code(), "{args:?}");
        }
    }
    let out = atomixctl(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{}:3:12: device.hostname", bad.display())),
        "{stdout}"
    );
    assert_eq!(code(&atomixctl(&["validate", "/nonexistent.toml"])), 2);
}
