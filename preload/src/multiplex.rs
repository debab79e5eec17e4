//! poll, ppoll, select and pselect over any mix of stack sockets and kernel
//! fds. Stack readiness is read from the arena; kernel fds are polled
//! without waiting; when nothing is ready the call spins (RBYPASS_SPIN_USEC)
//! and then sleeps: on the arena's wake futex when only stack sockets are
//! watched, or in the kernel when kernel fds are watched too, with the
//! process's wake eventfd in the set (the progress thread writes it on stack
//! news) and slices of at most a millisecond as a backstop.

use libc::{c_int, pollfd};
use rbypass_stack::clock::now_ns;
use rbypass_stack::tcp::tcb::TcpState;
use rbypass_stack::Core;

use crate::state::{Entry, State};
use crate::{fail, real};

const SLICE_NS: u64 = 1_000_000;

fn ready(c: &Core<'_>, e: Entry, events: i16) -> i16 {
    let mut r = 0;
    if e.tcp {
        // poll always reports POLLERR and POLLHUP; the rest when asked.
        let m = c.tcp_poll(e.id) as i16;
        r = m & (events | libc::POLLERR | libc::POLLHUP);
    } else {
        if events & libc::POLLIN != 0 && c.udp_readable(e.id) {
            r |= libc::POLLIN;
        }
        r |= events & libc::POLLOUT;
    }
    r
}

fn kernel_poll_one(fd: c_int, events: i16) -> i16 {
    let mut k = pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe {
        real::ppoll(
            &mut k,
            1,
            &libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            std::ptr::null(),
        )
    };
    k.revents
}

/// One pass over the set; returns how many fds have events. The kernel
/// sockets behind stack sockets (traffic from unaccelerated peers, which
/// only reaches listeners and UDP sockets) are checked when `kernel_side`.
fn scan(st: &State, set: &mut [pollfd], kernel_side: bool) -> c_int {
    let mut maybe_kernel = [false; 64];
    {
        let mut c = st.stack.lock();
        st.pump(&mut c, now_ns());
        for p in set.iter_mut() {
            p.revents = 0;
            if let Some(e) = st.entry(p.fd) {
                p.revents = ready(&c, e, p.events);
            }
        }
        for (k, p) in set.iter().enumerate().take(maybe_kernel.len()) {
            maybe_kernel[k] = kernel_side
                && st
                    .entry(p.fd)
                    .is_some_and(|e| !e.tcp || matches!(c.tcp_state(e.id), Ok(TcpState::Listen)));
        }
    }
    for (k, p) in set.iter_mut().enumerate() {
        if p.fd < 0 {
            continue;
        }
        let kernel_side = maybe_kernel.get(k).copied().unwrap_or(kernel_side);
        match st.entry(p.fd) {
            // Kernel-path traffic to a stack socket (unaccelerated peers).
            Some(_) if kernel_side && p.revents == 0 && p.events & libc::POLLIN != 0 => {
                p.revents |= kernel_poll_one(p.fd, libc::POLLIN) & libc::POLLIN;
            }
            Some(_) => {}
            None => p.revents = kernel_poll_one(p.fd, p.events),
        }
    }
    set.iter().filter(|p| p.revents != 0).count() as c_int
}

/// The common body of poll and ppoll; None: no stack socket, pass through.
pub fn poll_set(
    st: &State,
    set: &mut [pollfd],
    timeout_ns: Option<u64>,
    sigmask: *const libc::sigset_t,
) -> Option<c_int> {
    if !set.iter().any(|p| st.entry(p.fd).is_some()) {
        return None;
    }
    // The kernel fds of the set, then the wake eventfd, which the progress
    // thread writes when the stack has news for a thread asleep in the
    // kernel: a sleeping poll over mixed fds wakes for stack sockets at once.
    let mut kernel_fds: Vec<pollfd> = set
        .iter()
        .filter(|p| p.fd >= 0 && st.entry(p.fd).is_none())
        .copied()
        .collect();
    let n_kernel = kernel_fds.len();
    let wfd = crate::progress::wake_fd();
    if n_kernel > 0 && wfd >= 0 {
        kernel_fds.push(pollfd {
            fd: wfd,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    let start = now_ns();
    let mut last_yield = start;
    let deadline = timeout_ns.map(|t| start.saturating_add(t));
    let mut round = 0u32;
    let mut slept = false;
    loop {
        let seen = st.stack.wake_seq();
        let n = scan(st, set, slept || round.is_multiple_of(32));
        round = round.wrapping_add(1);
        slept = false;
        if n > 0 {
            return Some(n);
        }
        if crate::signals::pending() {
            // A signal came while this thread was in the library: its
            // handler runs as the call returns, and poll and select are
            // never restarted after a handler (Linux: EINTR whatever
            // SA_RESTART says).
            return Some(fail(libc::EINTR));
        }
        let now = now_ns();
        if deadline.is_some_and(|d| now >= d) {
            return Some(0);
        }
        if st.keep_spinning(start, now, &mut last_yield) {
            continue;
        }
        let slice = deadline.map_or(SLICE_NS, |d| (d - now).min(SLICE_NS));
        slept = true;
        if n_kernel == 0 {
            st.stack.sleep_for_wake(seen, slice);
            continue;
        }
        for k in kernel_fds.iter_mut() {
            k.revents = 0;
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: slice as libc::c_long,
        };
        crate::progress::enter_kernel_wait(seen);
        // SAFETY: our own pollfd array, the caller's signal mask.
        let r = unsafe {
            real::ppoll(
                kernel_fds.as_mut_ptr(),
                kernel_fds.len() as libc::nfds_t,
                &ts,
                sigmask,
            )
        };
        crate::progress::leave_kernel_wait();
        if kernel_fds.len() > n_kernel && kernel_fds[n_kernel].revents != 0 {
            // Drain the eventfd: epoll sets hold it edge-triggered, so they
            // still see every later write.
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes from our eventfd.
            unsafe { libc::read(wfd, (&mut v as *mut u64).cast(), 8) };
        }
        if r < 0 {
            // SAFETY: reading errno.
            let err = unsafe { *libc::__errno_location() };
            if err == libc::EINTR {
                return Some(fail(libc::EINTR));
            }
        }
    }
}

fn ts_ns(ts: *const libc::timespec) -> Option<u64> {
    if ts.is_null() {
        return None;
    }
    // SAFETY: the caller's timespec.
    let t = unsafe { *ts };
    Some((t.tv_sec.max(0) as u64).saturating_mul(1_000_000_000) + t.tv_nsec.max(0) as u64)
}

fn ms_ns(ms: c_int) -> Option<u64> {
    (ms >= 0).then(|| ms as u64 * 1_000_000)
}

/// `poll(2)`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    crate::guard(|| {
        if let (Some(st), false) = (crate::state::existing(), fds.is_null() || n == 0) {
            // SAFETY: the caller's array of n pollfds.
            let set = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
            if let Some(r) = poll_set(st, set, ms_ns(timeout), std::ptr::null()) {
                return r;
            }
        }
        // SAFETY: passing through.
        unsafe { real::poll(fds, n, timeout) }
    })
}

/// What glibc's fortified poll checks: the array holds `n` entries.
fn fortify_check(n: libc::nfds_t, fdslen: libc::size_t) {
    if fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: glibc fails the same way (__chk_fail aborts).
        unsafe { libc::abort() }
    }
}

/// `__poll_chk`: `poll` as built with `_FORTIFY_SOURCE` (sockperf, socat).
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: libc::nfds_t,
    timeout: c_int,
    fdslen: libc::size_t,
) -> c_int {
    fortify_check(n, fdslen);
    // SAFETY: same contract as poll.
    unsafe { poll(fds, n, timeout) }
}

/// `__ppoll_chk`: `ppoll` as built with `_FORTIFY_SOURCE`.
#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
    fdslen: libc::size_t,
) -> c_int {
    fortify_check(n, fdslen);
    // SAFETY: same contract as ppoll.
    unsafe { ppoll(fds, n, ts, sigmask) }
}

/// `ppoll(2)`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    crate::guard(|| {
        if let (Some(st), false) = (crate::state::existing(), fds.is_null() || n == 0) {
            // SAFETY: the caller's array of n pollfds.
            let set = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
            if let Some(r) = poll_set(st, set, ts_ns(ts), sigmask) {
                return r;
            }
        }
        // SAFETY: passing through.
        unsafe { real::ppoll(fds, n, ts, sigmask) }
    })
}

/// select and pselect as poll over the fds in the sets.
fn select_common(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    timeout_ns: Option<u64>,
    sigmask: *const libc::sigset_t,
) -> Option<c_int> {
    let st = crate::state::existing()?;
    if !(0..=libc::FD_SETSIZE as c_int).contains(&nfds) {
        return None;
    }
    let isset = |s: *mut libc::fd_set, fd: c_int| {
        // SAFETY: the caller's fd_set, fd below FD_SETSIZE.
        !s.is_null() && unsafe { libc::FD_ISSET(fd, s) }
    };
    // select is async-signal-safe: the set lives on the stack (8 KiB).
    let mut storage = [pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; libc::FD_SETSIZE];
    let mut len = 0;
    for fd in 0..nfds {
        let mut events = 0;
        if isset(rd, fd) {
            events |= libc::POLLIN;
        }
        if isset(wr, fd) {
            events |= libc::POLLOUT;
        }
        if isset(ex, fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            storage[len] = pollfd {
                fd,
                events,
                revents: 0,
            };
            len += 1;
        }
    }
    let set = &mut storage[..len];
    let r = poll_set(st, set, timeout_ns, sigmask)?;
    if r < 0 {
        return Some(r);
    }
    for s in [rd, wr, ex] {
        if !s.is_null() {
            // SAFETY: the caller's fd_set.
            unsafe { libc::FD_ZERO(s) };
        }
    }
    let mut count = 0;
    for p in set.iter() {
        if p.revents & libc::POLLNVAL != 0 {
            return Some(fail(libc::EBADF));
        }
        let rin = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
        let rout = libc::POLLOUT | libc::POLLERR;
        for (s, want, got) in [
            (rd, libc::POLLIN, rin),
            (wr, libc::POLLOUT, rout),
            (ex, libc::POLLPRI, libc::POLLPRI),
        ] {
            if p.events & want != 0 && p.revents & got != 0 {
                // SAFETY: the caller's fd_set, fd below FD_SETSIZE.
                unsafe { libc::FD_SET(p.fd, s) };
                count += 1;
            }
        }
    }
    Some(count)
}

/// `select(2)`.
#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    crate::guard(|| {
        let timeout = (!tv.is_null()).then(|| {
            // SAFETY: the caller's timeval.
            let t = unsafe { *tv };
            (t.tv_sec.max(0) as u64) * 1_000_000_000 + (t.tv_usec.max(0) as u64) * 1000
        });
        if let Some(r) = select_common(nfds, rd, wr, ex, timeout, std::ptr::null()) {
            if !tv.is_null() {
                // Linux reports the time not slept; zero is always truthful enough
                // for a call that returned because of readiness or timeout.
                if r == 0 {
                    // SAFETY: the caller's timeval.
                    unsafe {
                        *tv = libc::timeval {
                            tv_sec: 0,
                            tv_usec: 0,
                        }
                    };
                }
            }
            return r;
        }
        // SAFETY: passing through.
        unsafe { real::select(nfds, rd, wr, ex, tv) }
    })
}

/// `pselect(2)`.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    crate::guard(|| {
        if let Some(r) = select_common(nfds, rd, wr, ex, ts_ns(ts), sigmask) {
            return r;
        }
        // SAFETY: passing through.
        unsafe { real::pselect(nfds, rd, wr, ex, ts, sigmask) }
    })
}
