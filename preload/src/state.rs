//! Per-process state of the library: the stack this process uses, the fd
//! table mapping kernel fds to stack sockets, and settings. Initialised
//! lazily on the first socket call, with no allocation after that.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use rbypass_nic::driver::Driver;
use rbypass_nic::spec::NicSpec;
use rbypass_nic::Nic;
use rbypass_stack::tcp::cc::CcAlgo;
use rbypass_stack::{Core, IfaceConfig, SocketId, Stack, StackConfig};

/// Largest fd the table tracks; sockets above it stay with the kernel.
pub const MAX_FDS: usize = 1 << 16;

/// What a table entry says about an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: SocketId,
    pub tcp: bool,
    pub nonblock: bool,
    /// SO_RCVTIMEO or SO_SNDTIMEO was set (read them from the kernel socket).
    pub timeo: bool,
    /// An AF_INET6 socket: addresses go back to the app as `sockaddr_in6`.
    pub v6: bool,
    /// A non-blocking connect is under way: the next connect() after it
    /// completes returns 0 (or its error) once, as Linux does, not EISCONN.
    pub connecting: bool,
}

const VALID: u64 = 1 << 63;
const NONBLOCK: u64 = 1 << 62;
const TCP: u64 = 1 << 61;
const TIMEO: u64 = 1 << 60;
const V6: u64 = 1 << 59;
const CONNECTING: u64 = 1 << 58;

impl Entry {
    pub fn pack(self) -> u64 {
        // Index (20 bits) and incarnation (32 bits) fit below the flag bits.
        VALID
            | if self.nonblock { NONBLOCK } else { 0 }
            | if self.tcp { TCP } else { 0 }
            | if self.timeo { TIMEO } else { 0 }
            | if self.v6 { V6 } else { 0 }
            | if self.connecting { CONNECTING } else { 0 }
            | (u64::from(self.id.incarnation()) << 20)
            | u64::from(self.id.index() & 0xf_ffff)
    }

    pub fn unpack(v: u64) -> Option<Entry> {
        (v & VALID != 0).then(|| Entry {
            id: SocketId::new((v & 0xf_ffff) as u32, ((v >> 20) & 0xffff_ffff) as u32),
            tcp: v & TCP != 0,
            nonblock: v & NONBLOCK != 0,
            timeo: v & TIMEO != 0,
            v6: v & V6 != 0,
            connecting: v & CONNECTING != 0,
        })
    }
}

/// The process-wide state.
pub struct State {
    pub stack: Stack,
    table: &'static [AtomicU64],
    /// Microseconds a blocking call spins before sleeping; negative: forever.
    pub spin_us: i64,
    /// The device this process drives for the stack (None: the in-arena
    /// loopback, which the stack drives itself).
    nic: Option<NicSlot>,
}

/// This process's handle on the stack's device. It is used only with the
/// stack lock held (a `&mut Core` proves it), which excludes every other
/// thread of every process, so one mutable access at a time.
struct NicSlot {
    nic: std::cell::UnsafeCell<Box<dyn Nic>>,
    wait_fd: Option<libc::c_int>,
    /// The fds a linger process keeps (sorted), read once at start.
    keep: [libc::c_int; MAX_KEEP_FDS],
    keep_len: usize,
    /// The fds another process takes to join the device (published in
    /// the process table; a fork child has the same numbers).
    shared: [libc::c_int; rbypass_stack::procs::MAX_NIC_FDS],
    shared_len: usize,
}

/// Most device fds a linger process keeps.
const MAX_KEEP_FDS: usize = 32;

// SAFETY: the device is only touched under the stack lock (see NicSlot).
unsafe impl Sync for NicSlot {}

static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
static INIT: std::sync::Once = std::sync::Once::new();
/// The thread building the state (0: none), so its own socket calls pass through.
static INIT_THREAD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

pub(crate) fn mmap_zeroed<T>(n: usize) -> Option<&'static [T]> {
    let bytes = n * std::mem::size_of::<T>();
    // SAFETY: an anonymous private mapping, zero filled, never unmapped; T is
    // an atomic integer for which all-zero is a valid value.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(std::slice::from_raw_parts(p.cast::<T>(), n))
    }
}

fn env_u32(k: &str) -> Option<u32> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

/// The interface address of a device stack: RBYPASS_IP=a.b.c.d/len and
/// optionally RBYPASS_GATEWAY=a.b.c.d.
fn device_address() -> Option<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
    let v = std::env::var("RBYPASS_IP").ok()?;
    let (ip, len) = v.split_once('/').unwrap_or((&v, "24"));
    let ip: Ipv4Addr = ip.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok().filter(|l| *l <= 32)?;
    let gw = std::env::var("RBYPASS_GATEWAY")
        .ok()
        .and_then(|g| g.trim().parse().ok());
    Some((ip, len, gw))
}

/// Opens the device of RBYPASS_NIC (None for `loop`) and the interface it
/// gives the stack: RBYPASS_IP if set, else what the kernel says of the
/// interface (AF_XDP, AF_PACKET). Err: the app's sockets stay with the kernel.
fn open_nic() -> Result<(Option<Box<dyn Nic>>, IfaceConfig), String> {
    let text = std::env::var("RBYPASS_NIC").unwrap_or_else(|_| "loop".into());
    let spec: NicSpec = text.parse().map_err(|e| format!("{e}"))?;
    if spec == NicSpec::Loop {
        return Ok((None, IfaceConfig::loopback()));
    }
    let nic = spec.open().map_err(|e| format!("{e}"))?;
    let caps = nic.caps();
    let iface = match (device_address(), nic.iface()) {
        (Some((ip, len, gw)), from_kernel) => {
            let gw = gw.or(from_kernel.and_then(|k| k.gateway()));
            IfaceConfig::new(caps.mac, ip, len, gw, caps.mtu)
        }
        (None, Some(from_kernel)) => from_kernel,
        (None, None) => {
            return Err(format!(
                "RBYPASS_NIC={text} needs the stack's address: set RBYPASS_IP=a.b.c.d/len (and RBYPASS_GATEWAY)"
            ))
        }
    };
    Ok((Some(nic), iface))
}

/// RBYPASS_NO_FAIL (on unless set to 0): whether a device that cannot be
/// used leaves the app running on the kernel's sockets rather than ending it.
fn no_fail() -> bool {
    std::env::var("RBYPASS_NO_FAIL").map_or(true, |v| v.trim() != "0")
}

/// The device could not be used: carry on with the kernel, or end the
/// process if the user asked (RBYPASS_NO_FAIL=0).
fn device_failed(e: &str) {
    if no_fail() {
        crate::rlog!(
            Warn,
            "{e}; sockets stay with the kernel (RBYPASS_NO_FAIL=0 makes this fatal)"
        );
    } else {
        crate::rlog!(Error, "{e}; exiting (RBYPASS_NO_FAIL=0)");
        // SAFETY: ends the process, as the user asked.
        unsafe { libc::_exit(1) };
    }
}

/// The arena a process attaches to if it exists: the one handed over
/// across exec, or the named stack's.
fn existing_arena(handoff: Option<&crate::exec::Handoff>) -> Option<std::path::PathBuf> {
    match (handoff, std::env::var("RBYPASS_NAME")) {
        (Some(h), _) => Some(h.arena.clone()),
        (None, Ok(name)) if !name.is_empty() => {
            rbypass_stack::arena::validate_name(&name).ok()?;
            Some(rbypass_stack::arena::path_for_name(&name))
        }
        _ => None,
    }
}

/// RBYPASS_SHARE_WITH: the stack's owner opens it to other users or
/// groups (an ACL on the arena file); nobody else can attach.
fn share_stack(stack: &Stack) {
    let Ok(text) = std::env::var("RBYPASS_SHARE_WITH") else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let path = stack.arena().path();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    if std::fs::metadata(path).map_or(true, |m| m.uid() != me) {
        return;
    }
    match rbypass_stack::access::parse(&text)
        .and_then(|who| rbypass_stack::access::share(path, &who))
    {
        Ok(()) => crate::rlog!(Info, "stack {} shared with {text}", path.display()),
        Err(e) => crate::rlog!(Warn, "{e}; the stack stays private to its owner"),
    }
}

/// A stack joined with its device.
type Joined = (Stack, Box<dyn Nic>);

/// How long a process joining a stack waits for the stack's first process
/// to publish its device (it may still be opening it).
const JOIN_WAIT_NS: u64 = 3_000_000_000;

/// Joins the device of the existing stack at `path` (RBYPASS_NIC names the
/// same device as the stack's): takes a live member's fds to it, so every
/// process of the stack drives one set of rings (AF_XDP sockets, or the
/// AF_PACKET socket, whose every frame must reach the stack once). Ok(None):
/// nothing to join (no such stack, another device, nobody to take the fds
/// from), so the device is opened as usual.
fn join_device(path: &std::path::Path) -> Result<Option<Joined>, String> {
    let Ok(text) = std::env::var("RBYPASS_NIC") else {
        return Ok(None);
    };
    let Ok(spec) = text.parse::<NicSpec>() else {
        return Ok(None);
    };
    if !matches!(spec, NicSpec::Xdp(_) | NicSpec::Packet(_)) {
        return Ok(None);
    }
    let me = std::process::id();
    let start = rbypass_stack::clock::now_ns();
    loop {
        let Ok(stack) = Stack::open_at(path) else {
            return Ok(None);
        };
        if rbypass_stack::stack::abandoned(stack.arena()) {
            return Ok(None);
        }
        let desc = stack.snapshot().nic_desc();
        let same = desc.split_whitespace().next() == Some(spec.to_string().as_str());
        if same {
            let members = stack.header().procs.snapshot();
            for m in members
                .iter()
                .filter(|m| m.alive && m.pid != me && !m.nic_fds.is_empty())
            {
                match rbypass_nic::share::take_fds(m.pid, &m.nic_fds) {
                    Ok(fds) => {
                        return match spec.join(&desc, fds) {
                            Some(Ok(nic)) => {
                                crate::rlog!(
                                    Info,
                                    "joined stack {} on {desc} (device fds from pid {})",
                                    path.display(),
                                    m.pid
                                );
                                Ok(Some((stack, nic)))
                            }
                            Some(Err(e)) => Err(e.to_string()),
                            None => Ok(None),
                        };
                    }
                    Err(rbypass_nic::share::ShareError::Gone { .. }) => continue,
                    Err(e) => {
                        return Err(format!("{spec}: cannot join stack {}: {e}", path.display()))
                    }
                }
            }
        } else if desc != "loop" {
            // The stack runs on another device.
            return Ok(None);
        }
        if rbypass_stack::clock::now_ns() - start > JOIN_WAIT_NS {
            return Ok(None);
        }
        // The first process may still be opening the device.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn build() -> Option<State> {
    let handoff = crate::exec::take_handoff();
    let joined = match existing_arena(handoff.as_ref()).map(|p| join_device(&p)) {
        Some(Ok(j)) => j,
        Some(Err(e)) => {
            device_failed(&e);
            return None;
        }
        None => None,
    };
    let (nic, iface, joined_stack) = match joined {
        Some((stack, nic)) => {
            let iface = stack.snapshot().iface;
            (Some(nic), iface, Some(stack))
        }
        None => match open_nic() {
            Ok((nic, iface)) => (nic, iface, None),
            Err(e) => {
                device_failed(&e);
                return None;
            }
        },
    };
    let defaults = StackConfig::default();
    let tcp_cc = match std::env::var("RBYPASS_TCP_CC") {
        Ok(v) => match CcAlgo::parse(&v) {
            Some(a) => a as u8,
            None => {
                crate::rlog!(
                    Warn,
                    "RBYPASS_TCP_CC={v} is not known (cubic, reno); using cubic"
                );
                defaults.tcp_cc
            }
        },
        Err(_) => defaults.tcp_cc,
    };
    let cfg = StackConfig {
        max_sockets: env_u32("RBYPASS_MAX_SOCKETS").unwrap_or(4096),
        max_bufs: env_u32("RBYPASS_MAX_BUFS").unwrap_or(32768),
        tcp_cc,
        tcp_slow_start_after_idle: env_u32("RBYPASS_TCP_SLOW_START_AFTER_IDLE")
            .map_or(defaults.tcp_slow_start_after_idle, |v| u8::from(v != 0)),
        ..defaults
    };
    let was_joined = joined_stack.is_some();
    let stack = match (joined_stack, &handoff, std::env::var("RBYPASS_NAME")) {
        (Some(s), _, _) => Ok(s),
        (None, Some(h), _) => Stack::open_at(&h.arena),
        (None, None, Ok(name)) if !name.is_empty() => {
            Stack::open_or_create_named(&name, &cfg, iface)
        }
        _ => Stack::create_private(&cfg, iface),
    };
    let stack = match stack {
        Ok(s) => s,
        Err(e) => {
            crate::rlog!(
                Warn,
                "cannot open the stack ({e}); sockets stay with the kernel"
            );
            return None;
        }
    };
    share_stack(&stack);
    create_thread_key();
    join_process_table(&stack);
    let stack = match std::env::var("RBYPASS_NAME") {
        Ok(name) if !name.is_empty() && !was_joined && !stack.arena().is_linked() => {
            // The stack's last process removed it between our attach and
            // our entry in its table: start the stack anew.
            leave_process_table(&stack);
            drop(stack);
            match Stack::open_or_create_named(&name, &cfg, iface) {
                Ok(s) => {
                    join_process_table(&s);
                    s
                }
                Err(e) => {
                    crate::rlog!(
                        Warn,
                        "cannot open the stack ({e}); sockets stay with the kernel"
                    );
                    return None;
                }
            }
        }
        _ => stack,
    };
    let table = mmap_zeroed::<AtomicU64>(MAX_FDS)?;
    let spin_us = std::env::var("RBYPASS_SPIN_USEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    crate::rlog!(
        Info,
        "stack {} attached (spin {spin_us} us)",
        stack.arena().path().display()
    );
    if let Some(h) = handoff {
        // Sockets inherited across exec keep their references (counted before exec).
        for (fd, e) in &h.fds {
            if let Some(slot) = usize::try_from(*fd).ok().and_then(|i| table.get(i)) {
                slot.store(e.pack(), Ordering::Release);
            }
        }
        crate::rlog!(Debug, "adopted {} sockets across exec", h.fds.len());
    }
    let nic = match nic {
        None => None,
        Some(mut n) => {
            let attached = {
                let mut c = stack.lock();
                let r = n.attach(&mut c);
                if r.is_ok() {
                    c.set_nic_desc(&n.describe());
                    c.set_igmp_enabled(!n.kernel_speaks_igmp());
                }
                r
            };
            if let Err(e) = attached {
                let e = e.to_string();
                if e.starts_with(&n.name()) {
                    device_failed(&e);
                } else {
                    device_failed(&format!("{}: {e}", n.name()));
                }
                return None;
            }
            let mut shared = [-1; rbypass_stack::procs::MAX_NIC_FDS];
            let shared_fds = n.shared_fds();
            for (k, fd) in shared.iter_mut().zip(&shared_fds) {
                *k = *fd;
            }
            let shared_len = shared_fds.len().min(shared.len());
            if let Some(slot) = process_slot() {
                stack
                    .header()
                    .procs
                    .set_nic_fds(slot, &shared[..shared_len]);
            }
            let mut keep = [-1; MAX_KEEP_FDS];
            let mut fds = n.keep_fds();
            fds.sort_unstable();
            fds.dedup();
            for (k, fd) in keep.iter_mut().zip(&fds) {
                *k = *fd;
            }
            crate::rlog!(Info, "device {} attached", n.name());
            Some(NicSlot {
                wait_fd: n.wait_fd(),
                keep_len: fds.len().min(MAX_KEEP_FDS),
                keep,
                shared,
                shared_len,
                nic: std::cell::UnsafeCell::new(n),
            })
        }
    };
    Some(State {
        stack,
        table,
        spin_us,
        nic,
    })
}

/// This process's entry in the stack's process table (usize::MAX: none).
static PROC_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Enters this process in the stack's process table (at attach, and in a
/// fork child, which is a new member). Allocation-free.
pub fn join_process_table(stack: &Stack) {
    match stack.header().procs.register_self() {
        Ok(slot) => PROC_SLOT.store(slot, Ordering::Release),
        Err(e) => crate::rlog!(Warn, "{e}; stackdump will not list this process"),
    }
}

/// Takes this process out of the stack's process table (exit).
pub fn leave_process_table(stack: &Stack) {
    let slot = PROC_SLOT.swap(usize::MAX, Ordering::AcqRel);
    if slot != usize::MAX {
        stack.header().procs.unregister(slot);
    }
}

/// This process's entry in the stack's process table, if it has one.
pub fn process_slot() -> Option<usize> {
    let s = PROC_SLOT.load(Ordering::Acquire);
    (s != usize::MAX).then_some(s)
}

thread_local! {
    /// This thread has used the stack (and is counted in the process table).
    /// No destructor here: a Rust TLS destructor registers itself with an
    /// allocation, which fork and exit paths must not do; a pthread key's
    /// destructor (below) uncounts the thread instead.
    static USES_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The pthread key whose destructor uncounts an exiting thread (u32::MAX:
/// not created).
static THREAD_KEY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

extern "C" fn thread_gone(_: *mut libc::c_void) {
    if let (Some(st), Some(slot)) = (existing(), process_slot()) {
        st.stack.header().procs.add_threads(slot, -1);
    }
}

/// Creates the key (once, when the state is built).
fn create_thread_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: a valid out pointer and a C-ABI destructor.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_gone)) } == 0 {
        THREAD_KEY.store(key, Ordering::Release);
    }
}

/// Counts the calling thread in the process table the first time it uses
/// the stack.
fn mark_thread(st: &State) {
    if USES_STACK.get() {
        return;
    }
    USES_STACK.set(true);
    let key = THREAD_KEY.load(Ordering::Acquire);
    if let (Some(slot), true) = (process_slot(), key != u32::MAX) {
        st.stack.header().procs.add_threads(slot, 1);
        // SAFETY: a key we created; any non-null value arms the destructor
        // (glibc keeps the first 32 keys' values without allocating).
        unsafe {
            libc::pthread_setspecific(key, std::ptr::NonNull::<u8>::dangling().as_ptr().cast())
        };
    }
}

/// The library's own threads (progress) are not the app's: never counted.
pub fn not_an_app_thread() {
    USES_STACK.set(true);
}

/// In a fork child: the one thread it has counts if it used the stack.
pub fn recount_fork_thread(st: &State) {
    if let (true, Some(slot)) = (USES_STACK.get(), process_slot()) {
        st.stack.header().procs.add_threads(slot, 1);
    }
}

/// The state, initialising it on first use; None if acceleration is off.
pub fn get() -> Option<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set once to a leaked Box below, never freed.
        let st = unsafe { &*p };
        mark_thread(st);
        return Some(st);
    }
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    if INIT_THREAD.load(Ordering::Acquire) == me {
        // A socket call made while the state is being built (opening the
        // device makes some): it is the library's own, for the kernel.
        return None;
    }
    INIT.call_once(|| {
        INIT_THREAD.store(me, Ordering::Release);
        crate::log::install_tracing();
        let built = build();
        INIT_THREAD.store(0, Ordering::Release);
        if let Some(s) = built {
            STATE.store(Box::into_raw(Box::new(s)), Ordering::Release);
            // Created now, not in the middle of an app's poll (where it
            // would take an fd number the app just closed).
            crate::progress::wake_fd();
            crate::progress::start();
            crate::fork::register();
            crate::exit::register();
        }
    });
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: as above.
    let st = (!p.is_null()).then(|| unsafe { &*p });
    if let Some(st) = st {
        mark_thread(st);
    }
    st
}

/// The state if it already exists (never initialises: for fd-only paths).
pub fn existing() -> Option<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: as in `get`.
    let st = (!p.is_null()).then(|| unsafe { &*p });
    if let Some(st) = st {
        mark_thread(st);
    }
    st
}

impl State {
    /// Moves the stack on: its timers and looped-back frames, and this
    /// process's device both ways (received frames in, queued frames out).
    pub fn pump(&self, c: &mut Core<'_>, now: u64) {
        crate::progress::app_polled(now);
        self.pump_background(c, now);
    }

    /// [`State::pump`] for the progress thread (not an app thread polling).
    pub fn pump_background(&self, c: &mut Core<'_>, now: u64) {
        match &self.nic {
            None => {
                c.poll(now);
            }
            Some(slot) => {
                // SAFETY: `c` proves the stack lock is held (see NicSlot).
                let nic = unsafe { &mut *slot.nic.get() };
                let _ = Driver::poll_locked(nic, c, now);
            }
        }
    }

    /// Hands frames the last call queued to the device at once (nothing to
    /// do on the loopback, whose frames the stack carries itself).
    pub fn flush(&self, c: &mut Core<'_>, now: u64) {
        if let Some(slot) = &self.nic {
            // SAFETY: as in `pump`.
            let nic = unsafe { &mut *slot.nic.get() };
            let _ = Driver::flush_tx(nic, c, now);
        }
    }

    /// The device's fd that turns readable when frames arrive (None: loop).
    pub fn nic_fd(&self) -> Option<libc::c_int> {
        self.nic.as_ref().and_then(|n| n.wait_fd)
    }

    /// The fds a linger process must keep for the device (sorted).
    pub fn nic_keep_fds(&self) -> &[libc::c_int] {
        self.nic.as_ref().map_or(&[], |n| &n.keep[..n.keep_len])
    }

    /// Publishes this process's device fds in its process-table entry, so a
    /// process joining later can take them (at attach, and in a fork child).
    pub fn publish_nic_fds(&self) {
        if let (Some(n), Some(slot)) = (&self.nic, process_slot()) {
            self.stack
                .header()
                .procs
                .set_nic_fds(slot, &n.shared[..n.shared_len]);
        }
    }

    /// Whether this stack drives a real device (not the loopback).
    pub fn on_device(&self) -> bool {
        self.nic.is_some()
    }

    /// Whether a socket bound to `ip` belongs in the stack: the loopback
    /// stack takes 127/8, a device stack its own address; both take any.
    pub fn local_ip(&self, c: &Core<'_>, ip: Ipv4Addr) -> bool {
        if ip.is_unspecified() {
            return true;
        }
        if self.on_device() {
            ip == c.iface().ip()
        } else {
            ip.is_loopback()
        }
    }

    /// Whether the stack can reach `ip` (the peer is on its device's network
    /// or behind its gateway; on the loopback stack, 127/8).
    pub fn reaches(&self, c: &Core<'_>, ip: Ipv4Addr) -> bool {
        if self.on_device() {
            let i = c.iface();
            !ip.is_loopback()
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && !i.is_local(ip)
                && (i.on_link(ip) || i.gateway().is_some())
        } else {
            ip.is_loopback()
        }
    }

    /// Whether a blocking wait that began at `start` should go on spinning
    /// at `now` (RBYPASS_SPIN_USEC; negative: always). A spinning thread
    /// yields its CPU every 20 us, so on a machine with fewer cores than
    /// busy threads the thread it waits for (often on the same core) runs.
    pub fn keep_spinning(&self, start: u64, now: u64, last_yield: &mut u64) -> bool {
        if self.spin_us >= 0 && (now - start) / 1000 >= self.spin_us as u64 {
            crate::progress::app_will_sleep();
            return false;
        }
        if now - *last_yield >= 20_000 {
            *last_yield = now;
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            std::hint::spin_loop();
        }
        true
    }

    /// The entry of `fd`, if it is an accelerated socket.
    pub fn entry(&self, fd: libc::c_int) -> Option<Entry> {
        let i = usize::try_from(fd).ok()?;
        Entry::unpack(self.table.get(i)?.load(Ordering::Acquire))
    }

    /// Maps `fd` to a stack socket and counts the reference in the arena
    /// (shared by every process, so a fork child's close leaves the
    /// parent's socket open).
    pub fn set(&self, c: &mut Core<'_>, fd: libc::c_int, e: Entry) -> bool {
        let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.table.get(i)) else {
            return false;
        };
        if c.fd_ref(e.id, crate::state::process_slot()).is_err() {
            return false;
        }
        slot.store(e.pack(), Ordering::Release);
        true
    }

    /// Every mapped fd, for a fork child to count its inherited references.
    pub fn for_each(&self, mut f: impl FnMut(libc::c_int, Entry)) {
        for (fd, slot) in self.table.iter().enumerate() {
            if let Some(e) = Entry::unpack(slot.load(Ordering::Acquire)) {
                f(fd as libc::c_int, e);
            }
        }
    }

    /// Updates the flags of an existing mapping.
    pub fn update(&self, fd: libc::c_int, e: Entry) {
        if let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.table.get(i)) {
            slot.store(e.pack(), Ordering::Release);
        }
    }

    /// Unmaps `fd`; returns the entry and whether it was the last fd of
    /// its socket in any process.
    pub fn take(&self, c: &mut Core<'_>, fd: libc::c_int) -> Option<(Entry, bool)> {
        let slot = usize::try_from(fd).ok().and_then(|i| self.table.get(i))?;
        let e = Entry::unpack(slot.swap(0, Ordering::AcqRel))?;
        let last = c
            .fd_unref(e.id, crate::state::process_slot())
            .map_or(true, |n| n == 0);
        Some((e, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for (idx, inc, tcp, nb) in [
            (0, 1, true, false),
            (0xf_ffff, u32::MAX, false, true),
            (12345, 7, true, true),
        ] {
            let e = Entry {
                id: SocketId::new(idx, inc),
                tcp,
                nonblock: nb,
                timeo: !nb,
                v6: nb,
                connecting: !nb,
            };
            assert_eq!(Entry::unpack(e.pack()), Some(e));
        }
        assert_eq!(Entry::unpack(0), None);
    }
}
