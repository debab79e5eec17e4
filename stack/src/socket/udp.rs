//! UDP sockets: the Rust API later wrapped by the BSD one (bind, connect,
//! send, send_to, recv_from, peek), and datagram delivery from the IPv4 layer.
//!
//! Every call is non-blocking: an empty queue gives [`SockError::WouldBlock`];
//! waiting is the caller's business (the NIC driver polls or sleeps). A
//! received datagram stays in its packet buffer until `recv_from` copies it
//! out, and the same buffer can be queued on several sockets (broadcast).

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{bucket, flag, kind, SockError, SocketId, SocketSlot, EPHEMERAL_FIRST, EPHEMERAL_LAST};
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
    pub is_broadcast: bool,
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

    /// Closes a socket, dropping any queued datagrams.
    pub fn udp_close(&mut self, s: SocketId) -> Result<(), SockError> {
        self.slot(s)?;
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

    fn port_conflicts(&self, ip: Ipv4Addr, port: u16) -> bool {
        self.bound_on(port).any(|i| {
            let l = Ipv4Addr::from(self.sockets[i as usize].local_ip);
            l.is_unspecified() || ip.is_unspecified() || l == ip
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
            if !self.port_conflicts(ip, p) {
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
    /// 0.0.0.0 receives on every address of the stack.
    pub fn udp_bind(&mut self, s: SocketId, addr: SocketAddrV4) -> Result<SocketAddrV4, SockError> {
        if self.slot(s)?.flags & flag::BOUND != 0 {
            return Err(SockError::Invalid);
        }
        let ip = *addr.ip();
        let iface = self.iface();
        if !ip.is_unspecified() && !iface.is_local(ip) && !iface.is_broadcast(ip) {
            return Err(SockError::AddrNotAvailable);
        }
        let (port, eph) = if addr.port() == 0 {
            (self.pick_ephemeral(ip)?, true)
        } else if self.port_conflicts(ip, addr.port()) {
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
        let bcast = iface.is_broadcast(*to.ip());
        if bcast && flags & flag::BROADCAST == 0 {
            return Err(SockError::Access);
        }
        if flags & flag::BOUND == 0 {
            self.udp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        let local = self.sockets[s.index() as usize].local();
        let src_ip = if local.ip().is_unspecified() || iface.is_broadcast(*local.ip()) {
            self.source_for(*to.ip())
        } else {
            *local.ip()
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
        {
            let frame = self.pool.frame_mut(
                b,
                crate::wire::ethernet::HEADER_LEN + ipv4::HEADER_LEN + l4_len,
            );
            let l4 = &mut frame[crate::wire::ethernet::HEADER_LEN + ipv4::HEADER_LEN..];
            // Cannot fail: the buffer was sized for exactly this datagram.
            let _ = repr.emit(l4, src_ip, *to.ip(), data);
        }
        match self.ip_output(b, src_ip, *to.ip(), ipv4::protocol::UDP, l4_len) {
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
        if d.is_broadcast {
            // Walk the bucket in place: delivery never changes hash links.
            let mut delivered = false;
            let mut cur = self.hash[bucket(self.hash.len(), kind::UDP, d.dst.port())];
            while cur != NIL {
                let sl = &self.sockets[cur as usize];
                let next = sl.next;
                let l = Ipv4Addr::from(sl.local_ip);
                if sl.kind == kind::UDP
                    && sl.local_port == d.dst.port()
                    && (l.is_unspecified() || l == *d.dst.ip())
                    && sl.flags & flag::CONNECTED == 0
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
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        match best {
            Some((i, _)) => {
                self.enqueue_datagram(i, b, pay);
                true
            }
            None => {
                self.pool.put(b);
                false
            }
        }
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
