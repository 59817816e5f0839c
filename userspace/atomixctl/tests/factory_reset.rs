//! `atomixctl factory-reset` and `atomixctl jobs` end to end against the real
//! `atomix-provision serve --system record`: the confirmation, the signed request, the
//! job followed to the reboot, the marker the next boot completes; the signed job list.

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{atomixctl, code, json, start, text, ATOMIXCTL};
use test_support::keygen;

/// `atomixctl ARGS` with `input` on its standard input.
fn atomixctl_with_input(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(ATOMIXCTL)
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("atomixctl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn factory_reset_is_confirmed_signed_followed_and_rebooted() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let stranger = keygen(dir.path(), "stranger", "ed25519");
    let s = start(dir.path(), &key, "");
    let url = s.url();
    let marker = s.root.join("data/atomix/factory-reset");
    let reset = |k: &test_support::Key, extra: &[&str], input: &str| {
        let mut args = vec![
            "factory-reset",
            "--device",
            &url,
            "-i",
            k.private.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        atomixctl_with_input(&args, input)
    };

    // Not confirmed: nothing sent.
    for input in ["", "yes\n", "Erase\n"] {
        let out = reset(&key, &[], input);
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("Type \"erase\" to continue"), "{stderr}");
        assert!(stderr.contains("aborted: nothing was sent"), "{stderr}");
        assert!(!marker.exists());
    }
    // An untrusted key: 401, exit 4, nothing changed.
    let out = reset(&stranger, &["--yes"], "");
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert!(!marker.exists());

    let out = reset(&key, &[], "erase\n");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "signing with ",
        "factory reset accepted",
        " reset ",
        " reboot ",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    assert!(
        stdout.contains("succeeded: the device is unprovisioned and reboots"),
        "{stdout}"
    );
    assert!(marker.is_file(), "the erase waits for the next boot");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(s.root.join("run/atomix/actions.log"))
        .unwrap_or_default()
        .contains(r#""args":["reboot"]"#)
    {
        assert!(Instant::now() < deadline, "no reboot recorded");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The signed job list names it; an untrusted key reads nothing.
    let out = atomixctl(&[
        "jobs",
        "--device",
        &url,
        "-i",
        key.private.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(factory reset, api, created "),
        "{}",
        text(&out.stdout)
    );
    let out = atomixctl(&[
        "jobs",
        "--device",
        &url,
        "-i",
        key.private.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let list = json(&out);
    assert_eq!(list["jobs"][0]["kind"], "factory-reset");
    assert_eq!(list["jobs"][0]["state"], "succeeded");
    let out = atomixctl(&[
        "jobs",
        "--device",
        &url,
        "-i",
        stranger.private.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn factory_reset_of_a_busy_device_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "reset=sleep(4000)");
    let url = s.url();
    let k = key.private.to_str().unwrap();
    let first = std::thread::spawn({
        let (url, k) = (url.clone(), k.to_owned());
        move || atomixctl(&["factory-reset", "--device", &url, "-i", &k, "--yes"])
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.root.join("data/config/jobs").is_dir() {
        assert!(Instant::now() < deadline, "the first reset never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = atomixctl(&["factory-reset", "--device", &url, "-i", k, "--yes"]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("busy"), "{}", text(&out.stderr));
    let first = first.join().unwrap();
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
}
