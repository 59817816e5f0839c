//! TCP ports for services under test (the provisioning service in its integration tests,
//! QEMU's forwards in the boot tests), taken from below the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`).
//!
//! A port taken from `bind(":0")` and released comes from that range, and the kernel may
//! hand it to any outgoing connection before the service binds it: the flood tests open
//! hundreds of connections at once, and a service whose port became one of their source
//! ports cannot listen (`EADDRINUSE`) until they close. Below the range nothing is
//! allocated on its own; the process id spreads concurrent test processes apart, the
//! counter keeps one process's ports apart, and a port something else holds is skipped.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const LOWEST: u32 = 10_000;

/// A free TCP port below the ephemeral range: nothing listens on it (on any address) now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("read /proc/sys/net/ipv4/ip_local_port_range");
    let ephemeral_low: u32 = range
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("net.ipv4.ip_local_port_range holds two numbers");
    assert!(
        ephemeral_low > LOWEST + 1_000,
        "net.ipv4.ip_local_port_range starts at {ephemeral_low}: no room below it for test services"
    );
    let span = ephemeral_low - LOWEST;
    let start = std::process::id().wrapping_mul(97) % span;
    for _ in 0..span {
        let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("ports below the ephemeral range fit in u16");
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port between {LOWEST} and {ephemeral_low}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_free() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((10_000..low).contains(&p), "{p}");
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).expect("free");
        }
    }
}
