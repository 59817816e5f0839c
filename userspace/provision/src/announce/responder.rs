//! The multicast DNS responder's socket loop (IPv4 only: the device's addresses and
//! its clients' are IPv4; no AAAA is answered).
//!
//! One UDP socket on 0.0.0.0:5353 (`SO_REUSEADDR`/`SO_REUSEPORT`, beside any other
//! responder on the host), in the group 224.0.0.251 on the publication's interfaces
//! only (`IP_MULTICAST_ALL` off, so memberships of other sockets bring nothing), and
//! `IP_PKTINFO` to learn where each packet arrived and to whom it was sent. It answers
//! only multicast questions from port 5353 that arrived on a chosen interface with an
//! IPv4 address, from a source address on one of that interface's subnets (RFC 6762
//! section 11: a query from off the link is ignored), by multicast on that interface
//! (IP TTL 255), with that interface's own addresses in the A records. Unicast packets and legacy queries (source port not
//! 5353, RFC 6762 section 6.7) are ignored: nothing is ever sent to a source address,
//! so the responder cannot be made to reflect traffic elsewhere, on or off the link.
//! The packets' IP TTL is not checked (that needs `IP_RECVTTL`, which no safe socket
//! crate here offers); answers go to the link's group alone and are rate limited.
//!
//! The state is fixed at the start and does not grow: one receive buffer, and per
//! interface its index, addresses (re-read every 5 s, so a DHCP lease or a late driver
//! is followed; a change is announced) and the last time each kind of answer went out
//! there ([`RateLimit`], RFC 6762 section 6: at most once a second). Nothing a packet
//! carries is kept ([`super::packet`]).
//!
//! The thread ends when its [`Responder`] is stopped or dropped: a stop flag, seen
//! within [`POLL`] (the socket's receive timeout), then goodbye packets.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{self as nsock, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::packet::{Kind, Kinds, Records, MAX_QUERY};
use super::{AnnounceError, Publication};

/// The multicast DNS group and port.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub const PORT: u16 = 5353;

/// How soon a stop is seen (the socket's receive timeout).
const POLL: Duration = Duration::from_millis(200);
/// How often the interfaces' indexes and addresses are read again.
const REFRESH: Duration = Duration::from_secs(5);
/// Unsolicited announcements at a publication or an address change (RFC 6762 section
/// 8.3: at least two, the gap doubling from 1 s): at 0, 1 and 3 s.
const ANNOUNCEMENTS: u8 = 3;
const ANNOUNCE_GAP: Duration = Duration::from_secs(1);
/// The least time between two answers of one kind on one interface.
pub const ANSWER_GAP: Duration = Duration::from_secs(1);

/// When each kind of answer last went out on one interface: a fixed array, no per-peer
/// state.
#[derive(Debug, Default, Clone)]
pub struct RateLimit {
    last: [Option<Instant>; Kind::ALL.len()],
}

impl RateLimit {
    /// Of `asked`, the kinds that may be answered at `now` (each at most once per
    /// [`ANSWER_GAP`]); they count as answered from now.
    pub fn admit(&mut self, asked: &Kinds, now: Instant) -> Kinds {
        let mut admitted = Kinds::default();
        for kind in Kind::ALL {
            let i = kind.index();
            let free = self.last[i].is_none_or(|t| now.saturating_duration_since(t) >= ANSWER_GAP);
            if asked[i] && free {
                admitted[i] = true;
                self.last[i] = Some(now);
            }
        }
        admitted
    }
}

/// A chosen interface as last read.
#[derive(Debug)]
struct Link {
    name: String,
    index: Option<u32>,
    addresses: Vec<Ipv4Addr>,
    /// The subnets of those addresses, as (address, netmask): the link's senders.
    subnets: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The socket is in the group there (for this index).
    joined: bool,
    announcements_left: u8,
    next_announcement: Instant,
    limit: RateLimit,
}

/// A running responder; stopping or dropping it sends the goodbyes and ends its thread.
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A responder whose records are made and whose socket is open, not yet answering:
/// what can fail is done before the running one is stopped ([`super::MdnsAnnouncer`]).
#[derive(Debug)]
pub struct Prepared {
    socket: Socket,
    records: Records,
    interfaces: Vec<String>,
}

impl Responder {
    /// Makes `p`'s records and opens the socket (`SO_REUSEPORT`: beside a running
    /// responder).
    pub fn prepare(p: &Publication) -> Result<Prepared, AnnounceError> {
        let records = Records::new(p).map_err(|e| AnnounceError::Name {
            name: p.announcement.name.clone(),
            reason: e.to_string(),
        })?;
        let socket = open().map_err(AnnounceError::Start)?;
        Ok(Prepared {
            socket,
            records,
            interfaces: p.interfaces.clone(),
        })
    }

    /// Starts answering and announcing what `prepared` holds.
    pub fn start(prepared: Prepared) -> Result<Responder, AnnounceError> {
        let Prepared {
            socket,
            records,
            interfaces,
        } = prepared;
        let now = Instant::now();
        let links = interfaces
            .iter()
            .map(|name| Link {
                name: name.clone(),
                index: None,
                addresses: Vec::new(),
                subnets: Vec::new(),
                joined: false,
                announcements_left: 0,
                next_announcement: now,
                limit: RateLimit::default(),
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mdns".into())
            .spawn(move || Loop::new(socket, records, links).run(&flag))
            .map_err(AnnounceError::Start)?;
        Ok(Responder {
            stop,
            thread: Some(thread),
        })
    }

    /// Sends the goodbyes and waits for the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the multicast DNS responder's thread panicked");
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.halt();
    }
}

fn open() -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_multicast_all_v4(false)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.set_ttl_v4(255)?;
    socket.set_read_timeout(Some(POLL))?;
    nsock::setsockopt(&socket, nsock::sockopt::Ipv4PacketInfo, &true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT).into())?;
    Ok(socket)
}

/// `source` is on one of `subnets` (address, netmask).
pub fn on_link(subnets: &[(Ipv4Addr, Ipv4Addr)], source: Ipv4Addr) -> bool {
    subnets.iter().any(|(address, mask)| {
        let mask = u32::from(*mask);
        u32::from(*address) & mask == u32::from(source) & mask
    })
}

/// A received packet's envelope.
struct Arrival {
    len: usize,
    truncated: bool,
    source: Option<SocketAddrV4>,
    /// The arrival interface and the header's destination address.
    interface: Option<u32>,
    destination: Option<Ipv4Addr>,
}

struct Loop {
    socket: Socket,
    records: Records,
    links: Vec<Link>,
    buffer: Box<[u8; MAX_QUERY]>,
    control: Vec<u8>,
    next_refresh: Instant,
}

impl Loop {
    fn new(socket: Socket, records: Records, links: Vec<Link>) -> Loop {
        Loop {
            socket,
            records,
            links,
            buffer: Box::new([0; MAX_QUERY]),
            control: nix::cmsg_space!(nix::libc::in_pktinfo),
            next_refresh: Instant::now(),
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= self.next_refresh {
                self.refresh(now);
                self.next_refresh = now + REFRESH;
            }
            self.announce(now);
            match self.receive() {
                Ok(Some(arrival)) => self.handle(&arrival),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("multicast DNS: {e}");
                    std::thread::sleep(POLL);
                }
            }
        }
        for i in 0..self.links.len() {
            let link = &self.links[i];
            if link.joined && !link.addresses.is_empty() {
                if let Some(bye) = self.records.unsolicited(&link.addresses, true) {
                    self.send(i, &bye);
                }
            }
        }
    }

    /// Reads the interfaces' indexes and addresses; joins the group where it is not yet.
    /// The index comes from the name (an interface with no address keeps its index and
    /// the socket its membership there); the addresses from the address list.
    fn refresh(&mut self, now: Instant) {
        let interfaces = match if_addrs::get_if_addrs() {
            Ok(i) => i,
            Err(e) => {
                log::warn!("multicast DNS: cannot list the interfaces: {e}");
                return;
            }
        };
        for link in &mut self.links {
            let index = nix::net::if_::if_nametoindex(link.name.as_str()).ok();
            link.subnets = interfaces
                .iter()
                .filter(|i| i.name == link.name)
                .filter_map(|i| match &i.addr {
                    if_addrs::IfAddr::V4(a) => Some((a.ip, a.netmask)),
                    if_addrs::IfAddr::V6(_) => None,
                })
                .collect();
            let addresses: Vec<Ipv4Addr> = link.subnets.iter().map(|(ip, _)| *ip).collect();
            if index != link.index {
                // A new interface under the name: the old one's membership goes (it is
                // gone with its interface, or would count against the socket's limit).
                if let (Some(old), true) = (link.index, link.joined) {
                    let _ = self
                        .socket
                        .leave_multicast_v4_n(&GROUP, &InterfaceIndexOrAddress::Index(old));
                }
                link.index = index;
                link.joined = false;
            }
            if let (Some(index), false) = (link.index, link.joined) {
                match self
                    .socket
                    .join_multicast_v4_n(&GROUP, &InterfaceIndexOrAddress::Index(index))
                {
                    Ok(()) => link.joined = true,
                    // Already a member there.
                    Err(e) if e.raw_os_error() == Some(nix::libc::EADDRINUSE) => link.joined = true,
                    Err(e) => log::debug!("multicast DNS: not yet on {}: {e}", link.name),
                }
            }
            if addresses != link.addresses {
                link.addresses = addresses;
                if !link.addresses.is_empty() {
                    link.announcements_left = ANNOUNCEMENTS;
                    link.next_announcement = now;
                }
            }
        }
    }

    fn announce(&mut self, now: Instant) {
        for i in 0..self.links.len() {
            let link = &self.links[i];
            if link.announcements_left == 0 || now < link.next_announcement || !link.joined {
                continue;
            }
            if let Some(packet) = self.records.unsolicited(&link.addresses, false) {
                self.send(i, &packet);
            }
            let link = &mut self.links[i];
            link.announcements_left -= 1;
            let sent = u32::from(ANNOUNCEMENTS - link.announcements_left);
            link.next_announcement = now + ANNOUNCE_GAP * (1 << (sent - 1));
        }
    }

    /// One datagram into the buffer; `None` at the receive timeout.
    fn receive(&mut self) -> nix::Result<Option<Arrival>> {
        let fd = self.socket.as_raw_fd();
        let mut iov = [IoSliceMut::new(&mut self.buffer[..])];
        let msg = match nsock::recvmsg::<SockaddrIn>(
            fd,
            &mut iov,
            Some(&mut self.control),
            MsgFlags::empty(),
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut arrival = Arrival {
            len: msg.bytes,
            truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            source: msg.address.map(|a| SocketAddrV4::new(a.ip(), a.port())),
            interface: None,
            destination: None,
        };
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = cmsg {
                arrival.interface = u32::try_from(info.ipi_ifindex).ok();
                arrival.destination = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
        }
        Ok(Some(arrival))
    }

    fn handle(&mut self, arrival: &Arrival) {
        // Whole multicast questions from a multicast DNS port, on a chosen interface
        // with an address to give.
        let Some(i) = self
            .links
            .iter()
            .position(|l| l.joined && l.index.is_some() && l.index == arrival.interface)
        else {
            return;
        };
        if arrival.truncated
            || arrival.destination != Some(GROUP)
            || arrival
                .source
                .is_none_or(|s| s.port() != PORT || !on_link(&self.links[i].subnets, *s.ip()))
            || self.links[i].addresses.is_empty()
        {
            return;
        }
        let Ok(asked) = self.records.asked(&mut self.buffer[..arrival.len]) else {
            return;
        };
        if asked == Kinds::default() {
            return;
        }
        let link = &mut self.links[i];
        let admitted = link.limit.admit(&asked, Instant::now());
        if let Some(answer) = self.records.answer(&admitted, &link.addresses) {
            self.send(i, &answer);
        }
    }

    /// Multicasts `packet` on link `i`, from its first address.
    fn send(&self, i: usize, packet: &[u8]) {
        let link = &self.links[i];
        let (Some(index), Some(source)) = (link.index, link.addresses.first()) else {
            return;
        };
        let info = nix::libc::in_pktinfo {
            ipi_ifindex: index as nix::libc::c_int,
            ipi_spec_dst: nix::libc::in_addr {
                s_addr: u32::from(*source).to_be(),
            },
            ipi_addr: nix::libc::in_addr { s_addr: 0 },
        };
        let to = SockaddrIn::from(SocketAddrV4::new(GROUP, PORT));
        if let Err(e) = nsock::sendmsg(
            self.socket.as_raw_fd(),
            &[IoSlice::new(packet)],
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&to),
        ) {
            log::debug!("multicast DNS: cannot send on {}: {e}", link.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(of: &[Kind]) -> Kinds {
        let mut k = Kinds::default();
        for kind in of {
            k[kind.index()] = true;
        }
        k
    }

    #[test]
    fn only_senders_on_the_link_are_answered() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let lan = [(ip("192.168.100.1"), ip("255.255.255.0"))];
        assert!(on_link(&lan, ip("192.168.100.66")));
        assert!(on_link(&lan, ip("192.168.100.1")), "its own loop-back");
        assert!(!on_link(&lan, ip("192.168.101.66")));
        assert!(!on_link(&lan, ip("10.9.9.9")));
        assert!(!on_link(&[], ip("192.168.100.66")), "no address, no link");
        let two = [lan[0], (ip("10.0.0.7"), ip("255.0.0.0"))];
        assert!(on_link(&two, ip("10.200.1.1")));
        let host = [(ip("192.168.1.10"), ip("255.255.255.255"))];
        assert!(!on_link(&host, ip("192.168.1.20")));
    }

    #[test]
    fn each_kind_at_most_once_a_second() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let browse = kinds(&[Kind::Instance]);
        assert_eq!(limit.admit(&browse, t0), browse);
        assert_eq!(
            limit.admit(&browse, t0 + Duration::from_millis(10)),
            Kinds::default()
        );
        // Another kind is not held back by the first.
        let both = kinds(&[Kind::Instance, Kind::Address]);
        assert_eq!(
            limit.admit(&both, t0 + Duration::from_millis(500)),
            kinds(&[Kind::Address])
        );
        assert_eq!(
            limit.admit(&both, t0 + Duration::from_millis(999)),
            Kinds::default()
        );
        assert_eq!(limit.admit(&browse, t0 + ANSWER_GAP), browse);
        assert_eq!(
            limit.admit(&both, t0 + Duration::from_millis(1500)),
            kinds(&[Kind::Address])
        );
    }

    #[test]
    fn ten_thousand_queries_a_second_get_one_answer() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let all = [true; Kind::ALL.len()];
        let answered = (0..10_000)
            .filter(|n| limit.admit(&all, t0 + Duration::from_micros(n * 99)) != Kinds::default())
            .count();
        assert_eq!(answered, 1);
    }
}
