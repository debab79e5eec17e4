//! A process's handle on a stack ([`Stack`]) and the view of its state that
//! the stack lock grants ([`Core`], through [`StackGuard`]).
//!
//! `Core` is where the protocol logic runs. It is sans-IO: a NIC backend
//! hands it received frames with [`Core::receive`], advances time with
//! [`Core::poll`], and takes frames to transmit with [`Core::dequeue_tx`].

use std::net::SocketAddrV4;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::arena::{
    self, Arena, ArenaError, ArenaHeader, CoreState, Layout, Published, StackConfig,
};
use crate::iface::arp_cache::ArpEntry;
use crate::iface::IfaceConfig;
use crate::pool::{BufId, PktMeta, PktQueue, Pool, PoolHdr, QNode, NIL};
use crate::socket::{self, SocketInfo, SocketSlot};
use crate::timer::{TimerEntry, TimerWheel, TimerWheelHdr};

/// A process's attachment to a stack arena.
pub struct Stack {
    arena: Arena,
    lay: Layout,
    cfg: StackConfig,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("path", &self.arena.path())
            .finish()
    }
}

impl Stack {
    /// Creates a private stack for this process (removed when dropped).
    pub fn create_private(cfg: &StackConfig, iface: IfaceConfig) -> Result<Stack, ArenaError> {
        let path = arena::path_for_pid(std::process::id());
        // A previous run of a process with our pid cannot still be alive.
        let _ = std::fs::remove_file(&path);
        let mut s = Self::create_at(&path, "", cfg, iface)?;
        s.arena.set_unlink_on_drop(true);
        Ok(s)
    }

    /// Creates a named stack other processes can attach to by name.
    pub fn create_named(
        name: &str,
        cfg: &StackConfig,
        iface: IfaceConfig,
    ) -> Result<Stack, ArenaError> {
        arena::validate_name(name)?;
        Self::create_at(&arena::path_for_name(name), name, cfg, iface)
    }

    /// Creates a stack at an explicit path (tests, private stacks).
    pub fn create_at(
        path: &Path,
        name: &str,
        cfg: &StackConfig,
        iface: IfaceConfig,
    ) -> Result<Stack, ArenaError> {
        // Time starts at 0: callers may drive the stack with a virtual clock or
        // with CLOCK_MONOTONIC, and the first poll moves it forward either way.
        let now = 0;
        let arena = Arena::create(path, name, cfg, |a| {
            let lay = Layout::for_config(cfg);
            // SAFETY: the arena is still private to us; formatting writes every table.
            let mut core = unsafe { Core::from_arena(a, &lay, cfg) };
            core.format(iface, now, cfg);
        })?;
        Ok(Stack {
            lay: arena.header().layout,
            cfg: arena.header().config,
            arena,
        })
    }

    /// Attaches read-write to a named stack.
    pub fn open_named(name: &str) -> Result<Stack, ArenaError> {
        arena::validate_name(name)?;
        Self::open_at(&arena::path_for_name(name))
    }

    /// Attaches read-write to the stack at `path`.
    pub fn open_at(path: &Path) -> Result<Stack, ArenaError> {
        let arena = Arena::open(path)?;
        tracing::debug!(path = %path.display(), creator = arena.header().creator_pid, "attached to stack arena");
        Ok(Stack {
            lay: arena.header().layout,
            cfg: arena.header().config,
            arena,
        })
    }

    /// Attaches to the named stack, creating it if it does not exist yet.
    pub fn open_or_create_named(
        name: &str,
        cfg: &StackConfig,
        iface: IfaceConfig,
    ) -> Result<Stack, ArenaError> {
        loop {
            match Self::open_named(name) {
                Err(ArenaError::NotFound(_)) => {}
                Ok(s) if abandoned(&s.arena) => {
                    // Every process of the old stack is gone (killed, or the
                    // host's process set crashed): start afresh, as a stack
                    // with no process left is removed.
                    if s.arena.unlink_if_same() {
                        tracing::info!(
                            "stack {name}: removed the arena its dead processes left (creator pid {})",
                            s.header().creator_pid
                        );
                    }
                    continue;
                }
                other => return other,
            }
            match Self::create_named(name, cfg, iface) {
                Err(ArenaError::Exists(_)) => continue,
                other => return other,
            }
        }
    }

    /// Removes the stack's file when this handle is dropped.
    pub fn set_remove_on_drop(&mut self, yes: bool) {
        self.arena.set_unlink_on_drop(yes);
    }

    /// The underlying arena mapping.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// The stack's capacities.
    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// The arena header (counters, lock, identity).
    pub fn header(&self) -> &ArenaHeader {
        self.arena.header()
    }

    /// Takes the stack lock.
    pub fn lock(&self) -> StackGuard<'_> {
        let how = self.arena.header().lock.lock();
        // SAFETY: the lock is held until the guard drops; the arena outlives it.
        let mut core = unsafe { Core::from_arena(&self.arena, &self.lay, &self.cfg) };
        if how == crate::lock::Acquired::FromDeadOwner {
            // A process died inside the stack: its critical section may be
            // half done. Say so, and check the tables it could have left.
            // Before anything reads the published state: a writer that died
            // mid-update left its seqlock odd, and readers would wait forever.
            let closed = core.close_seqlocks();
            core.reap_dead_processes(crate::clock::now_ns());
            // AF_XDP rings hold pool buffers the stack cannot see (other
            // devices copy frames in and out under the lock).
            let on_device = self.snapshot().nic_desc().starts_with("xdp:");
            let mut r = core.repair_pool(on_device);
            r.seqlocks_closed = closed;
            if r != crate::repair::Repair::default() {
                tracing::warn!(
                    "stack {}: after a process died in it: {r:?}{}",
                    self.arena.path().display(),
                    if on_device {
                        " (on a device: counted, not repaired)"
                    } else {
                        ""
                    }
                );
            }
            match core.check_consistency() {
                Ok(()) => tracing::warn!(
                    "stack {}: took the lock over from a process that died holding it; the stack is consistent",
                    self.arena.path().display()
                ),
                Err(e) => tracing::error!(
                    "stack {}: took the lock over from a process that died holding it; inconsistent: {e}",
                    self.arena.path().display()
                ),
            }
        }
        StackGuard { stack: self, core }
    }

    /// Takes the stack lock if it is free, else posts `work` for its holder.
    pub fn try_lock_or_post(&self, work: u32) -> Option<StackGuard<'_>> {
        match self.arena.header().lock.try_lock_or_post(work) {
            crate::lock::LockOrPost::Locked => {
                // SAFETY: as in `lock`.
                let core = unsafe { Core::from_arena(&self.arena, &self.lay, &self.cfg) };
                Some(StackGuard { stack: self, core })
            }
            crate::lock::LockOrPost::Posted => None,
        }
    }

    /// A consistent copy of the published state (interface, usage), without the lock.
    pub fn snapshot(&self) -> Published {
        self.arena.snapshot()
    }

    /// Identity of every open socket, read without the lock (as stackdump does).
    pub fn sockets(&self) -> Vec<SocketInfo> {
        sockets_of(&self.arena)
    }
}

/// Whether no process uses the stack any more: no live entry in its
/// process table, and its creator is gone too (a creator that never
/// registered, such as a test or the demo, still counts while it runs).
pub fn abandoned(arena: &Arena) -> bool {
    let h = arena.header();
    let procs = h.procs.snapshot();
    !procs.iter().any(|p| p.alive) && !crate::procs::is_alive(h.creator_pid, 0)
}

/// Identity of every open socket of an arena (which may be mapped read-only).
pub fn sockets_of(arena: &Arena) -> Vec<SocketInfo> {
    let h = arena.header();
    let n = h.config.max_sockets;
    let base = arena.region::<SocketSlot>(h.layout.sockets_off, n.into());
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < max_sockets, inside the region checked by `region`.
            unsafe { SocketSlot::read_info(base.add(i as usize), i) }
        })
        .collect()
}

/// TCP details of a socket, read without the lock (as `ss -ti` does: the
/// fields are copied while the owner may be changing them, so a value can be
/// a moment stale, but never out of the arena).
pub fn tcp_info_of(arena: &Arena, id: socket::SocketId) -> Option<crate::tcp::conn::TcpInfo> {
    let h = arena.header();
    if id.index() >= h.config.max_sockets {
        return None;
    }
    let base = arena.region::<crate::tcp::tcb::Tcb>(h.layout.tcbs_off, h.config.max_sockets.into());
    let sbase = arena.region::<SocketSlot>(h.layout.sockets_off, h.config.max_sockets.into());
    // SAFETY: in range; a volatile copy of plain data (see above).
    let (t, info) = unsafe {
        (
            std::ptr::read_volatile(base.add(id.index() as usize)),
            SocketSlot::read_info(sbase.add(id.index() as usize), id.index())?,
        )
    };
    if info.kind != socket::kind::TCP {
        return None;
    }
    Some(crate::tcp::conn::TcpInfo::from_tcb(
        &t,
        info.local,
        info.remote,
    ))
}

/// Per-socket counters of an arena, read without the lock.
pub fn socket_counters_of(arena: &Arena, id: socket::SocketId) -> Option<Vec<(&'static str, u64)>> {
    let h = arena.header();
    if id.index() >= h.config.max_sockets {
        return None;
    }
    let base = arena.region::<SocketSlot>(h.layout.sockets_off, h.config.max_sockets.into());
    // SAFETY: in range; counters are atomics.
    let slot = unsafe { &*base.add(id.index() as usize) };
    Some(slot.counters.iter().collect())
}

/// The stack lock, held. Dereferences to [`Core`]; releasing hands over any
/// work other threads posted meanwhile.
pub struct StackGuard<'s> {
    stack: &'s Stack,
    core: Core<'s>,
}

impl<'s> StackGuard<'s> {
    /// The stack this guard locks.
    pub fn stack(&self) -> &'s Stack {
        self.stack
    }
}

impl<'s> Deref for StackGuard<'s> {
    type Target = Core<'s>;
    fn deref(&self) -> &Core<'s> {
        &self.core
    }
}

impl<'s> DerefMut for StackGuard<'s> {
    fn deref_mut(&mut self) -> &mut Core<'s> {
        &mut self.core
    }
}

impl Stack {
    /// Sleeps until `wake_seq` moves past `seen` or `timeout_ns` passes.
    pub fn sleep_for_wake(&self, seen: u32, timeout_ns: u64) {
        let h = self.arena.header();
        h.sleepers.fetch_add(1, Ordering::AcqRel);
        if h.wake_seq.load(Ordering::Acquire) == seen {
            let ts = libc::timespec {
                tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: a valid futex word and timespec; a shared futex (other processes wake it).
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    h.wake_seq.as_ptr(),
                    libc::FUTEX_WAIT,
                    seen,
                    &ts as *const libc::timespec,
                );
            }
        }
        h.sleepers.fetch_sub(1, Ordering::AcqRel);
    }

    /// The current wake sequence (read before checking sockets, then sleep on it).
    pub fn wake_seq(&self) -> u32 {
        self.arena.header().wake_seq.load(Ordering::Acquire)
    }
}

impl Drop for StackGuard<'_> {
    fn drop(&mut self) {
        let lock = &self.stack.arena.header().lock;
        loop {
            let work = lock.unlock_or_take_work();
            if work == 0 {
                break;
            }
            // Work posted by a thread that could not take the lock: record it
            // for the next poller (the NIC driver), which owns the I/O.
            self.core.st.pending_work |= work;
        }
    }
}

/// The stack's state, borrowed from the arena while the lock is held.
pub struct Core<'a> {
    pub(crate) hdr: &'a ArenaHeader,
    pub(crate) st: &'a mut CoreState,
    pub(crate) sockets: &'a mut [SocketSlot],
    pub(crate) hash: &'a mut [u32],
    pub(crate) tcbs: &'a mut [crate::tcp::tcb::Tcb],
    pub(crate) conn_hash: &'a mut [u32],
    pub(crate) arp: &'a mut [ArpEntry],
    pub(crate) timers: TimerWheel<'a>,
    pub(crate) loop_ring: &'a mut [u32],
    /// The packet-buffer pool (NIC backends allocate from it).
    pub pool: Pool<'a>,
}

impl<'a> Core<'a> {
    /// Builds the view from the arena.
    ///
    /// # Safety
    /// The caller holds the stack lock (or the arena is not yet shared), so
    /// no other `Core` for this arena exists while this one lives, and the
    /// arena is writable.
    pub(crate) unsafe fn from_arena(a: &'a Arena, lay: &Layout, cfg: &StackConfig) -> Core<'a> {
        // SAFETY (all tables below): `table` bounds-checks each one, tables do
        // not overlap (Layout places them one after another), and the lock
        // gives this view exclusive access to everything outside atomics.
        unsafe {
            let hdr = a.header();
            let st = &mut a.table::<CoreState>(lay.core_off, 1)[0];
            let pool_hdr = &mut a.table::<PoolHdr>(lay.pool_hdr_off, 1)[0];
            let timer_hdr = &mut a.table::<TimerWheelHdr>(lay.timer_hdr_off, 1)[0];
            let sockets = a.table(lay.sockets_off, cfg.max_sockets);
            let hash = a.table(lay.sock_hash_off, cfg.hash_buckets());
            let tcbs = a.table(lay.tcbs_off, cfg.max_sockets);
            let conn_hash = a.table(lay.conn_hash_off, cfg.hash_buckets());
            let qnodes = a.table::<QNode>(lay.qnodes_off, cfg.max_qnodes());
            let arp = a.table(lay.arp_off, cfg.arp_entries);
            let timer_slots = a.table(lay.timer_slots_off, cfg.timer_slots);
            let timer_entries = a.table::<TimerEntry>(lay.timer_entries_off, cfg.max_timers());
            let loop_ring = a.table(lay.loop_ring_off, cfg.max_bufs);
            let meta = a.table::<PktMeta>(lay.buf_meta_off, cfg.max_bufs);
            let free = a.table(lay.buf_free_off, cfg.max_bufs);
            let data = a.region::<u8>(
                lay.buf_data_off,
                u64::from(cfg.max_bufs) * crate::pool::BUF_SIZE as u64,
            );
            Core {
                hdr,
                st,
                sockets,
                hash,
                tcbs,
                conn_hash,
                arp,
                timers: TimerWheel::attach(timer_hdr, timer_slots, timer_entries),
                loop_ring,
                pool: Pool {
                    meta,
                    free,
                    free_top: &mut pool_hdr.free_top,
                    qnodes,
                    qnode_free: &mut pool_hdr.qnode_free,
                    data,
                },
            }
        }
    }

    /// Writes a fresh, empty stack into the tables.
    fn format(&mut self, iface: IfaceConfig, now: u64, cfg: &StackConfig) {
        self.pool.format();
        self.st.sock_free = socket::format(self.sockets, self.hash);
        self.st.sockets_open = 0;
        self.conn_hash.fill(NIL);
        self.tcbs.fill(crate::tcp::tcb::Tcb::CLOSED);
        for e in self.arp.iter_mut() {
            *e = ArpEntry::FREE;
        }
        self.timers.reset(u64::from(cfg.timer_tick_us) * 1000, now);
        self.st.published = Published {
            iface,
            ..Published::default()
        };
        self.st.tx_queue = PktQueue::EMPTY;
        self.st.loop_head = 0;
        self.st.loop_tail = 0;
        self.st.pending_work = 0;
        self.st.arp_clock = 0;
        self.st.last_now_ns = now;
        self.st.icmp_tokens = crate::iface::ICMP_BURST;
        self.st.icmp_refill_ns = now;
        // Start ephemeral ports at a per-stack point, as Linux randomises.
        let seed = crate::clock::now_ns() ^ u64::from(std::process::id()).rotate_left(32);
        self.st.ephemeral_next = socket::EPHEMERAL_FIRST
            + (seed % u64::from(socket::EPHEMERAL_LAST - socket::EPHEMERAL_FIRST)) as u16;
    }

    /// The arena header (counters, config).
    pub fn header(&self) -> &ArenaHeader {
        self.hdr
    }

    /// The interface configuration.
    pub fn iface(&self) -> IfaceConfig {
        self.st.published.iface
    }

    /// Changes whenever a socket takes, changes or gives up a local address
    /// or port (see [`Core::for_each_binding`]).
    pub fn binding_gen(&self) -> u32 {
        self.st.binding_gen
    }

    /// Ring positions of the device kept in the arena, so that every
    /// process driving the device (a fork child too) sees the same ones.
    pub fn nic_cursor(&mut self) -> &mut [u32; 4] {
        &mut self.st.nic_cursor
    }

    /// Calls `f(kind, local)` for every open socket with a local port: the
    /// flows a device filter must steer to the stack ([`socket::kind`]).
    pub fn for_each_binding(&self, mut f: impl FnMut(u8, SocketAddrV4)) {
        for s in self.sockets.iter() {
            if s.kind != socket::kind::FREE && s.local_port != 0 {
                f(s.kind, s.local());
            }
        }
    }

    /// Records which device drives the stack, for stackdump (truncated to 47 bytes).
    pub fn set_nic_desc(&mut self, desc: &str) {
        let mut b = [0u8; 48];
        for (d, s) in b.iter_mut().zip(desc.bytes().take(47)) {
            *d = s;
        }
        self.publish(|p| p.nic = b);
    }

    /// Changes the interface configuration (addresses learnt from the kernel, say).
    pub fn set_iface(&mut self, iface: IfaceConfig) {
        self.publish(|p| p.iface = iface);
    }

    /// Updates the published state under the seqlock.
    pub(crate) fn publish(&mut self, f: impl FnOnce(&mut Published)) {
        self.hdr.pub_gen.fetch_add(1, Ordering::AcqRel);
        std::sync::atomic::fence(Ordering::Release);
        f(&mut self.st.published);
        self.st.published.change_count = self.st.published.change_count.wrapping_add(1);
        self.hdr.pub_gen.fetch_add(1, Ordering::Release);
    }

    /// Refreshes the published usage figures.
    pub(crate) fn publish_usage(&mut self) {
        let bufs = self.pool.capacity() - self.pool.free_count();
        let socks = self.st.sockets_open;
        if self.st.published.bufs_in_use != bufs || self.st.published.sockets_in_use != socks {
            self.publish(|p| {
                p.bufs_in_use = bufs;
                p.sockets_in_use = socks;
            });
        }
    }

    /// Wakes threads sleeping in blocking calls (after sockets may have become ready).
    pub fn wake_sleepers(&self) {
        self.hdr.wake_seq.fetch_add(1, Ordering::Release);
        if self.hdr.sleepers.load(Ordering::Acquire) > 0 {
            // SAFETY: wake_seq is an aligned u32 in the shared mapping.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.hdr.wake_seq.as_ptr(),
                    libc::FUTEX_WAKE,
                    i32::MAX,
                );
            }
        }
    }

    /// Takes the work bits other threads posted (see [`crate::lock`]).
    pub fn take_pending_work(&mut self) -> u32 {
        std::mem::take(&mut self.st.pending_work)
    }

    /// Last time passed in, ns.
    pub fn now(&self) -> u64 {
        self.st.last_now_ns
    }

    /// Takes the next frame to transmit; the caller owns its reference.
    pub fn dequeue_tx(&mut self) -> Option<BufId> {
        let b = self.pool.dequeue(&mut self.st.tx_queue, 0)?;
        let len = u64::from(self.pool.meta(b).len);
        self.hdr.counters.tx_frames.inc();
        self.hdr.counters.tx_bytes.add(len);
        Some(b)
    }

    /// Whether frames wait to be transmitted.
    pub fn has_tx(&self) -> bool {
        !self.st.tx_queue.is_empty()
    }

    /// Puts a frame the NIC could not take back at the head of the TX queue.
    pub fn requeue_tx_front(&mut self, b: BufId) {
        let len = u64::from(self.pool.meta(b).len);
        let mut q = PktQueue::EMPTY;
        if self.pool.enqueue(&mut q, b, 0).is_err() {
            self.hdr.counters.drop_no_buffers.inc();
            self.pool.put(b);
            return;
        }
        // Splice the one-node queue in front.
        if !self.st.tx_queue.is_empty() {
            self.pool.qnodes[q.head as usize].next = self.st.tx_queue.head;
            q.tail = self.st.tx_queue.tail;
        }
        q.count += self.st.tx_queue.count;
        self.st.tx_queue = q;
        // Undo the counting dequeue_tx did.
        let c = &self.hdr.counters;
        c.tx_frames.add(u64::MAX);
        c.tx_bytes.add(len.wrapping_neg());
    }

    /// Queues a finished frame for the NIC.
    pub(crate) fn queue_tx(&mut self, b: BufId) {
        if self.pool.enqueue(&mut self.st.tx_queue, b, 0).is_err() {
            self.hdr.counters.drop_no_buffers.inc();
            self.pool.put(b);
        }
    }

    /// Pushes a frame onto the in-arena loopback ring (frames to our own
    /// addresses, and every frame of the `loop` NIC). Consumes the reference.
    pub fn loop_push(&mut self, b: BufId) {
        let cap = self.loop_ring.len() as u32;
        if self.st.loop_tail.wrapping_sub(self.st.loop_head) >= cap {
            self.hdr.counters.drop_no_buffers.inc();
            self.pool.put(b);
            return;
        }
        self.loop_ring[(self.st.loop_tail % cap) as usize] = b.0;
        self.st.loop_tail = self.st.loop_tail.wrapping_add(1);
    }

    fn loop_pop(&mut self) -> Option<BufId> {
        if self.st.loop_head == self.st.loop_tail {
            return None;
        }
        let cap = self.loop_ring.len() as u32;
        let b = self.loop_ring[(self.st.loop_head % cap) as usize];
        self.st.loop_head = self.st.loop_head.wrapping_add(1);
        Some(BufId(b))
    }

    /// Advances time: delivers looped-back frames and fires due timers.
    /// Returns whether anything was done.
    pub fn poll(&mut self, now: u64) -> bool {
        if now > self.st.last_now_ns {
            self.st.last_now_ns = now;
        }
        let mut did = false;
        let pending = self.st.loop_tail.wrapping_sub(self.st.loop_head);
        for _ in 0..pending {
            let Some(b) = self.loop_pop() else { break };
            self.receive(b, now);
            did = true;
        }
        while let Some(f) = self.timers.pop_expired(now) {
            self.on_timer(f, now);
            did = true;
        }
        self.mcast_poll(now);
        self.publish_usage();
        if did {
            self.wake_sleepers();
        }
        did
    }

    /// Releases what processes killed without a word held: each dead
    /// member's entry is cleared, its file descriptors' references to
    /// sockets are dropped, and a socket left with none is closed as the
    /// kernel closes a dead process's sockets (TCP: FIN, or RST with unread
    /// data; UDP: released). Returns the number of processes reaped.
    pub fn reap_dead_processes(&mut self, now: u64) -> usize {
        let mut dead_slots = [false; crate::procs::MAX_PROCS];
        let n = self.hdr.procs.reap_dead(|slot, pid| {
            tracing::warn!("process {pid} left the stack without closing its sockets (killed?); releasing them");
            dead_slots[slot] = true;
        });
        if n == 0 {
            return 0;
        }
        let mut closed = 0;
        for i in 0..self.sockets.len() {
            let slot = &mut self.sockets[i];
            if slot.kind == crate::socket::kind::FREE {
                continue;
            }
            let mut dropped = 0u32;
            for (p, dead) in dead_slots.iter().enumerate() {
                if *dead {
                    dropped += u32::from(std::mem::take(&mut slot.proc_refs[p]));
                }
            }
            if dropped == 0 {
                continue;
            }
            slot.fd_refs = slot.fd_refs.saturating_sub(dropped);
            if slot.fd_refs > 0 {
                continue;
            }
            let id = crate::SocketId::new(i as u32, slot.incarnation);
            let _ = if slot.kind == crate::socket::kind::TCP {
                self.tcp_close(id, now)
            } else {
                self.udp_close(id)
            };
            closed += 1;
        }
        tracing::info!("closed {closed} sockets of {n} dead processes");
        n
    }

    /// When the stack next needs [`Core::poll`] even if no frame arrives.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.st.loop_head != self.st.loop_tail {
            return Some(self.st.last_now_ns);
        }
        match (self.timers.next_expiry(), self.mcast_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self, f: crate::timer::Fired, now: u64) {
        match f.kind {
            TIMER_ARP => self.arp_timer(f.owner as usize, now),
            crate::tcp::conn::TIMER_TCP => self.tcp_timer(f.owner, now),
            other => tracing::warn!(kind = other, "timer of unknown kind fired; ignored"),
        }
    }

    /// Timer id of ARP entry `i`.
    pub(crate) fn arp_timer_id(i: usize) -> u32 {
        i as u32
    }

    /// Number of open sockets (TIME_WAIT and orphaned connections included).
    pub fn sockets_in_use(&self) -> u32 {
        self.st.sockets_open
    }

    /// Number of free packet buffers.
    pub fn free_buffers(&self) -> u32 {
        self.pool.free_count()
    }

    /// Length of the transmit queue.
    pub fn tx_queue_len(&self) -> u32 {
        self.st.tx_queue.count
    }

    /// Sanity check of the tables, for tests: every buffer is either free or
    /// referenced, and no buffer is on the free stack twice.
    pub fn check_consistency(&self) -> Result<(), String> {
        let cap = self.pool.capacity() as usize;
        let mut on_free = vec![false; cap];
        for i in 0..self.pool.free_count() as usize {
            let b = self.pool.free[i] as usize;
            if b >= cap {
                return Err(format!("free stack holds out-of-range buffer {b}"));
            }
            if on_free[b] {
                return Err(format!("buffer {b} is on the free stack twice"));
            }
            on_free[b] = true;
            if self.pool.refcnt(BufId(b as u32)) != 0 {
                return Err(format!(
                    "free buffer {b} has refcount {}",
                    self.pool.refcnt(BufId(b as u32))
                ));
            }
        }
        for (b, free) in on_free.iter().enumerate() {
            if !free && self.pool.refcnt(BufId(b as u32)) == 0 {
                return Err(format!("buffer {b} leaked: not free, refcount 0"));
            }
        }
        let mut n = 0u32;
        let mut q = *self.pool.qnode_free;
        while q != NIL {
            n += 1;
            if n as usize > self.pool.qnodes.len() {
                return Err("queue-node free list has a cycle".into());
            }
            q = self.pool.qnodes[q as usize].next;
        }
        Ok(())
    }
}

/// Timer kind: ARP entry retry or expiry.
pub(crate) const TIMER_ARP: u16 = 1;
