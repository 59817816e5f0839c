//! Commands run on the host (qemu-img, mtools, ssh, ssh-keygen): a failure panics with
//! what the command said.

use std::process::Command;

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
