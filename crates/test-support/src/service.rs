//! Starting a service under test: it is ready when its address accepts connections.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Waits until something accepts TCP connections on `addr`, trying every 50 ms; `false`
/// when `timeout` passes first (the caller says what the service said).
pub fn wait_until_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
