//! Vectored and message I/O (readv, writev, sendmsg, recvmsg, sendmmsg,
//! recvmmsg), the fortified `__*_chk` forms, sendfile and splice, for stack
//! sockets. Everything else passes through to libc.

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::state::{self, Entry, State};
use crate::{fail, real};

fn stack_entry(fd: c_int) -> Option<(&'static State, Entry)> {
    state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)))
}

fn iovs<'a>(iov: *const iovec, n: c_int) -> Option<&'a [iovec]> {
    if !(0..=libc::UIO_MAXIOV).contains(&n) {
        return None;
    }
    if n == 0 {
        return Some(&[]);
    }
    if iov.is_null() {
        return None;
    }
    // SAFETY: the caller's array of n iovecs.
    Some(unsafe { std::slice::from_raw_parts(iov, n as usize) })
}

fn iov_bytes<'a>(v: &iovec) -> &'a [u8] {
    if v.iov_len == 0 || v.iov_base.is_null() {
        return &[];
    }
    // SAFETY: the caller's buffer of iov_len bytes.
    unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) }
}

fn iov_bytes_mut<'a>(v: &iovec) -> &'a mut [u8] {
    if v.iov_len == 0 || v.iov_base.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's buffer of iov_len bytes.
    unsafe { std::slice::from_raw_parts_mut(v.iov_base.cast::<u8>(), v.iov_len) }
}

/// Sends a gather list: TCP buffer by buffer (stopping at a short send),
/// UDP as one datagram.
fn send_iov(
    st: &State,
    fd: c_int,
    e: Entry,
    v: &[iovec],
    flags: c_int,
    to: Option<std::net::SocketAddrV4>,
) -> ssize_t {
    if e.tcp {
        let mut total: ssize_t = 0;
        for b in v {
            let data = iov_bytes(b);
            if data.is_empty() {
                continue;
            }
            let r = crate::tcp_send(
                st,
                fd,
                e,
                data,
                if total > 0 {
                    flags | libc::MSG_DONTWAIT
                } else {
                    flags
                },
            );
            if r < 0 {
                return if total > 0 { total } else { r };
            }
            total += r;
            if (r as usize) < data.len() {
                break;
            }
        }
        return total;
    }
    if v.len() == 1 {
        return crate::udp_send(st, fd, e, iov_bytes(&v[0]), flags, to);
    }
    let total: usize = v.iter().map(|b| b.iov_len).sum();
    if total <= 2048 {
        // Every datagram the stack can carry fits: gather on the stack,
        // without allocating (sendmsg is async-signal-safe).
        let mut bounce = [0u8; 2048];
        let mut off = 0;
        for b in v {
            let d = iov_bytes(b);
            bounce[off..off + d.len()].copy_from_slice(d);
            off += d.len();
        }
        return crate::udp_send(st, fd, e, &bounce[..off], flags, to);
    }
    // Larger: only the kernel socket can send it (or the stack says EMSGSIZE).
    let mut dgram = Vec::with_capacity(total);
    for b in v {
        dgram.extend_from_slice(iov_bytes(b));
    }
    crate::udp_send(st, fd, e, &dgram, flags, to)
}

/// Receives into a scatter list; for UDP also the source and truncation.
fn recv_iov(
    st: &State,
    fd: c_int,
    e: Entry,
    v: &[iovec],
    flags: c_int,
    (name, namelen): (*mut sockaddr, *mut socklen_t),
    msg_flags: Option<&mut c_int>,
) -> ssize_t {
    if e.tcp {
        if !namelen.is_null() {
            // SAFETY: the caller's length word.
            unsafe { *namelen = 0 };
        }
        if flags & libc::MSG_PEEK != 0 && v.iter().filter(|b| b.iov_len > 0).count() > 1 {
            // A peek always starts at the head of the stream: peek once into
            // a bounce buffer (on the stack: no allocation here) and scatter.
            let mut tmp = [0u8; 16384];
            let cap = v.iter().map(|b| b.iov_len).sum::<usize>().min(tmp.len());
            let r = crate::tcp_recv(st, fd, e, &mut tmp[..cap], flags);
            if r > 0 {
                let mut off = 0;
                for b in v {
                    let out = iov_bytes_mut(b);
                    let n = out.len().min(r as usize - off);
                    out[..n].copy_from_slice(&tmp[off..off + n]);
                    off += n;
                }
            }
            if let Some(f) = msg_flags {
                *f = 0;
            }
            return r;
        }
        let mut total: ssize_t = 0;
        for b in v {
            let out = iov_bytes_mut(b);
            if out.is_empty() {
                continue;
            }
            let f = if total > 0 {
                flags | libc::MSG_DONTWAIT
            } else {
                flags
            };
            let r = crate::tcp_recv(st, fd, e, out, f);
            if r < 0 {
                return if total > 0 { total } else { r };
            }
            total += r;
            if (r as usize) < out.len() || flags & libc::MSG_PEEK != 0 {
                break;
            }
        }
        if let Some(f) = msg_flags {
            *f = 0;
        }
        return total;
    }
    // A datagram through the stack fits one frame (no IP fragmentation), so
    // a bounce buffer on the stack holds any: no allocation on this path.
    let cap: usize = v.iter().map(|b| b.iov_len).sum();
    let mut bounce = [0u8; 2048];
    let buf = &mut bounce[..cap.min(2048)];
    let r = crate::udp_recv(st, fd, e, buf, flags | libc::MSG_TRUNC, name, namelen);
    if r < 0 {
        return r;
    }
    let full = r as usize;
    let copied = full.min(buf.len());
    let mut off = 0;
    for b in v {
        if off == copied {
            break;
        }
        let out = iov_bytes_mut(b);
        let n = out.len().min(copied - off);
        out[..n].copy_from_slice(&buf[off..off + n]);
        off += n;
    }
    if let Some(f) = msg_flags {
        *f = if full > copied { libc::MSG_TRUNC } else { 0 };
    }
    if flags & libc::MSG_TRUNC != 0 {
        full as ssize_t
    } else {
        copied as ssize_t
    }
}

/// `writev(2)`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some((st, e)) = stack_entry(fd) else {
        // SAFETY: passing through.
        return unsafe { real::writev(fd, iov, n) };
    };
    crate::guard(|| match iovs(iov, n) {
        Some(v) => send_iov(st, fd, e, v, 0, None),
        None => fail(libc::EINVAL),
    })
}

/// `readv(2)`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some((st, e)) = stack_entry(fd) else {
        // SAFETY: passing through.
        return unsafe { real::readv(fd, iov, n) };
    };
    crate::guard(|| match iovs(iov, n) {
        Some(v) => recv_iov(
            st,
            fd,
            e,
            v,
            0,
            (std::ptr::null_mut(), std::ptr::null_mut()),
            None,
        ),
        None => fail(libc::EINVAL),
    })
}

/// `sendmsg(2)` (ancillary data is not supported on stack sockets and is ignored).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some((st, e)) = stack_entry(fd) else {
        // SAFETY: passing through.
        return unsafe { real::sendmsg(fd, msg, flags) };
    };
    crate::guard(|| {
        if msg.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: the caller's msghdr.
        let m = unsafe { &*msg };
        let Some(v) = iovs(m.msg_iov, m.msg_iovlen as c_int) else {
            return fail(libc::EINVAL);
        };
        let to = if m.msg_name.is_null() || e.tcp {
            None
        } else {
            match crate::inet_addr::parse(m.msg_name.cast(), m.msg_namelen) {
                Some(to) => Some(to),
                // Native IPv6, or an address the kernel will judge.
                // SAFETY: passing through.
                None => return unsafe { real::sendmsg(fd, msg, flags) },
            }
        };
        send_iov(st, fd, e, v, flags, to)
    })
}

/// `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let Some((st, e)) = stack_entry(fd) else {
        // SAFETY: passing through.
        return unsafe { real::recvmsg(fd, msg, flags) };
    };
    crate::guard(|| {
        if msg.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: the caller's msghdr.
        let m = unsafe { &mut *msg };
        let Some(v) = iovs(m.msg_iov, m.msg_iovlen as c_int) else {
            return fail(libc::EINVAL);
        };
        m.msg_controllen = 0;
        let name = m.msg_name.cast::<sockaddr>();
        let namelen: *mut socklen_t = if name.is_null() {
            std::ptr::null_mut()
        } else {
            &mut m.msg_namelen
        };
        let mut mf = 0;
        let r = recv_iov(st, fd, e, v, flags, (name, namelen), Some(&mut mf));
        m.msg_flags = mf;
        r
    })
}

/// `sendmmsg(2)`: message by message, stopping at the first error after one was sent.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int {
    if stack_entry(fd).is_none() {
        // SAFETY: passing through.
        return unsafe { real::sendmmsg(fd, msgs, n, flags) };
    }
    crate::guard(|| {
        let mut done = 0;
        for k in 0..n as usize {
            // SAFETY: the caller's array of n messages.
            let mm = unsafe { &mut *msgs.add(k) };
            // SAFETY: as above.
            let r = unsafe { sendmsg(fd, &mm.msg_hdr, flags) };
            if r < 0 {
                return if done > 0 { done } else { -1 };
            }
            mm.msg_len = r as c_uint;
            done += 1;
        }
        done
    })
}

/// `recvmmsg(2)`: the first message as the socket's blocking mode says,
/// the rest without waiting (MSG_WAITFORONE behaviour; the timeout is
/// honoured only by returning what is there).
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    n: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if stack_entry(fd).is_none() {
        // SAFETY: passing through.
        return unsafe { real::recvmmsg(fd, msgs, n, flags, timeout) };
    }
    crate::guard(|| {
        let mut done = 0;
        for k in 0..n as usize {
            let f = if done > 0 {
                flags | libc::MSG_DONTWAIT
            } else {
                flags
            };
            // SAFETY: the caller's array of n messages.
            let mm = unsafe { &mut *msgs.add(k) };
            // SAFETY: as above.
            let r = unsafe { recvmsg(fd, &mut mm.msg_hdr, f & !libc::MSG_WAITFORONE) };
            if r < 0 {
                return if done > 0 { done } else { -1 };
            }
            mm.msg_len = r as c_uint;
            done += 1;
        }
        done
    })
}

fn chk_fail() -> ! {
    let msg = b"*** buffer overflow detected ***: terminated\n";
    // SAFETY: writing a static buffer to stderr, then aborting as glibc does.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

/// `__recv_chk` (recv under _FORTIFY_SOURCE).
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if n > buflen {
        chk_fail();
    }
    // SAFETY: same contract as recv.
    unsafe { crate::recv(fd, buf, n, flags) }
}

/// `__recvfrom_chk`.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if n > buflen {
        chk_fail();
    }
    // SAFETY: same contract as recvfrom.
    unsafe { crate::recvfrom(fd, buf, n, flags, addr, alen) }
}

/// `__read_chk`.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        chk_fail();
    }
    // SAFETY: same contract as read.
    unsafe { crate::read(fd, buf, n) }
}

/// Reads up to `count` bytes of `in_fd` (at `*offset` if given) and sends
/// them on a stack socket: sendfile's semantics, with a bounce buffer.
fn sendfile_stack(
    st: &State,
    out_fd: c_int,
    e: Entry,
    in_fd: c_int,
    offset: *mut i64,
    count: usize,
) -> ssize_t {
    let mut buf = vec![0u8; count.clamp(1, 1 << 16)];
    let mut total: usize = 0;
    while total < count {
        let want = buf.len().min(count - total);
        let got = if offset.is_null() {
            // SAFETY: our buffer.
            unsafe { real::read(in_fd, buf.as_mut_ptr().cast(), want) }
        } else {
            // SAFETY: our buffer; the caller's offset.
            unsafe { libc::pread64(in_fd, buf.as_mut_ptr().cast(), want, *offset) }
        };
        if got < 0 {
            return if total > 0 { total as ssize_t } else { -1 };
        }
        if got == 0 {
            break;
        }
        let flags = if total > 0 { libc::MSG_DONTWAIT } else { 0 };
        let sent = if e.tcp {
            crate::tcp_send(st, out_fd, e, &buf[..got as usize], flags)
        } else {
            crate::udp_send(st, out_fd, e, &buf[..got as usize], flags, None)
        };
        if sent < 0 {
            if offset.is_null() {
                // Put the unsent bytes back for the next call.
                // SAFETY: seeking the caller's file.
                unsafe { libc::lseek64(in_fd, -got as i64, libc::SEEK_CUR) };
            }
            return if total > 0 { total as ssize_t } else { -1 };
        }
        let sent = sent as usize;
        if !offset.is_null() {
            // SAFETY: the caller's offset.
            unsafe { *offset += sent as i64 };
        } else if sent < got as usize {
            // SAFETY: seeking the caller's file back over what was not sent.
            unsafe { libc::lseek64(in_fd, sent as i64 - got as i64, libc::SEEK_CUR) };
        }
        total += sent;
        if sent < got as usize {
            break;
        }
    }
    total as ssize_t
}

/// `sendfile(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off_t,
    count: size_t,
) -> ssize_t {
    let Some((st, e)) = stack_entry(out_fd) else {
        // SAFETY: passing through.
        return unsafe { real::sendfile(out_fd, in_fd, offset, count) };
    };
    crate::guard(|| sendfile_stack(st, out_fd, e, in_fd, offset.cast(), count))
}

/// `sendfile64(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut i64,
    count: size_t,
) -> ssize_t {
    let Some((st, e)) = stack_entry(out_fd) else {
        // SAFETY: passing through.
        return unsafe { real::sendfile64(out_fd, in_fd, offset, count) };
    };
    crate::guard(|| sendfile_stack(st, out_fd, e, in_fd, offset, count))
}

/// `splice(2)` between a pipe and a stack socket, through a bounce buffer.
#[no_mangle]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    let (sin, sout) = (stack_entry(fd_in), stack_entry(fd_out));
    if sin.is_none() && sout.is_none() {
        // SAFETY: passing through.
        return unsafe { real::splice(fd_in, off_in, fd_out, off_out, len, flags) };
    }
    crate::guard(|| {
        if sin.is_some() && sout.is_some() {
            return fail(libc::EINVAL);
        }
        let nonblock = flags & libc::SPLICE_F_NONBLOCK != 0;
        let mut buf = vec![0u8; len.clamp(1, 1 << 16)];
        if let Some((st, e)) = sout {
            if !off_in.is_null() {
                return fail(libc::ESPIPE);
            }
            // SAFETY: our buffer.
            let got = unsafe { real::read(fd_in, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                return got;
            }
            let f = if nonblock { libc::MSG_DONTWAIT } else { 0 };
            return if e.tcp {
                crate::tcp_send(st, fd_out, e, &buf[..got as usize], f)
            } else {
                crate::udp_send(st, fd_out, e, &buf[..got as usize], f, None)
            };
        }
        let Some((st, e)) = sin else {
            return fail(libc::EINVAL);
        };
        if !off_out.is_null() {
            return fail(libc::ESPIPE);
        }
        let f = if nonblock { libc::MSG_DONTWAIT } else { 0 };
        let got = if e.tcp {
            crate::tcp_recv(st, fd_in, e, &mut buf, f)
        } else {
            crate::udp_recv(
                st,
                fd_in,
                e,
                &mut buf,
                f,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if got <= 0 {
            return got;
        }
        // SAFETY: our buffer, the caller's pipe.
        unsafe { real::write(fd_out, buf.as_ptr().cast(), got as usize) }
    })
}
