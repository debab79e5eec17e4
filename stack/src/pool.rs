//! Packet buffers: fixed-size chunks of the arena, the same memory a NIC
//! receives into (AF_XDP UMEM, DMA), with a free stack and a reference count
//! each, so one received frame can sit on several socket queues without a copy.
//!
//! Queues of buffers are chains of [`QNode`]s rather than links inside the
//! buffer, for the same reason: a buffer may be on several queues at once.

use std::sync::atomic::{AtomicU32, Ordering};

/// Size of one packet buffer: an AF_XDP UMEM chunk.
pub const BUF_SIZE: usize = 2048;
/// Bytes left free before the frame in a buffer the stack fills itself.
pub const HEADROOM: u16 = 128;
/// Largest frame a buffer holds.
pub const MAX_FRAME: usize = BUF_SIZE - HEADROOM as usize;
/// End of a chain.
pub const NIL: u32 = u32::MAX;

/// Index of a packet buffer in its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

/// Per-buffer metadata, beside (not inside) the data so data chunks stay
/// exactly [`BUF_SIZE`] and aligned for the NIC.
#[repr(C)]
pub struct PktMeta {
    /// References held (socket queues, TX queue, NIC). 0 = free.
    pub refcnt: AtomicU32,
    /// Offset of the frame's first byte in the buffer.
    pub off: u16,
    /// Frame length.
    pub len: u16,
    /// Offset of the transport payload from the frame start (set on receive).
    pub pay_off: u16,
    /// Transport payload length (set on receive).
    pub pay_len: u16,
    /// Offset of the IPv4 header from the frame start.
    pub l3_off: u16,
    /// Offset of the transport header from the frame start.
    pub l4_off: u16,
    /// TCP: sequence number of the first payload byte.
    pub seq: u32,
    /// TCP: segment flags, as received.
    pub tcp_flags: u8,
    /// How to check a received frame's TCP/UDP checksum ([`rx_csum`]), as
    /// the device that received it knows.
    pub rx_csum: u8,
    pub _pad: [u8; 2],
}

/// Checksum modes of a received frame (see [`PktMeta::rx_csum`]).
pub mod rx_csum {
    /// Verify the full checksum.
    pub const VERIFY: u8 = 0;
    /// Verify, but also accept a field holding only the pseudo-header sum:
    /// the sender left the rest to offload that never ran (a veth peer's
    /// CHECKSUM_PARTIAL frames, as AF_XDP and AF_PACKET see them).
    pub const PARTIAL_OK: u8 = 1;
    /// The device verified it.
    pub const VERIFIED: u8 = 2;
}

/// One link of a buffer queue.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QNode {
    pub buf: u32,
    pub next: u32,
}

/// A FIFO of buffers made of [`QNode`]s, with running totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PktQueue {
    pub head: u32,
    pub tail: u32,
    pub count: u32,
    /// Sum of the byte charges of the queued buffers (payload or truesize, as the owner decides).
    pub bytes: u32,
}

impl Default for PktQueue {
    fn default() -> Self {
        PktQueue::EMPTY
    }
}

impl PktQueue {
    /// An empty queue.
    pub const EMPTY: PktQueue = PktQueue {
        head: NIL,
        tail: NIL,
        count: 0,
        bytes: 0,
    };

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// The pool's mutable header, in its own arena region.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PoolHdr {
    /// Number of free buffers (top of the free stack).
    pub free_top: u32,
    /// Head of the free queue-node list.
    pub qnode_free: u32,
}

/// Errors of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("packet buffers exhausted (raise the stack's max_bufs)")]
    NoBuffers,
    #[error("queue nodes exhausted (too many buffers queued)")]
    NoQueueNodes,
}

/// A view of the pool's tables, valid while the stack lock is held.
pub struct Pool<'a> {
    pub(crate) meta: &'a mut [PktMeta],
    pub(crate) free: &'a mut [u32],
    pub(crate) free_top: &'a mut u32,
    pub(crate) qnodes: &'a mut [QNode],
    pub(crate) qnode_free: &'a mut u32,
    pub(crate) data: *mut u8,
}

impl<'a> Pool<'a> {
    /// Number of buffers in the pool.
    pub fn capacity(&self) -> u32 {
        self.meta.len() as u32
    }

    /// Number of free buffers.
    pub fn free_count(&self) -> u32 {
        *self.free_top
    }

    /// Takes a free buffer, refcount 1, empty frame at [`HEADROOM`].
    pub fn alloc(&mut self) -> Result<BufId, PoolError> {
        if *self.free_top == 0 {
            return Err(PoolError::NoBuffers);
        }
        *self.free_top -= 1;
        let id = self.free[*self.free_top as usize];
        let mm = &mut self.meta[id as usize];
        *mm.refcnt.get_mut() = 1;
        mm.off = HEADROOM;
        mm.len = 0;
        mm.pay_off = 0;
        mm.pay_len = 0;
        mm.l3_off = 0;
        mm.l4_off = 0;
        mm.seq = 0;
        mm.tcp_flags = 0;
        mm.rx_csum = rx_csum::VERIFY;
        Ok(BufId(id))
    }

    /// Adds a reference (the buffer is being put on one more queue).
    pub fn get(&self, b: BufId) {
        self.meta[b.0 as usize]
            .refcnt
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference; the buffer returns to the free stack at zero.
    pub fn put(&mut self, b: BufId) {
        let Some(m) = self.meta.get(b.0 as usize) else {
            return;
        };
        let prev = m.refcnt.fetch_sub(1, Ordering::AcqRel);
        if prev == 1 {
            self.free[*self.free_top as usize] = b.0;
            *self.free_top += 1;
        } else if prev == 0 {
            // Double free: undo and refuse rather than corrupt the free stack.
            m.refcnt.store(0, Ordering::Relaxed);
            tracing::error!(buf = b.0, "packet buffer released twice; ignored");
        }
    }

    /// Current reference count.
    pub fn refcnt(&self, b: BufId) -> u32 {
        self.meta[b.0 as usize].refcnt.load(Ordering::Relaxed)
    }

    /// Metadata of a buffer.
    pub fn meta(&self, b: BufId) -> &PktMeta {
        &self.meta[b.0 as usize]
    }

    /// Mutable metadata of a buffer the caller holds the only reference to.
    pub fn meta_mut(&mut self, b: BufId) -> &mut PktMeta {
        &mut self.meta[b.0 as usize]
    }

    /// Start and length of the buffers' memory: every chunk, in index order,
    /// [`BUF_SIZE`] apart. A device registers it once (AF_XDP UMEM, DMA) and
    /// then names buffers by offset into it.
    pub fn data_region(&self) -> (*mut u8, usize) {
        (self.data, self.meta.len() * BUF_SIZE)
    }

    /// The whole [`BUF_SIZE`] chunk of a buffer.
    pub fn chunk_mut(&mut self, b: BufId) -> &mut [u8] {
        assert!(b.0 < self.capacity(), "buffer index out of range");
        // SAFETY: in range (checked), chunks are disjoint, and the lock is held.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(b.0 as usize * BUF_SIZE), BUF_SIZE) }
    }

    /// The frame held by a buffer.
    pub fn frame(&self, b: BufId) -> &[u8] {
        let m = &self.meta[b.0 as usize];
        let (off, len) = (
            m.off as usize,
            (m.len as usize).min(BUF_SIZE - m.off as usize),
        );
        // SAFETY: in range (meta lookup checked the index), within the chunk.
        unsafe { std::slice::from_raw_parts(self.data.add(b.0 as usize * BUF_SIZE + off), len) }
    }

    /// The frame of a buffer, writable, resized to `len` bytes (at most [`MAX_FRAME`]).
    pub fn frame_mut(&mut self, b: BufId, len: usize) -> &mut [u8] {
        let m = self.meta_mut(b);
        let off = m.off as usize;
        let len = len.min(BUF_SIZE - off);
        m.len = len as u16;
        &mut self.chunk_mut(b)[off..off + len]
    }

    /// Copies `len` bytes from one buffer's chunk to another's (offsets within
    /// the chunks). Out-of-range requests are clipped, never overrun.
    pub fn copy_between(
        &mut self,
        src: BufId,
        src_off: usize,
        dst: BufId,
        dst_off: usize,
        len: usize,
    ) {
        let cap = self.capacity();
        if src.0 >= cap || dst.0 >= cap || src == dst {
            return;
        }
        let len = len
            .min(BUF_SIZE.saturating_sub(src_off))
            .min(BUF_SIZE.saturating_sub(dst_off));
        // SAFETY: both chunks are in range and distinct, and the ranges were
        // clipped to their chunks, so the copy is in bounds and cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data.add(src.0 as usize * BUF_SIZE + src_off),
                self.data.add(dst.0 as usize * BUF_SIZE + dst_off),
                len,
            );
        }
    }

    /// A queue node's successor and buffer, for walking a queue in place.
    pub fn node(&self, n: u32) -> Option<(BufId, u32)> {
        self.qnodes.get(n as usize).map(|q| (BufId(q.buf), q.next))
    }

    /// Inserts buffer `b` after node `after` (or at the head if `after` is NIL).
    pub fn insert_after(
        &mut self,
        q: &mut PktQueue,
        after: u32,
        b: BufId,
        charge: u32,
    ) -> Result<(), PoolError> {
        if after == NIL {
            let n = *self.qnode_free;
            if n == NIL {
                return Err(PoolError::NoQueueNodes);
            }
            *self.qnode_free = self.qnodes[n as usize].next;
            self.qnodes[n as usize] = QNode {
                buf: b.0,
                next: q.head,
            };
            q.head = n;
            if q.tail == NIL {
                q.tail = n;
            }
        } else {
            let n = *self.qnode_free;
            if n == NIL {
                return Err(PoolError::NoQueueNodes);
            }
            *self.qnode_free = self.qnodes[n as usize].next;
            let next = self.qnodes[after as usize].next;
            self.qnodes[n as usize] = QNode { buf: b.0, next };
            self.qnodes[after as usize].next = n;
            if q.tail == after {
                q.tail = n;
            }
        }
        q.count += 1;
        q.bytes = q.bytes.saturating_add(charge);
        Ok(())
    }

    /// Byte offset of a buffer's chunk from the start of the data region (the UMEM address).
    pub fn chunk_addr(&self, b: BufId) -> u64 {
        b.0 as u64 * BUF_SIZE as u64
    }

    /// Appends a buffer (taking over one reference the caller holds) to a queue.
    pub fn enqueue(&mut self, q: &mut PktQueue, b: BufId, charge: u32) -> Result<(), PoolError> {
        let n = *self.qnode_free;
        if n == NIL {
            return Err(PoolError::NoQueueNodes);
        }
        *self.qnode_free = self.qnodes[n as usize].next;
        self.qnodes[n as usize] = QNode {
            buf: b.0,
            next: NIL,
        };
        if q.tail == NIL {
            q.head = n;
        } else {
            self.qnodes[q.tail as usize].next = n;
        }
        q.tail = n;
        q.count += 1;
        q.bytes = q.bytes.saturating_add(charge);
        Ok(())
    }

    /// The first buffer of a queue, without removing it.
    pub fn peek(&self, q: &PktQueue) -> Option<BufId> {
        (q.head != NIL).then(|| BufId(self.qnodes[q.head as usize].buf))
    }

    /// Removes the first buffer of a queue; the caller now holds its reference.
    pub fn dequeue(&mut self, q: &mut PktQueue, charge: u32) -> Option<BufId> {
        if q.head == NIL {
            return None;
        }
        let n = q.head;
        let node = self.qnodes[n as usize];
        q.head = node.next;
        if q.head == NIL {
            q.tail = NIL;
        }
        q.count -= 1;
        q.bytes = q.bytes.saturating_sub(charge);
        self.qnodes[n as usize].next = *self.qnode_free;
        *self.qnode_free = n;
        Some(BufId(node.buf))
    }

    /// Empties a queue, dropping every buffer's reference.
    pub fn purge(&mut self, q: &mut PktQueue) {
        while let Some(b) = self.dequeue(q, 0) {
            self.put(b);
        }
        *q = PktQueue::EMPTY;
    }

    /// Formats fresh tables: every buffer free, every queue node free.
    pub(crate) fn format(&mut self) {
        let n = self.capacity();
        for (i, m) in self.meta.iter().enumerate() {
            m.refcnt.store(0, Ordering::Relaxed);
            // Fill the free stack so the lowest index is allocated first.
            self.free[i] = n - 1 - i as u32;
        }
        *self.free_top = n;
        let qn = self.qnodes.len();
        for i in 0..qn {
            self.qnodes[i] = QNode {
                buf: NIL,
                next: if i + 1 < qn { i as u32 + 1 } else { NIL },
            };
        }
        *self.qnode_free = if qn > 0 { 0 } else { NIL };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem {
        meta: Vec<PktMeta>,
        free: Vec<u32>,
        top: u32,
        qnodes: Vec<QNode>,
        qfree: u32,
        data: Vec<u8>,
    }

    fn mem(n: usize) -> Mem {
        Mem {
            meta: (0..n)
                .map(|_| PktMeta {
                    refcnt: AtomicU32::new(0),
                    off: 0,
                    len: 0,
                    pay_off: 0,
                    pay_len: 0,
                    l3_off: 0,
                    l4_off: 0,
                    seq: 0,
                    tcp_flags: 0,
                    rx_csum: 0,
                    _pad: [0; 2],
                })
                .collect(),
            free: vec![0; n],
            top: 0,
            qnodes: vec![QNode { buf: 0, next: 0 }; n * 2],
            qfree: 0,
            data: vec![0; n * BUF_SIZE],
        }
    }

    fn pool(m: &mut Mem) -> Pool<'_> {
        let mut p = Pool {
            meta: &mut m.meta,
            free: &mut m.free,
            free_top: &mut m.top,
            qnodes: &mut m.qnodes,
            qnode_free: &mut m.qfree,
            data: m.data.as_mut_ptr(),
        };
        p.format();
        p
    }

    #[test]
    fn alloc_until_exhausted_then_clear_error() {
        let mut m = mem(8);
        let mut p = pool(&mut m);
        let bufs: Vec<_> = (0..8).map(|_| p.alloc().unwrap()).collect();
        assert_eq!(p.alloc(), Err(PoolError::NoBuffers));
        let mut seen = bufs.iter().map(|b| b.0).collect::<Vec<_>>();
        seen.sort();
        assert_eq!(
            seen,
            (0..8).collect::<Vec<_>>(),
            "no buffer handed out twice"
        );
        p.put(bufs[3]);
        assert_eq!(p.free_count(), 1);
        assert_eq!(p.alloc().unwrap(), bufs[3]);
    }

    #[test]
    fn refcount_keeps_buffer_until_last_put() {
        let mut m = mem(4);
        let mut p = pool(&mut m);
        let b = p.alloc().unwrap();
        p.get(b);
        p.get(b);
        assert_eq!(p.refcnt(b), 3);
        p.put(b);
        p.put(b);
        assert_eq!(p.free_count(), 3);
        p.put(b);
        assert_eq!(p.free_count(), 4);
        // A double free is refused and does not corrupt the free stack.
        p.put(b);
        assert_eq!(p.free_count(), 4);
        assert_eq!(p.refcnt(b), 0);
    }

    #[test]
    fn one_buffer_on_two_queues() {
        let mut m = mem(4);
        let mut p = pool(&mut m);
        let b = p.alloc().unwrap();
        p.frame_mut(b, 3).copy_from_slice(b"abc");
        let (mut q1, mut q2) = (PktQueue::EMPTY, PktQueue::EMPTY);
        p.enqueue(&mut q1, b, 3).unwrap();
        p.get(b);
        p.enqueue(&mut q2, b, 3).unwrap();
        assert_eq!((q1.count, q1.bytes, q2.count), (1, 3, 1));
        let x = p.dequeue(&mut q1, 3).unwrap();
        assert_eq!(p.frame(x), b"abc");
        p.put(x);
        assert_eq!(p.refcnt(b), 1);
        p.purge(&mut q2);
        assert_eq!(p.free_count(), 4);
        assert!(q1.is_empty() && q2.is_empty());
    }

    #[test]
    fn queue_is_fifo_and_nodes_run_out_cleanly() {
        let mut m = mem(2);
        let mut p = pool(&mut m);
        let b = p.alloc().unwrap();
        let mut q = PktQueue::EMPTY;
        for _ in 0..4 {
            p.get(b);
            p.enqueue(&mut q, b, 1).unwrap();
        }
        assert_eq!(p.enqueue(&mut q, b, 1), Err(PoolError::NoQueueNodes));
        assert_eq!(q.count, 4);
        for _ in 0..4 {
            assert_eq!(p.dequeue(&mut q, 1), Some(b));
            p.put(b);
        }
        assert_eq!(p.dequeue(&mut q, 1), None);
        assert_eq!(q.bytes, 0);
    }
}
