//! The `packet:IFACE` backend: an AF_PACKET socket with TPACKET_V2 receive
//! and transmit rings on an interface the kernel keeps using, the fallback
//! where AF_XDP is unavailable (old kernels, drivers or containers without
//! XDP).
//!
//! One socket bound to the interface carries everything. Received frames
//! are copied from the RX ring into the stack's packet buffers; the stack's
//! frames are copied into the TX ring and sent with one `send` kick per
//! burst (`PACKET_QDISC_BYPASS`: straight to the driver, so `tcpdump` on the
//! interface does not see them). The socket ignores frames the host itself
//! transmits (`PACKET_IGNORE_OUTGOING`).
//!
//! What reaches the ring is decided by a classic BPF socket filter built
//! from the stack's flows ([`filter_program`], replaced atomically in
//! [`Nic::sync_flows`] whenever the stack binds, connects or closes): IPv4
//! TCP/UDP (non-fragments) whose protocol, destination port and address match
//! a [`FlowKey`], and ARP whose target is the stack's address. Everything
//! else never enters the ring. A drop-all filter is attached before the
//! socket is bound, so no frame of other flows is ever queued.
//!
//! An AF_PACKET socket receives a *copy*: the kernel would go on to process
//! the original, answering a TCP segment for a port only the stack owns
//! with a RST, or handing it to the preload library's kernel socket behind
//! the same port. So a TC ingress program (tcx, the same assembled flow
//! matcher as the XDP backend's, [`crate::flow_prog`]) drops the stack's
//! flows after the packet tap has seen them; it is attached by a BPF link and
//! goes when the last process holding it exits.
//!
//! The interface's address, routes and neighbours come from the kernel
//! through the [`ControlPlane`], as for `xdp:`.
//!
//! Frames larger than a packet buffer (or truncated by the ring, typically
//! GRO/LRO aggregates: `ethtool -K IFACE gro off lro off`) are dropped and
//! counted in [`PacketStats`].

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use rbypass_stack::pool::{rx_csum, BUF_SIZE, MAX_FRAME};
use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{BufId, Core, IfaceConfig};

use crate::bpf::{attach_type, prog_type, Link, Map, Program};
use crate::ctl::ControlPlane;
use crate::flow::{self, proto, FlowKey, FlowSet};
use crate::flow_prog::{self, Flavour};
use crate::netlink::NetlinkError;
use crate::sockopt;
use crate::{Nic, NicCaps};

/// `TPACKET_V2` of `enum tpacket_versions`.
const TPACKET_V2: libc::c_int = 1;
/// Size of one ring frame (header and data).
const FRAME_SIZE: usize = 2048;
/// Frames wanted in each ring.
const RING_FRAMES: usize = 512;
/// Size of the ring header the kernel writes at the start of a frame.
const HDR_SIZE: usize = std::mem::size_of::<libc::tpacket2_hdr>();
/// Where the kernel expects transmit data in a TX frame:
/// `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`, i.e.
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`.
const TX_DATA_OFF: usize = (HDR_SIZE + 15) & !15;
/// Ethernet header length.
const ETH_HLEN: usize = 14;
// Every frame a packet buffer holds fits a TX slot.
const _: () = assert!(MAX_FRAME + TX_DATA_OFF <= FRAME_SIZE);
/// What the flow filter returns for a frame it accepts (bytes to keep).
pub const FILTER_ACCEPT: u32 = 0x0004_0000;
/// Most flows [`filter_program`] matches exactly; beyond, it accepts all
/// IPv4 TCP/UDP to the stack's address.
pub const MAX_FILTER_KEYS: usize = 1000;
/// The kernel's limit on classic BPF program length (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// Errors of opening an AF_PACKET device, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The interface does not exist (in this network namespace).
    #[error("packet:{0}: no such network interface (see `ip link`)")]
    NoInterface(String),
    /// The process lacks the privilege to open a packet socket.
    #[error("packet:{0}: not permitted to {1}: AF_PACKET needs CAP_NET_RAW: run as root or `setcap cap_net_raw,cap_net_admin+ep` on the binary")]
    Privilege(String, &'static str),
    /// The interface does not carry Ethernet frames.
    #[error("packet:{0}: not an Ethernet interface (ARP hardware type {1}); packet: needs Ethernet framing (a TUN or loopback device will not do)")]
    NotEthernet(String, u16),
    /// The TC ingress program that hides the stack's flows from the kernel
    /// could not be attached.
    #[error("packet:{0}: cannot attach the TC ingress program that keeps the stack's flows from the kernel ({1}): it needs CAP_BPF and CAP_NET_ADMIN (run as root) and Linux 6.6 or later (tcx)")]
    KernelDrop(String, #[source] io::Error),
    /// Any other failure, with the step that failed.
    #[error("packet:{0}: {1}: {2}")]
    Io(String, &'static str, #[source] io::Error),
}

/// What a [`PacketNic`] has moved and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Received frames dropped: larger than a packet buffer, truncated by
    /// the ring (GRO/LRO), of a VLAN, or with a malformed ring header.
    pub rx_dropped: u64,
    /// Frames queued on the TX ring.
    pub tx_frames: u64,
    /// Frames dropped on transmit: too large for the ring or the interface,
    /// or refused by the kernel (`TP_STATUS_WRONG_FORMAT`).
    pub tx_dropped: u64,
    /// Send kicks that failed (the frames stay queued and are kicked again).
    pub tx_kick_errors: u64,
    /// Flows the installed filter matches.
    pub filter_keys: u64,
    /// Instructions of the installed filter.
    pub filter_insns: u64,
    /// Whether the installed filter is the accept-all-to-our-address fallback.
    pub filter_fallback: bool,
}

/// One mmapped ring: `frames` frames of [`FRAME_SIZE`] in blocks.
#[derive(Debug, Clone, Copy)]
struct Ring {
    base: *mut u8,
    frames: usize,
    frames_per_block: usize,
    block_size: usize,
}

impl Ring {
    /// Start of frame `i` (< `frames`).
    fn frame(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.frames);
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * FRAME_SIZE;
        // SAFETY: `i < frames`, so the offset lies inside the ring's part of
        // the mapping (`block_nr * block_size` bytes from `base`).
        unsafe { self.base.add(off) }
    }

    /// The status word of frame `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: `tp_status` is the first field of the frame's
        // `tpacket2_hdr`, frames are 16-byte aligned, the mapping lives as
        // long as `self` (the ring is only used while the `PacketNic` owning
        // the mapping lives), and the kernel accesses it atomically too.
        unsafe { &*(self.frame(i) as *const AtomicU32) }
    }
}

/// The TC ingress program dropping the stack's flows in the kernel, and the
/// map of flows it matches.
#[derive(Debug)]
struct KernelDrop {
    map: Map,
    /// The program (None in a process that joined: the link holds it).
    _prog: Option<Program>,
    link: Link,
    installed: Vec<FlowKey>,
}

impl KernelDrop {
    fn attach(ifindex: u32) -> io::Result<KernelDrop> {
        let map = flow_prog::flow_map()?;
        let insns = flow_prog::program(&map, Flavour::TcDrop)?;
        let prog = Program::load(
            prog_type::SCHED_CLS,
            &insns,
            "rbypass_tcdrop",
            attach_type::TCX_INGRESS,
        )?;
        let link = Link::create(&prog, ifindex, attach_type::TCX_INGRESS, 0)?;
        Ok(KernelDrop {
            map,
            _prog: Some(prog),
            link,
            installed: Vec::new(),
        })
    }
}

/// The interface's control plane, its errors as the backend's.
fn open_ctl(ifname: &str) -> Result<ControlPlane, PacketError> {
    let name = ifname.to_string();
    let step = "reading the interface";
    ControlPlane::open(ifname).map_err(|e| match e {
        NetlinkError::NoSuchLink(_) => PacketError::NoInterface(name),
        NetlinkError::Io(e) if is_perm(&e) => PacketError::Privilege(name, step),
        NetlinkError::Io(e) => PacketError::Io(name, step, e),
        e => PacketError::Io(name, step, io::Error::other(e)),
    })
}

/// The rings' layout: (block size, frames per block, blocks), the same in
/// every process of the machine (it depends on the page size only).
fn ring_geometry() -> (usize, usize, usize) {
    // SAFETY: plain sysconf.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096);
    let block_size = FRAME_SIZE.max(page).div_ceil(page) * page;
    let frames_per_block = block_size / FRAME_SIZE;
    let block_nr = (RING_FRAMES / frames_per_block).max(1);
    (block_size, frames_per_block, block_nr)
}

/// A stack's AF_PACKET device.
#[derive(Debug)]
pub struct PacketNic {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    mac: EthernetAddress,
    /// The interface's MTU as the kernel has it.
    if_mtu: u32,
    map: *mut u8,
    map_len: usize,
    rx: Ring,
    tx: Ring,
    rx_next: usize,
    tx_next: usize,
    /// A send kick failed with frames left on the TX ring.
    kick_pending: bool,
    warned_truncated: bool,
    flows: FlowSet,
    /// The stack address the installed filter was built for (None: the
    /// drop-all filter of `open` is still installed).
    filter_ip: Option<Ipv4Addr>,
    stats: PacketStats,
    ctl: ControlPlane,
    kernel_drop: KernelDrop,
}

// SAFETY: the raw pointers point into a mapping the `PacketNic` owns alone
// (nothing else refers to it and it is unmapped only in `Drop`); moving the
// owner to another thread moves that exclusive ownership with it.
unsafe impl Send for PacketNic {}

impl Drop for PacketNic {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are exactly the mapping `open` created, and
        // nothing uses it after this (the socket closes right after).
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

fn is_perm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// Attaches (atomically replacing any previous) a classic BPF filter.
fn attach_filter(fd: RawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call.
    sockopt::set(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// An `ifreq` naming `ifname` (which fits: `if_nametoindex` accepted it).
fn ifreq_for(ifname: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct/union for which all-zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, &s) in req
        .ifr_name
        .iter_mut()
        .zip(ifname.as_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req
}

impl PacketNic {
    /// Opens an AF_PACKET socket with RX and TX rings on the existing
    /// interface `ifname` (in the calling thread's network namespace).
    /// Nothing is received until the first [`Nic::sync_flows`] installs the
    /// flow filter.
    pub fn open(ifname: &str) -> Result<PacketNic, PacketError> {
        let name = ifname.to_string();
        let io_err = |step: &'static str, e: io::Error| {
            if is_perm(&e) {
                PacketError::Privilege(name.clone(), step)
            } else {
                PacketError::Io(name.clone(), step, e)
            }
        };
        let cname = CString::new(ifname).map_err(|_| PacketError::NoInterface(name.clone()))?;
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
            return Err(PacketError::NoInterface(name));
        }
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV | libc::ENXIO | libc::ENOENT) | None => {
                    PacketError::NoInterface(name)
                }
                _ => io_err("looking up the interface", e),
            });
        }

        let ctl = open_ctl(ifname)?;
        let kernel_drop =
            KernelDrop::attach(ifindex).map_err(|e| PacketError::KernelDrop(name.clone(), e))?;

        let proto_be = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain system call with constant arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::c_int::from(proto_be),
            )
        };
        if raw < 0 {
            return Err(io_err(
                "open an AF_PACKET socket",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a freshly created descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();

        // A socket of protocol ETH_P_ALL hears every interface from its
        // creation: drop everything until the flow filter is installed.
        let drop_all = [libc::sock_filter {
            code: op::RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        attach_filter(s, &drop_all).map_err(|e| io_err("attaching the drop-all filter", e))?;
        sockopt::set(s, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)
            .map_err(|e| io_err("selecting TPACKET_V2", e))?;
        // A malformed TX frame is skipped rather than stalling the ring.
        sockopt::set(s, libc::SOL_PACKET, libc::PACKET_LOSS, &1 as &libc::c_int)
            .map_err(|e| io_err("setting PACKET_LOSS", e))?;

        let (block_size, frames_per_block, block_nr) = ring_geometry();
        let req = libc::tpacket_req {
            tp_block_size: block_size as libc::c_uint,
            tp_block_nr: block_nr as libc::c_uint,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            tp_frame_nr: (block_nr * frames_per_block) as libc::c_uint,
        };
        sockopt::set(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| io_err("setting up the RX ring", e))?;
        sockopt::set(s, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)
            .map_err(|e| io_err("setting up the TX ring", e))?;
        let mut nic = Self::map_rings(fd, &name, ifindex, ctl, kernel_drop)?;

        sockopt::set(
            s,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        )
        .map_err(|e| io_err("setting PACKET_IGNORE_OUTGOING (needs Linux 4.20)", e))?;

        // SAFETY: all-zeroes is a valid `sockaddr_ll`.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid `sockaddr_ll` of the size passed.
        let rc = unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV | libc::ENXIO) => PacketError::NoInterface(name),
                _ => io_err("binding to the interface", e),
            });
        }
        if let Err(e) = sockopt::set(
            s,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        ) {
            tracing::debug!(
                "packet:{ifname}: no PACKET_QDISC_BYPASS ({e}); sending through the qdisc"
            );
        }
        nic.read_link()?;
        tracing::info!(
            "packet:{ifname}: AF_PACKET socket bound (ifindex {ifindex}, {} + {} ring frames, MTU {})",
            nic.rx.frames,
            nic.tx.frames,
            nic.if_mtu
        );
        Ok(nic)
    }

    /// Drives the AF_PACKET socket another process of the same stack
    /// opened, from that process's fds (see [`Nic::shared_fds`]: the
    /// socket, the TC link, the TC flow map), taken with pidfd_getfd: the
    /// same rings, mapped here, with the ring cursors in the stack.
    pub fn join(ifname: &str, fds: Vec<OwnedFd>) -> Result<PacketNic, PacketError> {
        let name = ifname.to_string();
        if fds.len() != 3 {
            return Err(PacketError::Io(
                name,
                "joining the stack's device",
                io::Error::other(format!("{} fds published, 3 needed", fds.len())),
            ));
        }
        let cname = CString::new(ifname).map_err(|_| PacketError::NoInterface(name.clone()))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(PacketError::NoInterface(name));
        }
        let ctl = open_ctl(ifname)?;
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("length checked");
        let fd = next();
        let kernel_drop = KernelDrop {
            link: Link::from_fd(next()),
            map: Map::from_fd(next(), flow_prog::FLOW_KEY_SIZE, flow_prog::FLOW_VALUE_SIZE),
            _prog: None,
            installed: Vec::new(),
        };
        let mut nic = Self::map_rings(fd, &name, ifindex, ctl, kernel_drop)?;
        nic.read_link()?;
        tracing::info!("packet:{ifname}: joined the stack's AF_PACKET socket");
        Ok(nic)
    }

    /// Maps the rings of `fd` (set up with [`ring_geometry`]) and builds
    /// the device around them.
    fn map_rings(
        fd: OwnedFd,
        name: &str,
        ifindex: u32,
        ctl: ControlPlane,
        kernel_drop: KernelDrop,
    ) -> Result<PacketNic, PacketError> {
        let (block_size, frames_per_block, block_nr) = ring_geometry();
        let s = fd.as_raw_fd();
        let ring_len = block_size * block_nr;
        let map_len = 2 * ring_len;
        // SAFETY: a fresh shared mapping of the socket's rings (RX first,
        // then TX, as the kernel lays them out); no existing memory is touched.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                s,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(PacketError::Io(
                name.to_string(),
                "mapping the rings",
                io::Error::last_os_error(),
            ));
        }
        let map = map.cast::<u8>();
        let ring = |base: *mut u8| Ring {
            base,
            frames: block_nr * frames_per_block,
            frames_per_block,
            block_size,
        };
        // Owns the mapping from here on (unmapped on every error below).
        Ok(PacketNic {
            fd,
            ifname: name.to_string(),
            ifindex,
            mac: EthernetAddress([0; 6]),
            if_mtu: 1500,
            map,
            map_len,
            rx: ring(map),
            // SAFETY: the TX ring starts `ring_len` bytes into the mapping of
            // `2 * ring_len` bytes.
            tx: ring(unsafe { map.add(ring_len) }),
            rx_next: 0,
            tx_next: 0,
            kick_pending: false,
            warned_truncated: false,
            flows: FlowSet::new(),
            filter_ip: None,
            stats: PacketStats::default(),
            ctl,
            kernel_drop,
        })
    }

    /// Reads the interface's MAC address and MTU through the socket.
    fn read_link(&mut self) -> Result<(), PacketError> {
        let name = self.ifname.clone();
        let ifname = name.as_str();
        let io_err = |step: &'static str, e: io::Error| {
            if is_perm(&e) {
                PacketError::Privilege(name.clone(), step)
            } else {
                PacketError::Io(name.clone(), step, e)
            }
        };
        let s = self.fd.as_raw_fd();
        let mut req = ifreq_for(ifname);
        // SAFETY: `s` is a valid socket and `req` an initialised `ifreq`
        // that outlives the call; SIOCGIFHWADDR writes only inside it.
        if unsafe { libc::ioctl(s, libc::SIOCGIFHWADDR as _, &mut req) } < 0 {
            return Err(io_err(
                "reading the MAC address (SIOCGIFHWADDR)",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the kernel filled `ifru_hwaddr` on success; every bit
        // pattern is a valid `sockaddr`.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != libc::ARPHRD_ETHER {
            return Err(PacketError::NotEthernet(name.clone(), hw.sa_family));
        }
        let mut mac = [0u8; 6];
        for (d, &s) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *d = s as u8;
        }
        self.mac = EthernetAddress(mac);

        let mut req = ifreq_for(ifname);
        // SAFETY: as above; SIOCGIFMTU writes only `ifru_mtu`.
        if unsafe { libc::ioctl(s, libc::SIOCGIFMTU as _, &mut req) } < 0 {
            return Err(io_err(
                "reading the MTU (SIOCGIFMTU)",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the kernel filled `ifru_mtu` on success.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        self.if_mtu = u32::try_from(mtu).unwrap_or(0).max(68);
        Ok(())
    }

    /// The interface's index (for attaching programs to it).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// What the device has moved and dropped.
    pub fn stats(&self) -> PacketStats {
        self.stats
    }

    /// The kernel's counters of the socket since the last call
    /// (`PACKET_STATISTICS`, which resets them): frames that passed the
    /// filter, and those dropped because the RX ring was full.
    pub fn kernel_stats(&self) -> io::Result<(u32, u32)> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.tp_packets, st.tp_drops))
    }

    /// Largest frame (Ethernet header included) the stack may send or receive.
    fn max_frame(&self) -> usize {
        (self.if_mtu as usize + ETH_HLEN)
            .min(MAX_FRAME)
            .min(FRAME_SIZE - TX_DATA_OFF)
    }

    /// Asks the kernel to send what the TX ring holds.
    fn kick(&mut self) {
        // SAFETY: a zero-length send with a null buffer is how a TX ring is
        // flushed; the kernel reads nothing from the pointer.
        let rc =
            unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            self.kick_pending = false;
            return;
        }
        let e = io::Error::last_os_error();
        self.stats.tx_kick_errors += 1;
        // The frames stay on the ring: kick again on the next call.
        self.kick_pending = true;
        tracing::debug!("packet:{}: TX ring kick failed: {e}", self.ifname);
    }

    /// Builds and attaches the flow filter for `keys`.
    fn install_filter(&mut self, own_ip: Ipv4Addr) -> io::Result<()> {
        let keys = self.flows.keys();
        let (prog, fallback) = match exact_program(keys, own_ip) {
            Some(p) => (p, false),
            None => {
                tracing::warn!(
                    "packet:{}: {} flows are too many for an exact socket filter; \
                     accepting all IPv4 TCP/UDP to {own_ip}",
                    self.ifname,
                    keys.len()
                );
                (fallback_program(own_ip), true)
            }
        };
        attach_filter(self.fd.as_raw_fd(), &prog).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("packet:{}: attaching the flow filter: {e}", self.ifname),
            )
        })?;
        tracing::debug!(
            "packet:{}: flow filter installed: {} flows, {} instructions",
            self.ifname,
            keys.len(),
            prog.len()
        );
        self.stats.filter_keys = keys.len() as u64;
        self.stats.filter_insns = prog.len() as u64;
        self.stats.filter_fallback = fallback;
        Ok(())
    }
}

impl Nic for PacketNic {
    fn name(&self) -> String {
        format!("packet:{}", self.ifname)
    }

    fn describe(&self) -> String {
        format!(
            "packet:{} tpacket_v2 {}+{} frames",
            self.ifname, self.rx.frames, self.tx.frames
        )
    }

    fn caps(&self) -> NicCaps {
        NicCaps {
            mac: self.mac,
            mtu: (self.max_frame() - ETH_HLEN) as u16,
            rx_checksum_verified: false,
            tx_checksum_offload: false,
        }
    }

    fn iface(&self) -> Option<IfaceConfig> {
        let max = (self.max_frame() - ETH_HLEN) as u16;
        self.ctl.iface_config().map(|mut c| {
            c.mtu = c.mtu.min(max);
            c
        })
    }

    fn attach(&mut self, core: &mut Core<'_>) -> io::Result<()> {
        self.ctl.seed(core, rbypass_stack::clock::now_ns());
        self.sync_flows(core)
    }

    fn receive(&mut self, core: &mut Core<'_>, out: &mut [BufId], now: u64) -> io::Result<usize> {
        self.ctl.poll(core, now);
        if self.kick_pending {
            self.kick();
        }
        // The cursor is the stack's: another process (a fork child) may
        // have moved it.
        self.rx_next = core.nic_cursor()[0] as usize % self.rx.frames;
        let mut n = 0;
        while n < out.len() {
            let i = self.rx_next;
            let status = self.rx.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let hdr = self.rx.frame(i).cast::<libc::tpacket2_hdr>();
            // SAFETY: the frame belongs to us while its status has
            // TP_STATUS_USER (read with Acquire above, after the kernel's
            // writes of the header); `hdr` is aligned and inside the ring.
            let (mac, snap, len, tci) = unsafe {
                (
                    usize::from(std::ptr::addr_of!((*hdr).tp_mac).read()),
                    std::ptr::addr_of!((*hdr).tp_snaplen).read() as usize,
                    std::ptr::addr_of!((*hdr).tp_len).read() as usize,
                    std::ptr::addr_of!((*hdr).tp_vlan_tci).read(),
                )
            };
            let sane = mac >= HDR_SIZE && snap <= FRAME_SIZE && mac <= FRAME_SIZE - snap;
            let fits = snap == len && (ETH_HLEN..=MAX_FRAME).contains(&snap);
            // A frame of a VLAN whose tag the device stripped: not ours (the
            // stack runs untagged; VLAN 0 is priority tagging only).
            let vlan = status & libc::TP_STATUS_VLAN_VALID != 0 && tci & 0x0fff != 0;
            if !(sane && fits) || vlan {
                self.stats.rx_dropped += 1;
                if sane && len > snap && !self.warned_truncated {
                    self.warned_truncated = true;
                    tracing::warn!(
                        "packet:{}: received a {len}-byte frame the ring truncated to {snap}: \
                         disable GRO/LRO (`ethtool -K {} gro off lro off`)",
                        self.ifname,
                        self.ifname
                    );
                }
                tracing::debug!(
                    "packet:{}: frame dropped (tp_mac {mac}, tp_snaplen {snap}, tp_len {len}, \
                     VLAN tag {tci:#x})",
                    self.ifname
                );
            } else {
                let Ok(b) = core.pool.alloc() else {
                    // Leave the frame in the ring for the next call.
                    core.header().counters.drop_no_buffers.inc();
                    break;
                };
                let off = usize::from(core.pool.meta(b).off);
                if off + snap > BUF_SIZE {
                    core.pool.put(b);
                    self.stats.rx_dropped += 1;
                } else {
                    // SAFETY: `mac + snap <= FRAME_SIZE` (checked), so the
                    // bytes are inside this frame, which is ours until its
                    // status is given back below.
                    let src =
                        unsafe { std::slice::from_raw_parts(self.rx.frame(i).add(mac), snap) };
                    core.pool.chunk_mut(b)[off..off + snap].copy_from_slice(src);
                    let m = core.pool.meta_mut(b);
                    m.len = snap as u16;
                    m.rx_csum = if status & libc::TP_STATUS_CSUM_VALID != 0 {
                        rx_csum::VERIFIED
                    } else if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                        rx_csum::PARTIAL_OK
                    } else {
                        rx_csum::VERIFY
                    };
                    out[n] = b;
                    n += 1;
                    self.stats.rx_frames += 1;
                }
            }
            // Our reads of the frame happen before the kernel may reuse it.
            self.rx
                .status(i)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.rx_next = (i + 1) % self.rx.frames;
        }
        core.nic_cursor()[0] = self.rx_next as u32;
        Ok(n)
    }

    fn transmit(&mut self, core: &mut Core<'_>, frames: &[BufId], now: u64) -> io::Result<usize> {
        let max = self.max_frame();
        self.tx_next = core.nic_cursor()[1] as usize % self.tx.frames;
        let mut arp = None;
        let mut taken = 0;
        let mut queued = 0;
        for &b in frames {
            let frame = core.pool.frame(b);
            if frame.len() < ETH_HLEN || frame.len() > max {
                tracing::debug!(
                    "packet:{}: {}-byte frame dropped (limit {max})",
                    self.ifname,
                    frame.len()
                );
                self.stats.tx_dropped += 1;
                core.pool.put(b);
                taken += 1;
                continue;
            }
            arp = arp.or(crate::ctl::arp_request_target(frame));
            let i = self.tx_next;
            let status = self.tx.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
                tracing::warn!(
                    "packet:{}: the kernel refused a frame on the TX ring (wrong format); dropped",
                    self.ifname
                );
                self.stats.tx_dropped += 1;
                self.tx
                    .status(i)
                    .store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
            } else if status != libc::TP_STATUS_AVAILABLE {
                // Full: the rest stay with the caller.
                break;
            }
            let slot = self.tx.frame(i);
            // SAFETY: the slot is ours while AVAILABLE (read with Acquire);
            // `TX_DATA_OFF + frame.len() <= FRAME_SIZE` since
            // `max <= FRAME_SIZE - TX_DATA_OFF`; the header fields are inside
            // the slot and aligned.
            unsafe {
                std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(TX_DATA_OFF), frame.len());
                let hdr = slot.cast::<libc::tpacket2_hdr>();
                std::ptr::addr_of_mut!((*hdr).tp_len).write(frame.len() as u32);
                std::ptr::addr_of_mut!((*hdr).tp_snaplen).write(frame.len() as u32);
            }
            // Publishes the data and length to the kernel.
            self.tx
                .status(i)
                .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.tx_next = (i + 1) % self.tx.frames;
            core.pool.put(b);
            taken += 1;
            queued += 1;
            self.stats.tx_frames += 1;
        }
        core.nic_cursor()[1] = self.tx_next as u32;
        if let Some(target) = arp {
            self.ctl.resolve(core, target, now);
        }
        if queued > 0 || self.kick_pending {
            self.kick();
        }
        Ok(taken)
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn sync_flows(&mut self, core: &Core<'_>) -> io::Result<()> {
        let own_ip = core.iface().ip();
        let changed = self.flows.refresh(core);
        if !changed && self.filter_ip == Some(own_ip) {
            return Ok(());
        }
        // Other processes of the stack change the map too: start from what
        // it holds, not from what this process last wrote.
        match self.kernel_drop.map.keys() {
            Ok(keys) => {
                let d = &mut self.kernel_drop;
                d.installed = keys.iter().filter_map(|k| FlowKey::from_bytes(k)).collect();
                d.installed.sort_unstable();
            }
            Err(e) => {
                self.flows.invalidate();
                return Err(e);
            }
        }
        // The socket filter first, so the kernel never drops a frame of a
        // flow the ring does not take yet.
        let installed = self.install_filter(own_ip).and_then(|()| {
            let d = &mut self.kernel_drop;
            flow::mirror(&d.map, &mut d.installed, self.flows.keys())
        });
        if let Err(e) = installed {
            // Try again on the next call.
            self.flows.invalidate();
            return Err(e);
        }
        self.filter_ip = Some(own_ip);
        Ok(())
    }

    fn kernel_speaks_igmp(&self) -> bool {
        true
    }

    fn shared_fds(&self) -> Vec<RawFd> {
        vec![
            self.fd.as_raw_fd(),
            self.kernel_drop.link.fd(),
            self.kernel_drop.map.fd(),
        ]
    }

    fn keep_fds(&self) -> Vec<RawFd> {
        let mut v = vec![
            self.fd.as_raw_fd(),
            self.kernel_drop.link.fd(),
            self.kernel_drop.map.fd(),
        ];
        v.extend(self.ctl.fds());
        v
    }
}

/// Classic BPF opcodes used by the flow filter.
mod op {
    /// `ld [k]` (32 bits, absolute).
    pub const LD_W_ABS: u16 = 0x20;
    /// `ldh [k]`.
    pub const LD_H_ABS: u16 = 0x28;
    /// `ldb [k]`.
    pub const LD_B_ABS: u16 = 0x30;
    /// `ldh [x + k]`.
    pub const LD_H_IND: u16 = 0x48;
    /// `ldxb 4*([k]&0xf)`.
    pub const LDX_B_MSH: u16 = 0xb1;
    /// `ja k` (32-bit offset).
    pub const JA: u16 = 0x05;
    /// `jeq #k, jt, jf`.
    pub const JEQ_K: u16 = 0x15;
    /// `jset #k, jt, jf`.
    pub const JSET_K: u16 = 0x45;
    /// `ret #k`.
    pub const RET_K: u16 = 0x06;
}

/// A forward jump target of the [`Asm`].
#[derive(Debug, Clone, Copy)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Item {
    Plain(u16, u32),
    Ja(Label),
    Cond {
        code: u16,
        k: u32,
        jt: Label,
        jf: Label,
    },
}

/// A tiny classic-BPF assembler with forward labels. Conditional jumps
/// have 8-bit offsets: one whose target is too far becomes
/// `jxx k, 0, 1; ja jt; ja jf` (a `ja` reaches 2^32).
#[derive(Debug, Default)]
struct Asm {
    items: Vec<Item>,
    /// Item index each label is bound to.
    labels: Vec<usize>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(usize::MAX);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, l: Label) {
        self.labels[l.0] = self.items.len();
    }

    fn op(&mut self, code: u16, k: u32) {
        self.items.push(Item::Plain(code, k));
    }

    fn ja(&mut self, to: Label) {
        self.items.push(Item::Ja(to));
    }

    fn cond(&mut self, code: u16, k: u32, jt: Label, jf: Label) {
        self.items.push(Item::Cond { code, k, jt, jf });
    }

    fn finish(self) -> Vec<libc::sock_filter> {
        let n = self.items.len();
        let mut long = vec![false; n];
        let mut pos = vec![0usize; n + 1];
        loop {
            for i in 0..n {
                let size = match self.items[i] {
                    Item::Cond { .. } if long[i] => 3,
                    _ => 1,
                };
                pos[i + 1] = pos[i] + size;
            }
            let mut changed = false;
            for i in 0..n {
                if let Item::Cond { jt, jf, .. } = self.items[i] {
                    let base = pos[i] + 1;
                    let far = |l: Label| pos[self.labels[l.0]].saturating_sub(base) > 255;
                    if !long[i] && (far(jt) || far(jf)) {
                        long[i] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let at = |l: Label| {
            let t = pos[self.labels[l.0]];
            debug_assert!(self.labels[l.0] < n, "label bound past the end");
            t
        };
        let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let mut out = Vec::with_capacity(pos[n]);
        for (i, item) in self.items.iter().enumerate() {
            let here = pos[i];
            match *item {
                Item::Plain(code, k) => out.push(ins(code, 0, 0, k)),
                Item::Ja(to) => out.push(ins(op::JA, 0, 0, (at(to) - here - 1) as u32)),
                Item::Cond { code, k, jt, jf } if !long[i] => out.push(ins(
                    code,
                    (at(jt) - here - 1) as u8,
                    (at(jf) - here - 1) as u8,
                    k,
                )),
                Item::Cond { code, k, jt, jf } => {
                    out.push(ins(code, 0, 1, k));
                    out.push(ins(op::JA, 0, 0, (at(jt) - here - 2) as u32));
                    out.push(ins(op::JA, 0, 0, (at(jf) - here - 3) as u32));
                }
            }
        }
        debug_assert_eq!(out.len(), pos[n]);
        out
    }
}

/// Ports compared before a local `ret #accept`, so those jumps stay short.
const PORT_CHUNK: usize = 200;

/// The common head: ARP to `own_ip` is accepted, anything but an IPv4
/// non-fragment dropped; continues at the IPv4 case.
fn emit_head(a: &mut Asm, own_ip: Ipv4Addr, accept: Label, drop: Label) {
    let (arp, not_arp, ip, whole) = (a.label(), a.label(), a.label(), a.label());
    a.op(op::LD_H_ABS, 12);
    a.cond(op::JEQ_K, 0x0806, arp, not_arp);
    a.bind(arp);
    // ARP target protocol address.
    a.op(op::LD_W_ABS, 38);
    a.cond(op::JEQ_K, u32::from(own_ip), accept, drop);
    a.bind(not_arp);
    a.cond(op::JEQ_K, 0x0800, ip, drop);
    a.bind(ip);
    // Fragment offset and MF: fragments never match.
    a.op(op::LD_H_ABS, 20);
    a.cond(op::JSET_K, 0x3fff, drop, whole);
    a.bind(whole);
}

/// Matches (protocol, destination port) against `flows` (sorted, distinct);
/// accepts on a match, else jumps to `fail`. X holds the IP header length.
///
/// Each protocol's block follows its compare and never falls through, so
/// the next compare still sees the protocol in A.
fn emit_proto_ports(a: &mut Asm, flows: &[(u8, u16)], fail: Label) {
    let mut groups: Vec<(u8, Vec<u16>)> = Vec::new();
    for &(p, port) in flows {
        match groups.last_mut() {
            Some((gp, ports)) if *gp == p => ports.push(port),
            _ => groups.push((p, vec![port])),
        }
    }
    if groups.is_empty() {
        a.ja(fail);
        return;
    }
    a.op(op::LD_B_ABS, 23);
    for (p, ports) in &groups {
        let (here, next) = (a.label(), a.label());
        a.cond(op::JEQ_K, u32::from(*p), here, next);
        a.bind(here);
        // Destination port: 14 + IHL*4 + 2.
        a.op(op::LD_H_IND, 16);
        let last = (ports.len() - 1) / PORT_CHUNK;
        for (ci, chunk) in ports.chunks(PORT_CHUNK).enumerate() {
            let hit = a.label();
            for &port in chunk {
                let n = a.label();
                a.cond(op::JEQ_K, u32::from(port), hit, n);
                a.bind(n);
            }
            let after = a.label();
            a.ja(if ci == last { fail } else { after });
            a.bind(hit);
            a.op(op::RET_K, FILTER_ACCEPT);
            a.bind(after);
        }
        a.bind(next);
    }
    a.ja(fail);
}

/// The exact filter for `keys`, or None if it would be too long.
fn exact_program(keys: &[FlowKey], own_ip: Ipv4Addr) -> Option<Vec<libc::sock_filter>> {
    if keys.len() > MAX_FILTER_KEYS {
        return None;
    }
    // Destination address (0: any) -> sorted (protocol, port).
    let mut by_addr: BTreeMap<u32, Vec<(u8, u16)>> = BTreeMap::new();
    for k in keys {
        by_addr
            .entry(u32::from_be_bytes(k.addr))
            .or_default()
            .push((k.proto, k.port()));
    }
    for flows in by_addr.values_mut() {
        flows.sort_unstable();
        flows.dedup();
    }
    let wildcard = by_addr.remove(&0).unwrap_or_default();

    let mut a = Asm::default();
    let (accept, drop) = (a.label(), a.label());
    emit_head(&mut a, own_ip, accept, drop);
    if by_addr.is_empty() && wildcard.is_empty() {
        a.ja(drop);
    } else {
        a.op(op::LDX_B_MSH, 14);
        let any = a.label();
        if !by_addr.is_empty() {
            // Destination address; each address's block follows its compare
            // and ends in a return or a jump to the wildcard keys.
            a.op(op::LD_W_ABS, 30);
            for (addr, flows) in &by_addr {
                let (here, next) = (a.label(), a.label());
                a.cond(op::JEQ_K, *addr, here, next);
                a.bind(here);
                emit_proto_ports(&mut a, flows, any);
                a.bind(next);
            }
        }
        a.bind(any);
        emit_proto_ports(&mut a, &wildcard, drop);
    }
    a.bind(accept);
    a.op(op::RET_K, FILTER_ACCEPT);
    a.bind(drop);
    a.op(op::RET_K, 0);
    let prog = a.finish();
    (prog.len() <= BPF_MAXINSNS).then_some(prog)
}

/// Accepts every IPv4 TCP/UDP non-fragment to `own_ip`, and ARP to it.
fn fallback_program(own_ip: Ipv4Addr) -> Vec<libc::sock_filter> {
    let mut a = Asm::default();
    let (accept, drop, ours, udp) = (a.label(), a.label(), a.label(), a.label());
    emit_head(&mut a, own_ip, accept, drop);
    a.op(op::LD_W_ABS, 30);
    a.cond(op::JEQ_K, u32::from(own_ip), ours, drop);
    a.bind(ours);
    a.op(op::LD_B_ABS, 23);
    a.cond(op::JEQ_K, u32::from(proto::TCP), accept, udp);
    a.bind(udp);
    a.cond(op::JEQ_K, u32::from(proto::UDP), accept, drop);
    a.bind(accept);
    a.op(op::RET_K, FILTER_ACCEPT);
    a.bind(drop);
    a.op(op::RET_K, 0);
    a.finish()
}

/// The socket filter for the stack's flows: accepts (returns
/// [`FILTER_ACCEPT`]) IPv4 non-fragments whose protocol, destination port
/// and destination address match one of `keys` (address 0.0.0.0: any), and
/// ARP whose target protocol address is `own_ip`; returns 0 for everything
/// else. Beyond [`MAX_FILTER_KEYS`] keys (or the kernel's program size) it
/// accepts every IPv4 TCP/UDP non-fragment to `own_ip` instead.
pub fn filter_program(keys: &[FlowKey], own_ip: Ipv4Addr) -> Vec<libc::sock_filter> {
    exact_program(keys, own_ip).unwrap_or_else(|| fallback_program(own_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 2);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 9);

    /// Runs a classic BPF program over `pkt` as the kernel would (loads
    /// past the end return 0). Panics on anything malformed: unknown
    /// opcodes, jumps out of the program, falling off its end.
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        assert!(!prog.is_empty() && prog.len() <= BPF_MAXINSNS);
        let load = |off: u32, size: usize| -> Option<u32> {
            let off = off as usize;
            let b = pkt.get(off..off.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x)))
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
            match i.code {
                op::LD_W_ABS | op::LD_H_ABS | op::LD_B_ABS => {
                    let size = match i.code {
                        op::LD_W_ABS => 4,
                        op::LD_H_ABS => 2,
                        _ => 1,
                    };
                    match load(i.k, size) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                op::LD_H_IND => match load(x.wrapping_add(i.k), 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                op::LDX_B_MSH => match load(i.k, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                op::JA => pc += i.k as usize,
                op::JEQ_K => pc += jump(a == i.k),
                op::JSET_K => pc += jump(a & i.k != 0),
                op::RET_K => return i.k,
                c => panic!("unknown opcode {c:#x} at {}", pc - 1),
            }
            assert!(pc < prog.len(), "jump out of the program");
        }
    }

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// An IPv4 frame: `ihl` 32-bit words of header, `frag` the flags and
    /// fragment offset field, then 8 bytes of TCP/UDP ports and payload.
    fn ipv4(proto: u8, dst: Ipv4Addr, port: u16, ihl: u8, frag: u16) -> Vec<u8> {
        let mut f = eth(0x0800);
        let hlen = usize::from(ihl) * 4;
        let mut ip = vec![0u8; hlen];
        ip[0] = 0x40 | ihl;
        ip[2..4].copy_from_slice(&((hlen + 20) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[198, 18, 60, 1]);
        ip[16..20].copy_from_slice(&dst.octets());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&port.to_be_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    fn arp(target: Ipv4Addr) -> Vec<u8> {
        let mut f = eth(0x0806);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 198, 18, 60, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    }

    fn accepts(prog: &[libc::sock_filter], pkt: &[u8]) -> bool {
        match run(prog, pkt) {
            0 => false,
            FILTER_ACCEPT => true,
            v => panic!("unexpected return {v}"),
        }
    }

    /// The kernel's checker accepts the program (SO_ATTACH_FILTER on an
    /// ordinary UDP socket needs no privilege).
    fn kernel_accepts(prog: &[libc::sock_filter]) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        attach_filter(sock.as_raw_fd(), prog).expect("the kernel refused the filter");
    }

    fn basic_keys() -> Vec<FlowKey> {
        vec![
            FlowKey::new(proto::UDP, Ipv4Addr::UNSPECIFIED, 7300),
            FlowKey::new(proto::TCP, OWN, 8080),
            FlowKey::new(proto::TCP, OWN, 443),
            FlowKey::new(proto::UDP, OTHER, 53),
        ]
    }

    #[test]
    fn packet_filter_matches_exactly_the_flows() {
        let p = filter_program(&basic_keys(), OWN);
        kernel_accepts(&p);
        // Matching ports, either protocol.
        assert!(accepts(&p, &ipv4(proto::UDP, OWN, 7300, 5, 0)));
        assert!(
            accepts(&p, &ipv4(proto::UDP, OTHER, 7300, 5, 0)),
            "wildcard address"
        );
        assert!(accepts(&p, &ipv4(proto::TCP, OWN, 8080, 5, 0)));
        assert!(
            accepts(&p, &ipv4(proto::TCP, OWN, 443, 5, 0x4000)),
            "DF is fine"
        );
        assert!(accepts(&p, &ipv4(proto::UDP, OTHER, 53, 5, 0)));
        // Wrong port, protocol or address.
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 7301, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OWN, 7300, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 8080, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OTHER, 8080, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 53, 5, 0)));
        assert!(
            !accepts(&p, &ipv4(1, OWN, 7300, 5, 0)),
            "ICMP stays with the kernel"
        );
        // Fragments: first (MF), middle and last (offset).
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 7300, 5, 0x2000)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 7300, 5, 0x2010)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 7300, 5, 0x0010)));
        // IP options move the ports.
        assert!(accepts(&p, &ipv4(proto::TCP, OWN, 8080, 6, 0)));
        assert!(accepts(&p, &ipv4(proto::UDP, OWN, 7300, 15, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OWN, 8081, 6, 0)));
        // ARP.
        assert!(accepts(&p, &arp(OWN)));
        assert!(!accepts(&p, &arp(OTHER)));
        // Others: IPv6, truncated frames.
        assert!(!accepts(&p, &eth(0x86dd)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 7300, 5, 0)[..35]));
        assert!(!accepts(&p, &[]));
    }

    #[test]
    fn packet_filter_without_flows_passes_only_arp() {
        let p = filter_program(&[], OWN);
        kernel_accepts(&p);
        assert!(accepts(&p, &arp(OWN)));
        assert!(!accepts(&p, &arp(OTHER)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 7300, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OWN, 80, 5, 0)));
    }

    #[test]
    fn packet_filter_with_300_keys_has_long_jumps() {
        // 240 TCP ports on our address, 40 UDP on any, 20 on another address.
        let mut keys = Vec::new();
        for i in 0..240u16 {
            keys.push(FlowKey::new(proto::TCP, OWN, 10_000 + 3 * i));
        }
        for i in 0..40u16 {
            keys.push(FlowKey::new(
                proto::UDP,
                Ipv4Addr::UNSPECIFIED,
                20_000 + 7 * i,
            ));
        }
        for i in 0..20u16 {
            keys.push(FlowKey::new(proto::UDP, OTHER, 30_000 + i));
        }
        keys.sort();
        let p = filter_program(&keys, OWN);
        kernel_accepts(&p);
        assert!(p.len() < 600, "{} instructions", p.len());
        assert!(
            p.iter().any(|i| i.code == op::JA && i.k > 255),
            "expected a long jump"
        );
        for k in &keys {
            let dst = if k.ip().is_unspecified() { OWN } else { k.ip() };
            assert!(accepts(&p, &ipv4(k.proto, dst, k.port(), 5, 0)), "{k:?}");
            assert!(
                accepts(&p, &ipv4(k.proto, dst, k.port(), 6, 0)),
                "{k:?} IHL 6"
            );
            assert!(
                !accepts(&p, &ipv4(k.proto, dst, k.port(), 5, 0x2000)),
                "{k:?} frag"
            );
            let miss = k.port() + 1;
            let listed = keys.iter().any(|o| o.matches(k.proto, dst, miss));
            assert_eq!(
                accepts(&p, &ipv4(k.proto, dst, miss, 5, 0)),
                listed,
                "{k:?}+1"
            );
        }
        assert!(!accepts(&p, &ipv4(proto::TCP, OTHER, 10_000, 5, 0)));
        assert!(accepts(&p, &ipv4(proto::UDP, OTHER, 20_000, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 30_000, 5, 0)));
        assert!(accepts(&p, &arp(OWN)));
        assert!(!accepts(&p, &arp(OTHER)));
    }

    #[test]
    fn packet_filter_many_keys_exact_or_fallback() {
        // 1000 connections on our address: still exact.
        let keys: Vec<FlowKey> = (0..1000u16)
            .map(|i| FlowKey::new(proto::TCP, OWN, 40_000 + i))
            .collect();
        let p = filter_program(&keys, OWN);
        kernel_accepts(&p);
        assert!(exact_program(&keys, OWN).is_some());
        assert!(accepts(&p, &ipv4(proto::TCP, OWN, 40_999, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OWN, 41_000, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 40_000, 5, 0)));

        // Beyond the limit: everything TCP/UDP to our address.
        let keys: Vec<FlowKey> = (0..1001u16)
            .map(|i| FlowKey::new(proto::TCP, OWN, 40_000 + i))
            .collect();
        assert!(exact_program(&keys, OWN).is_none());
        let p = filter_program(&keys, OWN);
        kernel_accepts(&p);
        assert!(accepts(&p, &ipv4(proto::TCP, OWN, 1, 5, 0)));
        assert!(accepts(&p, &ipv4(proto::UDP, OWN, 2, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OTHER, 40_000, 5, 0)));
        assert!(!accepts(&p, &ipv4(1, OWN, 0, 5, 0)));
        assert!(!accepts(&p, &ipv4(proto::TCP, OWN, 40_000, 5, 0x2000)));
        assert!(accepts(&p, &arp(OWN)));
        assert!(!accepts(&p, &arp(OTHER)));

        // Many distinct addresses: exact while it fits, else the fallback.
        let keys: Vec<FlowKey> = (0..300u32)
            .map(|i| FlowKey::new(proto::UDP, Ipv4Addr::from(0x0a00_0000 + i), 9))
            .collect();
        let p = exact_program(&keys, OWN).expect("300 addresses fit");
        kernel_accepts(&p);
        assert!(accepts(
            &p,
            &ipv4(proto::UDP, Ipv4Addr::new(10, 0, 1, 0x2b), 9, 5, 0)
        ));
        assert!(!accepts(
            &p,
            &ipv4(proto::UDP, Ipv4Addr::new(10, 0, 1, 0x2c), 9, 5, 0)
        ));
        assert!(!accepts(&p, &ipv4(proto::UDP, OWN, 9, 5, 0)));
        let keys: Vec<FlowKey> = (0..900u32)
            .map(|i| FlowKey::new(proto::UDP, Ipv4Addr::from(0x0a00_0000 + i), 9))
            .collect();
        assert!(
            exact_program(&keys, OWN).is_none(),
            "too long for the kernel"
        );
        let p = filter_program(&keys, OWN);
        kernel_accepts(&p);
        assert!(accepts(&p, &ipv4(proto::UDP, OWN, 9, 5, 0)));
    }

    #[test]
    fn packet_ring_geometry() {
        assert_eq!(HDR_SIZE, 32);
        assert_eq!(
            TX_DATA_OFF,
            libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>()
        );
    }

    #[test]
    fn packet_open_errors_are_clear() {
        match PacketNic::open("rbpk-missing") {
            Err(PacketError::NoInterface(n)) => assert_eq!(n, "rbpk-missing"),
            r => panic!("expected NoInterface, got {r:?}"),
        }
        let msg = PacketError::NoInterface("x".into()).to_string();
        assert!(msg.contains("ip link"), "{msg}");
        let msg = PacketError::Privilege("x".into(), "open an AF_PACKET socket").to_string();
        assert!(msg.contains("CAP_NET_RAW"), "{msg}");
        assert!(matches!(
            PacketNic::open("a-name-much-too-long-for-linux"),
            Err(PacketError::NoInterface(_))
        ));
        assert!(matches!(
            PacketNic::open(""),
            Err(PacketError::NoInterface(_))
        ));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            match PacketNic::open("lo") {
                Err(PacketError::Privilege(..)) => {}
                Err(e) => panic!("expected Privilege, got {e}"),
                Ok(_) => {} // has CAP_NET_RAW after all
            }
        }
    }
}
