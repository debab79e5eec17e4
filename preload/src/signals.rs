//! Signals: an app handler that calls socket functions must never run while
//! its thread is inside the library (it could find the stack lock held by
//! the very thread it interrupted). As Onload does, we install our own
//! trampoline for every handler the app sets; a signal that arrives while
//! the thread is inside the library is recorded and its handler runs when
//! the library call ends (or at once in a blocking wait, which then returns
//! EINTR unless the handler has SA_RESTART, as Linux does).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_void, siginfo_t};

const NSIG: usize = 65;

/// The app's handler and flags per signal (0: none of ours installed).
static APP_HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
static APP_FLAGS: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];

thread_local! {
    /// Depth of library calls on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Signals deferred on this thread, as a bit set.
    static PENDING: Cell<u128> = const { Cell::new(0) };
    /// The siginfo of each deferred signal.
    static INFO: Cell<[u8; 128]> = const { Cell::new([0; 128]) };
}

/// Marks the thread as inside the library for the guard's duration.
pub struct InLib;

impl InLib {
    pub fn enter() -> InLib {
        DEPTH.with(|d| d.set(d.get() + 1));
        InLib
    }
}

impl Drop for InLib {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let v = d.get() - 1;
            d.set(v);
            v
        });
        if depth == 0 {
            run_pending();
        }
    }
}

/// Runs the handlers of deferred signals (outside any stack lock); returns
/// whether one of them should interrupt a blocking call (no SA_RESTART).
pub fn run_pending() -> bool {
    let mut interrupt = false;
    loop {
        let bits = PENDING.with(|p| p.replace(0));
        if bits == 0 {
            return interrupt;
        }
        for (sig, app_flags) in APP_FLAGS.iter().enumerate().skip(1) {
            if bits & (1u128 << sig) == 0 {
                continue;
            }
            let flags = app_flags.load(Ordering::Acquire) as c_int;
            if flags & libc::SA_RESTART == 0 {
                interrupt = true;
            }
            let mut info = INFO.with(|i| i.get());
            // Run the handler as if the library call were not there (nested
            // library calls from it go straight to work: depth is 0 here).
            call_app(sig as c_int, info.as_mut_ptr().cast(), std::ptr::null_mut());
        }
    }
}

/// Whether a deferred signal is waiting on this thread (for blocking loops).
pub fn pending() -> bool {
    PENDING.with(|p| p.get()) != 0
}

fn call_app(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let h = APP_HANDLER[sig as usize].load(Ordering::Acquire);
    if h == libc::SIG_DFL || h == libc::SIG_IGN || h == 0 {
        return;
    }
    let flags = APP_FLAGS[sig as usize].load(Ordering::Acquire) as c_int;
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the app registered this address as an sa_sigaction handler.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the app registered this address as an sa_handler.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

extern "C" fn trampoline(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let s = sig as usize;
    if s >= NSIG {
        return;
    }
    if DEPTH.with(|d| d.get()) > 0 {
        if !info.is_null() {
            let mut copy = [0u8; 128];
            // SAFETY: the kernel's siginfo is 128 bytes.
            unsafe { std::ptr::copy_nonoverlapping(info.cast::<u8>(), copy.as_mut_ptr(), 128) };
            INFO.with(|i| i.set(copy));
        }
        PENDING.with(|p| p.set(p.get() | (1u128 << s)));
        return;
    }
    call_app(sig, info, ctx);
}

/// `sigaction(2)`: app handlers are recorded and our trampoline installed
/// in their place; the app reads back its own handler.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let s = sig as usize;
    if !(1..NSIG).contains(&s) {
        // SAFETY: passing through (libc reports EINVAL).
        return unsafe { crate::real::sigaction(sig, act, old) };
    }
    let prev_handler = APP_HANDLER[s].load(Ordering::Acquire);
    let prev_flags = APP_FLAGS[s].load(Ordering::Acquire);
    let mut ours: libc::sigaction;
    let act_ptr = if act.is_null() {
        act
    } else {
        // SAFETY: the caller's sigaction.
        ours = unsafe { std::ptr::read(act) };
        let h = ours.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            APP_HANDLER[s].store(h, Ordering::Release);
            APP_FLAGS[s].store(ours.sa_flags as usize, Ordering::Release);
            ours.sa_sigaction = trampoline as *const () as usize;
            ours.sa_flags |= libc::SA_SIGINFO;
        } else {
            APP_HANDLER[s].store(0, Ordering::Release);
        }
        &ours as *const libc::sigaction
    };
    // SAFETY: valid pointers (the caller's or ours).
    let r = unsafe { crate::real::sigaction(sig, act_ptr, old) };
    if r == 0 && !old.is_null() {
        // SAFETY: the caller's buffer, just filled.
        let o = unsafe { &mut *old };
        if o.sa_sigaction == trampoline as *const () as usize {
            o.sa_sigaction = prev_handler;
            o.sa_flags = prev_flags as c_int;
        }
    }
    if r != 0 && !act.is_null() {
        APP_HANDLER[s].store(prev_handler, Ordering::Release);
        APP_FLAGS[s].store(prev_flags, Ordering::Release);
    }
    r
}

/// `signal(3)` (glibc's calls its internal sigaction, so it is caught here):
/// BSD semantics, SA_RESTART.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: zeroed sigaction structs are valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: valid pointers.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
