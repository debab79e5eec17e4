//! The process table: which processes use a stack, kept in the arena so
//! stackdump, a joining process and crash recovery all see it.
//!
//! Entries are claimed and released with atomics, never under the stack
//! lock, so a process killed at any moment leaves at worst an entry whose
//! pid is dead, which the next attach (or `stackdump gc`) reclaims. A pid is
//! only trusted together with its start time (`/proc/PID/stat` field 22),
//! so a recycled pid never passes for a dead member. Nothing here
//! allocates: the preload calls it from fork and exit handlers.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Entries in the table: processes that may use one stack at once.
pub const MAX_PROCS: usize = 64;
/// Bytes of a command name (as the kernel's `comm`, NUL-padded).
pub const COMM_LEN: usize = 16;
/// Device file descriptors a process can publish (AF_XDP sockets, BPF
/// objects), so a process joining later can take them with pidfd_getfd.
pub const MAX_NIC_FDS: usize = 16;

/// One process attached to the stack.
#[repr(C)]
pub struct ProcEntry {
    /// The process id, 0 when the entry is free.
    pub pid: AtomicU32,
    /// Seqlock over the fields below: odd while they change.
    pub seq: AtomicU32,
    /// When the process started (clock ticks after boot), telling a live
    /// member from a later process that was given the same pid.
    pub start_time: AtomicU64,
    /// When the process attached (Unix time, ns).
    pub attached_unix_ns: AtomicU64,
    /// Threads of the process that have used the stack and not yet exited.
    pub threads: AtomicU32,
    /// How many of `nic_fds` are valid.
    pub nic_nfds: AtomicU32,
    /// Command name, NUL-padded.
    pub comm: [AtomicU32; COMM_LEN / 4],
    /// The device fds this process holds for the stack (its own numbers).
    pub nic_fds: [AtomicU32; MAX_NIC_FDS],
}

impl ProcEntry {
    // Only used to build the table's array in a const context, each use a
    // fresh value: the interior mutability is never shared.
    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: ProcEntry = ProcEntry {
        pid: AtomicU32::new(0),
        seq: AtomicU32::new(0),
        start_time: AtomicU64::new(0),
        attached_unix_ns: AtomicU64::new(0),
        threads: AtomicU32::new(0),
        nic_nfds: AtomicU32::new(0),
        comm: [const { AtomicU32::new(0) }; COMM_LEN / 4],
        nic_fds: [const { AtomicU32::new(0) }; MAX_NIC_FDS],
    };
}

/// Processes attached to the stack.
#[repr(C)]
pub struct ProcTable {
    /// Attaches so far (fork children included).
    pub attaches: AtomicU64,
    /// Entries of processes found dead and cleared.
    pub reaped: AtomicU64,
    pub entries: [ProcEntry; MAX_PROCS],
}

/// A copy of one entry, for observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Index in the table.
    pub slot: usize,
    pub pid: u32,
    pub start_time: u64,
    pub attached_unix_ns: u64,
    pub threads: u32,
    pub comm: String,
    /// The device fds the process published (its own fd numbers).
    pub nic_fds: Vec<i32>,
    /// Whether the process still runs (same pid and start time).
    pub alive: bool,
}

/// Errors of joining the process table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProcError {
    #[error("the stack's process table is full ({MAX_PROCS} live processes)")]
    Full,
}

/// Reads the start time of `pid` from /proc without allocating; None if
/// the process does not exist (or /proc cannot be read).
pub fn start_time_of(pid: u32) -> Option<u64> {
    stat_of(pid).map(|(_, t)| t)
}

/// (state letter, start time) of `pid` from /proc, without allocating.
fn stat_of(pid: u32) -> Option<(u8, u64)> {
    let mut path = [0u8; 32];
    let prefix = b"/proc/";
    path[..prefix.len()].copy_from_slice(prefix);
    let n = prefix.len() + write_u32(&mut path[prefix.len()..], pid);
    let suffix = b"/stat\0";
    path[n..n + suffix.len()].copy_from_slice(suffix);
    let mut buf = [0u8; 1024];
    // SAFETY: a NUL-terminated path in a stack buffer; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: reads into a stack buffer of the given size.
    let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    let len = usize::try_from(len).ok()?;
    let stat = &buf[..len];
    Some((parse_state(stat)?, parse_start_time(stat)?))
}

/// Field 3 of a `/proc/PID/stat` line: R, S, D, Z (zombie), X (dead)...
fn parse_state(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat[close + 1..].iter().copied().find(|b| *b != b' ')
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last ')'.
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // After ')' come fields 3.. separated by single spaces.
    let rest = &stat[close + 1..];
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(22 - 3)?;
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Writes `v` in decimal into `out`; returns the digits written.
fn write_u32(out: &mut [u8], mut v: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    n
}

/// Whether `pid` runs and is the process that started at `start_time`
/// (0: any). A zombie counts as alive until it is reaped: /proc shows a
/// live process whose main thread has exited as a zombie too, and taking
/// its lock or closing its sockets would break it.
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match stat_of(pid) {
        Some((b'X', _)) => false,
        Some((_, t)) => start_time == 0 || t == start_time,
        None => {
            // /proc may be hidden from us (hidepid): ask the kernel directly.
            // SAFETY: signal 0 only checks that the process exists.
            let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// This process's command name, NUL-padded (prctl PR_GET_NAME gives the
/// calling thread's name; the main thread's is the process's).
fn own_comm() -> [u8; COMM_LEN] {
    let mut buf = [0u8; COMM_LEN];
    let mut path = [0u8; 32];
    let p = b"/proc/self/comm\0";
    path[..p.len()].copy_from_slice(p);
    // SAFETY: NUL-terminated path; fd closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: reads into a stack buffer of the given size.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: closes the fd opened above.
        unsafe { libc::close(fd) };
        let n = usize::try_from(n).unwrap_or(0);
        for b in &mut buf[n..] {
            *b = 0;
        }
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            for b in &mut buf[nl..] {
                *b = 0;
            }
        }
    }
    buf
}

impl Default for ProcTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcTable {
    /// An empty table.
    pub const fn new() -> ProcTable {
        ProcTable {
            attaches: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
            entries: [const { ProcEntry::EMPTY }; MAX_PROCS],
        }
    }

    /// Enters this process (or refreshes its entry, after exec: same pid
    /// and start time, new command). Dead members' entries are reused.
    /// Returns the entry's index.
    pub fn register_self(&self) -> Result<usize, ProcError> {
        let pid = std::process::id();
        let start = start_time_of(pid).unwrap_or(0);
        let slot = self.claim(pid, start)?;
        let e = &self.entries[slot];
        self.write(e, || {
            e.start_time.store(start, Ordering::Relaxed);
            e.attached_unix_ns.store(unix_ns(), Ordering::Relaxed);
            e.threads.store(0, Ordering::Relaxed);
            e.nic_nfds.store(0, Ordering::Relaxed);
            let comm = own_comm();
            for (w, c) in e.comm.iter().zip(comm.chunks_exact(4)) {
                w.store(
                    u32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                    Ordering::Relaxed,
                );
            }
        });
        self.attaches.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    fn claim(&self, pid: u32, start: u64) -> Result<usize, ProcError> {
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.pid.load(Ordering::Acquire) == pid)
        {
            return Ok(i);
        }
        // Dead members' entries are not taken here: their sockets' references
        // are released first, under the stack lock (Core::reap_dead_processes).
        for (i, e) in self.entries.iter().enumerate() {
            if e.pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                e.start_time.store(start, Ordering::Relaxed);
                return Ok(i);
            }
        }
        Err(ProcError::Full)
    }

    fn write(&self, e: &ProcEntry, f: impl FnOnce()) {
        e.seq.fetch_add(1, Ordering::AcqRel);
        f();
        e.seq.fetch_add(1, Ordering::Release);
    }

    /// Leaves the table (process exit, or detaching).
    pub fn unregister(&self, slot: usize) {
        if let Some(e) = self.entries.get(slot) {
            e.nic_nfds.store(0, Ordering::Relaxed);
            e.pid.store(0, Ordering::Release);
        }
    }

    /// Records the device fds this process holds, for processes joining later.
    pub fn set_nic_fds(&self, slot: usize, fds: &[i32]) {
        let Some(e) = self.entries.get(slot) else {
            return;
        };
        self.write(e, || {
            let n = fds.len().min(MAX_NIC_FDS);
            for (w, &fd) in e.nic_fds.iter().zip(&fds[..n]) {
                w.store(fd as u32, Ordering::Relaxed);
            }
            e.nic_nfds.store(n as u32, Ordering::Relaxed);
        });
    }

    /// One more (or one fewer, with -1) thread of the process uses the stack.
    pub fn add_threads(&self, slot: usize, delta: i32) {
        if let Some(e) = self.entries.get(slot) {
            if delta >= 0 {
                e.threads.fetch_add(delta as u32, Ordering::Relaxed);
            } else {
                let _ = e
                    .threads
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                        Some(t.saturating_sub(delta.unsigned_abs()))
                    });
            }
        }
    }

    /// Clears the entries of processes that are gone, calling `on_dead`
    /// with each one's (entry index, pid) once it is cleared; returns how
    /// many were cleared. Call it with the stack lock held when `on_dead`
    /// releases what the process held.
    pub fn reap_dead(&self, mut on_dead: impl FnMut(usize, u32)) -> usize {
        let mut n = 0;
        for (i, e) in self.entries.iter().enumerate() {
            let pid = e.pid.load(Ordering::Acquire);
            if pid == 0 || is_alive(pid, e.start_time.load(Ordering::Relaxed)) {
                continue;
            }
            if e.pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                on_dead(i, pid);
                self.reaped.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }

    /// A consistent copy of every entry in use, with liveness checked.
    /// Allocates: for observers, not for the preload's fork/exit paths.
    pub fn snapshot(&self) -> Vec<ProcInfo> {
        let mut out = Vec::new();
        for (slot, e) in self.entries.iter().enumerate() {
            for _ in 0..100 {
                let s0 = e.seq.load(Ordering::Acquire);
                if s0 & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let pid = e.pid.load(Ordering::Acquire);
                if pid == 0 {
                    break;
                }
                let start_time = e.start_time.load(Ordering::Relaxed);
                let mut comm = [0u8; COMM_LEN];
                for (c, w) in comm.chunks_exact_mut(4).zip(&e.comm) {
                    c.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                }
                let nfds = (e.nic_nfds.load(Ordering::Relaxed) as usize).min(MAX_NIC_FDS);
                let nic_fds = e.nic_fds[..nfds]
                    .iter()
                    .map(|w| w.load(Ordering::Relaxed) as i32)
                    .collect();
                let info = ProcInfo {
                    slot,
                    pid,
                    start_time,
                    attached_unix_ns: e.attached_unix_ns.load(Ordering::Relaxed),
                    threads: e.threads.load(Ordering::Relaxed),
                    comm: {
                        let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
                        String::from_utf8_lossy(&comm[..end]).into_owned()
                    },
                    nic_fds,
                    alive: false,
                };
                if e.seq.load(Ordering::Acquire) == s0 {
                    out.push(ProcInfo {
                        alive: is_alive(pid, start_time),
                        ..info
                    });
                    break;
                }
            }
        }
        out
    }

    /// How many members still run. Allocation-free (exit paths use it).
    pub fn live_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| {
                let pid = e.pid.load(Ordering::Acquire);
                pid != 0 && is_alive(pid, e.start_time.load(Ordering::Relaxed))
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_names_with_spaces_and_parens() {
        let mut line =
            b"123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 ".to_vec();
        line.extend_from_slice(b"98765 1000 10 18446744073709551615\n");
        assert_eq!(parse_start_time(&line), Some(98765));
        assert_eq!(parse_state(&line), Some(b'S'));
        assert_eq!(parse_start_time(b"123 (x) S 1"), None);
    }

    #[test]
    fn a_process_whose_main_thread_exited_is_alive() {
        // SAFETY: the child only starts a thread, ends its main thread and
        // exits from the other one later.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            extern "C" fn later(_: *mut libc::c_void) -> *mut libc::c_void {
                // SAFETY: sleeping and exiting are async-signal-safe.
                unsafe {
                    libc::usleep(300_000);
                    libc::_exit(0)
                }
            }
            let mut t: libc::pthread_t = 0;
            // SAFETY: a C-ABI thread function; main then ends its own thread only.
            unsafe {
                libc::pthread_create(&mut t, std::ptr::null(), later, std::ptr::null_mut());
                libc::pthread_exit(std::ptr::null_mut());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(is_alive(pid as u32, 0), "its other thread still runs");
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(!is_alive(pid as u32, 0));
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let t = start_time_of(me).expect("own /proc/self/stat");
        assert!(is_alive(me, t));
        assert!(!is_alive(me, t + 1));
        assert!(!is_alive(0, 0));
    }

    #[test]
    fn register_refresh_unregister_and_reap() {
        let t = Box::new(ProcTable::new());
        let a = t.register_self().unwrap();
        assert_eq!(t.register_self().unwrap(), a, "same pid keeps its entry");
        t.set_nic_fds(a, &[7, 9]);
        t.add_threads(a, 2);
        t.add_threads(a, -1);
        let s = t.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].pid, std::process::id());
        assert_eq!(s[0].nic_fds, vec![7, 9]);
        assert_eq!(s[0].threads, 1);
        assert!(s[0].alive);
        assert!(!s[0].comm.is_empty());
        // A dead member: a pid that cannot exist.
        t.entries[5].pid.store(u32::MAX - 1, Ordering::Release);
        let mut dead = vec![];
        assert_eq!(t.reap_dead(|i, p| dead.push((i, p))), 1);
        assert_eq!(dead, vec![(5, u32::MAX - 1)]);
        t.unregister(a);
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn a_full_table_takes_entries_once_the_dead_are_reaped() {
        let t = Box::new(ProcTable::new());
        for e in &t.entries {
            e.pid.store(u32::MAX - 1, Ordering::Release);
        }
        assert_eq!(t.register_self(), Err(ProcError::Full));
        assert_eq!(t.reap_dead(|_, _| {}), MAX_PROCS);
        assert!(t.register_self().is_ok(), "reaped entries are reused");
        let me = std::process::id();
        let mine = t
            .entries
            .iter()
            .position(|e| e.pid.load(Ordering::Relaxed) == me)
            .unwrap();
        t.unregister(mine);
        let st = start_time_of(1).unwrap_or(0);
        for e in &t.entries {
            e.pid.store(1, Ordering::Release);
            e.start_time.store(st, Ordering::Relaxed);
        }
        assert_eq!(t.register_self(), Err(ProcError::Full));
    }
}
