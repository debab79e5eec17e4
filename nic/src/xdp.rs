//! The `xdp:IFACE` backend: AF_XDP sockets on every receive queue of an
//! interface the kernel keeps using, with an XDP program (assembled in
//! [`crate::flow_prog`]) that steers only the stack's flows to them.
//!
//! The UMEM is the stack's packet-buffer memory: received frames land in
//! buffers the stack queues on sockets as they are, and the stack's frames
//! are transmitted from where it built them. Buffers in the fill rings and
//! frames in flight on TX hold a pool reference until the kernel gives them
//! back. The program is attached through a BPF link, so it goes away when
//! the last process holding the link exits, however it exits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rbypass_stack::pool::{rx_csum, BUF_SIZE};
use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{BufId, Core, IfaceConfig};

use crate::bpf::{attach_type, map_type, prog_type, xdp_flags, Link, Map, Program};
use crate::ctl::{self, ControlPlane};
use crate::flow::{self, FlowKey, FlowSet};
use crate::flow_prog::{self, Flavour};
use crate::netlink::NetlinkError;
use crate::xsk::{bind_flags, Desc, RingSizes, Xsk};
use crate::{Nic, NicCaps};

/// Entries of each ring.
const RING: u32 = 2048;
/// Most frames kept posted in one queue's fill ring.
const FILL_MAX: u32 = 1024;

/// How the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (native XDP).
    Native,
    /// In the kernel's generic path (slower; any device).
    Generic,
}

/// Errors of opening an AF_XDP device, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("xdp:{0}: no such network interface (see `ip link`)")]
    NoInterface(String),
    #[error("xdp:{0}: the interface has no IPv4 address; give it one (`ip addr add A.B.C.D/LEN dev {0}`) or set RBYPASS_IP")]
    NoAddress(String),
    #[error("xdp:{0}: not permitted to {1}: AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (run as root, or `setcap cap_net_admin,cap_net_raw,cap_bpf+ep` on the binary)")]
    Privilege(String, &'static str),
    #[error("xdp:{0}: another XDP program is attached, maybe another rbypass stack's (see `ip link show {0}` and `rbypass stackdump`): one AF_XDP stack per interface; run the processes on one stack (one --name, started from one process), detach the program (`ip link set dev {0} xdp off`), or use packet:{0}, which several stacks can share")]
    Busy(String),
    #[error("xdp:{0}: queue {1} is already used by another AF_XDP socket; stop the other application or use packet:{0}")]
    QueueBusy(String, u32),
    #[error("xdp:{0}: XDP is not supported here ({1}); use packet:{0}")]
    Unsupported(String, String),
    #[error("xdp:{0}: {1}: {2}")]
    Io(String, &'static str, io::Error),
}

fn perm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// Runs one SIOCETHTOOL request on `ifname`; `cmd` points at the command's
/// structure, whose first field is the command number.
fn ethtool<T>(ifname: &str, cmd: &mut T) -> io::Result<()> {
    // SAFETY: a plain socket for the ioctl, closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (cmd as *mut T).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at the caller's
    // command structure, which lives across the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Number of receive queues the device has (combined or RX channels).
pub fn queue_count(ifname: &str) -> io::Result<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx: u32,
        tx: u32,
        other: u32,
        combined: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    ethtool(ifname, &mut ch)?;
    Ok(ch.combined.max(ch.rx).max(1))
}

/// Turns receive offload (GRO) off: generic XDP sees frames after GRO, and
/// a merged frame does not fit one UMEM frame, so the socket would drop it.
/// Returns whether it was on.
fn gro_off(ifname: &str) -> io::Result<bool> {
    #[repr(C)]
    struct Value {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_GGRO: u32 = 0x2b;
    const ETHTOOL_SGRO: u32 = 0x2c;
    let mut v = Value {
        cmd: ETHTOOL_GGRO,
        data: 0,
    };
    ethtool(ifname, &mut v)?;
    if v.data == 0 {
        return Ok(false);
    }
    let mut v = Value {
        cmd: ETHTOOL_SGRO,
        data: 0,
    };
    ethtool(ifname, &mut v)?;
    Ok(true)
}

/// The interface's control plane, its errors as the backend's.
fn open_ctl(ifname: &str) -> Result<ControlPlane, XdpError> {
    let name = ifname.to_string();
    ControlPlane::open(ifname).map_err(|e| match e {
        NetlinkError::NoSuchLink(_) => XdpError::NoInterface(name),
        NetlinkError::Io(e) => XdpError::Io(name, "reading the interface", e),
        e => XdpError::Io(name, "reading the interface", io::Error::other(e)),
    })
}

/// The kernel objects of the steering: maps, program, link.
struct Steering {
    flows: Map,
    xsks: Map,
    /// The program (None in a process that joined: the link holds it).
    _prog: Option<Program>,
    link: Link,
    mode: XdpMode,
}

/// A stack's AF_XDP device.
pub struct XdpNic {
    ifname: String,
    ctl: ControlPlane,
    queues: u32,
    steering: Steering,
    xsks: Vec<Xsk>,
    /// Frames received on each queue.
    rx_frames: Vec<u64>,
    fill_target: u32,
    flows: FlowSet,
    installed: Vec<FlowKey>,
    epoll: Option<OwnedFd>,
    next_rx_queue: usize,
    zerocopy: bool,
    /// When the sockets' drop counters are next looked at.
    next_drop_check: u64,
    /// Drops seen at the last look (warned about once they grow).
    dropped: u64,
}

impl XdpNic {
    /// Reads the interface and attaches the steering program; the sockets
    /// come with [`Nic::attach`], once the stack (whose memory is the UMEM)
    /// exists.
    pub fn open(ifname: &str) -> Result<XdpNic, XdpError> {
        let generic = std::env::var("RBYPASS_XDP_MODE").is_ok_and(|v| v == "generic");
        Self::open_mode(ifname, generic.then_some(XdpMode::Generic))
    }

    /// [`XdpNic::open`], with the program's mode forced (None: native if the
    /// driver has it, else generic).
    pub fn open_mode(ifname: &str, force: Option<XdpMode>) -> Result<XdpNic, XdpError> {
        let name = ifname.to_string();
        let ctl = open_ctl(ifname)?;
        let queues = match queue_count(ifname) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(
                    "xdp:{ifname}: the driver does not report its channels ({e}); using queue 0 only"
                );
                1
            }
        };
        let flows = flow_prog::flow_map().map_err(|e| {
            if perm(&e) {
                XdpError::Privilege(name.clone(), "create BPF maps")
            } else {
                XdpError::Io(name.clone(), "creating the flow map", e)
            }
        })?;
        let xsks = Map::create(map_type::XSKMAP, 4, 4, queues, "rbypass_xsks")
            .map_err(|e| XdpError::Io(name.clone(), "creating the socket map", e))?;
        let insns = flow_prog::program(&flows, Flavour::XdpRedirect { xsks: xsks.fd() })
            .map_err(|e| XdpError::Io(name.clone(), "assembling the XDP program", e))?;
        let prog = Program::load(prog_type::XDP, &insns, "rbypass_xdp", attach_type::XDP).map_err(
            |e| {
                if perm(&e) {
                    XdpError::Privilege(name.clone(), "load BPF programs")
                } else {
                    XdpError::Io(name.clone(), "loading the XDP program", e)
                }
            },
        )?;
        let ifindex = ctl.ifindex();
        let forced_generic = force == Some(XdpMode::Generic);
        let native = if forced_generic {
            Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        } else {
            Link::create(&prog, ifindex, attach_type::XDP, xdp_flags::DRV_MODE)
        };
        let (link, mode) = match native {
            Ok(l) => (l, XdpMode::Native),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) => {
                return Err(XdpError::Busy(name));
            }
            Err(e) if perm(&e) => return Err(XdpError::Privilege(name, "attach XDP programs")),
            Err(native_err) => {
                match Link::create(&prog, ifindex, attach_type::XDP, xdp_flags::SKB_MODE) {
                    Ok(l) => {
                        if !forced_generic {
                            tracing::warn!(
                                "xdp:{ifname}: the driver has no native XDP ({native_err}); using generic XDP (slower)"
                            );
                        }
                        (l, XdpMode::Generic)
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) => {
                        return Err(XdpError::Busy(name));
                    }
                    Err(e) => return Err(XdpError::Unsupported(name, e.to_string())),
                }
            }
        };
        tracing::info!("xdp:{ifname}: program attached ({mode:?} mode), {queues} queue(s)");
        if mode == XdpMode::Generic {
            match gro_off(ifname) {
                Ok(true) => tracing::warn!(
                    "xdp:{ifname}: turned GRO off (generic XDP cannot pass merged frames to AF_XDP); `ethtool -K {ifname} gro on` restores it"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "xdp:{ifname}: could not turn GRO off ({e}); merged frames will be dropped"
                ),
            }
        }
        Ok(XdpNic {
            ifname: name,
            ctl,
            queues,
            steering: Steering {
                flows,
                xsks,
                _prog: Some(prog),
                link,
                mode,
            },
            xsks: Vec::new(),
            rx_frames: Vec::new(),
            fill_target: 0,
            flows: FlowSet::new(),
            installed: Vec::new(),
            epoll: None,
            next_rx_queue: 0,
            zerocopy: false,
            next_drop_check: 0,
            dropped: 0,
        })
    }

    /// Drives the device another process of the same stack opened, from
    /// that process's fds (see [`Nic::shared_fds`]: link, flow map, socket
    /// map, then one AF_XDP socket per queue), taken with pidfd_getfd.
    /// `mode` is the one the stack's published description names.
    pub fn join(ifname: &str, mode: XdpMode, fds: Vec<OwnedFd>) -> Result<XdpNic, XdpError> {
        let name = ifname.to_string();
        if fds.len() < 4 {
            return Err(XdpError::Io(
                name,
                "joining the stack's device",
                io::Error::other(format!("{} fds published, at least 4 needed", fds.len())),
            ));
        }
        let ctl = open_ctl(ifname)?;
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("length checked");
        let link = Link::from_fd(next());
        let flows = Map::from_fd(next(), flow_prog::FLOW_KEY_SIZE, flow_prog::FLOW_VALUE_SIZE);
        let xsk_map = Map::from_fd(next(), 4, 4);
        let sizes = RingSizes {
            fill: RING,
            completion: RING,
            rx: RING,
            tx: RING,
        };
        let mut xsks = Vec::new();
        for (q, fd) in fds.enumerate() {
            let x = Xsk::adopt(fd, q as u32, sizes)
                .map_err(|e| XdpError::Io(name.clone(), "mapping a shared AF_XDP socket", e))?;
            xsks.push(x);
        }
        let queues = xsks.len() as u32;
        let zerocopy = xsks.first().is_some_and(|x| x.zerocopy());
        tracing::info!("xdp:{ifname}: joined the stack's {queues} AF_XDP socket(s)");
        Ok(XdpNic {
            ifname: name,
            ctl,
            queues,
            steering: Steering {
                flows,
                xsks: xsk_map,
                _prog: None,
                link,
                mode,
            },
            xsks,
            rx_frames: Vec::new(),
            fill_target: 0,
            flows: FlowSet::new(),
            installed: Vec::new(),
            epoll: None,
            next_rx_queue: 0,
            zerocopy,
            next_drop_check: 0,
            dropped: 0,
        })
    }

    /// How the program runs.
    pub fn mode(&self) -> XdpMode {
        self.steering.mode
    }

    /// Whether the sockets run in zero-copy mode.
    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Number of queues served.
    pub fn queues(&self) -> u32 {
        self.queues
    }

    /// Frames received on each queue so far.
    pub fn rx_frames_per_queue(&self) -> &[u64] {
        &self.rx_frames
    }

    /// The kernel's counters of each queue's socket (drops, ring full...).
    pub fn socket_stats(&self) -> Vec<(u32, crate::xsk::XskStats)> {
        self.xsks
            .iter()
            .filter_map(|x| x.stats().ok().map(|s| (x.queue(), s)))
            .collect()
    }

    /// Opens one socket per queue over the stack's buffer memory and posts
    /// receive buffers.
    fn open_sockets(&mut self, core: &mut Core<'_>) -> Result<(), XdpError> {
        let region = core.pool.data_region();
        let sizes = RingSizes {
            fill: RING,
            completion: RING,
            rx: RING,
            tx: RING,
        };
        let ifindex = self.ctl.ifindex();
        let name = self.ifname.clone();
        let mut xsks: Vec<Xsk> = Vec::with_capacity(self.queues as usize);
        for q in 0..self.queues {
            let shared = xsks.first().map(|x| x.fd());
            let base = bind_flags::USE_NEED_WAKEUP;
            let tries: &[u16] = match (shared, self.steering.mode) {
                (Some(_), _) => &[0],
                (None, XdpMode::Native) => &[bind_flags::ZEROCOPY, bind_flags::COPY],
                (None, XdpMode::Generic) => &[bind_flags::COPY],
            };
            let mut last = None;
            for &mode in tries {
                match Xsk::open(
                    ifindex,
                    q,
                    region,
                    BUF_SIZE as u32,
                    shared,
                    sizes,
                    base | mode,
                ) {
                    Ok(x) => {
                        last = None;
                        xsks.push(x);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(match e.raw_os_error() {
                    Some(libc::EBUSY) => XdpError::QueueBusy(name, q),
                    Some(libc::EPERM | libc::EACCES) => {
                        XdpError::Privilege(name, "open AF_XDP sockets")
                    }
                    Some(libc::EAFNOSUPPORT) => {
                        XdpError::Unsupported(name, "the kernel has no AF_XDP sockets".into())
                    }
                    _ => XdpError::Io(name, "opening an AF_XDP socket", e),
                });
            }
            let x = xsks.last().expect("just pushed");
            self.steering
                .xsks
                .update(&q.to_ne_bytes(), &(x.fd() as u32).to_ne_bytes())
                .map_err(|e| XdpError::Io(name.clone(), "filling the socket map", e))?;
        }
        self.zerocopy = xsks.first().is_some_and(|x| x.zerocopy());
        tracing::info!(
            "xdp:{}: {} AF_XDP socket(s) bound ({} mode)",
            self.ifname,
            xsks.len(),
            if self.zerocopy { "zero-copy" } else { "copy" }
        );
        self.xsks = xsks;
        self.start_sockets(core)
    }

    /// Sets up this process's side of the sockets: fill level, per-queue
    /// counters, one epoll set over them; then posts receive buffers.
    fn start_sockets(&mut self, core: &mut Core<'_>) -> Result<(), XdpError> {
        let name = self.ifname.clone();
        let xsks = &self.xsks;
        // A quarter of the pool at most goes to the fill rings.
        let per_queue = core.pool.capacity() / 4 / self.queues.max(1);
        self.fill_target = per_queue.clamp(16, FILL_MAX);
        self.rx_frames = vec![0; xsks.len()];
        if xsks.len() > 1 {
            // SAFETY: plain epoll_create1.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if ep < 0 {
                return Err(XdpError::Io(
                    name,
                    "creating an epoll set",
                    io::Error::last_os_error(),
                ));
            }
            // SAFETY: a new fd we own.
            let ep = unsafe { OwnedFd::from_raw_fd(ep) };
            for x in xsks {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: x.fd() as u64,
                };
                // SAFETY: valid fds and event.
                unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, x.fd(), &mut ev) };
            }
            self.epoll = Some(ep);
        }
        self.refill(core);
        Ok(())
    }

    /// Keeps every fill ring stocked with buffers from the pool.
    fn refill(&mut self, core: &mut Core<'_>) {
        for x in self.xsks.iter_mut() {
            // What the fill ring holds is read from the ring, not counted
            // here: a fork child fills and drains it too.
            let queued = x.fill.queued();
            let want = self.fill_target.saturating_sub(queued);
            if want < 16 && queued > 0 {
                continue;
            }
            let n = x.fill.free(want).min(want);
            let mut put = 0;
            while put < n {
                let Ok(b) = core.pool.alloc() else {
                    core.header().counters.drop_no_buffers.inc();
                    break;
                };
                x.fill.put(put, u64::from(b.0) * BUF_SIZE as u64);
                put += 1;
            }
            if put > 0 {
                x.fill.submit(put);
                if x.fill.needs_wakeup() {
                    x.kick_rx();
                }
            }
        }
    }

    /// Returns transmitted buffers to the pool.
    fn reclaim(&mut self, core: &mut Core<'_>) {
        for x in &mut self.xsks {
            let n = x.comp.ready();
            for i in 0..n {
                let addr = x.comp.get(i);
                core.pool.put(BufId((addr / BUF_SIZE as u64) as u32));
            }
            if n > 0 {
                x.comp.release(n);
            }
        }
    }

    /// Once a second, warns when the kernel dropped frames bound for the
    /// sockets: too large for a frame (a GSO/GRO super-frame, which generic
    /// XDP passes whole) or no free buffer in a fill ring.
    fn check_drops(&mut self, now: u64) {
        if now < self.next_drop_check {
            return;
        }
        self.next_drop_check = now + 1_000_000_000;
        let dropped: u64 = self.socket_stats().iter().map(|(_, s)| s.rx_dropped).sum();
        if dropped > self.dropped {
            let hint = match self.steering.mode {
                XdpMode::Generic => {
                    "frames larger than one buffer: in generic mode the sender must not use TSO/GSO towards this interface (on a veth peer: `ethtool -K PEER tso off gso off`)"
                }
                XdpMode::Native => "receive buffers ran out",
            };
            tracing::warn!(
                "xdp:{}: the kernel dropped {} frame(s) bound for the stack: {hint}",
                self.ifname,
                dropped - self.dropped
            );
            self.dropped = dropped;
        }
    }
}

impl Nic for XdpNic {
    fn name(&self) -> String {
        format!("xdp:{}", self.ifname)
    }

    fn describe(&self) -> String {
        format!(
            "xdp:{} {} {} {}q",
            self.ifname,
            match self.steering.mode {
                XdpMode::Native => "native",
                XdpMode::Generic => "generic",
            },
            if self.zerocopy { "zero-copy" } else { "copy" },
            self.queues
        )
    }

    fn caps(&self) -> NicCaps {
        let s = self.ctl.snapshot();
        NicCaps {
            mac: EthernetAddress(s.link.mac),
            mtu: s.link.mtu.min(1500) as u16,
            rx_checksum_verified: false,
            tx_checksum_offload: false,
        }
    }

    fn iface(&self) -> Option<IfaceConfig> {
        self.ctl.iface_config().map(|mut c| {
            c.mtu = c.mtu.min(1500);
            c
        })
    }

    fn attach(&mut self, core: &mut Core<'_>) -> io::Result<()> {
        if !self.rx_frames.is_empty() {
            return Ok(());
        }
        if self.xsks.is_empty() {
            self.open_sockets(core).map_err(io::Error::other)?;
        } else {
            // Joined: the sockets exist; this process sets up its side.
            self.start_sockets(core).map_err(io::Error::other)?;
        }
        self.ctl.seed(core, rbypass_stack::clock::now_ns());
        self.sync_flows(core)
    }

    fn receive(&mut self, core: &mut Core<'_>, out: &mut [BufId], now: u64) -> io::Result<usize> {
        self.ctl.poll(core, now);
        self.check_drops(now);
        self.reclaim(core);
        let mut n = 0;
        let queues = self.xsks.len();
        for k in 0..queues {
            let q = (self.next_rx_queue + k) % queues;
            let x = &mut self.xsks[q];
            let ready = x.rx.ready().min((out.len() - n) as u32);
            for i in 0..ready {
                let d: Desc = x.rx.get(i);
                let b = BufId((d.addr / BUF_SIZE as u64) as u32);
                let off = (d.addr % BUF_SIZE as u64) as usize;
                let m = core.pool.meta_mut(b);
                m.off = off as u16;
                m.len = (d.len as usize).min(BUF_SIZE - off) as u16;
                m.rx_csum = rx_csum::PARTIAL_OK;
                out[n] = b;
                n += 1;
            }
            if ready > 0 {
                x.rx.release(ready);
                self.rx_frames[q] += u64::from(ready);
            }
            if n == out.len() {
                break;
            }
        }
        self.next_rx_queue = (self.next_rx_queue + 1) % queues.max(1);
        self.refill(core);
        Ok(n)
    }

    fn transmit(&mut self, core: &mut Core<'_>, frames: &[BufId], now: u64) -> io::Result<usize> {
        self.reclaim(core);
        let Some(x) = self.xsks.first_mut() else {
            return Ok(0);
        };
        let n = x.tx.free(frames.len() as u32).min(frames.len() as u32);
        let mut arp = None;
        for (i, &b) in frames[..n as usize].iter().enumerate() {
            let m = core.pool.meta(b);
            x.tx.put(
                i as u32,
                Desc {
                    addr: u64::from(b.0) * BUF_SIZE as u64 + u64::from(m.off),
                    len: u32::from(m.len),
                    options: 0,
                },
            );
            if core.pool.frame(b).get(12..14) == Some(&[0x08, 0x06]) {
                arp = Some(b);
            }
        }
        if n > 0 {
            x.tx.submit(n);
            // Copy mode transmits a bounded batch per kick: kick until done.
            let mut tries = n / 16 + 4;
            if !self.zerocopy || x.tx.needs_wakeup() {
                while tries > 0 {
                    tries -= 1;
                    if x.kick_tx()? {
                        break;
                    }
                }
            }
        }
        if let Some(target) = arp.and_then(|b| ctl::arp_request_target(core.pool.frame(b))) {
            self.ctl.resolve(core, target, now);
        }
        Ok(n as usize)
    }

    fn wait_fd(&self) -> Option<RawFd> {
        match &self.epoll {
            Some(ep) => Some(ep.as_raw_fd()),
            None => self.xsks.first().map(|x| x.fd()),
        }
    }

    fn sync_flows(&mut self, core: &Core<'_>) -> io::Result<()> {
        if !self.flows.refresh(core) {
            return Ok(());
        }
        // Other processes of the stack change the map too: start from what
        // it holds, not from what this process last wrote.
        match self.steering.flows.keys() {
            Ok(keys) => {
                self.installed = keys.iter().filter_map(|k| FlowKey::from_bytes(k)).collect();
                self.installed.sort_unstable();
            }
            Err(e) => {
                self.flows.invalidate();
                return Err(e);
            }
        }
        if let Err(e) = flow::mirror(&self.steering.flows, &mut self.installed, self.flows.keys()) {
            self.flows.invalidate();
            return Err(e);
        }
        Ok(())
    }

    fn kernel_speaks_igmp(&self) -> bool {
        true
    }

    fn shared_fds(&self) -> Vec<RawFd> {
        let mut v = vec![
            self.steering.link.fd(),
            self.steering.flows.fd(),
            self.steering.xsks.fd(),
        ];
        v.extend(self.xsks.iter().map(|x| x.fd()));
        v
    }

    fn keep_fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.xsks.iter().map(|x| x.fd()).collect();
        v.extend(self.epoll.as_ref().map(|e| e.as_raw_fd()));
        v.extend([
            self.steering.link.fd(),
            self.steering.flows.fd(),
            self.steering.xsks.fd(),
        ]);
        v.extend(self.ctl.fds());
        v
    }
}
