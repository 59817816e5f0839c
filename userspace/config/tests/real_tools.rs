//! Real tools judge the rendered output: `nft -c` in a private network namespace,
//! `dnsmasq --test`, podman's Quadlet generator and `systemd-analyze verify` (both from a
//! Debian trixie tree, run under chroot in a private mount namespace) on the generated
//! container services and on the update timer and its service.
//!
//! These need root and what `scripts/setup-config-tools.sh` installs (`scripts/test.sh`
//! runs it first). A missing tool is a failure naming the setup script, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use atomix_config::render::{render, RenderedTree};
use atomix_config::{check_bundle, config_sha256};

const SETUP: &str = "scripts/setup-config-tools.sh";

/// Every fixture the tools judge: the annotated example and `tests/fixtures/render/*.toml`,
/// checked as if in a bundle with `apps/hello/hello.tar`.
fn fixtures() -> Vec<(String, RenderedTree)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("../../examples/config.toml")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures/render"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    more.sort();
    paths.extend(more);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bundle_files = ["apps/hello/hello.tar"].into_iter().collect();
            let checked = check_bundle(&name, &text, &bundle_files);
            let config = checked
                .config
                .unwrap_or_else(|| panic!("{name}: {:#?}", checked.diagnostics));
            (name, render(&config, &config_sha256(&text)))
        })
        .collect()
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run {SETUP} (as root)");
}

fn quadlet_tree() -> PathBuf {
    let cache = std::env::var_os("ATOMIX_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/atomix"), PathBuf::from);
    let tree = cache.join("quadlet-tree");
    for needed in [
        "usr/libexec/podman/quadlet",
        "usr/bin/systemd-analyze",
        ".atomix-complete",
    ] {
        assert!(
            tree.join(needed).exists(),
            "{} lacks {needed}: run {SETUP} (as root)",
            tree.display()
        );
    }
    tree
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn nft_check(ruleset: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("atomix.nft");
    std::fs::write(&file, ruleset).unwrap();
    let (ok, _, err) = run(Command::new(tool("unshare"))
        .arg("-n")
        .arg(tool("nft"))
        .arg("-c")
        .arg("-f")
        .arg(&file));
    (ok, err)
}

fn dnsmasq_check(conf: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("atomix.conf");
    std::fs::write(&file, conf).unwrap();
    let (ok, out, err) = run(Command::new(tool("dnsmasq"))
        .arg("--test")
        .arg("-C")
        .arg(&file));
    (ok, format!("{out}{err}"))
}

#[test]
fn nft_accepts_every_rendered_ruleset() {
    let (ok, _) =
        nft_check("table inet atomix {\n\tchain input { tcp dport nonsense accept }\n}\n");
    assert!(!ok, "the judge must reject a broken ruleset");
    for (name, tree) in fixtures() {
        let (ok, err) = nft_check(tree.get("nftables/atomix.nft").unwrap());
        assert!(ok, "{name}: nft -c rejects the ruleset:\n{err}");
    }
}

#[test]
fn dnsmasq_accepts_every_rendered_config() {
    let (ok, _) = dnsmasq_check("dhcp-range=nonsense\n");
    assert!(!ok, "the judge must reject a broken config");
    for (name, tree) in fixtures() {
        let (ok, out) = dnsmasq_check(tree.get("dnsmasq/atomix.conf").unwrap());
        assert!(ok, "{name}: dnsmasq --test rejects the config:\n{out}");
    }
}

/// Runs Quadlet from the trixie tree over `units` (rootless: `-user`), writing the
/// generated services, then `systemd-analyze verify` on them (rootful only: user units
/// need a user manager). Returns (success, generated services by name, log).
fn quadlet(units: &Path, rootless: bool) -> (bool, Vec<(String, String)>, String) {
    let tree = quadlet_tree();
    let work = tempfile::tempdir().unwrap();
    let (src, out) = (work.path().join("units"), work.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    copy_dir(units, &src);
    let user = if rootless { "-user" } else { "" };
    let verify = if rootless {
        "true"
    } else {
        "cd /mnt/out && { ls *.service >/dev/null 2>&1 || exit 0; } && systemd-analyze verify --man=no *.service"
    };
    // A private mount namespace: the bind mount vanishes with the process, and parallel
    // tests each see their own /mnt inside the shared tree.
    let script = format!(
        "set -e; mount --bind '{work}' '{tree}/mnt'; \
         chroot '{tree}' /usr/bin/env QUADLET_UNIT_DIRS=/mnt/units /usr/libexec/podman/quadlet {user} /mnt/out; \
         chroot '{tree}' /bin/sh -c '{verify}'",
        work = work.path().display(),
        tree = tree.display(),
    );
    let (ok, stdout, stderr) = run(Command::new(tool("unshare"))
        .arg("-m")
        .arg("/bin/sh")
        .arg("-c")
        .arg(&script));
    let mut services = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "service") {
            services.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    services.sort();
    (ok, services, format!("{stdout}{stderr}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    if !from.exists() {
        return;
    }
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn quadlet_and_systemd_accept_every_rendered_unit() {
    // The judge must object to a unit Quadlet cannot convert.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("bad.container"), "[Container]\nNotAKey=1\n").unwrap();
    let (_, services, log) = quadlet(bad.path(), false);
    assert!(
        services.is_empty() && log.contains("NotAKey"),
        "quadlet accepted a broken unit:\n{log}"
    );

    for (name, tree) in fixtures() {
        let dir = tempfile::tempdir().unwrap();
        tree.write_into(&dir.path().join("r")).unwrap();
        for (set, rootless) in [("rootful", false), ("rootless", true)] {
            let units = dir.path().join("r/quadlet").join(set);
            let mut expected: Vec<String> = tree
                .files
                .keys()
                .filter_map(|k| k.strip_prefix(&format!("quadlet/{set}/")))
                .map(|u| match u.strip_suffix(".volume") {
                    Some(v) => format!("{v}-volume.service"),
                    None => u.replace(".container", ".service"),
                })
                .collect();
            expected.sort();
            let (ok, services, log) = quadlet(&units, rootless);
            assert!(
                ok,
                "{name} ({set}): quadlet or systemd-analyze failed:\n{log}"
            );
            assert!(
                !log.to_lowercase().contains("warning") && !log.contains("unsupported"),
                "{name} ({set}):\n{log}"
            );
            let got: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(got, expected, "{name} ({set}): generated services\n{log}");
        }
    }
}

#[test]
fn quoting_survives_quadlet_into_exec_start() {
    let (_, tree) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "quoting.toml")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    tree.write_into(&dir.path().join("r")).unwrap();
    let (ok, services, log) = quadlet(&dir.path().join("r/quadlet/rootful"), false);
    assert!(ok, "{log}");
    let exec = services[0]
        .1
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    println!("{exec}");
    let tail = exec
        .split_once(" docker.io/library/busybox:1.36 ")
        .unwrap()
        .1;
    assert_eq!(
        tail, EXPECTED_ARGS,
        "container arguments as Quadlet wrote them"
    );
    for env in EXPECTED_ENV {
        assert!(exec.contains(env), "{env} missing from {exec}");
    }
}

/// What systemd reads back as: sh, -c, `echo "hello world" 100% $HOME`, `back\slash`,
/// `semi;colon`, `it's` (`%%` is a literal `%`, `$$` a literal `$`).
const EXPECTED_ARGS: &str =
    r#"sh -c "echo \"hello world\" 100%% $$HOME" "back\\slash" semi;colon "it's""#;
const EXPECTED_ENV: &[&str] = &[
    r#"--env DOLLAR=$$x"#,
    r#"--env EMPTY="#,
    r#"--env "GREETING=hello world""#,
    r#"--env PCT=50%%"#,
    r#"--env "QUOTE=a\"b""#,
];

/// `systemd-analyze verify` from the trixie tree on the unit files in `units` (all of
/// them, by name). The tree has no RAUC, and verify refuses an ExecStart whose program
/// is missing: stubs of `rauc` and `atomix-provision` are overlaid on the tree's
/// /usr/bin, in the private mount namespace only. Returns (success, log).
fn verify_units(units: &Path) -> (bool, String) {
    let tree = quadlet_tree();
    let work = tempfile::tempdir().unwrap();
    let stub = work.path().join("stub");
    std::fs::create_dir_all(&stub).unwrap();
    for program in ["rauc", "atomix-provision"] {
        std::fs::write(stub.join(program), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            stub.join(program),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    copy_dir(units, &work.path().join("units"));
    let script = format!(
        "set -e; mount -t overlay overlay -o 'lowerdir={tree}/usr/bin:{stub}' '{tree}/usr/bin'; \
         mount --bind '{work}' '{tree}/mnt'; \
         chroot '{tree}' /bin/sh -c 'cd /mnt/units && systemd-analyze verify --man=no *'",
        work = work.path().display(),
        stub = stub.display(),
        tree = tree.display(),
    );
    let (ok, stdout, stderr) = run(Command::new(tool("unshare"))
        .arg("-m")
        .arg("/bin/sh")
        .arg("-c")
        .arg(&script));
    (ok, format!("{stdout}{stderr}"))
}

#[test]
fn systemd_accepts_the_update_timer_and_service() {
    // The judge must object to a value it cannot parse (a warning, not a failure) and
    // to a command line it cannot split.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("atomix-update.timer"),
        "[Timer]\nOnUnitActiveSec=6 parsecs\n",
    )
    .unwrap();
    std::fs::write(
        bad.path().join("atomix-update.service"),
        "[Service]\nType=oneshot\nExecStart=/usr/bin/rauc install \"unbalanced\n",
    )
    .unwrap();
    let (ok, log) = verify_units(bad.path());
    assert!(
        !ok && log.contains("parsecs") && log.contains("Unbalanced quoting"),
        "systemd-analyze accepted broken units:\n{log}"
    );

    let mut judged = 0;
    for (name, tree) in fixtures() {
        if tree.get("systemd/atomix-update.timer").is_none() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        tree.write_into(&dir.path().join("r")).unwrap();
        let (ok, log) = verify_units(&dir.path().join("r/systemd"));
        assert!(ok, "{name}: systemd-analyze verify failed:\n{log}");
        assert!(
            log.trim().is_empty(),
            "{name}: systemd-analyze says:\n{log}"
        );
        judged += 1;
    }
    assert!(judged >= 2, "the example and quoting.toml enable the timer");
}

/// Strings a value may hold that systemd or Quadlet would read differently if passed
/// through as they are.
const HOSTILE: &[&str] = &[
    "plain",
    "two words",
    "  leading and trailing  ",
    "quote\"inside",
    "single'quote",
    "back\\slash",
    "trailing\\",
    "\\\\double",
    "100%",
    "%n%%%",
    "$HOME",
    "${HOME}",
    "$$",
    "$",
    "semi;colon",
    "a ; b",
    "ünïcödé ✓ 日本語",
    "mixed\\\"'$%;",
    "=",
    "-dash",
    "#hash",
    "a\\nb",
    "\\x41",
    "{braces} *glob? `tick` !bang &amp |pipe <lt>",
    "ends with space ",
];

/// The words of a command line as systemd reads `ExecStart=`: continuation lines
/// joined, words split and unquoted with C escapes, then `%%` to `%` and `$$` to `$`
/// (any other specifier, and a lone `$`, which systemd would expand, are marked).
fn exec_words(unit: &str) -> Vec<String> {
    let mut line = String::new();
    let mut in_exec = false;
    for l in unit.lines() {
        if !in_exec {
            match l.strip_prefix("ExecStart=") {
                Some(rest) => {
                    in_exec = true;
                    line.push_str(rest);
                }
                None => continue,
            }
        } else {
            line.push_str(l);
        }
        match line.strip_suffix('\\') {
            Some(joined) => line = format!("{joined} "),
            None => break,
        }
    }
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                (c, None) if c.is_whitespace() => break,
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                ('\\', _) => {
                    let e = chars.next().expect("an escape at the end of the line");
                    match e {
                        'n' => word.push('\n'),
                        't' => word.push('\t'),
                        's' => word.push(' '),
                        'x' => {
                            let hex: String = chars.by_ref().take(2).collect();
                            word.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                        }
                        'u' | 'U' => {
                            let n = if e == 'u' { 4 } else { 8 };
                            let hex: String = chars.by_ref().take(n).collect();
                            word.push(
                                char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap(),
                            );
                        }
                        '\\' | '"' | '\'' => word.push(e),
                        other => panic!("escape \\{other} in {line}"),
                    }
                }
                (c, _) => word.push(c),
            }
        }
        let mut out = String::new();
        let mut it = word.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                // Quadlet's own arguments use specifiers (`%t/%N.cid`): any but `%%`
                // is kept marked, so a value of ours that still held one differs.
                '%' => match it.next() {
                    Some('%') => out.push('%'),
                    other => out.push_str(&format!("<specifier %{}>", other.unwrap_or(' '))),
                },
                '$' => match it.next() {
                    Some('$') => out.push('$'),
                    other => out.push_str(&format!("<expanded ${}>", other.unwrap_or(' '))),
                },
                c => out.push(c),
            }
        }
        words.push(out);
    }
    words
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn hostile_config(volumes: &[&str]) -> String {
    let exec: Vec<String> = HOSTILE.iter().map(|s| toml_str(s)).collect();
    let env: Vec<String> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, s)| format!("V{i} = {}", toml_str(s)))
        .collect();
    let vols: Vec<String> = volumes
        .iter()
        .map(|s| toml_str(&format!("/data/apps/web:/dst/{s}")))
        .collect();
    format!(
        "schema = 1\n[device]\nhostname = \"h\"\n[admin]\nssh-authorized-keys = [\"{}\"]\n\
         [network.lan]\naddress = \"192.168.100.1/24\"\n\
         [[containers]]\nname = \"web\"\nimage = \"docker.io/library/busybox:1.36\"\n\
         exec = [{}]\nvolumes = [{}]\n[containers.environment]\n{}\n",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop",
        exec.join(", "),
        vols.join(", "),
        env.join("\n"),
    )
}

/// Every hostile string either reaches the generated service exactly (as an argument
/// of Exec=, an Environment= value, a Volume= path, the update URL) or is refused by
/// validation at its line.
#[test]
fn hostile_values_arrive_unchanged_or_are_refused_at_their_line() {
    // Volume paths: each alone first; refused ones must be refused at the volume's line.
    let mut carried = Vec::new();
    for s in HOSTILE {
        let text = hostile_config(&[s]);
        let checked = atomix_config::check("config.toml", &text);
        if checked.is_valid() {
            carried.push(*s);
        } else {
            let line = text
                .lines()
                .position(|l| l.starts_with("volumes = "))
                .unwrap()
                + 1;
            assert!(
                checked
                    .errors()
                    .all(|d| d.line == line && d.path.starts_with("containers[0].volumes")),
                "volume {s:?}: {:#?}",
                checked.diagnostics
            );
            println!(
                "volume path refused: {s:?}: {}",
                checked.errors().next().unwrap()
            );
        }
    }
    let text = hostile_config(&carried);
    let checked = atomix_config::check("config.toml", &text);
    let config = checked
        .config
        .unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
    let tree = render(&config, &config_sha256(&text));
    let dir = tempfile::tempdir().unwrap();
    tree.write_into(&dir.path().join("r")).unwrap();
    let (ok, services, log) = quadlet(&dir.path().join("r/quadlet/rootful"), false);
    assert!(ok, "quadlet or systemd-analyze verify failed:\n{log}");
    let words = exec_words(&services[0].1);
    let image = words
        .iter()
        .position(|w| w == "docker.io/library/busybox:1.36")
        .unwrap();
    assert_eq!(words[image + 1..], *HOSTILE, "Exec= arguments");
    for (i, s) in HOSTILE.iter().enumerate() {
        let want = format!("V{i}={s}");
        assert!(
            words.windows(2).any(|w| w[0] == "--env" && w[1] == want),
            "Environment {want:?} not in {words:#?}"
        );
    }
    for s in &carried {
        let want = format!("/data/apps/web:/dst/{s}");
        assert!(
            words.windows(2).any(|w| w[0] == "-v" && w[1] == want),
            "Volume {want:?} not in {words:#?}"
        );
    }
    println!(
        "{} strings through Exec= and Environment=, {} through Volume=",
        HOSTILE.len(),
        carried.len()
    );

    // The update URL reaches the update service's ExecStart (no Quadlet in between).
    let mut urls = 0;
    for s in HOSTILE {
        let url = format!("https://u.example/b.raucb?{s}");
        let text = format!(
            "{}[update]\nrauc = true\nurl = {}\n",
            hostile_config(&[]),
            toml_str(&url)
        );
        let checked = atomix_config::check("config.toml", &text);
        let Some(config) = checked.config else {
            let line = text.lines().count();
            // Refused at its line (and, as a consequence, `rauc = true` lacks a url).
            let at_line = checked
                .errors()
                .find(|d| d.line == line && d.path == "update.url");
            assert!(
                at_line.is_some() && checked.errors().all(|d| d.path == "update.url"),
                "url {url:?}: {:#?}",
                checked.diagnostics
            );
            println!("update URL refused: {}", at_line.unwrap());
            continue;
        };
        let tree = render(&config, &config_sha256(&text));
        let service = tree.get("systemd/atomix-update.service").unwrap();
        let words = exec_words(service);
        assert_eq!(words.last(), Some(&url), "{service}");
        let dir = tempfile::tempdir().unwrap();
        tree.write_into(&dir.path().join("r")).unwrap();
        let (ok, log) = verify_units(&dir.path().join("r/systemd"));
        assert!(
            ok && log.trim().is_empty(),
            "{url:?}: systemd-analyze verify:\n{log}"
        );
        urls += 1;
    }
    println!("{urls} strings through the update URL");
}
