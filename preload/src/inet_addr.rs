//! The app's socket addresses and the stack's.
//!
//! The stack speaks IPv4. An AF_INET6 socket is accelerated for its IPv4
//! traffic (a dual-stack listener on `::`, IPv4-mapped peers `::ffff:a.b.c.d`),
//! so addresses cross this boundary in both families: the app's
//! `sockaddr_in`/`sockaddr_in6` become a `SocketAddrV4`, and what the stack
//! reports goes back in the family of the app's socket.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use libc::{sockaddr, socklen_t};

/// The IPv4 address an app's socket address names, or None if it names none
/// (another family, a native IPv6 address, or too short). `::` is 0.0.0.0.
pub fn parse(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddrV4> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return None;
    }
    // SAFETY: non-null and long enough for the family field.
    let family = libc::c_int::from(unsafe { std::ptr::read_unaligned(addr).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: long enough for a sockaddr_in; read unaligned to be safe.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            Some(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 if (len as usize) >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: long enough for a sockaddr_in6.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let v4 = if ip.is_unspecified() {
                Ipv4Addr::UNSPECIFIED
            } else {
                ip.to_ipv4_mapped()?
            };
            Some(SocketAddrV4::new(v4, u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// A socket address in the family the kernel socket has, ready for a syscall.
pub struct KernelAddr {
    storage: libc::sockaddr_in6,
    len: socklen_t,
}

impl KernelAddr {
    /// `sa` as a `sockaddr_in`, or for an AF_INET6 socket as `::` or `::ffff:a.b.c.d`.
    pub fn new(sa: SocketAddrV4, v6: bool) -> KernelAddr {
        // SAFETY: all-zero is a valid sockaddr_in6 (and sockaddr_in prefix).
        let mut storage: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        if v6 {
            storage.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            storage.sin6_port = sa.port().to_be();
            storage.sin6_addr.s6_addr = if sa.ip().is_unspecified() {
                Ipv6Addr::UNSPECIFIED.octets()
            } else {
                sa.ip().to_ipv6_mapped().octets()
            };
            let len = std::mem::size_of::<libc::sockaddr_in6>() as socklen_t;
            return KernelAddr { storage, len };
        }
        let v4 = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: sa.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*sa.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a sockaddr_in fits in the (larger) sockaddr_in6 storage.
        unsafe {
            std::ptr::write_unaligned((&mut storage as *mut libc::sockaddr_in6).cast(), v4);
        }
        let len = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
        KernelAddr { storage, len }
    }

    /// The address, for a syscall.
    pub fn as_ptr(&self) -> *const sockaddr {
        (&self.storage as *const libc::sockaddr_in6).cast()
    }

    /// Its length.
    pub fn len(&self) -> socklen_t {
        self.len
    }
}

/// Writes `sa` into the app's buffer in its socket's family, truncating to
/// `*len` and setting `*len` to the full size, as the kernel does.
pub fn write(sa: SocketAddrV4, v6: bool, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let k = KernelAddr::new(sa, v6);
    // SAFETY: the caller gave a buffer of *len bytes; we copy at most that.
    unsafe {
        let n = (*len as usize).min(k.len as usize);
        std::ptr::copy_nonoverlapping(k.as_ptr().cast::<u8>(), addr.cast::<u8>(), n);
        *len = k.len;
    }
}

/// The port a kernel socket of either family is bound to.
pub fn kernel_port(fd: libc::c_int) -> Option<u16> {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in6>() as socklen_t;
    // SAFETY: a valid buffer and length. sin_port and sin6_port share an offset.
    let r = unsafe {
        crate::real::getsockname(fd, (&mut a as *mut libc::sockaddr_in6).cast(), &mut len)
    };
    (r == 0).then(|| u16::from_be(a.sin6_port))
}

/// Whether an AF_INET6 kernel socket is IPv6-only (then the stack has nothing to carry).
pub fn v6_only(fd: libc::c_int) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as socklen_t;
    // SAFETY: a valid int buffer and length.
    let r = unsafe {
        crate::real::getsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(sa: SocketAddrV4, v6: bool) -> SocketAddrV4 {
        let k = KernelAddr::new(sa, v6);
        parse(k.as_ptr(), k.len()).unwrap()
    }

    #[test]
    fn both_families_round_trip() {
        for v6 in [false, true] {
            for sa in [
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80),
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 65535),
            ] {
                assert_eq!(round_trip(sa, v6), sa);
            }
        }
    }

    #[test]
    fn native_v6_and_short_addresses_are_not_ipv4() {
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut a: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        a.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        let p = (&a as *const libc::sockaddr_in6).cast();
        assert_eq!(parse(p, std::mem::size_of_val(&a) as socklen_t), None);
        let mut m = a;
        m.sin6_addr.s6_addr = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        let p = (&m as *const libc::sockaddr_in6).cast();
        assert_eq!(parse(p, 16), None, "a sockaddr_in6 needs 28 bytes");
        assert_eq!(parse(std::ptr::null(), 28), None);
    }

    #[test]
    fn write_truncates_and_reports_the_full_length() {
        let sa = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7);
        let mut buf = [0u8; 8];
        let mut len: socklen_t = 8;
        write(sa, true, buf.as_mut_ptr().cast(), &mut len);
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in6>());
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), libc::AF_INET6 as u16);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 7);
    }
}
