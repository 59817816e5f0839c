//! Progress when stderr is not a terminal (a log, CI, this test's pipe): plain lines, one
//! per new tenth, with the rate and the time left; no bar, no control characters, and
//! nothing on stdout, whose contract is the result.

mod common;

use std::path::{Path, PathBuf};

use common::{atomixctl, code, json, start, text};
use test_support::{config_with_admin, keygen};

/// The percentages of the lines starting `verb ` in `stderr`, in order; each line has a
/// rate, and the time left until the last.
fn percentages(stderr: &str, verb: &str) -> Vec<u32> {
    let prefix = format!("{verb} ");
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (pct, tail) = rest.split_once("% (")?;
            assert!(tail.contains(" MiB/s"), "no rate: {l}");
            let pct: u32 = pct.parse().ok()?;
            if pct < 100 {
                assert!(tail.ends_with(" left)") || tail.ends_with("MiB/s)"), "{l}");
            } else {
                assert!(tail.contains(" MiB in "), "{l}");
            }
            Some(pct)
        })
        .collect()
}

fn assert_plain(stderr: &str) {
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "a bar was drawn into a pipe: {stderr:?}"
    );
}

/// Percentages that only go up, in steps of ten, ending at 100.
fn assert_rising_to_100(pcts: &[u32], what: &str, stderr: &str) {
    assert_eq!(pcts.last(), Some(&100), "{what}:\n{stderr}");
    assert!(pcts.windows(2).all(|w| w[0] < w[1]), "{what}:\n{stderr}");
    assert!(pcts.iter().all(|p| p % 10 == 0), "{what}:\n{stderr}");
    assert!(pcts.len() >= 3, "{what}: too few lines:\n{stderr}");
}

/// Bytes no compressor shrinks (xorshift), so a bundle of them stays this large.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn raucb(dir: &Path) -> PathBuf {
    let path = dir.join("atomixos-rock64.raucb");
    std::fs::write(&path, noise(6 << 20)).unwrap();
    path
}

#[test]
fn update_prints_a_line_per_tenth_for_hashing_and_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "");
    let bundle = raucb(dir.path());
    let out = atomixctl(&[
        "update",
        "--device",
        &s.url(),
        "-i",
        key.private.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_plain(&stderr);
    assert_rising_to_100(&percentages(&stderr, "hashed"), "hashed", &stderr);
    assert_rising_to_100(&percentages(&stderr, "uploaded"), "uploaded", &stderr);
    // Hashing is done before signing, signing before uploading.
    let hashed = stderr.find("hashed 100% ").unwrap();
    let signing = stderr.find("signing with ").unwrap();
    let uploaded = stderr.find("uploaded 100% ").unwrap();
    assert!(hashed < signing && signing < uploaded, "{stderr}");
    assert!(!stdout.contains("% ("), "progress on stdout: {stdout}");
}

#[test]
fn provision_shows_progress_for_a_large_bundle_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let s = start(dir.path(), &key, "");
    let key_arg = key.private.to_str().unwrap();

    // A config.toml: no progress lines.
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config_with_admin(&key, "edge-300")).unwrap();
    let out = atomixctl(&[
        "provision",
        "--device",
        &s.url(),
        "-i",
        key_arg,
        cfg.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(!stderr.contains("% ("), "{stderr}");

    // A bundle of 3 MiB (its files do not compress): a line per tenth.
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(apps.join("web")).unwrap();
    std::fs::write(apps.join("web/blob.bin"), noise(3 << 20)).unwrap();
    std::fs::write(&cfg, config_with_admin(&key, "edge-301")).unwrap();
    let gz = dir.path().join("atomix-config.tar.gz");
    let out = atomixctl(&[
        "bundle",
        cfg.to_str().unwrap(),
        "--apps",
        apps.to_str().unwrap(),
        "-o",
        gz.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = atomixctl(&[
        "provision",
        "--device",
        &s.url(),
        "-i",
        key_arg,
        gz.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&out), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_plain(&stderr);
    assert_rising_to_100(&percentages(&stderr, "hashed"), "hashed", &stderr);
    assert_rising_to_100(&percentages(&stderr, "uploaded"), "uploaded", &stderr);
    assert!(
        stdout.contains("succeeded: generation 2 is current"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(s.root.join("data/apps/web/blob.bin")).unwrap(),
        noise(3 << 20),
        "the device holds the bundle's file"
    );

    // --json: the job's JSON on stdout, nothing on stderr.
    std::fs::write(&cfg, config_with_admin(&key, "edge-302")).unwrap();
    let out = atomixctl(&[
        "bundle",
        cfg.to_str().unwrap(),
        "--apps",
        apps.to_str().unwrap(),
        "-o",
        gz.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = atomixctl(&[
        "provision",
        "--device",
        &s.url(),
        "-i",
        key_arg,
        "--json",
        gz.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(json(&out)["state"], "succeeded");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
