//! Keeps the stack moving when no application thread is inside a socket
//! call, and wakes threads asleep in the kernel (epoll_wait) when the stack
//! has news for them.
//!
//! A background thread polls the stack (timers, looped-back frames) about
//! every millisecond, never waiting for the lock. While some thread of this
//! process sleeps in a kernel wait that also covers stack sockets, the thread
//! instead sleeps on the arena's wake futex and, when the stack's wake
//! sequence moves past what the sleeper saw, writes the process's wake
//! eventfd, which every such kernel wait set contains (edge-triggered).

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use rbypass_stack::clock::now_ns;
use rbypass_stack::lock::WORK_POLL;

/// The process is exiting: the progress thread no longer takes the lock.
pub static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Threads of this process asleep in a kernel wait that covers stack sockets.
static KERNEL_SLEEPERS: AtomicU32 = AtomicU32::new(0);
/// The stack wake sequence the sleepers last saw (or the last one signalled).
static KICK_FROM: AtomicU32 = AtomicU32::new(0);
/// When an app thread of this process last polled the stack (ns; 0: it
/// is going to sleep).
static LAST_APP_POLL: AtomicU64 = AtomicU64::new(0);
/// 1 while the progress thread is parked because app threads poll.
static PARKED: AtomicU32 = AtomicU32::new(0);
/// An app thread that polled this recently is polling the device itself.
const APP_ACTIVE_NS: u64 = 200_000;

/// An app thread polled the stack (and its device) at `now`.
pub fn app_polled(now: u64) {
    LAST_APP_POLL.store(now, Ordering::Relaxed);
}

/// An app thread is about to sleep: the progress thread must watch the
/// device again, at once.
pub fn app_will_sleep() {
    LAST_APP_POLL.store(0, Ordering::SeqCst);
    if PARKED.load(Ordering::SeqCst) == 1 {
        PARKED.store(0, Ordering::SeqCst);
        futex(&PARKED, libc::FUTEX_WAKE, 1, 0);
    }
}

/// The process's wake eventfd (-1 until created).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The wake eventfd, created on first use.
pub fn wake_fd() -> libc::c_int {
    let fd = WAKE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return fd;
    }
    // SAFETY: creating an eventfd has no preconditions.
    let low = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if low < 0 {
        return -1;
    }
    // Keep it out of the low numbers the app's next open() would get (an
    // app may expect a number it just closed to stay invalid).
    // SAFETY: duplicating our own fd, then closing the low copy.
    let new = unsafe {
        let high = libc::fcntl(low, libc::F_DUPFD_CLOEXEC, 900);
        if high >= 0 {
            crate::real::close(low);
            high
        } else {
            low
        }
    };
    match WAKE_FD.compare_exchange(-1, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => new,
        Err(other) => {
            // SAFETY: our own fd, never published.
            unsafe { crate::real::close(new) };
            other
        }
    }
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid, aligned futex word of this process and a valid timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            &ts as *const libc::timespec,
        );
    }
}

/// Called by a thread about to sleep in the kernel: `seen` is the stack's
/// wake sequence read before it last found nothing ready.
pub fn enter_kernel_wait(seen: u32) {
    KICK_FROM.store(seen, Ordering::Release);
    KERNEL_SLEEPERS.fetch_add(1, Ordering::AcqRel);
    futex(&KERNEL_SLEEPERS, libc::FUTEX_WAKE, 1, 0);
}

/// Called when the kernel wait returned.
pub fn leave_kernel_wait() {
    KERNEL_SLEEPERS.fetch_sub(1, Ordering::AcqRel);
}

fn signal_wake() {
    let fd = WAKE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        let r = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        if r < 0 {
            // The counter is full: drain it (edge-triggered waiters only need the write).
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes from our eventfd.
            unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
            // SAFETY: as above.
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
    }
}

/// Waits up to `ms` for `fd` to turn readable.
pub fn wait_readable(fd: libc::c_int, ms: libc::c_int) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { crate::real::poll(&mut p, 1, ms) };
}

/// Starts the progress thread (once per process, and again in a fork child).
pub fn start() {
    let _ = std::thread::Builder::new()
        .name("rbypass-progress".into())
        .spawn(|| {
            // Signals go to the app's threads, never to this one (it may hold the stack lock).
            // SAFETY: a full signal set for this thread's mask.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            progress_loop()
        });
}

/// How often the progress thread looks for members of the stack that died
/// without closing their sockets (each look reads /proc once per member).
const REAP_EVERY_NS: u64 = 200_000_000;

fn progress_loop() -> ! {
    crate::state::not_an_app_thread();
    let mut next_reap = 0;
    loop {
        let Some(st) = crate::state::existing() else {
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        };
        if EXITING.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        let app_active =
            now_ns().saturating_sub(LAST_APP_POLL.load(Ordering::Relaxed)) < APP_ACTIVE_NS;
        if !app_active {
            if let Some(mut c) = st.stack.try_lock_or_post(WORK_POLL) {
                st.pump_background(&mut c, now_ns());
            }
        }
        let now = now_ns();
        if now >= next_reap {
            // Also while app threads spin: they take the lock often, but
            // never look for dead members.
            if let Some(mut c) = st.stack.try_lock_or_post(0) {
                next_reap = now + REAP_EVERY_NS;
                c.reap_dead_processes(now);
            }
        }
        let sleepers = KERNEL_SLEEPERS.load(Ordering::Acquire);
        let cur = st.stack.wake_seq();
        if sleepers > 0 && cur != KICK_FROM.load(Ordering::Acquire) {
            KICK_FROM.store(cur, Ordering::Release);
            signal_wake();
        }
        if let Some(fd) = st.nic_fd() {
            // A device stack: wake when frames arrive (or after 1 ms),
            // unless app threads are polling the device themselves and none
            // sleeps in the kernel (those need this thread's wake): then
            // waking for every frame would only take their CPU and their
            // lock. Parked, it looks again every 5 ms (each wakeup on a
            // spinning app's core shows in its p99.9), and a thread that
            // goes to sleep unparks it (see `app_will_sleep`).
            PARKED.store(1, Ordering::SeqCst);
            let last = LAST_APP_POLL.load(Ordering::SeqCst);
            if sleepers == 0 && now_ns().saturating_sub(last) < APP_ACTIVE_NS {
                futex(&PARKED, libc::FUTEX_WAIT, 1, 5_000_000);
                PARKED.store(0, Ordering::SeqCst);
            } else {
                PARKED.store(0, Ordering::SeqCst);
                wait_readable(fd, 1);
            }
        } else if sleepers == 0 {
            futex(&KERNEL_SLEEPERS, libc::FUTEX_WAIT, 0, 1_000_000);
        } else {
            st.stack.sleep_for_wake(cur, 1_000_000);
        }
    }
}
