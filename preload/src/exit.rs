//! Process exit: the kernel would close every socket of an exiting process,
//! so we close this process's references to stack sockets the same way.
//! A connection whose last reference goes sends its queued data and FIN
//! (graceful close, or RST under SO_LINGER 0), and the stack carries on with
//! it after we are gone: the peer's process (on the loop NIC every peer is
//! attached to the same arena) drives its retransmissions and close. A
//! private stack's arena file is removed when its creator exits.

use std::sync::atomic::{AtomicU32, Ordering};

use rbypass_stack::clock::now_ns;
use rbypass_stack::StackGuard;

extern "C" fn at_exit() {
    let Some(st) = crate::state::existing() else {
        return;
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The progress thread stops touching the stack, and taking the lock
        // waits for whoever is inside it: nothing of this process is then
        // in a critical section when the process ends.
        crate::progress::EXITING.store(true, Ordering::Release);
        let mut c = st.stack.lock();
        let now = now_ns();
        st.for_each(|fd, _| {
            if let Some((e, last)) = st.take(&mut c, fd) {
                if last {
                    let _ = if e.tcp {
                        c.tcp_close(e.id, now)
                    } else {
                        c.udp_close(e.id)
                    };
                }
            }
        });
        st.pump(&mut c, now);
        let lingering = c.tcp_lingering();
        crate::rlog!(Debug, "exit: {lingering} connections still delivering");
        crate::state::leave_process_table(&st.stack);
        let others = others_use(st);
        if st.on_device() && lingering > 0 && !others {
            // Fork with the lock held: the child carries on inside this very
            // critical section and releases the lock; this process ends
            // holding nothing.
            if let Some(c) = linger(st, c) {
                std::mem::forget(c);
            }
        } else {
            drop(c);
        }
        let h = st.stack.header();
        if h.name[0] == 0 && h.creator_pid == std::process::id() {
            let _ = std::fs::remove_file(st.stack.arena().path());
        } else if h.name[0] != 0 && !others && (lingering == 0 || !st.on_device()) {
            // The last process of a named stack: the stack goes with it (a
            // process attaching meanwhile sees the file gone and starts a
            // new one). On the loopback, lingering connections have no
            // peer process left to carry them either.
            remove_named(st);
        }
    }));
}

/// How long a linger process drives connections at most.
const LINGER_MAX_NS: u64 = 120_000_000_000;

/// The kernel keeps an exiting process's connections going (retransmits,
/// FIN) after it is gone; on a device only this process can move the
/// stack's frames, so a child of it carries on: it keeps only the device's
/// fd (so it holds no other file, port or pipe of the app), drives the
/// stack until no closed connection is still delivering, and exits. On the
/// loopback the peer (attached to the same arena) drives it instead.
///
/// Called with the stack lock held (`c`); the child takes the critical
/// section over. Returns the guard to the parent, which must forget it
/// (the child releases the lock), or None if the fork failed (released).
fn linger<'a>(st: &'a crate::state::State, mut c: StackGuard<'a>) -> Option<StackGuard<'a>> {
    let Some(fd) = st.nic_fd() else {
        return Some(c);
    };
    // A raw fork: no fork handlers and no allocation in the child.
    // SAFETY: the child only makes syscalls and stack calls below.
    let pid = unsafe { libc::syscall(libc::SYS_fork) };
    if pid != 0 {
        // The parent (or a failed fork: then the lock is ours to release).
        if pid > 0 {
            return Some(c);
        }
        drop(c);
        return None;
    }
    // The lock is ours now, not the exiting parent's.
    st.stack.header().lock.adopt_after_raw_fork();
    // SAFETY: closing every fd but the device's (sorted), naming the process.
    unsafe {
        let mut from: u32 = 0;
        for &k in st.nic_keep_fds() {
            if k < 0 {
                continue;
            }
            if k as u32 > from {
                libc::syscall(libc::SYS_close_range, from, (k - 1) as u32, 0u32);
            }
            from = k as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);
        libc::prctl(libc::PR_SET_NAME, c"rbypass-linger".as_ptr());
    }
    // A member like any other while it drives the stack (so a process
    // joining meanwhile takes the device from it).
    crate::state::join_process_table(&st.stack);
    st.publish_nic_fds();
    let start = now_ns();
    loop {
        let now = now_ns();
        st.pump(&mut c, now);
        let left = c.tcp_lingering();
        drop(c);
        if left == 0 || now - start > LINGER_MAX_NS {
            break;
        }
        crate::progress::wait_readable(fd, 10);
        c = st.stack.lock();
    }
    crate::state::leave_process_table(&st.stack);
    if st.stack.header().name[0] != 0 && !others_use(st) {
        remove_named(st);
    }
    loop {
        // SAFETY: ends the linger process.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
}

/// Whether another process still uses the stack: a live member, or its
/// creator if that is not us (a program that made the stack with the
/// stack crate and never entered the process table).
fn others_use(st: &crate::state::State) -> bool {
    let h = st.stack.header();
    h.procs.live_count() > 0
        || (h.creator_pid != std::process::id() && rbypass_stack::procs::is_alive(h.creator_pid, 0))
}

/// Removes a named stack's arena file whose last process is leaving,
/// unless RBYPASS_KEEP_STACK=1 keeps it for a look with stackdump
/// afterwards (`rbypass stackdump gc` removes it then).
fn remove_named(st: &crate::state::State) {
    // SAFETY: getenv with a NUL-terminated name; no allocation (exit paths).
    let keep = unsafe { libc::getenv(c"RBYPASS_KEEP_STACK".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    if !keep.is_null() && unsafe { *keep } == b'1' as libc::c_char {
        return;
    }
    if st.stack.arena().unlink_if_same() {
        crate::rlog!(
            Debug,
            "exit: the last process of stack {} removed it",
            st.stack.arena().path().display()
        );
    }
}

/// The process whose fd table this is (set at start and in a fork child).
pub static OWNER: AtomicU32 = AtomicU32::new(0);

/// Records the calling process as the owner of the fd table.
pub fn set_owner() {
    // SAFETY: getpid has no preconditions.
    OWNER.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
}

/// Registers the exit handler (once per process; a fork child inherits it).
pub fn register() {
    set_owner();
    // SAFETY: a plain C-ABI function with no arguments.
    unsafe { libc::atexit(at_exit) };
}

/// `_exit(2)`: the process ends without atexit handlers, but its fds still
/// close, so its references to stack sockets go as at exit (a fork child
/// that ends with `_exit` would otherwise keep its parent's connections open).
#[no_mangle]
pub extern "C" fn _exit(status: libc::c_int) -> ! {
    // A vfork child shares our memory (the fd table too) until it execs or
    // exits: its fds are the parent's to count, not its own.
    let owner = OWNER.load(Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    if owner == me {
        at_exit();
    }
    loop {
        // SAFETY: ends the process, as glibc's _exit does.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

/// `_Exit(3)`: the same as `_exit`.
#[no_mangle]
pub extern "C" fn _Exit(status: libc::c_int) -> ! {
    _exit(status)
}
