//! The generated shell and manual material: completions for bash, zsh and fish, the man
//! page, and `ATOMIX_DEVICE` standing in for `--device`.

mod common;

use std::process::Command;

use common::{atomixctl, code, text};

const SUBCOMMANDS: &[&str] = &[
    "validate",
    "provision",
    "update",
    "status",
    "job",
    "schema",
    "completions",
    "man",
];

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = atomixctl(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        // fish spells a long option `-l device`.
        let device = if shell == "fish" {
            "-l device"
        } else {
            "--device"
        };
        assert!(script.contains(device), "{shell} completions lack --device");
    }
    let out = atomixctl(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");
}

#[test]
fn the_man_page_renders() {
    let out = atomixctl(&["man"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let roff = text(&out.stdout);
    assert!(
        roff.starts_with(".ie \\n(.g .ds Aq"),
        "not roff: {roff:.200}"
    );
    assert!(roff.contains(".TH atomixctl 1"), "{roff:.400}");
    for needle in ["ATOMIX_DEVICE", "Exit status", "provision"] {
        assert!(roff.contains(needle), "the man page lacks {needle}");
    }
    // With man(1) at hand, the page must also format without complaint.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("atomixctl.1");
    std::fs::write(&page, &out.stdout).unwrap();
    match Command::new("man")
        .args(["-l", "--warnings"])
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
    {
        Ok(man) => {
            assert!(man.status.success(), "man -l: {}", text(&man.stderr));
            let shown = text(&man.stdout);
            assert!(shown.contains("AtomixOS operator CLI"), "{shown}");
            assert!(
                text(&man.stderr).trim().is_empty(),
                "man -l warns: {}",
                text(&man.stderr)
            );
        }
        Err(e) => eprintln!("man(1) not run ({e}); the roff text was checked"),
    }
}

#[test]
fn atomix_device_stands_in_for_device() {
    // Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    let unreachable = "http://127.0.0.1:9";
    let out = Command::new(env!("CARGO_BIN_EXE_atomixctl"))
        .arg("status")
        .env("ATOMIX_DEVICE", unreachable)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 3, "unreachable: {stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");

    // --device wins over the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_atomixctl"))
        .args(["status", "--device", "http://127.0.0.1:7"])
        .env("ATOMIX_DEVICE", unreachable)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:7") && !stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );

    // Neither: a usage error that names both.
    let out = Command::new(env!("CARGO_BIN_EXE_atomixctl"))
        .arg("status")
        .env_remove("ATOMIX_DEVICE")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("--device <URL|NAME>"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_shows_exit_codes_and_examples() {
    let out = atomixctl(&["--help"]);
    let help = text(&out.stdout);
    for needle in [
        "Exit status:",
        "Examples:",
        "ATOMIX_DEVICE",
        "atomixctl schema >",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let out = atomixctl(&["status", "--help"]);
    assert!(
        text(&out.stdout).contains("[env: ATOMIX_DEVICE"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn schema_prints_the_shipped_schema() {
    let out = atomixctl(&["schema"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        text(&out.stdout),
        include_str!("../../config/config.schema.json"),
        "regenerate with: cargo run -p atomixctl -- schema > userspace/config/config.schema.json"
    );
}
