//! Read-only observers over an [`Arena`] (which may be mapped read-only):
//! what `rbypass stackdump` shows beyond identity and counters. Nothing here
//! takes the stack lock or writes to the arena.
//!
//! Every read is bounded. Values guarded by a seqlock (the published core
//! state, a socket slot's identity) are copied under it; values that the
//! lock holder changes with plain stores (queue lengths, timers, the TCB)
//! are copied twice and kept only when both copies agree. A read that does
//! not settle within [`RETRIES`] attempts is reported as busy (`None` or
//! [`Read::Busy`]) rather than returned torn, so the caller can say "busy,
//! retry" for that item.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{fence, Ordering};

use crate::arena::{Arena, CoreState, Published};
use crate::pool::{PktQueue, PoolHdr};
use crate::socket::{kind, SocketId, SocketSlot};
use crate::tcp::cc::CongestionControl;
use crate::tcp::tcb::{Tcb, TcpState};
use crate::timer::{TimerEntry, TimerWheelHdr};

/// Attempts made before a read is reported busy.
pub const RETRIES: u32 = 1000;

/// The outcome of a bounded read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read<T> {
    /// A consistent copy.
    Ok(T),
    /// Writers kept changing it (or one stopped half way): not read.
    Busy,
}

impl<T> Read<T> {
    /// The value, if it was read.
    pub fn ok(self) -> Option<T> {
        match self {
            Read::Ok(v) => Some(v),
            Read::Busy => None,
        }
    }
}

/// Reads `f()` twice in a row until both copies agree (at most [`RETRIES`] times).
fn stable<T: PartialEq>(mut f: impl FnMut() -> T) -> Option<T> {
    for i in 0..RETRIES {
        let a = f();
        fence(Ordering::Acquire);
        let b = f();
        if a == b {
            return Some(a);
        }
        if i > RETRIES / 2 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    None
}

/// The published core state (interface, usage, NIC) under its seqlock;
/// `None` if a writer held the seqlock through every attempt (for instance a
/// process killed while publishing). Unlike [`Arena::snapshot`], never spins
/// forever.
pub fn published(arena: &Arena) -> Option<Published> {
    let hdr = arena.header();
    let p = arena.region::<CoreState>(hdr.layout.core_off, 1);
    for i in 0..RETRIES {
        let g1 = hdr.pub_gen.load(Ordering::Acquire);
        if g1 & 1 == 0 {
            // SAFETY: in bounds (region checked); a volatile copy of plain
            // data, validated by the generation check below.
            let v = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).published)) };
            fence(Ordering::Acquire);
            if hdr.pub_gen.load(Ordering::Relaxed) == g1 {
                return Some(v);
            }
        }
        if i > RETRIES / 2 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    None
}

/// Core-state figures that are not under the seqlock (the lock holder
/// changes them): the transmit and loopback queues and the stack's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreView {
    /// Frames waiting for the NIC.
    pub tx_queue: u32,
    /// Bytes charged to the transmit queue.
    pub tx_queue_bytes: u32,
    /// Frames on the in-arena loopback ring.
    pub loop_queue: u32,
    /// The last time passed to the stack, ns (its clock: monotonic or virtual).
    pub now_ns: u64,
    /// Open sockets.
    pub sockets_open: u32,
    /// Changes whenever a socket's binding changes.
    pub binding_gen: u32,
    /// Work bits posted for the lock holder.
    pub pending_work: u32,
}

/// Reads [`CoreView`] (two agreeing copies).
pub fn core(arena: &Arena) -> Option<CoreView> {
    let hdr = arena.header();
    let p = arena.region::<CoreState>(hdr.layout.core_off, 1);
    stable(|| {
        // SAFETY: in bounds; volatile copies of plain data fields.
        unsafe {
            let tx: PktQueue = std::ptr::read_volatile(std::ptr::addr_of!((*p).tx_queue));
            let head = std::ptr::read_volatile(std::ptr::addr_of!((*p).loop_head));
            let tail = std::ptr::read_volatile(std::ptr::addr_of!((*p).loop_tail));
            CoreView {
                tx_queue: tx.count,
                tx_queue_bytes: tx.bytes,
                loop_queue: tail.wrapping_sub(head),
                now_ns: std::ptr::read_volatile(std::ptr::addr_of!((*p).last_now_ns)),
                sockets_open: std::ptr::read_volatile(std::ptr::addr_of!((*p).sockets_open)),
                binding_gen: std::ptr::read_volatile(std::ptr::addr_of!((*p).binding_gen)),
                pending_work: std::ptr::read_volatile(std::ptr::addr_of!((*p).pending_work)),
            }
        }
    })
}

/// The packet-buffer pool's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolView {
    /// Buffers in the pool.
    pub total: u32,
    /// Buffers on the free stack.
    pub free: u32,
    /// Buffers referenced (queues, NIC rings, in flight).
    pub in_use: u32,
    /// Queue nodes (links of buffer queues) in the arena.
    pub qnodes_total: u32,
}

/// Reads the pool's use (two agreeing copies of the free count).
pub fn pool(arena: &Arena) -> Option<PoolView> {
    let hdr = arena.header();
    let p = arena.region::<PoolHdr>(hdr.layout.pool_hdr_off, 1);
    let total = hdr.config.max_bufs;
    // SAFETY: in bounds; a volatile copy of a plain u32.
    let free = stable(|| unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).free_top)) })?
        .min(total);
    Some(PoolView {
        total,
        free,
        in_use: total - free,
        qnodes_total: hdr.config.max_qnodes(),
    })
}

/// Everything a socket slot says about its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    pub id: SocketId,
    /// [`kind`]: UDP or TCP.
    pub kind: u8,
    /// [`crate::socket::flag`] bits.
    pub flags: u16,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub owner_pid: u32,
    pub rcvbuf: u32,
    pub sndbuf: u32,
    /// Pending error (errno), 0 for none.
    pub so_error: i32,
    /// File descriptors referring to the socket, over every process.
    pub fd_refs: u32,
    /// Received datagrams waiting (UDP): buffers and bytes.
    pub rxq_bufs: u32,
    pub rxq_bytes: u32,
}

/// Reads socket slot `index`: [`Read::Ok`]`(None)` for a free slot.
pub fn slot(arena: &Arena, index: u32) -> Read<Option<SlotView>> {
    let h = arena.header();
    if index >= h.config.max_sockets {
        return Read::Ok(None);
    }
    let base = arena.region::<SocketSlot>(h.layout.sockets_off, h.config.max_sockets.into());
    // SAFETY: index < max_sockets, inside the region checked by `region`.
    let p = unsafe { base.add(index as usize) };
    // SAFETY: p points into the live mapping.
    let gen = unsafe { &(*p).gen };
    for i in 0..RETRIES {
        let g1 = gen.load(Ordering::Acquire);
        if g1 & 1 == 0 {
            let copy = || {
                // SAFETY: volatile copies of plain data; validated by the
                // generation check and by a second agreeing copy.
                unsafe {
                    let k = std::ptr::read_volatile(std::ptr::addr_of!((*p).kind));
                    let rxq: PktQueue = std::ptr::read_volatile(std::ptr::addr_of!((*p).rxq));
                    SlotView {
                        id: SocketId::new(
                            index,
                            std::ptr::read_volatile(std::ptr::addr_of!((*p).incarnation)),
                        ),
                        kind: k,
                        flags: std::ptr::read_volatile(std::ptr::addr_of!((*p).flags)),
                        local: SocketAddrV4::new(
                            Ipv4Addr::from(std::ptr::read_volatile(std::ptr::addr_of!(
                                (*p).local_ip
                            ))),
                            std::ptr::read_volatile(std::ptr::addr_of!((*p).local_port)),
                        ),
                        remote: SocketAddrV4::new(
                            Ipv4Addr::from(std::ptr::read_volatile(std::ptr::addr_of!(
                                (*p).remote_ip
                            ))),
                            std::ptr::read_volatile(std::ptr::addr_of!((*p).remote_port)),
                        ),
                        owner_pid: std::ptr::read_volatile(std::ptr::addr_of!((*p).owner_pid)),
                        rcvbuf: std::ptr::read_volatile(std::ptr::addr_of!((*p).rcvbuf)),
                        sndbuf: std::ptr::read_volatile(std::ptr::addr_of!((*p).sndbuf)),
                        so_error: std::ptr::read_volatile(std::ptr::addr_of!((*p).so_error)),
                        fd_refs: std::ptr::read_volatile(std::ptr::addr_of!((*p).fd_refs)),
                        rxq_bufs: rxq.count,
                        rxq_bytes: rxq.bytes,
                    }
                }
            };
            let a = copy();
            fence(Ordering::Acquire);
            let b = copy();
            fence(Ordering::Acquire);
            if a == b && gen.load(Ordering::Relaxed) == g1 {
                return Read::Ok((a.kind != kind::FREE).then_some(a));
            }
        }
        if i > RETRIES / 2 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    Read::Busy
}

/// Every slot that is not free (or could not be read): index and read.
pub fn slots(arena: &Arena) -> Vec<(u32, Read<SlotView>)> {
    (0..arena.header().config.max_sockets)
        .filter_map(|i| match slot(arena, i) {
            Read::Ok(Some(v)) => Some((i, Read::Ok(v))),
            Read::Ok(None) => None,
            Read::Busy => Some((i, Read::Busy)),
        })
        .collect()
}

/// A TCP control block, as stackdump shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpView {
    pub state: TcpState,
    /// [`crate::tcp::tcb::tflag`] bits.
    pub flags: u32,
    /// In-order data not yet read: buffers and bytes.
    pub rcvq_bufs: u32,
    pub rcvq_bytes: u32,
    /// Out-of-order segments held: buffers and bytes.
    pub oooq_bufs: u32,
    pub oooq_bytes: u32,
    /// Data written and not yet acknowledged: buffers and bytes.
    pub sndq_bufs: u32,
    pub snd_bytes: u32,
    /// Bytes sent and not yet acknowledged.
    pub flight: u32,
    pub rcvbuf: u32,
    pub sndbuf: u32,
    pub mss: u32,
    pub snd_wnd: u32,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub srtt_us: u64,
    pub rto_us: u64,
    pub retransmits: u32,
    pub dupacks: u32,
    pub ooo_segs: u32,
    pub rto_count: u32,
    /// Listener: established connections waiting for accept, half-open
    /// ones, and the backlog.
    pub acceptq_len: u32,
    pub synq_len: u32,
    pub backlog: u32,
    /// A connection from a listener: the listener's socket index.
    pub listener: Option<u32>,
    /// Congestion control, as Linux names it.
    pub cc: &'static str,
    /// Keepalive idle, interval (s) and probes; user timeout (ms).
    pub keepidle_s: u32,
    pub keepintvl_s: u32,
    pub keepcnt: u32,
    pub user_timeout_ms: u32,
}

impl TcpView {
    fn of(t: &Tcb) -> TcpView {
        TcpView {
            state: t.state(),
            flags: t.flags,
            rcvq_bufs: t.rcvq.count,
            rcvq_bytes: t.rcvq.bytes,
            oooq_bufs: t.oooq.count,
            oooq_bytes: t.oooq.bytes,
            sndq_bufs: t.sndq.count,
            snd_bytes: t.snd_bytes,
            flight: t.flight_size(),
            rcvbuf: t.rcvbuf,
            sndbuf: t.sndbuf,
            mss: t.mss,
            snd_wnd: t.snd_wnd,
            cwnd: t.cc.cwnd(),
            ssthresh: t.cc.ssthresh(),
            srtt_us: t.rtt.srtt_ns() / 1000,
            rto_us: t.rtt.rto_ns() / 1000,
            retransmits: t.retransmits,
            dupacks: t.dupacks_rcvd,
            ooo_segs: t.ooo_segs,
            rto_count: t.rto_count,
            acceptq_len: t.acceptq_len,
            synq_len: t.synq_len,
            backlog: t.backlog,
            listener: (t.listener != u32::MAX).then_some(t.listener),
            cc: t.cc.algo().name(),
            keepidle_s: t.keepidle_s,
            keepintvl_s: t.keepintvl_s,
            keepcnt: t.keepcnt,
            user_timeout_ms: t.user_timeout_ms,
        }
    }
}

/// Reads the TCB of socket slot `index`: [`Read::Ok`]`(None)` if the slot
/// does not hold a TCP socket.
pub fn tcp(arena: &Arena, index: u32) -> Read<Option<TcpView>> {
    let h = arena.header();
    if index >= h.config.max_sockets {
        return Read::Ok(None);
    }
    let tbase = arena.region::<Tcb>(h.layout.tcbs_off, h.config.max_sockets.into());
    let sbase = arena.region::<SocketSlot>(h.layout.sockets_off, h.config.max_sockets.into());
    // SAFETY: index < max_sockets, inside both regions.
    let (tp, sp) = unsafe { (tbase.add(index as usize), sbase.add(index as usize)) };
    // SAFETY: sp points into the live mapping.
    let gen = unsafe { &(*sp).gen };
    for i in 0..RETRIES {
        let g1 = gen.load(Ordering::Acquire);
        if g1 & 1 == 0 {
            // SAFETY: volatile copies of plain data, validated below.
            let k = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*sp).kind)) };
            if k != kind::TCP {
                if gen.load(Ordering::Acquire) == g1 {
                    return Read::Ok(None);
                }
                continue;
            }
            // SAFETY: as above; Tcb is plain `Copy` data.
            let a = TcpView::of(&unsafe { std::ptr::read_volatile(tp) });
            fence(Ordering::Acquire);
            // SAFETY: as above.
            let b = TcpView::of(&unsafe { std::ptr::read_volatile(tp) });
            fence(Ordering::Acquire);
            if a == b && gen.load(Ordering::Relaxed) == g1 {
                return Read::Ok(Some(a));
            }
        }
        if i > RETRIES / 2 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    Read::Busy
}

/// What an armed timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOwner {
    /// ARP entry retry or expiry (the entry's index).
    Arp { entry: u32 },
    /// A TCP timer of a socket (slot index) and which one.
    Tcp { socket: u32, which: &'static str },
    /// A kind this build does not know.
    Other { kind: u16, owner: u32 },
}

impl TimerOwner {
    /// Short name of the timer's kind (`arp`, `tcp-rto`, ...).
    pub fn kind_name(&self) -> String {
        match self {
            TimerOwner::Arp { .. } => "arp".into(),
            TimerOwner::Tcp { which, .. } => format!("tcp-{which}"),
            TimerOwner::Other { kind, .. } => format!("kind{kind}"),
        }
    }

    /// The socket slot the timer belongs to, if any.
    pub fn socket(&self) -> Option<u32> {
        match self {
            TimerOwner::Tcp { socket, .. } => Some(*socket),
            _ => None,
        }
    }
}

/// One armed timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerView {
    /// Index of the timer entry.
    pub id: u32,
    pub owner: TimerOwner,
    /// When it expires, on the stack's clock (ns).
    pub expires_ns: u64,
}

/// The timer wheel: its header and its armed timers, soonest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimersView {
    /// Slot width, ns.
    pub tick_ns: u64,
    pub slots: u32,
    /// Armed entries, as the wheel counts them.
    pub armed: u32,
    /// The stack's clock when last polled (ns); due times are relative to it.
    pub now_ns: u64,
    pub timers: Vec<TimerView>,
    /// Entries that kept changing while read (left out of `timers`).
    pub busy: u32,
}

fn timer_owner(kind: u16, owner: u32) -> TimerOwner {
    match kind {
        crate::stack::TIMER_ARP => TimerOwner::Arp { entry: owner },
        crate::tcp::conn::TIMER_TCP => {
            use crate::tcp::conn::timer;
            let per = crate::arena::TIMERS_PER_SOCKET;
            let which = match owner % per {
                timer::RTO => "rto",
                timer::DELACK => "delack",
                timer::KEEPALIVE => "keepalive",
                timer::WAIT => "wait",
                _ => "other",
            };
            TimerOwner::Tcp {
                socket: owner / per,
                which,
            }
        }
        _ => TimerOwner::Other { kind, owner },
    }
}

/// Reads the timer wheel: every armed entry (each entry copied twice and
/// kept when both copies agree). `None` if the header would not settle.
pub fn timers(arena: &Arena) -> Option<TimersView> {
    let h = arena.header();
    let wh = arena.region::<TimerWheelHdr>(h.layout.timer_hdr_off, 1);
    // SAFETY: in bounds; a volatile copy of plain data.
    let whdr = stable(|| unsafe { std::ptr::read_volatile(wh) })?;
    let now_ns = core(arena)?.now_ns;
    let n = h.config.max_timers();
    let base = arena.region::<TimerEntry>(h.layout.timer_entries_off, n.into());
    let mut timers = Vec::new();
    let mut busy = 0;
    for id in 0..n {
        // SAFETY: id < max_timers, inside the region.
        let p = unsafe { base.add(id as usize) };
        // SAFETY: a volatile copy of plain data, checked by `stable`.
        match stable(|| unsafe { std::ptr::read_volatile(p) }) {
            Some(e) if e.armed != 0 => timers.push(TimerView {
                id,
                owner: timer_owner(e.kind, e.owner),
                expires_ns: e.expires_ns,
            }),
            Some(_) => {}
            None => busy += 1,
        }
    }
    timers.sort_by_key(|t| (t.expires_ns, t.id));
    Some(TimersView {
        tick_ns: whdr.tick_ns,
        slots: whdr.nslots,
        armed: whdr.armed,
        now_ns,
        timers,
        busy,
    })
}

/// One flow a device must steer to the stack: (protocol, local address or
/// any, port), as the XDP flow map mirrors the stack's bindings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    /// [`kind`]: UDP or TCP.
    pub kind: u8,
    /// The local address, `None` for any (0.0.0.0).
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
    /// The socket slots bound there.
    pub sockets: Vec<u32>,
}

/// The stack's flows, derived from the socket table as the device filter
/// does (every open socket with a local port), one per (protocol, address,
/// port), sorted. Slots that could not be read are counted in the second value.
pub fn flows(arena: &Arena) -> (Vec<Flow>, u32) {
    let mut out: Vec<Flow> = Vec::new();
    let mut busy = 0;
    for (i, r) in slots(arena) {
        let s = match r {
            Read::Ok(s) => s,
            Read::Busy => {
                busy += 1;
                continue;
            }
        };
        if s.local.port() == 0 {
            continue;
        }
        let addr = (!s.local.ip().is_unspecified()).then_some(*s.local.ip());
        match out
            .iter_mut()
            .find(|f| f.kind == s.kind && f.addr == addr && f.port == s.local.port())
        {
            Some(f) => f.sockets.push(i),
            None => out.push(Flow {
                kind: s.kind,
                addr,
                port: s.local.port(),
                sockets: vec![i],
            }),
        }
    }
    out.sort();
    (out, busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IfaceConfig, Stack, StackConfig};

    fn stack(tag: &str) -> Stack {
        let path = std::path::PathBuf::from(format!(
            "/dev/shm/rbypass-observe-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let cfg = StackConfig {
            max_sockets: 16,
            max_bufs: 256,
            ..StackConfig::default()
        };
        let mut s = Stack::create_at(&path, "", &cfg, IfaceConfig::loopback()).unwrap();
        s.set_remove_on_drop(true);
        s
    }

    #[test]
    fn sees_sockets_queues_timers_and_flows() {
        let s = stack("all");
        let lo = Ipv4Addr::LOCALHOST;
        let mut now = 1_000_000_000;
        let (u, l, cl) = {
            let mut c = s.lock();
            let u = c.udp_open().unwrap();
            c.udp_bind(u, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7001))
                .unwrap();
            let l = c.tcp_open().unwrap();
            c.tcp_bind(l, SocketAddrV4::new(lo, 7002)).unwrap();
            c.tcp_listen(l, 8).unwrap();
            let cl = c.tcp_open().unwrap();
            c.tcp_connect(cl, SocketAddrV4::new(lo, 7002), now).unwrap();
            for _ in 0..10 {
                now += 1_000_000;
                c.poll(now);
            }
            c.tcp_send(cl, b"hello", now).unwrap();
            (u, l, cl)
        };
        let ro = Arena::open_readonly(s.arena().path()).unwrap();
        let p = published(&ro).unwrap();
        assert_eq!(p, ro.snapshot());
        let sl = slots(&ro);
        assert_eq!(sl.len(), 4, "udp, listener, client, accepted child");
        let uv = slot(&ro, u.index()).ok().flatten().unwrap();
        assert_eq!(uv.kind, kind::UDP);
        assert_eq!(uv.local.port(), 7001);
        let lv = tcp(&ro, l.index()).ok().flatten().unwrap();
        assert_eq!(lv.state, TcpState::Listen);
        assert_eq!(lv.acceptq_len, 1);
        let cv = tcp(&ro, cl.index()).ok().flatten().unwrap();
        assert_eq!(cv.state, TcpState::Established);
        assert_eq!(cv.snd_bytes, 5);
        assert_eq!(tcp(&ro, u.index()), Read::Ok(None));
        let pv = pool(&ro).unwrap();
        assert_eq!(pv.total, 256);
        assert!(pv.in_use > 0 && pv.in_use + pv.free == 256);
        let cr = core(&ro).unwrap();
        assert_eq!(cr.sockets_open, 4);
        assert_eq!(cr.now_ns, now);
        let t = timers(&ro).unwrap();
        assert!(
            t.timers.iter().any(|t| t.owner
                == TimerOwner::Tcp {
                    socket: cl.index(),
                    which: "rto"
                }),
            "{t:?}"
        );
        let (f, busy) = flows(&ro);
        assert_eq!(busy, 0);
        assert!(f
            .iter()
            .any(|f| f.kind == kind::UDP && f.addr.is_none() && f.port == 7001));
        assert!(f.iter().any(|f| f.kind == kind::TCP
            && f.addr == Some(lo)
            && f.port == 7002
            && f.sockets.len() == 2));
    }

    #[test]
    fn a_seqlock_held_forever_reads_busy() {
        let s = stack("busy");
        let u = s.lock().udp_open().unwrap();
        s.header().pub_gen.fetch_add(1, Ordering::AcqRel);
        assert_eq!(published(s.arena()), None);
        s.header().pub_gen.fetch_add(1, Ordering::AcqRel);
        assert!(published(s.arena()).is_some());
        let base = s.arena().region::<SocketSlot>(
            s.header().layout.sockets_off,
            s.header().config.max_sockets.into(),
        );
        // SAFETY: slot 0.. is in the region; gen is atomic.
        let g = unsafe { &(*base.add(u.index() as usize)).gen };
        g.fetch_add(1, Ordering::AcqRel);
        assert_eq!(slot(s.arena(), u.index()), Read::Busy);
        g.fetch_add(1, Ordering::AcqRel);
        assert!(matches!(slot(s.arena(), u.index()), Read::Ok(Some(_))));
    }
}
