//! The igb's RX and TX descriptor rings, independent of how registers are
//! reached: [`Regs`] is BAR0 on a real device and [`super::sim::SimIgb`] in
//! tests.
//!
//! Descriptors live in a [`DmaBuf`] the device reaches at `desc_iova`;
//! packet buffers are the stack's pool chunks, which the device reaches at
//! `pkt_iova + chunk offset` (the whole pool region is mapped once).
//!
//! RX: [`RxRing::refill`] posts free pool buffers and returns the new tail;
//! the caller writes it with [`RxRing::kick`], once per batch.
//! [`RxRing::receive`] hands back filled buffers (refcount 1, owned by the
//! caller). TX: [`TxRing::transmit`] queues a batch (taking the caller's
//! references) and returns the tail to write; [`TxRing::reclaim`] releases
//! the buffers of descriptors the device reports done (DD).

use std::io;
use std::sync::atomic::{fence, Ordering};

use rbypass_stack::pool::{rx_csum, BUF_SIZE, NIL};
use rbypass_stack::{BufId, Pool};

use super::dma::DmaBuf;
use super::igb_regs::{self as r, AdvRxRead, AdvRxWb, AdvTxRead, AdvTxWb};

/// 32-bit register access to the device (BAR0 or a simulation).
pub trait Regs {
    /// Reads the register at byte offset `off`.
    fn read(&self, off: u32) -> u32;
    /// Writes the register at byte offset `off`.
    fn write(&self, off: u32, v: u32);
}

/// Ring sizes: a power of two in this range (RDLEN must be a multiple of
/// 128 bytes, so at least 8 descriptors; the 82576 allows up to 4096).
pub const MIN_RING: u32 = 8;
/// Largest ring.
pub const MAX_RING: u32 = 4096;
/// Bytes of one descriptor.
pub const DESC_SIZE: usize = 16;

/// RX refills wait until at least this many slots are free (one tail
/// write per batch), unless the ring is empty.
pub const RX_BATCH: u32 = 32;

/// Descriptor thresholds: prefetch when fewer than 8 are cached, fetch when
/// 8 (RX) or 1 (TX) are available, write each one back at once (low
/// latency; a larger WTHRESH delays DD until several complete).
const RXDCTL_THRESH: u32 =
    (8 << r::dctl::PTHRESH_SHIFT) | (8 << r::dctl::HTHRESH_SHIFT) | (1 << r::dctl::WTHRESH_SHIFT);
const TXDCTL_THRESH: u32 =
    (8 << r::dctl::PTHRESH_SHIFT) | (1 << r::dctl::HTHRESH_SHIFT) | (1 << r::dctl::WTHRESH_SHIFT);

/// Why a ring could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring size {0} must be a power of two from {MIN_RING} to {MAX_RING}")]
    BadSize(u32),
    #[error("descriptor ring memory: {0}")]
    Mem(#[from] io::Error),
}

/// The 16-byte descriptor formats (sealed: only these are read or written).
trait Desc: Copy {}
impl Desc for AdvRxRead {}
impl Desc for AdvRxWb {}
impl Desc for AdvTxRead {}
impl Desc for AdvTxWb {}

/// A ring's descriptor memory and where the device sees it.
struct DescMem {
    buf: DmaBuf,
    size: u32,
    iova: u64,
}

impl DescMem {
    fn new(size: u32, iova: u64) -> Result<DescMem, RingError> {
        if !size.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&size) {
            return Err(RingError::BadSize(size));
        }
        Ok(DescMem {
            buf: DmaBuf::new(size as usize * DESC_SIZE)?,
            size,
            iova,
        })
    }

    fn slot<T: Desc>(&self, i: u32) -> *mut T {
        let i = (i & (self.size - 1)) as usize;
        // SAFETY: i < size, and the buffer holds size descriptors.
        unsafe { self.buf.as_ptr().add(i * DESC_SIZE).cast() }
    }

    /// Reads descriptor `i` as `T` (volatile: the device writes it).
    fn read<T: Desc>(&self, i: u32) -> T {
        // SAFETY: an in-bounds, 16-byte aligned slot of our mapping; every
        // bit pattern is a valid descriptor (plain integers).
        unsafe { self.slot::<T>(i).read_volatile() }
    }

    /// Writes descriptor `i` (volatile: the device reads it).
    fn write<T: Desc>(&self, i: u32, v: T) {
        // SAFETY: as in `read`.
        unsafe { self.slot::<T>(i).write_volatile(v) }
    }

    /// Bytes the device sees (RDLEN/TDLEN).
    fn len_bytes(&self) -> u32 {
        self.size * DESC_SIZE as u32
    }
}

/// The descriptor memory of a ring, for mapping it for DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescRegion {
    /// Process address of the descriptors.
    pub vaddr: *mut u8,
    /// Bytes (whole pages).
    pub len: usize,
    /// The address the device uses.
    pub iova: u64,
}

/// RX ring counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxStats {
    /// Frames handed to the caller.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames dropped: error bit (RXE) or spread over several descriptors.
    pub errors: u64,
    /// Refills that found the pool empty.
    pub no_buffers: u64,
    /// Tail (RDT) writes.
    pub tail_writes: u64,
}

/// One RX queue's descriptor ring.
pub struct RxRing {
    queue: u32,
    mem: DescMem,
    pkt_iova: u64,
    /// Buffer posted at each slot ([`NIL`] if none).
    bufs: Box<[u32]>,
    /// Next slot the device completes.
    clean: u32,
    /// Next slot to post at: the tail the device is (or will be) told.
    tail: u32,
    /// Buffers posted and not yet completed.
    posted: u32,
    /// Inside a frame spread over several descriptors, being dropped.
    discarding: bool,
    /// Counters.
    pub stats: RxStats,
}

impl RxRing {
    /// A ring of `size` descriptors for RX queue `queue`, its descriptors
    /// at `desc_iova` and the pool's chunk 0 at `pkt_iova` for the device.
    pub fn new(queue: u32, size: u32, desc_iova: u64, pkt_iova: u64) -> Result<RxRing, RingError> {
        let mem = DescMem::new(size, desc_iova)?;
        Ok(RxRing {
            queue,
            mem,
            pkt_iova,
            bufs: vec![NIL; size as usize].into_boxed_slice(),
            clean: 0,
            tail: 0,
            posted: 0,
            discarding: false,
            stats: RxStats::default(),
        })
    }

    /// The descriptor memory, to map for DMA before [`RxRing::configure`].
    pub fn desc_region(&self) -> DescRegion {
        DescRegion {
            vaddr: self.mem.buf.as_ptr(),
            len: self.mem.buf.len(),
            iova: self.mem.iova,
        }
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Buffers the device holds.
    pub fn posted(&self) -> u32 {
        self.posted
    }

    /// Programs the queue's registers: ring base and length, one 2 KiB
    /// buffer per advanced descriptor, head = tail = 0, queue enable. On a
    /// real device the caller then waits for RXDCTL.ENABLE to read back
    /// before the first [`RxRing::kick`].
    pub fn configure(&self, regs: &impl Regs) {
        let q = self.queue;
        regs.write(r::rxdctl(q), 0);
        regs.write(r::rdbal(q), self.mem.iova as u32);
        regs.write(r::rdbah(q), (self.mem.iova >> 32) as u32);
        regs.write(r::rdlen(q), self.mem.len_bytes());
        regs.write(
            r::srrctl(q),
            r::srrctl::DESCTYPE_ADV_ONEBUF
                | r::srrctl::DROP_EN
                | (BUF_SIZE as u32 >> r::srrctl::BSIZEPKT_SHIFT),
        );
        regs.write(r::rdh(q), 0);
        regs.write(r::rdt(q), 0);
        regs.write(r::rxdctl(q), r::dctl::ENABLE | RXDCTL_THRESH);
    }

    /// Posts free pool buffers in every free slot (one slot stays empty:
    /// tail == head means "none posted" to the device), once at least
    /// [`RX_BATCH`] are free or the ring ran dry. Returns the tail to
    /// write with [`RxRing::kick`], if anything was posted.
    pub fn refill(&mut self, pool: &mut Pool<'_>) -> Option<u32> {
        let free = self.mem.size - 1 - self.posted;
        if free == 0 || (free < RX_BATCH.min(self.mem.size / 2) && self.posted > 0) {
            return None;
        }
        let mut n = 0;
        while n < free {
            let Ok(b) = pool.alloc() else {
                self.stats.no_buffers += 1;
                break;
            };
            let slot = self.tail & (self.mem.size - 1);
            self.bufs[slot as usize] = b.0;
            self.mem.write(
                slot,
                AdvRxRead {
                    pkt_addr: self.pkt_iova + pool.chunk_addr(b),
                    hdr_addr: 0,
                },
            );
            self.tail = (self.tail + 1) & (self.mem.size - 1);
            n += 1;
        }
        self.posted += n;
        (n > 0).then_some(self.tail)
    }

    /// Tells the device about posted buffers: one RDT write. The fence
    /// orders the descriptor writes before it.
    pub fn kick(&mut self, regs: &impl Regs, tail: u32) {
        fence(Ordering::Release);
        regs.write(r::rdt(self.queue), tail);
        self.stats.tail_writes += 1;
    }

    /// [`RxRing::refill`] then [`RxRing::kick`] if anything was posted.
    pub fn refill_and_kick(&mut self, regs: &impl Regs, pool: &mut Pool<'_>) {
        if let Some(t) = self.refill(pool) {
            self.kick(regs, t);
        }
    }

    /// Takes up to `out.len()` completed frames, in order; returns how many.
    /// Each buffer's frame starts at offset 0 and its reference (count 1)
    /// now belongs to the caller. Bad frames are dropped and counted.
    pub fn receive(&mut self, pool: &mut Pool<'_>, out: &mut [BufId]) -> usize {
        let mut n = 0;
        while n < out.len() && self.posted > 0 {
            let wb: AdvRxWb = self.mem.read(self.clean);
            let st = wb.status_error;
            if st & r::rx_status::DD == 0 {
                break;
            }
            // The rest of the descriptor and the buffer, only after DD.
            fence(Ordering::Acquire);
            let slot = self.clean as usize;
            let b = BufId(std::mem::replace(&mut self.bufs[slot], NIL));
            self.clean = (self.clean + 1) & (self.mem.size - 1);
            self.posted -= 1;
            let eop = st & r::rx_status::EOP != 0;
            if self.discarding || !eop || st & r::rx_error::RXE != 0 {
                if !self.discarding {
                    self.stats.errors += 1;
                }
                self.discarding = !eop;
                pool.put(b);
                continue;
            }
            let len = usize::from(wb.length).min(BUF_SIZE);
            let m = pool.meta_mut(b);
            m.off = 0;
            m.len = len as u16;
            let l4_ok = st & (r::rx_status::L4CS | r::rx_status::UDPCS) != 0;
            let ip_ok = st & r::rx_status::IPCS != 0;
            let bad = st & (r::rx_error::TCPE | r::rx_error::IPE) != 0;
            m.rx_csum = if l4_ok && ip_ok && !bad {
                rx_csum::VERIFIED
            } else {
                rx_csum::VERIFY
            };
            self.stats.frames += 1;
            self.stats.bytes += len as u64;
            out[n] = b;
            n += 1;
        }
        n
    }

    /// Releases every posted buffer (the queue must be disabled first, or
    /// the device may still write them) and empties the ring.
    pub fn release_all(&mut self, pool: &mut Pool<'_>) {
        for b in self.bufs.iter_mut() {
            if *b != NIL {
                pool.put(BufId(std::mem::replace(b, NIL)));
            }
        }
        self.clean = 0;
        self.tail = 0;
        self.posted = 0;
        self.discarding = false;
    }
}

/// TX ring counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxStats {
    /// Frames queued to the device.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames the device reported sent (buffers released).
    pub completed: u64,
    /// Frames refused as malformed (empty), released unsent.
    pub dropped: u64,
    /// Calls that found the ring full before queueing everything.
    pub ring_full: u64,
    /// Tail (TDT) writes.
    pub tail_writes: u64,
}

/// One TX queue's descriptor ring.
pub struct TxRing {
    queue: u32,
    mem: DescMem,
    pkt_iova: u64,
    /// Buffer queued at each slot ([`NIL`] if none).
    bufs: Box<[u32]>,
    /// Oldest slot not yet reclaimed.
    clean: u32,
    /// Next slot to queue at.
    tail: u32,
    /// Descriptors queued and not yet reclaimed.
    in_flight: u32,
    /// Counters.
    pub stats: TxStats,
}

impl TxRing {
    /// A ring of `size` descriptors for TX queue `queue` (as [`RxRing::new`]).
    pub fn new(queue: u32, size: u32, desc_iova: u64, pkt_iova: u64) -> Result<TxRing, RingError> {
        let mem = DescMem::new(size, desc_iova)?;
        Ok(TxRing {
            queue,
            mem,
            pkt_iova,
            bufs: vec![NIL; size as usize].into_boxed_slice(),
            clean: 0,
            tail: 0,
            in_flight: 0,
            stats: TxStats::default(),
        })
    }

    /// The descriptor memory, to map for DMA before [`TxRing::configure`].
    pub fn desc_region(&self) -> DescRegion {
        DescRegion {
            vaddr: self.mem.buf.as_ptr(),
            len: self.mem.buf.len(),
            iova: self.mem.iova,
        }
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Frames queued and not yet reclaimed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Slots free for [`TxRing::transmit`] (one always stays empty).
    pub fn free(&self) -> u32 {
        self.mem.size - 1 - self.in_flight
    }

    /// Programs the queue's registers: ring base and length, head = tail =
    /// 0, queue enable.
    pub fn configure(&self, regs: &impl Regs) {
        let q = self.queue;
        regs.write(r::txdctl(q), 0);
        regs.write(r::tdbal(q), self.mem.iova as u32);
        regs.write(r::tdbah(q), (self.mem.iova >> 32) as u32);
        regs.write(r::tdlen(q), self.mem.len_bytes());
        regs.write(r::tdh(q), 0);
        regs.write(r::tdt(q), 0);
        regs.write(r::txdctl(q), r::dctl::ENABLE | TXDCTL_THRESH);
    }

    /// Queues `frames` in order, as far as the ring has room (reclaiming
    /// first if it lacks it), one advanced data descriptor each, with
    /// report-status so each completes with DD. Takes the caller's
    /// reference of every frame it accepts. Returns how many it took and
    /// the tail to write with [`TxRing::kick`] (None if nothing was queued).
    pub fn transmit(&mut self, pool: &mut Pool<'_>, frames: &[BufId]) -> (usize, Option<u32>) {
        if (self.free() as usize) < frames.len() {
            self.reclaim(pool);
        }
        let n = frames.len().min(self.free() as usize);
        if n < frames.len() {
            self.stats.ring_full += 1;
        }
        let mut queued = 0;
        for &b in &frames[..n] {
            let m = pool.meta(b);
            let (off, len) = (u32::from(m.off), u32::from(m.len));
            if len == 0 || (off + len) as usize > BUF_SIZE {
                self.stats.dropped += 1;
                pool.put(b);
                continue;
            }
            let slot = self.tail;
            self.bufs[slot as usize] = b.0;
            self.mem.write(
                slot,
                AdvTxRead {
                    buffer_addr: self.pkt_iova + pool.chunk_addr(b) + u64::from(off),
                    cmd_type_len: len
                        | r::tx_cmd::DTYP_DATA
                        | r::tx_cmd::DEXT
                        | r::tx_cmd::IFCS
                        | r::tx_cmd::EOP
                        | r::tx_cmd::RS,
                    olinfo_status: len << r::tx_cmd::PAYLEN_SHIFT,
                },
            );
            self.tail = (self.tail + 1) & (self.mem.size - 1);
            self.stats.frames += 1;
            self.stats.bytes += u64::from(len);
            queued += 1;
        }
        self.in_flight += queued;
        (n, (queued > 0).then_some(self.tail))
    }

    /// Tells the device about queued frames: one TDT write.
    pub fn kick(&mut self, regs: &impl Regs, tail: u32) {
        fence(Ordering::Release);
        regs.write(r::tdt(self.queue), tail);
        self.stats.tail_writes += 1;
    }

    /// Releases the buffers of the descriptors the device has sent (DD
    /// written back), oldest first; returns how many.
    pub fn reclaim(&mut self, pool: &mut Pool<'_>) -> usize {
        let mut n = 0;
        while self.in_flight > 0 {
            let wb: AdvTxWb = self.mem.read(self.clean);
            if wb.status & r::tx_status::DD == 0 {
                break;
            }
            let b = std::mem::replace(&mut self.bufs[self.clean as usize], NIL);
            pool.put(BufId(b));
            self.clean = (self.clean + 1) & (self.mem.size - 1);
            self.in_flight -= 1;
            n += 1;
        }
        self.stats.completed += n as u64;
        n
    }

    /// Releases every queued buffer, sent or not (the queue must be
    /// disabled first), and empties the ring.
    pub fn release_all(&mut self, pool: &mut Pool<'_>) {
        for b in self.bufs.iter_mut() {
            if *b != NIL {
                pool.put(BufId(std::mem::replace(b, NIL)));
            }
        }
        self.clean = 0;
        self.tail = 0;
        self.in_flight = 0;
    }
}
