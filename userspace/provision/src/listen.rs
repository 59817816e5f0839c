//! The listeners: one per address the service wants (see
//! [`crate::service::Service::desired_listen`]), replaced when that changes (narrowing
//! to the LAN gateway address after provisioning), all stopped gracefully on shutdown.
//! Sockets are bound with `IP_FREEBIND`, so the LAN address may be bound before
//! networkd has configured it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::service::Service;

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

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    bound: SocketAddr,
}

/// Serves `app` until `shutdown` turns true, following the service's listen addresses.
pub async fn run(app: Router, svc: Arc<Service>, mut shutdown: watch::Receiver<bool>) {
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
                crate::logging::notice(&format!("no longer listening on {}", r.bound));
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
                    crate::logging::notice(&format!("listening on http://{bound}"));
                    let (stop, stopped) = oneshot::channel::<()>();
                    let app = app.clone();
                    let task = tokio::spawn(async move {
                        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                            let _ = stopped.await;
                        });
                        if let Err(e) = serve.await {
                            crate::logging::error(&format!("listener {bound}: {e}"));
                        }
                    });
                    running.insert(*addr, Running { stop, task, bound });
                }
                Err(e) => {
                    failed = true;
                    crate::logging::error(&format!("cannot listen on {addr}: {e}; retrying"));
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
    for (_, r) in running {
        let _ = r.stop.send(());
        let _ = r.task.await;
    }
}
