//! A real LAN segment for the device's eth1: a network namespace made by the test with
//! a tap device in it, whose file descriptor QEMU is handed (`-netdev tap,fd=N`). QEMU
//! itself stays in the host's namespace, so its WAN user-net forwards (API, SSH) stay
//! on the host's 127.0.0.1, while multicast DNS and the LAN API are reached by running
//! commands inside the namespace (`ip netns exec`), as a laptop on the LAN would.
//!
//! The namespace (and the tap with it) is removed when the [`Lan`] is dropped, also when
//! the test fails; drop the device first, so QEMU has let go of the tap.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::host;

/// The tap's name inside the namespace.
const TAP: &str = "tap0";

/// The namespace's address on the LAN (the device is 192.168.100.1).
pub const HOST_ADDRESS: &str = "192.168.100.2/24";

/// A network namespace holding the tap of the device's LAN port.
#[derive(Debug)]
pub struct Lan {
    pub name: String,
    tap: OwnedFd,
}

impl Lan {
    /// Makes namespace `name` (removing a stale one a killed run left) with `tap0` up
    /// at [`HOST_ADDRESS`], and opens the tap from inside it.
    pub fn create(name: &str) -> Lan {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        host(Command::new("ip").args(["netns", "add", name]));
        // From here on, a failure removes the namespace again.
        let cleanup = Cleanup(name.to_owned());
        let ip = |args: &[&str]| host(Command::new("ip").args(["-n", name]).args(args));
        ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
        ip(&["addr", "add", HOST_ADDRESS, "dev", TAP]);
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "set", TAP, "up"]);
        // /dev/net/tun attaches to the device of that name in the namespace of the
        // opening thread: a thread of our own moves there, opens it and ends.
        let ns_path = format!("/run/netns/{name}");
        let tap = std::thread::spawn(move || -> std::io::Result<OwnedFd> {
            let ns = File::open(&ns_path)?;
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            open_tap(TAP)
        })
        .join()
        .expect("the tap thread panicked")
        .unwrap_or_else(|e| panic!("cannot open {TAP} in namespace {name}: {e}"));
        std::mem::forget(cleanup);
        Lan {
            name: name.to_owned(),
            tap,
        }
    }

    /// The tap's descriptor, made inheritable for QEMU (`-netdev tap,fd=N`).
    pub fn tap_fd_for_child(&self) -> RawFd {
        rustix::io::fcntl_setfd(&self.tap, rustix::io::FdFlags::empty())
            .expect("cannot make the tap inheritable");
        self.tap.as_raw_fd()
    }

    /// `argv` run inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Records the segment's multicast DNS packets (UDP 5353, both directions) into the
    /// pcap file `path` until the [`Capture`] is dropped: what a failed discovery is read
    /// from (`tshark -r FILE`). Each packet is written as it arrives (`-U`), so the file
    /// is complete up to the moment of a failure.
    pub fn capture_mdns(&self, path: &Path) -> Capture {
        let child = self
            .command(&[
                "tcpdump",
                "-i",
                TAP,
                "-U",
                "-n",
                "-w",
                path.to_str().expect("a UTF-8 capture path"),
                "udp port 5353",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tcpdump in namespace {}: {e}", self.name));
        Capture {
            child,
            path: path.to_owned(),
        }
    }
}

/// A running `tcpdump` of the LAN segment ([`Lan::capture_mdns`]); stopped when dropped.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    pub path: PathBuf,
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SIGTERM: tcpdump flushes and closes the file.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.name, "link", "del", TAP])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Removes a half-made namespace when [`Lan::create`] fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Opens `/dev/net/tun` attached to the existing tap `name` (TUNSETIFF, IFF_TAP |
/// IFF_NO_PI: Ethernet frames with no packet-information header, what QEMU wants).
#[allow(unsafe_code)]
fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    let tun = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // struct ifreq: the name (IFNAMSIZ 16 bytes, NUL-terminated), then the union whose
    // first member here is the short ifr_flags; 40 bytes in all.
    let mut ifreq = [0u8; 40];
    assert!(name.len() < 16, "interface names are shorter than IFNAMSIZ");
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one struct ifreq at the pointer; `ifreq` is a
    // 40-byte buffer (sizeof(struct ifreq) on Linux) that outlives the call, and the
    // descriptor is an open /dev/net/tun.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun.into())
}
