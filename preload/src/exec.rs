//! exec: stack sockets survive exec like kernel sockets do.
//!
//! Before an exec call we write the fds that stay open (not close-on-exec)
//! and the sockets they map to into `/dev/shm/rbypass-exec-<pid>`, with the
//! arena's path and each kernel socket's inode; close-on-exec fds give up
//! their references (taken back if exec fails). The new image's library
//! reads the file at load time (same pid), attaches to the same arena and
//! adopts every fd that is still the same kernel socket. The file is written
//! with raw system calls only and no allocation, since exec may be called
//! in a vfork child.

use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_char, c_int};

use crate::real;
use crate::state::{self, Entry};

/// Where the handoff of process `pid` lives.
fn handoff_path(pid: u32, out: &mut [u8; 64]) -> usize {
    let mut w = Writer { buf: out, len: 0 };
    w.put(b"/dev/shm/rbypass-exec-");
    w.num(u64::from(pid));
    w.put(b"\0");
    w.len
}

struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn num(&mut self, mut v: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&d[i..]);
    }
}

pub(crate) fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: a zeroed stat buffer for fstat to fill.
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid buffer.
    if unsafe { libc::fstat(fd, &mut s) } != 0 || s.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    Some(s.st_ino)
}

pub(crate) fn cloexec(fd: c_int) -> bool {
    // SAFETY: F_GETFD has no argument.
    unsafe { real::fcntl(fd, libc::F_GETFD, 0) & libc::FD_CLOEXEC != 0 }
}

/// Writes the handoff; returns whether one was written.
fn prepare() -> bool {
    let Some(st) = state::existing() else {
        return false;
    };
    let mut any = false;
    st.for_each(|_, _| any = true);
    if !any {
        return false;
    }
    let mut path = [0u8; 64];
    handoff_path(std::process::id(), &mut path);
    // SAFETY: a NUL-terminated path.
    let f = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
    };
    if f < 0 {
        return false;
    }
    let mut line = [0u8; 4200];
    let mut w = Writer {
        buf: &mut line,
        len: 0,
    };
    w.put(st.stack.arena().path().as_os_str().as_encoded_bytes());
    w.put(b"\n");
    // SAFETY: our buffer.
    let n = w.len;
    // SAFETY: our buffer.
    unsafe { libc::write(f, line.as_ptr().cast(), n) };
    // A vfork child shares the parent's memory and fd table: the parent's
    // references stay, and what the exec'd program inherits is counted anew.
    // SAFETY: getpid has no preconditions.
    let vfork_child = crate::exit::OWNER.load(std::sync::atomic::Ordering::Relaxed)
        != unsafe { libc::getpid() } as u32;
    let mut c = st.stack.lock();
    st.for_each(|fd, e| {
        if vfork_child {
            if cloexec(fd) {
                return;
            }
            let _ = c.fd_ref(e.id, crate::state::process_slot());
        } else if cloexec(fd) {
            // The fd closes with the exec: drop its reference now (closing
            // the socket if it was the last), as the kernel will.
            if let Some((e, true)) = st.take(&mut c, fd) {
                let now = rbypass_stack::clock::now_ns();
                let _ = if e.tcp {
                    c.tcp_close(e.id, now)
                } else {
                    c.udp_close(e.id)
                };
            }
            return;
        }
        let Some(ino) = inode(fd) else { return };
        let mut b = [0u8; 80];
        let mut w = Writer {
            buf: &mut b,
            len: 0,
        };
        w.num(fd as u64);
        w.put(b" ");
        w.num(e.pack());
        w.put(b" ");
        w.num(ino);
        w.put(b"\n");
        let n = w.len;
        // SAFETY: our buffer.
        unsafe { libc::write(f, b.as_ptr().cast(), n) };
    });
    drop(c);
    // SAFETY: our fd.
    unsafe { libc::close(f) };
    true
}

/// Exec failed: the handoff is not needed (close-on-exec fds stay closed in
/// the stack; their kernel sockets remain and fall back to the kernel).
fn abandon() {
    let mut path = [0u8; 64];
    handoff_path(std::process::id(), &mut path);
    // SAFETY: a NUL-terminated path.
    unsafe { libc::unlink(path.as_ptr().cast()) };
}

/// What the previous image of this process handed over.
pub struct Handoff {
    pub arena: std::path::PathBuf,
    pub fds: Vec<(c_int, Entry)>,
}

static CHECKED: AtomicBool = AtomicBool::new(false);

/// Reads and removes this process's handoff, if the previous image left one.
pub fn take_handoff() -> Option<Handoff> {
    if CHECKED.swap(true, Ordering::AcqRel) {
        return None;
    }
    let path = format!("/dev/shm/rbypass-exec-{}", std::process::id());
    // SAFETY: getppid has no preconditions.
    let spawn = crate::spawn::handoff_path(unsafe { libc::getppid() } as u32);
    let (text, path) = match std::fs::read_to_string(&path) {
        Ok(t) => (t, path),
        // Spawned by an accelerated parent (posix_spawn).
        Err(_) => (std::fs::read_to_string(&spawn).ok()?, spawn),
    };
    // Removing it tells a spawning parent that the sockets were taken.
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();
    let arena = std::path::PathBuf::from(lines.next()?);
    let mut fds = Vec::new();
    for l in lines {
        let mut it = l.split(' ').filter_map(|x| x.parse::<u64>().ok());
        let (Some(fd), Some(packed), Some(ino)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let fd = fd as c_int;
        match (Entry::unpack(packed), inode(fd)) {
            (Some(e), Some(i)) if i == ino => fds.push((fd, e)),
            _ => {}
        }
    }
    Some(Handoff { arena, fds })
}

/// The library's load-time hook: a process image started by exec from an
/// accelerated process takes its sockets back before main runs.
extern "C" fn on_load() {
    let _ = std::panic::catch_unwind(|| {
        let mut path = [0u8; 64];
        handoff_path(std::process::id(), &mut path);
        // SAFETY: a NUL-terminated path.
        let exec = unsafe { libc::access(path.as_ptr().cast(), libc::F_OK) } == 0;
        // SAFETY: getppid has no preconditions.
        let spawn = std::path::Path::new(&crate::spawn::handoff_path(
            unsafe { libc::getppid() } as u32
        ))
        .exists();
        if exec || spawn {
            let _ = state::get();
        }
    });
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

fn around_exec(f: impl FnOnce() -> c_int) -> c_int {
    let handed = prepare();
    let r = f();
    if handed {
        // SAFETY: reading errno (exec returned, so it failed).
        let err = unsafe { *libc::__errno_location() };
        abandon();
        // SAFETY: restoring errno for the caller.
        unsafe { *libc::__errno_location() = err };
    }
    r
}

/// `execve(2)`.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: passing the caller's arguments through.
    around_exec(|| unsafe { real::execve(path, argv, envp) })
}

/// `execv(3)`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: passing through.
    around_exec(|| unsafe { real::execv(path, argv) })
}

/// `execvp(3)`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: passing through.
    around_exec(|| unsafe { real::execvp(file, argv) })
}

/// `execvpe(3)`.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: passing through.
    around_exec(|| unsafe { real::execvpe(file, argv, envp) })
}
