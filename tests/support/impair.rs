//! A layer-2 forwarder that impairs traffic, standing in for netem (which
//! this kernel lacks) when testing TCP over a lossy path.
//!
//! [`Forwarder::start`] bridges two interfaces of a namespace (M of a
//! [`ThreeHosts`](super::veth::ThreeHosts)) with one thread per direction,
//! each reading frames from an `AF_PACKET` socket on one interface and
//! writing them to the other, dropping, duplicating, holding back
//! (reordering) and corrupting frames at random with a seeded PRNG.
//!
//! Checksums: a Linux sender on a veth leaves TCP/UDP checksums to "offload"
//! (only the pseudo-header sum is in the frame); once a frame has passed
//! through a packet socket the receiver verifies the full checksum and would
//! drop it. So every IPv4 TCP/UDP frame (not fragments; UDP without checksum
//! stays without) gets its full checksum recomputed before anything else,
//! and corruption happens after that, so a corrupted frame is detectably
//! wrong. ARP and other frames are forwarded as they are (and may be lost,
//! duplicated or reordered, never corrupted).

// Each integration test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::veth::in_netns;

/// What to do to frames, each probability drawn independently per frame and
/// direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Probability a frame is dropped.
    pub loss: f64,
    /// Probability a frame is sent twice.
    pub duplicate: f64,
    /// Probability a frame is held back and sent after the next one, or after
    /// `reorder_delay` if no next frame comes first.
    pub reorder: f64,
    /// Longest time a held-back frame waits.
    pub reorder_delay: Duration,
    /// Probability one random byte after the Ethernet and IPv4 headers (in
    /// the TCP/UDP header or payload) of a checksummed TCP/UDP frame is
    /// flipped.
    pub corrupt: f64,
    /// PRNG seed (each direction derives its own stream from it).
    pub seed: u64,
}

/// What the forwarder did, summed over both directions.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImpairStats {
    /// Frames passed on (each received frame once; extra copies are counted
    /// in `duplicated`).
    pub forwarded: u64,
    /// Frames dropped: lost on purpose, larger than 1514 bytes, or refused by
    /// the sending socket.
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Frames held back to be sent after a later one.
    pub reordered: u64,
    /// Frames with a byte flipped.
    pub corrupted: u64,
}

/// Largest frame forwarded: a 1500-byte MTU plus the Ethernet header.
const MAX_FRAME: usize = 1514;
/// How long the receive poll waits, so `stop` is noticed promptly.
const POLL: Duration = Duration::from_millis(50);
/// Socket buffer sizes.
const SOCK_BUF: libc::c_int = 4 << 20;

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
}

/// A running impairing forwarder; stops and joins its threads on drop.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts forwarding both ways between `if1` and `if2` of namespace `ns`
    /// with the same impairment each way. Both interfaces are put in
    /// promiscuous mode for as long as the forwarder runs.
    pub fn start(ns: &str, if1: &str, if2: &str, imp: Impairment) -> io::Result<Forwarder> {
        let (n1, n2) = (if1.to_string(), if2.to_string());
        let (s1, s2) = in_netns(ns, move || -> io::Result<(PacketSocket, PacketSocket)> {
            Ok((PacketSocket::open(&n1)?, PacketSocket::open(&n2)?))
        })??;
        let (s1, s2) = (Arc::new(s1), Arc::new(s2));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut fwd = Forwarder {
            stop,
            counters,
            threads: Vec::new(),
        };
        for (dir, rx, tx, name) in [
            (0u64, s1.clone(), s2.clone(), format!("impair {if1}>{if2}")),
            (1u64, s2, s1, format!("impair {if2}>{if1}")),
        ] {
            let stop = fwd.stop.clone();
            let counters = fwd.counters.clone();
            let mut rng = Rng::new(imp.seed ^ (dir + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let handle = std::thread::Builder::new().name(name).spawn(move || {
                Direction {
                    rx: &rx,
                    tx: &tx,
                    imp,
                    rng: &mut rng,
                    stop: &stop,
                    c: &counters,
                    held: None,
                    oversize_logged: 0,
                    errors_logged: 0,
                }
                .run()
            })?;
            // On failure here, `fwd`'s drop stops the thread already started.
            fwd.threads.push(handle);
        }
        Ok(fwd)
    }

    /// The counters so far.
    pub fn stats(&self) -> ImpairStats {
        let c = &self.counters;
        ImpairStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
            corrupted: c.corrupted.load(Ordering::Relaxed),
        }
    }

    /// Stops forwarding (a frame still held back is discarded) and returns
    /// the final counters.
    pub fn stop(mut self) -> ImpairStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("stats", &self.stats())
            .finish()
    }
}

/// An `AF_PACKET` raw socket bound to one interface, seeing all protocols,
/// not seeing outgoing frames.
struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
}

impl PacketSocket {
    /// Opens the socket in the calling thread's namespace.
    fn open(ifname: &str) -> io::Result<PacketSocket> {
        let cname = CString::new(ifname).map_err(|_| invalid_name(ifname))?;
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("interface {ifname:?}: {e}"),
            ));
        }
        // Protocol 0: no frames are queued until bind picks the interface.
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_err(&format!("socket(AF_PACKET) for {ifname}")));
        }
        // SAFETY: raw is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = PacketSocket {
            fd,
            ifname: ifname.to_string(),
        };
        // Best effort (kernel >= 4.20); outgoing frames are also skipped by
        // their packet type.
        let _ = s.setsockopt(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32);
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if s.setsockopt(libc::SOL_SOCKET, force, &SOCK_BUF).is_err() {
                s.setsockopt(libc::SOL_SOCKET, plain, &SOCK_BUF)?;
            }
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        s.setsockopt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: sll is a properly sized, initialised sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                s.raw(),
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(os_err(&format!("bind packet socket to {ifname}")));
        }
        Ok(s)
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
        // SAFETY: val points to a live T of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.raw(),
                level,
                name,
                (val as *const T).cast(),
                mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(os_err(&format!(
                "setsockopt({level}, {name}) on packet socket for {}",
                self.ifname
            )));
        }
        Ok(())
    }

    /// Waits up to `timeout` for a frame to read.
    fn wait_readable(&self, timeout: Duration) -> bool {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        n > 0
    }

    /// Reads one frame without blocking: `Ok(None)` if none is queued,
    /// else its real length (which may exceed `buf`) and packet type.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, u8)>> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and sll are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.raw(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some((n as usize, sll.sll_pkttype)))
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid for its length.
        let n = unsafe { libc::send(self.raw(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn invalid_name(ifname: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("bad interface name {ifname:?}"),
    )
}

/// One direction's forwarding loop.
struct Direction<'a> {
    rx: &'a PacketSocket,
    tx: &'a PacketSocket,
    imp: Impairment,
    rng: &'a mut Rng,
    stop: &'a AtomicBool,
    c: &'a Counters,
    /// A frame held back for reordering and when it must go at the latest.
    held: Option<(Vec<u8>, Instant)>,
    oversize_logged: u32,
    errors_logged: u32,
}

impl Direction<'_> {
    fn run(mut self) {
        let mut buf = vec![0u8; 64 << 10];
        while !self.stop.load(Ordering::Relaxed) {
            let wait = match &self.held {
                Some((_, due)) => due.saturating_duration_since(Instant::now()).min(POLL),
                None => POLL,
            };
            let readable = self.rx.wait_readable(wait);
            self.release_due();
            if !readable {
                continue;
            }
            // Drain a batch, then look at the stop flag and the held frame.
            for _ in 0..256 {
                match self.rx.recv(&mut buf) {
                    Ok(None) => break,
                    Ok(Some((_, libc::PACKET_OUTGOING))) => {}
                    Ok(Some((n, _))) if n > MAX_FRAME || n > buf.len() => {
                        self.c.dropped.fetch_add(1, Ordering::Relaxed);
                        if self.oversize_logged < 5 {
                            self.oversize_logged += 1;
                            eprintln!(
                                "impair: dropped a {n}-byte frame from {} (over {MAX_FRAME}: \
                                 are TSO/GSO/GRO off on the veths?)",
                                self.rx.ifname
                            );
                        }
                    }
                    Ok(Some((n, _))) => self.handle(&mut buf[..n]),
                    Err(e) => {
                        self.log_error(&format!("recv on {}: {e}", self.rx.ifname));
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }

    /// Sends the held frame if its time has come.
    fn release_due(&mut self) {
        if matches!(&self.held, Some((_, due)) if *due <= Instant::now()) {
            let (frame, _) = self.held.take().expect("held frame present");
            self.send_original(&frame);
        }
    }

    fn handle(&mut self, frame: &mut [u8]) {
        let l4 = fix_l4_checksum(frame);
        // Draw every decision for every frame, so the stream of decisions
        // depends only on the seed and the number of frames.
        let lose = self.rng.chance(self.imp.loss);
        let corrupt = self.rng.chance(self.imp.corrupt);
        let dup = self.rng.chance(self.imp.duplicate);
        let reorder = self.rng.chance(self.imp.reorder);
        let pos = self.rng.next_u64();
        let xor = 1 + (self.rng.next_u64() % 255) as u8;
        if lose {
            self.c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if corrupt {
            if let Some(l4) = l4 {
                let at = l4.corrupt_offset(pos);
                frame[at] ^= xor;
                if l4.pseudo_only(frame) {
                    // A checksum field holding just the pseudo-header sum
                    // reads as "offloaded, not yet computed" to a receiver
                    // behind a veth, which then trusts the frame, as it may:
                    // on a real link the Ethernet FCS catches such damage.
                    // Leave this frame intact rather than fake that case.
                    frame[at] ^= xor;
                } else {
                    self.c.corrupted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if dup && self.transmit(frame) {
            self.c.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        if reorder && self.held.is_none() {
            self.held = Some((frame.to_vec(), Instant::now() + self.imp.reorder_delay));
            self.c.reordered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.send_original(frame);
        if let Some((held, _)) = self.held.take() {
            self.send_original(&held);
        }
    }

    /// Sends a received frame on (counting it forwarded or dropped).
    fn send_original(&mut self, frame: &[u8]) {
        if self.transmit(frame) {
            self.c.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends `frame`; a refusal (full queue) counts as a drop.
    fn transmit(&mut self, frame: &[u8]) -> bool {
        match self.tx.send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.c.dropped.fetch_add(1, Ordering::Relaxed);
                if e.raw_os_error() != Some(libc::ENOBUFS) {
                    self.log_error(&format!("send on {}: {e}", self.tx.ifname));
                }
                false
            }
        }
    }

    fn log_error(&mut self, msg: &str) {
        if self.errors_logged < 5 {
            self.errors_logged += 1;
            eprintln!("impair: {msg}");
        }
    }
}

/// The TCP/UDP part of an IPv4 frame whose checksum was recomputed.
#[derive(Clone, Copy, Debug)]
struct L4 {
    /// Offset of the checksum field.
    csum_at: usize,
    /// Offset of the TCP/UDP header in the frame.
    start: usize,
    /// End of the IP datagram (Ethernet padding excluded).
    end: usize,
    udp: bool,
}

impl L4 {
    /// Whether the checksum field holds only the folded pseudo-header sum.
    fn pseudo_only(self, frame: &[u8]) -> bool {
        const ETH: usize = 14;
        let mut sum = sum_words(&frame[ETH + 12..ETH + 20])
            + u64::from(if self.udp { 17u8 } else { 6 })
            + (self.end - self.start) as u64;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        frame[self.csum_at..self.csum_at + 2] == (sum as u16).to_be_bytes()
    }

    /// Maps a random number to a byte to flip. UDP's checksum field is left
    /// alone: a flip there could produce 0, "no checksum", and go unnoticed.
    fn corrupt_offset(self, r: u64) -> usize {
        let len = self.end - self.start;
        if self.udp {
            let i = (r % (len as u64 - 2)) as usize;
            self.start + if i >= 6 { i + 2 } else { i }
        } else {
            self.start + (r % len as u64) as usize
        }
    }
}

/// Writes the full TCP or UDP checksum into an unfragmented IPv4 frame and
/// returns where its L4 part lies; `None` for anything else (ARP, ICMP,
/// fragments, truncated frames, UDP without checksum), which is left as is.
fn fix_l4_checksum(frame: &mut [u8]) -> Option<L4> {
    const ETH: usize = 14;
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let vihl = frame[ETH];
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
    if total < ihl || ETH + total > frame.len() {
        return None;
    }
    let frag = u16::from_be_bytes([frame[ETH + 6], frame[ETH + 7]]);
    if frag & 0x3fff != 0 {
        return None; // MF set or nonzero offset
    }
    let proto = frame[ETH + 9];
    let start = ETH + ihl;
    let end = ETH + total;
    let len = end - start;
    let (csum_at, udp) = match proto {
        6 if len >= 20 => (start + 16, false),
        17 if len >= 8 => {
            if frame[start + 6..start + 8] == [0, 0] {
                return None; // no checksum: keep it that way
            }
            (start + 6, true)
        }
        _ => return None,
    };
    frame[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
    let mut sum: u64 = 0;
    sum += sum_words(&frame[ETH + 12..ETH + 20]); // source and destination
    sum += u64::from(proto);
    sum += len as u64;
    sum += sum_words(&frame[start..end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut csum = !(sum as u16);
    if udp && csum == 0 {
        csum = 0xffff;
    }
    frame[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
    Some(L4 {
        csum_at,
        start,
        end,
        udp,
    })
}

/// Sum of big-endian 16-bit words (an odd last byte padded with zero).
fn sum_words(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// xorshift64* seeded through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p` (always draws one number).
    fn chance(&mut self, p: f64) -> bool {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }
}
