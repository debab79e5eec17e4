//! The shared-memory arena: one `/dev/shm` file holding everything a stack knows.
//!
//! The file starts with an [`ArenaHeader`] (magic, layout stamp, config,
//! creator, region offsets, the stack lock and the counters), followed by
//! fixed-capacity tables sized from the [`StackConfig`] and the packet-buffer
//! data region. Only `#[repr(C)]` plain data, atomics and u32 indices live in
//! it: never pointers, so any process can map it at any address.
//!
//! A new arena is built in a temporary file and linked to its final name only
//! once it is complete, so no other process can ever see a half-built arena.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::{align_of, size_of};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::counters::StackCounters;
use crate::iface::arp_cache::ArpEntry;
use crate::iface::IfaceConfig;
use crate::lock::StackLock;
use crate::pool::{PktMeta, QNode, BUF_SIZE};
use crate::socket::SocketSlot;
use crate::timer::{TimerEntry, TimerWheelHdr};

/// First eight bytes of every arena file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RBYPASS1");
/// Directory holding arena files.
pub const SHM_DIR: &str = "/dev/shm";
/// File-name prefix of arena files, so stackdump can find them.
pub const FILE_PREFIX: &str = "rbypass-";
/// Longest stack name accepted.
pub const MAX_NAME_LEN: usize = 32;

/// Layout stamp of this build: a hash of the stack crate's sources and of the
/// sizes of every type stored in the arena. Arenas with another stamp are
/// refused.
pub const LAYOUT_STAMP: u64 = {
    let src = env!("RBYPASS_LAYOUT_SRC_HASH").as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < src.len() {
        h ^= src[i] as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
        i += 1;
    }
    let sizes = [
        size_of::<ArenaHeader>(),
        size_of::<CoreState>(),
        size_of::<SocketSlot>(),
        size_of::<PktMeta>(),
        size_of::<QNode>(),
        size_of::<ArpEntry>(),
        size_of::<TimerEntry>(),
        size_of::<crate::tcp::tcb::Tcb>(),
        BUF_SIZE,
    ];
    let mut j = 0;
    while j < sizes.len() {
        h ^= sizes[j] as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
        j += 1;
    }
    h
};

/// Capacities of a stack, fixed when its arena is created.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// Socket table size.
    pub max_sockets: u32,
    /// Number of packet buffers (each [`BUF_SIZE`] bytes).
    pub max_bufs: u32,
    /// ARP cache entries.
    pub arp_entries: u32,
    /// Frames held per unresolved neighbour while ARP resolves.
    pub arp_pending_max: u32,
    /// Timer-wheel slots (a power of two).
    pub timer_slots: u32,
    /// Default socket receive buffer, bytes (Linux's rmem_default).
    pub rcvbuf_default: u32,
    /// Default socket send buffer, bytes (Linux's wmem_default).
    pub sndbuf_default: u32,
    /// Timer tick in microseconds.
    pub timer_tick_us: u32,
    /// TCP congestion control for new connections ([`crate::tcp::cc::CcAlgo`] as u8).
    pub tcp_cc: u8,
    /// 1: restart from the initial window after an idle RTO (Linux's
    /// `tcp_slow_start_after_idle`, on by default); 0: keep cwnd.
    pub tcp_slow_start_after_idle: u8,
    pub _pad: [u8; 2],
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            max_sockets: 1024,
            max_bufs: 8192,
            arp_entries: 256,
            arp_pending_max: 16,
            timer_slots: 1024,
            rcvbuf_default: 212_992,
            sndbuf_default: 212_992,
            timer_tick_us: 1000,
            tcp_cc: crate::tcp::cc::CcAlgo::Cubic as u8,
            tcp_slow_start_after_idle: 1,
            _pad: [0; 2],
        }
    }
}

impl StackConfig {
    /// Checks the capacities are usable, before any memory is touched.
    pub fn validate(&self) -> Result<(), ArenaError> {
        let bad = |what: &str| Err(ArenaError::BadConfig(what.to_string()));
        if self.max_sockets == 0 || self.max_sockets > 1 << 20 {
            return bad("max_sockets must be 1..=1048576");
        }
        if self.max_bufs < 64 || self.max_bufs > 1 << 22 {
            return bad("max_bufs must be 64..=4194304");
        }
        if self.arp_entries == 0 || self.arp_entries > 1 << 16 {
            return bad("arp_entries must be 1..=65536");
        }
        if !self.timer_slots.is_power_of_two() || self.timer_slots > 1 << 20 {
            return bad("timer_slots must be a power of two <= 1048576");
        }
        if self.timer_tick_us == 0 {
            return bad("timer_tick_us must be > 0");
        }
        Ok(())
    }

    /// Number of timers: one per ARP entry plus [`TIMERS_PER_SOCKET`] per socket.
    pub fn max_timers(&self) -> u32 {
        self.arp_entries + self.max_sockets * TIMERS_PER_SOCKET
    }

    /// Queue nodes: two per buffer, so each buffer can sit on two queues at once on average.
    pub fn max_qnodes(&self) -> u32 {
        self.max_bufs * 2
    }

    /// Demux hash buckets.
    pub fn hash_buckets(&self) -> u32 {
        self.max_sockets.next_power_of_two() * 2
    }
}

/// Timers reserved per socket (TCP will need retransmit, delayed ACK, keepalive, TIME_WAIT).
pub const TIMERS_PER_SOCKET: u32 = 4;

/// Where each table sits in the arena, in bytes from the start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub core_off: u64,
    pub pool_hdr_off: u64,
    pub timer_hdr_off: u64,
    pub sockets_off: u64,
    pub tcbs_off: u64,
    pub conn_hash_off: u64,
    pub sock_hash_off: u64,
    pub qnodes_off: u64,
    pub arp_off: u64,
    pub timer_slots_off: u64,
    pub timer_entries_off: u64,
    pub loop_ring_off: u64,
    pub buf_meta_off: u64,
    pub buf_free_off: u64,
    pub buf_data_off: u64,
    pub total: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl Layout {
    /// Computes the layout for a config. The data region is page aligned so it
    /// can serve as AF_XDP UMEM or a DMA region.
    pub fn for_config(c: &StackConfig) -> Layout {
        let mut off = size_of::<ArenaHeader>() as u64;
        let mut place = |size: usize, n: u64, align: usize| {
            let start = align_up(off, align.max(64) as u64);
            off = start + size as u64 * n;
            start
        };
        let core_off = place(size_of::<CoreState>(), 1, align_of::<CoreState>());
        let pool_hdr_off = place(size_of::<crate::pool::PoolHdr>(), 1, 64);
        let timer_hdr_off = place(size_of::<TimerWheelHdr>(), 1, 64);
        let sockets_off = place(
            size_of::<SocketSlot>(),
            c.max_sockets.into(),
            align_of::<SocketSlot>(),
        );
        let tcbs_off = place(
            size_of::<crate::tcp::tcb::Tcb>(),
            c.max_sockets.into(),
            align_of::<crate::tcp::tcb::Tcb>(),
        );
        let conn_hash_off = place(4, c.hash_buckets().into(), 4);
        let sock_hash_off = place(4, c.hash_buckets().into(), 4);
        let qnodes_off = place(
            size_of::<QNode>(),
            c.max_qnodes().into(),
            align_of::<QNode>(),
        );
        let arp_off = place(
            size_of::<ArpEntry>(),
            c.arp_entries.into(),
            align_of::<ArpEntry>(),
        );
        let timer_slots_off = place(4, c.timer_slots.into(), 4);
        let timer_entries_off = place(
            size_of::<TimerEntry>(),
            c.max_timers().into(),
            align_of::<TimerEntry>(),
        );
        let loop_ring_off = place(4, c.max_bufs.into(), 4);
        let buf_meta_off = place(
            size_of::<PktMeta>(),
            c.max_bufs.into(),
            align_of::<PktMeta>(),
        );
        let buf_free_off = place(4, c.max_bufs.into(), 4);
        let buf_data_off = place(BUF_SIZE, c.max_bufs.into(), 4096);
        let total = align_up(off, 4096);
        Layout {
            core_off,
            pool_hdr_off,
            timer_hdr_off,
            sockets_off,
            tcbs_off,
            conn_hash_off,
            sock_hash_off,
            qnodes_off,
            arp_off,
            timer_slots_off,
            timer_entries_off,
            loop_ring_off,
            buf_meta_off,
            buf_free_off,
            buf_data_off,
            total,
        }
    }
}

/// Lifecycle of an arena, in [`ArenaHeader::state`].
pub mod arena_state {
    /// Being built by its creator; not yet linked to its name.
    pub const BUILDING: u32 = 0;
    /// Ready for use.
    pub const READY: u32 = 1;
}

/// The fixed header at offset 0. Everything here is either written once before
/// the arena becomes visible, or atomic.
#[repr(C)]
pub struct ArenaHeader {
    pub magic: u64,
    pub layout_stamp: u64,
    pub state: AtomicU32,
    pub creator_pid: u32,
    pub creator_uid: u32,
    pub _pad0: u32,
    pub created_unix_ns: u64,
    pub total_size: u64,
    /// NUL-padded stack name (empty for a private stack).
    pub name: [u8; MAX_NAME_LEN],
    pub config: StackConfig,
    pub layout: Layout,
    /// Seqlock generation for [`CoreState::published`]: odd while a writer is
    /// changing it, so a reader in another process can detect a torn read.
    pub pub_gen: AtomicU64,
    pub lock: StackLock,
    /// Bumped whenever frames were processed, so threads sleeping in blocking
    /// calls (any process) re-check their sockets; a futex word.
    pub wake_seq: AtomicU32,
    /// Threads sleeping on `wake_seq`.
    pub sleepers: AtomicU32,
    pub counters: StackCounters,
    /// Processes attached to the stack (changed without the stack lock).
    pub procs: crate::procs::ProcTable,
}

/// What a read-only observer may copy out of [`CoreState`] under the seqlock.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub iface: IfaceConfig,
    pub sockets_in_use: u32,
    pub bufs_in_use: u32,
    /// Bumped with every change, so a reader can tell two snapshots apart.
    pub change_count: u64,
    /// The device the stack runs on and how (`xdp:eth0 native copy 4q`),
    /// NUL-padded; empty for the in-arena loopback.
    pub nic: [u8; 48],
}

impl Default for Published {
    fn default() -> Self {
        Published {
            iface: IfaceConfig::default(),
            sockets_in_use: 0,
            bufs_in_use: 0,
            change_count: 0,
            nic: [0; 48],
        }
    }
}

impl Published {
    /// The device description (see [`Published::nic`]); `loop` if none.
    pub fn nic_desc(&self) -> String {
        let end = self
            .nic
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.nic.len());
        if end == 0 {
            return "loop".into();
        }
        String::from_utf8_lossy(&self.nic[..end]).into_owned()
    }
}

/// Mutable stack-wide state, only touched with the stack lock held.
#[repr(C)]
pub struct CoreState {
    pub published: Published,
    /// Head of the free socket list.
    pub sock_free: u32,
    /// Sockets open (slots not free).
    pub sockets_open: u32,
    /// Next ephemeral port to try.
    pub ephemeral_next: u16,
    pub _pad0: u16,
    /// Frames waiting for the NIC.
    pub tx_queue: crate::pool::PktQueue,
    /// Frames addressed to the stack itself (and, with the loop NIC, every frame).
    pub loop_head: u32,
    pub loop_tail: u32,
    /// Work posted by threads that found the lock taken (see [`crate::lock`]).
    pub pending_work: u32,
    /// Free ARP entries are found by scanning; this is the next one to look at.
    pub arp_clock: u32,
    /// Last time passed to the stack, ns.
    pub last_now_ns: u64,
    /// ICMP error rate limiter: tokens left and when they were last refilled.
    pub icmp_tokens: u32,
    /// Bumped whenever a socket takes, changes or gives up a local address
    /// or port, so a device filter knows to re-read the stack's flows.
    pub binding_gen: u32,
    pub icmp_refill_ns: u64,
    /// Positions in a device's rings that every process driving the device
    /// must agree on (a fork child drives it too, with its own copy of the
    /// device's memory): the AF_PACKET ring cursors.
    pub nic_cursor: [u32; 4],
    /// Multicast groups joined by the stack's sockets.
    pub mcast: crate::iface::mcast::GroupTable,
}

/// Errors of creating or attaching an arena.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    #[error("invalid stack config: {0}")]
    BadConfig(String),
    #[error("invalid stack name {0:?}: use 1-32 characters from [A-Za-z0-9_.-]")]
    BadName(String),
    #[error("stack {0:?} already exists")]
    Exists(String),
    #[error("no stack {0:?} (is the process that created it running?)")]
    NotFound(String),
    #[error("{path}: not an rbypass arena (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: made by a different rbypass build (layout stamp {found:#018x}, this build {expected:#018x}); use the same rbypass build for every process of a stack")]
    Stamp {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path}: arena is truncated ({size} bytes, header says {expected})")]
    Truncated {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error("{path}: the stack belongs to uid {owner} and is not shared with you (uid {me}); its owner can share it with RBYPASS_SHARE_WITH={me}")]
    NotShared { path: PathBuf, owner: u32, me: u32 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArenaError + '_ {
    move |source| ArenaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a stack name: 1-32 characters from `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<(), ArenaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ArenaError::BadName(name.to_string()))
    }
}

/// Path of the arena file of a named stack.
pub fn path_for_name(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{FILE_PREFIX}{name}"))
}

/// Path of the arena file of a private (unnamed) stack of a process.
pub fn path_for_pid(pid: u32) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{FILE_PREFIX}pid{pid}"))
}

/// A mapping of an arena file, read-write or read-only.
pub struct Arena {
    map: MmapRaw,
    path: PathBuf,
    writable: bool,
    /// Whether dropping this mapping should remove the file (the creator of a private stack).
    unlink_on_drop: bool,
    /// (device, inode) of the mapped file, to tell whether the path still names it.
    ident: (u64, u64),
}

// SAFETY: the arena is plain shared memory; all concurrent access to it goes
// through atomics or happens under the stack lock, whichever process holds it.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl Arena {
    /// Creates and initialises a new arena at `path` (which must not exist).
    /// `init` fills in the tables while the file is still private.
    pub fn create(
        path: &Path,
        name: &str,
        config: &StackConfig,
        init: impl FnOnce(&Arena),
    ) -> Result<Arena, ArenaError> {
        config.validate()?;
        let layout = Layout::for_config(config);
        let tmp = path.with_file_name(format!(
            ".{}.tmp{}",
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let result = (|| {
            file.set_len(layout.total).map_err(io_err(&tmp))?;
            let map = MmapOptions::new().map_raw(&file).map_err(io_err(&tmp))?;
            let meta = file.metadata().map_err(io_err(&tmp))?;
            let arena = Arena {
                map,
                path: path.to_path_buf(),
                writable: true,
                unlink_on_drop: false,
                ident: (meta.dev(), meta.ino()),
            };
            arena.init_header(name, config, &layout);
            init(&arena);
            arena
                .header()
                .state
                .store(arena_state::READY, Ordering::Release);
            // Publish atomically: link fails if the name exists, so two creators never both win.
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(arena),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(ArenaError::Exists(path.display().to_string()))
                }
                Err(e) => Err(ArenaError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }),
            }
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    fn init_header(&self, name: &str, config: &StackConfig, layout: &Layout) {
        let mut name_buf = [0u8; MAX_NAME_LEN];
        let n = name.len().min(MAX_NAME_LEN);
        name_buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let hdr = ArenaHeader {
            magic: MAGIC,
            layout_stamp: LAYOUT_STAMP,
            state: AtomicU32::new(arena_state::BUILDING),
            creator_pid: std::process::id(),
            // SAFETY: getuid has no preconditions and cannot fail.
            creator_uid: unsafe { libc::getuid() },
            _pad0: 0,
            created_unix_ns: now,
            total_size: layout.total,
            name: name_buf,
            config: *config,
            layout: *layout,
            pub_gen: AtomicU64::new(0),
            lock: StackLock::new(),
            wake_seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            counters: StackCounters::default(),
            procs: crate::procs::ProcTable::new(),
        };
        // SAFETY: the mapping is at least `layout.total` bytes, page aligned,
        // and not yet visible to any other process.
        unsafe { std::ptr::write(self.map.as_mut_ptr().cast::<ArenaHeader>(), hdr) };
    }

    /// Attaches read-write to an existing arena.
    pub fn open(path: &Path) -> Result<Arena, ArenaError> {
        Self::open_inner(path, true)
    }

    /// Attaches read-only: for observers such as stackdump. Never writes.
    pub fn open_readonly(path: &Path) -> Result<Arena, ArenaError> {
        Self::open_inner(path, false)
    }

    fn open_inner(path: &Path, writable: bool) -> Result<Arena, ArenaError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ArenaError::NotFound(path.display().to_string())
                } else if e.kind() == io::ErrorKind::PermissionDenied {
                    ArenaError::NotShared {
                        path: path.to_path_buf(),
                        owner: fs::metadata(path).map_or(u32::MAX, |m| m.uid()),
                        // SAFETY: getuid has no preconditions.
                        me: unsafe { libc::getuid() },
                    }
                } else {
                    ArenaError::Io {
                        path: path.to_path_buf(),
                        source: e,
                    }
                }
            })?;
        Self::check_file(path, &file)?;
        let map = if writable {
            MmapOptions::new().map_raw(&file)
        } else {
            MmapOptions::new().map_raw_read_only(&file)
        }
        .map_err(io_err(path))?;
        let meta = file.metadata().map_err(io_err(path))?;
        Ok(Arena {
            map,
            path: path.to_path_buf(),
            writable,
            unlink_on_drop: false,
            ident: (meta.dev(), meta.ino()),
        })
    }

    fn check_file(path: &Path, file: &File) -> Result<(), ArenaError> {
        let size = file.metadata().map_err(io_err(path))?.size();
        let hdr_len = size_of::<ArenaHeader>() as u64;
        if size < hdr_len {
            return Err(ArenaError::Truncated {
                path: path.to_path_buf(),
                size,
                expected: hdr_len,
            });
        }
        let mut buf = [0u8; 16];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, 0).map_err(io_err(path))?;
        let magic = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        let stamp = u64::from_le_bytes(buf[8..].try_into().unwrap_or_default());
        if magic != MAGIC {
            return Err(ArenaError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        if stamp != LAYOUT_STAMP {
            return Err(ArenaError::Stamp {
                path: path.to_path_buf(),
                found: stamp,
                expected: LAYOUT_STAMP,
            });
        }
        let mut tot = [0u8; 8];
        let off = std::mem::offset_of!(ArenaHeader, total_size) as u64;
        std::os::unix::fs::FileExt::read_exact_at(file, &mut tot, off).map_err(io_err(path))?;
        let expected = u64::from_le_bytes(tot);
        if size < expected {
            return Err(ArenaError::Truncated {
                path: path.to_path_buf(),
                size,
                expected,
            });
        }
        Ok(())
    }

    /// Marks the file for removal when this mapping is dropped.
    pub fn set_unlink_on_drop(&mut self, yes: bool) {
        self.unlink_on_drop = yes;
    }

    /// Path of the arena file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the arena's path still names this very file (not removed,
    /// nor replaced by a new stack of the same name).
    pub fn is_linked(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ident)
    }

    /// Removes the arena's path if it still names this file; returns
    /// whether it did. A stack created under the same name since is left
    /// alone (the check and the unlink are not one step, but a new file
    /// needs a create and a link in between, which the check sees).
    pub fn unlink_if_same(&self) -> bool {
        self.is_linked() && fs::remove_file(&self.path).is_ok()
    }

    /// Whether this mapping may be written.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Base address of the mapping in this process.
    pub fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Mapping length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: an arena has at least a header.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The header. Every field is either immutable after creation or atomic.
    pub fn header(&self) -> &ArenaHeader {
        // SAFETY: the file was checked to be at least a header long, the map is
        // page aligned, and ArenaHeader is plain data plus atomics.
        unsafe { &*self.map.as_ptr().cast::<ArenaHeader>() }
    }

    /// Raw pointer to `n` values of `T` at byte offset `off`, bounds checked.
    pub(crate) fn region<T>(&self, off: u64, n: u64) -> *mut T {
        let end = off.saturating_add(n.saturating_mul(size_of::<T>() as u64));
        assert!(
            end <= self.map.len() as u64 && off.is_multiple_of(align_of::<T>() as u64),
            "arena region out of bounds"
        );
        // SAFETY: just checked to be inside the mapping.
        unsafe { self.map.as_mut_ptr().add(off as usize).cast::<T>() }
    }

    /// A table of `n` values of `T` at byte offset `off`, bounds checked.
    ///
    /// # Safety
    /// No other reference to that memory may be alive in this process while
    /// the slice is (the stack lock gives that), and the mapping is writable.
    // Shared memory: exclusivity comes from the stack lock, not from `&mut self`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn table<T>(&self, off: u64, n: u32) -> &mut [T] {
        // SAFETY: `region` checked bounds and alignment; exclusivity is the caller's.
        unsafe { std::slice::from_raw_parts_mut(self.region::<T>(off, u64::from(n)), n as usize) }
    }

    /// Copies the published part of the core state with the seqlock, so a
    /// reader in another process never sees a torn value.
    pub fn snapshot(&self) -> Published {
        let hdr = self.header();
        let p = self.region::<CoreState>(hdr.layout.core_off, 1);
        loop {
            let g1 = hdr.pub_gen.load(Ordering::Acquire);
            if g1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: in bounds (region checked); a volatile copy of plain data,
            // validated by the generation check below.
            let v = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).published)) };
            fence(Ordering::Acquire);
            if hdr.pub_gen.load(Ordering::Relaxed) == g1 {
                return v;
            }
        }
    }

    /// Stack name as stored in the header.
    pub fn name(&self) -> String {
        let n = &self.header().name;
        let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
        String::from_utf8_lossy(&n[..end]).into_owned()
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("path", &self.path)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Lists the arena files on this machine.
pub fn list_arena_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(SHM_DIR)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(FILE_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
