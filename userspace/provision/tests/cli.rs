//! The CLI contract: exit codes, output lines, JSON, byte-identical rendering.

use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/config.toml");

fn provision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(args)
        .output()
        .expect("run atomix-provision")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn validate_exit_codes_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.toml");
    let text = std::fs::read_to_string(EXAMPLE).unwrap().replace(
        "hostname = \"edge-042\"",
        "hostname = \"edge 042\"\nowner = 1",
    );
    std::fs::write(&bad, text).unwrap();
    let bad = bad.to_str().unwrap();

    let ok = provision(&["validate", EXAMPLE]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(stdout(&ok), "ok\n");

    let invalid = provision(&["validate", bad]);
    assert_eq!(invalid.status.code(), Some(1));
    let out = stdout(&invalid);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&format!("{bad}:8:12: device.hostname: \"edge 042\" is not")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("{bad}:9:1: device.owner: unknown field `owner`")),
        "{out}"
    );

    let json = provision(&["validate", bad, "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][1]["line"], 9);
    assert_eq!(v["errors"][1]["column"], 1);
    assert_eq!(v["errors"][1]["path"], "device.owner");

    let missing = provision(&["validate", "/nonexistent/config.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/config.toml")
    );
}

fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn render_is_byte_identical_and_refuses_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = provision(&["render", EXAMPLE, "--out", out.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (ta, tb) = (read_tree(&a), read_tree(&b));
    assert_eq!(ta, tb);
    let names: Vec<&str> = ta.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"quadlet/rootful/web.container"),
        "{names:?}"
    );
    assert!(
        names.contains(&"quadlet/rootless/metrics.container"),
        "{names:?}"
    );

    let again = provision(&["render", EXAMPLE, "--out", a.to_str().unwrap()]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a non-empty output directory is refused"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "schema = 1\n").unwrap();
    let o = provision(&[
        "render",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("c").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.path().join("c").exists());
}

#[test]
fn factory_reset_asks_then_wipes_data_but_keeps_the_mount_point() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("config/generations/1")).unwrap();
    std::fs::create_dir_all(data.join("atomix")).unwrap();
    std::fs::write(data.join("atomix/fresh-flash"), "{}").unwrap();
    std::os::unix::fs::symlink("generations/1", data.join("config/current")).unwrap();
    let root = dir.path().to_str().unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["factory-reset", "--root", root])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborted"));
    assert!(data.join("config/current").exists(), "nothing changed");

    let out = provision(&["factory-reset", "--root", root, "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.is_dir(), "the mount point stays");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

/// `factory-reset --pending` (atomix-factory-reset.service at boot): nothing without the
/// marker the API's reset job writes, everything under data/ with it.
#[test]
fn factory_reset_pending_erases_only_when_the_marker_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("config/generations/1")).unwrap();
    std::fs::create_dir_all(data.join("atomix")).unwrap();
    std::os::unix::fs::symlink("generations/1", data.join("config/current")).unwrap();
    let root = dir.path().to_str().unwrap();

    let out = provision(&["factory-reset", "--root", root, "--pending"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        data.join("config/current").exists(),
        "no marker: nothing erased"
    );

    std::fs::write(data.join("atomix/factory-reset"), "requested\n").unwrap();
    let out = provision(&["factory-reset", "--root", root, "--pending"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.is_dir(), "the mount point stays");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);

    let both = provision(&["factory-reset", "--root", root, "--pending", "--yes"]);
    assert_eq!(both.status.code(), Some(2), "--pending asks nothing");
}

/// The man page and the completions come from the same clap definitions: every
/// subcommand is in both, with its help text in the man page.
#[test]
fn man_page_and_completions_cover_every_subcommand() {
    let man = provision(&["man"]);
    assert!(man.status.success());
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(
        man.starts_with(".ie"),
        "roff: {}",
        &man[..40.min(man.len())]
    );
    for sub in [
        "validate",
        "render",
        "serve",
        "restore",
        "factory\\-reset",
        "slot",
        "update\\-install",
        "nbd\\-hold",
    ] {
        assert!(man.contains(sub), "{sub} missing from the man page");
    }
    assert!(man.contains("Run the provisioning service"), "{man}");
    for shell in ["bash", "zsh", "fish"] {
        let out = provision(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in ["validate", "serve", "factory-reset", "update-install"] {
            assert!(text.contains(sub), "{shell}: {sub} missing");
        }
    }
    let bad = provision(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tcsh"));
}
