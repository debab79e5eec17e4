//! UDP socket options of multicast and port sharing (IP_ADD_MEMBERSHIP and
//! friends, IP_MULTICAST_*, SO_REUSEADDR/SO_REUSEPORT), read from the app's
//! C structures and applied to the stack's socket.
//!
//! The kernel socket behind the fd gets the option too (so getsockopt reads
//! it back), except a membership on the loopback stack: there the kernel
//! would join the group on the host's real interface and speak IGMP on it,
//! for traffic that never leaves the stack. On a device (AF_XDP, AF_PACKET)
//! the kernel's join is what a host does: it answers the routers' IGMP
//! queries and opens the NIC's multicast filter, while the frames themselves
//! are steered to the stack.

use std::net::Ipv4Addr;

use libc::{c_int, c_void, socklen_t};
use rbypass_stack::{Core, SockError, SocketId};

/// What to do with an option after the stack has seen it.
pub enum Outcome {
    /// Not a multicast or port-sharing option: the caller handles it.
    NotMine,
    /// Applied to the stack; also set it on the kernel socket.
    AlsoKernel(Result<(), SockError>),
    /// Applied to the stack only (the kernel must not join).
    StackOnly(Result<(), SockError>),
}

/// Reads a `T` the app passed, if `len` covers it.
fn read<T: Copy>(val: *const c_void, len: socklen_t) -> Option<T> {
    if val.is_null() || (len as usize) < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the app's buffer, at least size_of::<T>() bytes (checked);
    // T is a plain C structure.
    Some(unsafe { std::ptr::read_unaligned(val.cast::<T>()) })
}

fn addr(a: libc::in_addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(a.s_addr))
}

/// An int option that Linux also takes as one byte (IP_MULTICAST_TTL, _LOOP).
fn int_or_byte(val: *const c_void, len: socklen_t) -> Option<c_int> {
    if len as usize >= 4 {
        read::<c_int>(val, len)
    } else {
        read::<u8>(val, len).map(c_int::from)
    }
}

/// IP_MULTICAST_IF and the memberships take an `ip_mreqn` (with an ifindex)
/// or an `ip_mreq`/`in_addr`; the stack has one interface, so only the
/// address matters.
fn interface_of_mreq(val: *const c_void, len: socklen_t) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let m: libc::ip_mreq = read(val, len)?;
    Some((addr(m.imr_multiaddr), addr(m.imr_interface)))
}

/// Applies option (`level`, `name`) of UDP socket `id` to the stack.
/// `on_device`: the stack runs on a device the kernel also sees.
pub fn set_udp_option(
    c: &mut Core<'_>,
    id: SocketId,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
    on_device: bool,
) -> Outcome {
    let bad = Err(SockError::Invalid);
    let membership = |r: Result<(), SockError>| {
        if on_device {
            Outcome::AlsoKernel(r)
        } else {
            Outcome::StackOnly(r)
        }
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => Outcome::AlsoKernel(
            read::<c_int>(val, len).map_or(bad, |v| c.udp_set_reuseaddr(id, v != 0)),
        ),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => Outcome::AlsoKernel(
            read::<c_int>(val, len).map_or(bad, |v| c.udp_set_reuseport(id, v != 0)),
        ),
        (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP | libc::IP_DROP_MEMBERSHIP) => {
            let r = interface_of_mreq(val, len).map_or(bad, |(group, ifaddr)| {
                if name == libc::IP_ADD_MEMBERSHIP {
                    c.udp_join_group(id, group, ifaddr)
                } else {
                    c.udp_leave_group(id, group, ifaddr)
                }
            });
            membership(r)
        }
        (
            libc::IPPROTO_IP,
            libc::IP_ADD_SOURCE_MEMBERSHIP
            | libc::IP_DROP_SOURCE_MEMBERSHIP
            | libc::IP_BLOCK_SOURCE
            | libc::IP_UNBLOCK_SOURCE,
        ) => {
            // Linux's ip_mreq_source: group, interface, source.
            let r = read::<libc::ip_mreq_source>(val, len).map_or(bad, |m| {
                let (g, i, s) = (
                    addr(m.imr_multiaddr),
                    addr(m.imr_interface),
                    addr(m.imr_sourceaddr),
                );
                match name {
                    libc::IP_ADD_SOURCE_MEMBERSHIP => c.udp_join_source(id, g, s, i),
                    libc::IP_DROP_SOURCE_MEMBERSHIP => c.udp_leave_source(id, g, s, i),
                    libc::IP_BLOCK_SOURCE => c.udp_block_source(id, g, s, i),
                    _ => c.udp_unblock_source(id, g, s, i),
                }
            });
            membership(r)
        }
        (libc::IPPROTO_IP, libc::IP_MULTICAST_IF) => {
            let a = if (len as usize) >= std::mem::size_of::<libc::ip_mreq>() {
                // ip_mreqn or ip_mreq: the address is the second field of
                // ip_mreqn and the (ignored) interface of ip_mreq alike.
                interface_of_mreq(val, len).map(|(_, a)| a)
            } else {
                read::<libc::in_addr>(val, len).map(addr)
            };
            Outcome::AlsoKernel(a.map_or(bad, |a| c.udp_set_multicast_if(id, a)))
        }
        (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL) => {
            Outcome::AlsoKernel(
                int_or_byte(val, len).map_or(bad, |v| match u8::try_from(v) {
                    Ok(t) => c.udp_set_multicast_ttl(id, t),
                    // -1 means the default, 1.
                    Err(_) if v == -1 => c.udp_set_multicast_ttl(id, 1),
                    Err(_) => Err(SockError::Invalid),
                }),
            )
        }
        (libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP) => Outcome::AlsoKernel(
            int_or_byte(val, len).map_or(bad, |v| c.udp_set_multicast_loop(id, v != 0)),
        ),
        (libc::IPPROTO_IP, libc::IP_MULTICAST_ALL) => Outcome::AlsoKernel(
            read::<c_int>(val, len).map_or(bad, |v| c.udp_set_multicast_all(id, v != 0)),
        ),
        _ => Outcome::NotMine,
    }
}
