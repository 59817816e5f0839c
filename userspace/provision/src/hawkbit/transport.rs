//! The HTTP the DDI client needs, behind a narrow trait: JSON requests, and a download
//! streamed into a writer. [`UreqDdi`] speaks to a real server; [`FakeDdi`] answers from
//! a script of recorded documents and keeps every request, for tests.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read as _, Write};
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
    /// Sends `body` (JSON) if any and returns the 2xx answer's body.
    fn json(&mut self, method: Method, url: &str, body: Option<&str>) -> Result<String, DdiError>;

    /// Streams the body of `GET url` into `sink`, at most `limit` bytes; returns the
    /// number of bytes written.
    fn download(&mut self, url: &str, limit: u64, sink: &mut dyn Write) -> Result<u64, DdiError>;
}

/// How the device authenticates: the `Authorization` header's value.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth(pub Option<String>);

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

/// The real transport (plain HTTP; see the module doc of `hawkbit` for TLS).
#[derive(Debug)]
pub struct UreqDdi {
    agent: ureq::Agent,
    auth: Auth,
}

impl UreqDdi {
    /// Connect timeout 10 s; each JSON request 60 s in all; a download may take as long
    /// as it takes while data flows, but not 5 minutes without any.
    pub fn new(auth: Auth) -> UreqDdi {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .into();
        UreqDdi { agent, auth }
    }

    fn transport(url: &str, e: impl std::fmt::Display) -> DdiError {
        DdiError::Transport {
            url: url.to_owned(),
            cause: e.to_string(),
        }
    }

    fn check(url: &str, response: &mut ureq::http::Response<ureq::Body>) -> Result<(), DdiError> {
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let mut body = String::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(512)
            .read_to_string(&mut body);
        Err(DdiError::Status {
            url: url.to_owned(),
            status,
            body: body.trim().to_owned(),
        })
    }
}

impl Ddi for UreqDdi {
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
        let mut response = result.map_err(|e| Self::transport(url, e))?;
        Self::check(url, &mut response)?;
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
        let mut req = self.agent.get(url);
        if let Some(a) = &self.auth.0 {
            req = req.header("Authorization", a);
        }
        let mut response = req.call().map_err(|e| Self::transport(url, e))?;
        Self::check(url, &mut response)?;
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
    fn json(&mut self, method: Method, url: &str, body: Option<&str>) -> Result<String, DdiError> {
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
