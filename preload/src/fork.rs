//! fork: the stack lock is held across fork, so no fd or reference changes
//! while the child's references are counted; the child gets its own
//! progress thread. The arena mapping is shared, so sockets keep working in
//! both processes.
//!
//! The lock word lives in the shared arena: only the parent releases it
//! after fork. (The child releasing it too, as it once did, could free the
//! lock under another holder: two processes in the stack at once.)

extern "C" fn prepare() {
    if let Some(st) = crate::state::existing() {
        // Every fd the child inherits is one more reference to its socket.
        // Counted here, before fork returns in the parent, so a parent that
        // closes its copy at once (a forking server) never drops the count
        // to zero under the child. The lock stays held across fork (released
        // by the handlers below), so no fd changes meanwhile.
        let mut c = st.stack.lock();
        st.for_each(|_, e| {
            let _ = c.fd_ref(e.id, crate::state::process_slot());
        });
        std::mem::forget(c);
    }
}

/// The parent, after fork: releases the lock taken in `prepare`.
extern "C" fn release() {
    if let Some(st) = crate::state::existing() {
        while st.stack.header().lock.unlock_or_take_work() != 0 {}
    }
}

/// The child, after fork: the lock is the parent's to release (shared word).
extern "C" fn child() {
    crate::exit::set_owner();
    if let Some(st) = crate::state::existing() {
        let parent = crate::state::process_slot();
        crate::state::join_process_table(&st.stack);
        crate::state::recount_fork_thread(st);
        st.publish_nic_fds();
        // The parent counted our inherited fds under its entry before fork:
        // they are ours, so a kill of either process releases only its own.
        if let (Some(from), Some(to)) = (parent, crate::state::process_slot()) {
            let mut c = st.stack.lock();
            st.for_each(|_, e| c.fd_ref_move(e.id, from, to));
        }
    }
    crate::progress::start();
}

/// Registers the handlers (once).
pub fn register() {
    // SAFETY: plain function pointers with the C ABI.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(child)) };
}

/// `vfork(2)` becomes fork, as Onload does by default (EF_VFORK_MODE=1): a
/// vfork child would share the fd table and the stack references of its
/// parent, and run no fork handlers. POSIX allows vfork to be fork.
#[no_mangle]
pub extern "C" fn vfork() -> libc::pid_t {
    // SAFETY: fork has no preconditions; the handlers above run.
    unsafe { libc::fork() }
}
