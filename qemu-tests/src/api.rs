//! The device's HTTP API from the test's side, through the forwarded ports: plain GETs,
//! waiting for health and for provisioning, requests signed as the API wants, and
//! following a job to its end. The contract (routes, headers, the signed message, the
//! answers' types) is `atomix-api`'s.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use atomix_api::{headers, routes, Health, Job, Nonce};
use serde_json::Value;

use crate::{host, Device};

impl Device {
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
