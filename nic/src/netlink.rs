//! A small rtnetlink (`NETLINK_ROUTE`) client: the control plane of the
//! backends that share an interface with the kernel (AF_XDP, AF_PACKET).
//!
//! Such a stack takes its IPv4 address, MTU, MAC, default gateway and
//! neighbours from the kernel's view of the interface ([`snapshot`]), and
//! follows the kernel's changes while it runs ([`Monitor`]). [`Netlink`] is
//! the request/reply side: the reads, and the two neighbour writes the stack
//! needs (teaching the kernel a MAC, asking it to resolve one).
//!
//! Messages are built and parsed by hand with every length checked: a
//! malformed reply is an error, a malformed notification is skipped, neither
//! panics. A socket belongs to the network namespace of the thread that
//! opened it, whichever thread uses it later.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use thiserror::Error;

// Netlink framing (linux/netlink.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

// rtnetlink message types and groups (linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

// Fixed headers after the nlmsghdr, and their attributes.
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;
const RTNEXTHOP_LEN: usize = 8;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = libc::AF_INET as u8;
const IFF_UP: u32 = 0x1;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const RTM_F_CLONED: u32 = 0x200;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_IFINDEX: u16 = 8;
const NTF_USE: u8 = 0x1;

/// Neighbour state: being resolved (no MAC yet).
pub const NUD_INCOMPLETE: u16 = 0x01;
/// Neighbour state: confirmed recently.
pub const NUD_REACHABLE: u16 = 0x02;
/// Neighbour state: usable, but to be confirmed on next use.
pub const NUD_STALE: u16 = 0x04;
/// Neighbour state: usable, waiting for confirmation.
pub const NUD_DELAY: u16 = 0x08;
/// Neighbour state: usable, being probed.
pub const NUD_PROBE: u16 = 0x10;
/// Neighbour state: resolution failed.
pub const NUD_FAILED: u16 = 0x20;
/// Neighbour state: no resolution needed (the MAC is fixed by the device).
pub const NUD_NOARP: u16 = 0x40;
/// Neighbour state: set by hand, never expires.
pub const NUD_PERMANENT: u16 = 0x80;

/// How long a request waits for the kernel's reply before giving up.
const REPLY_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 5,
    tv_usec: 0,
};
/// Receive buffer asked for a [`Monitor`], so bursts of changes fit.
const MONITOR_RCVBUF: libc::c_int = 1 << 20;
/// Most datagrams one [`Monitor::read_events`] call reads, so that an event
/// storm cannot keep the caller in it forever.
const MAX_DATAGRAMS_PER_READ: usize = 1024;
/// How often an interrupted dump (the kernel's table changed meanwhile) is
/// tried before its result is taken as it is.
const DUMP_ATTEMPTS: usize = 3;

/// An interface as the kernel sees it (RTM_NEWLINK), for the stack's MAC
/// and MTU, and for the backends' queue counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (all zeros if the device has none, or not 6 bytes).
    pub mac: [u8; 6],
    /// MTU (0 if the kernel did not say).
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Receive queues (IFLA_NUM_RX_QUEUES, 1 if absent).
    pub rx_queues: u32,
    /// Transmit queues (IFLA_NUM_TX_QUEUES, 1 if absent).
    pub tx_queues: u32,
}

/// An IPv4 address of an interface, for the stack's own address and subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// Interface index.
    pub ifindex: u32,
    /// The address (IFA_LOCAL, else IFA_ADDRESS).
    pub addr: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
}

/// An IPv4 unicast route of the main table, for the stack's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination network (0.0.0.0 for the default route).
    pub dst: Ipv4Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop, None for a directly connected network.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface (0 if none; the first next hop's for multipath).
    pub oif: u32,
}

/// An IPv4 neighbour (ARP entry), for the stack's ARP cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighInfo {
    /// Interface index.
    pub ifindex: u32,
    /// The neighbour's address.
    pub addr: Ipv4Addr,
    /// Its MAC, if known.
    pub mac: Option<[u8; 6]>,
    /// Its state, NUD_* bits.
    pub state: u16,
}

impl NeighInfo {
    /// Whether the entry is usable for sending: REACHABLE, STALE, DELAY,
    /// PROBE, PERMANENT or NOARP, and with a MAC.
    pub fn is_valid(&self) -> bool {
        const USABLE: u16 =
            NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;
        self.state & USABLE != 0 && self.mac.is_some()
    }
}

/// A change the kernel reported, as read by [`Monitor::read_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link was added or changed (the whole new state).
    Link(LinkInfo),
    /// The link with this index is gone.
    LinkRemoved(u32),
    /// An IPv4 address was added.
    AddrAdded(AddrInfo),
    /// An IPv4 address was removed.
    AddrRemoved(AddrInfo),
    /// A main-table IPv4 unicast route was added or replaced.
    RouteAdded(RouteInfo),
    /// A main-table IPv4 unicast route was removed.
    RouteRemoved(RouteInfo),
    /// A neighbour was added or changed state.
    Neigh(NeighInfo),
    /// A neighbour was removed.
    NeighRemoved(NeighInfo),
}

/// Why a netlink request failed, so callers can tell a missing interface
/// (a user error) from a system one.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// No interface of that name (or index) in this network namespace.
    #[error("no network interface named {0:?} (see `ip link`)")]
    NoSuchLink(String),
    /// A socket call failed, or the kernel answered with this error.
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel's reply did not parse.
    #[error("netlink: malformed reply: {0}")]
    Malformed(&'static str),
}

/// A request/reply rtnetlink socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let fd = nl_socket(0)?;
        set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &REPLY_TIMEOUT)?;
        // Let the kernel filter dumps by the header's fields (Linux 4.20+);
        // older kernels dump everything and the replies are filtered here.
        let _ = set_opt(&fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &1 as &libc::c_int);
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// The socket's descriptor (to keep it open across a handover).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the interface named `name` (NoSuchLink if there is none).
    pub fn link_by_name(&mut self, name: &str) -> Result<LinkInfo, NetlinkError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['\0', '/']) {
            return Err(NetlinkError::NoSuchLink(name.to_string()));
        }
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let mask = RTEXT_FILTER_SKIP_STATS.to_ne_bytes();
        let req = body(
            &ifinfomsg(0),
            &[(IFLA_IFNAME, &cname), (IFLA_EXT_MASK, &mask)],
        );
        self.get_link(&req, name.to_string())
    }

    /// Reads the interface with index `ifindex` (NoSuchLink if there is none).
    pub fn link_by_index(&mut self, ifindex: u32) -> Result<LinkInfo, NetlinkError> {
        let mask = RTEXT_FILTER_SKIP_STATS.to_ne_bytes();
        let req = body(&ifinfomsg(ifindex), &[(IFLA_EXT_MASK, &mask)]);
        self.get_link(&req, format!("#{ifindex}"))
    }

    fn get_link(&mut self, req: &[u8], what: String) -> Result<LinkInfo, NetlinkError> {
        let mut link = None;
        let r = self.exchange(RTM_GETLINK, NLM_F_ACK, req, &mut |m| {
            if m.kind == RTM_NEWLINK && link.is_none() {
                link = parse_link(m.payload)?;
            }
            Ok(())
        });
        match r {
            Err(NetlinkError::Io(e)) if e.raw_os_error() == Some(libc::ENODEV) => {
                Err(NetlinkError::NoSuchLink(what))
            }
            Err(e) => Err(e),
            Ok(_) => link.ok_or(NetlinkError::Malformed("no link in the reply")),
        }
    }

    /// The IPv4 addresses of interface `ifindex`, primary ones first.
    pub fn addrs(&mut self, ifindex: u32) -> Result<Vec<AddrInfo>, NetlinkError> {
        let mut v = self.dump(RTM_GETADDR, &ifaddrmsg(ifindex), RTM_NEWADDR, parse_addr)?;
        v.retain(|a| a.ifindex == ifindex);
        Ok(v)
    }

    /// The IPv4 unicast routes of the main table, lowest metric first (in
    /// the kernel's order among equal metrics).
    pub fn routes(&mut self) -> Result<Vec<RouteInfo>, NetlinkError> {
        let mut v = self.dump(RTM_GETROUTE, &rtmsg(), RTM_NEWROUTE, parse_route)?;
        v.sort_by_key(|&(_, metric)| metric);
        Ok(v.into_iter().map(|(r, _)| r).collect())
    }

    /// The IPv4 neighbours of interface `ifindex`, in any state.
    pub fn neighbours(&mut self, ifindex: u32) -> Result<Vec<NeighInfo>, NetlinkError> {
        // A strictly checked dump takes the interface as NDA_IFINDEX (and
        // fails with EINVAL if the header has one).
        let req = body(&ndmsg(0, 0, 0), &[(NDA_IFINDEX, &ifindex.to_ne_bytes())]);
        let mut v = self.dump(RTM_GETNEIGH, &req, RTM_NEWNEIGH, parse_neigh)?;
        v.retain(|n| n.ifindex == ifindex);
        Ok(v)
    }

    /// Tells the kernel a neighbour's MAC (RTM_NEWNEIGH, NLM_F_CREATE |
    /// NLM_F_REPLACE, NUD_REACHABLE), so that what the stack learns by ARP
    /// also serves the host's own traffic.
    pub fn neigh_set(
        &mut self,
        ifindex: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let attrs: [(u16, &[u8]); 2] = [(NDA_DST, &ip.octets()), (NDA_LLADDR, &mac)];
        let req = body(&ndmsg(ifindex, NUD_REACHABLE, 0), &attrs);
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.exchange(RTM_NEWNEIGH, flags, &req, &mut |_| Ok(()))
            .map(drop)
    }

    /// Asks the kernel to resolve a neighbour (RTM_NEWNEIGH with NTF_USE,
    /// as `ip neigh replace ADDR dev X use` would), so the answer arrives
    /// as a Neigh event. The kernel tells no INCOMPLETE state: the first
    /// event is REACHABLE on an answer, or FAILED once its probes ran out.
    pub fn neigh_resolve(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        // State NUD_NONE, not iproute2's default NUD_PERMANENT: a new entry
        // created permanent would be exempt from the kernel's garbage
        // collection; with NTF_USE the state is not applied anyway.
        let req = body(&ndmsg(ifindex, 0, NTF_USE), &[(NDA_DST, &ip.octets())]);
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.exchange(RTM_NEWNEIGH, flags, &req, &mut |_| Ok(()))
            .map(drop)
    }

    /// Dumps a table (`req`: the request after its nlmsghdr), keeping what
    /// `parse` accepts of the `reply` messages; redone if the kernel flags
    /// the dump as interrupted by a change.
    fn dump<T>(
        &mut self,
        kind: u16,
        req: &[u8],
        reply: u16,
        parse: fn(&[u8]) -> Result<Option<T>, NetlinkError>,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut attempt = 1;
        loop {
            let mut out = Vec::new();
            let interrupted = self.exchange(kind, NLM_F_DUMP, req, &mut |m| {
                if m.kind == reply {
                    out.extend(parse(m.payload)?);
                }
                Ok(())
            })?;
            if !interrupted || attempt == DUMP_ATTEMPTS {
                return Ok(out);
            }
            tracing::debug!("netlink dump {kind} interrupted by a change; again");
            attempt += 1;
        }
    }

    /// Sends request `kind` (`req`: what follows the nlmsghdr) and hands
    /// each reply message of its sequence to `f` until the final ACK or
    /// DONE. Returns whether the kernel flagged the dump as interrupted.
    fn exchange(
        &mut self,
        kind: u16,
        flags: u16,
        req: &[u8],
        f: &mut dyn FnMut(Msg<'_>) -> Result<(), NetlinkError>,
    ) -> Result<bool, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = message(kind, NLM_F_REQUEST | flags, seq, req);
        send_to_kernel(self.fd.as_raw_fd(), &msg)?;
        let mut interrupted = false;
        loop {
            let n = match recv_datagram(self.fd.as_raw_fd(), &mut self.buf, 0) {
                Ok(Some(n)) => n,
                Ok(None) => continue, // not from the kernel
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(
                        io::Error::new(io::ErrorKind::TimedOut, "no reply from the kernel").into(),
                    )
                }
                Err(e) => return Err(e.into()),
            };
            if process_reply(&self.buf[..n], seq, &mut interrupted, f)? {
                return Ok(interrupted);
            }
        }
    }
}

/// Handles one reply datagram of the request `seq` (other sequences are
/// stale replies of an abandoned request, skipped). Returns whether the
/// reply is complete.
fn process_reply(
    dgram: &[u8],
    seq: u32,
    interrupted: &mut bool,
    f: &mut dyn FnMut(Msg<'_>) -> Result<(), NetlinkError>,
) -> Result<bool, NetlinkError> {
    for m in Msgs(dgram) {
        let m = m?;
        if m.seq != seq {
            continue;
        }
        *interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
        match m.kind {
            NLMSG_ERROR => {
                let err = ne_i32(m.payload, 0).ok_or(NetlinkError::Malformed("short error"))?;
                if err == 0 {
                    return Ok(true);
                }
                return Err(io::Error::from_raw_os_error(err.wrapping_neg()).into());
            }
            NLMSG_DONE => match ne_i32(m.payload, 0) {
                Some(err) if err < 0 => {
                    return Err(io::Error::from_raw_os_error(err.wrapping_neg()).into())
                }
                _ => return Ok(true),
            },
            _ => f(m)?,
        }
    }
    Ok(false)
}

/// A non-blocking socket subscribed to RTMGRP_LINK | RTMGRP_IPV4_IFADDR |
/// RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH, for following changes while running.
///
/// The kernel does not report every change: IPv4 routes it flushes because
/// their interface went down or lost its address go without RTM_DELROUTE,
/// so re-read the routes after a [`Event::Link`] that is not up or an
/// [`Event::AddrRemoved`].
pub struct Monitor {
    fd: OwnedFd,
    buf: Vec<u8>,
    overrun: bool,
}

impl Monitor {
    /// Subscribes, in the calling thread's network namespace.
    pub fn open() -> Result<Monitor, NetlinkError> {
        let fd = nl_socket(libc::SOCK_NONBLOCK)?;
        // Root may exceed net.core.rmem_max; anyone else gets up to it.
        if set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &MONITOR_RCVBUF).is_err() {
            let _ = set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &MONITOR_RCVBUF);
        }
        let mut addr = kernel_addr();
        addr.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH;
        // SAFETY: `addr` is a valid sockaddr_nl and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Monitor {
            fd,
            buf: vec![0; 32 * 1024],
            overrun: false,
        })
    }

    /// The descriptor, to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every message queued now (never blocks; at most 1024
    /// datagrams, the rest on the next call), appending the events parsed;
    /// returns how many. Notifications lost to a full receive buffer
    /// (ENOBUFS) are not an error: [`Monitor::overrun`] turns true, and the
    /// caller should read the whole state again.
    pub fn read_events(&mut self, out: &mut Vec<Event>) -> Result<usize, NetlinkError> {
        let mut count = 0;
        for _ in 0..MAX_DATAGRAMS_PER_READ {
            match recv_datagram(self.fd.as_raw_fd(), &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(Some(n)) => count += parse_events(&self.buf[..n], out),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("netlink notifications lost (receive buffer overrun)");
                    self.overrun = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(count)
    }

    /// Whether notifications were lost since the last [`Monitor::take_overrun`].
    pub fn overrun(&self) -> bool {
        self.overrun
    }

    /// Whether notifications were lost, clearing the flag.
    pub fn take_overrun(&mut self) -> bool {
        std::mem::take(&mut self.overrun)
    }
}

/// Parses the notifications of one datagram into `out`, skipping what is
/// malformed or of no interest; returns how many were appended.
fn parse_events(dgram: &[u8], out: &mut Vec<Event>) -> usize {
    let before = out.len();
    for m in Msgs(dgram) {
        let Ok(m) = m else {
            tracing::debug!("netlink: skipping a datagram with a bad message length");
            break;
        };
        match parse_event(m.kind, m.payload) {
            Ok(Some(ev)) => out.push(ev),
            Ok(None) => {}
            Err(e) => tracing::debug!("skipping notification {}: {e}", m.kind),
        }
    }
    out.len() - before
}

/// Parses one notification; None if it is of no interest.
fn parse_event(kind: u16, p: &[u8]) -> Result<Option<Event>, NetlinkError> {
    Ok(match kind {
        RTM_NEWLINK => parse_link(p)?.map(Event::Link),
        RTM_DELLINK => parse_link(p)?.map(|l| Event::LinkRemoved(l.ifindex)),
        RTM_NEWADDR => parse_addr(p)?.map(Event::AddrAdded),
        RTM_DELADDR => parse_addr(p)?.map(Event::AddrRemoved),
        RTM_NEWROUTE => parse_route(p)?.map(|(r, _)| Event::RouteAdded(r)),
        RTM_DELROUTE => parse_route(p)?.map(|(r, _)| Event::RouteRemoved(r)),
        RTM_NEWNEIGH => parse_neigh(p)?.map(Event::Neigh),
        RTM_DELNEIGH => parse_neigh(p)?.map(Event::NeighRemoved),
        _ => None,
    })
}

/// Everything the stack needs about one interface, in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceSnapshot {
    /// The interface.
    pub link: LinkInfo,
    /// Its first (primary) IPv4 address.
    pub addr: Option<AddrInfo>,
    /// The gateway of the default route (dst 0/0) out of this interface
    /// with the lowest metric (the first of equals).
    pub gateway: Option<Ipv4Addr>,
    /// Its neighbours usable for sending ([`NeighInfo::is_valid`]).
    pub neighbours: Vec<NeighInfo>,
}

/// Reads interface `ifname` in the calling thread's network namespace.
pub fn snapshot(ifname: &str) -> Result<IfaceSnapshot, NetlinkError> {
    let mut nl = Netlink::open()?;
    let link = nl.link_by_name(ifname)?;
    let ifindex = link.ifindex;
    let addr = nl.addrs(ifindex)?.into_iter().next();
    let gateway = nl
        .routes()?
        .into_iter()
        .find(|r| r.dst.is_unspecified() && r.prefix_len == 0 && r.oif == ifindex)
        .and_then(|r| r.gateway);
    let mut neighbours = nl.neighbours(ifindex)?;
    neighbours.retain(NeighInfo::is_valid);
    Ok(IfaceSnapshot {
        link,
        addr,
        gateway,
        neighbours,
    })
}

// ---- Parsing. Each function takes a message's payload (after nlmsghdr).

/// A link (RTM_NEWLINK/RTM_DELLINK); None for other families' link
/// messages (AF_BRIDGE port notifications).
fn parse_link(p: &[u8]) -> Result<Option<LinkInfo>, NetlinkError> {
    let h = p
        .get(..IFINFOMSG_LEN)
        .ok_or(NetlinkError::Malformed("short ifinfomsg"))?;
    if h[0] != AF_UNSPEC {
        return Ok(None);
    }
    let flags = ne_u32(h, 8).unwrap_or(0);
    let mut link = LinkInfo {
        ifindex: ne_u32(h, 4).unwrap_or(0),
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        up: flags & IFF_UP != 0,
        rx_queues: 1,
        tx_queues: 1,
    };
    for a in Attrs(&p[IFINFOMSG_LEN..]) {
        let (kind, v) = a?;
        match kind {
            IFLA_IFNAME => {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                link.name = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            IFLA_ADDRESS => link.mac = v.try_into().unwrap_or([0; 6]),
            IFLA_MTU => link.mtu = attr_u32(v)?,
            IFLA_NUM_RX_QUEUES => link.rx_queues = attr_u32(v)?.max(1),
            IFLA_NUM_TX_QUEUES => link.tx_queues = attr_u32(v)?.max(1),
            _ => {}
        }
    }
    Ok(Some(link))
}

/// An address (RTM_NEWADDR/RTM_DELADDR); None if not IPv4.
fn parse_addr(p: &[u8]) -> Result<Option<AddrInfo>, NetlinkError> {
    let h = p
        .get(..IFADDRMSG_LEN)
        .ok_or(NetlinkError::Malformed("short ifaddrmsg"))?;
    if h[0] != AF_INET {
        return Ok(None);
    }
    if h[1] > 32 {
        return Err(NetlinkError::Malformed("prefix longer than 32"));
    }
    let (mut local, mut address) = (None, None);
    for a in Attrs(&p[IFADDRMSG_LEN..]) {
        match a? {
            (IFA_LOCAL, v) => local = Some(attr_ipv4(v)?),
            (IFA_ADDRESS, v) => address = Some(attr_ipv4(v)?),
            _ => {}
        }
    }
    let addr = local.or(address).ok_or(NetlinkError::Malformed(
        "address message without an address",
    ))?;
    Ok(Some(AddrInfo {
        ifindex: ne_u32(h, 4).unwrap_or(0),
        addr,
        prefix_len: h[1],
    }))
}

/// A route and its metric (RTM_NEWROUTE/RTM_DELROUTE); None unless an IPv4
/// unicast route of the main table.
fn parse_route(p: &[u8]) -> Result<Option<(RouteInfo, u32)>, NetlinkError> {
    let h = p
        .get(..RTMSG_LEN)
        .ok_or(NetlinkError::Malformed("short rtmsg"))?;
    let (family, dst_len, table, kind) = (h[0], h[1], h[4], h[7]);
    let flags = ne_u32(h, 8).unwrap_or(0);
    if family != AF_INET || kind != RTN_UNICAST || flags & RTM_F_CLONED != 0 {
        return Ok(None);
    }
    if dst_len > 32 {
        return Err(NetlinkError::Malformed("prefix longer than 32"));
    }
    let mut table = u32::from(table);
    let (mut dst, mut gateway, mut oif, mut metric) = (Ipv4Addr::UNSPECIFIED, None, None, 0);
    let (mut hop_gateway, mut hop_oif) = (None, None);
    for a in Attrs(&p[RTMSG_LEN..]) {
        let (kind, v) = a?;
        match kind {
            RTA_DST => dst = attr_ipv4(v)?,
            RTA_GATEWAY => gateway = Some(attr_ipv4(v)?),
            RTA_OIF => oif = Some(attr_u32(v)?),
            RTA_PRIORITY => metric = attr_u32(v)?,
            RTA_TABLE => table = attr_u32(v)?,
            RTA_MULTIPATH => {
                // The first rtnexthop {len u16, flags u8, hops u8, ifindex}
                // and its attributes.
                let len = ne_u16(v, 0).map_or(0, usize::from);
                if len < RTNEXTHOP_LEN || len > v.len() {
                    return Err(NetlinkError::Malformed("bad rtnexthop length"));
                }
                hop_oif = ne_u32(v, 4);
                for a in Attrs(&v[RTNEXTHOP_LEN..len]) {
                    if let (RTA_GATEWAY, g) = a? {
                        hop_gateway = Some(attr_ipv4(g)?);
                    }
                }
            }
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return Ok(None);
    }
    let route = RouteInfo {
        dst,
        prefix_len: dst_len,
        gateway: gateway.or(hop_gateway),
        oif: oif.or(hop_oif).unwrap_or(0),
    };
    Ok(Some((route, metric)))
}

/// A neighbour (RTM_NEWNEIGH/RTM_DELNEIGH); None if not IPv4.
fn parse_neigh(p: &[u8]) -> Result<Option<NeighInfo>, NetlinkError> {
    let h = p
        .get(..NDMSG_LEN)
        .ok_or(NetlinkError::Malformed("short ndmsg"))?;
    if h[0] != AF_INET {
        return Ok(None);
    }
    let (mut addr, mut mac) = (None, None);
    for a in Attrs(&p[NDMSG_LEN..]) {
        match a? {
            (NDA_DST, v) => addr = Some(attr_ipv4(v)?),
            (NDA_LLADDR, v) => mac = <[u8; 6]>::try_from(v).ok(),
            _ => {}
        }
    }
    let addr = addr.ok_or(NetlinkError::Malformed("neighbour without an address"))?;
    Ok(Some(NeighInfo {
        ifindex: ne_u32(h, 4).unwrap_or(0),
        addr,
        mac,
        state: ne_u16(h, 8).unwrap_or(0),
    }))
}

/// One netlink message: its header fields and payload.
#[derive(Debug, Clone, Copy)]
struct Msg<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of a datagram; a bad length ends it with an error.
struct Msgs<'a>(&'a [u8]);

impl<'a> Iterator for Msgs<'a> {
    type Item = Result<Msg<'a>, NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = std::mem::take(&mut self.0);
        if buf.is_empty() {
            return None;
        }
        let len = ne_u32(buf, 0).map_or(0, |l| l as usize);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(NetlinkError::Malformed("bad message length")));
        }
        self.0 = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(Msg {
            kind: ne_u16(buf, 4)?,
            flags: ne_u16(buf, 6)?,
            seq: ne_u32(buf, 8)?,
            payload: &buf[NLMSG_HDRLEN..len],
        }))
    }
}

/// The attributes (type, value) of a message; a bad length ends them with
/// an error.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = std::mem::take(&mut self.0);
        if buf.is_empty() {
            return None;
        }
        let len = ne_u16(buf, 0).map_or(0, usize::from);
        if len < 4 || len > buf.len() {
            return Some(Err(NetlinkError::Malformed("bad attribute length")));
        }
        self.0 = buf.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ne_u16(buf, 2)? & NLA_TYPE_MASK, &buf[4..len])))
    }
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn ne_i32(b: &[u8], at: usize) -> Option<i32> {
    ne_u32(b, at).map(|v| v as i32)
}

fn attr_u32(v: &[u8]) -> Result<u32, NetlinkError> {
    Ok(u32::from_ne_bytes(v.try_into().map_err(|_| {
        NetlinkError::Malformed("u32 attribute not 4 bytes")
    })?))
}

fn attr_ipv4(v: &[u8]) -> Result<Ipv4Addr, NetlinkError> {
    let o: [u8; 4] = v
        .try_into()
        .map_err(|_| NetlinkError::Malformed("IPv4 address not 4 bytes"))?;
    Ok(Ipv4Addr::from(o))
}

// ---- Building requests.

/// A netlink message: nlmsghdr (the port id is the kernel's to fill) and
/// `body`, padded to 4 bytes.
fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + body.len()).unwrap_or(u32::MAX);
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m.resize(align4(m.len()), 0);
    m
}

/// A message body: a fixed header and attributes, each padded to 4 bytes.
fn body(fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = fixed.to_vec();
    for &(kind, value) in attrs {
        b.resize(align4(b.len()), 0);
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
    }
    b.resize(align4(b.len()), 0);
    b
}

/// ifinfomsg {family, pad, type u16, index i32, flags u32, change u32}.
fn ifinfomsg(ifindex: u32) -> [u8; IFINFOMSG_LEN] {
    let mut h = [0; IFINFOMSG_LEN];
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h
}

/// ifaddrmsg {family, prefixlen, flags, scope, index u32}, IPv4.
fn ifaddrmsg(ifindex: u32) -> [u8; IFADDRMSG_LEN] {
    let mut h = [AF_INET, 0, 0, 0, 0, 0, 0, 0];
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h
}

/// rtmsg {family, dst_len, src_len, tos, table, protocol, scope, type,
/// flags u32}, IPv4, all tables (filtered on reading).
fn rtmsg() -> [u8; RTMSG_LEN] {
    let mut h = [0; RTMSG_LEN];
    h[0] = AF_INET;
    h
}

/// ndmsg {family, pad, pad u16, ifindex i32, state u16, flags, type}, IPv4.
fn ndmsg(ifindex: u32, state: u16, flags: u8) -> [u8; NDMSG_LEN] {
    let mut h = [0; NDMSG_LEN];
    h[0] = AF_INET;
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h[10] = flags;
    h
}

// ---- Sockets.

fn nl_socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call with constant arguments; no pointers.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn set_opt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the length passed, which the
    // kernel only reads during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's netlink address (port 0, no groups).
fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers, for which all zeros is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

/// Runs a system call returning a count or -1, again while interrupted.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn send_to_kernel(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    let addr = kernel_addr();
    // SAFETY: `msg` is valid for reads of its length and `addr` is a valid
    // sockaddr_nl of the length passed.
    let n = retry(|| unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    if n != msg.len() {
        return Err(io::Error::other("short netlink send"));
    }
    Ok(())
}

/// Receives one datagram into `buf`, first growing `buf` to its size.
/// Returns its length, or None if it came from another process than the
/// kernel (it is dropped).
fn recv_datagram(fd: RawFd, buf: &mut Vec<u8>, flags: libc::c_int) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length; with MSG_PEEK the
    // datagram stays queued, and MSG_TRUNC returns its real size.
    let size = retry(|| unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_PEEK | libc::MSG_TRUNC,
        )
    })?;
    if size > buf.len() {
        buf.resize(size, 0);
    }
    let mut from = kernel_addr();
    let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of its length, `from` for a
    // sockaddr_nl of `from_len` bytes.
    let n = retry(|| unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut from_len,
        )
    })?;
    Ok((from.nl_pid == 0).then_some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_payload() -> Vec<u8> {
        let mut h = ifinfomsg(7);
        h[8..12].copy_from_slice(&(IFF_UP | 0x40).to_ne_bytes());
        body(
            &h,
            &[
                (IFLA_IFNAME, b"eth0\0"),
                (IFLA_MTU, &1500u32.to_ne_bytes()),
                (IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9]),
                (IFLA_NUM_RX_QUEUES, &4u32.to_ne_bytes()),
                (0x8000 | 26, &[8, 0, 1, 0, 0, 0, 0, 0]), // a nested attribute
            ],
        )
    }

    /// Every prefix and some corruptions of `p` parse without panicking.
    fn never_panics(p: &[u8], parse: fn(&[u8]) -> Result<(), NetlinkError>) {
        for n in 0..=p.len() {
            let _ = parse(&p[..n]);
        }
        for i in 0..p.len() {
            for b in [0, 1, 3, 4, 0xff] {
                let mut q = p.to_vec();
                q[i] = b;
                let _ = parse(&q);
            }
        }
    }

    #[test]
    fn link_parses() {
        let l = parse_link(&link_payload()).unwrap().unwrap();
        assert_eq!(
            l,
            LinkInfo {
                ifindex: 7,
                name: "eth0".into(),
                mac: [2, 0, 0, 0, 0, 9],
                mtu: 1500,
                up: true,
                rx_queues: 4,
                tx_queues: 1,
            }
        );
        // A bridge port's notification is not the link itself.
        let mut p = link_payload();
        p[0] = libc::AF_BRIDGE as u8;
        assert_eq!(parse_link(&p).unwrap(), None);
        // A 4-byte hardware address (a tunnel) is no MAC.
        let p = body(&ifinfomsg(3), &[(IFLA_ADDRESS, &[1, 2, 3, 4])]);
        assert_eq!(parse_link(&p).unwrap().unwrap().mac, [0; 6]);
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        let p = link_payload();
        assert!(matches!(
            parse_link(&p[..10]),
            Err(NetlinkError::Malformed(_))
        ));
        // Cut inside an attribute: its length exceeds what is left.
        assert!(matches!(
            parse_link(&p[..p.len() - 6]),
            Err(NetlinkError::Malformed(_))
        ));
        // An attribute length below its own header.
        let mut q = p.clone();
        q[IFINFOMSG_LEN] = 2;
        assert!(parse_link(&q).is_err());
        // A 2-byte MTU.
        let q = body(&ifinfomsg(1), &[(IFLA_MTU, &[1, 2])]);
        assert!(parse_link(&q).is_err());
        never_panics(&p, |p| parse_link(p).map(drop));
    }

    #[test]
    fn addr_prefers_local() {
        let mut h = ifaddrmsg(5);
        h[1] = 24;
        let p = body(
            &h,
            &[
                (IFA_ADDRESS, &[198, 18, 0, 9]),
                (IFA_LOCAL, &[198, 18, 0, 2]),
            ],
        );
        let a = parse_addr(&p).unwrap().unwrap();
        assert_eq!(
            (a.ifindex, a.addr, a.prefix_len),
            (5, Ipv4Addr::new(198, 18, 0, 2), 24)
        );
        let p = body(&h, &[(IFA_ADDRESS, &[198, 18, 0, 9])]);
        assert_eq!(
            parse_addr(&p).unwrap().unwrap().addr,
            Ipv4Addr::new(198, 18, 0, 9)
        );
        assert!(parse_addr(&body(&h, &[])).is_err());
        h[0] = libc::AF_INET6 as u8;
        assert_eq!(
            parse_addr(&body(&h, &[(IFA_ADDRESS, &[0; 16])])).unwrap(),
            None
        );
        h[0] = AF_INET;
        h[1] = 33;
        assert!(parse_addr(&body(&h, &[(IFA_ADDRESS, &[1, 2, 3, 4])])).is_err());
        h[1] = 24;
        never_panics(&body(&h, &[(IFA_LOCAL, &[1, 2, 3, 4])]), |p| {
            parse_addr(p).map(drop)
        });
    }

    fn route_header(dst_len: u8, table: u8, kind: u8) -> [u8; RTMSG_LEN] {
        let mut h = rtmsg();
        (h[1], h[4], h[7]) = (dst_len, table, kind);
        h
    }

    #[test]
    fn routes_main_unicast_only() {
        let gw: &[u8] = &[198, 18, 0, 1];
        let h = route_header(0, RT_TABLE_MAIN as u8, RTN_UNICAST);
        let p = body(
            &h,
            &[
                (RTA_GATEWAY, gw),
                (RTA_OIF, &3u32.to_ne_bytes()),
                (RTA_PRIORITY, &100u32.to_ne_bytes()),
            ],
        );
        let (r, metric) = parse_route(&p).unwrap().unwrap();
        assert_eq!(
            r,
            RouteInfo {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(Ipv4Addr::new(198, 18, 0, 1)),
                oif: 3,
            }
        );
        assert_eq!(metric, 100);
        // The table id in RTA_TABLE wins over rtm_table (which is 8 bits).
        let h = route_header(24, 252, RTN_UNICAST);
        let p = body(
            &h,
            &[
                (RTA_DST, &[198, 18, 1, 0]),
                (RTA_TABLE, &254u32.to_ne_bytes()),
            ],
        );
        let (r, _) = parse_route(&p).unwrap().unwrap();
        assert_eq!(
            (r.dst, r.prefix_len, r.gateway),
            (Ipv4Addr::new(198, 18, 1, 0), 24, None)
        );
        let p = body(&h, &[(RTA_TABLE, &1000u32.to_ne_bytes())]);
        assert_eq!(parse_route(&p).unwrap(), None);
        // Local table, and a local route in main: not ours.
        assert_eq!(parse_route(&route_header(32, 255, 2)).unwrap(), None);
        assert_eq!(parse_route(&route_header(32, 254, 2)).unwrap(), None);
        assert!(parse_route(&route_header(40, 254, 1)).is_err());
        never_panics(&p, |p| parse_route(p).map(drop));
    }

    #[test]
    fn multipath_takes_the_first_hop() {
        let hop_attrs = body(&[], &[(RTA_GATEWAY, &[198, 18, 0, 1])]);
        let mut hops = Vec::new();
        for ifindex in [4u32, 5] {
            hops.extend_from_slice(&((RTNEXTHOP_LEN + hop_attrs.len()) as u16).to_ne_bytes());
            hops.extend_from_slice(&[0, 0]);
            hops.extend_from_slice(&ifindex.to_ne_bytes());
            hops.extend_from_slice(&hop_attrs);
        }
        let p = body(
            &route_header(0, 254, RTN_UNICAST),
            &[(RTA_MULTIPATH, &hops)],
        );
        let (r, _) = parse_route(&p).unwrap().unwrap();
        assert_eq!((r.oif, r.gateway), (4, Some(Ipv4Addr::new(198, 18, 0, 1))));
        never_panics(&p, |p| parse_route(p).map(drop));
        let p = body(
            &route_header(0, 254, RTN_UNICAST),
            &[(RTA_MULTIPATH, &[40, 0, 0, 0])],
        );
        assert!(parse_route(&p).is_err());
    }

    #[test]
    fn neighbours_and_validity() {
        let mac = [2, 0, 0, 0, 0, 1];
        let p = body(
            &ndmsg(6, NUD_STALE, 0),
            &[(NDA_DST, &[198, 18, 0, 1]), (NDA_LLADDR, &mac)],
        );
        let n = parse_neigh(&p).unwrap().unwrap();
        assert_eq!(
            n,
            NeighInfo {
                ifindex: 6,
                addr: Ipv4Addr::new(198, 18, 0, 1),
                mac: Some(mac),
                state: NUD_STALE
            }
        );
        assert!(n.is_valid());
        for state in [NUD_INCOMPLETE, NUD_FAILED, 0] {
            assert!(!NeighInfo { state, ..n }.is_valid());
        }
        assert!(!NeighInfo { mac: None, ..n }.is_valid());
        assert!(NeighInfo {
            state: NUD_PERMANENT,
            ..n
        }
        .is_valid());
        let p = body(&ndmsg(6, NUD_INCOMPLETE, 0), &[(NDA_DST, &[198, 18, 0, 1])]);
        assert_eq!(parse_neigh(&p).unwrap().unwrap().mac, None);
        assert!(parse_neigh(&body(&ndmsg(6, 0, 0), &[])).is_err());
        never_panics(&p, |p| parse_neigh(p).map(drop));
    }

    #[test]
    fn replies_end_at_ack_or_done_and_skip_other_sequences() {
        let link = link_payload();
        let mut dgram = message(RTM_NEWLINK, 0, 9, &link); // stale
        dgram.extend(message(RTM_NEWLINK, 0, 10, &link));
        let mut seen = 0;
        let mut intr = false;
        let mut count = |m: Msg<'_>| {
            assert_eq!(m.seq, 10);
            seen += 1;
            Ok(())
        };
        assert!(!process_reply(&dgram, 10, &mut intr, &mut count).unwrap());
        let done = message(NLMSG_DONE, NLM_F_DUMP_INTR, 10, &0i32.to_ne_bytes());
        assert!(process_reply(&done, 10, &mut intr, &mut count).unwrap());
        assert!(intr);
        let ack = message(NLMSG_ERROR, 0, 10, &[0; 20]);
        assert!(process_reply(&ack, 10, &mut intr, &mut count).unwrap());
        assert_eq!(seen, 1);
        let mut nak = (-libc::ENODEV).to_ne_bytes().to_vec();
        nak.extend([0; 16]);
        let nak = message(NLMSG_ERROR, 0, 10, &nak);
        let e = process_reply(&nak, 10, &mut intr, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, NetlinkError::Io(e) if e.raw_os_error() == Some(libc::ENODEV)));
        // An error for another request is not ours.
        assert!(!process_reply(&nak, 11, &mut intr, &mut |_| Ok(())).unwrap());
        let short = message(NLMSG_ERROR, 0, 10, &[]);
        assert!(process_reply(&short, 10, &mut intr, &mut |_| Ok(())).is_err());
        let bad_done = message(NLMSG_DONE, 0, 10, &(-libc::EINTR).to_ne_bytes());
        assert!(process_reply(&bad_done, 10, &mut intr, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn events_skip_the_malformed() {
        let neigh = body(
            &ndmsg(6, NUD_REACHABLE, 0),
            &[(NDA_DST, &[198, 18, 0, 1]), (NDA_LLADDR, &[2; 6])],
        );
        let mut dgram = message(RTM_NEWNEIGH, 0, 0, &neigh);
        dgram.extend(message(RTM_NEWNEIGH, 0, 0, &neigh[..5])); // short ndmsg: skipped
        dgram.extend(message(RTM_DELLINK, 0, 0, &link_payload()));
        dgram.extend(message(RTM_GETNEIGH, 0, 0, &neigh)); // not a change
        dgram.extend(message(RTM_DELNEIGH, 0, 0, &neigh));
        let mut out = Vec::new();
        assert_eq!(parse_events(&dgram, &mut out), 3);
        let n = parse_neigh(&neigh).unwrap().unwrap();
        assert_eq!(
            out,
            vec![
                Event::Neigh(n),
                Event::LinkRemoved(7),
                Event::NeighRemoved(n)
            ]
        );
        // A bad message length ends the datagram, keeping what came before.
        let mut bad = message(RTM_NEWNEIGH, 0, 0, &neigh);
        bad.extend([200, 0, 0, 0, 1, 2]);
        out.clear();
        assert_eq!(parse_events(&bad, &mut out), 1);
        for n in 0..dgram.len() {
            let _ = parse_events(&dgram[..n], &mut out);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 256];
        let mut out = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 256) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (x >> (i % 8 * 8)) as u8 ^ (i as u8).wrapping_mul(31);
            }
            // Plausible small lengths in the right places, often.
            buf[0] = len as u8;
            buf[1] = 0;
            buf[16] = (x >> 8) as u8 % 32;
            buf[17] = 0;
            let kind = RTM_NEWLINK + (x % 16) as u16;
            let _ = parse_event(kind, &buf[NLMSG_HDRLEN..len.max(NLMSG_HDRLEN)]);
            let _ = parse_events(&buf[..len], &mut out);
            let _ = process_reply(&buf[..len], 0, &mut false, &mut |_| Ok(()));
            out.clear();
        }
    }
}
