//! Validation of the worst inputs of the maximum size: wall time and peak RSS of each.
//!
//! `cargo bench -p atomix-config --bench worst_inputs` prints one line per input. Each
//! input is checked in a child process of its own (this binary, re-run with `--case`),
//! so the peak RSS (`VmHWM`) is that input's alone. The inputs are what an
//! unauthenticated client can send to `POST /api/validate`: config text up to
//! `Limits::config_bytes`, bundles up to `Limits::bundle_bytes` uncompressed.
//! `WORST_CONFIG_BYTES=N` makes the config inputs N bytes instead (and lets them through).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use atomix_config::bundle::{read_input, Input, Limits};

const HEAD: &str = "schema = 1\n[device]\nhostname = \"edge-042\"\n[admin]\nssh-authorized-keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop\"]\n[network.lan]\naddress = \"192.168.100.1/24\"\n";

/// The size of the config inputs: the limit, or `WORST_CONFIG_BYTES` (to compare builds
/// with different limits on the same inputs; the limit is raised to match).
fn limit() -> usize {
    std::env::var("WORST_CONFIG_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Limits::default().config_bytes as usize)
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.config_bytes = l.config_bytes.max(limit() as u64);
    l
}

/// `head`, then `item` repeated (made by `f(i)`) while the text stays within the limit,
/// then `tail`.
fn fill(head: &str, f: impl Fn(usize) -> String, sep: &str, tail: &str) -> String {
    let mut out = head.to_owned();
    let room = limit() - tail.len();
    for i in 0.. {
        let item = f(i);
        if out.len() + item.len() + sep.len() > room {
            break;
        }
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&item);
    }
    out.push_str(tail);
    out
}

fn container(extra: &str) -> String {
    format!("{HEAD}[[containers]]\nname = \"a\"\nimage = \"docker.io/library/nginx\"\n{extra}")
}

/// The inputs, by name.
fn cases() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "publish-duplicates-one-line",
            "one container, publish = [\"8000:80\", ...] on one line",
        ),
        ("publish-duplicates-lines", "the same, one entry per line"),
        (
            "publish-distinct-udp-rules",
            "distinct published tcp ports, half the file udp WAN rules none of them match",
        ),
        (
            "firewall-duplicates",
            "[[firewall.allow]] the same rule, repeated",
        ),
        (
            "containers-duplicate-names",
            "[[containers]] with the same name, repeated",
        ),
        (
            "volumes-duplicates",
            "one container, the same volume destination repeated",
        ),
        (
            "environment-many",
            "one container, many environment variables",
        ),
        (
            "invalid-values",
            "publish = [\"x\", ...]: every value an error",
        ),
        ("unknown-keys", "one table with many unknown keys"),
        (
            "invalid-containers",
            "[[containers]] each with an invalid name: one decoding round each",
        ),
        ("syntax-errors", "a line of syntax errors, repeated"),
        (
            "bundle-max",
            "a 16 MiB tar: the worst config plus 1022 files",
        ),
        ("bundle-gzip-bomb", "a small gzip that inflates past 16 MiB"),
    ]
}

fn config_text(name: &str) -> String {
    match name {
        "publish-duplicates-one-line" => fill(
            &container("publish = ["),
            |_| "\"8000:80\"".into(),
            ", ",
            "]\n",
        ),
        "publish-duplicates-lines" => fill(
            &container("publish = [\n"),
            |_| "\"8000:80\"".into(),
            ",\n",
            "]\n",
        ),
        "publish-distinct-udp-rules" => {
            let half = limit() / 2;
            let mut rules = HEAD.to_owned();
            let mut i = 0;
            while rules.len() < half {
                rules.push_str(&format!(
                    "[[firewall.allow]]\nzone = \"wan\"\nproto = \"udp\"\nport = {}\n",
                    1 + i % 60000
                ));
                i += 1;
            }
            let head = format!("{rules}[[containers]]\nname = \"a\"\nimage = \"docker.io/library/nginx\"\npublish = [");
            fill(
                &head,
                |i| format!("\"{}:80\"", 1024 + i % 60000),
                ",",
                "]\n",
            )
        }
        "firewall-duplicates" => fill(
            HEAD,
            |_| "[[firewall.allow]]\nzone = \"wan\"\nproto = \"tcp\"\nport = 443\n".into(),
            "",
            "",
        ),
        "containers-duplicate-names" => fill(
            HEAD,
            |_| "[[containers]]\nname = \"a\"\nimage = \"docker.io/x/y\"\n".into(),
            "",
            "",
        ),
        "volumes-duplicates" => fill(&container("volumes = ["), |_| "\"d:/d\"".into(), ",", "]\n"),
        "environment-many" => fill(
            &container("[containers.environment]\n"),
            |i| format!("V{i} = \"$x\"\n"),
            "",
            "",
        ),
        "invalid-values" => fill(&container("publish = ["), |_| "\"x\"".into(), ",", "]\n"),
        "invalid-containers" => fill(
            HEAD,
            |_| "[[containers]]\nname = \"A\"\nimage = \"docker.io/x/y\"\n".into(),
            "",
            "",
        ),
        "unknown-keys" => fill(
            &format!("{HEAD}[time]\n"),
            |i| format!("k{i} = 1\n"),
            "",
            "",
        ),
        "syntax-errors" => fill(HEAD, |_| "a = = \n".into(), "", ""),
        other => panic!("no config case {other}"),
    }
}

fn tar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("short name");
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn input_bytes(name: &str) -> Vec<u8> {
    let limits = limits();
    match name {
        "bundle-max" => {
            let mut out = Vec::new();
            tar_member(
                &mut out,
                "config.toml",
                config_text("publish-duplicates-one-line").as_bytes(),
            );
            let files = limits.entries - 2;
            let room = limits.bundle_bytes as usize - out.len() - 1024 - files * 1024;
            let each = room / files / 512 * 512;
            for i in 0..files {
                tar_member(&mut out, &format!("apps/a/{i}"), &vec![b'x'; each]);
            }
            out.resize(out.len() + 1024, 0);
            assert!(out.len() as u64 <= limits.bundle_bytes);
            out
        }
        "bundle-gzip-bomb" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let mut tar = Vec::new();
            tar_member(&mut tar, "config.toml", b"");
            e.write_all(&tar).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_path("apps/a/big").unwrap();
            h.set_size(1 << 30);
            h.set_mode(0o644);
            h.set_cksum();
            e.write_all(h.as_bytes()).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..20 {
                e.write_all(&zeros).unwrap();
            }
            e.finish().unwrap()
        }
        other => config_text(other).into_bytes(),
    }
}

/// Checks one input as the service does; returns (diagnostics, outcome).
fn run(bytes: &[u8]) -> String {
    match read_input(bytes, limits()) {
        Err(e) => format!("refused: {e}"),
        Ok(Input::Config(text)) => {
            let c = atomix_config::check("config.toml", &text);
            format!(
                "{} errors, {} warnings",
                c.errors().count(),
                c.warnings().count()
            )
        }
        Ok(Input::Bundle(b)) => {
            let names = b.files.keys().map(String::as_str).collect();
            let c = atomix_config::check_bundle("config.toml", &b.config, &names);
            format!(
                "bundle: {} errors, {} warnings",
                c.errors().count(),
                c.warnings().count()
            )
        }
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let name = &args[i + 1];
        let bytes = input_bytes(name);
        let before = peak_rss_kib();
        let start = Instant::now();
        let outcome = run(&bytes);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}\t{}\t{secs:.3}\t{before}\t{}\t{outcome}",
            bytes.len(),
            peak_rss_kib()
        );
        return;
    }
    let filter: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with("--")).collect();
    println!(
        "{:<30} {:>9} {:>8} {:>9} {:>9}  outcome",
        "input", "bytes", "time s", "input KiB", "peak KiB"
    );
    let me = std::env::current_exe().expect("own path");
    for (name, what) in cases() {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let out = Command::new(&me)
            .args(["--case", name])
            .output()
            .expect("run a case");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim_end().splitn(6, '\t').collect();
        if !out.status.success() || f.len() < 6 {
            println!(
                "{name:<30} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        println!(
            "{:<30} {:>9} {:>8} {:>9} {:>9}  {}   ({what})",
            f[0], f[1], f[2], f[3], f[4], f[5]
        );
    }
}
