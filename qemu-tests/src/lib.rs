//! The harness of the QEMU boot tests: boots the flashable image built by
//! `scripts/build-image.sh` (never a special test image) through U-Boot in
//! `qemu-system-aarch64`, each test on its own copy-on-write overlay with its own forwarded
//! ports, and checks what a user would see: the serial console, the API, the disk.
//!
//! Artifacts (serial logs of every boot, the overlay) stay in `target/qemu-tests/<test>/`.
//! When a test fails, the step it was at and the tail of the console are printed.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atomix_api::{headers, routes, Health, Job, Nonce};
use serde_json::Value;

pub mod oci;
pub mod updates;

pub const SECTOR: u64 = 512;
/// The emulated eMMC, larger than the image as a real one is.
pub const DISK_SIZE: &str = "8G";
/// Offset of `boot-a` in the image (first usable LBA 32768).
pub const BOOT_A_OFFSET: u64 = 32768 * SECTOR;

/// The build output the tests boot.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Value,
}

impl Image {
    /// The image of `ATOMIX_IMAGE_DIR` (default `build/`); fails loudly when there is none.
    pub fn built() -> Image {
        let dir = std::env::var_os("ATOMIX_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"));
        Image::in_dir(dir)
    }

    /// The build output in `dir` (an image, its `build.json`, U-Boot and dev keys).
    pub fn in_dir(dir: PathBuf) -> Image {
        let manifest_path = dir.join("build.json");
        let text = fs::read_to_string(&manifest_path).unwrap_or_else(|e| {
            panic!(
                "no built image in {} ({e}): run scripts/build-image.sh first",
                dir.display()
            )
        });
        Image {
            manifest: serde_json::from_str(&text).expect("build.json"),
            dir,
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.dir.join("atomixos-rock64.img")
    }

    pub fn build_id(&self) -> &str {
        self.manifest["build_id"].as_str().expect("build_id")
    }

    /// The development provisioning key the image trusts (made by the build).
    pub fn provisioning_key(&self) -> PathBuf {
        self.dir.join("dev-provisioning-key")
    }
}

/// Free TCP ports for QEMU's forwards (see the `test-ports` crate for why not one from
/// `bind(":0")`).
fn free_port() -> u16 {
    test_ports::free_port()
}

/// Runs a host command, panicking with its output if it fails.
pub fn host(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/setup-host.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One emulated device: its disk, its forwarded ports, its boots.
#[derive(Debug)]
pub struct Device {
    pub name: String,
    pub image: Image,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub wan_port: u16,
    pub lan_port: u16,
    pub ssh_port: u16,
    usb: Option<PathBuf>,
    child: Option<Child>,
    boots: u32,
    step: String,
    created: Instant,
}

impl Device {
    /// A freshly flashed device: a new overlay of the image.
    pub fn flashed(name: &str) -> Device {
        Device::flashed_with(Image::built(), name)
    }

    /// A freshly flashed device with a given image (the boot benchmark compares two).
    pub fn flashed_with(image: Image, name: &str) -> Device {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/qemu-tests")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.qcow2");
        host(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(fs::canonicalize(image.disk()).unwrap())
                .arg(&disk)
                .arg(DISK_SIZE),
        );
        Device {
            name: name.to_owned(),
            image,
            dir,
            disk,
            wan_port: free_port(),
            lan_port: free_port(),
            ssh_port: free_port(),
            usb: None,
            child: None,
            boots: 0,
            step: "created".into(),
            created: Instant::now(),
        }
    }

    /// Records what the test is doing, for the failure report.
    pub fn step(&mut self, what: &str) {
        eprintln!(
            "[{} +{:.0}s] {what}",
            self.name,
            self.created.elapsed().as_secs_f64()
        );
        self.step = what.to_owned();
    }

    /// Writes `/boot/config.toml` into `boot-a`, as an operator does after flashing.
    pub fn write_boot_config(&mut self, text: &str) {
        self.write_boot_file("config.toml", text.as_bytes());
    }

    /// A copy of `boot-a` as it is on the disk now (the device must be off).
    fn boot_partition_copy(&self) -> PathBuf {
        let part = self.dir.join("boot-a.vfat");
        let _ = fs::remove_file(&part);
        let size_mib = 256;
        host(
            Command::new("qemu-img")
                .args(["dd", "-f", "qcow2", "-O", "raw", "bs=1M"])
                .arg(format!("skip={}", BOOT_A_OFFSET >> 20))
                .arg(format!("count={size_mib}"))
                .arg(format!("if={}", self.disk.display()))
                .arg(format!("of={}", part.display())),
        );
        part
    }

    /// Reads a file at the root of `boot-a`.
    pub fn read_boot_file(&mut self, name: &str) -> Vec<u8> {
        let part = self.boot_partition_copy();
        let file = self.dir.join(format!("read-{name}"));
        host(
            Command::new("mcopy")
                .args(["-n", "-i"])
                .arg(&part)
                .arg(format!("::/{name}"))
                .arg(&file),
        );
        fs::read(&file).unwrap()
    }

    /// Writes a file at the root of `boot-a` (mtools on a copy of the partition, then the
    /// changed chunks into the overlay).
    pub fn write_boot_file(&mut self, name: &str, bytes: &[u8]) {
        self.step(&format!("writing /boot/{name} into boot-a"));
        let part = self.boot_partition_copy();
        let before = fs::read(&part).unwrap();
        let file = self.dir.join(name);
        fs::write(&file, bytes).unwrap();
        host(
            Command::new("mcopy")
                .args(["-o", "-i"])
                .arg(&part)
                .arg(&file)
                .arg(format!("::/{name}")),
        );
        let after = fs::read(&part).unwrap();
        self.write_changed_chunks(BOOT_A_OFFSET, &before, &after);
    }

    /// Writes the 64 KiB chunks that differ into the overlay, with qemu-io.
    fn write_changed_chunks(&self, offset: u64, before: &[u8], after: &[u8]) {
        const CHUNK: usize = 64 << 10;
        let mut cmd = Command::new("qemu-io");
        cmd.args(["-f", "qcow2"]);
        let mut chunks = 0;
        for (i, (a, b)) in before.chunks(CHUNK).zip(after.chunks(CHUNK)).enumerate() {
            if a != b {
                let file = self.dir.join(format!("chunk-{i}"));
                fs::write(&file, b).unwrap();
                cmd.arg("-c").arg(format!(
                    "write -q -s {} {} {}",
                    file.display(),
                    offset + (i * CHUNK) as u64,
                    b.len()
                ));
                chunks += 1;
            }
        }
        assert!(chunks > 0, "nothing changed");
        cmd.arg(&self.disk);
        host(&mut cmd);
    }

    /// Plugs in a USB stick (FAT) holding `files` at its root, for the next boots.
    pub fn plug_usb(&mut self, files: &[(&str, &[u8])]) {
        self.step("preparing a USB stick");
        let stick = self.dir.join("usb-stick.img");
        let _ = fs::remove_file(&stick);
        host(
            Command::new("mkfs.vfat")
                .args(["-C", "-n", "SEED"])
                .arg(&stick)
                .arg("65536"),
        );
        for (name, data) in files {
            let file = self.dir.join(name);
            fs::write(&file, data).unwrap();
            host(
                Command::new("mcopy")
                    .arg("-i")
                    .arg(&stick)
                    .arg(&file)
                    .arg(format!("::/{name}")),
            );
        }
        self.usb = Some(stick);
    }

    pub fn unplug_usb(&mut self) {
        self.usb = None;
    }

    /// The serial log of boot `n` (1-based).
    pub fn serial_log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("serial-{n}.log"))
    }

    /// Powers the device on.
    pub fn boot(&mut self) {
        self.start(false);
    }

    /// Powers the device on with its CPUs stopped and returns its QMP connection: the
    /// test can press buttons from power-on, then lets it run with `cont`.
    pub fn boot_paused(&mut self) -> Qmp {
        self.start(true);
        let socket = self.qmp_socket();
        Qmp::connect(&socket, Duration::from_secs(30))
    }

    /// QEMU's QMP socket for the current boot.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join(format!("qmp-{}.sock", self.boots))
    }

    fn start(&mut self, paused: bool) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.boots += 1;
        self.step(&format!("boot {}", self.boots));
        let log = self.serial_log(self.boots);
        let bios = self.image.dir.join("u-boot-qemu.bin");
        let qmp = self.qmp_socket();
        let _ = fs::remove_file(&qmp);
        let mut cmd = Command::new("qemu-system-aarch64");
        // acpi=off: with ACPI, virt routes its power button through ACPI instead of the
        // PL061 GPIO key that U-Boot reads as the recovery button.
        cmd.args(["-M", "virt,acpi=off", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-bios")
            .arg(&bios)
            .arg("-chardev")
            .arg(format!("file,id=serial,path={}", log.display()))
            .args(["-serial", "chardev:serial"])
            .arg("-drive")
            .arg(format!("if=none,id=disk,format=qcow2,file={}", self.disk.display()))
            .args(["-device", "virtio-blk-pci,drive=disk"])
            .arg("-netdev")
            .arg(format!(
                "user,id=wan,hostfwd=tcp:127.0.0.1:{}-:8080,hostfwd=tcp:127.0.0.1:{}-:22",
                self.wan_port, self.ssh_port
            ))
            .args(["-device", "virtio-net-pci,netdev=wan,mac=52:54:00:a7:00:01,romfile="])
            .arg("-netdev")
            .arg(format!(
                "user,id=lan,net=192.168.100.0/24,host=192.168.100.2,dns=192.168.100.3,dhcpstart=192.168.100.200,restrict=on,hostfwd=tcp:127.0.0.1:{}-192.168.100.1:8080",
                self.lan_port
            ))
            .args(["-device", "virtio-net-pci,netdev=lan,mac=52:54:00:a7:00:02,romfile="])
            // The board's watchdog: its reset ends this QEMU (-no-reboot) like any reset.
            .args(["-device", "i6300esb", "-action", "watchdog=reset"]);
        if let Some(stick) = &self.usb {
            cmd.args(["-device", "qemu-xhci,id=xhci"])
                .arg("-drive")
                .arg(format!(
                    "if=none,id=stick,format=raw,file={}",
                    stick.display()
                ))
                .args(["-device", "usb-storage,bus=xhci.0,drive=stick,removable=on"]);
        }
        // QMP on every boot: a test can press buttons or wait for QEMU's events (a
        // watchdog reset is a WATCHDOG event) whenever it connects.
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if paused {
            cmd.arg("-S");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
            fs::File::create(self.dir.join(format!("qemu-{}.stderr", self.boots))).unwrap(),
        );
        self.child = Some(
            cmd.spawn()
                .expect("qemu-system-aarch64 (scripts/setup-host.sh)"),
        );
    }

    /// The console text of the current boot so far.
    pub fn console(&self) -> String {
        fs::read_to_string(self.serial_log(self.boots)).unwrap_or_default()
    }

    /// Waits until the console of this boot shows `needle`; returns the console text.
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> String {
        self.step(&format!("waiting for console: {needle:?}"));
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if text.contains(needle) {
                return text;
            }
            if self.exited() {
                panic!("QEMU exited before the console showed {needle:?}");
            }
            if Instant::now() > deadline {
                panic!(
                    "no {needle:?} on the console within {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether QEMU has ended (the guest powered off or reset under `-no-reboot`).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// GET `path` on a forwarded port: `(status, body as JSON or string)`.
    pub fn get(&self, port: u16, path: &str) -> Result<(u16, Value), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(&format!("http://127.0.0.1:{port}{path}"))
            .call()
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, value))
    }

    /// Waits until `GET /api/health` on `port` answers 200, and returns its JSON.
    pub fn wait_for_health(&mut self, port: u16, timeout: Duration) -> Value {
        self.step(&format!("waiting for {} on port {port}", routes::HEALTH));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, health)) = self.get(port, routes::HEALTH) {
                return health;
            }
            if self.exited() {
                panic!("QEMU exited before the API answered");
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer within {} s",
                    routes::HEALTH,
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits until the device reports itself provisioned on its LAN address (a seed's
    /// apply job may still be running when the console first answers); a refused seed
    /// fails at once with the device's reason.
    pub fn wait_until_provisioned(&mut self, timeout: Duration) -> Value {
        self.step("waiting until the device is provisioned (LAN health)");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, answer)) = self.get(self.lan_port, routes::HEALTH) {
                let health: Health = serde_json::from_value(answer.clone())
                    .unwrap_or_else(|e| panic!("health is not what the API says ({e}): {answer}"));
                if health.provisioned && health.job.is_none() {
                    return answer;
                }
                if health.last_import_error.is_some() {
                    panic!("the device refused its seed: {answer}");
                }
            }
            if self.exited() {
                panic!("QEMU exited before the device was provisioned");
            }
            if Instant::now() > deadline {
                panic!("not provisioned within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Cuts the power: QEMU is killed, nothing is flushed.
    pub fn power_cut(&mut self) {
        self.step("power cut");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the device to power itself off (after `poweroff` or a `reboot` with
    /// `-no-reboot`), or cuts the power after `timeout`.
    pub fn wait_for_power_off(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.power_cut();
        false
    }

    /// `ssh` as the admin user to the device's WAN forward, with `key`.
    fn ssh_command(&self, key: &Path, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "BatchMode=yes",
            ])
            .arg("-p")
            .arg(self.ssh_port.to_string())
            .arg("admin@127.0.0.1")
            .arg(command);
        cmd
    }

    /// Runs `command` on the device as the admin user over SSH; panics if it fails.
    pub fn ssh(&self, key: &Path, command: &str) -> String {
        host(&mut self.ssh_command(key, command))
    }

    /// Reboots the device from inside (as an operator would) and boots it again: QEMU
    /// runs with `-no-reboot`, so the guest's reset ends the process and the harness starts
    /// the next boot, with a console log of its own.
    pub fn reboot(&mut self, key: &Path) {
        self.step("reboot from inside");
        self.ssh_unchecked(key, "sudo systemctl reboot");
        if !self.wait_for_power_off(Duration::from_secs(180)) {
            panic!("the device did not go down within 180 s of `systemctl reboot`");
        }
        self.boot();
    }

    /// Shuts the device down cleanly from inside and waits until it is off.
    pub fn poweroff(&mut self, key: &Path) {
        self.step("poweroff from inside");
        self.ssh_unchecked(key, "sudo systemctl poweroff");
        if !self.wait_for_power_off(Duration::from_secs(180)) {
            panic!("the device did not power off within 180 s");
        }
    }

    /// Like [`Device::ssh`], but a failing command (or a dropped connection) is fine.
    pub fn ssh_unchecked(&self, key: &Path, command: &str) -> Option<String> {
        let out = self.ssh_command(key, command).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A raw copy of the disk, for host-side checks once the device is off.
    pub fn raw_disk(&mut self) -> PathBuf {
        assert!(self.child.is_none(), "power the device off first");
        self.step("converting the disk to raw for host checks");
        let raw = self.dir.join("disk.raw");
        let _ = fs::remove_file(&raw);
        host(
            Command::new("qemu-img")
                .args(["convert", "-f", "qcow2", "-O", "raw"])
                .arg(&self.disk)
                .arg(&raw),
        );
        raw
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let console = self.console();
            let tail: Vec<&str> = console.lines().rev().take(60).collect();
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "\n=== {}: failed after harness step: {} (boot {}); console tail ({}):",
                self.name,
                self.step,
                self.boots,
                self.serial_log(self.boots).display()
            );
            for line in tail.iter().rev() {
                let _ = writeln!(err, "{line}");
            }
        } else {
            eprintln!(
                "[{}] done in {:.0} s",
                self.name,
                self.created.elapsed().as_secs_f64()
            );
        }
    }
}

/// A connection to QEMU's QMP socket (`-qmp unix:...`).
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after it starts) and leaves the
    /// capabilities negotiation mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Qmp {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => {
                    panic!("no QMP socket at {}: {e}", socket.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = qmp.read_message();
        assert!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        qmp.execute("qmp_capabilities");
        qmp
    }

    fn read_message(&mut self) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("QMP: QEMU closed the connection"),
            Ok(_) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("QMP: bad message {line:?}: {e}")),
            Err(e) => panic!("QMP: {e}"),
        }
    }

    /// Waits for the QMP event `name` (e.g. `WATCHDOG`) and returns its `data`; `None`
    /// when QEMU ends or `timeout` passes first. Events are queued on the socket from the
    /// moment of connecting, so one that came before this call is found too.
    pub fn wait_for_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        // A line cut by a read timeout is kept and completed by the next read.
        let mut line = String::new();
        while Instant::now() < deadline {
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {
                    let message: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("QMP: bad message {line:?}: {e}"));
                    line.clear();
                    if message["event"] == name {
                        return Some(message["data"].clone());
                    }
                }
                // The read timeout of the socket: look at the deadline, read on.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("QMP: {e}"),
            }
        }
        None
    }

    /// Runs a command without arguments and returns its `return` value (events that
    /// arrive meanwhile are skipped); panics on an error answer.
    pub fn execute(&mut self, command: &str) -> Value {
        self.try_execute(command)
            .unwrap_or_else(|e| panic!("QMP {command}: {e}"))
    }

    /// Like [`Qmp::execute`], but a closed connection (QEMU ended) is an `Err`.
    pub fn try_execute(&mut self, command: &str) -> Result<Value, String> {
        writeln!(self.writer, "{{\"execute\": \"{command}\"}}").map_err(|e| e.to_string())?;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("QEMU closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            let message: Value =
                serde_json::from_str(&line).map_err(|e| format!("bad message {line:?}: {e}"))?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(format!("error {error}"));
            }
        }
    }
}

/// An SSH key pair made for a test (ed25519, no passphrase).
pub fn test_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    if !key.exists() {
        host(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key),
        );
    }
    key
}

/// The public half of `key`, one line.
pub fn public_key(key: &Path) -> String {
    fs::read_to_string(format!("{}.pub", key.display()))
        .expect("public key")
        .trim()
        .to_owned()
}

impl Device {
    /// `POST path` on `port` with `body`, authenticated as the API wants
    /// ([`atomix_api::signing`]): a fresh nonce, the message
    /// `atomix-provision\n<nonce>\n<sha256 of body>\n` signed by `key` with the real
    /// `ssh-keygen -Y sign -n atomix-provision`.
    pub fn signed_post(
        &self,
        port: u16,
        path: &str,
        content_type: &str,
        body: &[u8],
        key: &Path,
    ) -> Result<(u16, Value), String> {
        let (status, answer) = self.get(port, routes::NONCE)?;
        if status != 200 {
            return Err(format!("GET {}: {status} {answer}", routes::NONCE));
        }
        let nonce = serde_json::from_value::<Nonce>(answer.clone())
            .map_err(|e| format!("GET {}: {e}: {answer}", routes::NONCE))?
            .nonce;
        let body_file = self.dir.join("request-body");
        fs::write(&body_file, body).unwrap();
        let digest = host(Command::new("sha256sum").arg(&body_file));
        let digest = digest.split_whitespace().next().unwrap();
        let message = self.dir.join("request-message");
        fs::write(
            &message,
            atomix_api::signed_message_for_digest(&nonce, digest),
        )
        .unwrap();
        let _ = fs::remove_file(format!("{}.sig", message.display()));
        host(
            Command::new("ssh-keygen")
                .args(["-q", "-Y", "sign", "-n", atomix_api::NAMESPACE, "-f"])
                .arg(key)
                .arg(&message),
        );
        let signature = host(
            Command::new("base64")
                .arg("-w0")
                .arg(format!("{}.sig", message.display())),
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Bundles are hundreds of MiB: a second per MiB on top.
            .timeout_global(Some(Duration::from_secs(30 + (body.len() >> 20) as u64)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(&format!("http://127.0.0.1:{port}{path}"))
            .header("Content-Type", content_type)
            .header("Expect", "100-continue")
            .header(headers::NONCE, &nonce)
            .header(headers::CONTENT_SHA256, digest)
            .header(headers::SIGNATURE, signature.trim())
            .send(body)
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Follows a job until it ends; returns its final JSON. A successful apply narrows the
    /// API to the LAN address, so the job is also looked for there.
    pub fn wait_for_job(&mut self, port: u16, job: &str, timeout: Duration) -> Value {
        self.step(&format!("following job {job}"));
        let deadline = Instant::now() + timeout;
        loop {
            for port in [port, self.lan_port] {
                if let Ok((200, answer)) = self.get(port, job) {
                    let state: Job = serde_json::from_value(answer.clone())
                        .unwrap_or_else(|e| panic!("{job} is not a job ({e}): {answer}"));
                    if state.state.is_finished() {
                        return answer;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("job {job} did not end within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// A config.toml for tests: the admin key, SSH allowed on WAN (the harness's way in),
/// the LAN defaults.
pub fn test_config(hostname: &str, admin_key: &Path) -> String {
    format!(
        r#"schema = 1

[device]
hostname = "{hostname}"

[admin]
ssh-authorized-keys = ["{key}"]

[network.lan]
address = "192.168.100.1/24"
dhcp-range = {{ start = "192.168.100.50", end = "192.168.100.150", lease = "12h" }}

[[firewall.allow]]
zone = "wan"
proto = "tcp"
port = 22
"#,
        key = public_key(admin_key)
    )
}
