//! epoll over any mix of stack sockets and kernel fds.
//!
//! The application's epoll fd stays a real kernel epoll holding its kernel
//! fds. Stack sockets added to it are kept here, in a per-epoll interest
//! list of this process; `epoll_wait` first reports the stack sockets that
//! are ready (no syscall when some are), then collects kernel events without
//! waiting, then spins or sleeps in the kernel epoll, which also holds the
//! process's wake eventfd (edge-triggered) so stack events end the sleep
//! (see [`crate::progress`]). Listening TCP and UDP sockets are also added
//! to the kernel epoll, for the traffic of unaccelerated local peers that
//! arrives on their kernel sockets.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use libc::{c_int, epoll_event};
use rbypass_stack::clock::now_ns;
use rbypass_stack::tcp::tcb::TcpState;
use rbypass_stack::{Core, SocketId};

use crate::state::{self, Entry, State, MAX_FDS};
use crate::{fail, real};

/// The `data` of the wake eventfd's registration (never shown to the app).
const WAKE_MARK: u64 = 0x7262_7970_6173_7377; // "rbypassw"

/// One stack socket in an epoll set.
#[derive(Clone, Copy)]
struct Item {
    fd: c_int,
    id: SocketId,
    events: u32,
    data: u64,
    /// EPOLLONESHOT fired: silent until EPOLL_CTL_MOD.
    disabled: bool,
    /// Also registered in the kernel epoll (listeners, UDP).
    in_kernel: bool,
    /// Edge-triggered bookkeeping: the mask and event sequence last seen.
    last_mask: u32,
    last_seq: u64,
    /// An epoll fd nested in this one (not a stack socket): it shows
    /// EPOLLIN while a stack socket in its own set is ready.
    nested: bool,
}

/// The stack sockets of one epoll fd.
struct EpollSet {
    items: Mutex<Vec<Item>>,
    /// Stack sockets or nested sets were added (epoll_wait takes our path
    /// from then on; an epoll of kernel fds only stays the kernel's).
    used: std::sync::atomic::AtomicBool,
    /// Waits that found stack sockets ready, to look at the kernel fds on
    /// one in [`KERNEL_EVERY`] of them.
    ready_waits: std::sync::atomic::AtomicU32,
    /// When the kernel fds were last looked at without waiting (ns).
    kernel_looked: std::sync::atomic::AtomicU64,
}

/// When stack sockets are ready, epoll_wait makes no syscall, except on one
/// call in this many, so kernel fds in the same set are never starved.
const KERNEL_EVERY: u32 = 32;

/// While nothing is ready, a wait that spins (ours, or the app's own loop
/// of zero-timeout calls) looks at the kernel fds at most this often, so a
/// spinning app's poll costs no syscall; a kernel fd's readiness is so
/// reported up to this late (Onload's EF_POLL_FAST_USEC does the same).
const KERNEL_LOOK_NS: u64 = 20_000;

static SETS: AtomicPtr<AtomicPtr<EpollSet>> = AtomicPtr::new(std::ptr::null_mut());

fn sets() -> Option<&'static [AtomicPtr<EpollSet>]> {
    let p = SETS.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set once below to a never-unmapped table of MAX_FDS entries.
        return Some(unsafe { std::slice::from_raw_parts(p, MAX_FDS) });
    }
    let t = state::mmap_zeroed::<AtomicPtr<EpollSet>>(MAX_FDS)?;
    let p = t.as_ptr() as *mut AtomicPtr<EpollSet>;
    match SETS.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(t),
        // SAFETY: another thread installed its table first; ours leaks (once).
        Err(other) => Some(unsafe { std::slice::from_raw_parts(other, MAX_FDS) }),
    }
}

fn set_of(epfd: c_int) -> Option<&'static EpollSet> {
    let i = usize::try_from(epfd).ok()?;
    let p = sets()?.get(i)?.load(Ordering::Acquire);
    // SAFETY: a leaked Box, freed only by `forget_epoll` when the fd closes.
    (!p.is_null()).then(|| unsafe { &*p })
}

fn set_or_create(epfd: c_int) -> Option<&'static EpollSet> {
    if let Some(s) = set_of(epfd) {
        return Some(s);
    }
    let slot = sets()?.get(usize::try_from(epfd).ok()?)?;
    let new = Box::into_raw(Box::new(EpollSet {
        items: Mutex::new(Vec::new()),
        used: std::sync::atomic::AtomicBool::new(false),
        ready_waits: std::sync::atomic::AtomicU32::new(0),
        kernel_looked: std::sync::atomic::AtomicU64::new(0),
    }));
    match slot.compare_exchange(
        std::ptr::null_mut(),
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: just installed.
        Ok(_) => Some(unsafe { &*new }),
        Err(other) => {
            // SAFETY: ours was never published.
            drop(unsafe { Box::from_raw(new) });
            // SAFETY: as in set_of.
            Some(unsafe { &*other })
        }
    }
}

/// Forgets the interest list of a closed epoll fd (called from close).
pub fn forget_epoll(fd: c_int) {
    let Some(slot) = usize::try_from(fd).ok().and_then(|i| sets()?.get(i)) else {
        return;
    };
    let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // Another thread may still be inside epoll_wait on it (a bug in the
        // app); leaking the small set is safer than freeing it under them.
        // SAFETY: we own it now; clear its list so nothing is reported.
        if let Ok(mut v) = unsafe { &*p }.items.lock() {
            v.clear();
        }
    }
}

/// Notes a new epoll fd, so that nesting it in another is seen even if its
/// stack sockets come later.
pub fn created(epfd: c_int) {
    if epfd >= 0 {
        let _ = set_or_create(epfd);
    }
}

/// Whether `fd` has a stack interest list (a fast check for close).
pub fn is_epoll(fd: c_int) -> bool {
    set_of(fd).is_some()
}

fn ctl_kernel(epfd: c_int, op: c_int, fd: c_int, events: u32, data: u64) -> c_int {
    let mut ev = epoll_event { events, u64: data };
    // SAFETY: a valid event.
    unsafe { real::epoll_ctl(epfd, op, fd, &mut ev) }
}

/// The epoll bits a stack socket shows now.
fn ready_mask(c: &Core<'_>, e: Entry) -> u32 {
    let mut m = 0u32;
    if e.tcp {
        m = c.tcp_poll(e.id);
    } else {
        if c.udp_readable(e.id) {
            m |= libc::EPOLLIN as u32 | libc::EPOLLRDNORM as u32;
        }
        m |= libc::EPOLLOUT as u32 | libc::EPOLLWRNORM as u32;
    }
    m
}

/// `epoll_ctl` for a stack socket.
pub fn ctl(st: &State, epfd: c_int, op: c_int, fd: c_int, e: Entry, ev: *mut epoll_event) -> c_int {
    // The wake eventfd joins every epoll set that holds stack sockets; this
    // also checks that epfd is an epoll fd.
    let wfd = crate::progress::wake_fd();
    if wfd >= 0 {
        let r = ctl_kernel(
            epfd,
            libc::EPOLL_CTL_ADD,
            wfd,
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            WAKE_MARK,
        );
        // SAFETY: reading errno.
        if r < 0 && unsafe { *libc::__errno_location() } != libc::EEXIST {
            return -1;
        }
    }
    let (events, data) = if ev.is_null() {
        (0, 0)
    } else {
        // SAFETY: the caller's event (read unaligned: epoll_event is packed on x86-64).
        let v = unsafe { std::ptr::read_unaligned(ev) };
        (v.events, v.u64)
    };
    if op != libc::EPOLL_CTL_DEL && ev.is_null() {
        return fail(libc::EFAULT);
    }
    let Some(set) = set_or_create(epfd) else {
        return fail(libc::ENOMEM);
    };
    set.used.store(true, Ordering::Release);
    let Ok(mut items) = set.items.lock() else {
        return fail(libc::EIO);
    };
    // Stale entries for a reused fd number are dropped here.
    items.retain(|it| it.fd != fd || it.id == e.id);
    let pos = items.iter().position(|it| it.fd == fd);
    let kernel_too = {
        let c = st.stack.lock();
        !e.tcp || matches!(c.tcp_state(e.id), Ok(TcpState::Listen))
    };
    let kernel_events = events & !(libc::EPOLLOUT as u32 | libc::EPOLLWRNORM as u32);
    match op {
        libc::EPOLL_CTL_ADD => {
            if pos.is_some() {
                return fail(libc::EEXIST);
            }
            let in_kernel =
                kernel_too && ctl_kernel(epfd, libc::EPOLL_CTL_ADD, fd, kernel_events, data) == 0;
            items.push(Item {
                fd,
                id: e.id,
                events,
                data,
                disabled: false,
                in_kernel,
                last_mask: 0,
                last_seq: 0,
                nested: false,
            });
            0
        }
        libc::EPOLL_CTL_MOD => {
            let Some(p) = pos else {
                return fail(libc::ENOENT);
            };
            // As Linux: EPOLLEXCLUSIVE is for ADD only, and sticks.
            if events & libc::EPOLLEXCLUSIVE as u32 != 0
                || items[p].events & libc::EPOLLEXCLUSIVE as u32 != 0
            {
                return fail(libc::EINVAL);
            }
            let it = &mut items[p];
            it.events = events;
            it.data = data;
            it.disabled = false;
            it.last_mask = 0;
            if it.in_kernel {
                ctl_kernel(epfd, libc::EPOLL_CTL_MOD, fd, kernel_events, data);
            } else if kernel_too {
                it.in_kernel = ctl_kernel(epfd, libc::EPOLL_CTL_ADD, fd, kernel_events, data) == 0;
            }
            0
        }
        libc::EPOLL_CTL_DEL => {
            let Some(p) = pos else {
                return fail(libc::ENOENT);
            };
            let it = items.remove(p);
            if it.in_kernel {
                ctl_kernel(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0);
            }
            0
        }
        _ => fail(libc::EINVAL),
    }
}

/// Whether a stack socket of epoll set `epfd` (or of a set nested in it)
/// would be reported now: what an outer epoll sees of an inner one.
fn nested_ready(st: &State, c: &Core<'_>, epfd: c_int, depth: u32) -> bool {
    // Linux refuses nesting deeper than 5 (and loops) at EPOLL_CTL_ADD.
    if depth > 5 {
        return false;
    }
    let Some(set) = set_of(epfd) else {
        return false;
    };
    let Ok(items) = set.items.try_lock() else {
        // Another thread is harvesting it: let the kernel side decide.
        return false;
    };
    let always = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    items.iter().filter(|it| !it.disabled).any(|it| {
        if it.nested {
            return nested_ready(st, c, it.fd, depth + 1);
        }
        st.entry(it.fd)
            .filter(|e| e.id == it.id)
            .is_some_and(|e| ready_mask(c, e) & (it.events | always) != 0)
    })
}

/// `epoll_ctl` of an epoll fd (one with stack sockets) into another: the
/// kernel nests it as usual (and checks loops and depth); the outer set
/// also notes it, to report the inner stack sockets' readiness.
pub fn ctl_nested(st: &State, epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    let _ = st;
    // SAFETY: passing the caller's arguments through.
    let r = unsafe { real::epoll_ctl(epfd, op, fd, ev) };
    if r < 0 {
        return r;
    }
    let wfd = crate::progress::wake_fd();
    if wfd >= 0 {
        ctl_kernel(
            epfd,
            libc::EPOLL_CTL_ADD,
            wfd,
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            WAKE_MARK,
        );
    }
    let (events, data) = if ev.is_null() {
        (0, 0)
    } else {
        // SAFETY: the caller's event (read unaligned: epoll_event is packed on x86-64).
        let v = unsafe { std::ptr::read_unaligned(ev) };
        (v.events, v.u64)
    };
    let Some(set) = set_or_create(epfd) else {
        return r;
    };
    set.used.store(true, Ordering::Release);
    let Ok(mut items) = set.items.lock() else {
        return r;
    };
    let pos = items.iter().position(|it| it.nested && it.fd == fd);
    match (op, pos) {
        (libc::EPOLL_CTL_ADD, None) => items.push(Item {
            fd,
            id: SocketId::new(0, 0),
            events,
            data,
            disabled: false,
            in_kernel: true,
            last_mask: 0,
            last_seq: 0,
            nested: true,
        }),
        (libc::EPOLL_CTL_MOD, Some(p)) => {
            let it = &mut items[p];
            it.events = events;
            it.data = data;
            it.disabled = false;
            it.last_mask = 0;
        }
        (libc::EPOLL_CTL_DEL, Some(p)) => {
            items.remove(p);
        }
        _ => {}
    }
    r
}

/// Fills `out` with the ready stack sockets of `set`; returns how many.
fn harvest(st: &State, set: &EpollSet, out: &mut [epoll_event]) -> usize {
    let Ok(mut items) = set.items.lock() else {
        return 0;
    };
    if items.is_empty() || out.is_empty() {
        return 0;
    }
    let mut n = 0;
    let mut c = st.stack.lock();
    st.pump(&mut c, now_ns());
    items.retain(|it| {
        if it.nested {
            is_epoll(it.fd)
        } else {
            st.entry(it.fd).is_some_and(|e| e.id == it.id)
        }
    });
    for it in items.iter_mut() {
        if n == out.len() {
            break;
        }
        if it.disabled {
            continue;
        }
        let always = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        if it.nested {
            let in_ = (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
            let mask = if nested_ready(st, &c, it.fd, 0) {
                in_ & it.events
            } else {
                0
            };
            let report = if it.events & libc::EPOLLET as u32 != 0 {
                let rose = mask & !it.last_mask != 0;
                it.last_mask = mask;
                rose
            } else {
                mask != 0
            };
            if report {
                out[n] = epoll_event {
                    events: mask,
                    u64: it.data,
                };
                n += 1;
                if it.events & libc::EPOLLONESHOT as u32 != 0 {
                    it.disabled = true;
                }
            }
            continue;
        }
        let Some(e) = st.entry(it.fd) else { continue };
        let mask = ready_mask(&c, e) & (it.events | always);
        let report = if it.events & libc::EPOLLET as u32 != 0 {
            let seq = c.socket_event_seq(e.id);
            let rose = mask & !it.last_mask != 0;
            let more_in = mask & libc::EPOLLIN as u32 != 0 && seq != it.last_seq;
            it.last_mask = mask;
            it.last_seq = seq;
            (rose || more_in) && mask != 0
        } else {
            mask != 0
        };
        if report {
            out[n] = epoll_event {
                events: mask,
                u64: it.data,
            };
            n += 1;
            if it.events & libc::EPOLLONESHOT as u32 != 0 {
                it.disabled = true;
            }
        }
    }
    n
}

/// Drops the wake marker from kernel results and merges a kernel event for
/// a socket already reported from the stack; returns the new count.
fn merge_kernel(out: &mut [epoll_event], stack_n: usize, kernel_n: usize) -> usize {
    let mut n = stack_n;
    for k in stack_n..stack_n + kernel_n {
        let ev = out[k];
        let (data, events) = (ev.u64, ev.events);
        if data == WAKE_MARK {
            continue;
        }
        if let Some(d) = out[..stack_n].iter_mut().find(|d| {
            let dd = d.u64;
            dd == data
        }) {
            d.events |= events;
            continue;
        }
        out[n] = ev;
        n += 1;
    }
    n
}

fn errno() -> c_int {
    // SAFETY: reading errno.
    unsafe { *libc::__errno_location() }
}

/// `epoll_wait`/`epoll_pwait`/`epoll_pwait2` for an epoll fd holding stack
/// sockets. `timeout_ns`: None waits forever.
pub fn wait(
    st: &State,
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout_ns: Option<u64>,
    sigmask: *const libc::sigset_t,
) -> Option<c_int> {
    // Once stack sockets were added, the wake eventfd stays registered in
    // the kernel epoll, so even an emptied set goes through here (its
    // marker events are never shown to the app).
    let set = set_of(epfd).filter(|s| s.used.load(Ordering::Acquire))?;
    if max <= 0 || events.is_null() {
        return Some(fail(libc::EINVAL));
    }
    // SAFETY: the caller's array of `max` events.
    let out = unsafe { std::slice::from_raw_parts_mut(events, max as usize) };
    let start = now_ns();
    let mut last_yield = start;
    let deadline = timeout_ns.map(|t| start.saturating_add(t));
    loop {
        let seen = st.stack.wake_seq();
        let n = harvest(st, set, out);
        // Kernel fds, without waiting: when no stack socket is ready, unless
        // looked at in the last KERNEL_LOOK_NS; else one call in
        // KERNEL_EVERY (a ready stack socket costs no syscall).
        let look = if n == 0 {
            let now = now_ns();
            let due =
                now.saturating_sub(set.kernel_looked.load(Ordering::Relaxed)) >= KERNEL_LOOK_NS;
            if due {
                set.kernel_looked.store(now, Ordering::Relaxed);
            }
            due
        } else {
            set.ready_waits.fetch_add(1, Ordering::Relaxed) % KERNEL_EVERY == 0
        };
        let k = if look && n < out.len() {
            // SAFETY: the rest of the caller's array.
            unsafe {
                real::epoll_pwait(
                    epfd,
                    out[n..].as_mut_ptr(),
                    (out.len() - n) as c_int,
                    0,
                    std::ptr::null(),
                )
            }
        } else {
            0
        };
        let total = merge_kernel(out, n, k.max(0) as usize);
        if total > 0 {
            return Some(total as c_int);
        }
        if crate::signals::pending() {
            // A signal came while this thread was in the library: its
            // handler runs as the call returns; epoll_wait is never
            // restarted after a handler (EINTR, as Linux).
            return Some(fail(libc::EINTR));
        }
        let now = now_ns();
        if deadline.is_some_and(|d| now >= d) {
            return Some(0);
        }
        if st.keep_spinning(start, now, &mut last_yield) {
            continue;
        }
        // Sleep in the kernel epoll; the wake eventfd ends it on stack news.
        let ms = match deadline {
            None => -1,
            Some(d) => ((d - now).div_ceil(1_000_000)).min(i32::MAX as u64) as c_int,
        };
        crate::progress::enter_kernel_wait(seen);
        // SAFETY: the caller's array and signal mask.
        let r = unsafe { real::epoll_pwait(epfd, out.as_mut_ptr(), max, ms, sigmask) };
        let err = errno();
        crate::progress::leave_kernel_wait();
        if r < 0 {
            return Some(if err == libc::EINTR {
                fail(libc::EINTR)
            } else {
                fail(err)
            });
        }
        let total = merge_kernel(out, 0, r as usize);
        if total > 0 {
            return Some(total as c_int);
        }
    }
}
