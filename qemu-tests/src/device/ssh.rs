//! Commands on the running device as the admin user, over SSH to its WAN forward.

use std::path::Path;
use std::process::Command;

use super::Device;
use crate::host;

impl Device {
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

    /// Like [`Device::ssh`], but a failing command (or a dropped connection) is fine.
    pub fn ssh_unchecked(&self, key: &Path, command: &str) -> Option<String> {
        let out = self.ssh_command(key, command).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
