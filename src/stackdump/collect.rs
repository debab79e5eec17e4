//! What stackdump shows, collected into plain structs: the table and the
//! JSON are both rendered from these, so they cannot disagree.
//!
//! Arenas are mapped read-only and never locked. Items whose read did not
//! settle (see `rbypass_stack::observe`) are listed in a `busy` field and
//! printed as "busy, retry" instead of being shown torn.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use serde::Serialize;

use rbypass_stack::arena::{self, Arena, ArenaError};
use rbypass_stack::counters;
use rbypass_stack::iface::IfaceConfig;
use rbypass_stack::observe::{self, Read};
use rbypass_stack::procs;
use rbypass_stack::socket::{flag, kind};
use rbypass_stack::tcp::tcb::tflag;

/// An arena that could not be opened.
#[derive(Serialize, Clone, Debug)]
pub struct Unreadable {
    pub name: String,
    pub path: String,
    /// Owner of the file, when it could be looked at.
    pub owner_uid: Option<u32>,
    /// True when the file belongs to someone else (EACCES).
    pub not_visible: bool,
    pub error: String,
}

impl Unreadable {
    /// The one line printed for it.
    pub fn message(&self) -> String {
        match (self.not_visible, self.owner_uid) {
            (true, Some(uid)) => format!(
                "{}: owned by uid {uid}; not visible to you (run as that user or root)",
                self.name
            ),
            (true, None) => format!(
                "{}: not visible to you (run as its owner or root)",
                self.name
            ),
            _ => format!("{}: unreadable: {}", self.name, self.error),
        }
    }
}

/// One arena file, opened read-only if possible.
pub struct Target {
    pub name: String,
    pub arena: Result<Arena, Unreadable>,
}

/// The stack name an arena file stands for (`/dev/shm/rbypass-NAME`).
pub fn name_from_path(path: &Path) -> String {
    let f = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    f.strip_prefix(arena::FILE_PREFIX).unwrap_or(&f).to_owned()
}

/// Opens one arena file read-only, or says why it cannot be.
pub fn open(path: &Path) -> Target {
    let name = name_from_path(path);
    let arena = Arena::open_readonly(path).map_err(|e| {
        let denied = match &e {
            ArenaError::NotShared { .. } => true,
            ArenaError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            _ => false,
        };
        Unreadable {
            name: name.clone(),
            path: path.display().to_string(),
            owner_uid: std::fs::metadata(path).ok().map(|m| m.uid()),
            not_visible: denied,
            error: e.to_string(),
        }
    });
    Target { name, arena }
}

/// Opens every arena, or only the one named (an error if there is none).
pub fn targets(only: Option<&str>) -> Result<Vec<Target>, String> {
    let all: Vec<Target> = arena::list_arena_files()
        .iter()
        .filter(|p| only.is_none_or(|n| name_from_path(p) == n))
        .map(|p| open(p))
        .collect();
    if let Some(n) = only {
        if all.is_empty() {
            return Err(format!("no stack {n}"));
        }
    }
    Ok(all)
}

/// Splits targets into readable arenas and unreadable ones.
pub fn split(ts: Vec<Target>) -> (Vec<(String, Arena)>, Vec<Unreadable>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for t in ts {
        match t.arena {
            Ok(a) => ok.push((t.name, a)),
            Err(u) => bad.push(u),
        }
    }
    (ok, bad)
}

/// Whether the creator of an arena still runs: its pid exists and did not
/// start after the arena was made (a recycled pid does not count).
pub fn creator_alive(a: &Arena) -> bool {
    let h = a.header();
    if !procs::is_alive(h.creator_pid, 0) {
        return false;
    }
    match (procs::start_time_of(h.creator_pid), boot_unix_ns()) {
        (Some(ticks), Some(boot)) => {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let started = boot + ticks * (1_000_000_000 / hz);
            // Ticks and boot time are coarse: allow a few seconds.
            started <= h.created_unix_ns + 5_000_000_000
        }
        _ => true,
    }
}

fn boot_unix_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(secs * 1_000_000_000)
}

// ----- the interface and the config -----

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct IfaceInfo {
    pub ip: String,
    pub prefix_len: u8,
    pub mac: String,
    pub mtu: u16,
    pub gateway: Option<String>,
}

impl IfaceInfo {
    fn of(c: &IfaceConfig) -> IfaceInfo {
        IfaceInfo {
            ip: c.ip().to_string(),
            prefix_len: c.prefix_len,
            mac: c.mac().to_string(),
            mtu: c.mtu,
            gateway: c.gateway().map(|g| g.to_string()),
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct LockInfo {
    pub locked: bool,
    pub owner_pid: Option<u32>,
    pub owner_tid: Option<u32>,
    /// Times a thread found the lock taken.
    pub contended: u64,
}

/// One row of `stacks`.
#[derive(Serialize, Clone, Debug)]
pub struct StackRow {
    pub name: String,
    pub path: String,
    pub creator_pid: u32,
    pub creator_alive: bool,
    pub creator_uid: u32,
    pub created_unix_ns: u64,
    /// Entries in the stack's process table, and how many of them run.
    pub processes: usize,
    pub live_processes: usize,
    pub sockets: Option<u32>,
    pub bufs_in_use: Option<u32>,
    pub max_bufs: u32,
    pub lock: LockInfo,
    pub iface: Option<IfaceInfo>,
    /// The device (`loop`, `xdp:eth0 native copy 4q`, ...).
    pub nic: Option<String>,
    /// Items that could not be read consistently.
    pub busy: Vec<String>,
}

pub fn stack_row(name: &str, a: &Arena) -> StackRow {
    let h = a.header();
    let procs = h.procs.snapshot();
    let p = observe::published(a);
    let locked = h.lock.is_locked();
    StackRow {
        name: name.to_owned(),
        path: a.path().display().to_string(),
        creator_pid: h.creator_pid,
        creator_alive: creator_alive(a),
        creator_uid: h.creator_uid,
        created_unix_ns: h.created_unix_ns,
        processes: procs.len(),
        live_processes: procs.iter().filter(|p| p.alive).count(),
        sockets: p.map(|p| p.sockets_in_use),
        bufs_in_use: p.map(|p| p.bufs_in_use),
        max_bufs: h.config.max_bufs,
        lock: LockInfo {
            locked,
            owner_pid: locked.then(|| h.lock.owner_pid()),
            owner_tid: locked.then(|| h.lock.owner_tid()),
            contended: h.lock.contended.load(Ordering::Relaxed),
        },
        iface: p.map(|p| IfaceInfo::of(&p.iface)),
        nic: p.map(|p| p.nic_desc()),
        busy: if p.is_none() {
            vec!["published state".into()]
        } else {
            vec![]
        },
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct ConfigInfo {
    pub max_sockets: u32,
    pub max_bufs: u32,
    pub arp_entries: u32,
    pub arp_pending_max: u32,
    pub timer_slots: u32,
    pub timer_tick_us: u32,
    pub rcvbuf_default: u32,
    pub sndbuf_default: u32,
    pub tcp_cc: String,
    pub tcp_slow_start_after_idle: bool,
    /// Derived sizes.
    pub max_timers: u32,
    pub max_qnodes: u32,
    pub hash_buckets: u32,
    pub arena_bytes: u64,
}

/// `config` for one stack.
#[derive(Serialize, Clone, Debug)]
pub struct StackConfigReport {
    pub stack: String,
    pub config: ConfigInfo,
    pub iface: Option<IfaceInfo>,
    pub nic: Option<String>,
    pub busy: Vec<String>,
}

pub fn config_of(name: &str, a: &Arena) -> StackConfigReport {
    let h = a.header();
    let c = h.config;
    let p = observe::published(a);
    StackConfigReport {
        stack: name.to_owned(),
        config: ConfigInfo {
            max_sockets: c.max_sockets,
            max_bufs: c.max_bufs,
            arp_entries: c.arp_entries,
            arp_pending_max: c.arp_pending_max,
            timer_slots: c.timer_slots,
            timer_tick_us: c.timer_tick_us,
            rcvbuf_default: c.rcvbuf_default,
            sndbuf_default: c.sndbuf_default,
            tcp_cc: rbypass_stack::tcp::cc::CcAlgo::from_u8(c.tcp_cc)
                .name()
                .to_owned(),
            tcp_slow_start_after_idle: c.tcp_slow_start_after_idle != 0,
            max_timers: c.max_timers(),
            max_qnodes: c.max_qnodes(),
            hash_buckets: c.hash_buckets(),
            arena_bytes: h.total_size,
        },
        iface: p.map(|p| IfaceInfo::of(&p.iface)),
        nic: p.map(|p| p.nic_desc()),
        busy: if p.is_none() {
            vec!["published state".into()]
        } else {
            vec![]
        },
    }
}

// ----- processes -----

#[derive(Serialize, Clone, Debug)]
pub struct ProcStack {
    pub stack: String,
    /// Entry in that stack's process table.
    pub slot: usize,
    pub threads: u32,
    pub attached_unix_ns: u64,
    pub nic_fds: Vec<i32>,
}

/// One row of `processes`: a pid and the stacks it uses.
#[derive(Serialize, Clone, Debug)]
pub struct ProcessRow {
    pub pid: u32,
    pub command: String,
    pub alive: bool,
    pub start_time: u64,
    /// Threads using the stacks (summed over them).
    pub threads: u32,
    /// When it first attached to one of them (Unix ns).
    pub attached_unix_ns: u64,
    pub stacks: Vec<ProcStack>,
}

pub fn processes_of(arenas: &[(String, Arena)]) -> Vec<ProcessRow> {
    let mut by_pid: BTreeMap<(u32, u64), ProcessRow> = BTreeMap::new();
    for (name, a) in arenas {
        for p in a.header().procs.snapshot() {
            let row = by_pid
                .entry((p.pid, p.start_time))
                .or_insert_with(|| ProcessRow {
                    pid: p.pid,
                    command: p.comm.clone(),
                    alive: p.alive,
                    start_time: p.start_time,
                    threads: 0,
                    attached_unix_ns: p.attached_unix_ns,
                    stacks: vec![],
                });
            row.threads += p.threads;
            row.attached_unix_ns = row.attached_unix_ns.min(p.attached_unix_ns);
            row.stacks.push(ProcStack {
                stack: name.clone(),
                slot: p.slot,
                threads: p.threads,
                attached_unix_ns: p.attached_unix_ns,
                nic_fds: p.nic_fds,
            });
        }
    }
    by_pid.into_values().collect()
}

// ----- sockets -----

fn proto_name(k: u8) -> &'static str {
    match k {
        kind::UDP => "udp",
        kind::TCP => "tcp",
        _ => "?",
    }
}

/// One row of `netstat`.
#[derive(Serialize, Clone, Debug)]
pub struct SocketRow {
    pub stack: String,
    /// Slot index: what `stackdump socket ID` takes.
    pub id: u32,
    /// The full handle (incarnation << 32 | index).
    pub handle: u64,
    pub proto: String,
    pub state: String,
    pub recv_q: u32,
    pub send_q: u32,
    pub local: String,
    pub peer: String,
    pub pid: u32,
    pub cwnd: Option<u32>,
    pub rtt_us: Option<u64>,
    pub retransmits: Option<u32>,
    pub rx_drop: u64,
}

/// `netstat` of one stack; `busy` lists the sockets that could not be read.
pub struct Sockets {
    pub rows: Vec<SocketRow>,
    pub busy: Vec<String>,
}

fn socket_counter(a: &Arena, id: rbypass_stack::SocketId, name: &str) -> u64 {
    rbypass_stack::stack::socket_counters_of(a, id)
        .unwrap_or_default()
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}

pub fn sockets_of(name: &str, a: &Arena) -> Sockets {
    let mut rows = Vec::new();
    let mut busy = Vec::new();
    for (i, r) in observe::slots(a) {
        let Read::Ok(s) = r else {
            busy.push(format!("socket {i}"));
            continue;
        };
        let peer = if s.flags & flag::CONNECTED != 0 {
            s.remote.to_string()
        } else {
            "*:*".into()
        };
        let local = if s.flags & flag::BOUND != 0 || s.kind == kind::TCP {
            s.local.to_string()
        } else {
            "*:*".into()
        };
        let mut row = SocketRow {
            stack: name.to_owned(),
            id: i,
            handle: s.id.0,
            proto: proto_name(s.kind).into(),
            state: "-".into(),
            recv_q: s.rxq_bytes,
            send_q: 0,
            local,
            peer,
            pid: s.owner_pid,
            cwnd: None,
            rtt_us: None,
            retransmits: None,
            rx_drop: socket_counter(a, s.id, "rx_drop_rcvbuf")
                + socket_counter(a, s.id, "rx_drop_nobuf"),
        };
        if s.kind == kind::TCP {
            match observe::tcp(a, i) {
                Read::Ok(Some(t)) => {
                    row.state = t.state.name().into();
                    row.recv_q = t.rcvq_bytes;
                    row.send_q = t.snd_bytes;
                    row.cwnd = Some(t.cwnd);
                    row.rtt_us = Some(t.srtt_us);
                    row.retransmits = Some(t.retransmits);
                }
                // Closed between the two reads.
                Read::Ok(None) => continue,
                Read::Busy => {
                    busy.push(format!("socket {i} (tcp)"));
                    continue;
                }
            }
        }
        rows.push(row);
    }
    Sockets { rows, busy }
}

/// Names of set bits, from a table.
fn decode(bits: u32, names: &[(u32, &'static str)]) -> Vec<String> {
    names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

const SOCKET_FLAGS: &[(u32, &str)] = &[
    (flag::BOUND as u32, "BOUND"),
    (flag::CONNECTED as u32, "CONNECTED"),
    (flag::BROADCAST as u32, "BROADCAST"),
    (flag::EPHEMERAL as u32, "EPHEMERAL"),
    (flag::REUSEADDR as u32, "REUSEADDR"),
];

const TCP_FLAGS: &[(u32, &str)] = &[
    (tflag::TS, "TS"),
    (tflag::SACK, "SACK"),
    (tflag::WSCALE, "WSCALE"),
    (tflag::NODELAY, "NODELAY"),
    (tflag::CORK, "CORK"),
    (tflag::KEEPALIVE, "KEEPALIVE"),
    (tflag::LINGER0, "LINGER0"),
    (tflag::FIN_PENDING, "FIN_PENDING"),
    (tflag::FIN_SENT, "FIN_SENT"),
    (tflag::FIN_RCVD, "FIN_RCVD"),
    (tflag::ORPHAN, "ORPHAN"),
    (tflag::ACK_PENDING, "ACK_PENDING"),
    (tflag::ACK_NOW, "ACK_NOW"),
    (tflag::RD_SHUT, "RD_SHUT"),
    (tflag::RECOVERY, "RECOVERY"),
    (tflag::IN_ACCEPTQ, "IN_ACCEPTQ"),
    (tflag::PERSIST, "PERSIST"),
    (tflag::LOSS, "LOSS"),
    (tflag::TLP_ARMED, "TLP_ARMED"),
    (tflag::TLP_OUT, "TLP_OUT"),
];

#[derive(Serialize, Clone, Debug)]
pub struct Queue {
    pub bufs: u32,
    pub bytes: u32,
}

#[derive(Serialize, Clone, Debug)]
pub struct TcpDetail {
    pub state: String,
    pub flags: Vec<String>,
    pub recv_queue: Queue,
    pub ooo_queue: Queue,
    pub send_queue: Queue,
    pub in_flight: u32,
    pub rcvbuf: u32,
    pub sndbuf: u32,
    pub mss: u32,
    pub snd_wnd: u32,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub srtt_us: u64,
    pub rto_us: u64,
    pub retransmits: u32,
    pub dupacks: u32,
    pub ooo_segments: u32,
    pub rto_count: u32,
    pub cc: String,
    pub accept_queue: u32,
    pub syn_queue: u32,
    pub backlog: u32,
    pub listener: Option<u32>,
    pub keepidle_s: u32,
    pub keepintvl_s: u32,
    pub keepcnt: u32,
    pub user_timeout_ms: u32,
}

#[derive(Serialize, Clone, Debug)]
pub struct CounterRow {
    pub name: String,
    pub value: u64,
    pub description: String,
}

/// Everything about one socket (`socket ID`).
#[derive(Serialize, Clone, Debug)]
pub struct SocketDetail {
    pub stack: String,
    pub id: u32,
    pub handle: u64,
    pub incarnation: u32,
    pub proto: String,
    pub flags: Vec<String>,
    pub local: String,
    pub remote: String,
    pub owner_pid: u32,
    pub fd_refs: u32,
    pub rcvbuf: u32,
    pub sndbuf: u32,
    pub so_error: i32,
    pub so_error_text: Option<String>,
    pub rx_queue: Queue,
    pub tcp: Option<TcpDetail>,
    pub timers: Vec<TimerRow>,
    pub counters: Vec<CounterRow>,
    pub busy: Vec<String>,
}

/// Reads socket `index`; `Err` for a free slot or an unreadable one.
pub fn socket_detail(name: &str, a: &Arena, index: u32) -> Result<SocketDetail, String> {
    let s = match observe::slot(a, index) {
        Read::Ok(Some(s)) => s,
        Read::Ok(None) => return Err(format!("no socket {index} in stack {name}")),
        Read::Busy => return Err(format!("{name}: socket {index}: busy, retry")),
    };
    let mut busy = vec![];
    let tcp = match observe::tcp(a, index) {
        Read::Ok(t) => t.map(|t| TcpDetail {
            state: t.state.name().into(),
            flags: decode(t.flags, TCP_FLAGS),
            recv_queue: Queue {
                bufs: t.rcvq_bufs,
                bytes: t.rcvq_bytes,
            },
            ooo_queue: Queue {
                bufs: t.oooq_bufs,
                bytes: t.oooq_bytes,
            },
            send_queue: Queue {
                bufs: t.sndq_bufs,
                bytes: t.snd_bytes,
            },
            in_flight: t.flight,
            rcvbuf: t.rcvbuf,
            sndbuf: t.sndbuf,
            mss: t.mss,
            snd_wnd: t.snd_wnd,
            cwnd: t.cwnd,
            ssthresh: t.ssthresh,
            srtt_us: t.srtt_us,
            rto_us: t.rto_us,
            retransmits: t.retransmits,
            dupacks: t.dupacks,
            ooo_segments: t.ooo_segs,
            rto_count: t.rto_count,
            cc: t.cc.into(),
            accept_queue: t.acceptq_len,
            syn_queue: t.synq_len,
            backlog: t.backlog,
            listener: t.listener,
            keepidle_s: t.keepidle_s,
            keepintvl_s: t.keepintvl_s,
            keepcnt: t.keepcnt,
            user_timeout_ms: t.user_timeout_ms,
        }),
        Read::Busy => {
            busy.push("tcp control block".into());
            None
        }
    };
    let timers = match timers_of(name, a) {
        Ok(t) => t
            .timers
            .into_iter()
            .filter(|t| t.socket == Some(index))
            .collect(),
        Err(b) => {
            busy.push(b);
            vec![]
        }
    };
    let counters = rbypass_stack::stack::socket_counters_of(a, s.id)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| CounterRow {
            name: n.into(),
            value: v,
            description: counters::describe_socket(n).into(),
        })
        .collect();
    Ok(SocketDetail {
        stack: name.to_owned(),
        id: index,
        handle: s.id.0,
        incarnation: s.id.incarnation(),
        proto: proto_name(s.kind).into(),
        flags: decode(u32::from(s.flags), SOCKET_FLAGS),
        local: s.local.to_string(),
        remote: s.remote.to_string(),
        owner_pid: s.owner_pid,
        fd_refs: s.fd_refs,
        rcvbuf: s.rcvbuf,
        sndbuf: s.sndbuf,
        so_error: s.so_error,
        so_error_text: (s.so_error != 0)
            .then(|| io::Error::from_raw_os_error(s.so_error).to_string()),
        rx_queue: Queue {
            bufs: s.rxq_bufs,
            bytes: s.rxq_bytes,
        },
        tcp,
        timers,
        counters,
        busy,
    })
}

// ----- counters -----

/// `stats` of one stack: every counter with its description.
#[derive(Serialize, Clone, Debug)]
pub struct Stats {
    pub stack: String,
    pub counters: Vec<CounterRow>,
}

/// Every stack counter's name and value, plus the lock and process-table figures.
pub fn counter_values(a: &Arena) -> Vec<(&'static str, u64)> {
    let h = a.header();
    let mut v: Vec<(&'static str, u64)> = h.counters.iter().collect();
    v.push(("lock_contended", h.lock.contended.load(Ordering::Relaxed)));
    v.push(("lock_recovered", h.lock.recovered.load(Ordering::Relaxed)));
    v.push(("proc_attaches", h.procs.attaches.load(Ordering::Relaxed)));
    v.push(("proc_reaped", h.procs.reaped.load(Ordering::Relaxed)));
    v
}

pub fn stats_of(name: &str, a: &Arena) -> Stats {
    Stats {
        stack: name.to_owned(),
        counters: counter_values(a)
            .into_iter()
            .map(|(n, v)| CounterRow {
                name: n.into(),
                value: v,
                description: counters::describe(n).into(),
            })
            .collect(),
    }
}

// ----- timers -----

#[derive(Serialize, Clone, Debug)]
pub struct TimerRow {
    pub stack: String,
    /// Timer entry index.
    pub id: u32,
    /// `arp`, `tcp-rto`, `tcp-delack`, `tcp-keepalive`, `tcp-wait`.
    pub kind: String,
    pub socket: Option<u32>,
    pub arp_entry: Option<u32>,
    /// Milliseconds from the stack's clock to expiry (negative: overdue).
    pub due_ms: f64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Timers {
    pub stack: String,
    pub tick_us: u64,
    pub slots: u32,
    /// Armed entries, as the wheel counts them.
    pub armed: u32,
    pub timers: Vec<TimerRow>,
    pub busy: Vec<String>,
}

/// The timer wheel of one stack; `Err("timer wheel")` if it would not settle.
pub fn timers_of(name: &str, a: &Arena) -> Result<Timers, String> {
    let t = observe::timers(a).ok_or_else(|| "timer wheel".to_string())?;
    let rows = t
        .timers
        .iter()
        .map(|v| TimerRow {
            stack: name.to_owned(),
            id: v.id,
            kind: v.owner.kind_name(),
            socket: v.owner.socket(),
            arp_entry: match v.owner {
                observe::TimerOwner::Arp { entry } => Some(entry),
                _ => None,
            },
            due_ms: (v.expires_ns as i128 - t.now_ns as i128) as f64 / 1e6,
        })
        .collect();
    Ok(Timers {
        stack: name.to_owned(),
        tick_us: t.tick_ns / 1000,
        slots: t.slots,
        armed: t.armed,
        timers: rows,
        busy: if t.busy > 0 {
            vec![format!("{} timer entries", t.busy)]
        } else {
            vec![]
        },
    })
}

// ----- packet buffers -----

#[derive(Serialize, Clone, Debug)]
pub struct SocketBufs {
    pub id: u32,
    pub proto: String,
    pub state: String,
    /// Datagrams waiting (UDP) or the slot's receive queue.
    pub rx_queue: u32,
    /// TCP: in-order data not yet read, out-of-order segments, unacknowledged data.
    pub tcp_recv_queue: Option<u32>,
    pub tcp_ooo_queue: Option<u32>,
    pub tcp_send_queue: Option<u32>,
    pub total: u32,
}

#[derive(Serialize, Clone, Debug)]
pub struct Packets {
    pub stack: String,
    pub total: Option<u32>,
    pub free: Option<u32>,
    pub in_use: Option<u32>,
    pub qnodes: u32,
    pub tx_queue: Option<u32>,
    pub loop_queue: Option<u32>,
    /// Buffers on socket queues (a buffer on two queues counts twice).
    pub held_by_sockets: u32,
    pub sockets: Vec<SocketBufs>,
    pub busy: Vec<String>,
}

pub fn packets_of(name: &str, a: &Arena) -> Packets {
    let mut busy = vec![];
    let pool = observe::pool(a);
    if pool.is_none() {
        busy.push("pool free count".to_string());
    }
    let core = observe::core(a);
    if core.is_none() {
        busy.push("tx and loop queues".to_string());
    }
    let mut sockets = vec![];
    for (i, r) in observe::slots(a) {
        let Read::Ok(s) = r else {
            busy.push(format!("socket {i}"));
            continue;
        };
        let mut b = SocketBufs {
            id: i,
            proto: proto_name(s.kind).into(),
            state: "-".into(),
            rx_queue: s.rxq_bufs,
            tcp_recv_queue: None,
            tcp_ooo_queue: None,
            tcp_send_queue: None,
            total: s.rxq_bufs,
        };
        if s.kind == kind::TCP {
            match observe::tcp(a, i) {
                Read::Ok(Some(t)) => {
                    b.state = t.state.name().into();
                    b.tcp_recv_queue = Some(t.rcvq_bufs);
                    b.tcp_ooo_queue = Some(t.oooq_bufs);
                    b.tcp_send_queue = Some(t.sndq_bufs);
                    b.total += t.rcvq_bufs + t.oooq_bufs + t.sndq_bufs;
                }
                Read::Ok(None) => continue,
                Read::Busy => busy.push(format!("socket {i} (tcp queues)")),
            }
        }
        sockets.push(b);
    }
    Packets {
        stack: name.to_owned(),
        total: pool.map(|p| p.total),
        free: pool.map(|p| p.free),
        in_use: pool.map(|p| p.in_use),
        qnodes: a.header().config.max_qnodes(),
        tx_queue: core.map(|c| c.tx_queue),
        loop_queue: core.map(|c| c.loop_queue),
        held_by_sockets: sockets.iter().map(|s| s.total).sum(),
        sockets,
        busy,
    }
}

// ----- filters -----

#[derive(Serialize, Clone, Debug)]
pub struct FilterRow {
    pub stack: String,
    pub proto: String,
    /// The local address, `*` for any.
    pub addr: String,
    pub port: u16,
    pub sockets: Vec<u32>,
}

pub struct Filters {
    pub rows: Vec<FilterRow>,
    pub busy: Vec<String>,
}

pub fn filters_of(name: &str, a: &Arena) -> Filters {
    let (flows, busy) = observe::flows(a);
    Filters {
        rows: flows
            .into_iter()
            .map(|f| FilterRow {
                stack: name.to_owned(),
                proto: proto_name(f.kind).into(),
                addr: f.addr.map_or("*".into(), |a| a.to_string()),
                port: f.port,
                sockets: f.sockets,
            })
            .collect(),
        busy: if busy > 0 {
            vec![format!("{busy} sockets")]
        } else {
            vec![]
        },
    }
}
