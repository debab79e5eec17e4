//! UDP sockets: the Rust API later wrapped by the BSD one (bind, connect,
//! send, send_to, recv_from, peek), and datagram delivery from the IPv4 layer.
//!
//! Every call is non-blocking: an empty queue gives [`SockError::WouldBlock`];
//! waiting is the caller's business (the NIC driver polls or sleeps). A
//! received datagram stays in its packet buffer until `recv_from` copies it
//! out, and the same buffer can be queued on several sockets (broadcast,
//! multicast).
//!
//! Multicast follows Linux: memberships with source filters per socket
//! (IP_ADD_MEMBERSHIP and friends, see [`crate::iface::mcast`] for the
//! stack-wide groups and IGMP), IP_MULTICAST_IF/TTL/LOOP/ALL, and
//! SO_REUSEADDR/SO_REUSEPORT port sharing with SO_REUSEPORT groups
//! spreading unicast datagrams by flow.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{
    bucket, filter_mode, flag, kind, mc_flag, Membership, SockError, SocketId, SocketSlot,
    EPHEMERAL_FIRST, EPHEMERAL_LAST, MAX_MEMBERSHIPS, MAX_SOURCES,
};
use crate::iface::ipv4::{OutOpts, DEFAULT_TTL};
use crate::pool::{BufId, PktQueue, BUF_SIZE, NIL};
use crate::stack::Core;
use crate::wire::{ipv4, udp as wudp};

/// Largest UDP payload in one IPv4 datagram.
pub const MAX_PAYLOAD: usize = 65507;

/// What [`Core::udp_recv_from`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes copied into the caller's buffer.
    pub copied: usize,
    /// Full length of the datagram (larger than `copied` if it was truncated).
    pub len: usize,
    /// Sender.
    pub from: SocketAddrV4,
}

/// A datagram delivered to a socket: where it came from and which bytes of
/// the buffer are payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Broadcast or multicast: every matching socket gets it.
    pub multi: bool,
}

/// A socket's IP_MULTICAST_* options, for getsockopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McastOpts {
    /// IP_MULTICAST_IF (0.0.0.0: the interface's address).
    pub interface: Ipv4Addr,
    /// IP_MULTICAST_TTL.
    pub ttl: u8,
    /// IP_MULTICAST_LOOP.
    pub loopback: bool,
    /// IP_MULTICAST_ALL.
    pub all: bool,
}

/// Hash of a flow's source, for picking a socket of an SO_REUSEPORT group
/// (stable per flow).
fn flow_hash(src: SocketAddrV4) -> u32 {
    let x = u64::from(u32::from(*src.ip())) << 16 | u64::from(src.port());
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

impl Core<'_> {
    fn slot(&self, s: SocketId) -> Result<&SocketSlot, SockError> {
        match self.sockets.get(s.index() as usize) {
            Some(slot) if slot.kind == kind::UDP && slot.incarnation == s.incarnation() => Ok(slot),
            _ => Err(SockError::BadSocket),
        }
    }

    fn slot_mut(&mut self, s: SocketId) -> Result<&mut SocketSlot, SockError> {
        match self.sockets.get_mut(s.index() as usize) {
            Some(slot) if slot.kind == kind::UDP && slot.incarnation == s.incarnation() => Ok(slot),
            _ => Err(SockError::BadSocket),
        }
    }

    /// Opens a UDP socket (unbound).
    pub fn udp_open(&mut self) -> Result<SocketId, SockError> {
        let i = self.alloc_slot(kind::UDP)?;
        Ok(SocketId::new(i, self.sockets[i as usize].incarnation))
    }

    /// Closes a socket, dropping any queued datagrams and its multicast
    /// memberships (a group's last one sends a leave, as Linux does).
    pub fn udp_close(&mut self, s: SocketId) -> Result<(), SockError> {
        self.slot(s)?;
        let groups: Vec<Ipv4Addr> = self.sockets[s.index() as usize]
            .mcast
            .memberships()
            .iter()
            .map(Membership::group)
            .collect();
        self.sockets[s.index() as usize].mcast.count = 0;
        for g in groups {
            self.mcast_unref(g);
            self.mcast_changed(g);
        }
        self.unhash_port(s.index(), kind::UDP);
        let slot = &mut self.sockets[s.index() as usize];
        let mut q = slot.rxq;
        slot.rxq = PktQueue::EMPTY;
        self.pool.purge(&mut q);
        self.free_slot(s.index());
        Ok(())
    }

    fn hash_insert(&mut self, s: SocketId) {
        let port = self.sockets[s.index() as usize].local_port;
        let b = bucket(self.hash.len(), kind::UDP, port);
        self.sockets[s.index() as usize].next = self.hash[b];
        self.hash[b] = s.index();
    }

    /// Iterates the sockets bound to a UDP port.
    fn bound_on(&self, port: u16) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.hash[bucket(self.hash.len(), kind::UDP, port)];
        std::iter::from_fn(move || {
            while cur != NIL {
                let i = cur;
                let slot = &self.sockets[i as usize];
                cur = slot.next;
                if slot.kind == kind::UDP && slot.local_port == port {
                    return Some(i);
                }
            }
            None
        })
    }

    /// Whether binding (`ip`, `port`) with socket flags `flags` clashes with
    /// a bound socket: overlapping addresses clash unless both sockets have
    /// SO_REUSEADDR or both have SO_REUSEPORT (Linux's udp_lib_lport_inuse).
    fn port_conflicts(&self, ip: Ipv4Addr, port: u16, flags: u16) -> bool {
        self.bound_on(port).any(|i| {
            let o = &self.sockets[i as usize];
            let l = Ipv4Addr::from(o.local_ip);
            let overlap = l.is_unspecified() || ip.is_unspecified() || l == ip;
            let shared = flags & o.flags & (flag::REUSEADDR | flag::REUSEPORT);
            overlap && shared == 0
        })
    }

    fn pick_ephemeral(&mut self, ip: Ipv4Addr) -> Result<u16, SockError> {
        let range = u32::from(EPHEMERAL_LAST - EPHEMERAL_FIRST) + 1;
        for _ in 0..range {
            let p = self.st.ephemeral_next;
            self.st.ephemeral_next = if p >= EPHEMERAL_LAST {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            // Ephemeral ports are never shared.
            if !self.port_conflicts(ip, p, 0) {
                return Ok(p);
            }
        }
        Err(SockError::NoPorts)
    }

    /// Whether a socket of this stack would receive a datagram sent to `addr`.
    pub fn udp_port_bound(&self, addr: SocketAddrV4) -> bool {
        self.bound_on(addr.port()).any(|i| {
            let l = Ipv4Addr::from(self.sockets[i as usize].local_ip);
            l.is_unspecified() || l == *addr.ip()
        })
    }

    /// Binds to a local address. Port 0 picks an ephemeral port; address
    /// 0.0.0.0 receives on every address of the stack. A port in use is
    /// shared when both sockets set SO_REUSEADDR or both SO_REUSEPORT.
    pub fn udp_bind(&mut self, s: SocketId, addr: SocketAddrV4) -> Result<SocketAddrV4, SockError> {
        let flags = self.slot(s)?.flags;
        if flags & flag::BOUND != 0 {
            return Err(SockError::Invalid);
        }
        let ip = *addr.ip();
        let iface = self.iface();
        // A multicast group may be bound to receive only that group, as in Linux.
        if !ip.is_unspecified()
            && !iface.is_local(ip)
            && !iface.is_broadcast(ip)
            && !ip.is_multicast()
        {
            return Err(SockError::AddrNotAvailable);
        }
        let (port, eph) = if addr.port() == 0 {
            (self.pick_ephemeral(ip)?, true)
        } else if self.port_conflicts(ip, addr.port(), flags) {
            return Err(SockError::AddrInUse);
        } else {
            (addr.port(), false)
        };
        self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        let slot = self.slot_mut(s)?;
        slot.begin_change();
        slot.local_ip = ip.octets();
        slot.local_port = port;
        slot.flags |= flag::BOUND | if eph { flag::EPHEMERAL } else { 0 };
        slot.end_change();
        self.hash_insert(s);
        Ok(SocketAddrV4::new(ip, port))
    }

    /// Sets the default destination and filters received datagrams to it.
    /// Binds an ephemeral port first if needed.
    pub fn udp_connect(
        &mut self,
        s: SocketId,
        to: SocketAddrV4,
    ) -> Result<SocketAddrV4, SockError> {
        let flags = self.slot(s)?.flags;
        if to.port() == 0 {
            return Err(SockError::Invalid);
        }
        let iface = self.iface();
        if iface.is_broadcast(*to.ip()) && flags & flag::BROADCAST == 0 {
            return Err(SockError::Access);
        }
        self.route(*to.ip())
            .map_err(|_| SockError::NetUnreachable)?;
        if flags & flag::BOUND == 0 {
            self.udp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        let src = self.source_for(*to.ip());
        let slot = self.slot_mut(s)?;
        slot.begin_change();
        if Ipv4Addr::from(slot.local_ip).is_unspecified() {
            slot.local_ip = src.octets();
        }
        slot.remote_ip = to.ip().octets();
        slot.remote_port = to.port();
        slot.flags |= flag::CONNECTED;
        slot.so_error = 0;
        slot.end_change();
        Ok(slot.local())
    }

    /// Removes the default destination (connect to AF_UNSPEC).
    pub fn udp_disconnect(&mut self, s: SocketId) -> Result<(), SockError> {
        let slot = self.slot_mut(s)?;
        slot.begin_change();
        slot.remote_ip = [0; 4];
        slot.remote_port = 0;
        slot.flags &= !flag::CONNECTED;
        slot.end_change();
        Ok(())
    }

    /// SO_BROADCAST.
    pub fn udp_set_broadcast(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let slot = self.slot_mut(s)?;
        if on {
            slot.flags |= flag::BROADCAST;
        } else {
            slot.flags &= !flag::BROADCAST;
        }
        Ok(())
    }

    /// SO_REUSEADDR: the next bind may share a port with other SO_REUSEADDR
    /// sockets (multicast receivers on one port do this).
    pub fn udp_set_reuseaddr(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let slot = self.slot_mut(s)?;
        if on {
            slot.flags |= flag::REUSEADDR;
        } else {
            slot.flags &= !flag::REUSEADDR;
        }
        Ok(())
    }

    /// SO_REUSEPORT: the next bind may share its address and port with
    /// other SO_REUSEPORT sockets; unicast datagrams are spread over them
    /// by a hash of the sender (stable per flow).
    pub fn udp_set_reuseport(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let slot = self.slot_mut(s)?;
        if on {
            slot.flags |= flag::REUSEPORT;
        } else {
            slot.flags &= !flag::REUSEPORT;
        }
        Ok(())
    }

    /// Whether `a` names the stack's interface for a multicast call
    /// (0.0.0.0: the default, which is the same one).
    fn mc_iface_ok(&self, a: Ipv4Addr) -> bool {
        a.is_unspecified() || self.iface().is_local(a)
    }

    /// Adds a membership of `group` in `mode` with no sources (Linux's
    /// ip_mc_join_group_ssm).
    fn mc_join(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        iface_addr: Ipv4Addr,
        mode: u8,
    ) -> Result<(), SockError> {
        let slot = self.slot(s)?;
        if !group.is_multicast() {
            return Err(SockError::Invalid);
        }
        if !self.mc_iface_ok(iface_addr) {
            return Err(SockError::NoDevice);
        }
        if slot.mcast.find(group).is_some() {
            return Err(SockError::AddrInUse);
        }
        if usize::from(slot.mcast.count) >= MAX_MEMBERSHIPS {
            return Err(SockError::NoBuffers);
        }
        self.mcast_ref(group)?;
        let mc = &mut self.sockets[s.index() as usize].mcast;
        mc.memberships[usize::from(mc.count)] = Membership {
            group: group.octets(),
            iface: iface_addr.octets(),
            mode,
            nsrc: 0,
            _pad: [0; 2],
            sources: [[0; 4]; MAX_SOURCES],
        };
        mc.count += 1;
        self.mcast_changed(group);
        Ok(())
    }

    /// IP_ADD_MEMBERSHIP: receive `group` from any source (EXCLUDE {}) on
    /// the interface of `iface_addr` (0.0.0.0: the default). Errors as
    /// Linux: `Invalid` for a non-multicast group, `AddrInUse` if already
    /// joined, `NoBuffers` past [`MAX_MEMBERSHIPS`], `NoDevice` for an
    /// address that is not the stack's.
    pub fn udp_join_group(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        iface_addr: Ipv4Addr,
    ) -> Result<(), SockError> {
        self.mc_join(s, group, iface_addr, filter_mode::EXCLUDE)
    }

    /// IP_DROP_MEMBERSHIP: leaves `group` whatever its filter;
    /// `AddrNotAvailable` if the socket has not joined it.
    pub fn udp_leave_group(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        iface_addr: Ipv4Addr,
    ) -> Result<(), SockError> {
        let slot = self.slot(s)?;
        let Some(i) = slot.mcast.find(group) else {
            return Err(SockError::AddrNotAvailable);
        };
        if !self.mc_iface_ok(iface_addr) {
            return Err(SockError::AddrNotAvailable);
        }
        self.sockets[s.index() as usize].mcast.remove(i);
        self.mcast_unref(group);
        self.mcast_changed(group);
        Ok(())
    }

    /// Adds (`add`) or removes a source of the filter of `group` in mode
    /// `omode` (Linux's ip_mc_source): the group must be joined; a filter
    /// with sources keeps its mode (`Invalid`), an empty one switches.
    fn mc_source(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        source: Ipv4Addr,
        iface_addr: Ipv4Addr,
        add: bool,
        omode: u8,
    ) -> Result<(), SockError> {
        if !group.is_multicast() {
            return Err(SockError::Invalid);
        }
        if !self.mc_iface_ok(iface_addr) {
            return Err(SockError::NoDevice);
        }
        let Some(i) = self.slot(s)?.mcast.find(group) else {
            return Err(SockError::Invalid);
        };
        let m = &mut self.sockets[s.index() as usize].mcast.memberships[i];
        let mut changed = false;
        if m.nsrc > 0 && m.mode != omode {
            return Err(SockError::Invalid);
        }
        if m.mode != omode {
            m.mode = omode;
            changed = true;
        }
        let n = usize::from(m.nsrc);
        let at = m.sources[..n].iter().position(|a| *a == source.octets());
        let res = if !add {
            match at {
                None => Err(SockError::AddrNotAvailable),
                // (INCLUDE, {}) is leaving the group.
                Some(_) if n == 1 && omode == filter_mode::INCLUDE => {
                    return self.udp_leave_group(s, group, iface_addr);
                }
                Some(j) => {
                    m.sources.copy_within(j + 1..n, j);
                    m.nsrc -= 1;
                    changed = true;
                    Ok(())
                }
            }
        } else if n >= MAX_SOURCES {
            Err(SockError::NoBuffers)
        } else if at.is_some() {
            Err(SockError::AddrNotAvailable)
        } else {
            m.sources[n] = source.octets();
            m.nsrc += 1;
            changed = true;
            Ok(())
        };
        if changed {
            self.mcast_changed(group);
        }
        res
    }

    /// IP_ADD_SOURCE_MEMBERSHIP: receive `group` from `source` (INCLUDE
    /// mode), joining the group if needed. A group joined for any source
    /// with no blocked sources switches to INCLUDE {source}.
    pub fn udp_join_source(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        source: Ipv4Addr,
        iface_addr: Ipv4Addr,
    ) -> Result<(), SockError> {
        match self.mc_join(s, group, iface_addr, filter_mode::INCLUDE) {
            Ok(()) | Err(SockError::AddrInUse) => {}
            Err(e) => return Err(e),
        }
        self.mc_source(s, group, source, iface_addr, true, filter_mode::INCLUDE)
    }

    /// IP_DROP_SOURCE_MEMBERSHIP: stop receiving `group` from `source`;
    /// dropping the last source leaves the group.
    pub fn udp_leave_source(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        source: Ipv4Addr,
        iface_addr: Ipv4Addr,
    ) -> Result<(), SockError> {
        self.mc_source(s, group, source, iface_addr, false, filter_mode::INCLUDE)
    }

    /// IP_BLOCK_SOURCE: a group joined for any source stops receiving
    /// from `source` (EXCLUDE mode).
    pub fn udp_block_source(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        source: Ipv4Addr,
        iface_addr: Ipv4Addr,
    ) -> Result<(), SockError> {
        self.mc_source(s, group, source, iface_addr, true, filter_mode::EXCLUDE)
    }

    /// IP_UNBLOCK_SOURCE: receives from a blocked `source` again.
    pub fn udp_unblock_source(
        &mut self,
        s: SocketId,
        group: Ipv4Addr,
        source: Ipv4Addr,
        iface_addr: Ipv4Addr,
    ) -> Result<(), SockError> {
        self.mc_source(s, group, source, iface_addr, false, filter_mode::EXCLUDE)
    }

    /// The socket's memberships (group, filter mode, sources), for
    /// getsockopt(IP_MSFILTER) and observers.
    pub fn udp_memberships(&self, s: SocketId) -> Result<Vec<Membership>, SockError> {
        Ok(self.slot(s)?.mcast.memberships().to_vec())
    }

    /// IP_MULTICAST_IF: source address of multicast sends; 0.0.0.0 resets
    /// to the interface's. `AddrNotAvailable` for an address not the stack's.
    pub fn udp_set_multicast_if(&mut self, s: SocketId, addr: Ipv4Addr) -> Result<(), SockError> {
        self.slot(s)?;
        if !self.mc_iface_ok(addr) {
            return Err(SockError::AddrNotAvailable);
        }
        self.slot_mut(s)?.mcast.if_addr = addr.octets();
        Ok(())
    }

    /// IP_MULTICAST_TTL (default 1; 0 keeps datagrams on the host).
    pub fn udp_set_multicast_ttl(&mut self, s: SocketId, ttl: u8) -> Result<(), SockError> {
        self.slot_mut(s)?.mcast.ttl = ttl;
        Ok(())
    }

    /// IP_MULTICAST_LOOP (default on): multicast sent to a group a socket of
    /// this stack joined is delivered to it too.
    pub fn udp_set_multicast_loop(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let mc = &mut self.slot_mut(s)?.mcast;
        if on {
            mc.flags &= !mc_flag::NO_LOOP;
        } else {
            mc.flags |= mc_flag::NO_LOOP;
        }
        Ok(())
    }

    /// IP_MULTICAST_ALL (default on): a socket bound to the port receives
    /// multicast to any group the stack joined, not only its own groups.
    pub fn udp_set_multicast_all(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let mc = &mut self.slot_mut(s)?.mcast;
        if on {
            mc.flags &= !mc_flag::NO_ALL;
        } else {
            mc.flags |= mc_flag::NO_ALL;
        }
        Ok(())
    }

    /// The IP_MULTICAST_* options, for getsockopt.
    pub fn udp_multicast_opts(&self, s: SocketId) -> Result<McastOpts, SockError> {
        let mc = &self.slot(s)?.mcast;
        Ok(McastOpts {
            interface: Ipv4Addr::from(mc.if_addr),
            ttl: mc.ttl,
            loopback: mc.flags & mc_flag::NO_LOOP == 0,
            all: mc.flags & mc_flag::NO_ALL == 0,
        })
    }

    /// SO_RCVBUF: the receive queue's limit in bytes (each datagram is charged
    /// one packet buffer, as Linux charges an skb's truesize).
    pub fn udp_set_rcvbuf(&mut self, s: SocketId, bytes: u32) -> Result<(), SockError> {
        self.slot_mut(s)?.rcvbuf = bytes.max(BUF_SIZE as u32);
        Ok(())
    }

    /// Local address.
    pub fn udp_local_addr(&self, s: SocketId) -> Result<SocketAddrV4, SockError> {
        Ok(self.slot(s)?.local())
    }

    /// Remote address of a connected socket.
    pub fn udp_peer_addr(&self, s: SocketId) -> Result<SocketAddrV4, SockError> {
        let slot = self.slot(s)?;
        if slot.flags & flag::CONNECTED == 0 {
            return Err(SockError::NotConnected);
        }
        Ok(slot.remote())
    }

    /// Takes the pending error (SO_ERROR), if any.
    pub fn udp_take_error(&mut self, s: SocketId) -> Result<Option<SockError>, SockError> {
        let slot = self.slot_mut(s)?;
        let e = std::mem::take(&mut slot.so_error);
        Ok((e != 0).then(|| SockError::from_errno(e)))
    }

    /// Length of the next datagram and number queued (FIONREAD and friends).
    pub fn udp_rx_pending(&self, s: SocketId) -> Result<(Option<usize>, u32), SockError> {
        let slot = self.slot(s)?;
        let next = self
            .pool
            .peek(&slot.rxq)
            .map(|b| usize::from(self.pool.meta(b).pay_len));
        Ok((next, slot.rxq.count))
    }

    /// Whether a receive call would not block (data or a pending error).
    pub fn udp_readable(&self, s: SocketId) -> bool {
        self.slot(s)
            .is_ok_and(|slot| !slot.rxq.is_empty() || slot.so_error != 0)
    }

    /// Per-socket counters.
    pub fn udp_counters(&self, s: SocketId) -> Result<&crate::counters::SocketCounters, SockError> {
        Ok(&self.slot(s)?.counters)
    }

    /// Sends to the connected peer.
    pub fn udp_send(&mut self, s: SocketId, data: &[u8]) -> Result<usize, SockError> {
        let slot = self.slot(s)?;
        if slot.flags & flag::CONNECTED == 0 {
            return Err(SockError::NotConnected);
        }
        let to = slot.remote();
        self.udp_send_to(s, data, to)
    }

    /// Sends one datagram. Binds an ephemeral port first if needed. Datagrams
    /// larger than the MTU are refused with `MessageTooLong` (rbypass does not
    /// fragment).
    pub fn udp_send_to(
        &mut self,
        s: SocketId,
        data: &[u8],
        to: SocketAddrV4,
    ) -> Result<usize, SockError> {
        let slot = self.slot_mut(s)?;
        if slot.so_error != 0 {
            return Err(SockError::from_errno(std::mem::take(&mut slot.so_error)));
        }
        let flags = slot.flags;
        if to.port() == 0 {
            return Err(SockError::Invalid);
        }
        let iface = self.iface();
        if data.len() > MAX_PAYLOAD {
            return Err(SockError::MessageTooLong);
        }
        if data.len() > iface.max_udp_payload() || data.len() + 42 > crate::pool::MAX_FRAME {
            return Err(SockError::MessageTooLong);
        }
        let mc = to.ip().is_multicast();
        let bcast = !mc && iface.is_broadcast(*to.ip());
        if bcast && flags & flag::BROADCAST == 0 {
            return Err(SockError::Access);
        }
        if flags & flag::BOUND == 0 {
            self.udp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        let slot = &self.sockets[s.index() as usize];
        let local = slot.local();
        let mc_if = Ipv4Addr::from(slot.mcast.if_addr);
        // Linux's order: the bound address, then IP_MULTICAST_IF, then the route's.
        let src_ip = if !local.ip().is_unspecified()
            && !iface.is_broadcast(*local.ip())
            && !local.ip().is_multicast()
        {
            *local.ip()
        } else if mc && !mc_if.is_unspecified() {
            mc_if
        } else {
            self.source_for(*to.ip())
        };
        let (ttl, looped) = if mc {
            (
                slot.mcast.ttl,
                slot.mcast.flags & mc_flag::NO_LOOP == 0 && self.mcast_accepts(*to.ip()),
            )
        } else {
            (DEFAULT_TTL, false)
        };
        let b = match self.pool.alloc() {
            Ok(b) => b,
            Err(_) => {
                self.hdr.counters.drop_no_buffers.inc();
                self.sockets[s.index() as usize].counters.tx_errors.inc();
                return Err(SockError::NoBuffers);
            }
        };
        let repr = wudp::UdpRepr {
            src_port: local.port(),
            dst_port: to.port(),
            payload_len: data.len(),
        };
        let l4_len = wudp::HEADER_LEN + data.len();
        let (l3, l4) = (
            crate::wire::ethernet::HEADER_LEN,
            crate::wire::ethernet::HEADER_LEN + ipv4::HEADER_LEN,
        );
        {
            let frame = self.pool.frame_mut(b, l4 + l4_len);
            // Cannot fail: the buffer was sized for exactly this datagram.
            let _ = repr.emit(&mut frame[l4..], src_ip, *to.ip(), data);
        }
        if looped {
            // The same buffer goes to the NIC and to local members.
            self.pool.get(b);
        }
        let opts = OutOpts {
            ttl,
            tos: 0,
            options: &[],
        };
        let res = self.ip_output_with(b, src_ip, *to.ip(), ipv4::protocol::UDP, l4_len, opts);
        if looped {
            if res.is_ok() {
                let m = self.pool.meta_mut(b);
                m.l3_off = l3 as u16;
                m.l4_off = l4 as u16;
                m.pay_off = (l4 + wudp::HEADER_LEN) as u16;
                m.pay_len = data.len() as u16;
                let d = Delivery {
                    src: SocketAddrV4::new(src_ip, local.port()),
                    dst: to,
                    multi: true,
                };
                if self.udp_deliver(b, d) {
                    self.hdr.counters.udp_mcast_looped.inc();
                    self.wake_sleepers();
                }
            } else {
                self.pool.put(b);
            }
        }
        match res {
            Ok(()) => {
                let c = &self.sockets[s.index() as usize].counters;
                c.tx_packets.inc();
                c.tx_bytes.add(data.len() as u64);
                self.hdr.counters.udp_tx_datagrams.inc();
                Ok(data.len())
            }
            Err(e) => {
                self.sockets[s.index() as usize].counters.tx_errors.inc();
                Err(e)
            }
        }
    }

    /// Receives (or with `peek`, looks at) the next datagram: copies as much
    /// as fits in `buf` and reports the full length and the sender.
    pub fn udp_recv_from(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
        peek: bool,
    ) -> Result<RecvMeta, SockError> {
        self.slot(s)?;
        let slot = &mut self.sockets[s.index() as usize];
        let Some(b) = self.pool.peek(&slot.rxq) else {
            if slot.so_error != 0 {
                return Err(SockError::from_errno(std::mem::take(&mut slot.so_error)));
            }
            return Err(SockError::WouldBlock);
        };
        let m = self.pool.meta(b);
        let (l3, l4, po, pl) = (
            usize::from(m.l3_off),
            usize::from(m.l4_off),
            usize::from(m.pay_off),
            usize::from(m.pay_len),
        );
        let frame = self.pool.frame(b);
        let src_ip = Ipv4Addr::new(
            frame[l3 + 12],
            frame[l3 + 13],
            frame[l3 + 14],
            frame[l3 + 15],
        );
        let src_port = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
        let n = pl.min(buf.len());
        buf[..n].copy_from_slice(&frame[po..po + n]);
        if !peek {
            let slot = &mut self.sockets[s.index() as usize];
            if let Some(b) = self.pool.dequeue(&mut slot.rxq, BUF_SIZE as u32) {
                self.pool.put(b);
            }
        }
        Ok(RecvMeta {
            copied: n,
            len: pl,
            from: SocketAddrV4::new(src_ip, src_port),
        })
    }

    /// Delivers a received datagram (buffer with l3/l4/payload offsets set) to
    /// the matching socket(s). Returns false if no socket wanted it.
    /// Consumes the caller's reference in every case.
    pub(crate) fn udp_deliver(&mut self, b: BufId, d: Delivery) -> bool {
        let pay = u64::from(self.pool.meta(b).pay_len);
        if d.multi {
            // Every matching socket (Linux's __udp_is_mcast_sock), each
            // with a reference to the same buffer. Walk the bucket in
            // place: delivery never changes hash links.
            let (group, src) = (*d.dst.ip(), *d.src.ip());
            let mc = group.is_multicast();
            let mut delivered = false;
            let mut cur = self.hash[bucket(self.hash.len(), kind::UDP, d.dst.port())];
            while cur != NIL {
                let sl = &self.sockets[cur as usize];
                let next = sl.next;
                let l = Ipv4Addr::from(sl.local_ip);
                if sl.kind == kind::UDP
                    && sl.local_port == d.dst.port()
                    && (l.is_unspecified() || l == group)
                    && (sl.flags & flag::CONNECTED == 0 || sl.remote() == d.src)
                    && (!mc || sl.mcast.allows(group, src))
                {
                    self.pool.get(b);
                    self.enqueue_datagram(cur, b, pay);
                    delivered = true;
                }
                cur = next;
            }
            self.pool.put(b);
            return delivered;
        }
        let mut best: Option<(u32, u8)> = None;
        for i in self.bound_on(d.dst.port()) {
            let sl = &self.sockets[i as usize];
            let l = Ipv4Addr::from(sl.local_ip);
            if !l.is_unspecified() && l != *d.dst.ip() {
                continue;
            }
            let connected = sl.flags & flag::CONNECTED != 0;
            if connected && sl.remote() != d.src {
                continue;
            }
            let score = u8::from(!l.is_unspecified()) + 2 * u8::from(connected);
            // Strictly better only: among equals the most recently bound
            // (first in the bucket) wins, as in Linux.
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        match best {
            Some((i, _)) => {
                let sl = &self.sockets[i as usize];
                let i = if sl.flags & (flag::REUSEPORT | flag::CONNECTED) == flag::REUSEPORT {
                    self.reuseport_pick(i, d.src)
                } else {
                    i
                };
                self.enqueue_datagram(i, b, pay);
                true
            }
            None => {
                self.pool.put(b);
                false
            }
        }
    }

    /// The socket of `first`'s SO_REUSEPORT group (unconnected
    /// SO_REUSEPORT sockets bound to the same address and port) that
    /// receives the flow from `src`: a hash of the source picks one, so a
    /// flow stays on one socket while the group is unchanged.
    fn reuseport_pick(&self, first: u32, src: SocketAddrV4) -> u32 {
        let f = &self.sockets[first as usize];
        let (ip, port) = (f.local_ip, f.local_port);
        let member = |i: &u32| {
            let sl = &self.sockets[*i as usize];
            sl.local_ip == ip && sl.flags & (flag::REUSEPORT | flag::CONNECTED) == flag::REUSEPORT
        };
        let n = self.bound_on(port).filter(member).count() as u64;
        let k = (u64::from(flow_hash(src)) * n) >> 32;
        self.bound_on(port)
            .filter(member)
            .nth(k as usize)
            .unwrap_or(first)
    }

    fn enqueue_datagram(&mut self, i: u32, b: BufId, pay: u64) {
        let slot = &mut self.sockets[i as usize];
        if slot.rxq.bytes as usize + BUF_SIZE > slot.rcvbuf as usize && !slot.rxq.is_empty() {
            slot.counters.rx_drop_rcvbuf.inc();
            self.hdr.counters.rx_drop_udp_rcvbuf.inc();
            self.pool.put(b);
            return;
        }
        if self
            .pool
            .enqueue(&mut slot.rxq, b, BUF_SIZE as u32)
            .is_err()
        {
            slot.counters.rx_drop_nobuf.inc();
            self.hdr.counters.drop_no_buffers.inc();
            self.pool.put(b);
            return;
        }
        slot.counters.rx_packets.inc();
        slot.counters.rx_bytes.add(pay);
        self.hdr.counters.udp_rx_datagrams.inc();
    }

    /// An ICMP error about a datagram we sent from `local` to `remote`:
    /// connected sockets report it on their next call, as Linux does.
    pub(crate) fn udp_icmp_error(&mut self, local: SocketAddrV4, remote: SocketAddrV4, errno: i32) {
        let mut cur = self.hash[bucket(self.hash.len(), kind::UDP, local.port())];
        while cur != NIL {
            let sl = &mut self.sockets[cur as usize];
            if sl.kind == kind::UDP
                && sl.local_port == local.port()
                && sl.flags & flag::CONNECTED != 0
                && sl.remote() == remote
            {
                sl.so_error = errno;
            }
            cur = sl.next;
        }
    }
}
