//! Shared by the end-to-end tests: the real `atomix-provision serve --system record` on
//! loopback with a temporary root, keys made by the real `ssh-keygen` (`test_support`'s),
//! and the real `atomixctl`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::Key;

pub const ATOMIXCTL: &str = env!("CARGO_BIN_EXE_atomixctl");

/// The service binary, built for these tests.
pub fn provision_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| test_support::workspace_bin("atomix-provision", "atomix-provision"))
        .clone()
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub root: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `serve --system record` on a free loopback port (below the ephemeral range), trusting
/// `key` for provisioning.
pub fn start(dir: &Path, key: &Key, failpoints: &str) -> Server {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    let keys = dir.join("provisioning-keys");
    std::fs::write(&keys, &key.public).unwrap();
    // Not a port from bind(":0"): see test_support::ports.
    let addr = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, test_support::free_port()));
    let child = Command::new(provision_bin())
        .args(["serve", "--system", "record", "--root"])
        .arg(&root)
        .args(["--listen", &addr.to_string(), "--keys"])
        .arg(&keys)
        .env("ATOMIX_FAILPOINTS", failpoints)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start atomix-provision serve");
    assert!(
        test_support::wait_until_listening(addr, Duration::from_secs(15)),
        "the service did not listen"
    );
    Server { child, addr, root }
}

pub fn atomixctl(args: &[&str]) -> Output {
    Command::new(ATOMIXCTL)
        .args(args)
        // The key is always chosen by the test, never the environment's.
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("atomixctl runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

pub fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}
