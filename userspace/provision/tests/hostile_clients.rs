//! Hostile clients against the real `atomix-provision serve --system record` on loopback:
//! slow headers, slow bodies, connection floods (from one peer and from many: source
//! addresses 127.0.0.x), body floods, nonce floods, forged and mismatched digests (also
//! of factory resets and job lists, and their replays), and
//! SIGTERM and the listener switch with stalled clients connected. During each attack
//! `/api/health` must answer and a signed apply by the operator must succeed. Counts and
//! durations are bounded; each test ends by itself. Latencies are printed (figures for
//! the docs), not asserted beyond "answered at all within a few seconds".

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{request_head, sha256_hex, signature_header};
use test_support::{config_with_admin, keygen, Key};

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

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM")
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A root trusting `key` (provisioning key), unprovisioned.
fn root(dir: &Path, key: &Key) -> PathBuf {
    let root = dir.join("root");
    let keys = root.join("usr/share/atomix/provisioning-keys");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::write(keys, &key.public).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    root
}

/// `serve` on 127.0.0.1 (`--listen`), or with derived addresses on `port`.
fn start(root: &Path, listen: bool) -> Server {
    let port = test_support::free_port();
    let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atomix-provision"));
    cmd.args(["serve", "--system", "record", "--root"])
        .arg(root);
    if listen {
        cmd.args(["--listen", &addr.to_string()]);
    } else {
        cmd.args(["--port", &port.to_string()]);
    }
    let log = root.with_file_name("serve.log");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create serve.log"))
        .spawn()
        .expect("start atomix-provision serve");
    assert!(
        test_support::wait_until_listening(addr, Duration::from_secs(15)),
        "the service did not start listening on port {port}; it said:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Server { child, addr }
}

/// A connection from source address 127.0.0.`n` (`n` 1: the operator's own address).
fn connect_from(n: u8, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), 0)).into())?;
    s.connect_timeout(&addr.into(), Duration::from_secs(3))?;
    Ok(s.into())
}

/// One request from 127.0.0.1 with a deadline: the status, or why there was none.
fn request_with_deadline(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    deadline: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = connect_from(1, addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(deadline)).unwrap();
    s.set_write_timeout(Some(deadline)).unwrap();
    let req = request_head(addr, method, path, headers, body.len());
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete answer: {:?}", String::from_utf8_lossy(&raw)))?;
    let status = String::from_utf8_lossy(&raw[..head_end])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((status, raw[head_end + 4..].to_vec()))
}

/// `/api/health` from 127.0.0.1 answers 200 within a few seconds; returns how long it
/// took.
fn health_latency(s: &Server, during: &str) -> Duration {
    let t = Instant::now();
    let r = request_with_deadline(
        s.addr,
        "GET",
        "/api/health",
        &[],
        b"",
        Duration::from_secs(5),
    );
    let took = t.elapsed();
    match r {
        Ok((200, _)) => {}
        other => panic!("health during {during}: {other:?} after {took:?}"),
    }
    eprintln!("figure: health during {during}: {} ms", took.as_millis());
    took
}

/// A signed apply by the operator from 127.0.0.1 is accepted and its job succeeds.
fn operator_applies(s: &Server, key: &Key, hostname: &str, during: &str) {
    let t = Instant::now();
    let body = config_with_admin(key, hostname);
    let nonce = operator_nonce(s);
    let reply = signed_config(s, key, &nonce, body.as_bytes(), body.as_bytes());
    assert_eq!(
        reply.0,
        202,
        "operator apply during {during}: {}",
        String::from_utf8_lossy(&reply.1)
    );
    let job: Value = serde_json::from_slice(&reply.1).unwrap();
    let url = job["job"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) =
            request_with_deadline(s.addr, "GET", &url, &[], b"", Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("job poll during {during}: {e}"));
        assert_eq!(status, 200);
        let job: Value = serde_json::from_slice(&body).unwrap();
        if job["state"] == "succeeded" {
            break;
        }
        assert_ne!(job["state"], "failed", "during {during}: {job}");
        assert!(Instant::now() < deadline, "during {during}: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "figure: operator apply during {during}: {} ms",
        t.elapsed().as_millis()
    );
}

fn operator_nonce(s: &Server) -> String {
    let (status, body) = request_with_deadline(
        s.addr,
        "GET",
        "/api/nonce",
        &[],
        b"",
        Duration::from_secs(5),
    )
    .expect("nonce");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["nonce"].as_str().unwrap().to_owned()
}

/// POST /api/config signed over `signed`, sending `body`.
fn signed_config(s: &Server, key: &Key, nonce: &str, signed: &[u8], body: &[u8]) -> (u16, Vec<u8>) {
    let sig = signature_header(key, nonce, signed);
    request_with_deadline(
        s.addr,
        "POST",
        "/api/config",
        &[
            ("Content-Type", "application/toml"),
            ("X-Atomix-Nonce", nonce),
            ("X-Atomix-Content-SHA256", &sha256_hex(signed)),
            ("X-Atomix-Signature", &sig),
        ],
        body,
        Duration::from_secs(10),
    )
    .expect("POST /api/config")
}

/// Whether the server has closed `s` (EOF or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + wait;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {
                if Instant::now() >= end {
                    return false;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// How many of `conns` the server still holds open: no EOF or reset waiting (answers
/// already sent are read past).
fn still_open(conns: &mut [TcpStream]) -> usize {
    conns
        .iter_mut()
        .map(|c| {
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            let open = loop {
                match c.read(&mut buf) {
                    Ok(0) => break false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                    Err(_) => break false,
                }
            };
            c.set_nonblocking(false).unwrap();
            open
        })
        .filter(|open| *open)
        .count()
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn setup() -> (tempfile::TempDir, Key, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "operator", "ed25519");
    let root = root(dir.path(), &key);
    (dir, key, root)
}

#[test]
fn slow_headers_and_slow_bodies_are_dropped() {
    let (_dir, key, root) = setup();
    let s = start(&root, true);
    // Slowloris: 40 connections from 4 peers, each a head sent a byte every 2 s.
    let mut slow: Vec<TcpStream> = Vec::new();
    for n in 2..6u8 {
        for _ in 0..10 {
            let mut c = connect_from(n, s.addr).unwrap();
            c.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-A: ")
                .unwrap();
            slow.push(c);
        }
    }
    // Slow bodies: a validate body and a body to a route that ignores it, both stalled.
    let mut stalled_validate = connect_from(6, s.addr).unwrap();
    stalled_validate
        .write_all(b"POST /api/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/toml\r\nContent-Length: 100000\r\n\r\n# a start")
        .unwrap();
    let mut stalled_ignored = connect_from(6, s.addr).unwrap();
    stalled_ignored
        .write_all(b"POST /api/nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
        .unwrap();
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    let mut applied = false;
    while t0.elapsed() < Duration::from_secs(8) {
        for c in &mut slow {
            let _ = c.write_all(b"a");
        }
        worst = worst.max(health_latency(&s, "slow headers"));
        if !applied {
            operator_applies(&s, &key, "edge-101", "slow headers");
            applied = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("figure: worst health latency during slow headers: {worst:?}");
    // The head timeout (10 s) and the idle timeout (15 s) drop all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut open = still_open(&mut slow);
    while open > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        open = still_open(&mut slow);
    }
    assert_eq!(open, 0, "slow heads still held after {:?}", t0.elapsed());
    eprintln!(
        "figure: slow heads dropped after {} s",
        t0.elapsed().as_secs()
    );
    // The stalled validate body was answered (408) and closed.
    let mut answer = Vec::new();
    stalled_validate
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stalled_validate.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        closed_within(&mut stalled_ignored, Duration::from_secs(20)),
        "a body trickled to a route that ignores it is dropped"
    );
    operator_applies(&s, &key, "edge-102", "after slow clients");
}

#[test]
fn connection_floods_are_capped_per_peer_and_in_total() {
    let (_dir, key, root) = setup();
    let s = start(&root, true);
    let fds_idle = s.open_fds();
    // One peer opens 300 idle connections: it keeps at most its quota.
    let mut one: Vec<TcpStream> = (0..300)
        .filter_map(|_| connect_from(2, s.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = still_open(&mut one);
    eprintln!(
        "figure: one peer opened {} connections, the server holds {held}; fds {} (idle {fds_idle})",
        one.len(),
        s.open_fds()
    );
    assert!(held <= 16, "{held} held from one peer");
    health_latency(&s, "a one-peer connection flood");
    operator_applies(&s, &key, "edge-201", "a one-peer connection flood");
    drop(one);

    // 20 peers with 20 each (400 > the total of 128): the newcomer still gets in.
    let mut many: Vec<TcpStream> = Vec::new();
    for n in 10..30u8 {
        for _ in 0..20 {
            if let Ok(c) = connect_from(n, s.addr) {
                many.push(c);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = s.open_fds();
    let held = still_open(&mut many);
    eprintln!(
        "figure: 20 peers opened {} connections, the server holds {held}; fds {fds}",
        many.len()
    );
    assert!(held <= 128, "{held} held in all");
    assert!(fds < fds_idle + 128 + 16, "{fds} fds open");
    let worst = (0..5)
        .map(|_| health_latency(&s, "a many-peer connection flood"))
        .max()
        .unwrap();
    eprintln!("figure: worst health latency during the many-peer flood: {worst:?}");
    operator_applies(&s, &key, "edge-202", "a many-peer connection flood");
}

#[test]
fn body_floods_keep_memory_small_and_store_nothing() {
    let (_dir, key, root) = setup();
    let s = start(&root, true);
    let before = s.peak_rss_kib();
    let data_before = files_under(&root.join("data"));
    let big = vec![b'#'; 16 << 20];
    let addr = s.addr;
    let senders: Vec<_> = (0..12)
        .map(|i| {
            let big = big.clone();
            std::thread::spawn(move || {
                let (path, ct) = match i % 3 {
                    0 => ("/api/validate", "application/x-tar"),
                    1 => ("/api/config", "application/x-tar"),
                    _ => ("/api/update", "application/octet-stream"),
                };
                let mut c = connect_from(20 + i as u8, addr)
                    .map_err(|e| format!("sender {i}: connect from 127.0.0.{}: {e}", 20 + i))?;
                c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nX-Atomix-Nonce: 00\r\nX-Atomix-Content-SHA256: {}\r\nX-Atomix-Signature: AAAA\r\n\r\n",
                    big.len(),
                    "0".repeat(64)
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(&big);
                let mut answer = Vec::new();
                let _ = c.read_to_end(&mut answer);
                Ok::<_, String>(
                    String::from_utf8_lossy(&answer)
                        .split(' ')
                        .nth(1)
                        .map(str::to_owned)
                        .unwrap_or_default(),
                )
            })
        })
        .collect();
    let worst = (0..3)
        .map(|_| health_latency(&s, "a body flood"))
        .max()
        .unwrap();
    operator_applies(&s, &key, "edge-301", "a body flood");
    let answers: Vec<String> = senders
        .into_iter()
        .map(|t| {
            t.join()
                .expect("sender thread")
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    eprintln!("figure: body flood answers {answers:?}; worst health {worst:?}");
    for (i, a) in answers.iter().enumerate() {
        if i % 3 != 0 {
            assert!(a.is_empty() || a == "401", "forged upload {i}: {a}");
        }
    }
    let peak = s.peak_rss_kib();
    eprintln!(
        "figure: peak RSS before {} KiB, after 12 concurrent 16 MiB bodies {} KiB",
        before, peak
    );
    assert!(
        peak < 96 * 1024,
        "peak RSS {peak} KiB is not far under MemoryMax=128M"
    );
    let uploads = files_under(&root.join("data/rauc"));
    assert!(uploads.is_empty(), "forged uploads stored: {uploads:?}");
    let new: Vec<_> = files_under(&root.join("data"))
        .into_iter()
        .filter(|p| !data_before.contains(p))
        .filter(|p| !p.starts_with(root.join("data/config")))
        .collect();
    assert!(new.is_empty(), "written by forged requests: {new:?}");
}

#[test]
fn nonce_floods_do_not_evict_the_operators_nonce() {
    let (_dir, key, root) = setup();
    let s = start(&root, true);
    let nonce = operator_nonce(&s);
    // One peer asks 300 times, then 100 peers 5 times each.
    let ask = |n: u8| {
        let mut c = connect_from(n, s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /api/nonce HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    };
    for _ in 0..300 {
        ask(2);
    }
    for n in 10..110u8 {
        for _ in 0..5 {
            ask(n);
        }
    }
    health_latency(&s, "a nonce flood");
    let body = config_with_admin(&key, "edge-401");
    let (status, answer) = signed_config(&s, &key, &nonce, body.as_bytes(), body.as_bytes());
    assert_eq!(
        status,
        202,
        "the operator's nonce survived: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn forged_and_mismatched_digests_write_nothing_and_hold_nothing() {
    let (dir, key, root) = setup();
    let s = start(&root, true);
    let stranger = keygen(dir.path(), "stranger", "ed25519");
    let data_before = files_under(&root.join("data"));
    let body = vec![7u8; 4 << 20];
    let digest = sha256_hex(&body);

    // A stranger's signature, a trusted key's signature over something else, a
    // declared digest that is not the signed one: 401 while the body is still coming,
    // nothing stored, the upload slot free.
    let nonce = operator_nonce(&s);
    let replayed = signature_header(&key, &nonce, b"another body");
    let forged = [
        signature_header(&stranger, &nonce, &body),
        replayed.clone(),
        "!!!!".to_owned(),
    ];
    for sig in &forged {
        let mut c = connect_from(2, s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /api/update HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nX-Atomix-Nonce: {nonce}\r\nX-Atomix-Content-SHA256: {digest}\r\nX-Atomix-Signature: {sig}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&body[..1 << 16]).unwrap();
        // The body stalls here; the answer comes from the headers alone.
        let mut answer = [0u8; 12];
        c.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 401", "{sig:.20}");
        assert!(
            files_under(&root.join("data/rauc")).is_empty(),
            "nothing stored"
        );
    }
    assert_eq!(
        files_under(&root.join("data")),
        data_before,
        "forged requests wrote nothing under /data"
    );
    // No slot is held: the operator's signed apply goes through at once.
    operator_applies(&s, &key, "edge-501", "forged uploads");

    // The operator's own signature over a digest, with other bytes: 400, nothing kept,
    // and the nonce (not spent by a refusal) still works for the right bytes.
    let good = config_with_admin(&key, "edge-502");
    let other = config_with_admin(&key, "edge-666");
    let n = operator_nonce(&s);
    let (status, answer) = signed_config(&s, &key, &n, good.as_bytes(), other.as_bytes());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    let (status, answer) = signed_config(&s, &key, &n, good.as_bytes(), good.as_bytes());
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    let hostname = std::fs::read_to_string(root.join("etc/hostname")).unwrap_or_default();
    assert_ne!(hostname.trim(), "edge-666");

    let new: Vec<_> = files_under(&root.join("data"))
        .into_iter()
        .filter(|p| !data_before.contains(p))
        .filter(|p| !p.starts_with(root.join("data/config")))
        .collect();
    assert!(new.is_empty(), "written by refused requests: {new:?}");
}

/// The factory reset and the job list over a real socket, from another peer: forged
/// signatures are refused from the headers alone while the body is still coming (a
/// reset) and read nothing out (a list); an oversized reset is refused unread; nothing
/// is written; an accepted request sent again is refused; the device stays provisioned.
#[test]
fn forged_resets_and_job_lists_change_nothing_and_read_nothing() {
    let (dir, key, root) = setup();
    let s = start(&root, true);
    operator_applies(&s, &key, "edge-601", "before the reset attacks");
    let stranger = keygen(dir.path(), "stranger", "ed25519");
    let data_before = files_under(&root.join("data"));
    let reset = atomix_api::FactoryReset::BODY;
    let nonce = operator_nonce(&s);
    let forged = [
        (
            signature_header(&stranger, &nonce, reset),
            sha256_hex(reset),
        ),
        (
            signature_header(&key, &nonce, b"another body"),
            sha256_hex(reset),
        ),
        ("!!!!".to_owned(), sha256_hex(reset)),
    ];
    for (sig, digest) in &forged {
        let mut c = connect_from(2, s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST /api/factory-reset HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nX-Atomix-Nonce: {nonce}\r\nX-Atomix-Content-SHA256: {digest}\r\nX-Atomix-Signature: {sig}\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&reset[..5]).unwrap();
        // The body stalls here; the answer comes from the headers alone.
        let mut answer = [0u8; 12];
        c.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 401", "{sig:.20}");

        let (status, body) = request_with_deadline(
            s.addr,
            "GET",
            "/api/jobs",
            &[
                ("X-Atomix-Nonce", &nonce),
                ("X-Atomix-Content-SHA256", digest),
                ("X-Atomix-Signature", sig),
            ],
            b"",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 401);
        assert!(!String::from_utf8_lossy(&body).contains("\"jobs\""));
    }
    // The operator's signature over the empty body (a job list's), sent as a reset.
    let empty_sig = signature_header(&key, &nonce, b"");
    let (status, body) = request_with_deadline(
        s.addr,
        "POST",
        "/api/factory-reset",
        &[
            ("Content-Type", "application/json"),
            ("X-Atomix-Nonce", &nonce),
            ("X-Atomix-Content-SHA256", &sha256_hex(b"")),
            ("X-Atomix-Signature", &empty_sig),
        ],
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let huge = request_with_deadline(
        s.addr,
        "POST",
        "/api/factory-reset",
        &[
            ("Content-Type", "application/json"),
            ("Expect", "100-continue"),
        ],
        &vec![b' '; 1 << 20],
        Duration::from_secs(5),
    );
    assert!(matches!(huge, Ok((413, _)) | Err(_)), "{huge:?}");
    assert_eq!(
        files_under(&root.join("data")),
        data_before,
        "forged resets wrote nothing under /data"
    );
    assert!(!root.join("data/atomix/factory-reset").exists());

    // The operator's list, then the same headers again.
    let n = operator_nonce(&s);
    let sig = signature_header(&key, &n, b"");
    let empty = sha256_hex(b"");
    let headers = [
        ("X-Atomix-Nonce", n.as_str()),
        ("X-Atomix-Content-SHA256", empty.as_str()),
        ("X-Atomix-Signature", sig.as_str()),
    ];
    let list = |what: &str| {
        request_with_deadline(
            s.addr,
            "GET",
            "/api/jobs",
            &headers,
            b"",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let (status, body) = list("the operator's list");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let jobs: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jobs["jobs"][0]["kind"], "config");
    let (status, _) = list("a replay");
    assert_eq!(status, 401, "a replayed list");
    let (_, health) = request_with_deadline(
        s.addr,
        "GET",
        "/api/health",
        &[],
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    let health: Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(health["provisioned"], true);
}

/// Stalled clients of every kind, for the stop tests.
fn stall_clients(addr: SocketAddr) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for n in 2..6u8 {
        for i in 0..8 {
            let Ok(mut c) = connect_from(n, addr) else {
                continue;
            };
            let _ = match i % 4 {
                0 => c.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n"),
                1 => c.write_all(b"POST /api/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/toml\r\nContent-Length: 500000\r\n\r\n#"),
                2 => c.write_all(b"POST /api/config HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n#"),
                _ => Ok(()),
            };
            conns.push(c);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    conns
}

#[test]
fn sigterm_ends_the_service_within_seconds_with_stalled_clients() {
    let (_dir, _key, root) = setup();
    let mut s = start(&root, true);
    let _stalled = stall_clients(s.addr);
    health_latency(&s, "stalled clients before SIGTERM");
    let t = Instant::now();
    let pid = s.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not end the service");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    eprintln!(
        "figure: SIGTERM with 32 stalled clients: exited after {} ms",
        t.elapsed().as_millis()
    );
}

#[test]
fn the_listener_switch_drops_stalled_clients_within_seconds() {
    let (_dir, key, root) = setup();
    // Derived addresses: 0.0.0.0:PORT until provisioned, then 192.168.100.1:PORT.
    let s = start(&root, false);
    let mut stalled = stall_clients(s.addr);
    health_latency(&s, "stalled clients before the switch");
    let body = config_with_admin(&key, "edge-601");
    let nonce = operator_nonce(&s);
    let (status, answer) = signed_config(&s, &key, &nonce, body.as_bytes(), body.as_bytes());
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    // The job ends with `current` set; the switch follows it.
    let current = root.join("data/config/current");
    let provisioned = Instant::now() + Duration::from_secs(60);
    while !current.exists() {
        assert!(Instant::now() < provisioned, "the apply did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut open = still_open(&mut stalled);
    while open > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        open = still_open(&mut stalled);
    }
    assert_eq!(open, 0, "stalled clients kept the old listener");
    eprintln!(
        "figure: listener switch: stalled clients dropped {} ms after the job",
        t.elapsed().as_millis()
    );
    // The WAN listener is gone: 127.0.0.1 is no longer served.
    let gone = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(s.addr).is_ok() {
        assert!(Instant::now() < gone, "still listening on 0.0.0.0");
        std::thread::sleep(Duration::from_millis(100));
    }
}
