//! Arbitrary bytes as what a client sends on one connection, through the service's own
//! connection handling (hyper's HTTP/1 parser under the head limits) and the real
//! router on a temporary root: never a panic, never a hang (the connection ends within
//! 5 s of the client's end of input), and whatever is answered is HTTP/1.x.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atomix_provision::apply::{Admin, Applier};
use atomix_provision::failpoints::Failpoints;
use atomix_provision::paths::Paths;
use atomix_provision::service::Service;
use atomix_provision::system::RecordSystem;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct World {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _root: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        let applier = Applier {
            system: Arc::new(RecordSystem::new(paths.actions_log())),
            paths,
            failpoints: Failpoints::parse("").unwrap(),
            admin: Admin::from_passwd(""),
        };
        let announcer = Arc::new(atomix_provision::announce::FakeAnnouncer::default());
        let svc = Service::new(applier, announcer, Some(vec![]), None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World {
            runtime,
            app: atomix_provision::api::app(svc),
            _root: root,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    w.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 17);
        let conn = tokio::spawn(atomix_provision::listen::serve_stream(
            server,
            peer,
            w.app.clone(),
        ));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("the connection ends once the client has")
            .ok();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection task ends")
            .unwrap();
        // HTTP/1.0 requests are answered in HTTP/1.0.
        if !answer.is_empty() {
            assert!(
                answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
                "{:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(64)])
            );
        }
    });
});
