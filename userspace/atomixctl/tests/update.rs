//! `atomixctl update` end to end: the real binary streams a bundle to the real
//! `atomix-provision serve --system record`, whose recorded `rauc install` stands in for
//! RAUC.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{atomixctl, code, json, start, text, Server};
use test_support::{config_with_admin, keygen, Key};

/// A bundle file of a few MiB whose bytes differ everywhere (so a misplaced chunk shows).
fn bundle(dir: &Path) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..1_500_000u32)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let path = dir.join("atomixos-rock64.raucb");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn uploads(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("data/rauc/uploads"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn actions(root: &Path) -> Vec<Value> {
    std::fs::read_to_string(root.join("run/atomix/actions.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn update(s: &Server, key: &Key, bundle: &Path, extra: &[&str]) -> std::process::Output {
    let url = s.url();
    let mut args = vec![
        "update",
        "--device",
        &url,
        "-i",
        key.private.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(bundle.to_str().unwrap());
    atomixctl(&args)
}

#[test]
fn update_streams_the_bundle_and_follows_the_install_to_the_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "install=sleep(1500)");
    let (path, bytes) = bundle(dir.path());

    let run = std::thread::spawn({
        let (url, key, path) = (s.url(), key.private.clone(), path.clone());
        move || {
            atomixctl(&[
                "update",
                "--device",
                &url,
                "--reboot",
                "-i",
                key.to_str().unwrap(),
                path.to_str().unwrap(),
            ])
        }
    });
    // While the install is held, the device has the bundle, byte for byte.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let done: Vec<PathBuf> = uploads(&s.root)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "raucb"))
            .collect();
        if let [one] = done.as_slice() {
            break one.clone();
        }
        assert!(Instant::now() < deadline, "the bundle never landed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        std::fs::read(&stored).unwrap() == bytes,
        "stored byte for byte"
    );

    let out = run.join().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "hashing ",
        "signing with ",
        "uploaded 100% ",
        " install ",
        " cleanup ",
        " reboot ",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    let hashing = stderr.find("hashing ").unwrap();
    let uploaded = stderr.find("uploaded 100% ").unwrap();
    let install = stderr.find(" install ").unwrap();
    assert!(hashing < uploaded && uploaded < install, "{stderr}");
    assert!(
        stdout.contains("succeeded: the bundle is installed in the other slot")
            && stdout.contains("the device is rebooting into it"),
        "{stdout}"
    );
    let installs: Vec<Value> = actions(&s.root)
        .into_iter()
        .filter(|a| a["action"] == "rauc-install")
        .collect();
    assert_eq!(installs.len(), 1);
    assert_eq!(installs[0]["bundle"], stored.to_str().unwrap());
    assert!(uploads(&s.root).is_empty(), "the bundle is removed");
}

#[test]
fn a_failed_install_exits_1_with_the_jobs_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "install=error");
    let (path, _) = bundle(dir.path());
    let out = update(&s, &key, &path, &["--reboot"]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 1, "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("FAILED at step install: failpoint install triggered")
            && stdout.contains("the slot the device runs from is unchanged"),
        "{stdout}"
    );
    assert!(uploads(&s.root).is_empty());

    let out = update(&s, &key, &path, &["--json"]);
    assert_eq!(code(&out), 1);
    let job = json(&out);
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("update"), Some("failed"))
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn refusals_say_so_and_send_nothing_they_need_not() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let stranger = keygen(dir.path(), "stranger", "ed25519");
    let s = start(dir.path(), &key, "render=sleep(3000)");
    let (path, _) = bundle(dir.path());

    let out = update(&s, &stranger, &path, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 4, "{stderr}");
    assert!(stderr.contains("refused the signature (401"), "{stderr}");
    assert!(uploads(&s.root).is_empty());

    // A device busy with an apply: said before the bundle is read or sent.
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_with_admin(&key, "edge-700")).unwrap();
    let apply = std::thread::spawn({
        let (url, key, cfg) = (s.url(), key.private.clone(), cfg.clone());
        move || {
            atomixctl(&[
                "provision",
                "--device",
                &url,
                "-i",
                key.to_str().unwrap(),
                cfg.to_str().unwrap(),
            ])
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while json(&atomixctl(&["status", "--device", &s.url(), "--json"]))["job"].is_null() {
        assert!(Instant::now() < deadline, "the apply did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = update(&s, &key, &path, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 5, "{stderr}");
    assert!(stderr.contains("busy with another"), "{stderr}");
    assert!(!stderr.contains("hashing"), "{stderr}");
    assert_eq!(code(&apply.join().unwrap()), 0);

    // Larger than the device takes: refused here (a sparse file, nothing read).
    let huge = dir.path().join("huge.raucb");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((2 << 30) + 1)
        .unwrap();
    let out = update(&s, &key, &huge, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("more than the 2147483648 the device takes; nothing was sent"),
        "{stderr}"
    );
    assert!(!actions(&s.root)
        .iter()
        .any(|a| a["action"] == "rauc-install"));
}
