//! `atomixctl bundle`: the same inputs give the same bytes, the device's reader takes
//! them, and what the device would refuse is refused, naming the file, with nothing
//! written.

mod common;

use std::path::{Path, PathBuf};

use atomix_config::bundle::{read_bundle, Limits};
use common::{atomixctl, code, json, text};
use test_support::EXAMPLE;

/// A config whose `web` container runs an OCI archive shipped in the bundle.
fn config_with_archive() -> String {
    EXAMPLE.replace(
        "image = \"ghcr.io/acme/web:1.4.2\"",
        "image = \"oci-archive:/data/apps/web/web.tar\"",
    )
}

/// `config.toml` and `apps/` with a few files at a few depths, in `dir`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, config_with_archive()).unwrap();
    let apps = dir.join("apps");
    for (name, data) in [
        ("web/web.tar", &b"an OCI archive"[..]),
        ("web/static/index.html", b"<h1>edge</h1>\n"),
        ("web/static/a-b/c.css", b"h1 {}\n"),
        ("metrics/textfile/site.prom", b"site 17\n"),
    ] {
        let path = apps.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    (config, apps)
}

fn bundle(config: &Path, apps: Option<&Path>, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["bundle", config.to_str().unwrap()];
    if let Some(apps) = apps {
        args.extend(["--apps", apps.to_str().unwrap()]);
    }
    args.extend(["-o", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    atomixctl(&args)
}

/// The names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_same_inputs_give_the_same_bytes_which_the_device_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (config, apps) = inputs(dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let first = out_dir.join("atomix-config.tar.gz");
    let out = bundle(&config, Some(&apps), &first, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "wrote {}: config.toml and 4 file(s) under apps/",
            first.display()
        )),
        "{stdout}"
    );

    // Other times, other modes, files made in another order: the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = dir.path().join("again");
    let (config2, apps2) = inputs(&again);
    std::fs::remove_file(apps2.join("web/static/index.html")).unwrap();
    std::fs::write(apps2.join("web/static/index.html"), b"<h1>edge</h1>\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        apps2.join("web/web.tar"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let second = out_dir.join("second.tar.gz");
    let out = bundle(&config2, Some(&apps2), &second, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let bytes = std::fs::read(&first).unwrap();
    assert!(bytes == std::fs::read(&second).unwrap(), "not reproducible");
    assert_eq!(listing(&out_dir), ["atomix-config.tar.gz", "second.tar.gz"]);

    // The device's reader and checks, on these bytes.
    let b = read_bundle(&bytes, Limits::default()).unwrap();
    assert_eq!(b.config, config_with_archive());
    assert_eq!(
        b.files.keys().collect::<Vec<_>>(),
        [
            "apps/metrics/textfile/site.prom",
            "apps/web/static/a-b/c.css",
            "apps/web/static/index.html",
            "apps/web/web.tar",
        ]
    );
    assert_eq!(b.files["apps/web/web.tar"], b"an OCI archive");
    let shown = first.display().to_string();
    assert!(atomix_config::report::check_input(&shown, &bytes).is_valid());
    let out = atomixctl(&["validate", &shown]);
    assert_eq!(text(&out.stdout).lines().next(), Some("ok"));

    // A plain tar when asked for one; it holds the same.
    let tar = out_dir.join("atomix-config.tar");
    let out = bundle(&config, Some(&apps), &tar, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let plain = std::fs::read(&tar).unwrap();
    assert_eq!(&plain[257..262], b"ustar");
    assert_eq!(read_bundle(&plain, Limits::default()).unwrap(), b);

    // --json: what was written.
    let out = bundle(&config, Some(&apps), &first, &["--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["output"], shown.as_str());
    assert_eq!(report["bytes"], bytes.len());
    assert_eq!(report["sha256"], atomix_api::sha256_hex(&bytes).as_str());
    assert_eq!(report["members"][0], "config.toml");
    assert_eq!(report["members"].as_array().unwrap().len(), 5);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn without_apps_the_bundle_holds_the_config_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    std::fs::write(&config, EXAMPLE).unwrap();
    let out_path = dir.path().join("atomix-config.tar.gz");
    let out = bundle(&config, None, &out_path, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let b = read_bundle(&std::fs::read(&out_path).unwrap(), Limits::default()).unwrap();
    assert_eq!((b.config.as_str(), b.files.len()), (EXAMPLE, 0));
}

#[test]
fn what_the_device_refuses_is_refused_naming_the_file_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out_path = out_dir.join("atomix-config.tar.gz");
    // An earlier bundle stays as it was.
    std::fs::write(&out_path, b"the earlier bundle").unwrap();

    type Setup = fn(&Path, &Path) -> PathBuf;
    let cases: Vec<(&str, Setup, i32, &[&str])> = vec![
        (
            "a symbolic link in --apps",
            |_, apps| {
                std::os::unix::fs::symlink("index.html", apps.join("web/static/link")).unwrap();
                apps.join("web/static/link")
            },
            1,
            &["apps/web/static/link: refused: symbolic links are not allowed"],
        ),
        (
            "a FIFO in --apps",
            |_, apps| {
                let fifo = apps.join("web/fifo");
                let made = std::process::Command::new("mkfifo").arg(&fifo).status();
                assert!(made.unwrap().success(), "mkfifo");
                fifo
            },
            1,
            &["apps/web/fifo: refused: device nodes and FIFOs are not allowed"],
        ),
        (
            "a file over the bundle's size (sparse, never read)",
            |_, apps| {
                let big = apps.join("web/big.bin");
                std::fs::File::create(&big)
                    .unwrap()
                    .set_len(16 << 20)
                    .unwrap();
                big
            },
            1,
            &["the bundle is larger than 16777216 bytes uncompressed: apps/web/big.bin crosses the limit"],
        ),
        (
            "a config over 256 KiB",
            |config, _| {
                let mut text = config_with_archive();
                text.push_str(&"# padding\n".repeat(30_000));
                std::fs::write(config, text).unwrap();
                config.to_owned()
            },
            1,
            &["config.toml: refused: larger than 262144 bytes"],
        ),
        (
            "a name with a backslash",
            |_, apps| {
                let bad = apps.join("web/a\\b.css");
                std::fs::write(&bad, b"x").unwrap();
                bad
            },
            1,
            &["apps/web/a\\b.css: refused: backslashes and control characters are not allowed in names"],
        ),
        (
            "a name component over 240 bytes",
            |_, apps| {
                let bad = apps.join("web").join("n".repeat(241));
                std::fs::write(&bad, b"x").unwrap();
                bad
            },
            1,
            &["refused: a name component is longer than 240 bytes"],
        ),
        (
            "a file directly in --apps",
            |_, apps| {
                let bad = apps.join("README");
                std::fs::write(&bad, b"x").unwrap();
                bad
            },
            1,
            &["apps/README: refused: files go under apps/<container>/"],
        ),
        (
            "a config that is not valid",
            |config, _| {
                let text = config_with_archive().replace("edge-042", "Not A Host Name!");
                std::fs::write(config, text).unwrap();
                config.to_owned()
            },
            1,
            &["is not valid; nothing was written:", "device.hostname"],
        ),
        (
            "a config naming an archive the bundle lacks",
            |_, apps| {
                std::fs::remove_file(apps.join("web/web.tar")).unwrap();
                // The config names the file.
                apps.parent().unwrap().join("config.toml")
            },
            1,
            &["is not valid; nothing was written:", "apps/web/web.tar is not in the bundle"],
        ),
        (
            "a config that is not UTF-8",
            |config, _| {
                std::fs::write(config, b"schema = 1\n\xff\n").unwrap();
                config.to_owned()
            },
            1,
            &["config.toml is not UTF-8 text"],
        ),
        (
            "a missing config",
            |config, _| {
                std::fs::remove_file(config).unwrap();
                config.to_owned()
            },
            2,
            &["cannot read "],
        ),
        (
            "a missing --apps",
            |_, apps| {
                std::fs::remove_dir_all(apps).unwrap();
                apps.to_owned()
            },
            2,
            &["cannot read "],
        ),
    ];
    for (i, (what, setup, want_code, wants)) in cases.into_iter().enumerate() {
        let case = dir.path().join(format!("case-{i}"));
        let (config, apps) = inputs(&case);
        let named = setup(&config, &apps);
        let out = bundle(&config, Some(&apps), &out_path, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), want_code, "{what}: {stderr}");
        assert!(
            stderr.contains(&named.display().to_string()),
            "{what}: {} is not named in:\n{stderr}",
            named.display()
        );
        for want in wants {
            assert!(
                stderr.contains(want),
                "{what}: {want:?} missing from:\n{stderr}"
            );
        }
        assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
        assert_eq!(listing(&out_dir), ["atomix-config.tar.gz"], "{what}");
        assert_eq!(
            std::fs::read(&out_path).unwrap(),
            b"the earlier bundle",
            "{what}"
        );
    }
}

#[test]
fn an_output_that_cannot_be_written_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (config, apps) = inputs(dir.path());
    let missing = dir.path().join("no-such-dir/atomix-config.tar.gz");
    let out = bundle(&config, Some(&apps), &missing, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stderr.contains("cannot create"), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    assert_eq!(listing(dir.path()), ["apps", "config.toml"]);
}

#[test]
fn completions_and_the_man_page_know_bundle() {
    for shell in ["bash", "zsh", "fish"] {
        let script = text(&atomixctl(&["completions", shell]).stdout);
        assert!(
            script.contains("bundle") && script.contains("apps"),
            "{shell}"
        );
    }
    assert!(text(&atomixctl(&["man"]).stdout).contains("bundle"));
}

#[test]
fn bundle_help_shows_an_example() {
    let out = atomixctl(&["bundle", "--help"]);
    let help = text(&out.stdout);
    for needle in [
        "Examples:",
        "atomixctl bundle config.toml -o atomix-config.tar.gz",
        "--apps <DIR>",
        "same bytes",
    ] {
        assert!(
            help.contains(needle),
            "bundle --help lacks {needle:?}:\n{help}"
        );
    }
}
