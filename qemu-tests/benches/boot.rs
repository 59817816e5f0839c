//! Boot benchmark: boots built images under QEMU several times and reports, phase by
//! phase, the median and the spread (min-max) of each.
//!
//! ```text
//! cargo bench -p atomix-qemu-tests --bench boot -- [--runs N] [--compare DIR] [IMAGE_DIR]
//! ```
//! (`scripts/bench-boot.sh` runs it.) `IMAGE_DIR` defaults to `build/`; `--compare DIR`
//! boots a second build output (e.g. a kept build of an older commit) in the same run,
//! interleaved run by run, so both see the same machine load.
//!
//! Each run flashes a new device and boots it three times:
//! - **fresh flash**: a boot seed (`/boot/config.toml`) provisions it;
//! - **steady reboot**: `systemctl reboot` of the provisioned device (its unchanged config
//!   re-applied);
//! - **floor**: the same steady reboot with `first-boot.service` masked on the kernel
//!   command line, so the cost of the provisioning service and its apply shows.
//!
//! Every boot runs with `systemd.show_status=1` and `chrony-wait.service` masked (the boot
//! script is rewritten on the device's disk): the console shows each unit, and the boot
//! is not held 3 minutes for a time server this network lacks. Clocks: QEMU start →
//! U-Boot banner → `Starting kernel` are host times of console lines; everything after is
//! on the guest's clock since kernel start where the guest has one (printk stamps,
//! `systemctl show` timestamps, the journal, `boot.json`), else host time since
//! `Starting kernel` (marked `host`). `systemd-analyze` (critical chain of
//! `first-boot.service`, blame) of each provisioned boot is kept in
//! `target/qemu-tests/bench-*/analyze-*.txt`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atomix_qemu_tests::{host, test_config, test_key, Device, Image};

const BOOT: Duration = Duration::from_secs(600);

/// Host-side times of console lines, polled every 50 ms while waiting for something.
struct Console {
    started: Instant,
    seen: BTreeMap<&'static str, f64>,
}

/// Console markers timed on the host: (name, text on the console).
const MARKERS: &[(&str, &str)] = &[
    ("u-boot banner", "U-Boot 20"),
    ("kernel start", "Starting kernel"),
];

impl Console {
    fn new() -> Console {
        Console {
            started: Instant::now(),
            seen: BTreeMap::new(),
        }
    }

    fn poll(&mut self, device: &Device) {
        let text = plain(&device.console());
        let now = self.started.elapsed().as_secs_f64();
        for (name, needle) in MARKERS {
            if !self.seen.contains_key(name) && text.contains(needle) {
                self.seen.insert(name, now);
            }
        }
    }

    /// Waits (polling the console) until `done` says so.
    fn wait(&mut self, device: &mut Device, what: &str, mut done: impl FnMut(&mut Device) -> bool) {
        let deadline = Instant::now() + BOOT;
        loop {
            self.poll(device);
            if done(device) {
                self.poll(device);
                return;
            }
            assert!(!device.exited(), "QEMU exited while waiting for {what}");
            assert!(Instant::now() < deadline, "no {what} within {BOOT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Console text without its colours (systemd's status lines carry ANSI escapes).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One boot's phases, in seconds: `(phase, seconds)`, in boot order.
type Phases = Vec<(String, f64)>;
/// Every run's values of each phase, phases in first-seen order.
type Rows = Vec<(String, Vec<f64>)>;

/// The printk stamp of the first console line containing `needle`.
fn printk_stamp(console: &str, needle: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(needle))?;
    let open = line.find('[')?;
    let close = line[open..].find(']')? + open;
    line[open + 1..close].trim().parse().ok()
}

/// `systemctl show` monotonic timestamps (µs) in seconds.
fn monotonic(props: &str, key: &str) -> Option<f64> {
    let value: f64 = props
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))?
        .parse()
        .ok()?;
    (value > 0.0).then_some(value / 1e6)
}

/// The monotonic stamp of the first `journalctl -o short-monotonic` line with `needle`.
fn journal_stamp(journal: &str, needle: &str) -> Option<f64> {
    printk_stamp(journal, needle)
}

/// What the device's own clocks say about this boot, read over SSH once it is provisioned.
fn guest_phases(device: &Device, admin: &Path, phases: &mut Phases) {
    let console = device.console();
    let manager = device.ssh(
        admin,
        "systemctl show -p InitRDTimestampMonotonic -p UserspaceTimestampMonotonic \
         -p FinishTimestampMonotonic",
    );
    let first_boot = device.ssh(
        admin,
        "systemctl show first-boot.service -p ExecMainStartTimestampMonotonic -p MainPID",
    );
    let journal = device.ssh(
        admin,
        // Both atomix-initrd and the service log to /dev/kmsg: the kernel's log has them
        // (-k with -u would have to match both at once).
        "sudo journalctl -b -o short-monotonic --no-pager -k \
         | grep -E 'atomix-initrd|atomix-provision' || true",
    );
    let record: serde_json::Value =
        serde_json::from_str(&device.ssh(admin, "cat /run/atomix/boot.json")).unwrap_or_default();
    let mut push = |name: &str, value: Option<f64>| {
        if let Some(v) = value {
            phases.push((name.to_owned(), v));
        }
    };
    push(
        "initramfs /init",
        printk_stamp(&console, "Run /init as init process"),
    );
    push(
        "initrd systemd",
        monotonic(&manager, "InitRDTimestampMonotonic"),
    );
    let initrd_start = journal_stamp(&journal, "atomix-initrd");
    push("atomix-initrd start", initrd_start);
    if let (Some(mut at), Some(steps)) = (initrd_start, record["steps"].as_array()) {
        for step in steps {
            at += step["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            push(
                &format!("  after {}", step["step"].as_str().unwrap_or("?")),
                Some(at),
            );
        }
    }
    push(
        "switch-root",
        monotonic(&manager, "UserspaceTimestampMonotonic"),
    );
    push(
        "first-boot.service start",
        monotonic(&first_boot, "ExecMainStartTimestampMonotonic"),
    );
    push("API listening", journal_stamp(&journal, "listening on"));
    push(
        "boot finished (systemd)",
        monotonic(&manager, "FinishTimestampMonotonic"),
    );
    let pid = first_boot
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))
        .unwrap_or("0")
        .to_owned();
    if pid != "0" {
        let status = device.ssh(
            admin,
            &format!("grep -E '^Vm(RSS|HWM):' /proc/{pid}/status"),
        );
        for line in status.lines() {
            let mut words = line.split_whitespace();
            if let (Some(key), Some(kib)) = (words.next(), words.next()) {
                let name = match key {
                    "VmRSS:" => "service RSS idle (MiB)",
                    _ => "service RSS peak (MiB)",
                };
                phases.push((name.to_owned(), kib.parse::<f64>().unwrap_or(0.0) / 1024.0));
            }
        }
    }
}

/// Waits until the LAN API says provisioned with no job running.
fn provisioned(device: &mut Device) -> bool {
    matches!(device.get(device.lan_port, "/api/health"),
        Ok((200, h)) if h["provisioned"] == true && h["job"].is_null())
}

fn host_phases(console: &Console, phases: &mut Phases, end: Option<(&str, f64)>) {
    for (name, _) in MARKERS {
        if let Some(t) = console.seen.get(name) {
            let kernel = console.seen.get("kernel start").copied();
            match (*name, kernel) {
                ("u-boot banner", _) | ("kernel start", _) => {
                    phases.push((format!("{name} (host, from QEMU start)"), *t));
                }
                (_, Some(k)) => phases.push((format!("{name} (host)"), t - k)),
                _ => {}
            }
        }
    }
    if let (Some((name, t)), Some(k)) = (end, console.seen.get("kernel start")) {
        phases.push((format!("{name} (host)"), t - k));
    }
}

/// The device's boot script with `extra` kernel arguments (and status on the console).
fn boot_script_with(device: &mut Device, extra: &str) -> Vec<u8> {
    let scr = device.read_boot_file("boot.scr");
    // A legacy U-Boot script image: a 64-byte header, then (length, 0) and the script.
    let len = u32::from_be_bytes(scr[64..68].try_into().unwrap()) as usize;
    let script = String::from_utf8_lossy(&scr[72..72 + len]).into_owned();
    // The image's `systemd.show_status=auto`, or what an earlier rewrite put there.
    let at = script
        .find("systemd.show_status=")
        .expect("boot.scr sets systemd.show_status");
    let end = script[at..]
        .find([' ', '"'])
        .map_or(script.len(), |n| at + n);
    let script = format!(
        "{}systemd.show_status=1{extra}{}",
        &script[..at],
        &script[end..]
    );
    let dir = &device.dir;
    let cmd = dir.join("bench-boot.cmd");
    let out = dir.join("bench-boot.scr");
    fs::write(&cmd, script).unwrap();
    host(
        Command::new("mkimage")
            .args([
                "-q", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d",
            ])
            .arg(&cmd)
            .arg(&out),
    );
    fs::read(&out).unwrap()
}

/// Kernel arguments of every benchmark boot: `chrony-wait.service` waits up to 3 minutes
/// for a time server this network does not have, holding the default target (and
/// `systemd-analyze`) without being on the path of anything measured.
const NO_TIME_WAIT: &str = " systemd.mask=chrony-wait.service";

/// One run on one image: fresh flash, steady reboot, floor. Returns (scenario, phases).
fn run(image: &Image, label: &str, n: usize) -> Vec<(&'static str, Phases)> {
    let mut device = Device::flashed_with(image.clone(), &format!("bench-{label}-{n}"));
    let admin = test_key(&device.dir, "admin-key");
    let script = boot_script_with(&mut device, NO_TIME_WAIT);
    device.write_boot_file("boot.scr", &script);
    device.write_boot_config(&test_config("bench", &admin));
    let mut out = Vec::new();

    for scenario in ["fresh flash + seed", "steady reboot"] {
        if scenario == "steady reboot" {
            device.reboot(&admin);
        } else {
            device.boot();
        }
        let mut console = Console::new();
        console.wait(&mut device, "provisioned", provisioned);
        let up = console.started.elapsed().as_secs_f64();
        let mut phases = Phases::new();
        host_phases(&console, &mut phases, Some(("provisioned", up)));
        guest_phases(&device, &admin, &mut phases);
        // What systemd says, kept with the device's logs for a closer look.
        let analysis = device.ssh(
            &admin,
            "systemctl is-system-running --wait >/dev/null; systemd-analyze; \
             systemd-analyze critical-chain first-boot.service; \
             systemd-analyze blame --no-pager | grep -v '[.]device$' | head -40",
        );
        let file = device
            .dir
            .join(format!("analyze-{}.txt", scenario.replace(' ', "-")));
        fs::write(&file, analysis).unwrap();
        report(&device, scenario, &phases);
        out.push((scenario, phases));
    }

    // The floor is read over SSH, which only `atomix-restore.service` opens without the
    // provisioning service: a build from before it (e.g. a kept baseline) has no floor.
    let restores = device
        .ssh(
            &admin,
            "test -e /usr/lib/systemd/system/atomix-restore.service && echo yes || echo no",
        )
        .trim()
        == "yes";
    device.poweroff(&admin);
    if !restores {
        eprintln!(
            "bench: {label} ({}) has no atomix-restore.service: no floor for this build \
             (with first-boot.service masked nothing would let SSH in)",
            image.build_id()
        );
        return out;
    }
    // The mark-good deadline goes too: without the service nothing marks the slot good,
    // and it would hold multi-user.target until its stall time (15 min) reboots.
    let masked = boot_script_with(
        &mut device,
        &format!(
            "{NO_TIME_WAIT} systemd.mask=first-boot.service systemd.mask=atomix-mark-good-deadline.service"
        ),
    );
    device.write_boot_file("boot.scr", &masked);
    device.boot();
    let mut console = Console::new();
    // The restore put the admin's key back: SSH answers without the service. (Once a
    // getty owns the serial console, systemd's status lines no longer reach it, so the
    // console cannot tell when the boot is done; the guest's own clocks can.)
    console.wait(&mut device, "SSH", |d| {
        d.ssh_unchecked(&admin, "true").is_some()
    });
    device.ssh(
        &admin,
        "systemctl is-system-running --wait >/dev/null || true",
    );
    let mut phases = Phases::new();
    host_phases(&console, &mut phases, None);
    guest_phases(&device, &admin, &mut phases);
    report(&device, "floor", &phases);
    out.push(("floor: first-boot.service masked", phases));
    out
}

/// One boot's phases as they are measured, so that a run cut short still leaves its
/// figures in the log.
fn report(device: &Device, scenario: &str, phases: &Phases) {
    let line: Vec<String> = phases
        .iter()
        .map(|(phase, s)| format!("{phase} {s:.1}"))
        .collect();
    eprintln!("bench: {} {scenario}: {}", device.name, line.join("; "));
}

fn median_and_spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn main() {
    let mut runs = 3;
    let mut compare: Option<PathBuf> = None;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--compare" => compare = Some(args.next().expect("--compare DIR").into()),
            "--bench" => {}
            other if other.starts_with('-') => panic!("unknown option {other}"),
            other => dir = Some(other.into()),
        }
    }
    let main = match dir {
        Some(d) => Image::in_dir(d),
        None => Image::built(),
    };
    let mut images = vec![("this", main)];
    if let Some(d) = compare {
        images.push(("compared", Image::in_dir(d)));
    }

    // (image, scenario, phase) -> values, phases kept in first-seen order.
    let mut table: BTreeMap<(usize, &str), Rows> = BTreeMap::new();
    let started = Instant::now();
    for n in 1..=runs {
        for (i, (label, image)) in images.iter().enumerate() {
            eprintln!("bench: run {n}/{runs}, {label} ({})", image.build_id());
            for (scenario, phases) in run(image, label, n) {
                let rows = table.entry((i, scenario)).or_default();
                for (phase, value) in phases {
                    match rows.iter_mut().find(|(p, _)| *p == phase) {
                        Some((_, values)) => values.push(value),
                        None => rows.push((phase, vec![value])),
                    }
                }
            }
        }
    }

    println!(
        "# Boot benchmark: {runs} runs, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (i, (label, image)) in images.iter().enumerate() {
        println!(
            "\n## {label}: {} ({})",
            image.build_id(),
            image.dir.display()
        );
        for ((j, scenario), rows) in &table {
            if *j != i {
                continue;
            }
            println!("\n### {scenario}\n\n| phase | median s | min-max s |\n|---|---:|---:|");
            for (phase, values) in rows {
                let mut v = values.clone();
                let (median, min, max) = median_and_spread(&mut v);
                println!("| {phase} | {median:.1} | {min:.1}-{max:.1} |");
            }
        }
    }
    if images.len() == 2 {
        println!("\n## Ratios (this / compared, medians)\n\n| scenario | phase | ratio |\n|---|---|---:|");
        for ((j, scenario), rows) in &table {
            if *j != 0 {
                continue;
            }
            let Some(other) = table.get(&(1, scenario)) else {
                continue;
            };
            for (phase, values) in rows {
                if let Some((_, theirs)) = other.iter().find(|(p, _)| p == phase) {
                    let (a, _, _) = median_and_spread(&mut values.clone());
                    let (b, _, _) = median_and_spread(&mut theirs.clone());
                    if b > 0.0 {
                        println!("| {scenario} | {phase} | {:.2} |", a / b);
                    }
                }
            }
        }
    }
}
