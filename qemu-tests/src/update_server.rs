//! A real hawkBit DDI update server for the fleet test: goosebit (from PyPI, installed by
//! `scripts/setup-update-server.sh`) with its own SQLite database in the test's
//! directory, in strict device authentication, on a port of 127.0.0.1 the guest reaches
//! at [`HOST_FROM_GUEST`](crate::updates::HOST_FROM_GUEST) through QEMU's user network;
//! and an operator's client of its API (devices, software, their state and logs).

use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::host;

/// The operator account the test creates on the fresh server.
const OPERATOR: &str = "operator@atomix.test";
const PASSWORD: &str = "operator-password-for-tests";

/// One goosebit server, stopped when dropped; its log is `server.log` in its directory.
#[derive(Debug)]
pub struct UpdateServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    /// The operator's bearer token.
    token: String,
}

fn venv() -> PathBuf {
    let cache = std::env::var_os("ATOMIX_CACHE").unwrap_or_else(|| "/var/cache/atomix".into());
    PathBuf::from(cache).join("goosebit-venv")
}

impl UpdateServer {
    /// A fresh server in `dir` (database, artifacts, log), telling devices to poll every
    /// `poll` (`HH:MM:SS`), with the operator logged in.
    pub fn start(dir: &Path, poll: &str) -> UpdateServer {
        let venv = venv();
        assert!(
            venv.join("bin/uvicorn").exists(),
            "goosebit is not installed in {}: run scripts/setup-update-server.sh",
            venv.display()
        );
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        // Strict: a device must be created with its token before it may poll. The logging
        // keeps uvicorn's own lines (the port it bound, each request).
        fs::write(
            dir.join("goosebit.yaml"),
            format!(
                "tenant: DEFAULT\n\
                 poll_time: \"{poll}\"\n\
                 db_uri: sqlite:///{db}\n\
                 artifacts_dir: {artifacts}\n\
                 secret_key: \"Z29vc2ViaXQtc2VjcmV0LWZvci10aGUtZmxlZXQtdGVzdA==\"\n\
                 device_auth:\n  enable: true\n  mode: strict\n\
                 logging:\n  version: 1\n  disable_existing_loggers: false\n  \
                 formatters: {{simple: {{format: \"%(asctime)s %(name)s %(levelname)s %(message)s\"}}}}\n  \
                 handlers: {{console: {{class: logging.StreamHandler, formatter: simple}}}}\n  \
                 root: {{level: INFO, handlers: [console]}}\n",
                db = dir.join("db.sqlite3").display(),
                artifacts = dir.join("artifacts").display(),
            ),
        )
        .unwrap();
        // The database schema: aerich with the migrations goosebit ships.
        let migrations = fs::read_dir(venv.join("lib"))
            .unwrap()
            .flatten()
            .map(|python| python.path().join("site-packages/goosebit/db/migrations"))
            .find(|p| p.is_dir())
            .expect("goosebit's migrations in the virtual environment");
        fs::write(
            dir.join("pyproject.toml"),
            format!(
                "[tool.aerich]\ntortoise_orm = \"goosebit.db.config.TORTOISE_CONF\"\nlocation = \"{}\"\nsrc_folder = \"./.\"\n",
                migrations.display()
            ),
        )
        .unwrap();
        host(
            Command::new(venv.join("bin/aerich"))
                .arg("upgrade")
                .current_dir(&dir),
        );

        // Port 0: the kernel picks, uvicorn holds it from the start and says which.
        let log = dir.join("server.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "uvicorn",
                "goosebit:app",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start goosebit");
        let mut server = UpdateServer {
            port: 0,
            dir: dir.clone(),
            child,
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        server.port = loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text
                .split("Uvicorn running on http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|p| p.parse().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("goosebit ended ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "goosebit did not listen within 60 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        // The first user, then a login as them.
        let (status, _) = server.call("POST", "/setup", None, form_login());
        assert_eq!(status, 200, "goosebit's /setup");
        let (status, login) = server.call("POST", "/login", None, form_login());
        assert_eq!(status, 200, "goosebit's /login: {login}");
        server.token = login["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {login}"))
            .to_owned();
        eprintln!(
            "goosebit on 127.0.0.1:{} (log {})",
            server.port,
            log.display()
        );
        server
    }

    /// The base URL a device is configured with.
    pub fn url_from_guest(&self) -> String {
        format!("http://{}:{}", crate::updates::HOST_FROM_GUEST, self.port)
    }

    /// One request to the server: the status and the JSON answer (`null` when it is not
    /// JSON). `auth` adds the operator's bearer token.
    fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<(&str, Box<dyn Read + Send>)>,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = auth {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = match body {
            Some((content_type, reader)) => agent.run(
                request
                    .header("Content-Type", content_type)
                    .body(ureq::SendBody::from_owned_reader(reader))
                    .unwrap(),
            ),
            None => agent.run(request.body(()).unwrap()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the answer: {e}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An operator's API call that must succeed (2xx): its JSON answer.
    fn operator(&self, method: &str, path: &str, json: Option<Value>) -> Value {
        let body = json.map(|v| -> (&str, Box<dyn Read + Send>) {
            ("application/json", Box::new(Cursor::new(v.to_string())))
        });
        let (status, answer) = self.call(method, path, Some(&self.token.clone()), body);
        assert!(
            (200..300).contains(&status),
            "goosebit {method} {path}: {status} {answer}"
        );
        answer
    }

    /// Creates a device with its token (strict mode: before it may poll).
    pub fn create_device(&self, id: &str, token: &str) {
        self.operator(
            "PUT",
            "/api/v1/devices",
            Some(serde_json::json!({"devices": [id], "auth_token": token})),
        );
    }

    /// Uploads a RAUC bundle (goosebit reads its manifest): the software's id.
    pub fn upload(&self, bundle: &Path) -> u64 {
        let boundary = "atomix-fleet-test-boundary-7f3a";
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            bundle.file_name().unwrap().to_string_lossy()
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let body = Cursor::new(head)
            .chain(fs::File::open(bundle).unwrap())
            .chain(Cursor::new(tail));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let (status, answer) = self.call(
            "PUT",
            "/api/v1/software",
            Some(&self.token.clone()),
            Some((&content_type, Box::new(body))),
        );
        assert_eq!(status, 200, "uploading {}: {answer}", bundle.display());
        answer["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no software id in {answer}"))
    }

    /// Assigns a software to a device (it is offered at its next poll).
    pub fn assign(&self, device: &str, software: u64) {
        self.operator(
            "PATCH",
            "/api/v1/devices",
            Some(serde_json::json!({"devices": [device], "software": software.to_string()})),
        );
    }

    /// What the server knows of a device (`sw_version`, `hardware`, `last_state`, ...).
    /// From the device list: goosebit 0.2.12's `GET /api/v1/devices/{id}` fails (500) once
    /// the device has software assigned, the list does not.
    pub fn device(&self, id: &str) -> Value {
        let list = self.operator("GET", "/api/v1/devices", None);
        list["devices"]
            .as_array()
            .and_then(|devices| devices.iter().find(|d| d["id"] == id))
            .unwrap_or_else(|| panic!("goosebit has no device {id}: {list}"))
            .clone()
    }

    /// The device's deployment log on the server (the feedback's details).
    pub fn device_log(&self, id: &str) -> String {
        let log = self.operator("GET", &format!("/api/v1/devices/{id}/log"), None);
        log["log"]
            .as_str()
            .map_or_else(|| log.to_string(), str::to_owned)
    }

    /// Waits until `done` holds for the server's view of the device; that view.
    pub fn wait_for_device(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let device = self.device(id);
            if done(&device) {
                return device;
            }
            assert!(
                Instant::now() < deadline,
                "goosebit: device {id} not {what} within {timeout:?}: {device}\nlog: {}",
                self.device_log(id)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

fn form_login() -> Option<(&'static str, Box<dyn Read + Send>)> {
    Some((
        "application/x-www-form-urlencoded",
        Box::new(Cursor::new(format!(
            "username={}&password={PASSWORD}",
            OPERATOR.replace('@', "%40")
        ))),
    ))
}

impl Drop for UpdateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
