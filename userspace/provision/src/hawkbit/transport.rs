//! The HTTP the DDI client needs, behind a narrow trait: JSON requests, and a download
//! streamed into a writer. [`UreqDdi`] speaks to a real server; [`FakeDdi`] answers from
//! a script of recorded documents and keeps every request, for tests.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read as _, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP method the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get,
    Put,
    Post,
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdiError {
    /// No answer: refused, unreachable, timed out, cut off.
    #[error("{url}: {cause}")]
    Transport { url: String, cause: String },
    /// Not sent: the device itself has no route to the server (its network is not up
    /// yet, e.g. early in a boot before the WAN lease). Not the server's fault.
    #[error("{url}: no route from this device yet: {cause}")]
    Offline { url: String, cause: String },
    /// An answer that is not 2xx; `body` is its start, for the log.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// A download could not be written where it goes.
    #[error("writing the download from {url}: {cause}")]
    Write { url: String, cause: String },
    /// The answer is larger than announced or allowed.
    #[error("{url}: more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
}

/// The largest JSON answer read (hawkBit's largest, a deployment with its action
/// history, is a few KiB).
pub const MAX_JSON: u64 = 1 << 20;

pub trait Ddi {
    /// The `Authorization` value of the requests from now on (the token file is read
    /// again every round: it may have been rotated).
    fn set_auth(&mut self, auth: Auth);

    /// Sends `body` (JSON) if any and returns the 2xx answer's body.
    fn json(&mut self, method: Method, url: &str, body: Option<&str>) -> Result<String, DdiError>;

    /// Streams the body of `GET url` into `sink`, at most `limit` bytes; returns the
    /// number of bytes written.
    fn download(&mut self, url: &str, limit: u64, sink: &mut dyn Write) -> Result<u64, DdiError>;
}

/// How the device authenticates: the `Authorization` header's value.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth(pub Option<String>);

impl Auth {
    /// The token itself (the header's value without its scheme), to keep out of what
    /// is logged and shown.
    pub fn secret(&self) -> Option<&str> {
        let value = self.0.as_deref()?;
        let token = value.split_once(' ').map_or(value, |(_, t)| t);
        (!token.is_empty()).then_some(token)
    }
}

/// What stands for the token where a server quoted it.
pub const REDACTED: &str = "<token>";

/// How much of an error answer's body, and of a redirect's `Location`, an error quotes.
pub const QUOTED_BODY: usize = 512;
pub const QUOTED_LOCATION: usize = 256;

/// The token is replaced in the whole text *before* it is cut: a token cut in half by
/// the limit would no longer be found, and its first half would be quoted.
fn redacted(text: &str, secret: Option<&str>, max: usize) -> String {
    let whole = match secret {
        Some(s) => text.replace(s, REDACTED),
        None => text.to_owned(),
    };
    whole.chars().take(max).collect()
}

/// The error for a non-2xx answer: the start of its body (or where a redirect leads),
/// with the token redacted. Enough of the body is read to find a whole token past the
/// part quoted.
pub fn status_error(
    url: &str,
    status: u16,
    location: Option<&str>,
    body: &[u8],
    secret: Option<&str>,
) -> DdiError {
    let body = if (300..400).contains(&status) {
        format!(
            "a redirect to {}, not followed",
            redacted(location.unwrap_or("nowhere"), secret, QUOTED_LOCATION)
        )
    } else {
        redacted(String::from_utf8_lossy(body).trim(), secret, QUOTED_BODY)
    };
    DdiError::Status {
        url: url.to_owned(),
        status,
        body,
    }
}

/// The bytes of an error answer read: the part quoted and a whole token beyond it.
const READ_OF_ERROR: u64 = (QUOTED_BODY + 2 * super::poller::MAX_TOKEN) as u64;

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token in a log.
        f.write_str(if self.0.is_some() {
            "Auth(set)"
        } else {
            "Auth(none)"
        })
    }
}

/// Where Debian's `ca-certificates` puts the trusted roots, one PEM file.
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// How long the transport waits, at most. Every request ends within `json` (a
/// download within `download`), whatever the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting (TCP and TLS).
    pub connect: Duration,
    /// Any single read: a server that stops sending is dropped.
    pub read: Duration,
    /// A JSON request, from connect to the last byte of the answer: a server dripping
    /// a byte a minute cannot hold the client.
    pub json: Duration,
    /// A download, in all (the update timer's limit): a few hundred MiB over a slow link.
    pub download: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            json: Duration::from_secs(120),
            download: Duration::from_secs(2 * 3600),
        }
    }
}

/// The trusted roots of the CA bundle at `path` (PEM); an unreadable or empty bundle
/// is an error naming it.
pub fn load_roots(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The real transport: HTTP, or HTTPS through rustls (ring) trusting `roots`.
/// Redirects are not followed: every URL the device fetches is checked to be on its
/// server first, and a redirect would lead elsewhere unchecked.
#[derive(Debug)]
pub struct UreqDdi {
    agent: ureq::Agent,
    auth: Auth,
    download_timeout: Duration,
}

impl UreqDdi {
    pub fn new(
        auth: Auth,
        roots: Vec<ureq::tls::Certificate<'static>>,
        timeouts: Timeouts,
    ) -> UreqDdi {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(timeouts.connect))
            .timeout_per_read(Some(timeouts.read))
            .timeout_global(Some(timeouts.json))
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        UreqDdi {
            agent,
            auth,
            download_timeout: timeouts.download,
        }
    }

    /// A request that got no answer: [`DdiError::Offline`] when the device's own
    /// network has no route (`ENETUNREACH`), [`DdiError::Transport`] otherwise.
    pub(super) fn request_error(url: &str, e: ureq::Error) -> DdiError {
        match &e {
            ureq::Error::Io(err) if err.kind() == io::ErrorKind::NetworkUnreachable => {
                DdiError::Offline {
                    url: url.to_owned(),
                    cause: e.to_string(),
                }
            }
            _ => Self::transport(url, e),
        }
    }

    fn transport(url: &str, e: impl std::fmt::Display) -> DdiError {
        DdiError::Transport {
            url: url.to_owned(),
            cause: e.to_string(),
        }
    }

    fn check(
        &self,
        url: &str,
        response: &mut ureq::http::Response<ureq::Body>,
    ) -> Result<(), DdiError> {
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        if !(300..400).contains(&status) {
            let _ = response
                .body_mut()
                .as_reader()
                .take(READ_OF_ERROR)
                .read_to_end(&mut body);
        }
        Err(status_error(
            url,
            status,
            location.as_deref(),
            &body,
            self.auth.secret(),
        ))
    }
}

impl Ddi for UreqDdi {
    fn set_auth(&mut self, auth: Auth) {
        self.auth = auth;
    }

    fn json(&mut self, method: Method, url: &str, body: Option<&str>) -> Result<String, DdiError> {
        let auth = self.auth.0.as_deref().unwrap_or_default();
        let result = match method {
            Method::Get => {
                let mut b = self.agent.get(url).header("Accept", "application/json");
                if !auth.is_empty() {
                    b = b.header("Authorization", auth);
                }
                b.call()
            }
            Method::Put | Method::Post => {
                let mut b = if method == Method::Put {
                    self.agent.put(url)
                } else {
                    self.agent.post(url)
                };
                b = b
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json");
                if !auth.is_empty() {
                    b = b.header("Authorization", auth);
                }
                b.send(body.unwrap_or("{}"))
            }
        };
        let mut response = result.map_err(|e| Self::request_error(url, e))?;
        self.check(url, &mut response)?;
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_JSON + 1)
            .read_to_string(&mut text)
            .map_err(|e| Self::transport(url, e))?;
        if text.len() as u64 > MAX_JSON {
            return Err(DdiError::TooLarge {
                url: url.to_owned(),
                limit: MAX_JSON,
            });
        }
        Ok(text)
    }

    fn download(&mut self, url: &str, limit: u64, sink: &mut dyn Write) -> Result<u64, DdiError> {
        let mut req = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(self.download_timeout))
            .build();
        if let Some(a) = &self.auth.0 {
            req = req.header("Authorization", a);
        }
        let mut response = req.call().map_err(|e| Self::request_error(url, e))?;
        self.check(url, &mut response)?;
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(limit.saturating_add(1))
            .reader();
        copy_limited(&mut reader, sink, limit, url)
    }
}

/// Copies at most `limit` bytes; one more is an error.
fn copy_limited(
    reader: &mut dyn io::Read,
    sink: &mut dyn Write,
    limit: u64,
    url: &str,
) -> Result<u64, DdiError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UreqDdi::transport(url, e)),
        };
        total += n as u64;
        if total > limit {
            return Err(DdiError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        sink.write_all(&buf[..n]).map_err(|e| DdiError::Write {
            url: url.to_owned(),
            cause: e.to_string(),
        })?;
    }
}

/// One scripted answer of [`FakeDdi`].
#[derive(Debug, Clone)]
pub enum Scripted {
    /// A 2xx answer with this body.
    Ok(String),
    /// This failure.
    Err(DdiError),
}

/// A request [`FakeDdi`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub method: Method,
    pub url: String,
    pub body: Option<String>,
}

/// A server played from a script: answers are queued per method and URL and given in
/// order (the last one repeats); a request nobody scripted is a transport error, as
/// from a server that is not there. Downloads come from `files`.
#[derive(Debug, Default)]
pub struct FakeDdi {
    pub answers: BTreeMap<(Method, String), VecDeque<Scripted>>,
    pub files: BTreeMap<String, Vec<u8>>,
    pub sent: Vec<Sent>,
    /// The `Authorization` value of each request, in order (tests check the token).
    pub auths: Vec<Option<String>>,
    auth: Option<String>,
}

impl FakeDdi {
    pub fn answer(&mut self, method: Method, url: &str, answer: Scripted) -> &mut Self {
        self.answers
            .entry((method, url.to_owned()))
            .or_default()
            .push_back(answer);
        self
    }

    pub fn ok(&mut self, method: Method, url: &str, body: &str) -> &mut Self {
        self.answer(method, url, Scripted::Ok(body.to_owned()))
    }

    /// The requests sent with this method, in order.
    pub fn sent_with(&self, method: Method) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.method == method).collect()
    }
}

impl Ddi for FakeDdi {
    fn set_auth(&mut self, auth: Auth) {
        self.auth = auth.0;
    }

    fn json(&mut self, method: Method, url: &str, body: Option<&str>) -> Result<String, DdiError> {
        self.auths.push(self.auth.clone());
        self.sent.push(Sent {
            method,
            url: url.to_owned(),
            body: body.map(str::to_owned),
        });
        let queue = self.answers.get_mut(&(method, url.to_owned()));
        let answer = match queue {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().cloned(),
            None => None,
        };
        match answer {
            Some(Scripted::Ok(body)) => Ok(body),
            Some(Scripted::Err(e)) => Err(e),
            None => Err(DdiError::Transport {
                url: url.to_owned(),
                cause: "connection refused (not scripted)".into(),
            }),
        }
    }

    fn download(&mut self, url: &str, limit: u64, sink: &mut dyn Write) -> Result<u64, DdiError> {
        self.auths.push(self.auth.clone());
        self.sent.push(Sent {
            method: Method::Get,
            url: url.to_owned(),
            body: None,
        });
        let Some(data) = self.files.get(url) else {
            return Err(DdiError::Status {
                url: url.to_owned(),
                status: 404,
                body: String::new(),
            });
        };
        copy_limited(&mut data.as_slice(), sink, limit, url)
    }
}
