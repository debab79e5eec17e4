//! Process exit: the kernel would close every socket of an exiting process,
//! so we close this process's references to stack sockets the same way.
//! A connection whose last reference goes sends its queued data and FIN
//! (graceful close, or RST under SO_LINGER 0), and the stack carries on with
//! it after we are gone: the peer's process (on the loop NIC every peer is
//! attached to the same arena) drives its retransmissions and close. A
//! private stack's arena file is removed when its creator exits.

use rbypass_stack::clock::now_ns;

extern "C" fn at_exit() {
    let Some(st) = crate::state::existing() else {
        return;
    };
    let _ = std::panic::catch_unwind(|| {
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
        c.poll(now);
        drop(c);
        let h = st.stack.header();
        if h.name[0] == 0 && h.creator_pid == std::process::id() {
            let _ = std::fs::remove_file(st.stack.arena().path());
        }
    });
}

/// Registers the exit handler (once per process; a fork child inherits it).
pub fn register() {
    // SAFETY: a plain C-ABI function with no arguments.
    unsafe { libc::atexit(at_exit) };
}
