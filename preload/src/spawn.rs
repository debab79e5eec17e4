//! posix_spawn: a spawned program gets the parent's stack sockets, as exec
//! gives them (see [`crate::exec`]).
//!
//! glibc's posix_spawn runs its own exec in the child, where no preload can
//! step in, so the parent hands over beforehand: it writes the fds that will
//! stay open (not close-on-exec), their sockets and kernel inodes into
//! `/dev/shm/rbypass-spawn-<parent pid>`, counts one more reference for
//! each, spawns, and waits (at most a second) for the child's library to
//! take the file at load time. A child that does not (a program without
//! the library) gives the references back. Spawns of one process are
//! serialised, so each file has one reader.

use std::sync::Mutex;

use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};

use crate::real;
use crate::state::{self, Entry};

static SPAWNING: Mutex<()> = Mutex::new(());

/// Where process `pid` leaves sockets for a program it spawns.
pub fn handoff_path(pid: u32) -> String {
    format!("/dev/shm/rbypass-spawn-{pid}")
}

/// How long a spawn waits for the child to take its sockets.
const WAIT_NS: u64 = 1_000_000_000;

type Spawn = unsafe fn(
    *mut pid_t,
    *const c_char,
    *const posix_spawn_file_actions_t,
    *const posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;

#[allow(clippy::too_many_arguments)]
fn spawn_with_handoff(
    real_spawn: Spawn,
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the caller's arguments, passed through.
    let pass = || unsafe { real_spawn(pid, path, fa, attr, argv, envp) };
    let Some(st) = state::existing() else {
        return pass();
    };
    let _one_at_a_time = SPAWNING.lock();
    let mut handed: Vec<(c_int, Entry, u64)> = Vec::new();
    st.for_each(|fd, e| {
        if !crate::exec::cloexec(fd) {
            if let Some(ino) = crate::exec::inode(fd) {
                handed.push((fd, e, ino));
            }
        }
    });
    if handed.is_empty() {
        return pass();
    }
    let file = handoff_path(std::process::id());
    let mut text = format!("{}\n", st.stack.arena().path().display());
    for (fd, e, ino) in &handed {
        text += &format!("{fd} {} {ino}\n", e.pack());
    }
    if std::fs::write(&file, text).is_err() {
        return pass();
    }
    {
        let mut c = st.stack.lock();
        for (_, e, _) in &handed {
            let _ = c.fd_ref(e.id, crate::state::process_slot());
        }
    }
    let r = pass();
    let start = rbypass_stack::clock::now_ns();
    let taken = r == 0
        && loop {
            if std::fs::metadata(&file).is_err() {
                break true;
            }
            if rbypass_stack::clock::now_ns() - start > WAIT_NS {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        };
    if !taken {
        let _ = std::fs::remove_file(&file);
        crate::rlog!(
            Debug,
            "posix_spawn: the child did not take {} sockets; their references go back",
            handed.len()
        );
        let mut c = st.stack.lock();
        let now = rbypass_stack::clock::now_ns();
        for (_, e, _) in &handed {
            if let Ok(0) = c.fd_unref(e.id, crate::state::process_slot()) {
                // The parent closed its copy meanwhile: the last reference.
                let _ = if e.tcp {
                    c.tcp_close(e.id, now)
                } else {
                    c.udp_close(e.id)
                };
            }
        }
    }
    r
}

/// `posix_spawn(3)`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    crate::guard_code(|| spawn_with_handoff(real::posix_spawn, pid, path, fa, attr, argv, envp))
}

/// `posix_spawnp(3)`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    crate::guard_code(|| spawn_with_handoff(real::posix_spawnp, pid, file, fa, attr, argv, envp))
}
