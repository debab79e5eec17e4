//! TCP sockets: the Rust API (listen, accept, connect, send, recv,
//! shutdown, close, options), segment output, and timers.
//!
//! Every call is non-blocking; the caller waits (driver) and retries.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::pool::{BufId, PktQueue, HEADROOM, NIL};
use crate::socket::{bucket, flag, kind, SockError, SocketId, EPHEMERAL_FIRST, EPHEMERAL_LAST};
use crate::stack::Core;
use crate::tcp::cc::{CcAlgo, CcState, CongestionControl};
use crate::tcp::tcb::{tflag, Tcb, TcpState};
use crate::wire::seq::SeqNum;
use crate::wire::tcp::{flags as tf, TcpOptions, TcpRepr};
use crate::wire::{checksum, ethernet, ipv4};

/// Timer slots of a socket (see `arena::TIMERS_PER_SOCKET`).
pub(crate) mod timer {
    /// Retransmission, SYN retransmission and zero-window probing.
    pub const RTO: u32 = 0;
    /// Delayed ACK.
    pub const DELACK: u32 = 1;
    /// Keepalive.
    pub const KEEPALIVE: u32 = 2;
    /// TIME_WAIT and FIN_WAIT_2 expiry.
    pub const WAIT: u32 = 3;
}

/// Timer kind on the wheel for TCP timers (the slot number is in the owner field).
pub(crate) const TIMER_TCP: u16 = 2;

/// TIME_WAIT length (Linux's TCP_TIMEWAIT_LEN).
pub const TIME_WAIT_NS: u64 = 60 * crate::clock::SEC;
/// Orphaned FIN_WAIT_2 lifetime (Linux's tcp_fin_timeout).
pub const FIN_WAIT2_NS: u64 = 60 * crate::clock::SEC;
/// Delayed-ACK timeout (Linux's TCP_DELACK_MIN is 40 ms).
pub const DELACK_NS: u64 = 40 * crate::clock::MS;
/// SYN retransmissions before giving up (tcp_syn_retries).
pub const SYN_RETRIES: u32 = 6;
/// SYN-ACK retransmissions (tcp_synack_retries).
pub const SYNACK_RETRIES: u32 = 5;
/// Data retransmissions before giving up (tcp_retries2).
pub const DATA_RETRIES: u32 = 15;
/// Segments ACKed immediately at the start of a connection.
pub const QUICKACK_SEGS: u32 = 16;
/// Our window scale shift (Linux's usual 7).
pub const OUR_WSCALE: u8 = 7;
/// Default receive buffer (bytes of payload).
pub const DEFAULT_RCVBUF: u32 = 1 << 20;
/// Default send buffer.
pub const DEFAULT_SNDBUF: u32 = 1 << 20;
/// Bytes of payload a send-queue buffer holds.
pub(crate) const SNDQ_CHUNK: usize = crate::pool::BUF_SIZE - HEADROOM as usize;

/// `shutdown` directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// A snapshot of a connection for stackdump and tests (like `ss -ti`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: TcpState,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub rcv_queued: u32,
    pub snd_queued: u32,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub srtt_us: u64,
    pub rto_us: u64,
    pub mss: u32,
    pub retransmits: u32,
    pub dupacks: u32,
    pub ooo_segs: u32,
    pub snd_wnd: u32,
    /// Congestion control algorithm, as Linux names it (`ss -ti`).
    pub cc: &'static str,
}

impl TcpInfo {
    /// The details of a control block.
    pub fn from_tcb(t: &Tcb, local: SocketAddrV4, remote: SocketAddrV4) -> TcpInfo {
        TcpInfo {
            state: t.state(),
            local,
            remote,
            rcv_queued: t.rcvq.bytes,
            snd_queued: t.snd_bytes,
            cwnd: t.cc.cwnd(),
            ssthresh: t.cc.ssthresh(),
            srtt_us: t.rtt.srtt_ns() / 1000,
            rto_us: t.rtt.rto_ns() / 1000,
            mss: t.mss,
            retransmits: t.retransmits,
            dupacks: t.dupacks_rcvd,
            ooo_segs: t.ooo_segs,
            snd_wnd: t.snd_wnd,
            cc: t.cc.algo().name(),
        }
    }
}

impl Core<'_> {
    pub(crate) fn tcb_ok(&self, s: SocketId) -> Result<u32, SockError> {
        match self.sockets.get(s.index() as usize) {
            Some(sl) if sl.kind == kind::TCP && sl.incarnation == s.incarnation() => Ok(s.index()),
            _ => Err(SockError::BadSocket),
        }
    }

    pub(crate) fn sock_id(&self, i: u32) -> SocketId {
        SocketId::new(i, self.sockets[i as usize].incarnation)
    }

    /// Opens a TCP socket.
    pub fn tcp_open(&mut self) -> Result<SocketId, SockError> {
        let i = self.alloc_slot(kind::TCP)?;
        let mut t = Tcb::CLOSED;
        t.rcvbuf = DEFAULT_RCVBUF;
        t.sndbuf = DEFAULT_SNDBUF;
        self.tcbs[i as usize] = t;
        Ok(self.sock_id(i))
    }

    /// The connection's state.
    pub fn tcp_state(&self, s: SocketId) -> Result<TcpState, SockError> {
        Ok(self.tcbs[self.tcb_ok(s)? as usize].state())
    }

    /// Whether socket `me` may not take `ip:port` (Linux's bind conflict
    /// rule): every other socket bound there overlapping `ip` conflicts,
    /// unless both have SO_REUSEADDR and the other is not listening, or `me`
    /// has SO_REUSEADDR and the other lingers in TIME_WAIT. For a port the
    /// kernel picked for `connect`, only listeners and sockets bound but not
    /// connected conflict: connect itself checks that the four-tuple is free.
    /// `scan_children`: also the connections accepted on that port.
    fn tcp_port_conflicts(
        &self,
        me: u32,
        ip: Ipv4Addr,
        port: u16,
        for_connect: bool,
        scan_children: bool,
    ) -> bool {
        let reuse = self.sockets[me as usize].flags & flag::REUSEADDR != 0;
        let mut cur = self.hash[bucket(self.hash.len(), kind::TCP, port)];
        while cur != NIL {
            let sl = &self.sockets[cur as usize];
            if cur != me
                && sl.kind == kind::TCP
                && sl.local_port == port
                && sl.flags & flag::BOUND != 0
            {
                let l = Ipv4Addr::from(sl.local_ip);
                let state = self.tcbs[cur as usize].state();
                let shares = if for_connect {
                    state != TcpState::Listen && sl.flags & flag::CONNECTED != 0
                } else {
                    (reuse && sl.flags & flag::REUSEADDR != 0 && state != TcpState::Listen)
                        || (reuse && state == TcpState::TimeWait)
                };
                if (l.is_unspecified() || ip.is_unspecified() || l == ip) && !shares {
                    return true;
                }
            }
            cur = sl.next;
        }
        // Connections accepted from a listener hold its port too but are
        // not in the port hash (they would lengthen every listener lookup):
        // an explicit bind looks for them among all sockets (binds of a
        // given port are rare; the ephemeral search skips this).
        if scan_children {
            for (i, sl) in self.sockets.iter().enumerate() {
                if i as u32 == me
                    || sl.kind != kind::TCP
                    || sl.local_port != port
                    || sl.flags & (flag::BOUND | flag::CONNECTED) != flag::CONNECTED
                {
                    continue;
                }
                let l = Ipv4Addr::from(sl.local_ip);
                let state = self.tcbs[i].state();
                let shares =
                    reuse && (sl.flags & flag::REUSEADDR != 0 || state == TcpState::TimeWait);
                if (l.is_unspecified() || ip.is_unspecified() || l == ip) && !shares {
                    return true;
                }
            }
        }
        false
    }

    /// SO_REUSEADDR on a TCP socket (see [`flag::REUSEADDR`]).
    pub fn tcp_set_reuseaddr(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        let sl = &mut self.sockets[i as usize];
        sl.begin_change();
        if on {
            sl.flags |= flag::REUSEADDR;
        } else {
            sl.flags &= !flag::REUSEADDR;
        }
        sl.end_change();
        Ok(())
    }

    /// Binds to the port the kernel socket behind an fd was given for
    /// `connect` (its autobind): the port may be shared with connections to
    /// other peers, as Linux's connect-time port choice allows.
    pub fn tcp_bind_for_connect(
        &mut self,
        s: SocketId,
        addr: SocketAddrV4,
    ) -> Result<SocketAddrV4, SockError> {
        self.tcp_bind_inner(s, addr, true)
    }

    /// Binds to a local address (port 0: ephemeral).
    pub fn tcp_bind(&mut self, s: SocketId, addr: SocketAddrV4) -> Result<SocketAddrV4, SockError> {
        self.tcp_bind_inner(s, addr, false)
    }

    fn tcp_bind_inner(
        &mut self,
        s: SocketId,
        addr: SocketAddrV4,
        for_connect: bool,
    ) -> Result<SocketAddrV4, SockError> {
        let i = self.tcb_ok(s)?;
        if self.sockets[i as usize].flags & flag::BOUND != 0 {
            return Err(SockError::Invalid);
        }
        let ip = *addr.ip();
        let iface = self.iface();
        if !ip.is_unspecified() && !iface.is_local(ip) {
            return Err(SockError::AddrNotAvailable);
        }
        let port = if addr.port() == 0 {
            let range = u32::from(EPHEMERAL_LAST - EPHEMERAL_FIRST) + 1;
            let mut found = None;
            for _ in 0..range {
                let p = self.st.ephemeral_next;
                self.st.ephemeral_next = if p >= EPHEMERAL_LAST {
                    EPHEMERAL_FIRST
                } else {
                    p + 1
                };
                if !self.tcp_port_conflicts(i, ip, p, for_connect, false) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(SockError::NoPorts)?
        } else if self.tcp_port_conflicts(i, ip, addr.port(), for_connect, !for_connect) {
            return Err(SockError::AddrInUse);
        } else {
            addr.port()
        };
        self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        let sl = &mut self.sockets[i as usize];
        sl.begin_change();
        sl.local_ip = ip.octets();
        sl.local_port = port;
        sl.flags |= flag::BOUND;
        sl.end_change();
        let b = bucket(self.hash.len(), kind::TCP, port);
        self.sockets[i as usize].next = self.hash[b];
        self.hash[b] = i;
        Ok(SocketAddrV4::new(ip, port))
    }

    /// Starts listening, with an accept queue of `backlog` connections.
    pub fn tcp_listen(&mut self, s: SocketId, backlog: u32) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        let st = self.tcbs[i as usize].state();
        if st != TcpState::Closed && st != TcpState::Listen {
            return Err(SockError::Invalid);
        }
        if self.sockets[i as usize].flags & flag::BOUND == 0 {
            self.tcp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        let t = &mut self.tcbs[i as usize];
        t.backlog = backlog.clamp(1, 4096);
        self.set_state(i, TcpState::Listen);
        Ok(())
    }

    /// Takes an established connection from a listener's accept queue.
    pub fn tcp_accept(&mut self, s: SocketId) -> Result<(SocketId, SocketAddrV4), SockError> {
        let i = self.tcb_ok(s)?;
        if self.tcbs[i as usize].state() != TcpState::Listen {
            return Err(SockError::Invalid);
        }
        let c = self.tcbs[i as usize].acceptq_head;
        if c == NIL {
            return Err(SockError::WouldBlock);
        }
        let next = self.tcbs[c as usize].acceptq_next;
        let l = &mut self.tcbs[i as usize];
        l.acceptq_head = next;
        if next == NIL {
            l.acceptq_tail = NIL;
        }
        l.acceptq_len -= 1;
        let ct = &mut self.tcbs[c as usize];
        ct.flags &= !tflag::IN_ACCEPTQ;
        ct.listener = NIL;
        ct.acceptq_next = NIL;
        self.sockets[c as usize].owner_pid = std::process::id();
        Ok((self.sock_id(c), self.sockets[c as usize].remote()))
    }

    /// Whether a socket of this stack listens on `addr` (exact or wildcard address).
    pub fn tcp_listener_exists(&self, addr: SocketAddrV4) -> bool {
        self.listener_lookup(addr).is_some()
    }

    /// Connections waiting in a listener's accept queue.
    pub fn tcp_accept_pending(&self, s: SocketId) -> Result<u32, SockError> {
        Ok(self.tcbs[self.tcb_ok(s)? as usize].acceptq_len)
    }

    /// Starts connecting (sends the SYN). Progress shows in [`Core::tcp_state`]
    /// and [`Core::tcp_writable`]; the BSD layer reports EINPROGRESS.
    pub fn tcp_connect(
        &mut self,
        s: SocketId,
        to: SocketAddrV4,
        now: u64,
    ) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        match self.tcbs[i as usize].state() {
            TcpState::Closed => {}
            TcpState::SynSent | TcpState::SynReceived => return Err(SockError::InProgress),
            TcpState::Listen => return Err(SockError::Invalid),
            _ => return Err(SockError::IsConnected),
        }
        if to.port() == 0
            || to.ip().is_unspecified()
            || self.iface().is_broadcast(*to.ip())
            || to.ip().is_multicast()
        {
            return Err(SockError::Invalid);
        }
        self.route(*to.ip())
            .map_err(|_| SockError::NetUnreachable)?;
        if self.sockets[i as usize].flags & flag::BOUND == 0 {
            self.tcp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        let src = self.source_for(*to.ip());
        let mut local = self.sockets[i as usize].local();
        if local.ip().is_unspecified() {
            local.set_ip(src);
        }
        if let Some(j) = self.conn_lookup(local, to) {
            // The four-tuple is taken. A connection of ours lingering in
            // TIME_WAIT is recycled, as Linux does for loopback
            // (tcp_tw_reuse=2): the new SYN's sequence number and timestamps
            // are above the old incarnation's. Anything else is in use.
            if self.tcbs[j as usize].state() != TcpState::TimeWait {
                return Err(SockError::AddrInUse);
            }
            // An orphan is freed; a socket whose app still holds it is closed.
            self.tcp_drop(j, 0);
        }
        self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        {
            let sl = &mut self.sockets[i as usize];
            sl.begin_change();
            sl.local_ip = local.ip().octets();
            sl.remote_ip = to.ip().octets();
            sl.remote_port = to.port();
            sl.flags |= flag::CONNECTED;
            sl.end_change();
        }
        self.conn_insert(i);
        let iss = self.new_iss(self.sockets[i as usize].local(), to, now);
        let mss = self.our_mss();
        let algo = self.cc_algo();
        let t = &mut self.tcbs[i as usize];
        t.iss = iss;
        t.snd_una = iss;
        t.snd_sml = iss;
        t.snd_nxt = iss + 1;
        t.snd_max = iss + 1;
        t.our_mss = mss;
        t.mss = mss;
        t.rcv_wscale = OUR_WSCALE;
        t.ts_offset = (iss.0).rotate_left(13);
        t.cc = CcState::new(algo, mss);
        t.quickack = QUICKACK_SEGS;
        self.set_state(i, TcpState::SynSent);
        self.tcp_send_syn(i, now);
        Ok(())
    }

    /// Connections whose sockets were closed but which are still finishing
    /// (data or FIN to deliver, not yet in TIME_WAIT): what must be driven
    /// after the last process that holds them exits.
    pub fn tcp_lingering(&self) -> usize {
        (0..self.tcbs.len())
            .filter(|&i| {
                let t = &self.tcbs[i];
                self.sockets[i].kind == kind::TCP
                    && t.has(tflag::ORPHAN)
                    && !matches!(t.state(), TcpState::Closed | TcpState::TimeWait)
            })
            .count()
    }

    /// What poll/epoll report for this socket, as Linux's tcp_poll does, in
    /// epoll bits (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP and the
    /// NORM variants; poll's bits have the same values). A listener shows
    /// only EPOLLIN (a connection to accept); a fresh socket EPOLLOUT and
    /// EPOLLHUP; a reset one everything, with EPOLLERR while its error is
    /// unread.
    pub fn tcp_poll(&self, s: SocketId) -> u32 {
        const IN: u32 = 0x001 | 0x040; // EPOLLIN | EPOLLRDNORM
        const OUT: u32 = 0x004 | 0x100; // EPOLLOUT | EPOLLWRNORM
        const ERR: u32 = 0x008;
        const HUP: u32 = 0x010;
        const RDHUP: u32 = 0x2000;
        let Ok(i) = self.tcb_ok(s) else {
            return HUP;
        };
        let t = &self.tcbs[i as usize];
        let st = t.state();
        if st == TcpState::Listen {
            return if t.acceptq_len > 0 { IN } else { 0 };
        }
        let rcv_shut = t.has(tflag::FIN_RCVD) || t.has(tflag::RD_SHUT);
        let snd_shut = t.has(tflag::FIN_PENDING)
            || t.has(tflag::FIN_SENT)
            || matches!(
                st,
                TcpState::Closing | TcpState::LastAck | TcpState::TimeWait
            );
        let mut m = 0;
        if st == TcpState::Closed || (rcv_shut && snd_shut) {
            m |= HUP;
        }
        if rcv_shut {
            m |= IN | RDHUP;
        }
        if !matches!(st, TcpState::SynSent | TcpState::SynReceived) {
            if t.rcvq.count > 0 {
                m |= IN;
            }
            if snd_shut || st == TcpState::Closed || t.snd_bytes < t.sndbuf {
                m |= OUT;
            }
        }
        if self.sockets[i as usize].so_error != 0 {
            m |= ERR;
        }
        m
    }

    /// Whether `send` would accept data (or report an error) now.
    pub fn tcp_writable(&self, s: SocketId) -> bool {
        let Ok(i) = self.tcb_ok(s) else { return false };
        let t = &self.tcbs[i as usize];
        match t.state() {
            TcpState::Established | TcpState::CloseWait => {
                !t.has(tflag::FIN_PENDING) && t.snd_bytes < t.sndbuf
            }
            TcpState::SynSent | TcpState::SynReceived => false,
            _ => true,
        }
    }

    /// Whether `recv` (or `accept`) would not block.
    pub fn tcp_readable(&self, s: SocketId) -> bool {
        let Ok(i) = self.tcb_ok(s) else { return false };
        let t = &self.tcbs[i as usize];
        match t.state() {
            TcpState::Listen => t.acceptq_len > 0,
            TcpState::SynSent | TcpState::SynReceived => false,
            _ => {
                t.rcvq.count > 0
                    || t.has(tflag::FIN_RCVD)
                    || t.state() == TcpState::Closed
                    || self.sockets[i as usize].so_error != 0
            }
        }
    }

    /// Queues data for sending; returns how much was taken (short if the
    /// send buffer fills).
    pub fn tcp_send(&mut self, s: SocketId, data: &[u8], now: u64) -> Result<usize, SockError> {
        let i = self.tcb_ok(s)?;
        if let Some(e) = self.take_error(i) {
            return Err(e);
        }
        let t = &self.tcbs[i as usize];
        match t.state() {
            TcpState::Established | TcpState::CloseWait => {}
            TcpState::SynSent | TcpState::SynReceived => return Err(SockError::WouldBlock),
            // Linux: EPIPE for a socket never connected, reset or shut down.
            _ => return Err(SockError::BrokenPipe),
        }
        if t.has(tflag::FIN_PENDING) {
            return Err(SockError::BrokenPipe);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let room = t.sndbuf.saturating_sub(t.snd_bytes) as usize;
        if room == 0 {
            return Err(SockError::WouldBlock);
        }
        let mut taken = 0;
        let want = data.len().min(room);
        while taken < want {
            // Fill the tail buffer first.
            let tail = self.tcbs[i as usize].sndq.tail;
            let mut appended = false;
            if tail != NIL {
                if let Some((tb, _)) = self.pool.node(tail) {
                    let used = usize::from(self.pool.meta(tb).len);
                    let space = SNDQ_CHUNK - used;
                    if space > 0 {
                        let n = space.min(want - taken);
                        let off = usize::from(HEADROOM) + used;
                        self.pool.chunk_mut(tb)[off..off + n]
                            .copy_from_slice(&data[taken..taken + n]);
                        self.pool.meta_mut(tb).len = (used + n) as u16;
                        let t = &mut self.tcbs[i as usize];
                        t.sndq.bytes += n as u32;
                        t.snd_bytes += n as u32;
                        taken += n;
                        appended = true;
                    }
                }
            }
            if appended {
                continue;
            }
            let Ok(b) = self.pool.alloc() else { break };
            let n = SNDQ_CHUNK.min(want - taken);
            self.pool.chunk_mut(b)[usize::from(HEADROOM)..usize::from(HEADROOM) + n]
                .copy_from_slice(&data[taken..taken + n]);
            self.pool.meta_mut(b).len = n as u16;
            let t = &mut self.tcbs[i as usize];
            if self.pool.enqueue(&mut t.sndq, b, n as u32).is_err() {
                self.pool.put(b);
                break;
            }
            t.snd_bytes += n as u32;
            taken += n;
        }
        if taken == 0 {
            self.hdr.counters.drop_no_buffers.inc();
            return Err(SockError::NoBuffers);
        }
        self.sockets[i as usize].counters.tx_bytes.add(taken as u64);
        self.tcp_output(i, now);
        Ok(taken)
    }

    /// Reads in-order data; Ok(0) is end of stream.
    pub fn tcp_recv(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
        peek: bool,
        now: u64,
    ) -> Result<usize, SockError> {
        let i = self.tcb_ok(s)?;
        let t = &self.tcbs[i as usize];
        if t.state() == TcpState::Listen {
            return Err(SockError::NotConnected);
        }
        if t.rcvq.is_empty() {
            if let Some(e) = self.take_error(i) {
                return Err(e);
            }
            let t = &self.tcbs[i as usize];
            return match t.state() {
                _ if t.has(tflag::FIN_RCVD) || t.has(tflag::RD_SHUT) => Ok(0),
                // Never connected (Linux: ENOTCONN unless the connection ended).
                TcpState::Closed => Err(SockError::NotConnected),
                TcpState::SynSent
                | TcpState::SynReceived
                | TcpState::Established
                | TcpState::FinWait1
                | TcpState::FinWait2 => Err(SockError::WouldBlock),
                _ => Ok(0),
            };
        }
        let mut copied = 0;
        let mut node = self.tcbs[i as usize].rcvq.head;
        while copied < buf.len() && node != NIL {
            let Some((b, next)) = self.pool.node(node) else {
                break;
            };
            let (po, pl) = {
                let m = self.pool.meta(b);
                (usize::from(m.pay_off), usize::from(m.pay_len))
            };
            let n = pl.min(buf.len() - copied);
            let frame = self.pool.frame(b);
            buf[copied..copied + n].copy_from_slice(&frame[po..po + n]);
            copied += n;
            if !peek {
                if n == pl {
                    let t = &mut self.tcbs[i as usize];
                    if let Some(b) = self.pool.dequeue(&mut t.rcvq, pl as u32) {
                        self.pool.put(b);
                    }
                } else {
                    let m = self.pool.meta_mut(b);
                    m.pay_off += n as u16;
                    m.pay_len -= n as u16;
                    self.tcbs[i as usize].rcvq.bytes -= n as u32;
                }
            }
            node = next;
        }
        if !peek && copied > 0 {
            self.sockets[i as usize]
                .counters
                .rx_bytes
                .add(copied as u64);
            // Reading opened the window: tell the peer if it grew a lot (RFC 9293 SWS avoidance).
            let t = &self.tcbs[i as usize];
            let adv = (t.rcv_adv - t.rcv_nxt) as u32;
            let wnd = self.rcv_window(i);
            if t.state().synchronized()
                && wnd >= adv.saturating_add((t.rcvbuf / 2).min(t.our_mss.max(1)))
            {
                self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                self.tcp_output(i, now);
            }
        }
        Ok(copied)
    }

    /// Bytes readable now (FIONREAD).
    pub fn tcp_rx_pending(&self, s: SocketId) -> Result<u32, SockError> {
        Ok(self.tcbs[self.tcb_ok(s)? as usize].rcvq.bytes)
    }

    /// Bytes not yet acknowledged by the peer (SIOCOUTQ).
    pub fn tcp_tx_pending(&self, s: SocketId) -> Result<u32, SockError> {
        Ok(self.tcbs[self.tcb_ok(s)? as usize].snd_bytes)
    }

    /// Shuts down one or both directions.
    pub fn tcp_shutdown(&mut self, s: SocketId, how: Shutdown, now: u64) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        let st = self.tcbs[i as usize].state();
        if matches!(
            st,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::TimeWait
        ) {
            // TIME_WAIT: both directions are done; to the app it is closed.
            return Err(SockError::NotConnected);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.tcbs[i as usize].flags |= tflag::RD_SHUT;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.tcbs[i as usize].flags |= tflag::FIN_PENDING;
            self.tcp_output(i, now);
        }
        Ok(())
    }

    /// Closes the socket: a graceful FIN after pending data (the connection
    /// lives on, orphaned, until it finishes), an RST if unread data remains
    /// or SO_LINGER is 0, as Linux does.
    pub fn tcp_close(&mut self, s: SocketId, now: u64) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        let t = self.tcbs[i as usize];
        match t.state() {
            TcpState::Closed | TcpState::SynSent => {
                self.tcp_free(i);
            }
            TcpState::Listen => {
                // Children not yet accepted are reset.
                let mut c = t.acceptq_head;
                while c != NIL {
                    let next = self.tcbs[c as usize].acceptq_next;
                    self.tcp_abort(c, now, 0);
                    c = next;
                }
                for c in 0..self.tcbs.len() as u32 {
                    if self.sockets[c as usize].kind == kind::TCP
                        && self.tcbs[c as usize].listener == i
                    {
                        self.tcp_abort(c, now, 0);
                    }
                }
                self.tcp_free(i);
            }
            _ if t.rcvq.count > 0 || t.has(tflag::LINGER0) => {
                // The application is gone: the reset connection is freed,
                // not kept CLOSED (holding its unread data) for a reader.
                self.tcbs[i as usize].flags |= tflag::ORPHAN;
                self.tcp_abort(i, now, 0);
            }
            TcpState::SynReceived | TcpState::Established | TcpState::CloseWait => {
                let t = &mut self.tcbs[i as usize];
                t.flags |= tflag::ORPHAN | tflag::FIN_PENDING | tflag::RD_SHUT;
                self.tcp_output(i, now);
            }
            _ => {
                self.tcbs[i as usize].flags |= tflag::ORPHAN | tflag::RD_SHUT;
                if self.tcbs[i as usize].state() == TcpState::FinWait2 {
                    self.arm_timer(i, timer::WAIT, now + FIN_WAIT2_NS);
                }
            }
        }
        Ok(())
    }

    /// TCP_NODELAY.
    pub fn tcp_set_nodelay(&mut self, s: SocketId, on: bool, now: u64) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        self.set_tflag(i, tflag::NODELAY, on);
        if on {
            self.tcp_output(i, now);
        }
        Ok(())
    }

    /// TCP_CORK: hold partial segments until uncorked.
    pub fn tcp_set_cork(&mut self, s: SocketId, on: bool, now: u64) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        self.set_tflag(i, tflag::CORK, on);
        if !on {
            self.tcp_output(i, now);
        }
        Ok(())
    }

    /// SO_KEEPALIVE with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT (seconds, count).
    pub fn tcp_set_keepalive(
        &mut self,
        s: SocketId,
        on: bool,
        idle_s: u32,
        intvl_s: u32,
        cnt: u32,
        now: u64,
    ) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        self.set_tflag(i, tflag::KEEPALIVE, on);
        let t = &mut self.tcbs[i as usize];
        t.keepidle_s = idle_s.max(1);
        t.keepintvl_s = intvl_s.max(1);
        t.keepcnt = cnt.max(1);
        t.keepalive_probes_sent = 0;
        if on && t.state().synchronized() {
            let at = now + u64::from(t.keepidle_s) * crate::clock::SEC;
            self.arm_timer(i, timer::KEEPALIVE, at);
        } else {
            self.cancel_timer(i, timer::KEEPALIVE);
        }
        Ok(())
    }

    /// SO_LINGER with timeout 0: close() resets the connection.
    pub fn tcp_set_linger0(&mut self, s: SocketId, on: bool) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        self.set_tflag(i, tflag::LINGER0, on);
        Ok(())
    }

    /// TCP_USER_TIMEOUT in milliseconds (0: off).
    pub fn tcp_set_user_timeout(&mut self, s: SocketId, ms: u32) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        self.tcbs[i as usize].user_timeout_ms = ms;
        Ok(())
    }

    /// SO_RCVBUF / SO_SNDBUF (bytes of payload).
    pub fn tcp_set_buffers(
        &mut self,
        s: SocketId,
        rcvbuf: Option<u32>,
        sndbuf: Option<u32>,
    ) -> Result<(), SockError> {
        let i = self.tcb_ok(s)?;
        let t = &mut self.tcbs[i as usize];
        if let Some(r) = rcvbuf {
            t.rcvbuf = r.clamp(2048, 64 << 20);
        }
        if let Some(w) = sndbuf {
            t.sndbuf = w.clamp(2048, 64 << 20);
        }
        Ok(())
    }

    /// Connection details (like `ss -ti`).
    pub fn tcp_info(&self, s: SocketId) -> Result<TcpInfo, SockError> {
        let i = self.tcb_ok(s)?;
        Ok(self.tcp_info_at(i))
    }

    pub(crate) fn tcp_info_at(&self, i: u32) -> TcpInfo {
        let sl = &self.sockets[i as usize];
        TcpInfo::from_tcb(&self.tcbs[i as usize], sl.local(), sl.remote())
    }

    fn set_tflag(&mut self, i: u32, f: u32, on: bool) {
        let t = &mut self.tcbs[i as usize];
        if on {
            t.flags |= f;
        } else {
            t.flags &= !f;
        }
    }

    fn take_error(&mut self, i: u32) -> Option<SockError> {
        let e = std::mem::take(&mut self.sockets[i as usize].so_error);
        (e != 0).then(|| SockError::from_errno(e))
    }

    /// Takes the pending error (SO_ERROR).
    pub fn tcp_take_error(&mut self, s: SocketId) -> Result<Option<SockError>, SockError> {
        let i = self.tcb_ok(s)?;
        Ok(self.take_error(i))
    }

    pub(crate) fn set_state(&mut self, i: u32, st: TcpState) {
        let sl = &self.sockets[i as usize];
        sl.begin_change();
        self.tcbs[i as usize].state = st as u8;
        self.sockets[i as usize].end_change();
    }

    pub(crate) fn our_mss(&self) -> u32 {
        u32::from(self.iface().mtu)
            .saturating_sub(40)
            .clamp(536, (crate::pool::MAX_FRAME - 54) as u32)
    }

    /// An initial sequence number: a keyed hash of the 4-tuple plus a clock
    /// (RFC 6528), so numbers are unpredictable and increase over time.
    pub(crate) fn new_iss(&self, local: SocketAddrV4, remote: SocketAddrV4, now: u64) -> SeqNum {
        let key = self.hdr.created_unix_ns ^ u64::from(self.hdr.creator_pid).rotate_left(17);
        let mut h = key ^ 0x9e37_79b9_7f4a_7c15;
        for v in [
            u32::from(*local.ip()),
            u32::from(local.port()),
            u32::from(*remote.ip()),
            u32::from(remote.port()),
        ] {
            h = (h ^ u64::from(v))
                .wrapping_mul(0x100_0000_01b3)
                .rotate_left(23);
        }
        let clock = (now / 4000) as u32; // 4 us ticks, as RFC 6528 suggests
        SeqNum((h as u32).wrapping_add(clock))
    }

    pub(crate) fn timer_id(&self, i: u32, slot: u32) -> u32 {
        self.hdr.config.arp_entries + i * crate::arena::TIMERS_PER_SOCKET + slot
    }

    pub(crate) fn arm_timer(&mut self, i: u32, slot: u32, at: u64) {
        let id = self.timer_id(i, slot);
        let _ = self.timers.arm(
            id,
            at,
            TIMER_TCP,
            i * crate::arena::TIMERS_PER_SOCKET + slot,
        );
    }

    pub(crate) fn cancel_timer(&mut self, i: u32, slot: u32) {
        let id = self.timer_id(i, slot);
        self.timers.cancel(id);
    }

    pub(crate) fn timer_armed(&self, i: u32, slot: u32) -> bool {
        self.timers.is_armed(self.timer_id(i, slot))
    }

    /// Inserts connection `i` in the 4-tuple hash.
    pub(crate) fn conn_insert(&mut self, i: u32) {
        let sl = &self.sockets[i as usize];
        let b = conn_bucket(self.conn_hash.len(), sl.local(), sl.remote());
        self.sockets[i as usize].conn_next = self.conn_hash[b];
        self.conn_hash[b] = i;
    }

    pub(crate) fn conn_remove(&mut self, i: u32) {
        let sl = &self.sockets[i as usize];
        let b = conn_bucket(self.conn_hash.len(), sl.local(), sl.remote());
        let next = sl.conn_next;
        if self.conn_hash[b] == i {
            self.conn_hash[b] = next;
        } else {
            let mut cur = self.conn_hash[b];
            while cur != NIL {
                if self.sockets[cur as usize].conn_next == i {
                    self.sockets[cur as usize].conn_next = next;
                    break;
                }
                cur = self.sockets[cur as usize].conn_next;
            }
        }
        self.sockets[i as usize].conn_next = NIL;
    }

    /// The connection with this 4-tuple.
    pub(crate) fn conn_lookup(&self, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u32> {
        let mut cur = self.conn_hash[conn_bucket(self.conn_hash.len(), local, remote)];
        while cur != NIL {
            let sl = &self.sockets[cur as usize];
            if sl.kind == kind::TCP && sl.local() == local && sl.remote() == remote {
                return Some(cur);
            }
            cur = sl.conn_next;
        }
        None
    }

    /// The listener for a local address: exact address first, then wildcard.
    pub(crate) fn listener_lookup(&self, local: SocketAddrV4) -> Option<u32> {
        let mut wild = None;
        let mut cur = self.hash[bucket(self.hash.len(), kind::TCP, local.port())];
        while cur != NIL {
            let sl = &self.sockets[cur as usize];
            if sl.kind == kind::TCP
                && sl.local_port == local.port()
                && self.tcbs[cur as usize].state() == TcpState::Listen
            {
                let l = Ipv4Addr::from(sl.local_ip);
                if l == *local.ip() {
                    return Some(cur);
                }
                if l.is_unspecified() {
                    wild = Some(cur);
                }
            }
            cur = sl.next;
        }
        wild
    }

    /// Releases every resource of connection `i` and frees its slot.
    pub(crate) fn tcp_free(&mut self, i: u32) {
        for slot in 0..crate::arena::TIMERS_PER_SOCKET {
            self.cancel_timer(i, slot);
        }
        let sflags = self.sockets[i as usize].flags;
        if sflags & flag::CONNECTED != 0 {
            self.conn_remove(i);
        }
        if sflags & flag::BOUND != 0 {
            self.unhash_port(i, kind::TCP);
        }
        let mut t = self.tcbs[i as usize];
        if t.listener != NIL {
            self.detach_from_listener(i);
        }
        self.pool.purge(&mut t.sndq);
        self.pool.purge(&mut t.rcvq);
        self.pool.purge(&mut t.oooq);
        self.tcbs[i as usize] = Tcb::CLOSED;
        self.free_slot(i);
    }

    fn detach_from_listener(&mut self, i: u32) {
        let l = self.tcbs[i as usize].listener;
        let in_q = self.tcbs[i as usize].has(tflag::IN_ACCEPTQ);
        if l == NIL || l as usize >= self.tcbs.len() {
            return;
        }
        if in_q {
            let mut prev = NIL;
            let mut cur = self.tcbs[l as usize].acceptq_head;
            while cur != NIL {
                let next = self.tcbs[cur as usize].acceptq_next;
                if cur == i {
                    if prev == NIL {
                        self.tcbs[l as usize].acceptq_head = next;
                    } else {
                        self.tcbs[prev as usize].acceptq_next = next;
                    }
                    if self.tcbs[l as usize].acceptq_tail == i {
                        self.tcbs[l as usize].acceptq_tail = prev;
                    }
                    self.tcbs[l as usize].acceptq_len -= 1;
                    break;
                }
                prev = cur;
                cur = next;
            }
        } else {
            let lt = &mut self.tcbs[l as usize];
            lt.synq_len = lt.synq_len.saturating_sub(1);
        }
        self.tcbs[i as usize].listener = NIL;
    }

    /// Aborts a connection: RST to the peer (if synchronised), error to the
    /// application, resources freed (or kept for the app to see the error).
    pub(crate) fn tcp_abort(&mut self, i: u32, now: u64, errno: i32) {
        let t = self.tcbs[i as usize];
        if matches!(
            t.state(),
            TcpState::SynReceived
                | TcpState::Established
                | TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::CloseWait
        ) {
            let seq = t.snd_nxt;
            self.tcp_send_ctl(i, seq, tf::RST | tf::ACK, now);
        }
        self.tcp_drop(i, errno);
    }

    /// Ends a connection without telling the peer: frees it if the application
    /// is gone, else keeps the slot CLOSED with the error for it to read.
    pub(crate) fn tcp_drop(&mut self, i: u32, errno: i32) {
        let t = self.tcbs[i as usize];
        if t.has(tflag::ORPHAN) || t.listener != NIL {
            self.tcp_free(i);
            return;
        }
        for slot in 0..crate::arena::TIMERS_PER_SOCKET {
            self.cancel_timer(i, slot);
        }
        if self.sockets[i as usize].flags & flag::CONNECTED != 0 {
            self.conn_remove(i);
            self.sockets[i as usize].flags &= !flag::CONNECTED;
        }
        let mut t = self.tcbs[i as usize];
        self.pool.purge(&mut t.sndq);
        self.pool.purge(&mut t.oooq);
        let tm = &mut self.tcbs[i as usize];
        tm.sndq = PktQueue::EMPTY;
        tm.oooq = PktQueue::EMPTY;
        tm.snd_bytes = 0;
        tm.flags |= tflag::FIN_RCVD;
        if errno != 0 {
            self.sockets[i as usize].so_error = errno;
        }
        self.set_state(i, TcpState::Closed);
    }

    /// Our receive window: free buffer space, never shrinking what we already
    /// offered, with receiver-side SWS avoidance.
    pub(crate) fn rcv_window(&self, i: u32) -> u32 {
        let t = &self.tcbs[i as usize];
        let used = t.rcvq.bytes.saturating_add(t.oooq.bytes);
        let free = t.rcvbuf.saturating_sub(used);
        let offered = if t.rcv_adv.gt(t.rcv_nxt) {
            (t.rcv_adv - t.rcv_nxt) as u32
        } else {
            0
        };
        let max = 65535u32 << t.rcv_wscale;
        let w = free.min(max);
        if w <= offered {
            // Never shrink a window already offered (RFC 9293 3.8.6.2.1).
            return offered.min(max);
        }
        // Receiver-side SWS avoidance: no small increases (RFC 9293 3.8.6.2.2).
        if offered > 0 && w - offered < (t.rcvbuf / 2).min(t.our_mss) {
            return offered;
        }
        w
    }

    /// Sends the SYN (or SYN-ACK) of connection `i` from `iss`.
    pub(crate) fn tcp_send_syn(&mut self, i: u32, now: u64) {
        let t = self.tcbs[i as usize];
        let flags = if t.state() == TcpState::SynReceived {
            tf::SYN | tf::ACK
        } else {
            tf::SYN
        };
        self.tcp_emit(i, t.iss, flags, 0, now);
        let at = now + self.tcbs[i as usize].rtt.rto_ns();
        self.arm_timer(i, timer::RTO, at);
    }

    /// Sends a segment with no data (ACK, RST, FIN).
    pub(crate) fn tcp_send_ctl(&mut self, i: u32, seq: SeqNum, flags: u8, now: u64) {
        self.tcp_emit(i, seq, flags, 0, now);
    }

    /// Builds and sends one segment of connection `i`: `len` bytes of the
    /// send queue starting at `seq`, with options as negotiated.
    pub(crate) fn tcp_emit(
        &mut self,
        i: u32,
        seq: SeqNum,
        flags: u8,
        len: usize,
        now: u64,
    ) -> bool {
        let t = self.tcbs[i as usize];
        let sl = &self.sockets[i as usize];
        let (local, remote) = (sl.local(), sl.remote());
        let syn = flags & tf::SYN != 0;
        let mut opts = TcpOptions::default();
        let ts_on = if syn {
            t.state() == TcpState::SynSent || t.has(tflag::TS)
        } else {
            t.has(tflag::TS)
        };
        if ts_on {
            opts.timestamp = Some((
                self.ts_now(i, now),
                if flags & tf::ACK != 0 { t.ts_recent } else { 0 },
            ));
        }
        if syn {
            opts.mss = Some(t.our_mss.min(u32::from(u16::MAX)) as u16);
            if t.state() == TcpState::SynSent || t.has(tflag::WSCALE) {
                opts.window_scale = Some(t.rcv_wscale);
            }
            opts.sack_permitted = t.state() == TcpState::SynSent || t.has(tflag::SACK);
        } else if t.has(tflag::SACK) && !t.ooo_ranges.is_empty() {
            let mut blocks = [(0u32, 0u32); 4];
            let recent = (t.last_ooo[0] != t.last_ooo[1]).then_some((t.last_ooo[0], t.last_ooo[1]));
            let n = t
                .ooo_ranges
                .sack_blocks(recent, &mut blocks[..if ts_on { 3 } else { 4 }]);
            for (k, b) in blocks[..n].iter().enumerate() {
                opts.sack_blocks[k] = Some((SeqNum(b.0), SeqNum(b.1)));
            }
        }
        let window = if flags & tf::RST != 0 {
            0
        } else {
            let w = self.rcv_window(i);
            if syn {
                w.min(65535) as u16
            } else {
                w.div_ceil(1 << t.rcv_wscale).min(65535) as u16
            }
        };
        let ack = (flags & tf::ACK != 0).then_some(t.rcv_nxt);
        let repr = TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq,
            ack,
            flags,
            window,
            options: opts,
            payload: &[],
        };
        let hlen = repr.header_len();
        let Ok(b) = self.pool.alloc() else {
            self.hdr.counters.drop_no_buffers.inc();
            return false;
        };
        let l4 = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
        let total_l4 = hlen + len;
        {
            let frame = self.pool.frame_mut(b, l4 + total_l4);
            if repr
                .emit(&mut frame[l4..l4 + hlen], *local.ip(), *remote.ip())
                .is_err()
            {
                self.pool.put(b);
                return false;
            }
        }
        if len > 0 {
            let base = self.pool.meta(b).off as usize + l4 + hlen;
            self.copy_sndq(i, seq, b, base, len);
        }
        {
            // Checksum over header and payload (emit computed it for the header alone).
            let frame = self.pool.frame_mut(b, l4 + total_l4);
            let seg = &mut frame[l4..];
            seg[16] = 0;
            seg[17] = 0;
            let sum = checksum::accumulate(
                seg,
                checksum::pseudo_header_v4(
                    *local.ip(),
                    *remote.ip(),
                    ipv4::protocol::TCP,
                    total_l4 as u16,
                ),
            );
            let c = checksum::finish(sum);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
        }
        let _ = self.ip_output(b, *local.ip(), *remote.ip(), ipv4::protocol::TCP, total_l4);
        let c = &self.sockets[i as usize].counters;
        c.tx_packets.inc();
        let t = &mut self.tcbs[i as usize];
        t.last_snd_ns = now;
        if len > 0 {
            t.last_data_snd_ns = now;
        }
        if flags & tf::ACK != 0 {
            t.flags &= !(tflag::ACK_PENDING | tflag::ACK_NOW);
            t.segs_unacked = 0;
            let wnd_edge =
                t.rcv_nxt + ((u32::from(window) << if syn { 0 } else { t.rcv_wscale }) as usize);
            if wnd_edge.gt(t.rcv_adv) {
                t.rcv_adv = wnd_edge;
            }
            self.cancel_timer(i, timer::DELACK);
        }
        true
    }

    /// Copies `len` bytes of the send queue starting at sequence `seq` into
    /// buffer `dst` at offset `dst_off`.
    fn copy_sndq(&mut self, i: u32, seq: SeqNum, dst: BufId, mut dst_off: usize, mut len: usize) {
        let t = &self.tcbs[i as usize];
        // Sequence of the first byte held by the head buffer.
        let head_seq = t.snd_una - (t.sndq_head_off as usize);
        let mut skip = seq - head_seq;
        let mut node = t.sndq.head;
        while len > 0 && node != NIL {
            let Some((b, next)) = self.pool.node(node) else {
                break;
            };
            let blen = usize::from(self.pool.meta(b).len);
            if skip >= blen {
                skip -= blen;
            } else {
                let n = (blen - skip).min(len);
                self.pool
                    .copy_between(b, usize::from(HEADROOM) + skip, dst, dst_off, n);
                dst_off += n;
                len -= n;
                skip = 0;
            }
            node = next;
        }
    }

    /// The congestion control new connections use (the stack's config).
    pub(crate) fn cc_algo(&self) -> CcAlgo {
        CcAlgo::from_u8(self.hdr.config.tcp_cc)
    }

    /// Our timestamp clock: milliseconds plus a per-connection offset.
    pub(crate) fn ts_now(&self, i: u32, now: u64) -> u32 {
        ((now / crate::clock::MS) as u32).wrapping_add(self.tcbs[i as usize].ts_offset)
    }

    /// Slow start after idle (RFC 5681 4.1, Linux's `tcp_slow_start_after_idle`):
    /// nothing in flight, new data to send, and no data sent for an RTO.
    fn tcp_idle_restart(&mut self, i: u32, now: u64) {
        if self.hdr.config.tcp_slow_start_after_idle == 0 {
            return;
        }
        let t = &mut self.tcbs[i as usize];
        let pending = t.snd_nxt.lt(t.snd_una + (t.snd_bytes as usize));
        if t.snd_una != t.snd_max
            || !pending
            || t.last_data_snd_ns == 0
            || now.saturating_sub(t.last_data_snd_ns) <= t.rtt.rto_ns()
        {
            return;
        }
        let mss = t.mss;
        t.cc.on_idle_restart(mss);
        t.last_data_snd_ns = now;
    }

    /// Sends whatever the connection may send now: new data within the
    /// windows (Nagle, cork), the FIN, a pending ACK; arms the timers.
    pub fn tcp_output(&mut self, i: u32, now: u64) {
        let t = self.tcbs[i as usize];
        if !matches!(
            t.state(),
            TcpState::Established
                | TcpState::CloseWait
                | TcpState::FinWait1
                | TcpState::Closing
                | TcpState::LastAck
                | TcpState::FinWait2
        ) {
            if t.has(tflag::ACK_NOW)
                && t.state() != TcpState::Closed
                && t.state() != TcpState::Listen
                && t.state() != TcpState::SynSent
            {
                self.tcp_send_ctl(i, t.snd_nxt, tf::ACK, now);
            }
            return;
        }
        self.tcp_idle_restart(i, now);
        let mut sent_any = false;
        loop {
            let t = self.tcbs[i as usize];
            // The payload that fits with this segment's options: SACK
            // blocks ride on data while out-of-order data is queued, and a
            // segment sized for the MSS alone would exceed the MTU.
            let seg_mss = payload_mss(&t);
            let data_end = t.snd_una + (t.snd_bytes as usize);
            let cwnd = if t.has(tflag::RECOVERY) && !t.has(tflag::SACK) {
                t.cc.ssthresh()
                    .saturating_add(t.dupacks.saturating_mul(t.mss))
            } else {
                t.cc.cwnd()
            };
            let wnd = t.snd_wnd.min(cwnd);
            let wnd_end = t.snd_una + (wnd as usize);
            if !t.snd_nxt.lt(data_end) {
                break;
            }
            // Skip ranges the peer already holds (SACK) when retransmitting after a loss.
            if t.has(tflag::LOSS) && t.snd_nxt.lt(t.snd_max) && t.scoreboard.is_sacked(t.snd_nxt.0)
            {
                let end = SeqNum(t.scoreboard.sacked_end(t.snd_nxt.0));
                self.tcbs[i as usize].snd_nxt = if end.lt(t.snd_max) { end } else { t.snd_max };
                continue;
            }
            let avail = (data_end - t.snd_nxt) as u32;
            let room = if wnd_end.gt(t.snd_nxt) {
                (wnd_end - t.snd_nxt) as u32
            } else {
                0
            };
            let mut len = avail.min(room).min(seg_mss);
            if t.snd_nxt.lt(t.snd_max) {
                // Retransmitting: never past what was sent.
                len = len.min((t.snd_max - t.snd_nxt) as u32);
            }
            if len == 0 {
                break;
            }
            let is_new = !t.snd_nxt.lt(t.snd_max);
            if is_new && len < seg_mss && len == avail {
                // Nagle with Minshall's refinement (as Linux): hold a small
                // segment only while an earlier small one is unacknowledged,
                // so a write's tail after full segments leaves at once.
                if t.has(tflag::CORK)
                    || (!t.has(tflag::NODELAY)
                        && t.flight_size() > 0
                        && t.snd_sml.gt(t.snd_una)
                        && !t.has(tflag::FIN_PENDING))
                {
                    break;
                }
            } else if is_new && len < seg_mss && len < avail {
                // Window-limited: SWS avoidance on the sender side.
                if len < t.max_snd_wnd / 2 && t.flight_size() > 0 {
                    break;
                }
            }
            let last = t.snd_nxt + (len as usize) == data_end;
            let mut fl = tf::ACK;
            if last {
                fl |= tf::PSH;
            }
            let seq = t.snd_nxt;
            if !self.tcp_emit(i, seq, fl, len as usize, now) {
                break;
            }
            sent_any = true;
            let t = &mut self.tcbs[i as usize];
            if len < seg_mss {
                t.snd_sml = seq + (len as usize);
            }
            if !is_new {
                t.retransmits += 1;
                self.hdr.counters.tcp_retransmits.inc();
            } else if t.rtt_timing == 0 {
                t.rtt_timing = 1;
                t.rtt_seq = seq;
                t.rtt_sent_ns = now;
            }
            if t.snd_una == t.snd_max {
                t.una_since_ns = now;
            }
            t.snd_nxt = seq + (len as usize);
            if t.snd_nxt.gt(t.snd_max) {
                t.snd_max = t.snd_nxt;
            }
        }
        // FIN once all data is out.
        let t = self.tcbs[i as usize];
        let data_end = t.snd_una + (t.snd_bytes as usize);
        if t.has(tflag::FIN_PENDING) && !t.has(tflag::FIN_SENT) && t.snd_nxt == data_end {
            self.tcp_send_ctl(i, data_end, tf::FIN | tf::ACK, now);
            sent_any = true;
            let t = &mut self.tcbs[i as usize];
            t.flags |= tflag::FIN_SENT;
            t.fin_seq = data_end;
            t.snd_nxt = data_end + 1;
            if t.snd_nxt.gt(t.snd_max) {
                t.snd_max = t.snd_nxt;
            }
            if t.snd_una == data_end {
                t.una_since_ns = now;
            }
            match t.state() {
                TcpState::Established | TcpState::SynReceived => {
                    self.set_state(i, TcpState::FinWait1)
                }
                TcpState::CloseWait => self.set_state(i, TcpState::LastAck),
                _ => {}
            }
        } else if t.has(tflag::FIN_SENT) && t.snd_nxt == t.fin_seq && t.snd_una.le(t.fin_seq) {
            // Retransmitting after a loss reached the FIN.
            self.tcp_send_ctl(i, t.fin_seq, tf::FIN | tf::ACK, now);
            sent_any = true;
            self.tcbs[i as usize].snd_nxt = t.fin_seq + 1;
        }
        let t = self.tcbs[i as usize];
        if !sent_any && t.has(tflag::ACK_NOW) {
            self.tcp_send_ctl(i, t.snd_nxt, tf::ACK, now);
        } else if !sent_any && t.has(tflag::ACK_PENDING) && !self.timer_armed(i, timer::DELACK) {
            self.arm_timer(i, timer::DELACK, now + DELACK_NS);
        }
        self.tcp_arm_rto(i, now);
    }

    /// Keeps the retransmission timer armed while anything is unacknowledged,
    /// or arms the persist timer when a zero window blocks waiting data.
    pub(crate) fn tcp_arm_rto(&mut self, i: u32, now: u64) {
        let t = self.tcbs[i as usize];
        let data_end = t.snd_una + (t.snd_bytes as usize);
        if t.snd_una.lt(t.snd_max) {
            if t.has(tflag::PERSIST) && t.snd_wnd == 0 {
                // A probe is out; the persist timer keeps running.
            } else if !self.timer_armed(i, timer::RTO) || t.has(tflag::PERSIST) {
                let tm = &mut self.tcbs[i as usize];
                tm.flags &= !(tflag::PERSIST | tflag::TLP_ARMED);
                let rto = now + t.rtt.rto_ns();
                match loss_probe_timeout(&t) {
                    Some(pto) if now + pto < rto => {
                        tm.flags |= tflag::TLP_ARMED;
                        self.arm_timer(i, timer::RTO, now + pto);
                    }
                    _ => self.arm_timer(i, timer::RTO, rto),
                }
            }
        } else if t.snd_wnd == 0 && t.snd_nxt.lt(data_end) {
            if !self.timer_armed(i, timer::RTO) {
                self.tcbs[i as usize].flags |= tflag::PERSIST;
                self.arm_timer(i, timer::RTO, now + t.rtt.rto_ns());
            }
        } else {
            self.cancel_timer(i, timer::RTO);
            self.tcbs[i as usize].flags &= !(tflag::PERSIST | tflag::TLP_ARMED);
        }
    }

    /// A TCP timer fired.
    pub(crate) fn tcp_timer(&mut self, owner: u32, now: u64) {
        let (i, slot) = (
            owner / crate::arena::TIMERS_PER_SOCKET,
            owner % crate::arena::TIMERS_PER_SOCKET,
        );
        if i as usize >= self.tcbs.len() || self.sockets[i as usize].kind != kind::TCP {
            return;
        }
        match slot {
            timer::RTO => self.tcp_rto(i, now),
            timer::DELACK => {
                if self.tcbs[i as usize].has(tflag::ACK_PENDING) {
                    self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                    self.tcp_output(i, now);
                }
            }
            timer::KEEPALIVE => self.tcp_keepalive(i, now),
            _ => {
                // TIME_WAIT or orphaned FIN_WAIT_2 is over.
                if matches!(
                    self.tcbs[i as usize].state(),
                    TcpState::TimeWait | TcpState::FinWait2
                ) {
                    self.tcp_drop(i, 0);
                    if self.sockets[i as usize].kind == kind::TCP
                        && self.tcbs[i as usize].state() == TcpState::Closed
                        && self.tcbs[i as usize].has(tflag::ORPHAN)
                    {
                        self.tcp_free(i);
                    }
                }
            }
        }
    }

    fn tcp_rto(&mut self, i: u32, now: u64) {
        let t = self.tcbs[i as usize];
        match t.state() {
            TcpState::SynSent | TcpState::SynReceived => {
                let limit = if t.state() == TcpState::SynSent {
                    SYN_RETRIES
                } else {
                    SYNACK_RETRIES
                };
                if t.rto_count >= limit {
                    self.tcp_drop(i, libc::ETIMEDOUT);
                    return;
                }
                let tm = &mut self.tcbs[i as usize];
                tm.rto_count += 1;
                tm.retransmits += 1;
                tm.rtt.on_timeout();
                tm.rtt_timing = 0;
                self.hdr.counters.tcp_retransmits.inc();
                self.tcp_send_syn(i, now);
                return;
            }
            TcpState::Closed | TcpState::Listen | TcpState::TimeWait => return,
            _ => {}
        }
        let data_end = t.snd_una + (t.snd_bytes as usize);
        if t.has(tflag::PERSIST) || (t.snd_wnd == 0 && t.snd_una.lt(data_end)) {
            // Zero window: probe with one byte beyond it (RFC 9293 3.8.6.1). The
            // connection stays up as long as the peer answers the probes.
            let (seq, new) = if t.snd_una.lt(t.snd_max) {
                (t.snd_una, false)
            } else {
                (t.snd_nxt, true)
            };
            if seq.lt(data_end) {
                self.tcp_emit(i, seq, tf::ACK, 1, now);
                let tm = &mut self.tcbs[i as usize];
                if new {
                    tm.snd_nxt = seq + 1;
                    if tm.snd_nxt.gt(tm.snd_max) {
                        tm.snd_max = tm.snd_nxt;
                    }
                }
                tm.rtt.on_timeout();
                tm.rtt_timing = 0;
                self.hdr.counters.tcp_window_probes.inc();
            }
            let tm = &mut self.tcbs[i as usize];
            tm.flags |= tflag::PERSIST;
            let at = now + tm.rtt.rto_ns();
            self.arm_timer(i, timer::RTO, at);
            return;
        }
        if t.snd_una == t.snd_max {
            return;
        }
        if t.has(tflag::TLP_ARMED) {
            if t.has(tflag::RECOVERY) || t.has(tflag::LOSS) {
                // Recovery began since the probe was armed: no probe, and
                // the RTO runs its full course.
                self.tcbs[i as usize].flags &= !tflag::TLP_ARMED;
                let at = now + t.rtt.rto_ns();
                self.arm_timer(i, timer::RTO, at);
            } else {
                self.tcp_loss_probe(i, now);
            }
            return;
        }
        let user_timeout = u64::from(t.user_timeout_ms) * crate::clock::MS;
        if t.rto_count >= DATA_RETRIES
            || (user_timeout > 0 && now.saturating_sub(t.una_since_ns) >= user_timeout)
        {
            self.tcp_abort(i, now, libc::ETIMEDOUT);
            return;
        }
        let mss = t.mss;
        let flight = t.flight_size();
        let tm = &mut self.tcbs[i as usize];
        tm.rto_count += 1;
        tm.rtt.on_timeout();
        tm.rtt_timing = 0;
        tm.cc.on_rto(now, mss, flight);
        tm.flags &= !tflag::RECOVERY;
        tm.flags |= tflag::LOSS;
        tm.dupacks = 0;
        tm.recover = tm.snd_max;
        tm.high_rxt = tm.snd_una;
        tm.snd_nxt = tm.snd_una;
        self.cancel_timer(i, timer::RTO);
        self.tcp_output(i, now);
        // tcp_output re-arms with the backed-off RTO.
        if !self.timer_armed(i, timer::RTO) {
            let at = now + self.tcbs[i as usize].rtt.rto_ns();
            self.arm_timer(i, timer::RTO, at);
        }
    }

    fn tcp_keepalive(&mut self, i: u32, now: u64) {
        let t = self.tcbs[i as usize];
        if !t.has(tflag::KEEPALIVE)
            || !matches!(
                t.state(),
                TcpState::Established | TcpState::CloseWait | TcpState::FinWait2
            )
        {
            return;
        }
        let idle = now.saturating_sub(t.last_rcv_ns);
        let idle_limit = u64::from(t.keepidle_s) * crate::clock::SEC;
        if idle < idle_limit && t.keepalive_probes_sent == 0 {
            self.arm_timer(i, timer::KEEPALIVE, t.last_rcv_ns + idle_limit);
            return;
        }
        if u32::from(t.keepalive_probes_sent) >= t.keepcnt {
            self.tcp_abort(i, now, libc::ETIMEDOUT);
            return;
        }
        // Probe: an ACK one below snd_una makes the peer answer with an ACK.
        let seq = t.snd_una - 1;
        self.tcp_send_ctl(i, seq, tf::ACK, now);
        let tm = &mut self.tcbs[i as usize];
        tm.keepalive_probes_sent = tm.keepalive_probes_sent.saturating_add(1);
        let at = now + u64::from(tm.keepintvl_s) * crate::clock::SEC;
        self.arm_timer(i, timer::KEEPALIVE, at);
    }
}

/// Bucket of a 4-tuple in the connection hash.
pub(crate) fn conn_bucket(n: usize, local: SocketAddrV4, remote: SocketAddrV4) -> usize {
    let mut h = u32::from(*remote.ip()).wrapping_mul(0x9e37_79b1);
    h ^= (u32::from(remote.port()) << 16 | u32::from(local.port())).wrapping_mul(0x85eb_ca6b);
    h ^= u32::from(*local.ip()).wrapping_mul(0xc2b2_ae35);
    h ^= h >> 15;
    h as usize & (n - 1)
}

/// The most data the next segment of `t` can carry: the MSS (already less
/// timestamps) less the SACK option (with its padding) it carries while
/// out-of-order data is queued, at most 3 blocks beside timestamps. Every
/// data segment is sized by this, new or retransmitted.
pub(crate) fn payload_mss(t: &Tcb) -> u32 {
    if !t.has(tflag::SACK) || t.ooo_ranges.is_empty() {
        return t.mss;
    }
    let max = if t.has(tflag::TS) { 3 } else { 4 };
    let n = t.ooo_ranges.iter().count().min(max) as u32;
    t.mss.saturating_sub(4 + 8 * n).max(64)
}

/// When to probe for a tail loss (RFC 8985 7.2), or None when no probe is
/// due: SACK on (the probe's answer is read through it), not recovering
/// already, no probe out, and a round-trip sample to scale by. Two smoothed
/// round trips, plus the peer's delayed-ACK allowance when one segment is
/// in flight (its ACK may be held back), and at least 10 ms (as Linux).
fn loss_probe_timeout(t: &Tcb) -> Option<u64> {
    const DELAYED_ACK_ALLOWANCE_NS: u64 = 200 * crate::clock::MS;
    const MIN_PTO_NS: u64 = 10 * crate::clock::MS;
    let srtt = t.rtt.srtt_ns();
    if !t.has(tflag::SACK)
        || t.has(tflag::RECOVERY)
        || t.has(tflag::LOSS)
        || t.has(tflag::TLP_OUT)
        || t.rto_count > 0
        || srtt == 0
    {
        return None;
    }
    let mut pto = 2 * srtt;
    if t.flight_size() <= t.mss {
        pto = pto.max(srtt + srtt / 2 + DELAYED_ACK_ALLOWANCE_NS);
    }
    Some(pto.max(MIN_PTO_NS))
}

impl Core<'_> {
    /// The probe timeout fired: resend the last segment sent, so that its
    /// ACK (or SACK) shows what the peer has, and recovery starts now
    /// rather than at the RTO; then the RTO runs as usual.
    fn tcp_loss_probe(&mut self, i: u32, now: u64) {
        let t = self.tcbs[i as usize];
        let len = ((t.snd_max - t.snd_una) as u32)
            .min(payload_mss(&t))
            .min(t.snd_bytes);
        let tm = &mut self.tcbs[i as usize];
        tm.flags &= !tflag::TLP_ARMED;
        tm.flags |= tflag::TLP_OUT;
        if len > 0 {
            let seq = t.snd_max - (len as usize);
            if self.tcp_emit(i, seq, tf::ACK, len as usize, now) {
                let tm = &mut self.tcbs[i as usize];
                tm.retransmits += 1;
                tm.rtt_timing = 0;
                self.hdr.counters.tcp_retransmits.inc();
                self.hdr.counters.tcp_loss_probes.inc();
            }
        }
        let at = now + self.tcbs[i as usize].rtt.rto_ns();
        self.arm_timer(i, timer::RTO, at);
    }
}
