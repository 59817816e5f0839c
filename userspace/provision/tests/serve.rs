//! End to end: the real `atomix-provision serve --system record` on loopback with a
//! temporary root, signed with the real `ssh-keygen`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{http, sha256_hex, signature_header};
use test_support::{config_with_admin, keygen, Key, EXAMPLE};

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, failpoints: &str, extra: &[&str]) -> Server {
    let addr = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, test_support::free_port()));
    let child = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["serve", "--system", "record", "--root"])
        .arg(root)
        .args(["--listen", &addr.to_string()])
        .args(extra)
        .env("ATOMIX_FAILPOINTS", failpoints)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start atomix-provision serve");
    assert!(
        test_support::wait_until_listening(addr, Duration::from_secs(15)),
        "the service did not start listening"
    );
    Server { child, addr }
}

/// A root with the provisioning key and (optionally) the fresh-flash marker.
fn root(dir: &Path, key: &Key, fresh: bool) -> PathBuf {
    let root = dir.join("root");
    let keys = root.join("usr/share/atomix/provisioning-keys");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::write(keys, &key.public).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    if fresh {
        let marker = boot_state::FreshFlashMarker {
            build_id: Some("b1".into()),
            slot: boot_state::Slot::A,
            created: "2026-11-27T00:00:00Z".into(),
        };
        boot_state::write_record(&root.join("data/atomix/fresh-flash"), &marker).unwrap();
    }
    root
}

fn health(s: &Server) -> Value {
    http(s.addr, "GET", "/api/health", &[], b"").json()
}

/// Polls health until `pred` holds.
fn wait_health(s: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(s);
        if pred(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post_config(s: &Server, key: &Key, body: &[u8]) -> common::Reply {
    let n = http(s.addr, "GET", "/api/nonce", &[], b"").json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let sig = signature_header(key, &n, body);
    http(
        s.addr,
        "POST",
        "/api/config",
        &[
            ("Content-Type", "application/toml"),
            ("X-Atomix-Nonce", &n),
            ("X-Atomix-Content-SHA256", &sha256_hex(body)),
            ("X-Atomix-Signature", &sig),
        ],
        body,
    )
}

fn wait_job(s: &Server, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = http(s.addr, "GET", url, &[], b"").json();
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        assert!(Instant::now() < deadline, "job did not finish: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the service announces over multicast DNS, as `--system record` writes it
/// (`Null` when nothing is announced).
fn announced(root: &Path) -> Value {
    std::fs::read(root.join("run/atomix/announcement.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null)
}

/// Polls `ready` for up to 10 s.
fn wait_for(ready: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "no {what} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn actions(root: &Path) -> Vec<Value> {
    std::fs::read_to_string(root.join("run/atomix/actions.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stop(mut s: Server) {
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = s.child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the service cleanly: {status}"
    );
}

#[test]
fn unprovisioned_then_api_apply_then_a_failing_step_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, true);

    let s = start(&root, "", &[]);
    // Fresh flash without a boot seed: the marker goes, the console waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while root.join("data/atomix/fresh-flash").exists() {
        assert!(Instant::now() < deadline, "the marker was not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let h = health(&s);
    assert_eq!(h["provisioned"], false);
    assert_eq!(h["listening"][0], s.addr.to_string());

    let admin = keygen(dir.path(), "admin", "ed25519");
    let first = config_with_admin(&admin, "edge-100");
    let reply = post_config(&s, &key, first.as_bytes());
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let job = wait_job(&s, reply.header("location").unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    let h = health(&s);
    assert_eq!(
        (h["provisioned"].clone(), h["generation"].clone()),
        (true.into(), 1.into())
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "edge-100\n"
    );
    assert!(root
        .join("data/config/generations/1/rendered/nftables/atomix.nft")
        .is_file());
    let log = actions(&root);
    assert!(log.iter().any(|a| a["action"] == "nft-apply"));
    // The job's last action (announcing is no system action: nothing is restarted).
    assert_eq!(log.last().unwrap()["action"], "rauc-mark-good");
    // Announced under its host name, provisioned, on the LAN alone now.
    wait_for(
        || announced(&root)["announcement"]["name"] == "edge-100",
        "the announcement of the provisioned device",
    );
    let a = announced(&root);
    assert_eq!(a["announcement"]["provisioned"], true, "{a}");
    assert_eq!(a["host"], "edge-100", "{a}");
    assert_eq!(a["interfaces"], serde_json::json!(["eth1"]), "{a}");
    assert!(root
        .join(format!(
            "data/config/jobs/{}.json",
            job["id"].as_str().unwrap()
        ))
        .is_file());
    stop(s);

    // Next boot: re-applied; then a second config whose switch fails rolls back.
    let s = start(&root, "switch=error", &[]);
    let marks = || {
        actions(&root)
            .iter()
            .filter(|a| a["action"] == "rauc-mark-good")
            .count()
    };
    // The listener can answer before the boot flow has started its job: provisioned and
    // no job is also the state just before the re-apply, so wait for its mark-good.
    wait_health(&s, "the boot re-apply", |h| {
        h["job"].is_null() && h["provisioned"] == true && marks() >= 2
    });
    assert_eq!(marks(), 2, "the re-apply marked the slot good, once");
    let second = config_with_admin(&admin, "edge-200");
    let reply = post_config(&s, &admin, second.as_bytes());
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let job = wait_job(&s, reply.header("location").unwrap());
    assert_eq!(job["state"], "failed");
    assert_eq!(job["result"]["failed_step"], "switch");
    assert_eq!(job["rollback"]["state"], "completed");
    assert_eq!(job["rollback"]["generation"], 1);
    assert_eq!(
        std::fs::read_link(root.join("data/config/current")).unwrap(),
        Path::new("generations/1")
    );
    assert!(!root.join("data/config/generations/2").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "edge-100\n"
    );
    stop(s);
}

#[test]
fn an_invalid_boot_seed_is_refused_and_reported_then_usb_provisions() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, true);
    let bad = EXAMPLE.replace(
        "address = \"192.168.100.1/24\"",
        "address = \"192.168.100.1/33\"",
    );
    std::fs::write(root.join("boot/config.toml"), bad).unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    std::fs::write(usb.join("config.toml"), EXAMPLE).unwrap();

    let s = start(&root, "", &["--usb-dir", usb.to_str().unwrap()]);
    let h = wait_health(&s, "provisioning from USB", |h| {
        h["provisioned"] == true && h["job"].is_null()
    });
    let err = &h["last_import_error"];
    assert_eq!(err["origin"], "boot", "{h}");
    assert_eq!(err["location"], "/boot/config.toml");
    assert_eq!(err["errors"][0]["path"], "network.lan.address");
    assert!(err["errors"][0]["line"].is_number());
    assert!(
        !root.join("data/atomix/fresh-flash").exists(),
        "refused counts as dealt with"
    );
    let source: Value = serde_json::from_slice(
        &std::fs::read(root.join("data/config/current/source.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(source["origin"], "usb");
    assert_eq!(source["signer"], Value::Null);
    stop(s);
}

#[test]
fn a_job_cut_off_by_a_crash_is_failed_and_rolled_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, false);
    let mut s = start(&root, "switch=crash", &[]);
    let reply = post_config(&s, &key, EXAMPLE.as_bytes());
    assert_eq!(reply.status, 202);
    let url = reply.header("location").unwrap().to_owned();
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "the crash failpoint fired");
    let id = url.rsplit('/').next().unwrap();
    let on_disk: Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("data/config/jobs/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["state"], "running", "cut off mid-job");
    assert!(root.join("etc/containers/systemd/web.container").exists());
    drop(s);

    let s = start(&root, "", &[]);
    let job = http(s.addr, "GET", &url, &[], b"").json();
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["rollback"]["state"], "completed");
    assert_eq!(job["rollback"]["generation"], Value::Null);
    assert_eq!(health(&s)["provisioned"], false);
    assert!(!root.join("data/config/generations/1").exists());
    assert!(!root.join("etc/containers/systemd/web.container").exists());
    stop(s);
}

#[test]
fn a_bundle_in_boot_provisions_a_fresh_flash_with_its_image_archive() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, true);
    let config = format!(
        "{EXAMPLE}\n[[containers]]\nname = \"hello\"\nimage = \"oci-archive:/data/apps/hello/hello.tar\"\n"
    );
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, bytes) in [
        ("config.toml", config.as_bytes()),
        ("apps/hello/hello.tar", b"an OCI archive".as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, bytes).unwrap();
    }
    let gz = tar.into_inner().unwrap().finish().unwrap();
    std::fs::write(root.join("boot/atomix-config.tar.gz"), gz).unwrap();

    let s = start(&root, "", &[]);
    let h = wait_health(&s, "provisioning from the boot bundle", |h| {
        h["provisioned"] == true && h["job"].is_null()
    });
    assert!(h["last_import_error"].is_null(), "{h}");
    let source: Value = serde_json::from_slice(
        &std::fs::read(root.join("data/config/current/source.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(source["origin"], "boot");
    assert_eq!(
        std::fs::read(root.join("data/apps/hello/hello.tar")).unwrap(),
        b"an OCI archive"
    );
    let unit =
        std::fs::read_to_string(root.join("etc/containers/systemd/hello.container")).unwrap();
    assert!(
        unit.contains("Image=oci-archive:/data/apps/hello/hello.tar"),
        "{unit}"
    );
    assert!(!root.join("data/atomix/fresh-flash").exists());
    stop(s);
}

/// A stand-in for a RAUC bundle, a few MiB (`--system record` never reads it).
fn bundle_bytes() -> Vec<u8> {
    (0..800_000u32)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect()
}

/// POST /api/update`query` with `body`, signed by `key` over `signed`.
fn post_update(s: &Server, key: &Key, query: &str, signed: &[u8], body: &[u8]) -> common::Reply {
    let n = http(s.addr, "GET", "/api/nonce", &[], b"").json()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let sig = signature_header(key, &n, signed);
    http(
        s.addr,
        "POST",
        &format!("/api/update{query}"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Atomix-Nonce", &n),
            ("X-Atomix-Content-SHA256", &sha256_hex(signed)),
            ("X-Atomix-Signature", &sig),
        ],
        body,
    )
}

fn uploads(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("data/rauc/uploads"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_pushed_bundle_is_stored_installed_removed_and_the_device_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, false);
    let s = start(&root, "install=sleep(2000)", &[]);
    let bundle = bundle_bytes();

    let reply = post_update(&s, &key, "?reboot=true", &bundle, &bundle);
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let url = reply.header("location").unwrap().to_owned();
    assert_eq!(reply.json()["job"], url.as_str());

    // While the install is held: the bundle is on disk, whole, and nothing else runs.
    let stored = uploads(&root);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].extension().is_some_and(|e| e == "raucb"));
    assert!(
        std::fs::read(&stored[0]).unwrap() == bundle,
        "stored byte for byte"
    );
    let busy = post_update(&s, &key, "", &bundle, &bundle);
    assert_eq!(busy.status, 409);
    assert_eq!(busy.json()["job"], url.as_str());
    let busy = post_config(&s, &key, EXAMPLE.as_bytes());
    assert_eq!(busy.status, 409);
    assert_eq!(busy.json()["job"], url.as_str());
    assert_eq!(uploads(&root), stored, "the refused upload left nothing");

    let job = wait_job(&s, &url);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "update");
    let steps: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["receive", "install", "install", "cleanup", "reboot"]
    );
    let is_reboot =
        |a: &Value| a["action"] == "systemctl" && a["args"] == serde_json::json!(["reboot"]);
    assert!(
        !actions(&root).iter().any(is_reboot),
        "a client polling sees the success before the reboot"
    );
    assert!(uploads(&root).is_empty(), "removed once installed");
    let installs: Vec<Value> = actions(&root)
        .into_iter()
        .filter(|a| a["action"] == "rauc-install")
        .collect();
    assert_eq!(installs.len(), 1);
    assert_eq!(installs[0]["bundle"], stored[0].to_str().unwrap());

    // The reboot comes after the job was recorded as succeeded.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = actions(&root);
        if let Some(reboot) = log.iter().position(is_reboot) {
            let install = log
                .iter()
                .position(|a| a["action"] == "rauc-install")
                .unwrap();
            assert!(install < reboot);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reboot was requested: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(s);
}

#[test]
fn a_bundle_with_a_bad_signature_installs_nothing_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, false);
    // A bundle left by an upload cut off by a crash is removed at start.
    let leftover = root.join("data/rauc/uploads/0123456789abcdef.raucb");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"half a bundle").unwrap();
    let s = start(&root, "", &[]);
    assert!(!leftover.exists());

    let bundle = bundle_bytes();
    let mut tampered = bundle.clone();
    tampered[12345] ^= 0x40;
    let reply = post_update(&s, &key, "", &bundle, &tampered);
    assert_eq!(reply.status, 400);
    let error = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(error.ends_with("nothing was stored"), "{error}");
    let stranger = keygen(dir.path(), "stranger", "ed25519");
    let reply = post_update(&s, &stranger, "", &bundle, &bundle);
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json()["error"],
        "the signing key is not trusted by this device"
    );

    assert!(uploads(&root).is_empty(), "{:?}", uploads(&root));
    assert!(
        !actions(&root).iter().any(|a| a["action"] == "rauc-install"),
        "nothing was installed"
    );
    assert!(health(&s)["job"].is_null());
    assert!(
        !root.join("data/config/jobs").exists(),
        "no job was started"
    );

    // The same bundle, signed over what is sent, goes through.
    let reply = post_update(&s, &key, "", &tampered, &tampered);
    assert_eq!(reply.status, 202);
    let job = wait_job(&s, reply.header("location").unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    stop(s);
}

/// A reboot of a provisioned device: `/etc` and `/run` (tmpfs) are gone, `restore` puts
/// the generation's files back and loads the ruleset and host name before any service
/// starts, and the service's re-apply then finds them in place: nothing that read them
/// is reloaded or restarted.
#[test]
fn a_reboot_restores_the_files_first_and_the_reapply_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "provisioning", "ed25519");
    let root = root(dir.path(), &key, false);
    let s = start(&root, "", &[]);
    let config = config_with_admin(&key, "edge-300");
    let reply = post_config(&s, &key, config.as_bytes());
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let job = wait_job(&s, reply.header("location").unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    stop(s);

    for tmpfs in ["etc", "run"] {
        std::fs::remove_dir_all(root.join(tmpfs)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["restore", "--system", "record", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("generation 1 is back in place"), "{said}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "edge-300\n"
    );
    let kinds = |log: &[Value]| -> Vec<String> {
        log.iter()
            .map(|a| a["action"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds(&actions(&root)), ["nft-apply", "kernel-hostname"]);
    // Restore announces nothing: the service does, once it runs.
    assert_eq!(announced(&root), Value::Null);
    let ruleset = root.join("etc/nftables.d/atomix.nft");
    assert_eq!(actions(&root)[0]["file"], ruleset.to_str().unwrap());

    let restored = actions(&root).len();
    let s = start(&root, "", &[]);
    wait_health(&s, "the boot re-apply", |h| {
        h["job"].is_null()
            && h["provisioned"] == true
            && actions(&root)
                .iter()
                .any(|a| a["action"] == "rauc-mark-good")
    });
    let reapply: Vec<Value> = actions(&root).split_off(restored);
    for a in &reapply {
        let line = a.to_string();
        assert!(
            !["networkctl", "nft-apply", "hostname"].contains(&a["action"].as_str().unwrap())
                && !(a["args"][0] == "restart"
                    && (line.contains("dnsmasq") || line.contains("chrony"))),
            "the re-apply touched a service whose files were in place: {line}"
        );
    }
    // It only checks that the services which read them are running, after making sure
    // the admin's user manager runs for the rootless app (the image does not linger, so
    // at boot nothing has started it yet).
    let checks: Vec<String> = reapply
        .iter()
        .filter(|a| a["args"][0] == "start")
        .map(|a| a["args"][1].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        checks,
        ["user@1000.service", "dnsmasq.service", "chrony.service"]
    );
    assert_eq!(reapply.last().unwrap()["action"], "rauc-mark-good");
    wait_for(
        || announced(&root)["announcement"]["name"] == "edge-300",
        "the announcement of the restored device",
    );
    stop(s);
    // A stop takes the announcement back (goodbye packets on a device).
    assert_eq!(announced(&root), Value::Null);

    // Unprovisioned (after a factory reset wiped /data): nothing to restore.
    std::fs::remove_dir_all(root.join("data")).unwrap();
    std::fs::remove_dir_all(root.join("etc")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atomix-provision"))
        .args(["restore", "--system", "record", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!root.join("etc").exists());
}
