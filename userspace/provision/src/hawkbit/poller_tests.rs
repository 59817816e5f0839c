//! The DDI client wired into the service: a device root in a temporary directory, the
//! service over a [`FakeSystem`] (so `rauc install` and `systemctl reboot` are recorded,
//! not run), the server scripted ([`FakeDdi`]) or real HTTP from a small server in this
//! process (the recorded goosebit answers, and hostile ones).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomix_config::generations::Origin;
use boot_state::{BootRecord, Slot};

use super::poller::*;
use super::transport::{Auth, Ddi, DdiError, FakeDdi, Method, Timeouts, UreqDdi};
use crate::apply::fixture::{accepted, Device};
use crate::jobs::{JobKind, JobState};
use crate::service::Service;

const TOKEN: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const TOKEN_FILE: &str = "data/apps/hawkbit/token";

const BASE: &str = "schema = 1\n[device]\nhostname = \"edge-043\"\n[admin]\nssh-authorized-keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe4xPVymZRl70Tj2o+I5S1YxR/KVel/B+JV/0KIat6V ops@laptop\"]\n[network.lan]\naddress = \"192.168.100.1/24\"\n";

/// `[update.hawkbit]` for a server at `url` (the controller id is the host name).
fn hawkbit(url: &str) -> String {
    format!(
        "{BASE}[update.hawkbit]\nurl = \"{url}\"\ntenant = \"DEFAULT\"\ntoken-file = \"/data/apps/hawkbit/token\"\ninsecure-http-token = {}\n",
        url.starts_with("http://")
    )
}

const GB: &str = "http://127.0.0.1:60053";
const GB_BASE: &str = "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043";
const GB_DEPLOYMENT: &str =
    "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043/deploymentBase/1";
const GB_DOWNLOAD: &str = "http://127.0.0.1:60053/DEFAULT/controller/v1/edge-043/download";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("testdata/goosebit-0.2.12/", $name))
    };
}

fn boot_record(slot: Slot, build: &str) -> BootRecord {
    BootRecord {
        slot,
        build_id: Some(build.into()),
        root_partuuid: "p".into(),
        root_device: "/dev/vda2".into(),
        disk: "/dev/vda".into(),
        boot_device: None,
        fresh_flash: false,
        partitions_created: vec![],
        data_formatted: false,
        data_device: None,
        data_fstype: None,
        steps: vec![],
    }
}

/// The service of one boot of `dev`: its boot record written, its boot id set.
fn boot(dev: &Device, slot: Slot, build: &str, boot_id: &str) -> Arc<Service> {
    boot_state::write_record(
        &dev.root().join(boot_state::BOOT_RECORD_PATH),
        &boot_record(slot, build),
    )
    .unwrap();
    let announcer: Arc<dyn crate::announce::Announcer> =
        Arc::new(crate::announce::FakeAnnouncer::default());
    let mut svc = Service::new(dev.applier.clone(), announcer, None, None);
    Arc::get_mut(&mut svc).unwrap().boot_id = boot_id.into();
    svc
}

/// Applies `text` as the current config through the service (the slot is marked good).
fn apply(svc: &Arc<Service>, text: &str) {
    let job = svc.tracker.start(Origin::Api, svc.current()).unwrap();
    let outcome = svc.import(job, accepted(text), Origin::Api, None);
    assert!(outcome.succeeded(), "{outcome:?}");
}

fn write_token(dev: &Device, token: &str) {
    let path = dev.root().join(TOKEN_FILE);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{token}\n")).unwrap();
}

/// Hands out prepared transports, one per client built.
#[derive(Debug, Default)]
struct FakeConnect(Mutex<Vec<FakeDdi>>);

impl Connect for FakeConnect {
    type Ddi = FakeDdi;
    fn connect(&self, _: &Settings) -> Result<FakeDdi, String> {
        self.0
            .lock()
            .unwrap()
            .pop()
            .ok_or_else(|| "no transport scripted".into())
    }
}

fn connect(ddi: FakeDdi) -> FakeConnect {
    FakeConnect(Mutex::new(vec![ddi]))
}

/// The recorded deployment with the size and SHA-1 of `bundle`.
fn served_deployment(bundle: &[u8], base: &str) -> String {
    use sha1::Digest as _;
    let sha1 = atomix_api::hex(&sha1::Sha1::digest(bundle));
    fixture!("05-deployment-base.json")
        .replace("360d6ca5d055c1b51450900acaad9c09109fd18a", &sha1)
        .replace("75407", &bundle.len().to_string())
        .replace(GB, base)
}

/// goosebit offering action 1 (`bundle`) until it has a final result.
fn goosebit(bundle: &[u8]) -> FakeDdi {
    let mut ddi = FakeDdi::default();
    ddi.ok(Method::Get, GB_BASE, fixture!("04-poll-deployment.json"))
        .ok(Method::Get, GB_DEPLOYMENT, &served_deployment(bundle, GB))
        .ok(
            Method::Post,
            &format!("{GB_DEPLOYMENT}/feedback"),
            r#"{"id":"1"}"#,
        );
    ddi.files.insert(GB_DOWNLOAD.into(), bundle.to_vec());
    ddi
}

/// `(execution, finished)` of each feedback sent.
fn feedback(ddi: &FakeDdi) -> Vec<(String, String)> {
    ddi.sent_with(Method::Post)
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_str(s.body.as_deref().unwrap()).unwrap();
            (
                v["status"]["execution"].as_str().unwrap().to_owned(),
                v["status"]["result"]["finished"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// Every file under `root`, relative.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn without_update_hawkbit_the_client_stays_idle() {
    let dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    let mut poller = Poller::new(Arc::clone(&svc), FakeConnect::default());
    // Unprovisioned, then provisioned without a server.
    for text in [None, Some(BASE)] {
        if let Some(text) = text {
            apply(&svc, text);
        }
        let turn = poller.turn(0);
        assert_eq!(turn.sleep, IDLE_CHECK);
        assert!(!turn.reboot);
        assert!(poller.client().is_none());
        assert_eq!(svc.update_server(), None);
    }
}

#[test]
fn a_deployment_installs_through_an_update_job_and_is_reported_after_the_reboot() {
    let mut dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    apply(&svc, &hawkbit(GB));
    write_token(&dev, TOKEN);
    let bundle = b"a RAUC bundle".repeat(100);
    let mut poller = Poller::new(Arc::clone(&svc), connect(goosebit(&bundle)));

    let turn = poller.turn(0);
    assert!(turn.reboot, "{:?}", svc.update_server());
    assert_eq!(turn.sleep, Duration::from_secs(30));
    let cmds = dev.sys.commands();
    let install = cmds.iter().find(|c| c.starts_with("rauc install")).unwrap();
    assert_eq!(
        install,
        &format!(
            "rauc install {}",
            dev.root().join("data/rauc/hawkbit/1.raucb").display()
        )
    );
    // The same path as POST /api/update: an update job, bundle removed after.
    let job_id = svc.tracker.last_update().unwrap();
    let job = svc.tracker.get(&job_id).unwrap();
    assert_eq!(
        (job.kind, job.state),
        (JobKind::Update, JobState::Succeeded)
    );
    let steps: Vec<&str> = job.events.iter().map(|e| e.step.as_str()).collect();
    assert_eq!(
        steps,
        ["receive", "install", "install", "cleanup", "reboot"]
    );
    assert!(
        job.events[0].message.contains("hawkBit action 1"),
        "{job:?}"
    );
    assert!(files_under(&dev.root().join("data/rauc/hawkbit")).is_empty());
    // Held until the reboot: nothing else starts in between.
    assert_eq!(svc.tracker.running(), Some(job_id.clone()));
    let ddi = &poller.client().unwrap().ddi;
    assert_eq!(
        feedback(ddi),
        vec![("proceeding".to_owned(), "none".to_owned()); 4]
    );
    let auth = format!("TargetToken {TOKEN}");
    assert!(ddi
        .auths
        .iter()
        .all(|a| a.as_deref() == Some(auth.as_str())));
    let health = svc.update_server().unwrap();
    assert_eq!(health.url, GB);
    assert_eq!(health.controller_id, "edge-043");
    assert!(health.last_poll.as_ref().unwrap().ok);
    assert_eq!(health.action.as_ref().unwrap().state, "installed");

    poller.reboot();
    assert_eq!(dev.sys.commands().last().unwrap(), "systemctl reboot");
    assert_eq!(svc.tracker.running(), None);
    drop(poller);
    drop(svc);

    // Slot B boots with build 2.0.0; nothing is reported before its mark-good.
    dev.reboot();
    let svc = boot(&dev, Slot::B, "2.0.0", "boot-2");
    // The server offers the action until it has the result (and, slow to update,
    // once more in the round that reports it: not installed again for that).
    let mut ddi = FakeDdi::default();
    ddi.ok(Method::Get, GB_BASE, fixture!("04-poll-deployment.json"))
        .ok(Method::Get, GB_BASE, fixture!("04-poll-deployment.json"))
        .ok(Method::Get, GB_BASE, fixture!("09-poll-after-success.json"))
        .ok(Method::Get, GB_DEPLOYMENT, &served_deployment(&bundle, GB))
        .ok(
            Method::Post,
            &format!("{GB_DEPLOYMENT}/feedback"),
            r#"{"id":"1"}"#,
        );
    let mut poller = Poller::new(Arc::clone(&svc), connect(ddi));
    let turn = poller.turn(0);
    assert!(!turn.reboot);
    assert!(feedback(&poller.client().unwrap().ddi).is_empty());
    assert_eq!(
        svc.update_server().unwrap().action.unwrap().state,
        "installed"
    );
    assert!(!dev
        .sys
        .commands()
        .iter()
        .any(|c| c.starts_with("rauc install")));

    // The boot flow re-applies the config: the slot is marked good, then reported.
    crate::boot_flow::run(&svc);
    assert!(dev
        .sys
        .commands()
        .contains(&"rauc status mark-good".to_owned()));
    assert!(svc.slot_marked_good());
    poller.turn(0);
    assert_eq!(
        feedback(&poller.client().unwrap().ddi),
        [("closed".to_owned(), "success".to_owned())]
    );
    assert_eq!(svc.update_server().unwrap().action, None);
    assert!(!dev.root().join("data/atomix/hawkbit/action.json").exists());
    poller.turn(0);
    assert_eq!(feedback(&poller.client().unwrap().ddi).len(), 1);
    assert!(!dev
        .sys
        .commands()
        .iter()
        .any(|c| c.starts_with("rauc install")));
}

#[test]
fn the_token_is_read_every_round_and_a_missing_one_backs_off() {
    let dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    apply(&svc, &hawkbit(GB));
    let mut ddi = FakeDdi::default();
    ddi.ok(Method::Get, GB_BASE, fixture!("09-poll-after-success.json"));
    let mut poller = Poller::new(Arc::clone(&svc), connect(ddi));

    // No token file: nothing sent, a clear error naming the file, back-off.
    for failures in 1..=3 {
        let turn = poller.turn(0);
        assert_eq!(turn.sleep, super::schedule::backoff(failures, 0));
        let poll = svc.update_server().unwrap().last_poll.unwrap();
        assert!(!poll.ok);
        assert_eq!(
            poll.outcome,
            "cannot use the token file /data/apps/hawkbit/token: it does not exist"
        );
    }
    assert!(poller.client().unwrap().ddi.sent.is_empty());

    // Then each round reads it again: a rotated token is used at once.
    write_token(&dev, "first-token");
    let turn = poller.turn(0);
    assert_eq!(turn.sleep, Duration::from_secs(30));
    write_token(&dev, "second-token");
    poller.turn(0);
    let auths = &poller.client().unwrap().ddi.auths;
    assert_eq!(
        auths,
        &[
            Some("TargetToken first-token".to_owned()),
            Some("TargetToken second-token".to_owned())
        ]
    );
    let health = serde_json::to_string(&svc.update_server()).unwrap();
    assert!(!health.contains("second-token"), "{health}");

    // A link planted where the token was is not followed.
    let path = dev.root().join(TOKEN_FILE);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(dev.root().join("data/secret"), "not-the-token").unwrap();
    std::os::unix::fs::symlink(dev.root().join("data/secret"), &path).unwrap();
    poller.turn(0);
    let poll = svc.update_server().unwrap().last_poll.unwrap();
    assert!(!poll.ok);
    assert!(
        poll.outcome
            .starts_with("cannot use the token file /data/apps/hawkbit/token"),
        "{poll:?}"
    );
    assert_eq!(poller.client().unwrap().ddi.auths.len(), 2);
}

#[test]
fn tokens_are_one_word() {
    use atomix_config::schema::TokenKind;
    assert_eq!(
        parse_token(b"abc\n", TokenKind::Gateway).unwrap(),
        Auth(Some("GatewayToken abc".into()))
    );
    for (bad, why) in [
        (&b""[..], "it is empty"),
        (b" \n", "it is empty"),
        (b"a b", "the token holds spaces or control characters"),
        (
            b"a\r\nX-Injected: 1",
            "the token holds spaces or control characters",
        ),
        (b"\xff", "it is not text"),
    ] {
        assert_eq!(parse_token(bad, TokenKind::Target).unwrap_err(), why);
    }
    assert!(parse_token(&[b'a'; MAX_TOKEN + 1], TokenKind::Target).is_err());
}

#[test]
fn a_token_file_filled_without_end_is_not_read_into_memory() {
    use atomix_config::schema::TokenKind;
    // A container writing into the tree that holds the token cannot make the service
    // read gigabytes: past the limit, nothing more is read.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("apps/hawkbit");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join("token")).unwrap();
    file.set_len(8 << 30).unwrap(); // sparse: 8 GiB of zeroes
    let err = read_token(data.path(), "/data/apps/hawkbit/token", TokenKind::Target).unwrap_err();
    assert!(
        err.starts_with("cannot use the token file /data/apps/hawkbit/token: "),
        "{err}"
    );
    assert!(
        err.ends_with("is larger than 4096 bytes: not read"),
        "{err}"
    );
}

#[test]
fn device_facts_come_from_the_image() {
    assert_eq!(
        parse_compatible(include_str!("../../../../sysroot/etc/rauc/system.conf")).as_deref(),
        Some("atomixos-rock64")
    );
    assert_eq!(parse_compatible("[slot.x]\ncompatible=no\n"), None);
    assert_eq!(
        parse_model(b"Pine64 Rock64\0").as_deref(),
        Some("Pine64 Rock64")
    );
    assert_eq!(parse_model(b"\0"), None);
}

#[test]
fn an_install_waits_for_a_running_job_and_an_api_update_waits_for_it() {
    let dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    apply(&svc, &hawkbit(GB));
    write_token(&dev, TOKEN);
    let bundle = b"bundle".repeat(10);
    let mut ddi = goosebit(&bundle);
    ddi.ok(Method::Get, GB_BASE, fixture!("04-poll-deployment.json"));
    let mut poller = Poller::new(Arc::clone(&svc), connect(ddi));

    // An update job of the API runs: the deployment is not even downloaded.
    let other = svc
        .tracker
        .start_kind(JobKind::Update, Origin::Api, svc.current())
        .unwrap();
    let turn = poller.turn(0);
    assert!(!turn.reboot);
    let poll = svc.update_server().unwrap().last_poll.unwrap();
    assert!(
        poll.outcome
            .contains(&format!("waiting for job {} to finish", other.id)),
        "{poll:?}"
    );
    assert!(!poller
        .client()
        .unwrap()
        .ddi
        .sent
        .iter()
        .any(|s| s.url == GB_DOWNLOAD));
    drop(other);
    assert_eq!(svc.tracker.running(), None);

    let turn = poller.turn(0);
    assert!(turn.reboot);
    // While the hawkBit install holds the device, POST /api/update is refused (409).
    let upload = crate::update::Upload::create(&dev.root().join("data/rauc/uploads"), 100);
    let mut upload = upload.unwrap();
    upload.write(b"x").unwrap();
    let request = crate::update::Request {
        bundle: upload.finish().unwrap(),
        signer: "SHA256:k".into(),
        key: None,
        reboot: false,
    };
    let busy = svc.start_update(request).unwrap_err();
    assert_eq!(Some(busy.0), svc.tracker.running());
    assert!(files_under(&dev.root().join("data/rauc/uploads")).is_empty());

    // A round that does not reboot gives the device back (should the reboot not have
    // been requested): POST /api/config and /api/update are not refused until a restart.
    let turn = poller.turn(0);
    assert!(!turn.reboot);
    assert_eq!(svc.tracker.running(), None);
}

#[test]
fn a_new_config_without_the_server_stops_the_client() {
    let dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    apply(&svc, &hawkbit(GB));
    write_token(&dev, TOKEN);
    let mut ddi = FakeDdi::default();
    ddi.ok(Method::Get, GB_BASE, fixture!("09-poll-after-success.json"));
    let mut poller = Poller::new(Arc::clone(&svc), connect(ddi));
    poller.turn(0);
    assert!(svc.update_server().is_some());

    let woken = svc.update_client_wake.seen();
    apply(&svc, BASE);
    assert!(svc.update_client_wake.seen() > woken, "applying wakes it");
    assert_eq!(poller.turn(0).sleep, IDLE_CHECK);
    assert!(poller.client().is_none());
    assert_eq!(svc.update_server(), None);
}

#[test]
fn the_wake_cuts_a_sleep_short() {
    let wake = Arc::new(Wake::default());
    let mut seen = wake.seen();
    assert!(!wake.wait(&mut seen, Duration::from_millis(10)));
    let w = Arc::clone(&wake);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.notify();
    });
    let start = Instant::now();
    assert!(wake.wait(&mut seen, Duration::from_secs(30)));
    assert!(start.elapsed() < Duration::from_secs(10));
    t.join().unwrap();
}

// ---- Over real HTTP: a server in this process. ----

/// What the test server answers one request with.
enum Reply {
    /// Status, extra headers, body.
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// Headers announcing a body, then a byte every `every`, for ever.
    Drip { every: Duration },
    /// Nothing at all, for `for_`.
    Silent { for_: Duration },
}

fn ok(body: impl Into<Vec<u8>>) -> Reply {
    Reply::Full(200, vec![], body.into())
}

/// Gets the server's own URL (`http://127.0.0.1:port`), method, path and the
/// `Authorization` header.
type Handler = dyn Fn(&str, &str, &str, &str) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server: one thread per connection, `Connection: close`.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    fn start(
        handler: impl Fn(&str, &str, &str, &str) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let _ = answer(stream, addr, &*handler, &seen);
                });
            }
        });
        TestServer { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(
    stream: TcpStream,
    addr: SocketAddr,
    handler: &Handler,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let (mut length, mut auth) = (0usize, String::new());
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "authorization" => auth = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    seen.lock().unwrap().push(format!("{method} {path}"));
    let mut out = stream;
    match handler(&format!("http://{addr}"), &method, &path, &auth) {
        Reply::Full(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            out.write_all(&body)?;
        }
        Reply::Drip { every } => {
            out.write_all(b"HTTP/1.1 200 X\r\nContent-Length: 100000000\r\n\r\n")?;
            loop {
                out.write_all(b" ")?;
                std::thread::sleep(every);
            }
        }
        Reply::Silent { for_ } => std::thread::sleep(for_),
    }
    Ok(())
}

/// Timeouts short enough for a test.
fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_millis(500),
        json: Duration::from_secs(2),
        download: Duration::from_secs(3),
    }
}

/// goosebit's recorded answers, naming the server by its address; `tweak` may replace
/// any answer (method, path below the controller resource).
fn goosebit_over_http(
    bundle: Vec<u8>,
    tweak: impl Fn(&str, &str, &str) -> Option<Reply> + Send + Sync + 'static,
) -> TestServer {
    TestServer::start(move |here, method, path, auth| {
        if auth != format!("TargetToken {TOKEN}") {
            return Reply::Full(401, vec![], b"{\"detail\":\"no token\"}".to_vec());
        }
        let Some(rel) = path.strip_prefix("/DEFAULT/controller/v1/edge-043") else {
            return Reply::Full(404, vec![], vec![]);
        };
        if let Some(reply) = tweak(here, method, rel) {
            return reply;
        }
        match (method, rel) {
            ("GET", "") => ok(fixture!("04-poll-deployment.json").replace(GB, here)),
            ("GET", "/deploymentBase/1") => ok(served_deployment(&bundle, here)),
            ("POST", "/deploymentBase/1/feedback") => ok(r#"{"id":"1"}"#),
            ("GET", "/download") => ok(bundle.clone()),
            _ => Reply::Full(404, vec![], vec![]),
        }
    })
}

/// A provisioned device polling `server` over real HTTP.
fn device_polling(server: &TestServer) -> (Device, Arc<Service>, Poller<RealConnect>) {
    let dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    apply(&svc, &hawkbit(&server.url()));
    write_token(&dev, TOKEN);
    let connect = RealConnect {
        ca_bundle: dev.root().join("etc/ssl/certs/ca-certificates.crt"),
        timeouts: quick(),
    };
    let poller = Poller::new(Arc::clone(&svc), connect);
    (dev, svc, poller)
}

/// What is left on `/data` besides the config store: only the client's own places.
fn stray_files(dev: &Device) -> Vec<String> {
    files_under(&dev.root().join("data"))
        .into_iter()
        .filter(|f| {
            !f.starts_with("config/")
                && !f.starts_with("apps/hawkbit/")
                && !f.starts_with("atomix/hawkbit/")
        })
        .collect()
}

#[test]
fn the_recorded_goosebit_answers_over_http_install_an_update() {
    let bundle = b"a RAUC bundle over HTTP".repeat(1000);
    let server = goosebit_over_http(bundle, |_, _, _| None);
    let (dev, svc, mut poller) = device_polling(&server);
    let turn = poller.turn(0);
    assert!(turn.reboot, "{:?}", svc.update_server());
    assert!(dev
        .sys
        .commands()
        .iter()
        .any(|c| c.starts_with("rauc install")));
    let requests = server.requests();
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("POST")).count(),
        4,
        "{requests:?}"
    );
    assert!(requests.contains(&"GET /DEFAULT/controller/v1/edge-043/download".to_owned()));
    assert_eq!(stray_files(&dev), Vec::<String>::new());
}

#[test]
fn a_wrong_token_is_a_failed_poll_that_backs_off() {
    // A server that quotes the token it refuses.
    let server = TestServer::start(|_, _, _, auth| {
        Reply::Full(
            401,
            vec![],
            format!("{{\"detail\":\"bad {auth}\"}}").into_bytes(),
        )
    });
    let (dev, svc, mut poller) = device_polling(&server);
    write_token(&dev, "not-the-token");
    let turn = poller.turn(0);
    assert_eq!(turn.sleep, super::schedule::backoff(1, 0));
    let poll = svc.update_server().unwrap().last_poll.unwrap();
    assert!(!poll.ok);
    assert!(poll.outcome.contains("HTTP 401"), "{poll:?}");
    assert!(poll.outcome.contains("bad TargetToken <token>"), "{poll:?}");
    assert!(!poll.outcome.contains("not-the-token"), "{poll:?}");

    // A long token quoted back past the part of the body quoted: none of it shows.
    let long = "L".repeat(1000);
    write_token(&dev, &long);
    poller.turn(0);
    let poll = svc.update_server().unwrap().last_poll.unwrap();
    assert!(poll.outcome.contains("bad TargetToken <token>"), "{poll:?}");
    assert!(!poll.outcome.contains("LLLL"), "{poll:?}");
}

#[test]
fn https_without_a_ca_bundle_is_a_clear_error() {
    let dev = Device::new();
    let svc = boot(&dev, Slot::A, "1.0.0", "boot-1");
    apply(&svc, &hawkbit("https://updates.example.com"));
    write_token(&dev, TOKEN);
    let connect = RealConnect {
        ca_bundle: dev.root().join("etc/ssl/certs/ca-certificates.crt"),
        timeouts: quick(),
    };
    let mut poller = Poller::new(Arc::clone(&svc), connect);
    poller.turn(0);
    let poll = svc.update_server().unwrap().last_poll.unwrap();
    assert!(
        poll.outcome
            .starts_with("no trusted CA certificates for https://updates.example.com:")
            && poll.outcome.contains("ca-certificates.crt"),
        "{poll:?}"
    );
}

/// A hostile server's answers, each against the real transport with short timeouts:
/// every request ends, nothing grows past its limit.
#[test]
fn a_hostile_server_cannot_hold_or_flood_the_transport() {
    let server = TestServer::start(|here, _, path, _| match path {
        "/huge" => ok(vec![b' '; (super::transport::MAX_JSON + 10) as usize]),
        "/silent" => Reply::Silent {
            for_: Duration::from_secs(30),
        },
        "/drip" => Reply::Drip {
            every: Duration::from_millis(100),
        },
        "/loop" => Reply::Full(
            302,
            vec![("Location".into(), format!("{here}/loop"))],
            vec![],
        ),
        "/elsewhere" => Reply::Full(
            301,
            vec![("Location".into(), "http://10.9.9.9/x".into())],
            vec![],
        ),
        "/big" => ok(vec![7u8; 1000]),
        _ => Reply::Full(404, vec![], vec![]),
    });
    let url = |p: &str| format!("{}{p}", server.url());
    let mut ddi = UreqDdi::new(Auth(Some("TargetToken t".into())), vec![], quick());
    let timed = |f: &mut dyn FnMut() -> Result<(), DdiError>| {
        let start = Instant::now();
        let r = f();
        (r, start.elapsed())
    };

    let (r, _) = timed(&mut || ddi.json(Method::Get, &url("/huge"), None).map(drop));
    assert!(matches!(r, Err(DdiError::TooLarge { .. })), "{r:?}");
    for slow in ["/silent", "/drip"] {
        let (r, took) = timed(&mut || ddi.json(Method::Get, &url(slow), None).map(drop));
        assert!(
            matches!(r, Err(DdiError::Transport { .. })),
            "{slow}: {r:?}"
        );
        assert!(took < Duration::from_secs(10), "{slow}: {took:?}");
    }
    for redirect in ["/loop", "/elsewhere"] {
        let (r, _) = timed(&mut || ddi.json(Method::Get, &url(redirect), None).map(drop));
        match r {
            Err(DdiError::Status { status, body, .. }) => {
                assert!((300..400).contains(&status));
                assert!(body.ends_with("not followed"), "{body}");
            }
            other => panic!("{redirect}: {other:?}"),
        }
    }
    // A download larger than announced stops at the announced size.
    let mut sink = Vec::new();
    let r = ddi.download(&url("/big"), 100, &mut sink);
    assert!(
        matches!(r, Err(DdiError::TooLarge { limit: 100, .. })),
        "{r:?}"
    );
    assert!(sink.len() <= 100);
    // A download that drips is cut off at its overall limit.
    let mut sink = Vec::new();
    let (r, took) = timed(&mut || ddi.download(&url("/drip"), 1 << 30, &mut sink).map(drop));
    assert!(matches!(r, Err(DdiError::Transport { .. })), "{r:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Deployments a hostile server offers: each ends in a `failure` report or a retry,
/// never with a write outside `/data/rauc/hawkbit` or a bundle left behind.
#[test]
fn hostile_deployments_are_refused_and_leave_nothing() {
    type Tweak = fn(&str, &str, &str) -> Option<Reply>;
    let bundle = b"the real bundle".repeat(10);
    let cases: Vec<(&str, Tweak, &str)> = vec![
        (
            "a wrong hash",
            |_, m, p| (m == "GET" && p == "/download").then(|| ok(b"the fake bundle".repeat(10))),
            "differs from the server's",
        ),
        (
            "more bytes than announced",
            |_, m, p| (m == "GET" && p == "/download").then(|| ok(vec![0u8; 100_000])),
            "",
        ),
        (
            "a download on another host",
            |here, m, p| {
                (m == "GET" && p == "/deploymentBase/1").then(|| {
                    use sha1::Digest as _;
                    let b = b"the real bundle".repeat(10);
                    let sha1 = atomix_api::hex(&sha1::Sha1::digest(&b));
                    ok(fixture!("05-deployment-base.json")
                        .replace("360d6ca5d055c1b51450900acaad9c09109fd18a", &sha1)
                        .replace("75407", &b.len().to_string())
                        .replace(GB, here)
                        .replace("127.0.0.1", "127.0.0.2"))
                })
            },
            "not followed",
        ),
        (
            "an artifact larger than a bundle may be",
            |here, m, p| {
                (m == "GET" && p == "/deploymentBase/1").then(|| {
                    ok(fixture!("05-deployment-base.json")
                        .replace("75407", "999999999999")
                        .replace(GB, here))
                })
            },
            "more than the 2147483648 a bundle may have",
        ),
        (
            "an action id that is a path",
            |here, m, p| match (m, p) {
                ("GET", "") => Some(ok(fixture!("04-poll-deployment.json")
                    .replace(GB, here)
                    .replace("deploymentBase/1", "deploymentBase/x"))),
                ("GET", "/deploymentBase/x") => {
                    use sha1::Digest as _;
                    let b = b"the real bundle".repeat(10);
                    let sha1 = atomix_api::hex(&sha1::Sha1::digest(&b));
                    Some(ok(fixture!("05-deployment-base.json")
                        .replace("360d6ca5d055c1b51450900acaad9c09109fd18a", &sha1)
                        .replace("75407", &b.len().to_string())
                        .replace(GB, here)
                        .replace(r#""id":"1""#, r#""id":"../../../../etc/passwd""#)))
                }
                ("GET", "/download") => Some(ok(b"the fake bundle".repeat(10))),
                ("POST", _) => Some(ok(r#"{"id":"x"}"#)),
                _ => None,
            },
            // Refused as it is read: not downloaded, not in a file name, not kept.
            r#"not a DDI deployment: id: "../../../../etc/passwd" is not an id"#,
        ),
    ];
    for (what, tweak, expect) in cases {
        let server = goosebit_over_http(bundle.clone(), tweak);
        let (dev, svc, mut poller) = device_polling(&server);
        let turn = poller.turn(0);
        assert!(!turn.reboot, "{what}");
        assert!(
            !dev.sys
                .commands()
                .iter()
                .any(|c| c.starts_with("rauc install")),
            "{what}"
        );
        let poll = svc.update_server().unwrap().last_poll.unwrap();
        assert!(poll.outcome.contains(expect), "{what}: {poll:?}");
        assert_eq!(stray_files(&dev), Vec::<String>::new(), "{what}");
        assert!(
            files_under(&dev.root().join("data/rauc/hawkbit")).is_empty(),
            "{what}"
        );
    }
}

#[test]
fn links_count_as_the_servers_by_scheme_host_and_port() {
    use super::client::origin;
    let cases: &[(&str, Option<&str>)] = &[
        ("https://u.example.com", Some("https://u.example.com:443")),
        (
            "https://U.example.com:443/x?y",
            Some("https://u.example.com:443"),
        ),
        (
            "HTTP://10.0.2.2:60053/DEFAULT",
            Some("http://10.0.2.2:60053"),
        ),
        ("http://[::1]/a", Some("http://[::1]:80")),
        ("http://[::1]:8/a", Some("http://[::1]:8")),
        ("http://u.example.com@evil.example/x", None),
        ("ftp://u.example.com/x", None),
        ("/DEFAULT/controller/v1/x", None),
        ("http:///x", None),
    ];
    for (url, want) in cases {
        assert_eq!(origin(url).as_deref(), *want, "{url}");
    }
}

#[test]
fn problems_and_outcomes_are_cut_on_a_character_boundary() {
    assert_eq!(bounded("short".into(), MAX_PROBLEM), "short");
    let exact = "x".repeat(MAX_PROBLEM);
    assert_eq!(bounded(exact.clone(), MAX_PROBLEM), exact);
    // Two-byte characters across the cut: never half of one.
    let cut = bounded(format!("x{}", "é".repeat(2000)), MAX_PROBLEM);
    assert!(
        cut.len() <= MAX_PROBLEM && cut.ends_with("é..."),
        "{}",
        cut.len()
    );
}
