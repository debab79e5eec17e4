//! The socket table: fixed slots in the arena, a free list, and the demux
//! hash that maps (protocol, local port) to the sockets bound there.

pub mod udp;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::counters::SocketCounters;
use crate::pool::{PktQueue, NIL};

/// A socket handle: its slot in the stack's table and the slot's
/// incarnation, so a handle kept after close never reaches the slot's next
/// occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

impl SocketId {
    /// The handle of slot `index` in its `incarnation`.
    pub fn new(index: u32, incarnation: u32) -> SocketId {
        SocketId(u64::from(incarnation) << 32 | u64::from(index))
    }

    /// Slot index.
    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// Incarnation of the slot this handle was issued for.
    pub fn incarnation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// What occupies a socket slot.
pub mod kind {
    /// Unused.
    pub const FREE: u8 = 0;
    /// A UDP socket.
    pub const UDP: u8 = 1;
    /// A TCP socket (its control block is in the TCB table at the same index).
    pub const TCP: u8 = 2;
}

/// Socket flags.
pub mod flag {
    /// Has a local port.
    pub const BOUND: u16 = 1 << 0;
    /// Has a remote address.
    pub const CONNECTED: u16 = 1 << 1;
    /// SO_BROADCAST: may send to broadcast addresses.
    pub const BROADCAST: u16 = 1 << 2;
    /// The local port was chosen by the stack.
    pub const EPHEMERAL: u16 = 1 << 3;
    /// SO_REUSEADDR: may share its port with sockets that are not listening
    /// (and a TIME_WAIT connection does not hold the port against it).
    pub const REUSEADDR: u16 = 1 << 4;
    /// SO_REUSEPORT (UDP): may share its address and port with other
    /// SO_REUSEPORT sockets; unicast datagrams are spread over them by flow.
    pub const REUSEPORT: u16 = 1 << 5;
}

/// Most multicast memberships of one socket (Linux's igmp_max_memberships).
pub const MAX_MEMBERSHIPS: usize = 20;
/// Most sources in one membership's filter (Linux's igmp_max_msf).
pub const MAX_SOURCES: usize = 10;

/// Source filter modes of a membership (the values of Linux's MCAST_*).
pub mod filter_mode {
    /// Receive from every source except those listed (IP_ADD_MEMBERSHIP,
    /// IP_BLOCK_SOURCE).
    pub const EXCLUDE: u8 = 0;
    /// Receive only from the sources listed (IP_ADD_SOURCE_MEMBERSHIP).
    pub const INCLUDE: u8 = 1;
}

/// One multicast group a socket joined, with its source filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Group address (network-order bytes).
    pub group: [u8; 4],
    /// Interface address given at join (0.0.0.0: the default interface).
    pub iface: [u8; 4],
    /// [`filter_mode`].
    pub mode: u8,
    /// Sources in use in `sources`.
    pub nsrc: u8,
    pub _pad: [u8; 2],
    pub sources: [[u8; 4]; MAX_SOURCES],
}

impl Membership {
    /// The group.
    pub fn group(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.group)
    }

    /// The sources of the filter.
    pub fn sources(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.sources[..usize::from(self.nsrc)]
            .iter()
            .map(|s| Ipv4Addr::from(*s))
    }

    /// Whether `src` is in the source list.
    pub fn lists(&self, src: Ipv4Addr) -> bool {
        self.sources[..usize::from(self.nsrc)].contains(&src.octets())
    }

    /// Linux's ip_mc_sf_allow for a socket holding this membership.
    pub fn allows(&self, src: Ipv4Addr) -> bool {
        self.lists(src) == (self.mode == filter_mode::INCLUDE)
    }
}

/// Multicast state of a socket: its memberships and IP_MULTICAST_* options.
#[repr(C)]
pub struct SockMcast {
    /// IP_MULTICAST_IF: source address of multicast sends (0.0.0.0: the
    /// interface's).
    pub if_addr: [u8; 4],
    /// IP_MULTICAST_TTL.
    pub ttl: u8,
    /// [`mc_flag`] bits.
    pub flags: u8,
    /// Memberships in use, at the front of `memberships`.
    pub count: u8,
    pub _pad: u8,
    pub memberships: [Membership; MAX_MEMBERSHIPS],
}

/// Bits of [`SockMcast::flags`], set when an option is off so that a fresh
/// (zeroed) socket has Linux's defaults.
pub mod mc_flag {
    /// IP_MULTICAST_LOOP off.
    pub const NO_LOOP: u8 = 1 << 0;
    /// IP_MULTICAST_ALL off.
    pub const NO_ALL: u8 = 1 << 1;
}

impl SockMcast {
    /// Linux's defaults: TTL 1, loop and all on, no memberships.
    pub(crate) fn reset(&mut self) {
        self.if_addr = [0; 4];
        self.ttl = 1;
        self.flags = 0;
        self.count = 0;
    }

    /// The memberships in use.
    pub fn memberships(&self) -> &[Membership] {
        &self.memberships[..usize::from(self.count)]
    }

    /// Index of the membership of `group`.
    pub fn find(&self, group: Ipv4Addr) -> Option<usize> {
        self.memberships()
            .iter()
            .position(|m| m.group == group.octets())
    }

    /// Whether a datagram from `src` to multicast `group` is for this
    /// socket (Linux's ip_mc_sf_allow): its membership's filter decides;
    /// with none, IP_MULTICAST_ALL does.
    pub fn allows(&self, group: Ipv4Addr, src: Ipv4Addr) -> bool {
        match self.find(group) {
            Some(i) => self.memberships[i].allows(src),
            None => self.flags & mc_flag::NO_ALL == 0,
        }
    }

    /// Removes membership `i`.
    pub(crate) fn remove(&mut self, i: usize) {
        let n = usize::from(self.count);
        self.memberships.copy_within(i + 1..n, i);
        self.count -= 1;
    }
}

/// One socket. Identity fields change under the slot's seqlock (`gen`) so
/// that stackdump can copy them from another process without tearing.
#[repr(C)]
pub struct SocketSlot {
    /// Seqlock generation: odd while identity fields change.
    pub gen: AtomicU32,
    pub kind: u8,
    pub _pad0: u8,
    pub flags: u16,
    /// Local address and port (network-order bytes, host-order port).
    pub local_ip: [u8; 4],
    pub local_port: u16,
    pub remote_port: u16,
    pub remote_ip: [u8; 4],
    /// Next socket in the same demux bucket, or in the free list.
    pub next: u32,
    /// Next socket in the same connection-hash bucket (TCP 4-tuple).
    pub conn_next: u32,
    /// Process that opened the socket.
    pub owner_pid: u32,
    /// Receive and send buffer limits (bytes).
    pub rcvbuf: u32,
    pub sndbuf: u32,
    /// Pending error (errno), reported once by the next call (SO_ERROR).
    pub so_error: i32,
    /// File descriptors referring to this socket, over every process
    /// attached to the stack (dup, fork): the last close closes the socket.
    pub fd_refs: u32,
    /// Bumped each time the slot is allocated (see [`SocketId`]).
    pub incarnation: u32,
    /// Received datagrams.
    pub rxq: PktQueue,
    pub counters: SocketCounters,
    /// Multicast memberships and options (UDP).
    pub mcast: SockMcast,
    /// The part of `fd_refs` each process holds, by its process-table
    /// entry: a process killed without closing its fds gives them back
    /// (see `Core::reap_dead_processes`).
    pub proc_refs: [u16; crate::procs::MAX_PROCS],
}

/// A consistent copy of a socket's identity, for observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub id: SocketId,
    pub kind: u8,
    pub flags: u16,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub owner_pid: u32,
    pub rx_queued: u32,
    pub rx_queued_bytes: u32,
    pub rcvbuf: u32,
}

impl SocketSlot {
    /// The local address.
    pub fn local(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.local_ip), self.local_port)
    }

    /// The remote address (0.0.0.0:0 if not connected).
    pub fn remote(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.remote_ip), self.remote_port)
    }

    /// Starts a change of identity fields (makes `gen` odd).
    pub(crate) fn begin_change(&self) {
        self.gen.fetch_add(1, Ordering::Release);
    }

    /// Ends a change of identity fields.
    pub(crate) fn end_change(&self) {
        self.gen.fetch_add(1, Ordering::Release);
    }

    /// Copies the identity under the seqlock; safe against a concurrent writer
    /// in another process. Returns None for a free slot.
    ///
    /// # Safety
    /// `p` must point to a slot inside a live arena mapping.
    pub unsafe fn read_info(p: *const SocketSlot, id: u32) -> Option<SocketInfo> {
        // SAFETY (whole fn): caller guarantees p is valid; fields are plain data
        // copied with volatile reads and validated by the generation check.
        let gen = unsafe { &(*p).gen };
        for _ in 0..1000 {
            let g1 = gen.load(Ordering::Acquire);
            if g1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let (kind, flags, lip, lport, rip, rport, pid, rxq, rcvbuf, inc) = unsafe {
                (
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).kind)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).flags)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).local_ip)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).local_port)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).remote_ip)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).remote_port)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).owner_pid)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).rxq)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).rcvbuf)),
                    std::ptr::read_volatile(std::ptr::addr_of!((*p).incarnation)),
                )
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if gen.load(Ordering::Relaxed) != g1 {
                continue;
            }
            if kind == kind::FREE {
                return None;
            }
            return Some(SocketInfo {
                id: SocketId::new(id, inc),
                kind,
                flags,
                local: SocketAddrV4::new(Ipv4Addr::from(lip), lport),
                remote: SocketAddrV4::new(Ipv4Addr::from(rip), rport),
                owner_pid: pid,
                rx_queued: rxq.count,
                rx_queued_bytes: rxq.bytes,
                rcvbuf,
            });
        }
        None
    }
}

/// Errors of socket calls, each with the errno the BSD API reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SockError {
    #[error("operation would block")]
    WouldBlock,
    #[error("address already in use")]
    AddrInUse,
    #[error("cannot assign requested address")]
    AddrNotAvailable,
    #[error("invalid argument")]
    Invalid,
    #[error("socket is not connected")]
    NotConnected,
    #[error("message too long")]
    MessageTooLong,
    #[error("permission denied (broadcast needs SO_BROADCAST)")]
    Access,
    #[error("no buffer space available")]
    NoBuffers,
    #[error("network is unreachable")]
    NetUnreachable,
    #[error("connection refused")]
    ConnRefused,
    #[error("bad socket handle")]
    BadSocket,
    #[error("too many open sockets in this stack")]
    TooManySockets,
    #[error("no free ephemeral port")]
    NoPorts,
    #[error("operation now in progress")]
    InProgress,
    #[error("socket is already connected")]
    IsConnected,
    #[error("broken pipe")]
    BrokenPipe,
    #[error("connection reset by peer")]
    ConnReset,
    #[error("connection timed out")]
    TimedOut,
    /// A blocking call was interrupted by a signal handler without SA_RESTART
    /// (the preload library's blocking loops report it).
    #[error("interrupted by a signal")]
    Interrupted,
    /// A multicast join named an interface address the stack does not have.
    #[error("no such device")]
    NoDevice,
}

impl SockError {
    /// The errno a BSD socket call would set.
    pub fn errno(self) -> i32 {
        match self {
            SockError::WouldBlock => libc::EAGAIN,
            SockError::AddrInUse => libc::EADDRINUSE,
            SockError::AddrNotAvailable | SockError::NoPorts => libc::EADDRNOTAVAIL,
            SockError::Invalid => libc::EINVAL,
            SockError::NotConnected => libc::ENOTCONN,
            SockError::MessageTooLong => libc::EMSGSIZE,
            SockError::Access => libc::EACCES,
            SockError::NoBuffers => libc::ENOBUFS,
            SockError::NetUnreachable => libc::ENETUNREACH,
            SockError::ConnRefused => libc::ECONNREFUSED,
            SockError::BadSocket => libc::EBADF,
            SockError::TooManySockets => libc::ENFILE,
            SockError::InProgress => libc::EINPROGRESS,
            SockError::IsConnected => libc::EISCONN,
            SockError::BrokenPipe => libc::EPIPE,
            SockError::ConnReset => libc::ECONNRESET,
            SockError::TimedOut => libc::ETIMEDOUT,
            SockError::Interrupted => libc::EINTR,
            SockError::NoDevice => libc::ENODEV,
        }
    }

    /// The error for a pending errno (SO_ERROR).
    pub fn from_errno(e: i32) -> SockError {
        match e {
            libc::ECONNREFUSED => SockError::ConnRefused,
            libc::ENETUNREACH | libc::EHOSTUNREACH => SockError::NetUnreachable,
            libc::EMSGSIZE => SockError::MessageTooLong,
            libc::ECONNRESET => SockError::ConnReset,
            libc::ETIMEDOUT => SockError::TimedOut,
            libc::EPIPE => SockError::BrokenPipe,
            libc::ENODEV => SockError::NoDevice,
            _ => SockError::Invalid,
        }
    }
}

/// Ephemeral port range (Linux's default ip_local_port_range).
pub const EPHEMERAL_FIRST: u16 = 32768;
/// Last ephemeral port.
pub const EPHEMERAL_LAST: u16 = 60999;

/// Demux bucket of (protocol, port).
pub(crate) fn bucket(nbuckets: usize, proto: u8, port: u16) -> usize {
    let h = (u32::from(port) | (u32::from(proto) << 16)).wrapping_mul(0x9e37_79b1);
    (h >> 7) as usize & (nbuckets - 1)
}

/// Formats a fresh socket table: every slot free and on the free list.
pub(crate) fn format(sockets: &mut [SocketSlot], hash: &mut [u32]) -> u32 {
    let n = sockets.len();
    for (i, s) in sockets.iter_mut().enumerate() {
        // SAFETY: SocketSlot is plain data and atomics; all-zero is a valid value.
        unsafe { std::ptr::write_bytes(s as *mut SocketSlot, 0, 1) };
        s.rxq = PktQueue::EMPTY;
        s.conn_next = NIL;
        s.next = if i + 1 < n { i as u32 + 1 } else { NIL };
    }
    hash.fill(NIL);
    if n > 0 {
        0
    } else {
        NIL
    }
}

impl crate::stack::Core<'_> {
    /// Takes a free socket slot for a new socket of `kind`.
    pub(crate) fn alloc_slot(&mut self, k: u8) -> Result<u32, SockError> {
        let i = self.st.sock_free;
        if i == NIL {
            return Err(SockError::TooManySockets);
        }
        let (rcv, snd) = (
            self.hdr.config.rcvbuf_default,
            self.hdr.config.sndbuf_default,
        );
        let slot = &mut self.sockets[i as usize];
        self.st.sock_free = slot.next;
        slot.begin_change();
        slot.kind = k;
        slot.flags = 0;
        slot.local_ip = [0; 4];
        slot.local_port = 0;
        slot.remote_ip = [0; 4];
        slot.remote_port = 0;
        slot.next = NIL;
        slot.conn_next = NIL;
        slot.owner_pid = std::process::id();
        slot.rcvbuf = rcv;
        slot.sndbuf = snd;
        slot.so_error = 0;
        slot.fd_refs = 0;
        slot.proc_refs = [0; crate::procs::MAX_PROCS];
        slot.rxq = PktQueue::EMPTY;
        slot.counters.reset();
        slot.mcast.reset();
        slot.incarnation = slot.incarnation.wrapping_add(1);
        slot.end_change();
        self.st.sockets_open += 1;
        self.publish_usage();
        Ok(i)
    }

    /// Counts one more file descriptor on socket `s` (open, dup, fork).
    pub fn fd_ref(&mut self, s: SocketId, by: Option<usize>) -> Result<u32, SockError> {
        let slot = self.live_slot(s)?;
        slot.fd_refs = slot.fd_refs.saturating_add(1);
        if let Some(r) = by.and_then(|p| slot.proc_refs.get_mut(p)) {
            *r = r.saturating_add(1);
        }
        Ok(slot.fd_refs)
    }

    /// Counts one file descriptor fewer (held by process-table entry `by`);
    /// returns how many remain (0: the caller closes the socket).
    pub fn fd_unref(&mut self, s: SocketId, by: Option<usize>) -> Result<u32, SockError> {
        let slot = self.live_slot(s)?;
        slot.fd_refs = slot.fd_refs.saturating_sub(1);
        if let Some(r) = by.and_then(|p| slot.proc_refs.get_mut(p)) {
            *r = r.saturating_sub(1);
        }
        Ok(slot.fd_refs)
    }

    /// Moves one reference of `s` from process entry `from` to `to` (a fork
    /// child's inherited fd, counted by its parent before fork).
    pub fn fd_ref_move(&mut self, s: SocketId, from: usize, to: usize) {
        if let Ok(slot) = self.live_slot(s) {
            let max = slot.proc_refs.len();
            if from < max && to < max && slot.proc_refs[from] > 0 {
                slot.proc_refs[from] -= 1;
                slot.proc_refs[to] = slot.proc_refs[to].saturating_add(1);
            }
        }
    }

    /// A number that changes whenever something arrives for socket `s`
    /// (a segment, a datagram, a connection to accept): edge-triggered
    /// readiness (EPOLLET) reports again when it moves.
    pub fn socket_event_seq(&self, s: SocketId) -> u64 {
        match self.sockets.get(s.index() as usize) {
            Some(sl) if sl.kind != kind::FREE && sl.incarnation == s.incarnation() => {
                let accepted = if sl.kind == kind::TCP {
                    u64::from(self.tcbs[s.index() as usize].acceptq_len) << 40
                } else {
                    0
                };
                sl.counters.rx_packets.get().wrapping_add(accepted)
            }
            _ => 0,
        }
    }

    fn live_slot(&mut self, s: SocketId) -> Result<&mut SocketSlot, SockError> {
        match self.sockets.get_mut(s.index() as usize) {
            Some(sl) if sl.kind != kind::FREE && sl.incarnation == s.incarnation() => Ok(sl),
            _ => Err(SockError::BadSocket),
        }
    }

    /// Returns slot `i` to the free list (its queues must be empty).
    pub(crate) fn free_slot(&mut self, i: u32) {
        self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        let slot = &mut self.sockets[i as usize];
        slot.begin_change();
        slot.kind = kind::FREE;
        slot.flags = 0;
        slot.next = self.st.sock_free;
        slot.end_change();
        self.st.sock_free = i;
        self.st.sockets_open -= 1;
        self.publish_usage();
    }

    /// Removes slot `i` from the local-port demux hash.
    pub(crate) fn unhash_port(&mut self, i: u32, k: u8) {
        let slot = &self.sockets[i as usize];
        if slot.flags & flag::BOUND == 0 {
            return;
        }
        let b = bucket(self.hash.len(), k, slot.local_port);
        let next = slot.next;
        if self.hash[b] == i {
            self.hash[b] = next;
            return;
        }
        let mut cur = self.hash[b];
        while cur != NIL {
            if self.sockets[cur as usize].next == i {
                self.sockets[cur as usize].next = next;
                return;
            }
            cur = self.sockets[cur as usize].next;
        }
    }
}
