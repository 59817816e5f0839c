//! The device's HTTP API (userspace/README.md, "HTTP API"), as a small blocking client.
//! Every refusal the operator can act on is a [`DeviceError`] variant whose message says
//! what to do. Routes, headers and bodies are the API's contract ([`atomix_api`]); its
//! types ignore fields they do not know, so a newer device's additions never break the
//! CLI.

use std::time::Duration;

use atomix_api::limits::{describe, CONFIG_BUNDLE_BYTES, CONFIG_TEXT_BYTES, UPDATE_BUNDLE_BYTES};
use atomix_api::routes::{self, PORT};
use atomix_api::{
    headers, media_types, Accepted, ErrorBody, FactoryReset, Health, Invalid, Job, JobList, Nonce,
    Problem,
};
use serde::de::DeserializeOwned;

/// Where a device's API is: `http://HOST:PORT`, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUrl(String);

impl DeviceUrl {
    /// Accepts `http://HOST[:PORT][/]`, or a bare `HOST[:PORT]`; the port defaults to
    /// the service's ([`PORT`]). `https://` is refused: the device speaks plain HTTP.
    pub fn parse(s: &str) -> Result<DeviceUrl, String> {
        let s = s.trim();
        let rest = if let Some(rest) = s.strip_prefix("http://") {
            rest
        } else if s.starts_with("https://") {
            return Err(format!(
                "{s:?}: the device serves plain HTTP; use http://HOST:{PORT}"
            ));
        } else if s.contains("://") {
            return Err(format!("{s:?}: only http:// URLs are supported"));
        } else {
            s
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "{s:?} is not a device address: give http://HOST[:PORT], e.g. http://192.168.100.1:{PORT}"
            ));
        }
        // `[v6]` and `[v6]:port`, `v4`, `v4:port`, `name:port`.
        let has_port = match host.rsplit_once(':') {
            Some((h, p)) => {
                (!h.contains(':') || h.ends_with(']')) && p.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        };
        let authority = if has_port {
            host.to_owned()
        } else if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{PORT}")
        } else {
            format!("{host}:{PORT}")
        };
        Ok(DeviceUrl(format!("http://{authority}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeviceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What went wrong talking to a device, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot reach the device at {url} ({cause}); is the laptop on the device's LAN port or its network, is the address right, and has the device finished booting?")]
    Unreachable { url: String, cause: String },
    #[error("the device refused the signature (401: {0}); sign with a key the device trusts: one of its provisioning keys or, once provisioned, an admin key of its current config")]
    Refused(String),
    #[error("the device is busy with another apply job ({job}); wait for it (atomixctl job --device URL {id}) and try again")]
    Busy { job: String, id: String },
    #[error("the device says the config is not valid:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error(
        "the file is too large for the device (413: {0}); a config.toml may be {config}, a bundle {bundle}",
        config = describe(CONFIG_TEXT_BYTES),
        bundle = describe(CONFIG_BUNDLE_BYTES)
    )]
    TooLarge(String),
    #[error(
        "the device refused the update bundle's size (413: {0}); it takes at most {limit}",
        limit = describe(UPDATE_BUNDLE_BYTES)
    )]
    BundleTooLarge(String),
    #[error("another bundle upload to the device is in progress; wait for it and try again")]
    UploadInProgress,
    #[error("the device did not accept the file type (415: {0})")]
    Unsupported(String),
    #[error("no device announced as {name:?} answered on the local network within {secs} s; is the laptop on the device's LAN (or, unprovisioned, its WAN) network? `atomixctl discover` lists the devices that answer; or give --device http://ADDRESS")]
    NotDiscovered { name: String, secs: u64 },
    #[error("more than one host answered for {name:?} ({addresses}): names on the local network are not authenticated; give --device http://ADDRESS of the device you mean")]
    AmbiguousName { name: String, addresses: String },
    #[error("the device announced as {name:?} answered, but only with addresses a URL cannot use ({addresses}); give --device http://ADDRESS")]
    NoUsableAddress { name: String, addresses: String },
    #[error("no such job on the device (404)")]
    NotFound,
    #[error("the device answered {status} to {what}: {message}")]
    Other {
        what: String,
        status: u16,
        message: String,
    },
}

/// A blocking client for one device.
#[derive(Debug)]
pub struct Device {
    url: DeviceUrl,
    agent: ureq::Agent,
}

/// The body of a POST: bytes and their content type.
#[derive(Debug)]
pub struct Upload<'a> {
    pub content_type: &'static str,
    pub body: &'a [u8],
}

/// The content type the API wants for these bytes: a bundle (gzip or tar) or config text.
pub fn content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        media_types::GZIP
    } else if atomix_config::bundle::looks_like_bundle(bytes) {
        media_types::TAR
    } else {
        media_types::CONFIG
    }
}

/// A device's answer: its status and body text, read as JSON on demand.
#[derive(Debug)]
struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    /// The body as `T`; a body that is not one is an error naming the request.
    fn body<T: DeserializeOwned>(&self, what: &str) -> Result<T, DeviceError> {
        serde_json::from_str(&self.text).map_err(|e| DeviceError::Other {
            what: what.to_owned(),
            status: self.status,
            message: format!("an answer atomixctl cannot read ({e})"),
        })
    }

    /// A refusal's body; one that is not JSON is its text.
    fn refusal(&self) -> ErrorBody {
        serde_json::from_str(&self.text).unwrap_or_else(|_| ErrorBody {
            error: self.text.clone(),
            job: None,
        })
    }
}

impl Device {
    pub fn new(url: DeviceUrl) -> Device {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        Device { url, agent }
    }

    pub fn url(&self) -> &DeviceUrl {
        &self.url
    }

    fn unreachable(&self, e: ureq::Error) -> DeviceError {
        DeviceError::Unreachable {
            url: self.url.to_string(),
            cause: e.to_string(),
        }
    }

    fn read(mut response: http_response::Response) -> Reply {
        Reply {
            status: response.status().as_u16(),
            text: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Result<Reply, DeviceError> {
        let response = self
            .agent
            .get(&format!("{}{path}", self.url))
            .call()
            .map_err(|e| self.unreachable(e))?;
        Ok(Self::read(response))
    }

    /// `GET /api/health`.
    pub fn health(&self) -> Result<Health, DeviceError> {
        let what = format!("GET {}", routes::HEALTH);
        match self.get(routes::HEALTH)? {
            reply if reply.status == 200 => reply.body(&what),
            reply => Err(other(&what, &reply)),
        }
    }

    /// `GET /api/nonce`: the nonce.
    pub fn nonce(&self) -> Result<String, DeviceError> {
        let what = format!("GET {}", routes::NONCE);
        match self.get(routes::NONCE)? {
            reply if reply.status == 200 => Ok(reply.body::<Nonce>(&what)?.nonce),
            reply => Err(other(&what, &reply)),
        }
    }

    /// `GET /api/jobs/{id}`; `id` may also be the job's path (`/api/jobs/ID`).
    pub fn job(&self, id: &str) -> Result<Job, DeviceError> {
        let path = job_path(id);
        let what = format!("GET {path}");
        match self.get(&path)? {
            reply if reply.status == 200 => reply.body(&what),
            reply if reply.status == 404 => Err(DeviceError::NotFound),
            reply => Err(other(&what, &reply)),
        }
    }

    /// `POST /api/factory-reset` signed over [`FactoryReset::BODY`]: the job's path.
    pub fn post_factory_reset(
        &self,
        nonce: &str,
        sha256: &str,
        signature_b64: &str,
    ) -> Result<String, DeviceError> {
        let what = format!("POST {}", routes::FACTORY_RESET);
        let response = self
            .agent
            .post(&format!("{}{}", self.url, routes::FACTORY_RESET))
            .header("Content-Type", media_types::JSON)
            .header(headers::NONCE, nonce)
            .header(headers::CONTENT_SHA256, sha256)
            .header(headers::SIGNATURE, signature_b64)
            .send(FactoryReset::BODY)
            .map_err(|e| self.unreachable(e))?;
        let reply = Self::read(response);
        match reply.status {
            202 => Ok(reply.body::<Accepted>(&what)?.job),
            401 => Err(DeviceError::Refused(reply.refusal().error)),
            409 => match reply.refusal().job {
                Some(job) => Err(busy(&job)),
                None => Err(DeviceError::UploadInProgress),
            },
            _ => Err(other(&what, &reply)),
        }
    }

    /// `GET /api/jobs`, signed over the empty body: the recent jobs, newest first.
    pub fn jobs(
        &self,
        nonce: &str,
        sha256: &str,
        signature_b64: &str,
    ) -> Result<JobList, DeviceError> {
        let what = format!("GET {}", routes::JOB_LIST);
        let response = self
            .agent
            .get(&format!("{}{}", self.url, routes::JOB_LIST))
            .header(headers::NONCE, nonce)
            .header(headers::CONTENT_SHA256, sha256)
            .header(headers::SIGNATURE, signature_b64)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let reply = Self::read(response);
        match reply.status {
            200 => reply.body(&what),
            401 => Err(DeviceError::Refused(reply.refusal().error)),
            _ => Err(other(&what, &reply)),
        }
    }

    /// `POST /api/config` signed: the job's path (`/api/jobs/ID`). `progress` is called
    /// with the number of bytes sent so far as the body goes out.
    pub fn post_config(
        &self,
        upload: &Upload<'_>,
        nonce: &str,
        sha256: &str,
        signature_b64: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<String, DeviceError> {
        let what = format!("POST {}", routes::CONFIG);
        let mut body = Counting {
            inner: upload.body,
            sent: 0,
            progress,
        };
        let response = self
            .agent
            .post(&format!("{}{}", self.url, routes::CONFIG))
            .header("Content-Type", upload.content_type)
            // Sent from a reader (for progress), so the length is declared here.
            .header("Content-Length", upload.body.len().to_string())
            .header("Expect", "100-continue")
            .header(headers::NONCE, nonce)
            .header(headers::CONTENT_SHA256, sha256)
            .header(headers::SIGNATURE, signature_b64)
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| self.unreachable(e))?;
        let reply = Self::read(response);
        match reply.status {
            202 => Ok(reply.body::<Accepted>(&what)?.job),
            401 => Err(DeviceError::Refused(reply.refusal().error)),
            409 => Err(busy(&reply.refusal().job.unwrap_or_default())),
            413 => Err(DeviceError::TooLarge(reply.refusal().error)),
            415 => Err(DeviceError::Unsupported(reply.refusal().error)),
            422 => Err(DeviceError::Invalid(problems(
                &reply.body::<Invalid>(&what)?.errors,
            ))),
            _ => Err(other(&what, &reply)),
        }
    }
}

/// A signed RAUC bundle upload: the open file, its size, and what to call with the
/// number of bytes sent so far as the upload proceeds.
pub struct BundleUpload<'a> {
    pub file: std::fs::File,
    pub size: u64,
    pub progress: &'a mut dyn FnMut(u64),
}

impl std::fmt::Debug for BundleUpload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleUpload")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Counts what the HTTP client reads of a body, for progress.
struct Counting<'a, R> {
    inner: R,
    sent: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}

/// How long the device may take to answer once a bundle is sent: it syncs a few
/// hundred MiB to its SD card and checks the signature first.
const BUNDLE_ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

impl Device {
    /// `POST /api/update[?reboot=true]`: streams the bundle from its file (never read
    /// into memory), signed over its SHA-256; the job's path (`/api/jobs/ID`).
    pub fn post_update(
        &self,
        upload: BundleUpload<'_>,
        reboot: bool,
        nonce: &str,
        sha256: &str,
        signature_b64: &str,
    ) -> Result<String, DeviceError> {
        let query = if reboot { "?reboot=true" } else { "" };
        let what = format!("POST {}{query}", routes::UPDATE);
        let BundleUpload {
            file,
            size,
            progress,
        } = upload;
        let mut body = Counting {
            inner: file,
            sent: 0,
            progress,
        };
        let response = self
            .agent
            .post(&format!("{}{}{query}", self.url, routes::UPDATE))
            // The upload takes as long as it takes; only a stalled answer is an error.
            .config()
            .timeout_global(None)
            .timeout_send_body(None)
            .timeout_recv_response(Some(BUNDLE_ANSWER_TIMEOUT))
            .build()
            .header("Content-Type", media_types::UPDATE_BUNDLE)
            .header("Content-Length", size.to_string())
            // The device answers a refusal from the headers alone; the bundle is only
            // sent once it has asked for it.
            .header("Expect", "100-continue")
            .header(headers::NONCE, nonce)
            .header(headers::CONTENT_SHA256, sha256)
            .header(headers::SIGNATURE, signature_b64)
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| self.unreachable(e))?;
        let reply = Self::read(response);
        match reply.status {
            202 => Ok(reply.body::<Accepted>(&what)?.job),
            401 => Err(DeviceError::Refused(reply.refusal().error)),
            409 => match reply.refusal().job {
                Some(job) => Err(busy(&job)),
                None => Err(DeviceError::UploadInProgress),
            },
            413 => Err(DeviceError::BundleTooLarge(reply.refusal().error)),
            415 => Err(DeviceError::Unsupported(reply.refusal().error)),
            _ => Err(other(&what, &reply)),
        }
    }
}

/// ureq's response type, named once.
mod http_response {
    pub type Response = ureq::http::Response<ureq::Body>;
}

/// A 409: the job that runs, by path and id.
fn busy(job: &str) -> DeviceError {
    DeviceError::Busy {
        job: job.to_owned(),
        id: job.rsplit('/').next().unwrap_or("").to_owned(),
    }
}

fn other(what: &str, reply: &Reply) -> DeviceError {
    let error = reply.refusal().error;
    DeviceError::Other {
        what: what.to_owned(),
        status: reply.status,
        message: if error.is_empty() {
            "(no message)".to_owned()
        } else {
            error
        },
    }
}

/// `/api/jobs/ID` for an id or a job path.
pub fn job_path(id: &str) -> String {
    if id.starts_with(routes::JOBS) {
        id.to_owned()
    } else {
        routes::job(id)
    }
}

/// A 422's problems, one line each, as the device words them.
pub fn problems(errors: &[Problem]) -> Vec<String> {
    errors.iter().map(problem_line).collect()
}

/// `config.toml:LINE:COL: path: message`, or `member: message` without a position.
pub fn problem_line(p: &Problem) -> String {
    let Problem { path, message, .. } = p;
    match (p.line, p.column) {
        (Some(l), Some(c)) => format!("config.toml:{l}:{c}: {path}: {message}"),
        _ if path.is_empty() => message.to_owned(),
        _ => format!("{path}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_urls_get_a_scheme_and_the_default_port() {
        let cases = [
            ("192.168.100.1", "http://192.168.100.1:8080"),
            ("192.168.100.1:9000", "http://192.168.100.1:9000"),
            ("http://192.168.100.1:8080/", "http://192.168.100.1:8080"),
            ("http://edge-042", "http://edge-042:8080"),
            ("[fe80::1]", "http://[fe80::1]:8080"),
            ("[fe80::1]:81", "http://[fe80::1]:81"),
            ("fe80::1", "http://[fe80::1]:8080"),
        ];
        for (input, want) in cases {
            assert_eq!(DeviceUrl::parse(input).unwrap().as_str(), want, "{input}");
        }
        for bad in ["https://x", "ftp://x", "", "http://x/api"] {
            assert!(DeviceUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_types_follow_the_bytes() {
        assert_eq!(content_type(b"schema = 1\n"), "application/toml");
        assert_eq!(content_type(&[0x1f, 0x8b, 8, 0]), "application/gzip");
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(content_type(&tar), "application/x-tar");
    }

    #[test]
    fn problems_read_like_the_offline_validator() {
        let v: Invalid = serde_json::from_value(serde_json::json!({"error": "the config is not valid", "valid": false, "errors": [
            {"line": 3, "column": 5, "path": "device.hostname", "message": "bad"},
            {"line": null, "column": null, "path": "../x", "message": "refused: a path outside the bundle"},
        ]}))
        .unwrap();
        assert_eq!(
            problems(&v.errors),
            [
                "config.toml:3:5: device.hostname: bad",
                "../x: refused: a path outside the bundle"
            ]
        );
        assert_eq!(job_path("abc"), "/api/jobs/abc");
        assert_eq!(job_path("/api/jobs/abc"), "/api/jobs/abc");
    }
}
