//! AF_XDP sockets: the UMEM registration and the four rings (fill,
//! completion, RX, TX), as thin typed wrappers over the socket options and
//! the mmap'd ring memory the kernel shares with us.
//!
//! The UMEM is the stack's packet-buffer memory itself, so a frame the
//! kernel puts in the RX ring is already in a buffer the stack can queue on
//! a socket, and a frame the stack built is transmitted from where it lies.
//! Addresses in the rings are byte offsets into that memory.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sockopt;

const AF_XDP: i32 = 44;
const SOL_XDP: i32 = 283;

mod opt {
    pub const MMAP_OFFSETS: i32 = 1;
    pub const RX_RING: i32 = 2;
    pub const TX_RING: i32 = 3;
    pub const UMEM_REG: i32 = 4;
    pub const UMEM_FILL_RING: i32 = 5;
    pub const UMEM_COMPLETION_RING: i32 = 6;
    pub const STATISTICS: i32 = 7;
    pub const OPTIONS: i32 = 8;
}

mod pgoff {
    pub const RX_RING: i64 = 0;
    pub const TX_RING: i64 = 0x8000_0000;
    pub const FILL_RING: i64 = 0x1_0000_0000;
    pub const COMPLETION_RING: i64 = 0x1_8000_0000;
}

/// `sockaddr_xdp` flags.
pub mod bind_flags {
    pub const SHARED_UMEM: u16 = 1 << 0;
    pub const COPY: u16 = 1 << 1;
    pub const ZEROCOPY: u16 = 1 << 2;
    pub const USE_NEED_WAKEUP: u16 = 1 << 3;
}

/// The ring's "kick me" flag.
const RING_NEED_WAKEUP: u32 = 1;
/// XDP_OPTIONS: the socket is in zero-copy mode.
const OPTIONS_ZEROCOPY: u32 = 1;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

/// An RX or TX descriptor: a frame at `addr` (UMEM offset) of `len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// Kernel statistics of a socket (XDP_STATISTICS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// One mmap'd ring of `T` entries (u64 addresses or [`Desc`]s).
pub struct Ring<T> {
    map: *mut u8,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    size: u32,
    /// Our copy of the index we advance (producer for fill/TX, consumer for
    /// completion/RX), and the last seen value of the other side's.
    local: u32,
    remote: u32,
}

// SAFETY: the ring memory is a shared mapping owned by this value; only the
// owner (under the stack lock) touches our side of it.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &RingOffset, size: u32, pgoff: i64) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mapping the ring the kernel set up for this socket; the
        // length is what the kernel's offsets and our ring size give.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = map.cast::<u8>();
        // SAFETY: the offsets lie inside the mapping (the kernel's layout).
        unsafe {
            let producer = base.add(off.producer as usize).cast::<AtomicU32>();
            let consumer = base.add(off.consumer as usize).cast::<AtomicU32>();
            Ok(Ring {
                map: base,
                map_len: len,
                producer,
                consumer,
                flags: base.add(off.flags as usize).cast::<AtomicU32>(),
                descs: base.add(off.desc as usize).cast::<T>(),
                size,
                local: 0,
                remote: 0,
            })
        }
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping.
        unsafe { &*self.consumer }
    }

    /// Whether the kernel asks to be woken (need_wakeup mode).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & RING_NEED_WAKEUP != 0
    }

    /// Producer side: free slots, re-reading the consumer's index only when
    /// the cached view shows fewer than `want`.
    ///
    /// Our own index is re-read from the ring each time: every process
    /// driving the stack's device (a fork child too) has its own copy of
    /// this struct, and the ring's word is the one they all agree on (they
    /// take turns under the stack lock).
    pub fn free(&mut self, want: u32) -> u32 {
        self.local = self.prod().load(Ordering::Relaxed);
        let used = self.local.wrapping_sub(self.remote);
        if used <= self.size && self.size - used >= want {
            return self.size - used;
        }
        self.remote = self.cons().load(Ordering::Acquire);
        self.size - self.local.wrapping_sub(self.remote)
    }

    /// Producer side: entries published and not yet taken by the kernel.
    pub fn queued(&mut self) -> u32 {
        self.local = self.prod().load(Ordering::Relaxed);
        self.remote = self.cons().load(Ordering::Acquire);
        self.local.wrapping_sub(self.remote)
    }

    /// Producer side: writes entry `i` after the last published one.
    pub fn put(&mut self, i: u32, v: T) {
        let at = (self.local.wrapping_add(i) & (self.size - 1)) as usize;
        // SAFETY: `at` < size, inside the descriptor array.
        unsafe { self.descs.add(at).write(v) };
    }

    /// Producer side: publishes `n` entries written with [`Ring::put`].
    pub fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.prod().store(self.local, Ordering::Release);
    }

    /// Consumer side: entries ready to read (our index re-read from the
    /// ring, as in [`Ring::free`]).
    pub fn ready(&mut self) -> u32 {
        self.local = self.cons().load(Ordering::Relaxed);
        let mut n = self.remote.wrapping_sub(self.local);
        if n == 0 || n > self.size {
            self.remote = self.prod().load(Ordering::Acquire);
            n = self.remote.wrapping_sub(self.local);
        }
        n
    }

    /// Consumer side: reads entry `i` after the last released one.
    pub fn get(&self, i: u32) -> T {
        let at = (self.local.wrapping_add(i) & (self.size - 1)) as usize;
        // SAFETY: `at` < size, inside the descriptor array.
        unsafe { self.descs.add(at).read() }
    }

    /// Consumer side: hands `n` read entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.cons().store(self.local, Ordering::Release);
    }

    /// Ring size (entries).
    pub fn size(&self) -> u32 {
        self.size
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// Ring sizes of one socket (powers of two).
#[derive(Debug, Clone, Copy)]
pub struct RingSizes {
    pub fill: u32,
    pub completion: u32,
    pub rx: u32,
    pub tx: u32,
}

/// One AF_XDP socket bound to one queue of an interface, with its rings.
pub struct Xsk {
    fd: OwnedFd,
    pub fill: Ring<u64>,
    pub comp: Ring<u64>,
    pub rx: Ring<Desc>,
    pub tx: Ring<Desc>,
    queue: u32,
    zerocopy: bool,
}

/// The four rings of a socket, as (fill, completion, RX, TX).
type Rings = (Ring<u64>, Ring<u64>, Ring<Desc>, Ring<Desc>);

/// Maps the rings the kernel set up for socket `s` (the ring sizes must be
/// the ones it was given).
fn map_rings(s: RawFd, sizes: RingSizes) -> io::Result<Rings> {
    let off: MmapOffsets = sockopt::get(s, SOL_XDP, opt::MMAP_OFFSETS)?;
    Ok((
        Ring::map(s, &off.fr, sizes.fill, pgoff::FILL_RING)?,
        Ring::map(s, &off.cr, sizes.completion, pgoff::COMPLETION_RING)?,
        Ring::map(s, &off.rx, sizes.rx, pgoff::RX_RING)?,
        Ring::map(s, &off.tx, sizes.tx, pgoff::TX_RING)?,
    ))
}

/// Whether socket `s` was bound in zero-copy mode.
fn is_zerocopy(s: RawFd) -> bool {
    sockopt::get::<u32>(s, SOL_XDP, opt::OPTIONS).is_ok_and(|o| o & OPTIONS_ZEROCOPY != 0)
}

impl Xsk {
    /// Opens a socket for `queue` of `ifindex`. The first socket of a UMEM
    /// (`shared` None) registers `umem` (start, length; chunks of
    /// `chunk` bytes); later ones share the first one's registration.
    pub fn open(
        ifindex: u32,
        queue: u32,
        umem: (*mut u8, usize),
        chunk: u32,
        shared: Option<RawFd>,
        sizes: RingSizes,
        flags: u16,
    ) -> io::Result<Xsk> {
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        if shared.is_none() {
            let reg = UmemReg {
                addr: umem.0 as u64,
                len: umem.1 as u64,
                chunk_size: chunk,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            sockopt::set(s, SOL_XDP, opt::UMEM_REG, &reg)?;
        }
        // Every socket has its own fill and completion rings (a socket that
        // shares the UMEM but serves another queue needs them).
        sockopt::set(s, SOL_XDP, opt::UMEM_FILL_RING, &sizes.fill)?;
        sockopt::set(s, SOL_XDP, opt::UMEM_COMPLETION_RING, &sizes.completion)?;
        sockopt::set(s, SOL_XDP, opt::RX_RING, &sizes.rx)?;
        sockopt::set(s, SOL_XDP, opt::TX_RING, &sizes.tx)?;
        let (fill, comp, rx, tx) = map_rings(s, sizes)?;
        let mut bind_flags = flags;
        if shared.is_some() {
            // The kernel takes no other flag with SHARED_UMEM: the
            // copy/zero-copy mode and need_wakeup are the first socket's.
            bind_flags = bind_flags::SHARED_UMEM;
        }
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            flags: bind_flags,
            ifindex,
            queue_id: queue,
            shared_umem_fd: shared.map_or(0, |f| f as u32),
        };
        // SAFETY: a valid sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                s,
                (&sa as *const SockaddrXdp).cast(),
                std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let zerocopy = is_zerocopy(s);
        Ok(Xsk {
            fd,
            fill,
            comp,
            rx,
            tx,
            queue,
            zerocopy,
        })
    }

    /// Maps the rings of a socket another process of the stack opened and
    /// bound, from an fd to it this process now owns: both processes then
    /// drive the same rings (under the stack lock; ring positions are read
    /// from the rings themselves).
    pub fn adopt(fd: OwnedFd, queue: u32, sizes: RingSizes) -> io::Result<Xsk> {
        let s = fd.as_raw_fd();
        let (fill, comp, rx, tx) = map_rings(s, sizes)?;
        let zerocopy = is_zerocopy(s);
        Ok(Xsk {
            fd,
            fill,
            comp,
            rx,
            tx,
            queue,
            zerocopy,
        })
    }

    /// The socket's fd (readable when the RX ring has frames).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The queue it serves.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Whether the driver runs it in zero-copy mode.
    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Asks the kernel to transmit what the TX ring holds. Returns false if
    /// it stopped early (the kernel's per-call budget) and should be kicked again.
    pub fn kick_tx(&self) -> io::Result<bool> {
        // SAFETY: a zero-length send on our socket, the documented TX kick.
        let r = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => Ok(false),
            // The interface went down: frames stay queued, as on a cable pulled.
            Some(libc::ENETDOWN | libc::ENXIO) => Ok(true),
            _ => Err(e),
        }
    }

    /// Wakes the driver to refill from the fill ring (need_wakeup mode).
    pub fn kick_rx(&self) {
        // SAFETY: a zero-length, non-blocking receive on our socket.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<XskStats> {
        sockopt::get(self.fd(), SOL_XDP, opt::STATISTICS)
    }
}
