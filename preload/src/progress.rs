//! Keeps the stack moving when no application thread is inside a socket
//! call: a background thread polls it (timers, looped-back frames) about
//! every millisecond, never waiting for the lock.

use rbypass_stack::clock::now_ns;
use rbypass_stack::lock::WORK_POLL;

/// Starts the progress thread (once per process, and again in a fork child).
pub fn start() {
    let _ = std::thread::Builder::new()
        .name("rbypass-progress".into())
        .spawn(|| loop {
            if let Some(st) = crate::state::existing() {
                if let Some(mut c) = st.stack.try_lock_or_post(WORK_POLL) {
                    c.poll(now_ns());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
}
