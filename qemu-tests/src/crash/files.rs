//! Judging, at each point, the files the design makes crash-safe: the fresh-flash marker,
//! `/data/config/current` and the generation it names, the job records. Each must be
//! old or new, never torn, and together they must still lead the next boot to the seed.
//!
//! The host kernel has no f2fs, and what matters is what the device's kernel makes of
//! the filesystem (with its roll-forward recovery of fsynced files), so a *judge VM*
//! reads them: the image's own kernel and initramfs, with a small init of ours appended
//! (`judge-vm-init.sh`), boots with up to [`BATCH`] data partitions attached (each a
//! copy of one point's partition, under a throwaway QEMU overlay), mounts each as the
//! device would, lists it on the console and powers off. One boot judges a batch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atomix_api::{Job, JobKind, JobState};
use boot_state::FreshFlashMarker;

use crate::host;
use crate::image::{Image, BOOT_A_OFFSET};

/// Data partitions judged per boot of the judge VM (PCIe slots of QEMU's `virt` bus).
pub const BATCH: usize = 24;

const INIT: &str = include_str!("judge-vm-init.sh");

/// Where a generation's files must match the uninterrupted boot's.
pub const CURRENT: &str = "config/current";
pub const MARKER: &str = boot_state::MARKER_IN_DATA;

/// One entry of a data filesystem, as the judge VM listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    Link(String),
    File {
        size: u64,
        /// `None` when the guest could not read it.
        sha256: Option<String>,
        /// The contents, for the marker and the job records.
        body: Option<Vec<u8>>,
    },
    /// A device node, FIFO or socket.
    Other,
}

/// The crash-safe trees of one data filesystem (`atomix/`, `config/`), by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataFiles {
    pub nodes: BTreeMap<String, Node>,
}

/// What the judge VM made of one disk: its files, or why the kernel would not mount it.
pub type Listing = Result<DataFiles, String>;

/// The judge VM: the image's kernel and initramfs plus our init.
#[derive(Debug, Clone)]
pub struct JudgeVm {
    kernel: PathBuf,
    initrd: PathBuf,
    image_disk: PathBuf,
    dir: PathBuf,
    boots: usize,
}

impl JudgeVm {
    /// Takes the kernel and initramfs out of the image's `boot-a` (mtools) and appends
    /// a cpio archive with our init to the initramfs (the kernel unpacks every archive
    /// of the concatenation).
    pub fn new(image: &Image, dir: &Path) -> JudgeVm {
        // Nothing of an earlier run (disks, consoles) may be taken for this one's.
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).unwrap();
        let disk = image.disk();
        let boot_a = format!("{}@@{BOOT_A_OFFSET}", disk.display());
        let kernel = dir.join("Image");
        let initrd = dir.join("initrd.img");
        for (from, to) in [("::/Image", &kernel), ("::/initrd.img", &initrd)] {
            let _ = fs::remove_file(to);
            host(
                Command::new("mcopy")
                    .args(["-n", "-i", &boot_a, from])
                    .arg(to),
            );
        }
        let staging = dir.join("init");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).unwrap();
        let init = staging.join("judge-init");
        fs::write(&init, INIT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
        let cpio = Command::new("cpio")
            .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
            .current_dir(&staging)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio (scripts/setup-host.sh)");
        let out = {
            let mut cpio = cpio;
            use std::io::Write;
            cpio.stdin
                .take()
                .unwrap()
                .write_all(b"judge-init\n")
                .unwrap();
            cpio.wait_with_output().unwrap()
        };
        assert!(out.status.success(), "cpio failed: {}", out.status);
        let mut combined = fs::read(&initrd).unwrap();
        // Each archive of the concatenation starts 4-byte aligned.
        combined.resize(combined.len().next_multiple_of(4), 0);
        combined.extend_from_slice(&out.stdout);
        fs::write(&initrd, combined).unwrap();
        JudgeVm {
            kernel,
            initrd,
            image_disk: disk,
            dir: dir.to_owned(),
            boots: 0,
        }
    }

    /// Where its kernel, initramfs, consoles and the disks handed to it are kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How often the VM booted.
    pub fn boots(&self) -> usize {
        self.boots
    }

    /// Boots the VM once with `disks` (serial, data partition image; at most [`BATCH`],
    /// serials of at most 20 characters) and returns each disk's listing by serial.
    /// The disk images are not changed.
    pub fn list(&mut self, disks: &[(String, PathBuf)]) -> BTreeMap<String, Listing> {
        assert!(
            !disks.is_empty() && disks.len() <= BATCH,
            "{} disks",
            disks.len()
        );
        self.boots += 1;
        let console = self.dir.join(format!("console-{}.log", self.boots));
        let _ = fs::remove_file(&console);
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", "virt,acpi=off", "-cpu", "cortex-a72", "-smp", "1", "-m", "512"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-chardev")
            .arg(format!("file,id=serial,path={}", console.display()))
            .args(["-serial", "chardev:serial"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyAMA0 rdinit=/judge-init quiet loglevel=1 panic=-1 gpt atomix.judge.disks={}",
                disks.len()
            ))
            .arg("-drive")
            .arg(format!(
                "if=none,id=image,format=raw,readonly=on,file={}",
                self.image_disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=image,serial=image"]);
        for (i, (serial, path)) in disks.iter().enumerate() {
            assert!(serial.len() <= 20 && serial != "image", "serial {serial:?}");
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=d{i},format=raw,snapshot=on,file={}",
                    path.display()
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=d{i},serial={serial}"));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            fs::File::create(self.dir.join(format!("qemu-{}.stderr", self.boots))).unwrap(),
        );
        let mut child = cmd
            .spawn()
            .expect("qemu-system-aarch64 (scripts/setup-host.sh)");
        let deadline = Instant::now() + Duration::from_secs(120 + 10 * disks.len() as u64);
        let ended = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break Err("the judge VM did not power off in time".to_owned());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        let mut console_said = parse_console(&text);
        // What the VM finished stands; the rest fails with the reason it stopped.
        let stopped = match ended {
            Err(why) => Some(why),
            Ok(status) if !status.success() && console_said.problem.is_none() => {
                Some(format!("QEMU ended with {status}"))
            }
            Ok(_) => None,
        }
        .or(console_said.problem.take());
        let mut out = BTreeMap::new();
        for (serial, _) in disks {
            let listing = match console_said.listings.remove(serial) {
                Some(listing) => listing,
                None => {
                    let why = stopped.as_deref().unwrap_or("it never listed it");
                    let when = if console_said.in_progress.as_deref() == Some(serial) {
                        "while it was listing this disk"
                    } else {
                        "before it reached this disk"
                    };
                    Err(format!(
                        "the judge VM stopped {when}: {why} (console: {}): {}",
                        console.display(),
                        tail(&text, 5)
                    ))
                }
            };
            out.insert(serial.clone(), listing);
        }
        if stopped.is_none() {
            let _ = fs::remove_file(&console);
        }
        out
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// What one boot of the judge VM printed.
#[derive(Debug, Default)]
pub struct Console {
    /// Every disk it finished, by serial (a disk whose lines made no sense is an `Err`).
    pub listings: BTreeMap<String, Listing>,
    /// The disk it was listing when its output stopped.
    pub in_progress: Option<String>,
    /// Why it did not finish every disk (a fatal error, output cut short, a stray line).
    pub problem: Option<String>,
}

/// Reads the judge VM's console disk by disk: a disk's own bad output fails that disk
/// only; what the VM finished before it stopped stands.
pub fn parse_console(text: &str) -> Console {
    let mut out = Console::default();
    let mut current: Option<(String, Listing)> = None;
    let mut done = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("@judge\t") else {
            continue;
        };
        let fields: Vec<&str> = rest.split('\t').collect();
        let bad = format!("a line the judge VM should not print: {line:?}");
        match fields.as_slice() {
            ["fatal", why @ ..] => {
                out.problem = Some(format!("the judge VM failed: {}", why.join(" ")));
                break;
            }
            ["done"] if current.is_none() => done = true,
            ["disk", serial] if current.is_none() => {
                current = Some((serial.to_string(), Ok(DataFiles::default())))
            }
            ["end", serial] if current.as_ref().is_some_and(|(s, _)| s == serial) => {
                let (s, listing) = current.take().unwrap();
                out.listings.insert(s, listing);
            }
            [kind @ ("mount-failed" | "list-failed"), serial, why @ ..]
                if current.as_ref().is_some_and(|(s, _)| s == serial) =>
            {
                let what = if *kind == "mount-failed" {
                    "the kernel does not mount it"
                } else {
                    "listing it failed"
                };
                current.as_mut().unwrap().1 = Err(format!("{what}: {}", why.join(" ").trim()));
            }
            [kind, path, more @ ..] if current.is_some() => {
                let listing = &mut current.as_mut().unwrap().1;
                if let Ok(files) = listing {
                    if let Err(()) = add_entry(files, kind, path, more) {
                        *listing = Err(bad);
                    }
                }
            }
            _ => {
                out.problem = Some(bad);
                break;
            }
        }
    }
    if out.problem.is_none() && !done {
        out.problem = Some("the judge VM's output ends before it was done".to_owned());
    }
    out.in_progress = current.map(|(serial, _)| serial);
    out
}

/// One entry line of a disk's listing.
fn add_entry(files: &mut DataFiles, kind: &str, path: &str, more: &[&str]) -> Result<(), ()> {
    let path = path.to_string();
    match (kind, more) {
        ("d", []) => {
            files.nodes.insert(path, Node::Dir);
        }
        ("l", [target]) => {
            files.nodes.insert(path, Node::Link(target.to_string()));
        }
        ("f", [size]) => {
            let size = size.parse().map_err(|_| ())?;
            files.nodes.insert(
                path,
                Node::File {
                    size,
                    sha256: None,
                    body: None,
                },
            );
        }
        ("o", []) => {
            files.nodes.insert(path, Node::Other);
        }
        // `sum SHA256 PATH`: the digest comes first.
        ("sum", [file]) => match files.nodes.get_mut(*file) {
            Some(Node::File { sha256, .. }) => *sha256 = Some(path),
            _ => return Err(()),
        },
        ("body", [hex]) => match files.nodes.get_mut(&path) {
            Some(Node::File { body, .. }) => *body = Some(unhex(hex).ok_or(())?),
            _ => return Err(()),
        },
        _ => return Err(()),
    }
    Ok(())
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Everything wrong with one point's files, each naming the file; `reference` is the
/// data filesystem an uninterrupted first boot leaves.
pub fn judge(point: &Listing, reference: &DataFiles) -> Vec<String> {
    let files = match point {
        Ok(files) => files,
        Err(why) => return vec![format!("data filesystem: {why}")],
    };
    let mut problems = Vec::new();
    for (path, node) in &files.nodes {
        match node {
            Node::Other => problems.push(format!(
                "{path}: neither a file, a directory nor a symbolic link"
            )),
            Node::File { sha256: None, .. } => {
                problems.push(format!("{path}: the kernel cannot read it"))
            }
            _ => {}
        }
    }

    // The marker: absent, or whole.
    let marker = files.nodes.get(MARKER);
    match marker {
        None => {}
        Some(Node::File {
            body: Some(body), ..
        }) => {
            if let Err(e) = serde_json::from_slice::<FreshFlashMarker>(body) {
                problems.push(format!("{MARKER}: torn or not a marker ({e}): {body:?}"));
            }
        }
        Some(other) => problems.push(format!("{MARKER}: not a readable file: {other:?}")),
    }

    // `current`: absent, or a generation exactly as the uninterrupted boot wrote it.
    let current = files.nodes.get(CURRENT);
    match current {
        None => {}
        Some(Node::Link(target)) => {
            let number = target.strip_prefix("generations/").unwrap_or("");
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(format!("{CURRENT} -> {target}: not generations/N"));
            } else if reference.nodes.get(CURRENT) != Some(&Node::Link(target.clone())) {
                problems.push(format!(
                    "{CURRENT} -> {target}: the uninterrupted boot ends on {:?}",
                    reference.nodes.get(CURRENT)
                ));
            } else {
                let dir = format!("config/{target}");
                let under = |f: &DataFiles| -> BTreeMap<String, Node> {
                    f.nodes
                        .iter()
                        .filter(|(p, _)| p.as_str() == dir || p.starts_with(&format!("{dir}/")))
                        .map(|(p, n)| (p.clone(), strip_body(n)))
                        .collect()
                };
                let (here, there) = (under(files), under(reference));
                for (path, node) in &there {
                    match here.get(path) {
                        None => {
                            problems.push(format!("{path}: missing from the current generation"))
                        }
                        Some(n) if n != node => problems.push(format!(
                            "{path}: not as the uninterrupted boot wrote it ({n:?}, not {node:?})"
                        )),
                        Some(_) => {}
                    }
                }
                for path in here.keys().filter(|p| !there.contains_key(*p)) {
                    problems.push(format!(
                        "{path}: in the current generation, but not the uninterrupted boot's"
                    ));
                }
            }
        }
        Some(other) => problems.push(format!("{CURRENT}: not a symbolic link: {other:?}")),
    }

    // Job records: each one whole, as the service reads them. A config job that was
    // queued or running is rolled back by the next boot before anything else: `current`
    // then becomes that job's previous generation.
    let mut after_recovery = current.is_some();
    for (path, node) in &files.nodes {
        let Some(name) = path.strip_prefix("config/jobs/") else {
            continue;
        };
        if name.contains('/') || name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match node {
            Node::File {
                body: Some(body), ..
            } => match serde_json::from_slice::<Job>(body) {
                Ok(job) => {
                    if job.kind == JobKind::Config
                        && matches!(job.state, JobState::Queued | JobState::Running)
                    {
                        after_recovery = job.previous_generation.is_some();
                    }
                }
                Err(e) => problems.push(format!("{path}: torn or not a job record ({e})")),
            },
            other => problems.push(format!("{path}: not a readable job record: {other:?}")),
        }
    }

    // The next boot imports /boot/config.toml only while the marker is there.
    if marker.is_none() && !after_recovery {
        problems.push(format!(
            "neither {MARKER} nor a {CURRENT} that stays after the next boot's recovery: \
             the next boot would not import /boot/config.toml"
        ));
    }
    problems
}

fn strip_body(node: &Node) -> Node {
    match node {
        Node::File { size, sha256, .. } => Node::File {
            size: *size,
            sha256: sha256.clone(),
            body: None,
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER_JSON: &str = r#"{"build_id":"b1","slot":"a","created":"2026-12-04T00:00:00Z"}"#;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn console(disks: &[(&str, &[&str])]) -> String {
        let mut out = String::from("[    1.0] some kernel line\n");
        for (serial, lines) in disks {
            out += &format!("@judge\tdisk\t{serial}\n");
            for l in *lines {
                out += &format!("@judge\t{l}\n");
            }
            out += &format!("@judge\tend\t{serial}\n");
        }
        out + "@judge\tdone\n"
    }

    /// One of `problems` names `what`.
    #[track_caller]
    fn assert_names(problems: &[String], what: &str) {
        assert!(problems.iter().any(|p| p.contains(what)), "{problems:?}");
    }

    /// One of `problems` begins with `what` (a path).
    #[track_caller]
    fn assert_begins(problems: &[String], what: &str) {
        assert!(problems.iter().any(|p| p.starts_with(what)), "{problems:?}");
    }

    /// A job record as the service writes it.
    fn job(state: JobState, previous: Option<u64>) -> Vec<u8> {
        serde_json::to_vec(&Job {
            id: "j1".into(),
            kind: JobKind::Config,
            state,
            origin: atomix_api::Origin::Boot,
            created: "2026-12-04T00:00:00Z".into(),
            events: Vec::new(),
            result: None,
            rollback: atomix_api::Rollback {
                state: atomix_api::RollbackState::None,
                generation: None,
            },
            previous_generation: previous,
            staged_generation: Some(1),
        })
        .unwrap()
    }

    fn provisioned() -> Vec<String> {
        vec![
            "d\tconfig".into(),
            "d\tconfig/generations".into(),
            "d\tconfig/generations/1".into(),
            "f\tconfig/generations/1/config.toml\t10".into(),
            "f\tconfig/generations/1/source.json\t20".into(),
            "l\tconfig/current\tgenerations/1".into(),
            "d\tconfig/jobs".into(),
            "f\tconfig/jobs/j1.json\t13".into(),
            "sum\taaaa\tconfig/generations/1/config.toml".into(),
            "sum\tbbbb\tconfig/generations/1/source.json".into(),
            "sum\tcccc\tconfig/jobs/j1.json".into(),
            format!(
                "body\tconfig/jobs/j1.json\t{}",
                hex(&job(JobState::Succeeded, None))
            ),
        ]
    }

    fn listing(lines: &[String]) -> Listing {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        parse_console(&console(&[("p1", &refs)]))
            .listings
            .remove("p1")
            .unwrap()
    }

    fn reference() -> DataFiles {
        listing(&provisioned()).unwrap()
    }

    #[test]
    fn a_console_is_read_disk_by_disk() {
        let marker = [
            "d\tatomix",
            "f\tatomix/fresh-flash\t60",
            "sum\tdddd\tatomix/fresh-flash",
        ];
        let body = format!("body\tatomix/fresh-flash\t{}", hex(MARKER_JSON.as_bytes()));
        let mut first: Vec<&str> = marker.to_vec();
        first.push(&body);
        let text = console(&[
            ("p1", &first),
            ("p2", &["mount-failed\tp2\tmount: wrong fs type"]),
        ]);
        let console = parse_console(&text);
        assert_eq!(console.problem, None);
        let listings = console.listings;
        let p1 = listings["p1"].as_ref().unwrap();
        assert_eq!(p1.nodes["atomix"], Node::Dir);
        assert_eq!(
            p1.nodes[MARKER],
            Node::File {
                size: 60,
                sha256: Some("dddd".into()),
                body: Some(MARKER_JSON.as_bytes().to_vec())
            }
        );
        assert!(listings["p2"]
            .as_ref()
            .unwrap_err()
            .contains("wrong fs type"));
    }

    #[test]
    fn a_console_cut_short_or_failing_keeps_what_was_finished() {
        // Cut after p1, in the middle of p2.
        let text = console(&[("p1", &["d\tatomix"]), ("p2", &["d\tconfig"])]);
        let cut = &text[..text.find("@judge\tend\tp2").unwrap()];
        let c = parse_console(cut);
        assert!(c.problem.unwrap().contains("ends before"));
        assert!(c.listings["p1"].is_ok());
        assert!(!c.listings.contains_key("p2"));
        assert_eq!(c.in_progress.as_deref(), Some("p2"));

        let c = parse_console("@judge\tfatal\tno disks\n");
        assert!(c.problem.unwrap().contains("no disks"));
        assert!(c.listings.is_empty());

        // A bad line inside a disk fails that disk, not the others.
        let c = parse_console(&console(&[
            ("p1", &["sum\tab\tnope"]),
            ("p2", &["d\tconfig"]),
        ]));
        assert_eq!(c.problem, None);
        assert!(c.listings["p1"]
            .as_ref()
            .unwrap_err()
            .contains("should not print"));
        assert!(c.listings["p2"].is_ok());
        // A stray line outside any disk stops the reading.
        let c = parse_console("@judge\tend\tp9\n@judge\tdone\n");
        assert!(c.problem.unwrap().contains("should not print"));
    }

    #[test]
    fn the_uninterrupted_state_and_a_whole_marker_pass() {
        assert_eq!(judge(&Ok(reference()), &reference()), Vec::<String>::new());
        let with_marker = listing(&[
            "d\tatomix".into(),
            "f\tatomix/fresh-flash\t60".into(),
            "sum\tdddd\tatomix/fresh-flash".into(),
            format!("body\tatomix/fresh-flash\t{}", hex(MARKER_JSON.as_bytes())),
        ]);
        assert_eq!(judge(&with_marker, &reference()), Vec::<String>::new());
    }

    #[test]
    fn torn_or_missing_state_is_named() {
        // A marker cut in half.
        let torn = listing(&[
            "f\tatomix/fresh-flash\t30".into(),
            "sum\tdddd\tatomix/fresh-flash".into(),
            format!(
                "body\tatomix/fresh-flash\t{}",
                hex(&MARKER_JSON.as_bytes()[..30])
            ),
        ]);
        let problems = judge(&torn, &reference());
        assert_begins(&problems, "atomix/fresh-flash: torn");

        // Neither marker nor current: the seed would never be imported.
        let empty = listing(&["d\tconfig".into()]);
        let problems = judge(&empty, &reference());
        assert_names(&problems, "would not import");

        // current names a generation whose file differs or is missing.
        let mut lines = provisioned();
        lines.retain(|l| !l.contains("source.json"));
        let at = lines
            .iter()
            .position(|l| l.starts_with("sum\taaaa"))
            .unwrap();
        lines[at] = "sum\teeee\tconfig/generations/1/config.toml".into();
        let problems = judge(&listing(&lines), &reference());
        assert_begins(&problems, "config/generations/1/config.toml: not as");
        assert_begins(&problems, "config/generations/1/source.json: missing");

        // A torn job record, an unreadable file, a mount refused.
        let mut lines = provisioned();
        let last = lines.len() - 1;
        lines[last] = format!(
            "body\tconfig/jobs/j1.json\t{}",
            hex(&job(JobState::Succeeded, None)[..20])
        );
        lines.retain(|l| !l.starts_with("sum\tbbbb"));
        let problems = judge(&listing(&lines), &reference());
        assert_begins(&problems, "config/jobs/j1.json: torn or not a job record");
        assert_names(&problems, "source.json: the kernel cannot read");
        assert_eq!(
            judge(
                &Err("the kernel does not mount it: bad".into()),
                &reference()
            ),
            ["data filesystem: the kernel does not mount it: bad"]
        );

        // current pointing elsewhere than the uninterrupted boot.
        let mut lines = provisioned();
        lines[5] = "l\tconfig/current\tgenerations/2".into();
        let problems = judge(&listing(&lines), &reference());
        assert_names(&problems, "the uninterrupted boot ends on");
    }

    #[test]
    fn a_current_the_next_boot_rolls_back_does_not_count() {
        // The seed's job was still running when the power went: the next boot rolls
        // generation 1 back to unprovisioned, so only the marker brings the seed back.
        let running = |marker: bool| {
            let mut lines = provisioned();
            let last = lines.len() - 1;
            lines[last] = format!(
                "body\tconfig/jobs/j1.json\t{}",
                hex(&job(JobState::Running, None))
            );
            if marker {
                lines.push("f\tatomix/fresh-flash\t60".into());
                lines.push("sum\tdddd\tatomix/fresh-flash".into());
                lines.push(format!(
                    "body\tatomix/fresh-flash\t{}",
                    hex(MARKER_JSON.as_bytes())
                ));
            }
            judge(&listing(&lines), &reference())
        };
        let problems = running(false);
        assert_names(&problems, "stays after the next boot's recovery");
        assert_eq!(running(true), Vec::<String>::new());
    }

    #[test]
    fn hex_bodies_decode() {
        assert_eq!(unhex("00ff7a"), Some(vec![0, 255, 0x7a]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
