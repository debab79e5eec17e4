//! Raw Linux TAP device backend.
//!
//! A TAP device is the cheapest way to give a userspace stack a real Ethernet
//! link that the kernel (or another network namespace) can talk to without any
//! special hardware: every frame the kernel transmits on the interface becomes
//! readable on our file descriptor, and every frame we write is injected as if
//! it had been received from the wire. rbypass uses it for the demo and for
//! integration tests against the real Linux stack.
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI`, so reads and writes carry
//! bare Ethernet frames (no 4-byte packet-info header), and the descriptor is
//! non-blocking and close-on-exec. The device is not persistent: it disappears
//! when the [`TapDevice`] is dropped.
//!
//! The interface may be moved to another network namespace (for example with
//! `ip link set NAME netns NS`) after it is opened; the descriptor keeps
//! working. Note however that [`TapDevice::mtu`] and [`TapDevice::set_up`]
//! address the interface *by name in the caller's namespace*, so call them
//! before moving the device (afterwards they fail with `ENODEV`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{BufId, Core};
use thiserror::Error;

use crate::{Nic, NicCaps};

/// Path of the TUN/TAP clone device.
const TUN_PATH: &CStr = c"/dev/net/tun";

/// Maximum interface name length in bytes, excluding the terminating NUL
/// (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Errors that can occur while creating a [`TapDevice`].
///
/// This exists so callers (the CLI in particular) can tell the user exactly
/// what went wrong and how to fix it, instead of printing a bare errno.
#[derive(Debug, Error)]
pub enum TapError {
    /// The requested interface name does not fit in `IFNAMSIZ`.
    #[error(
        "TAP interface name {name:?} is {len} bytes long; Linux allows at most {max} bytes: \
         choose a shorter name",
        max = MAX_IFNAME_LEN
    )]
    NameTooLong {
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The requested interface name contains a byte Linux does not accept.
    #[error(
        "TAP interface name {name:?} is invalid: it must not contain NUL, '/', ':' or \
         whitespace and must not be \".\" or \"..\""
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// `/dev/net/tun` does not exist.
    #[error(
        "/dev/net/tun: not found: the kernel TUN/TAP driver is unavailable; load it with \
         `modprobe tun`, or create the node with `mknod /dev/net/tun c 10 200` (in a container, \
         pass the device through, e.g. `--device /dev/net/tun`)"
    )]
    TunMissing(#[source] io::Error),
    /// Opening `/dev/net/tun` or creating the interface was not permitted.
    #[error(
        "/dev/net/tun: permission denied: rbypass needs CAP_NET_ADMIN to create a TAP device \
         (run as root)"
    )]
    PermissionDenied(#[source] io::Error),
    /// The interface exists already and is owned by someone else.
    #[error(
        "TAP interface {name:?} is busy: another process (or a non-TAP interface) already uses \
         that name; pick another name, or if it is a stale TAP device remove it with \
         `ip link del {name}`"
    )]
    Busy {
        /// The interface name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Any other failure while opening `/dev/net/tun`.
    #[error("/dev/net/tun: could not open: {0}")]
    Open(#[source] io::Error),
    /// Any other failure of the `TUNSETIFF` ioctl.
    #[error("TUNSETIFF for TAP interface {name:?} failed: {source}")]
    SetIff {
        /// The interface name.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A raw, non-blocking Linux TAP device carrying bare Ethernet frames.
///
/// This is the NIC backend rbypass uses to exchange real Ethernet frames with
/// the Linux kernel (typically a peer in another network namespace).
#[derive(Debug)]
pub struct TapDevice {
    fd: OwnedFd,
    name: String,
}

impl TapDevice {
    /// Creates (or attaches to) the TAP interface `name` and returns a
    /// non-blocking, close-on-exec handle to it.
    ///
    /// An empty `name` lets the kernel choose one (`tap0`, `tap1`, ...); the
    /// chosen name is returned by [`TapDevice::name`]. The interface starts
    /// administratively down; see [`TapDevice::set_up`].
    pub fn open(name: &str) -> Result<TapDevice, TapError> {
        validate_name(name)?;

        // SAFETY: `TUN_PATH` is a valid NUL-terminated string; `open` has no
        // other memory-safety preconditions.
        let raw = unsafe {
            libc::open(
                TUN_PATH.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    TapError::TunMissing(err)
                }
                Some(libc::EACCES) | Some(libc::EPERM) => TapError::PermissionDenied(err),
                _ => TapError::Open(err),
            });
        }
        // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut req = ifreq_for(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `fd` is a valid open descriptor and `req` is a properly
        // initialised `ifreq` that outlives the call; TUNSETIFF reads and
        // writes only within that struct.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            let name = name.to_owned();
            return Err(match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::PermissionDenied(err),
                Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EINVAL) => {
                    TapError::Busy { name, source: err }
                }
                _ => TapError::SetIff { name, source: err },
            });
        }

        let name = ifname_from(&req);
        tracing::debug!(ifname = %name, fd = fd.as_raw_fd(), "opened TAP device");
        Ok(TapDevice { fd, name })
    }

    /// The kernel interface name, e.g. for `ip link set NAME ...`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one Ethernet frame into `buf`.
    ///
    /// Returns `Ok(Some(len))` for a frame, `Ok(None)` when no frame is
    /// pending (`EAGAIN`). `buf` should be at least MTU + 14 bytes long or the
    /// frame is truncated by the kernel.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes and the
            // descriptor is owned by `self`.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
    }

    /// Writes one complete Ethernet frame (destination MAC first, no FCS).
    ///
    /// Returns `Ok(true)` when the frame was handed to the kernel and
    /// `Ok(false)` when the device queue is full (`EAGAIN`) and the caller
    /// should retry later. Writing while the interface is down fails with
    /// `EIO`.
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        loop {
            // SAFETY: `frame` is valid for reads of `frame.len()` bytes and the
            // descriptor is owned by `self`.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast::<libc::c_void>(),
                    frame.len(),
                )
            };
            if n >= 0 {
                if n as usize != frame.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "TAP {}: short write ({n} of {} bytes)",
                            self.name,
                            frame.len()
                        ),
                    ));
                }
                return Ok(true);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(false),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
    }

    /// Returns the interface MTU (`SIOCGIFMTU`), so the stack can size its
    /// buffers and MSS.
    ///
    /// The interface is looked up by name in the caller's network namespace.
    pub fn mtu(&self) -> io::Result<u32> {
        let sock = control_socket()?;
        let mut req = ifreq_for(&self.name);
        // SAFETY: `sock` is a valid socket and `req` a properly initialised
        // `ifreq` that outlives the call; SIOCGIFMTU only writes `ifru_mtu`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
        if rc < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                &format!("SIOCGIFMTU on {}", self.name),
            ));
        }
        // SAFETY: the kernel filled the `ifru_mtu` member on success; every
        // bit pattern is a valid `c_int`.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        u32::try_from(mtu).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("kernel reported a negative MTU ({mtu}) for {}", self.name),
            )
        })
    }

    /// Brings the interface administratively up (`IFF_UP`), which the kernel
    /// requires before it accepts frames written to the device.
    ///
    /// The interface is looked up by name in the caller's network namespace.
    pub fn set_up(&self) -> io::Result<()> {
        let sock = control_socket()?;
        let mut req = ifreq_for(&self.name);
        // SAFETY: `sock` is a valid socket and `req` a properly initialised
        // `ifreq` that outlives the call; SIOCGIFFLAGS only writes `ifru_flags`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
        if rc < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                &format!("SIOCGIFFLAGS on {}", self.name),
            ));
        }
        // SAFETY: the kernel filled `ifru_flags` on success; every bit pattern
        // is a valid `c_short`.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: as above; SIOCSIFFLAGS only reads the struct.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) };
        if rc < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                &format!("SIOCSIFFLAGS (IFF_UP) on {}", self.name),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` for a frame to become readable, so a polling
    /// loop can sleep instead of spinning.
    ///
    /// Returns `Ok(true)` if [`TapDevice::recv`] will not return `Ok(None)`
    /// (barring a concurrent reader), `Ok(false)` on timeout.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now().checked_add(timeout);
        let mut remaining = timeout;
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid `pollfd` array of length 1 that
            // outlives the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, poll_timeout_ms(remaining)) };
            if rc > 0 {
                if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    return Err(io::Error::other(format!(
                        "poll on TAP {} reported an error (revents {:#x})",
                        self.name, pfd.revents
                    )));
                }
                return Ok(pfd.revents & libc::POLLIN != 0);
            }
            if rc == 0 {
                return Ok(false);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            if let Some(deadline) = deadline {
                remaining = deadline.saturating_duration_since(Instant::now());
            }
        }
    }
}

impl AsRawFd for TapDevice {
    /// Exposes the descriptor so event loops (epoll, poll) can watch it.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TapDevice {
    /// Exposes the descriptor so event loops (epoll, poll) can watch it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Checks `name` against the kernel's rules (`dev_valid_name`) so the user
/// gets a clear error instead of `EINVAL`.
fn validate_name(name: &str) -> Result<(), TapError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(TapError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    let bad_char = name
        .bytes()
        .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace());
    if bad_char || name == "." || name == ".." {
        return Err(TapError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Builds a zeroed `ifreq` whose name field holds `name` (already validated
/// to fit).
fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct/union for which all-zeroes is a
    // valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// Extracts the NUL-terminated interface name the kernel wrote into `req`.
fn ifname_from(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Opens the throw-away AF_INET datagram socket that interface ioctls need.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            "socket(AF_INET, SOCK_DGRAM) for interface ioctls",
        ));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Converts a `Duration` to a `poll(2)` timeout, rounding sub-millisecond
/// remainders up so a short timeout never degenerates into a busy loop.
fn poll_timeout_ms(timeout: Duration) -> libc::c_int {
    let mut ms = timeout.as_millis();
    if Duration::from_millis(ms as u64) < timeout {
        ms += 1;
    }
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// Prefixes an OS error with what we were doing, keeping its kind.
fn with_context(err: io::Error, what: &str) -> io::Error {
    let hint = match err.raw_os_error() {
        Some(libc::ENODEV) => {
            " (no such interface in this network namespace; was it moved to another one?)"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN: run as root)",
        _ => "",
    };
    io::Error::new(err.kind(), format!("{what}: {err}{hint}"))
}

/// A TAP device as a [`Nic`]: one `read`/`write` per frame, straight into
/// and out of the arena's packet buffers. The stack gets its own locally
/// administered MAC (the kernel side of the TAP has another).
#[derive(Debug)]
pub struct TapNic {
    dev: TapDevice,
    mac: EthernetAddress,
    mtu: u16,
}

impl TapNic {
    /// Opens (creating if needed) the TAP device `name` and brings it up.
    pub fn open(name: &str) -> Result<TapNic, TapError> {
        let dev = TapDevice::open(name)?;
        if let Err(e) = dev.set_up() {
            tracing::debug!(tap = name, "cannot bring TAP up here ({e}); its owner must");
        }
        let mtu = dev
            .mtu()
            .ok()
            .and_then(|m| u16::try_from(m).ok())
            .unwrap_or(1500);
        let mtu = mtu.min((rbypass_stack::pool::MAX_FRAME - 14) as u16);
        // 02:xx: locally administered unicast, derived from pid and name.
        let mut h: u32 = std::process::id().wrapping_mul(0x9e37_79b1);
        for b in name.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let hb = h.to_be_bytes();
        let mac = EthernetAddress([0x02, 0x72, hb[0], hb[1], hb[2], hb[3]]);
        Ok(TapNic { dev, mac, mtu })
    }

    /// The underlying device.
    pub fn device(&self) -> &TapDevice {
        &self.dev
    }
}

impl Nic for TapNic {
    fn name(&self) -> String {
        format!("tap:{}", self.dev.name())
    }

    fn caps(&self) -> NicCaps {
        NicCaps {
            mac: self.mac,
            mtu: self.mtu,
            rx_checksum_verified: false,
            tx_checksum_offload: false,
        }
    }

    fn receive(&mut self, core: &mut Core<'_>, out: &mut [BufId], _now: u64) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            let Ok(b) = core.pool.alloc() else {
                core.header().counters.drop_no_buffers.inc();
                break;
            };
            let off = usize::from(core.pool.meta(b).off);
            let got = self.dev.recv(&mut core.pool.chunk_mut(b)[off..]);
            match got {
                Ok(Some(len)) => {
                    core.pool.meta_mut(b).len = len as u16;
                    out[n] = b;
                    n += 1;
                }
                Ok(None) => {
                    core.pool.put(b);
                    break;
                }
                Err(e) => {
                    core.pool.put(b);
                    if n > 0 {
                        break;
                    }
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    fn transmit(&mut self, core: &mut Core<'_>, frames: &[BufId], _now: u64) -> io::Result<usize> {
        for (i, &b) in frames.iter().enumerate() {
            match self.dev.send(core.pool.frame(b)) {
                Ok(true) => core.pool.put(b),
                Ok(false) => return Ok(i),
                Err(e) => {
                    // The far end is down or gone: the frame is lost, as on a wire.
                    tracing::debug!(
                        tap = self.dev.name(),
                        "TAP write failed: {e}; frame dropped"
                    );
                    core.pool.put(b);
                }
            }
        }
        Ok(frames.len())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.dev.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_name_is_refused() {
        let name = "rbt-way-too-long-name";
        assert!(name.len() > MAX_IFNAME_LEN);
        let err = TapDevice::open(name).unwrap_err();
        assert!(
            matches!(err, TapError::NameTooLong { len, .. } if len == name.len()),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("at most 15 bytes"), "{msg}");
    }

    #[test]
    fn invalid_names_are_refused() {
        for name in ["a/b", "a b", "a:b", ".", "..", "a\0b"] {
            let err = TapDevice::open(name).unwrap_err();
            assert!(
                matches!(err, TapError::InvalidName { .. }),
                "{name:?}: {err:?}"
            );
        }
    }

    #[test]
    fn fifteen_byte_name_passes_validation() {
        assert!(validate_name("rbt012345678901").is_ok());
        assert!(validate_name("").is_ok());
    }

    #[test]
    fn ifreq_name_round_trips() {
        let req = ifreq_for("rbtt42");
        assert_eq!(ifname_from(&req), "rbtt42");
    }

    #[test]
    fn poll_timeout_rounds_up() {
        assert_eq!(poll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(poll_timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_timeout_ms(Duration::from_millis(250)), 250);
        assert_eq!(poll_timeout_ms(Duration::MAX), libc::c_int::MAX);
    }
}
