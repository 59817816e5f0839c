//! The listeners: one per address the service wants (see
//! [`crate::service::Service::desired_listen`]), replaced when that changes (narrowing
//! to the LAN gateway address after provisioning), all stopped on shutdown. Sockets are
//! bound with `IP_FREEBIND`, so the LAN address may be bound before networkd has
//! configured it.
//!
//! Each listener runs its own accept loop over hyper's HTTP/1 connection, so that what a
//! client can hold is bounded whatever it does:
//!
//! * at most [`MAX_CONNECTIONS`] connections in all and [`MAX_PER_PEER`] per peer (an
//!   IPv4 address, an IPv6 /64). A connection past a cap takes the place of the oldest
//!   *idle* connection (no request being handled) of the peer holding the most; when
//!   none is idle it is answered 503 and closed. The caps keep file descriptors for an
//!   apply and its rollback (`LimitNOFILE=1024` in `first-boot.service`).
//! * the request head must arrive within [`HEADER_TIMEOUT`] of the connection becoming
//!   ready for it (which is also the keep-alive idle timeout), and be at most
//!   [`MAX_HEAD_BYTES`].
//! * a connection with no request being handled is closed after [`IDLE_TIMEOUT`]
//!   (a body trickled to a route that ignores it, a client that stops reading its
//!   answer). Bodies a handler reads have their own rate rules (`api::read_body`).
//! * stopping a listener (the narrowing, SIGTERM) closes connections with no request in
//!   progress at once (a head still arriving included), lets requests in progress
//!   finish for [`STOP_GRACE`], then closes whatever is left.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use crate::service::Service;

/// Connections held at once, over all listeners. `LimitNOFILE=1024` leaves the rest
/// for the apply (files, pipes of the commands it runs) and its rollback.
pub const MAX_CONNECTIONS: usize = 128;
/// Connections held at once from one peer (IPv4 address or IPv6 /64); a browser opens 6.
pub const MAX_PER_PEER: usize = 16;
/// The request head (request line and headers) must arrive within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request being handled is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest request head; the longest legitimate header (an RSA-4096 signature) is
/// under 3 KiB.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// How long a stopping listener lets requests in progress finish.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// A stopping listener closes a connection with no request in progress once its last
/// answer is this old.
const STOP_IDLE: Duration = Duration::from_millis(250);

/// Who a connection counts against: an IPv4 address, or the /64 of an IPv6 address
/// (a host on a LAN has as many addresses of its /64 as it likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    pub fn of(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(_) => PeerKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey(IpAddr::V4(v4)),
                None => {
                    let mut seg = v6.segments();
                    seg[4..].fill(0);
                    PeerKey(IpAddr::V6(seg.into()))
                }
            },
        }
    }
}

/// The peer of a request, inserted into its extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

#[derive(Debug)]
struct Entry {
    peer: PeerKey,
    /// Requests being handled on this connection.
    active: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// By id, so oldest first.
    conns: BTreeMap<u64, Entry>,
    per_peer: HashMap<PeerKey, usize>,
}

/// The connections of every listener, with the caps.
#[derive(Debug)]
pub struct Connections {
    max_total: usize,
    max_per_peer: usize,
    table: Mutex<Table>,
}

/// A connection admitted by [`Connections::admit`]; dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    owner: Arc<Connections>,
    id: u64,
    pub active: Arc<AtomicUsize>,
    pub kill: Arc<Notify>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.owner.lock();
        if let Some(e) = t.conns.remove(&self.id) {
            if let Some(n) = t.per_peer.get_mut(&e.peer) {
                *n -= 1;
                if *n == 0 {
                    t.per_peer.remove(&e.peer);
                }
            }
        }
    }
}

impl Connections {
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max_total,
            max_per_peer,
            table: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn held(&self) -> usize {
        self.lock().conns.len()
    }

    /// A place for a new connection from `ip`, making room by closing an idle one
    /// (the peer's own oldest when it is at its cap; else the oldest of the peer holding
    /// the most, if it holds more than this peer would); `None`: refuse it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let peer = PeerKey::of(ip);
        let mut t = self.lock();
        let mine = t.per_peer.get(&peer).copied().unwrap_or(0);
        if mine >= self.max_per_peer {
            Self::evict_idle_of(&mut t, peer)?;
        } else if t.conns.len() >= self.max_total {
            let (&top, &count) = t.per_peer.iter().max_by_key(|(k, n)| (**n, **k))?;
            if count <= mine + 1 {
                return None;
            }
            Self::evict_idle_of(&mut t, top)?;
        }
        let id = t.next;
        t.next += 1;
        let active = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        t.conns.insert(
            id,
            Entry {
                peer,
                active: Arc::clone(&active),
                kill: Arc::clone(&kill),
            },
        );
        *t.per_peer.entry(peer).or_default() += 1;
        Some(Admitted {
            owner: Arc::clone(self),
            id,
            active,
            kill,
        })
    }

    /// Closes the oldest idle connection of `peer` (it leaves the table at once).
    fn evict_idle_of(t: &mut Table, peer: PeerKey) -> Option<()> {
        let id = t
            .conns
            .iter()
            .find(|(_, e)| e.peer == peer && e.active.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id)?;
        let e = t.conns.remove(&id).expect("found above");
        e.kill.notify_one();
        if let Some(n) = t.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                t.per_peer.remove(&peer);
            }
        }
        Some(())
    }
}

/// Marks a request as being handled on its connection while it lives.
struct ActiveGuard(Arc<AtomicUsize>, Arc<Mutex<Instant>>);

impl ActiveGuard {
    fn enter(active: &Arc<AtomicUsize>, idle_since: &Arc<Mutex<Instant>>) -> ActiveGuard {
        active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(Arc::clone(active), Arc::clone(idle_since))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        *self.1.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The answer to a connection past the caps, written without waiting.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 57\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{\"error\":\"too many connections; try again in a moment\"}\n";

/// Accepts on `listener` until `stop` fires; then stops the connections (graceful first,
/// closed after [`STOP_GRACE`]).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    conns: Arc<Connections>,
    mut stop: oneshot::Receiver<()>,
) {
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                log::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = conns.admit(peer.ip()) else {
            let _ = stream.try_write(REFUSED);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            admitted,
            drain_rx.clone(),
        ));
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let _ = tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// One connection: HTTP/1 with the head timeout and size cap, closed when idle too long,
/// when evicted, or when its listener stops.
async fn serve_connection<I>(
    stream: I,
    peer: SocketAddr,
    app: Router,
    admitted: Admitted,
    mut drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let idle_since = Arc::new(Mutex::new(Instant::now()));
    let active = Arc::clone(&admitted.active);
    let service = {
        let idle_since = Arc::clone(&idle_since);
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let guard = ActiveGuard::enter(&active, &idle_since);
            req.extensions_mut().insert(Peer(peer));
            let mut app = app.clone();
            async move {
                let response = tower::Service::call(&mut app, req).await;
                drop(guard);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let mut grace_end: Option<tokio::time::Instant> =
        draining.then(|| tokio::time::Instant::now() + STOP_GRACE);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = admitted.kill.notified() => break,
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                    grace_end = Some(tokio::time::Instant::now() + STOP_GRACE);
                }
            }
            _ = tick.tick() => {
                if grace_end.is_some_and(|end| tokio::time::Instant::now() >= end) {
                    break;
                }
                // Stopping: a connection with no request in progress (idle, or a head
                // still arriving) goes at once; its last answer has had time to leave.
                let idle_for = idle_since.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                let limit = if draining { STOP_IDLE } else { IDLE_TIMEOUT };
                if admitted.active.load(Ordering::Acquire) == 0 && idle_for >= limit {
                    break;
                }
            }
        }
    }
    drop(admitted);
}

/// Serves one connection over any byte stream (what the request fuzz target drives) with
/// the same rules as a listener's, until the client has gone.
pub async fn serve_stream<I>(stream: I, peer: SocketAddr, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conns = Connections::new(1, 1);
    let admitted = conns.admit(peer.ip()).expect("an empty table has room");
    let (_drain_tx, drain_rx) = watch::channel(false);
    serve_connection(stream, peer, app, admitted, drain_rx).await;
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    bound: SocketAddr,
}

/// Serves `app` until `shutdown` turns true, following the service's listen addresses.
pub async fn run(app: Router, svc: Arc<Service>, mut shutdown: watch::Receiver<bool>) {
    let conns = Connections::new(MAX_CONNECTIONS, MAX_PER_PEER);
    let mut desired = svc.subscribe_listen();
    let mut running: BTreeMap<SocketAddr, Running> = BTreeMap::new();
    loop {
        let want = desired.borrow_and_update().clone();
        // Stop what is no longer wanted first: the narrowed address may share the port.
        let stale: Vec<SocketAddr> = running
            .keys()
            .filter(|a| !want.contains(a))
            .copied()
            .collect();
        for addr in stale {
            if let Some(r) = running.remove(&addr) {
                log::info!(target: kmsg_log::NOTICE, "no longer listening on {}", r.bound);
                let _ = r.stop.send(());
                let _ = r.task.await;
            }
        }
        let mut failed = false;
        let missing: Vec<SocketAddr> = want
            .iter()
            .filter(|a| !running.contains_key(a))
            .copied()
            .collect();
        for addr in &missing {
            match bind(*addr) {
                Ok(listener) => {
                    let bound = listener.local_addr().unwrap_or(*addr);
                    log::info!(target: kmsg_log::NOTICE, "listening on http://{bound}");
                    let (stop, stopped) = oneshot::channel::<()>();
                    let task = tokio::spawn(accept_loop(
                        listener,
                        app.clone(),
                        Arc::clone(&conns),
                        stopped,
                    ));
                    running.insert(*addr, Running { stop, task, bound });
                }
                Err(e) => {
                    failed = true;
                    log::error!("cannot listen on {addr}: {e}; retrying");
                }
            }
        }
        svc.set_listening(running.values().map(|r| r.bound.to_string()).collect());
        tokio::select! {
            changed = desired.changed() => { if changed.is_err() { break; } }
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)), if failed => {}
        }
    }
    let stops: Vec<_> = running
        .into_values()
        .map(|r| {
            let _ = r.stop.send(());
            r.task
        })
        .collect();
    for task in stops {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_are_addresses_and_v6_prefixes() {
        assert_eq!(
            PeerKey::of(ip("2001:db8::1")),
            PeerKey::of(ip("2001:db8::ffff:2"))
        );
        assert_ne!(
            PeerKey::of(ip("2001:db8:0:1::1")),
            PeerKey::of(ip("2001:db8::1"))
        );
        assert_eq!(
            PeerKey::of(ip("::ffff:10.0.0.1")),
            PeerKey::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn caps_evict_idle_connections_of_the_biggest_peer_only() {
        let c = Connections::new(4, 3);
        let a: Vec<_> = (0..3).map(|_| c.admit(ip("10.0.0.1")).unwrap()).collect();
        // At its own cap, a peer replaces its own oldest idle connection.
        let a4 = c.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(c.held(), 3);
        // The first one was told to go: a permit is stored, so this returns at once.
        futures_lite_block_on(a[0].kill.notified());
        // Another peer fills the total, then takes the place of the biggest peer's.
        let b = c.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(c.held(), 4);
        let b2 = c.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(c.held(), 4, "evicted one of 10.0.0.1's");
        // Busy connections are never evicted.
        for x in a.iter().skip(1).chain([&a4, &b, &b2]) {
            x.active.fetch_add(1, Ordering::AcqRel);
        }
        assert!(c.admit(ip("10.0.0.3")).is_none(), "nothing idle to replace");
        assert!(c.admit(ip("10.0.0.1")).is_none());
        drop(b);
        assert!(c.admit(ip("10.0.0.3")).is_some());
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(1), f)
                    .await
                    .expect("notified")
            })
    }
}
