//! librbypass.so: the LD_PRELOAD library that serves an unmodified
//! program's AF_INET sockets from an rbypass stack.
//!
//! Every accelerated socket is backed by a real kernel socket, so its fd
//! number is the kernel's and dup, fork and close-on-exec keep working. The
//! kernel socket also reserves the port (bind goes to the kernel first) and
//! listens beside the stack listener, so unaccelerated local processes can
//! still connect. Traffic the stack cannot carry (another address, no stack
//! listener or receiver behind a local address) is handed to the kernel
//! socket before anything was sent.
//!
//! Every entry point catches panics (never unwinding into C) and keeps the
//! app's errno semantics.

// The exported functions are libc's own socket API: their safety contract is
// libc's (valid pointers and lengths from the caller), documented there.
#![allow(clippy::missing_safety_doc)]

mod epoll;
mod exec;
#[cfg(target_arch = "x86_64")]
mod exec_variadic;
mod exit;
mod fork;
mod inet_addr;
pub mod log;
mod mcast;
mod msg;
mod multiplex;
mod progress;
pub mod real;
mod signals;
mod spawn;
mod state;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::AssertUnwindSafe;

use libc::{c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};
use rbypass_stack::clock::now_ns;
use rbypass_stack::tcp::conn::Shutdown;
use rbypass_stack::tcp::tcb::TcpState;
use rbypass_stack::{Core, SockError};
use state::{Entry, State};

fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local and always valid to write.
    unsafe { *libc::__errno_location() = e };
}

fn fail<T: From<i8>>(e: c_int) -> T {
    set_errno(e);
    T::from(-1)
}

/// `guard` for calls that return an error number instead of -1 and errno.
fn guard_code(f: impl FnOnce() -> c_int) -> c_int {
    let _in_lib = signals::InLib::enter();
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(libc::EIO)
}

/// Runs an entry point's body, turning a panic into EIO instead of unwinding into C.
fn guard<T: From<i8>>(f: impl FnOnce() -> T) -> T {
    let _in_lib = signals::InLib::enter();
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => fail(libc::EIO),
    }
}

/// Gives an fd to the kernel for good: what it reaches, the stack cannot.
fn release(st: &State, fd: c_int, why: &str) {
    if st.entry(fd).is_some() {
        rlog!(Debug, "fd {fd}: {why}; the kernel socket carries it");
        drop_entry(st, fd);
    }
}

/// Closes the stack side of an fd; the kernel socket stays.
fn drop_entry(st: &State, fd: c_int) {
    if st.entry(fd).is_none() {
        return;
    }
    let mut c = st.stack.lock();
    if let Some((e, last)) = st.take(&mut c, fd) {
        if last {
            let now = now_ns();
            let _ = if e.tcp {
                c.tcp_close(e.id, now)
            } else {
                c.udp_close(e.id)
            };
            st.flush(&mut c, now);
        }
    }
}

/// The errno of a stack error.
fn errno_of(e: SockError) -> c_int {
    e.errno()
}

/// The socket's SO_RCVTIMEO or SO_SNDTIMEO in nanoseconds (0: none), kept
/// by the kernel socket; read only when the app set one.
fn timeo_ns(fd: c_int, e: Entry, name: c_int) -> u64 {
    if !e.timeo {
        return 0;
    }
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as socklen_t;
    // SAFETY: a valid timeval buffer and length.
    let r = unsafe {
        real::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return 0;
    }
    tv.tv_sec.max(0) as u64 * 1_000_000_000 + tv.tv_usec.max(0) as u64 * 1000
}

/// How recently the stack must have been polled for a call that can
/// complete at once to skip polling it.
const RECENT_POLL_NS: u64 = 20_000;

/// Runs `f` until it stops saying WouldBlock: spinning, then sleeping on the
/// stack's wake futex. Non-blocking callers get EAGAIN at once. `timeout`
/// gives the call's timeout (0: none); it is read only if the call has to
/// wait (reading SO_RCVTIMEO costs a system call).
fn block<T>(
    st: &State,
    nonblock: bool,
    timeout: impl FnOnce() -> u64,
    mut f: impl FnMut(&mut Core<'_>, u64) -> Result<T, SockError>,
) -> Result<T, SockError> {
    let start = now_ns();
    let mut last_yield = start;
    let mut timeout = Some(timeout);
    let mut timeout_ns = 0;
    loop {
        let seen = st.stack.wake_seq();
        {
            let mut c = st.stack.lock();
            let now = now_ns();
            // The stack moved on a moment ago (another call, another
            // process): if the call can complete now, it does so without
            // polling the stack again (a subscriber draining its queue).
            if now.saturating_sub(c.now()) < RECENT_POLL_NS {
                crate::progress::app_polled(now);
                match f(&mut c, now) {
                    Err(SockError::WouldBlock) => {}
                    r => {
                        st.flush(&mut c, now);
                        return r;
                    }
                }
            }
            st.pump(&mut c, now);
            match f(&mut c, now) {
                Err(SockError::WouldBlock) if !nonblock => {}
                r => {
                    // What the call queued (data, ACKs, a FIN) leaves now.
                    st.flush(&mut c, now);
                    return r;
                }
            }
        }
        if signals::pending() && signals::run_pending() {
            return Err(SockError::Interrupted);
        }
        if let Some(t) = timeout.take() {
            timeout_ns = t();
        }
        let now = now_ns();
        if timeout_ns > 0 && now - start >= timeout_ns {
            return Err(SockError::WouldBlock);
        }
        if st.keep_spinning(start, now, &mut last_yield) {
            continue;
        }
        st.stack.sleep_for_wake(seen, 1_000_000);
    }
}

/// Whether a new socket is one the stack serves: Some(tcp) for TCP and UDP
/// over AF_INET or AF_INET6 (whose IPv4 traffic the stack carries).
fn wants_stack(domain: c_int, ty: c_int, proto: c_int) -> Option<bool> {
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return None;
    }
    match (ty & 0xf, proto) {
        (libc::SOCK_STREAM, 0) | (libc::SOCK_STREAM, libc::IPPROTO_TCP) => Some(true),
        (libc::SOCK_DGRAM, 0) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Some(false),
        _ => None,
    }
}

/// `socket(2)`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    // SAFETY: passing the caller's arguments through.
    let fd = unsafe { real::socket(domain, ty, proto) };
    if fd < 0 {
        return fd;
    }
    guard(|| {
        let (Some(tcp), Some(st)) = (wants_stack(domain, ty, proto), state::get()) else {
            return fd;
        };
        let mut c = st.stack.lock();
        let id = if tcp { c.tcp_open() } else { c.udp_open() };
        if let Err(err) = id {
            rlog!(
                Debug,
                "fd {fd}: no stack socket ({err}); the kernel serves it"
            );
        }
        if let Ok(id) = id {
            if !st.set(
                &mut c,
                fd,
                Entry {
                    id,
                    tcp,
                    nonblock: ty & libc::SOCK_NONBLOCK != 0,
                    timeo: false,
                    v6: domain == libc::AF_INET6,
                    connecting: false,
                },
            ) {
                let now = now_ns();
                let _ = if tcp {
                    c.tcp_close(id, now)
                } else {
                    c.udp_close(id)
                };
            }
        }
        fd
    })
}

/// Binds the kernel socket (reserving the port host-wide) and then the stack socket to the same port.
fn bind_both(st: &State, fd: c_int, e: Entry, a: SocketAddrV4, for_connect: bool) -> c_int {
    let k = inet_addr::KernelAddr::new(a, e.v6);
    // SAFETY: a valid socket address of the socket's family.
    let r = unsafe { real::bind(fd, k.as_ptr(), k.len()) };
    if r < 0 {
        return r;
    }
    let Some(port) = inet_addr::kernel_port(fd) else {
        return fail(libc::EINVAL);
    };
    let mut c = st.stack.lock();
    let r = if e.tcp && for_connect {
        c.tcp_bind_for_connect(e.id, SocketAddrV4::new(*a.ip(), port))
    } else if e.tcp {
        c.tcp_bind(e.id, SocketAddrV4::new(*a.ip(), port))
    } else {
        c.udp_bind(e.id, SocketAddrV4::new(*a.ip(), port))
    };
    match r {
        Ok(_) => {
            // A device steers the new port to the stack now, before a peer's
            // first segment can reach the kernel instead.
            st.flush(&mut c, now_ns());
            0
        }
        Err(SockError::AddrInUse) if !for_connect && reuseport(fd) => {
            // The kernel gave the port to an SO_REUSEPORT group the stack
            // cannot balance yet: the kernel socket serves this fd, as bound.
            drop(c);
            release(st, fd, "its port is taken in the stack");
            0
        }
        Err(err) => fail(errno_of(err)),
    }
}

/// Whether the app set SO_REUSEPORT on the kernel socket behind `fd`.
fn reuseport(fd: c_int) -> bool {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: a valid int buffer and length.
    let r = unsafe {
        real::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v != 0
}

/// `bind(2)`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    guard(|| {
        if let Some(st) = state::existing() {
            if let Some(e) = st.entry(fd) {
                match inet_addr::parse(addr, len) {
                    Some(a)
                        if (st.local_ip(&st.stack.lock(), *a.ip())
                            || (!e.tcp && a.ip().is_multicast()))
                            && !(e.v6 && inet_addr::v6_only(fd)) =>
                    {
                        return bind_both(st, fd, e, a, false)
                    }
                    _ => release(st, fd, "its address is not the stack's"),
                }
            }
        }
        // SAFETY: passing the caller's arguments through.
        unsafe { real::bind(fd, addr, len) }
    })
}

fn is_bound(st: &State, e: Entry) -> bool {
    let c = st.stack.lock();
    let local = if e.tcp {
        c.tcp_info(e.id).map(|i| i.local)
    } else {
        c.udp_local_addr(e.id)
    };
    local.is_ok_and(|l| l.port() != 0)
}

/// `listen(2)`: listens in the stack and on the kernel socket.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    guard(|| {
        if let Some(st) = state::existing() {
            if let Some(e) = st.entry(fd).filter(|e| e.tcp) {
                if !matches!(
                    st.stack.lock().tcp_state(e.id),
                    Ok(TcpState::Closed | TcpState::Listen)
                ) {
                    return fail(libc::EINVAL);
                }
                if !is_bound(st, e) {
                    let r = bind_both(
                        st,
                        fd,
                        e,
                        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                        false,
                    );
                    if r < 0 {
                        return r;
                    }
                    if st.entry(fd).is_none() {
                        // SAFETY: the kernel socket carries it now.
                        return unsafe { real::listen(fd, backlog) };
                    }
                }
                // SAFETY: the kernel socket listens too, for unaccelerated clients.
                let r = unsafe { real::listen(fd, backlog) };
                if r < 0 {
                    return r;
                }
                let mut c = st.stack.lock();
                return match c.tcp_listen(e.id, backlog.max(1) as u32) {
                    Ok(()) => 0,
                    Err(err) => fail(errno_of(err)),
                };
            }
        }
        // SAFETY: passing through.
        unsafe { real::listen(fd, backlog) }
    })
}

/// `accept4(2)`: a stack connection (with a fresh kernel socket to hold its
/// fd number) or a kernel connection from an unaccelerated client.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    guard(|| {
        let Some(st) = state::existing() else {
            // SAFETY: passing through.
            return unsafe { real::accept4(fd, addr, len, flags) };
        };
        let Some(e) = st.entry(fd) else {
            // SAFETY: passing through.
            return unsafe { real::accept4(fd, addr, len, flags) };
        };
        let timeout = || timeo_ns(fd, e, libc::SO_RCVTIMEO);
        let r = block(st, e.nonblock, timeout, |c, _now| {
            match c.tcp_accept(e.id) {
                Ok(x) => Ok(Some(x)),
                Err(SockError::WouldBlock) => {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, no wait.
                    if unsafe { real::poll(&mut p, 1, 0) } > 0 {
                        Ok(None)
                    } else {
                        Err(SockError::WouldBlock)
                    }
                }
                Err(err) => Err(err),
            }
        });
        match r {
            Ok(Some((id, from))) => {
                // SAFETY: a fresh kernel socket to own the fd number.
                let nfd = unsafe {
                    real::socket(
                        if e.v6 { libc::AF_INET6 } else { libc::AF_INET },
                        libc::SOCK_STREAM | (flags & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)),
                        0,
                    )
                };
                if nfd < 0
                    || !st.set(
                        &mut st.stack.lock(),
                        nfd,
                        Entry {
                            id,
                            tcp: true,
                            nonblock: flags & libc::SOCK_NONBLOCK != 0,
                            timeo: false,
                            v6: e.v6,
                            connecting: false,
                        },
                    )
                {
                    let _ = st.stack.lock().tcp_close(id, now_ns());
                    return fail(libc::EMFILE);
                }
                inet_addr::write(from, e.v6, addr, len);
                nfd
            }
            Ok(None) => {
                rlog!(
                    Debug,
                    "fd {fd}: accepting a connection from an unaccelerated client"
                );
                // SAFETY: the kernel listener has a connection waiting.
                unsafe { real::accept4(fd, addr, len, flags) }
            }
            Err(err) => fail(errno_of(err)),
        }
    })
}

/// `accept(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: same contract.
    unsafe { accept4(fd, addr, len, 0) }
}

/// `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    guard(|| {
        let st_e = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)));
        let Some((st, mut e)) = st_e else {
            // SAFETY: passing through.
            return unsafe { real::connect(fd, addr, len) };
        };
        if e.tcp {
            // What Linux's inet_stream_connect says for a socket not closed.
            let mut c = st.stack.lock();
            let state = c.tcp_state(e.id);
            let was_connecting = e.connecting;
            if was_connecting && !matches!(state, Ok(TcpState::SynSent | TcpState::SynReceived)) {
                e.connecting = false;
                st.update(fd, e);
            }
            match state {
                Ok(TcpState::SynSent | TcpState::SynReceived) => return fail(libc::EALREADY),
                Ok(TcpState::Closed) if was_connecting => {
                    if let Ok(Some(err)) = c.tcp_take_error(e.id) {
                        return fail(errno_of(err));
                    }
                }
                Ok(TcpState::Closed) => {}
                Ok(_) if was_connecting => return 0,
                Ok(_) => return fail(libc::EISCONN),
                Err(err) => return fail(errno_of(err)),
            }
        }
        let Some(to) = inet_addr::parse(addr, len) else {
            release(st, fd, "its peer is not an IPv4 address");
            // SAFETY: passing through.
            return unsafe { real::connect(fd, addr, len) };
        };
        let in_stack = {
            let c = st.stack.lock();
            if st.on_device() {
                st.reaches(&c, *to.ip())
            } else if !to.ip().is_loopback() {
                false
            } else if e.tcp {
                c.tcp_listener_exists(to)
            } else {
                c.udp_port_bound(to)
            }
        };
        if !in_stack {
            release(st, fd, "its peer is not in this stack");
            // SAFETY: passing through.
            return unsafe { real::connect(fd, addr, len) };
        }
        if !is_bound(st, e) {
            let ip = if st.on_device() {
                Ipv4Addr::UNSPECIFIED
            } else {
                Ipv4Addr::LOCALHOST
            };
            let r = bind_both(st, fd, e, SocketAddrV4::new(ip, 0), true);
            if r < 0 {
                return r;
            }
        }
        if !e.tcp {
            let mut c = st.stack.lock();
            return match c.udp_connect(e.id, to) {
                Ok(_) => 0,
                Err(err) => fail(errno_of(err)),
            };
        }
        {
            let mut c = st.stack.lock();
            let now = now_ns();
            let r = c.tcp_connect(e.id, to, now);
            st.flush(&mut c, now);
            if let Err(err) = r {
                rlog!(Debug, "fd {fd}: connect to {to} in the stack: {err}");
                return fail(if err == SockError::InProgress {
                    libc::EALREADY
                } else {
                    errno_of(err)
                });
            }
        }
        if e.nonblock {
            e.connecting = true;
            st.update(fd, e);
            return fail(libc::EINPROGRESS);
        }
        let timeout = || timeo_ns(fd, e, libc::SO_SNDTIMEO);
        let r = block(st, false, timeout, |c, _| match c.tcp_state(e.id) {
            Ok(TcpState::SynSent) | Ok(TcpState::SynReceived) => Err(SockError::WouldBlock),
            Ok(TcpState::Closed) => Err(c
                .tcp_take_error(e.id)
                .ok()
                .flatten()
                .unwrap_or(SockError::ConnRefused)),
            Ok(_) => Ok(()),
            Err(err) => Err(err),
        });
        match r {
            Ok(()) => 0,
            Err(err) => fail(errno_of(err)),
        }
    })
}

fn raise_sigpipe(flags: c_int) {
    if flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: raising a signal in our own process, as the kernel would.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
}

fn tcp_send(st: &State, fd: c_int, e: Entry, data: &[u8], flags: c_int) -> ssize_t {
    let timeout = || timeo_ns(fd, e, libc::SO_SNDTIMEO);
    let nonblock = e.nonblock || flags & libc::MSG_DONTWAIT != 0;
    let mut sent = 0;
    loop {
        let r = block(st, nonblock, timeout, |c, now| {
            c.tcp_send(e.id, &data[sent..], now).map_err(|err| {
                if err == SockError::NoBuffers {
                    SockError::WouldBlock
                } else {
                    err
                }
            })
        });
        match r {
            Ok(n) => {
                sent += n;
                if sent == data.len() || nonblock {
                    return sent as ssize_t;
                }
            }
            Err(SockError::WouldBlock) if sent > 0 => return sent as ssize_t,
            Err(err) => {
                if err == SockError::BrokenPipe {
                    raise_sigpipe(flags);
                }
                return if sent > 0 {
                    sent as ssize_t
                } else {
                    fail(errno_of(err))
                };
            }
        }
    }
}

fn udp_send(
    st: &State,
    fd: c_int,
    e: Entry,
    data: &[u8],
    flags: c_int,
    to: Option<SocketAddrV4>,
) -> ssize_t {
    let mut c = st.stack.lock();
    let dest = match to {
        Some(t) => t,
        None => match c.udp_peer_addr(e.id) {
            Ok(p) => p,
            Err(err) => return fail(errno_of(err)),
        },
    };
    let in_stack = if st.on_device() {
        st.reaches(&c, *dest.ip()) || dest.ip().is_multicast()
    } else if dest.ip().is_multicast() {
        // The loopback stack's multicast reaches the stack's own members.
        let mut joined = false;
        c.for_each_group(|g| joined |= g == *dest.ip());
        joined
    } else {
        dest.ip().is_loopback() && c.udp_port_bound(dest)
    };
    if !in_stack {
        drop(c);
        // Not for this stack: the kernel socket (bound to the same port) sends it.
        let k = inet_addr::KernelAddr::new(dest, e.v6);
        if !is_bound(st, e) {
            let r = bind_both(
                st,
                fd,
                e,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                false,
            );
            if r < 0 {
                return r as ssize_t;
            }
        }
        // SAFETY: valid buffer and address.
        return unsafe {
            real::sendto(
                fd,
                data.as_ptr().cast(),
                data.len(),
                flags,
                k.as_ptr(),
                k.len(),
            )
        };
    }
    if !is_bound_locked(&c, e) {
        drop(c);
        let r = bind_both(
            st,
            fd,
            e,
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            false,
        );
        if r < 0 {
            return r as ssize_t;
        }
        c = st.stack.lock();
    }
    match c.udp_send_to(e.id, data, dest) {
        Ok(n) => {
            st.pump(&mut c, now_ns());
            n as ssize_t
        }
        Err(err) => fail(errno_of(err)),
    }
}

fn is_bound_locked(c: &Core<'_>, e: Entry) -> bool {
    c.udp_local_addr(e.id).is_ok_and(|l| l.port() != 0)
}

/// `sendto(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    guard(|| {
        let st_e = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)));
        let Some((st, e)) = st_e else {
            // SAFETY: passing through.
            return unsafe { real::sendto(fd, buf, n, flags, addr, alen) };
        };
        // SAFETY: the caller's buffer of n bytes.
        let data = if n == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) }
        };
        if e.tcp {
            return tcp_send(st, fd, e, data, flags);
        }
        let to = if addr.is_null() {
            None
        } else {
            match inet_addr::parse(addr, alen) {
                Some(to) => Some(to),
                // Native IPv6, or an address the kernel will judge.
                // SAFETY: passing through.
                None => return unsafe { real::sendto(fd, buf, n, flags, addr, alen) },
            }
        };
        udp_send(st, fd, e, data, flags, to)
    })
}

/// `send(2)`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: same contract.
    unsafe { sendto(fd, buf, n, flags, std::ptr::null(), 0) }
}

/// `write(2)`: accelerated sockets are sent on, everything else passes through.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if state::existing().and_then(|st| st.entry(fd)).is_none() {
        // SAFETY: passing through (the common path for files and pipes).
        return unsafe { real::write(fd, buf, n) };
    }
    // SAFETY: same contract.
    unsafe { sendto(fd, buf, n, 0, std::ptr::null(), 0) }
}

fn tcp_recv(st: &State, fd: c_int, e: Entry, out: &mut [u8], flags: c_int) -> ssize_t {
    let timeout = || timeo_ns(fd, e, libc::SO_RCVTIMEO);
    let nonblock = e.nonblock || flags & libc::MSG_DONTWAIT != 0;
    let peek = flags & libc::MSG_PEEK != 0;
    let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
    let mut got = 0;
    loop {
        let r = block(st, nonblock, timeout, |c, now| {
            c.tcp_recv(e.id, &mut out[got..], peek, now)
        });
        match r {
            Ok(0) => return got as ssize_t,
            Ok(k) => {
                got += k;
                if !waitall || got == out.len() {
                    return got as ssize_t;
                }
            }
            Err(SockError::WouldBlock) if got > 0 => return got as ssize_t,
            Err(err) => {
                return if got > 0 {
                    got as ssize_t
                } else {
                    fail(errno_of(err))
                }
            }
        }
    }
}

fn udp_recv(
    st: &State,
    fd: c_int,
    e: Entry,
    out: &mut [u8],
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let nonblock = e.nonblock || flags & libc::MSG_DONTWAIT != 0;
    let peek = flags & libc::MSG_PEEK != 0;
    let timeout = || timeo_ns(fd, e, libc::SO_RCVTIMEO);
    let r = block(st, nonblock, timeout, |c, _| {
        match c.udp_recv_from(e.id, out, peek) {
            Ok(m) => Ok(Some(m)),
            Err(SockError::WouldBlock) => {
                // Datagrams from unaccelerated senders arrive on the kernel socket.
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, no wait.
                if unsafe { real::poll(&mut p, 1, 0) } > 0 {
                    Ok(None)
                } else {
                    Err(SockError::WouldBlock)
                }
            }
            Err(err) => Err(err),
        }
    });
    match r {
        Ok(Some(m)) => {
            inet_addr::write(m.from, e.v6, addr, alen);
            if flags & libc::MSG_TRUNC != 0 {
                m.len as ssize_t
            } else {
                m.copied as ssize_t
            }
        }
        // SAFETY: the kernel socket has a datagram.
        Ok(None) => unsafe {
            real::recvfrom(
                fd,
                out.as_mut_ptr().cast(),
                out.len(),
                flags | libc::MSG_DONTWAIT,
                addr,
                alen,
            )
        },
        Err(err) => fail(errno_of(err)),
    }
}

/// `recvfrom(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    guard(|| {
        let st_e = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)));
        let Some((st, e)) = st_e else {
            // SAFETY: passing through.
            return unsafe { real::recvfrom(fd, buf, n, flags, addr, alen) };
        };
        // SAFETY: the caller's buffer of n bytes.
        let out = if n == 0 {
            &mut [][..]
        } else {
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) }
        };
        if e.tcp {
            if !addr.is_null() && !alen.is_null() {
                // SAFETY: the caller's length word.
                unsafe { *alen = 0 };
            }
            tcp_recv(st, fd, e, out, flags)
        } else {
            udp_recv(st, fd, e, out, flags, addr, alen)
        }
    })
}

/// `recv(2)`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: same contract.
    unsafe {
        recvfrom(
            fd,
            buf,
            n,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// `read(2)`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if state::existing().and_then(|st| st.entry(fd)).is_none() {
        // SAFETY: passing through.
        return unsafe { real::read(fd, buf, n) };
    }
    // SAFETY: same contract.
    unsafe { recvfrom(fd, buf, n, 0, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// `close(2)`: the last fd of a stack socket closes it in the stack (TCP closes gracefully).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    guard(|| {
        if let Some(st) = state::existing() {
            drop_entry(st, fd);
            if epoll::is_epoll(fd) {
                epoll::forget_epoll(fd);
            }
        }
        // SAFETY: passing through.
        unsafe { real::close(fd) }
    })
}

/// `shutdown(2)`.
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    guard(|| {
        let st_e = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)));
        match st_e {
            Some((st, e)) if e.tcp => {
                let how = match how {
                    libc::SHUT_RD => Shutdown::Read,
                    libc::SHUT_WR => Shutdown::Write,
                    libc::SHUT_RDWR => Shutdown::Both,
                    _ => return fail(libc::EINVAL),
                };
                let mut c = st.stack.lock();
                let now = now_ns();
                let r = c.tcp_shutdown(e.id, how, now);
                st.flush(&mut c, now);
                match r {
                    Ok(()) => 0,
                    Err(err) => fail(errno_of(err)),
                }
            }
            Some(_) => 0,
            // SAFETY: passing through.
            None => unsafe { real::shutdown(fd, how) },
        }
    })
}

/// `getsockname(2)`.
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    guard(|| {
        let st_e = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)));
        if let Some((st, e)) = st_e {
            let c = st.stack.lock();
            let a = if e.tcp {
                c.tcp_info(e.id).map(|i| i.local)
            } else {
                c.udp_local_addr(e.id)
            };
            if let Ok(a) = a {
                inet_addr::write(a, e.v6, addr, len);
                return 0;
            }
        }
        // SAFETY: passing through.
        unsafe { real::getsockname(fd, addr, len) }
    })
}

/// `getpeername(2)`.
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    guard(|| {
        let st_e = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e)));
        let Some((st, e)) = st_e else {
            // SAFETY: passing through.
            return unsafe { real::getpeername(fd, addr, len) };
        };
        let c = st.stack.lock();
        let a = if e.tcp {
            c.tcp_info(e.id)
                .ok()
                .filter(|i| i.state.synchronized() || i.state == TcpState::SynReceived)
                .map(|i| i.remote)
                .ok_or(SockError::NotConnected)
        } else {
            c.udp_peer_addr(e.id)
        };
        match a {
            Ok(a) => {
                inet_addr::write(a, e.v6, addr, len);
                0
            }
            Err(err) => fail(errno_of(err)),
        }
    })
}

/// `setsockopt(2)`: options the stack implements are applied to it; every
/// option is also set on the kernel socket, so getsockopt reads it back.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    guard(|| {
        if let Some((st, mut e)) = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e))) {
            if level == libc::SOL_SOCKET && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO)
            {
                e.timeo = true;
                st.update(fd, e);
            }
            let int = || {
                (!val.is_null() && len as usize >= 4)
                    .then(|| unsafe { std::ptr::read_unaligned(val.cast::<c_int>()) })
            };
            let mut c = st.stack.lock();
            let now = now_ns();
            if !e.tcp {
                match mcast::set_udp_option(&mut c, e.id, level, name, val, len, st.on_device()) {
                    mcast::Outcome::NotMine => {}
                    mcast::Outcome::AlsoKernel(Err(err)) | mcast::Outcome::StackOnly(Err(err)) => {
                        return fail(errno_of(err));
                    }
                    mcast::Outcome::StackOnly(Ok(())) => return 0,
                    mcast::Outcome::AlsoKernel(Ok(())) => {
                        // A device filter follows the stack's new groups now.
                        st.flush(&mut c, now);
                        drop(c);
                        // SAFETY: passing through (getsockopt reads it back).
                        return unsafe { real::setsockopt(fd, level, name, val, len) };
                    }
                }
            }
            let r = match (level, name, e.tcp) {
                (libc::IPPROTO_TCP, libc::TCP_NODELAY, true) => {
                    int().map(|v| c.tcp_set_nodelay(e.id, v != 0, now))
                }
                (libc::IPPROTO_TCP, libc::TCP_CORK, true) => {
                    int().map(|v| c.tcp_set_cork(e.id, v != 0, now))
                }
                // The FORCE forms (root may exceed rmem_max) set the same limit.
                (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_RCVBUFFORCE, true) => {
                    int().map(|v| c.tcp_set_buffers(e.id, Some(v.max(0) as u32 * 2), None))
                }
                (libc::SOL_SOCKET, libc::SO_SNDBUF | libc::SO_SNDBUFFORCE, true) => {
                    int().map(|v| c.tcp_set_buffers(e.id, None, Some(v.max(0) as u32 * 2)))
                }
                (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_RCVBUFFORCE, false) => {
                    int().map(|v| c.udp_set_rcvbuf(e.id, v.max(0) as u32 * 2))
                }
                (libc::SOL_SOCKET, libc::SO_BROADCAST, false) => {
                    int().map(|v| c.udp_set_broadcast(e.id, v != 0))
                }
                (libc::SOL_SOCKET, libc::SO_REUSEADDR, true) => {
                    int().map(|v| c.tcp_set_reuseaddr(e.id, v != 0))
                }
                (libc::SOL_SOCKET, libc::SO_KEEPALIVE, true) => {
                    int().map(|v| c.tcp_set_keepalive(e.id, v != 0, 7200, 75, 9, now))
                }
                (libc::SOL_SOCKET, libc::SO_LINGER, true)
                    if !val.is_null() && len as usize >= std::mem::size_of::<libc::linger>() =>
                {
                    // SAFETY: checked length.
                    let l = unsafe { std::ptr::read_unaligned(val.cast::<libc::linger>()) };
                    Some(c.tcp_set_linger0(e.id, l.l_onoff != 0 && l.l_linger == 0))
                }
                _ => Some(Ok(())),
            };
            if let Some(Err(err)) = r {
                return fail(errno_of(err));
            }
        }
        // SAFETY: passing through (the kernel socket keeps the value for getsockopt).
        unsafe { real::setsockopt(fd, level, name, val, len) }
    })
}

/// `getsockopt(2)`: SO_ERROR comes from the stack; the rest from the kernel socket.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    guard(|| {
        if level == libc::SOL_SOCKET && name == libc::SO_ERROR && !val.is_null() && !len.is_null() {
            if let Some((st, e)) = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e))) {
                let mut c = st.stack.lock();
                let err = if e.tcp {
                    c.tcp_take_error(e.id)
                } else {
                    c.udp_take_error(e.id)
                };
                let v: c_int = err.ok().flatten().map_or(0, errno_of);
                // SAFETY: caller's buffer; SO_ERROR is an int.
                unsafe {
                    if (*len as usize) < 4 {
                        return fail(libc::EINVAL);
                    }
                    std::ptr::write_unaligned(val.cast::<c_int>(), v);
                    *len = 4;
                }
                return 0;
            }
        }
        // SAFETY: passing through.
        unsafe { real::getsockopt(fd, level, name, val, len) }
    })
}

/// `fcntl(2)` (the variadic argument is read as one word, as the x86-64 ABI passes it).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl_impl(fd, cmd, arg) }
}

/// `fcntl64`: what programs built with `_FILE_OFFSET_BITS=64` call (redis
/// sets O_NONBLOCK through it); on x86-64 it is the same call.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: same contract.
    unsafe { fcntl_impl(fd, cmd, arg) }
}

/// The body of `fcntl` and `fcntl64`: O_NONBLOCK and F_DUPFD* are tracked.
unsafe fn fcntl_impl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    if cmd == libc::F_SETFL {
        if let Some(st) = state::existing() {
            if let Some(mut e) = st.entry(fd) {
                e.nonblock = arg as c_int & libc::O_NONBLOCK != 0;
                st.update(fd, e);
            }
        }
    }
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        // SAFETY: passing through.
        let nfd = unsafe { real::fcntl(fd, cmd, arg) };
        dup_entry(fd, nfd);
        return nfd;
    }
    // SAFETY: passing through.
    unsafe { real::fcntl(fd, cmd, arg) }
}

/// `ioctl(2)`: FIONBIO and FIONREAD on accelerated sockets.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: libc::c_ulong, arg: usize) -> c_int {
    guard(|| {
        if let Some((st, mut e)) = state::existing().and_then(|st| st.entry(fd).map(|e| (st, e))) {
            if req == libc::FIONBIO && arg != 0 {
                // SAFETY: FIONBIO's argument is an int pointer.
                e.nonblock = unsafe { *(arg as *const c_int) } != 0;
                st.update(fd, e);
            } else if req == libc::FIONREAD && arg != 0 {
                let c = st.stack.lock();
                let n = if e.tcp {
                    c.tcp_rx_pending(e.id).unwrap_or(0) as c_int
                } else {
                    c.udp_rx_pending(e.id)
                        .map(|p| p.0.unwrap_or(0) as c_int)
                        .unwrap_or(0)
                };
                // SAFETY: FIONREAD's argument is an int pointer.
                unsafe { *(arg as *mut c_int) = n };
                return 0;
            }
        }
        // SAFETY: passing through.
        unsafe { real::ioctl(fd, req, arg) }
    })
}

fn dup_entry(old: c_int, new: c_int) {
    if new < 0 || new == old {
        return;
    }
    if let Some(st) = state::existing() {
        drop_entry(st, new);
        if let Some(e) = st.entry(old) {
            st.set(&mut st.stack.lock(), new, e);
        }
    }
}

/// `dup(2)`: both fds refer to the same stack socket.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: passing through.
    let n = unsafe { real::dup(fd) };
    guard(|| {
        dup_entry(fd, n);
        n
    })
}

/// `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, fd2: c_int) -> c_int {
    // SAFETY: passing through.
    let n = unsafe { real::dup2(fd, fd2) };
    guard(|| {
        dup_entry(fd, n);
        n
    })
}

/// `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, fd2: c_int, flags: c_int) -> c_int {
    // SAFETY: passing through.
    let n = unsafe { real::dup3(fd, fd2, flags) };
    guard(|| {
        dup_entry(fd, n);
        n
    })
}

/// `epoll_ctl(2)`: stack sockets join the epoll fd's interest list here.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> c_int {
    guard(|| {
        if let Some(st) = state::existing() {
            if let Some(e) = st.entry(fd) {
                return epoll::ctl(st, epfd, op, fd, e, ev);
            }
            if epoll::is_epoll(fd) {
                return epoll::ctl_nested(st, epfd, op, fd, ev);
            }
        }
        // SAFETY: passing through.
        unsafe { real::epoll_ctl(epfd, op, fd, ev) }
    })
}

/// `epoll_create(2)`: noted, so the fd can be nested (see `epoll::ctl_nested`).
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: passing through.
    let fd = unsafe { real::epoll_create(size) };
    if state::existing().is_some() {
        epoll::created(fd);
    }
    fd
}

/// `epoll_create1(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: passing through.
    let fd = unsafe { real::epoll_create1(flags) };
    if state::existing().is_some() {
        epoll::created(fd);
    }
    fd
}

fn epoll_common(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout_ns: Option<u64>,
    sigmask: *const libc::sigset_t,
) -> Option<c_int> {
    let st = state::existing()?;
    epoll::wait(st, epfd, events, max, timeout_ns, sigmask)
}

/// `epoll_wait(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    guard(|| {
        let t = (timeout >= 0).then(|| timeout as u64 * 1_000_000);
        if let Some(r) = epoll_common(epfd, events, max, t, std::ptr::null()) {
            return r;
        }
        // SAFETY: passing through.
        unsafe { real::epoll_pwait(epfd, events, max, timeout, std::ptr::null()) }
    })
}

/// `epoll_pwait(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const libc::sigset_t,
) -> c_int {
    guard(|| {
        let t = (timeout >= 0).then(|| timeout as u64 * 1_000_000);
        if let Some(r) = epoll_common(epfd, events, max, t, sigmask) {
            return r;
        }
        // SAFETY: passing through.
        unsafe { real::epoll_pwait(epfd, events, max, timeout, sigmask) }
    })
}

/// `epoll_pwait2(2)` (nanosecond timeout).
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    guard(|| {
        let t = (!ts.is_null()).then(|| {
            // SAFETY: the caller's timespec.
            let t = unsafe { *ts };
            (t.tv_sec.max(0) as u64) * 1_000_000_000 + t.tv_nsec.max(0) as u64
        });
        if let Some(r) = epoll_common(epfd, events, max, t, sigmask) {
            return r;
        }
        // SAFETY: the raw system call (older libcs lack the wrapper).
        unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd,
                events,
                max,
                ts,
                sigmask,
                8usize, // the kernel sigset size (_NSIG / 8)
            ) as c_int
        }
    })
}
