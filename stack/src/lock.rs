//! The stack lock: one futex word in the arena, shared by every thread of
//! every process attached to the stack.
//!
//! The word carries more than "locked": a thread that finds the lock taken
//! can post deferred work (a bit) into the same word instead of waiting, and
//! the holder picks that work up before it releases. This is Onload's design:
//! the data path never blocks behind another thread's poll.
//!
//! Word bits: [`LOCKED`], [`WAITERS`], the deferred-work bits in
//! [`WORK_MASK`], and the holder's pid above [`PID_SHIFT`]: taking the lock
//! and recording who took it are one atomic step, so a process killed at
//! any instant leaves either a free lock or one naming it, which a waiter
//! takes over once that process is gone. The holder's tid is recorded
//! beside the word for stackdump.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The lock is held.
pub const LOCKED: u32 = 1 << 0;
/// Someone sleeps in futex_wait on the word.
pub const WAITERS: u32 = 1 << 1;
/// Bits available for deferred work.
pub const WORK_MASK: u32 = 0xfc;
/// The holder's pid is stored in the word from this bit up (24 bits: any
/// pid up to Linux's pid_max limit of 2^22).
pub const PID_SHIFT: u32 = 8;
/// The pid field of the word.
pub const PID_MASK: u32 = !0xff;

fn pid_bits(pid: u32) -> u32 {
    pid << PID_SHIFT
}

/// Deferred work: frames wait in the TX queue; the holder should push them to the NIC.
pub const WORK_TX: u32 = 1 << 2;
/// Deferred work: the NIC should be polled.
pub const WORK_POLL: u32 = 1 << 3;

/// How [`StackLock::lock`] got the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Acquired {
    /// It was free, or its holder released it.
    Normally,
    /// Its holder had died holding it: the stack may need repair.
    FromDeadOwner,
}

/// Result of [`StackLock::try_lock_or_post`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOrPost {
    /// The caller now holds the lock.
    Locked,
    /// The lock was busy; the work bits were posted for its holder.
    Posted,
}

/// The lock itself, on its own cache line.
#[repr(C, align(64))]
pub struct StackLock {
    word: AtomicU32,
    owner_tid: AtomicU32,
    _pad: u32,
    /// Times a thread found the lock taken (for stackdump).
    pub contended: AtomicU64,
    /// Times the lock was taken over from a holder that had died.
    pub recovered: AtomicU64,
}

impl Default for StackLock {
    fn default() -> Self {
        Self::new()
    }
}

/// Bumped in every fork child, so cached ids from the parent are not reused.
static FORK_GEN: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_fork_child() {
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// (fork generation, tid, pid) of this thread, cached: two system calls
    /// per lock would cost more than the lock.
    static IDS: std::cell::Cell<(u32, u32, u32)> = const { std::cell::Cell::new((u32::MAX, 0, 0)) };
}

/// This thread's (tid, pid), without a system call after the first time.
fn thread_ids() -> (u32, u32) {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic; it runs in
        // the child after fork, where that is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(on_fork_child)) };
    });
    let gen = FORK_GEN.load(Ordering::Relaxed);
    IDS.with(|c| {
        let (g, tid, pid) = c.get();
        if g == gen {
            return (tid, pid);
        }
        // SAFETY: gettid and getpid have no preconditions and cannot fail.
        let ids = unsafe { (libc::gettid() as u32, libc::getpid() as u32) };
        c.set((gen, ids.0, ids.1));
        ids
    })
}

/// How long a waiter sleeps before it looks whether the holder still lives.
const OWNER_CHECK_NS: i64 = 50_000_000;

/// Sleeps while `word` holds `expected`, at most [`OWNER_CHECK_NS`];
/// returns whether the whole time passed (the holder kept the lock).
fn futex_wait(word: &AtomicU32, expected: u32) -> bool {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: OWNER_CHECK_NS,
    };
    // SAFETY: the futex word is a valid, aligned u32 for the life of the mapping;
    // a shared (not PRIVATE) futex works across processes mapping the same file.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

/// Whether process `pid` is gone (killed while it held the lock); a
/// zombie is gone too, though its parent has not reaped it yet.
fn dead(pid: u32) -> bool {
    !crate::procs::is_alive(pid, 0)
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: as in futex_wait.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

impl StackLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        StackLock {
            word: AtomicU32::new(0),
            owner_tid: AtomicU32::new(0),
            _pad: 0,
            contended: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
        }
    }

    fn set_owner(&self) {
        self.owner_tid.store(thread_ids().0, Ordering::Relaxed);
    }

    /// The word's bits for this process holding the lock.
    fn held_by_me() -> u32 {
        LOCKED | pid_bits(thread_ids().1)
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> bool {
        let ok = self
            .word
            .compare_exchange(0, Self::held_by_me(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.set_owner();
        }
        ok
    }

    /// Takes the lock, spinning briefly and then sleeping on the futex.
    /// Returns [`Acquired::FromDeadOwner`] if the holder had died inside
    /// its critical section: the caller then owns the lock and must check
    /// (and repair) what that process may have left half done.
    pub fn lock(&self) -> Acquired {
        if self.try_lock() {
            return Acquired::Normally;
        }
        self.contended.fetch_add(1, Ordering::Relaxed);
        for _ in 0..200 {
            std::hint::spin_loop();
            if self.try_lock() {
                return Acquired::Normally;
            }
        }
        // Whether the holder is alive is looked at (in /proc) only after a
        // full wait without a release: not on every wakeup of a busy lock.
        let mut waited_out = false;
        loop {
            if waited_out && self.take_from_dead_owner() {
                return Acquired::FromDeadOwner;
            }
            let w = self.word.load(Ordering::Relaxed);
            if w & LOCKED == 0 {
                // We may have slept: others may still sleep too, so keep WAITERS.
                if self
                    .word
                    .compare_exchange(
                        w,
                        w | Self::held_by_me() | WAITERS,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    self.set_owner();
                    return Acquired::Normally;
                }
                continue;
            }
            if w & WAITERS == 0
                && self
                    .word
                    .compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            waited_out = futex_wait(&self.word, w | WAITERS);
        }
    }

    /// Records the calling thread as the holder of a lock it inherited: a
    /// child forked (without fork handlers) inside the critical section
    /// carries it on after its parent exits, and must not look dead then.
    pub fn adopt_after_raw_fork(&self) {
        // SAFETY: gettid and getpid have no preconditions; no cache is used
        // (a raw fork runs no handler that would refresh it).
        let (tid, pid) = unsafe { (libc::gettid() as u32, libc::getpid() as u32) };
        self.owner_tid.store(tid, Ordering::Relaxed);
        FORK_GEN.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                Some((w & !PID_MASK) | pid_bits(pid))
            });
    }

    /// If the lock is held by a process that no longer exists, makes the
    /// caller its holder (one caller wins: the pid is swapped atomically).
    fn take_from_dead_owner(&self) -> bool {
        let w = self.word.load(Ordering::Acquire);
        let pid = w >> PID_SHIFT;
        if w & LOCKED == 0 || pid == 0 || !dead(pid) {
            return false;
        }
        // One waiter wins: the word changes from naming the dead to naming us.
        let mine = (w & !PID_MASK) | Self::held_by_me();
        if self
            .word
            .compare_exchange(w, mine, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.set_owner();
        self.recovered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Takes the lock, or, if it is held, posts `work` bits for the holder and returns at once.
    pub fn try_lock_or_post(&self, work: u32) -> LockOrPost {
        let work = work & WORK_MASK;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w & LOCKED == 0 {
                if self
                    .word
                    .compare_exchange(
                        w,
                        w | Self::held_by_me(),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    self.set_owner();
                    return LockOrPost::Locked;
                }
            } else if self
                .word
                .compare_exchange(w, w | work, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                self.contended.fetch_add(1, Ordering::Relaxed);
                return LockOrPost::Posted;
            }
        }
    }

    /// Releases the lock unless work was posted: then the work bits are taken
    /// (cleared from the word), the lock stays held, and they are returned for
    /// the caller to do before calling this again. Returns 0 once released.
    pub fn unlock_or_take_work(&self) -> u32 {
        loop {
            let w = self.word.load(Ordering::Relaxed);
            debug_assert!(w & LOCKED != 0, "unlock of an unlocked stack lock");
            if w & WORK_MASK != 0 {
                if self
                    .word
                    .compare_exchange(w, w & !WORK_MASK, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return w & WORK_MASK;
                }
                continue;
            }
            self.owner_tid.store(0, Ordering::Relaxed);
            if self
                .word
                .compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                if w & WAITERS != 0 {
                    futex_wake(&self.word, 1);
                }
                return 0;
            }
            self.owner_tid.store(thread_ids().0, Ordering::Relaxed);
        }
    }

    /// Whether the lock is held (by anyone).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// Thread id of the holder, 0 if none.
    pub fn owner_tid(&self) -> u32 {
        self.owner_tid.load(Ordering::Relaxed)
    }

    /// Process id of the holder, 0 if none (read from the lock word).
    pub fn owner_pid(&self) -> u32 {
        let w = self.word.load(Ordering::Relaxed);
        if w & LOCKED == 0 {
            0
        } else {
            w >> PID_SHIFT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_unlock_records_owner() {
        let l = StackLock::new();
        assert!(l.try_lock());
        assert_eq!(l.owner_pid(), std::process::id());
        assert!(!l.try_lock());
        assert_eq!(l.unlock_or_take_work(), 0);
        assert!(!l.is_locked());
        assert_eq!(l.owner_tid(), 0);
    }

    #[test]
    fn owner_ids_are_fresh_after_fork() {
        let l = StackLock::new();
        assert!(l.try_lock());
        let parent_tid = l.owner_tid();
        while l.unlock_or_take_work() != 0 {}
        // SAFETY: the child only uses the lock (atomics, cached ids) and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok =
                l.try_lock() && l.owner_pid() == std::process::id() && l.owner_tid() != parent_tid;
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child saw stale ids"
        );
    }

    #[test]
    fn a_lock_held_by_a_dead_process_is_taken_over() {
        // The lock in shared anonymous memory, taken by a child that dies.
        // SAFETY: a fresh shared anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let l = p.cast::<StackLock>();
        // SAFETY: the mapping is large enough and aligned for StackLock.
        unsafe { l.write(StackLock::new()) };
        // SAFETY: as above; lives until the munmap at the end.
        let l = unsafe { &*l };
        // The ids' one-time setup (a Once, pthread_atfork) happens here: in
        // a child forked while another test thread ran it, it would block.
        let _ = thread_ids();
        // SAFETY: the child only takes the lock and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = l.try_lock();
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(l.is_locked());
        assert_eq!(l.owner_pid(), pid as u32);
        assert_eq!(l.lock(), Acquired::FromDeadOwner);
        assert_eq!(l.owner_pid(), std::process::id());
        assert_eq!(l.recovered.load(Ordering::Relaxed), 1);
        assert_eq!(l.unlock_or_take_work(), 0);
        assert_eq!(l.lock(), Acquired::Normally);
        assert_eq!(l.unlock_or_take_work(), 0);
        // SAFETY: nothing refers to the mapping any more.
        unsafe { libc::munmap(p, 4096) };
    }

    #[test]
    fn posted_work_goes_to_holder() {
        let l = StackLock::new();
        assert_eq!(l.try_lock_or_post(WORK_TX), LockOrPost::Locked);
        assert_eq!(l.try_lock_or_post(WORK_TX), LockOrPost::Posted);
        assert_eq!(l.try_lock_or_post(WORK_POLL), LockOrPost::Posted);
        assert_eq!(l.unlock_or_take_work(), WORK_TX | WORK_POLL);
        assert!(l.is_locked(), "lock stays held while work is handed over");
        assert_eq!(l.unlock_or_take_work(), 0);
        assert!(!l.is_locked());
    }

    #[test]
    fn mutual_exclusion_under_contention() {
        struct Shared {
            lock: StackLock,
            counter: std::cell::UnsafeCell<u64>,
        }
        // SAFETY: counter is only touched with the lock held.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared {
            lock: StackLock::new(),
            counter: 0.into(),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let _ = s.lock.lock();
                        // SAFETY: lock held.
                        unsafe { *s.counter.get() += 1 };
                        while s.lock.unlock_or_take_work() != 0 {}
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: all threads joined.
        assert_eq!(unsafe { *s.counter.get() }, 80_000);
    }
}
