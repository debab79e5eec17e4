//! One report per subcommand: collected from the arenas, then rendered as a
//! table ([`Render::table`]) or serialised as JSON, from the same struct.

use std::fmt::Write as _;

use serde::Serialize;

use super::collect::{
    self, CounterRow, FilterRow, Packets, ProcessRow, SocketDetail, SocketRow, StackConfigReport,
    StackRow, Stats, Timers, Unreadable,
};

/// A report: serialisable, and printable as a table.
pub trait Render: Serialize {
    fn table(&self) -> String;
}

fn unreadable_lines(s: &mut String, u: &[Unreadable]) {
    for u in u {
        let _ = writeln!(s, "{}", u.message());
    }
}

fn busy_lines(s: &mut String, busy: &[String]) {
    for b in busy {
        let _ = writeln!(s, "{b}: busy, retry");
    }
}

fn prefixed(stack: &str, busy: &[String]) -> Vec<String> {
    busy.iter().map(|b| format!("{stack}: {b}")).collect()
}

/// How long ago a Unix time (ns) was, shortly: `42s`, `3m`, `5h`, `2d`.
fn age(unix_ns: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    if unix_ns == 0 {
        return "-".into();
    }
    let s = now.saturating_sub(unix_ns) / 1_000_000_000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

// ----- stacks -----

#[derive(Serialize)]
pub struct StacksReport {
    pub stacks: Vec<StackRow>,
    pub unreadable: Vec<Unreadable>,
}

pub fn stacks(only: Option<&str>) -> Result<StacksReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    Ok(StacksReport {
        stacks: ok.iter().map(|(n, a)| collect::stack_row(n, a)).collect(),
        unreadable,
    })
}

fn stack_line(s: &mut String, r: &StackRow) {
    let lock = match r.lock.owner_pid {
        Some(p) => format!("pid{p}"),
        None => "free".into(),
    };
    let iface = match &r.iface {
        Some(i) => format!("{}/{} {}", i.ip, i.prefix_len, i.mac),
        // One word, so the columns stay put; a "busy, retry" line follows.
        None => "busy".into(),
    };
    let bufs = format!("{}/{}", opt(r.bufs_in_use), r.max_bufs);
    let procs = format!("{}/{}", r.live_processes, r.processes);
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>6} {:>8} {:>13} {:<9} {:<38} {:<24} {}",
        r.name,
        r.creator_pid,
        if r.creator_alive { "yes" } else { "no" },
        opt(r.sockets),
        bufs,
        lock,
        iface,
        r.nic.as_deref().unwrap_or("busy"),
        procs,
    );
}

const STACK_HEADER: [&str; 9] = [
    "STACK", "CREATOR", "ALIVE", "SOCKETS", "BUFS", "LOCK", "IFACE", "NIC", "PROCS",
];

fn stack_header(s: &mut String) {
    let h = STACK_HEADER;
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>6} {:>8} {:>13} {:<9} {:<38} {:<24} {}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    );
}

impl Render for StacksReport {
    fn table(&self) -> String {
        let mut s = String::new();
        stack_header(&mut s);
        for r in &self.stacks {
            stack_line(&mut s, r);
        }
        unreadable_lines(&mut s, &self.unreadable);
        for r in &self.stacks {
            busy_lines(&mut s, &prefixed(&r.name, &r.busy));
        }
        s
    }
}

// ----- processes -----

#[derive(Serialize)]
pub struct ProcessesReport {
    pub processes: Vec<ProcessRow>,
    pub unreadable: Vec<Unreadable>,
}

pub fn processes(only: Option<&str>) -> Result<ProcessesReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    Ok(ProcessesReport {
        processes: collect::processes_of(&ok),
        unreadable,
    })
}

fn process_table(s: &mut String, rows: &[ProcessRow]) {
    let _ = writeln!(
        s,
        "{:>8} {:<16} {:>7} {:>8} {:<5} STACKS",
        "PID", "COMMAND", "THREADS", "ATTACHED", "ALIVE"
    );
    for p in rows {
        let stacks: Vec<String> = p
            .stacks
            .iter()
            .map(|st| {
                if st.nic_fds.is_empty() {
                    st.stack.clone()
                } else {
                    format!("{}(nic fds {:?})", st.stack, st.nic_fds)
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "{:>8} {:<16} {:>7} {:>8} {:<5} {}",
            p.pid,
            p.command,
            p.threads,
            age(p.attached_unix_ns),
            if p.alive { "yes" } else { "no" },
            stacks.join(",")
        );
    }
}

impl Render for ProcessesReport {
    fn table(&self) -> String {
        let mut s = String::new();
        process_table(&mut s, &self.processes);
        unreadable_lines(&mut s, &self.unreadable);
        s
    }
}

// ----- netstat -----

#[derive(Serialize)]
pub struct NetstatReport {
    pub sockets: Vec<SocketRow>,
    pub busy: Vec<String>,
    pub unreadable: Vec<Unreadable>,
}

pub fn netstat(only: Option<&str>) -> Result<NetstatReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    let mut r = NetstatReport {
        sockets: vec![],
        busy: vec![],
        unreadable,
    };
    for (name, a) in &ok {
        let s = collect::sockets_of(name, a);
        r.sockets.extend(s.rows);
        r.busy.extend(prefixed(name, &s.busy));
    }
    Ok(r)
}

fn netstat_table(s: &mut String, rows: &[SocketRow]) {
    let _ = writeln!(
        s,
        "{:<16} {:<5} {:<10} {:>8} {:>8} {:<21} {:<21} {:>7} {:>8} {:>9} {:>6} {:>8} {:>5}",
        "STACK",
        "PROTO",
        "STATE",
        "RECV-Q",
        "SEND-Q",
        "LOCAL",
        "PEER",
        "PID",
        "CWND",
        "RTT(us)",
        "RETX",
        "RX-DROP",
        "ID"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<16} {:<5} {:<10} {:>8} {:>8} {:<21} {:<21} {:>7} {:>8} {:>9} {:>6} {:>8} {:>5}",
            r.stack,
            r.proto,
            r.state,
            r.recv_q,
            r.send_q,
            r.local,
            r.peer,
            r.pid,
            opt(r.cwnd),
            opt(r.rtt_us),
            opt(r.retransmits),
            r.rx_drop,
            r.id,
        );
    }
}

impl Render for NetstatReport {
    fn table(&self) -> String {
        let mut s = String::new();
        netstat_table(&mut s, &self.sockets);
        unreadable_lines(&mut s, &self.unreadable);
        busy_lines(&mut s, &self.busy);
        s
    }
}

// ----- stats -----

#[derive(Serialize)]
pub struct StatsReport {
    pub stacks: Vec<Stats>,
    pub unreadable: Vec<Unreadable>,
    /// Whether the table shows descriptions (`counters` leaves them out).
    #[serde(skip)]
    pub descriptions: bool,
}

impl Default for StatsReport {
    fn default() -> Self {
        StatsReport {
            stacks: vec![],
            unreadable: vec![],
            descriptions: true,
        }
    }
}

pub fn stats(only: Option<&str>) -> Result<StatsReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    Ok(StatsReport {
        stacks: ok.iter().map(|(n, a)| collect::stats_of(n, a)).collect(),
        unreadable,
        descriptions: true,
    })
}

/// Counter lines: `  name value  description` (name and value first, so
/// scripts can split on whitespace).
fn counter_lines(s: &mut String, rows: &[CounterRow]) {
    for c in rows {
        let _ = writeln!(s, "  {:<24} {:>14}  {}", c.name, c.value, c.description);
    }
}

/// `  name value` lines (the `counters` form).
fn bare_counter_lines(s: &mut String, rows: &[CounterRow]) {
    for c in rows {
        let _ = writeln!(s, "  {:<24} {}", c.name, c.value);
    }
}

impl Render for StatsReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for st in &self.stacks {
            let _ = writeln!(s, "stack {}:", st.stack);
            if self.descriptions {
                counter_lines(&mut s, &st.counters);
            } else {
                bare_counter_lines(&mut s, &st.counters);
            }
        }
        unreadable_lines(&mut s, &self.unreadable);
        s
    }
}

// ----- timers -----

#[derive(Serialize)]
pub struct TimersReport {
    pub stacks: Vec<Timers>,
    /// Stacks whose wheel could not be read, and entries that kept changing.
    pub busy: Vec<String>,
    pub unreadable: Vec<Unreadable>,
}

pub fn timers(only: Option<&str>) -> Result<TimersReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    let mut r = TimersReport {
        stacks: vec![],
        busy: vec![],
        unreadable,
    };
    for (name, a) in &ok {
        match collect::timers_of(name, a) {
            Ok(t) => {
                r.busy.extend(prefixed(name, &t.busy));
                r.stacks.push(t);
            }
            Err(b) => r.busy.push(format!("{name}: {b}")),
        }
    }
    Ok(r)
}

fn timer_table(s: &mut String, t: &Timers) {
    let _ = writeln!(
        s,
        "stack {}: {} timers armed (wheel: {} slots of {} us)",
        t.stack, t.armed, t.slots, t.tick_us
    );
    let _ = writeln!(
        s,
        "  {:>6} {:<14} {:>6} {:>12}",
        "TIMER", "KIND", "SOCKET", "DUE(ms)"
    );
    for r in &t.timers {
        let who = match (r.socket, r.arp_entry) {
            (Some(sock), _) => sock.to_string(),
            (None, Some(e)) => format!("arp{e}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "  {:>6} {:<14} {:>6} {:>12.3}",
            r.id, r.kind, who, r.due_ms
        );
    }
}

impl Render for TimersReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for t in &self.stacks {
            timer_table(&mut s, t);
        }
        unreadable_lines(&mut s, &self.unreadable);
        busy_lines(&mut s, &self.busy);
        s
    }
}

// ----- packets -----

#[derive(Serialize)]
pub struct PacketsReport {
    pub stacks: Vec<Packets>,
    pub unreadable: Vec<Unreadable>,
}

pub fn packets(only: Option<&str>) -> Result<PacketsReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    Ok(PacketsReport {
        stacks: ok.iter().map(|(n, a)| collect::packets_of(n, a)).collect(),
        unreadable,
    })
}

fn packets_table(s: &mut String, p: &Packets) {
    let _ = writeln!(
        s,
        "stack {}: buffers total {} free {} in use {}; tx queue {}, loop queue {}, on socket queues {}",
        p.stack,
        opt(p.total),
        opt(p.free),
        opt(p.in_use),
        opt(p.tx_queue),
        opt(p.loop_queue),
        p.held_by_sockets
    );
    let _ = writeln!(
        s,
        "  {:>6} {:<5} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "SOCKET", "PROTO", "STATE", "RX-Q", "TCP-RCV", "TCP-OOO", "TCP-SND", "TOTAL"
    );
    for b in &p.sockets {
        let _ = writeln!(
            s,
            "  {:>6} {:<5} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            b.id,
            b.proto,
            b.state,
            b.rx_queue,
            opt(b.tcp_recv_queue),
            opt(b.tcp_ooo_queue),
            opt(b.tcp_send_queue),
            b.total
        );
    }
    busy_lines(s, &prefixed(&p.stack, &p.busy));
}

impl Render for PacketsReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for p in &self.stacks {
            packets_table(&mut s, p);
        }
        unreadable_lines(&mut s, &self.unreadable);
        s
    }
}

// ----- filters -----

#[derive(Serialize)]
pub struct FiltersReport {
    pub filters: Vec<FilterRow>,
    pub busy: Vec<String>,
    pub unreadable: Vec<Unreadable>,
}

pub fn filters(only: Option<&str>) -> Result<FiltersReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    let mut r = FiltersReport {
        filters: vec![],
        busy: vec![],
        unreadable,
    };
    for (name, a) in &ok {
        let f = collect::filters_of(name, a);
        r.filters.extend(f.rows);
        r.busy.extend(prefixed(name, &f.busy));
    }
    Ok(r)
}

fn filters_table(s: &mut String, rows: &[FilterRow]) {
    let _ = writeln!(
        s,
        "{:<16} {:<5} {:<15} {:>5}  SOCKETS",
        "STACK", "PROTO", "LOCAL", "PORT"
    );
    for f in rows {
        let socks: Vec<String> = f.sockets.iter().map(u32::to_string).collect();
        let _ = writeln!(
            s,
            "{:<16} {:<5} {:<15} {:>5}  {}",
            f.stack,
            f.proto,
            f.addr,
            f.port,
            socks.join(",")
        );
    }
}

impl Render for FiltersReport {
    fn table(&self) -> String {
        let mut s = String::new();
        filters_table(&mut s, &self.filters);
        unreadable_lines(&mut s, &self.unreadable);
        busy_lines(&mut s, &self.busy);
        s
    }
}

// ----- config -----

#[derive(Serialize)]
pub struct ConfigReport {
    pub stacks: Vec<StackConfigReport>,
    pub unreadable: Vec<Unreadable>,
}

pub fn config(only: Option<&str>) -> Result<ConfigReport, String> {
    let (ok, unreadable) = collect::split(collect::targets(only)?);
    Ok(ConfigReport {
        stacks: ok.iter().map(|(n, a)| collect::config_of(n, a)).collect(),
        unreadable,
    })
}

fn config_table(s: &mut String, c: &StackConfigReport) {
    let _ = writeln!(s, "stack {}:", c.stack);
    let k = &c.config;
    let rows: [(&str, String); 14] = [
        ("max_sockets", k.max_sockets.to_string()),
        ("max_bufs", k.max_bufs.to_string()),
        ("arp_entries", k.arp_entries.to_string()),
        ("arp_pending_max", k.arp_pending_max.to_string()),
        ("timer_slots", k.timer_slots.to_string()),
        ("timer_tick_us", k.timer_tick_us.to_string()),
        ("rcvbuf_default", k.rcvbuf_default.to_string()),
        ("sndbuf_default", k.sndbuf_default.to_string()),
        ("tcp_cc", k.tcp_cc.clone()),
        (
            "tcp_slow_start_after_idle",
            u8::from(k.tcp_slow_start_after_idle).to_string(),
        ),
        ("max_timers", k.max_timers.to_string()),
        ("max_qnodes", k.max_qnodes.to_string()),
        ("hash_buckets", k.hash_buckets.to_string()),
        ("arena_bytes", k.arena_bytes.to_string()),
    ];
    for (n, v) in rows {
        let _ = writeln!(s, "  {n:<26} {v}");
    }
    match &c.iface {
        Some(i) => {
            let _ = writeln!(s, "  {:<26} {}/{}", "address", i.ip, i.prefix_len);
            let _ = writeln!(s, "  {:<26} {}", "mtu", i.mtu);
            let _ = writeln!(s, "  {:<26} {}", "mac", i.mac);
            let _ = writeln!(
                s,
                "  {:<26} {}",
                "gateway",
                i.gateway.as_deref().unwrap_or("-")
            );
        }
        None => {
            let _ = writeln!(s, "  interface: busy, retry");
        }
    }
    let _ = writeln!(
        s,
        "  {:<26} {}",
        "nic",
        c.nic.as_deref().unwrap_or("busy, retry")
    );
}

impl Render for ConfigReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for c in &self.stacks {
            config_table(&mut s, c);
        }
        unreadable_lines(&mut s, &self.unreadable);
        s
    }
}

// ----- lots -----

/// Everything about one stack.
#[derive(Serialize)]
pub struct LotsReport {
    pub stack: StackRow,
    pub config: StackConfigReport,
    pub processes: Vec<ProcessRow>,
    pub sockets: Vec<SocketRow>,
    pub stats: Stats,
    pub packets: Packets,
    pub timers: Option<Timers>,
    pub filters: Vec<FilterRow>,
    /// Items that could not be read consistently.
    pub busy: Vec<String>,
}

/// Opens exactly one stack for the single-stack subcommands.
fn one(name: &str) -> Result<(String, rbypass_stack::arena::Arena), String> {
    let mut ts = collect::targets(Some(name))?;
    let t = ts.remove(0);
    match t.arena {
        Ok(a) => Ok((t.name, a)),
        Err(u) => Err(u.message()),
    }
}

pub fn lots(name: &str) -> Result<LotsReport, String> {
    let (name, a) = one(name)?;
    let arenas = vec![(name.clone(), a)];
    let a = &arenas[0].1;
    let stack = collect::stack_row(&name, a);
    let sockets = collect::sockets_of(&name, a);
    let packets = collect::packets_of(&name, a);
    let filters = collect::filters_of(&name, a);
    let config = collect::config_of(&name, a);
    let mut busy = prefixed(&name, &stack.busy);
    busy.extend(prefixed(&name, &sockets.busy));
    busy.extend(prefixed(&name, &packets.busy));
    busy.extend(prefixed(&name, &filters.busy));
    let timers = match collect::timers_of(&name, a) {
        Ok(t) => {
            busy.extend(prefixed(&name, &t.busy));
            Some(t)
        }
        Err(b) => {
            busy.push(format!("{name}: {b}"));
            None
        }
    };
    busy.sort();
    busy.dedup();
    Ok(LotsReport {
        processes: collect::processes_of(&arenas),
        stats: collect::stats_of(&name, a),
        stack,
        config,
        sockets: sockets.rows,
        packets,
        timers,
        filters: filters.rows,
        busy,
    })
}

impl Render for LotsReport {
    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "== stack ==");
        stack_header(&mut s);
        stack_line(&mut s, &self.stack);
        let _ = writeln!(s, "\n== config ==");
        config_table(&mut s, &self.config);
        let _ = writeln!(s, "\n== processes ==");
        process_table(&mut s, &self.processes);
        let _ = writeln!(s, "\n== netstat ==");
        netstat_table(&mut s, &self.sockets);
        let _ = writeln!(s, "\n== stats ==");
        let _ = writeln!(s, "stack {}:", self.stats.stack);
        counter_lines(&mut s, &self.stats.counters);
        let _ = writeln!(s, "\n== packets ==");
        packets_table(&mut s, &self.packets);
        let _ = writeln!(s, "\n== timers ==");
        if let Some(t) = &self.timers {
            timer_table(&mut s, t);
        }
        let _ = writeln!(s, "\n== filters ==");
        filters_table(&mut s, &self.filters);
        if !self.busy.is_empty() {
            let _ = writeln!(s);
            busy_lines(&mut s, &self.busy);
        }
        s
    }
}

// ----- socket -----

/// `socket ID`: ID is a slot index, a full handle, or STACK:ID.
pub fn socket(id: &str, only: Option<&str>) -> Result<SocketDetail, String> {
    let (stack, num) = match id.rsplit_once(':') {
        Some((s, n)) => (Some(s), n),
        None => (only, id),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad socket id {id:?}: use a number from netstat's ID column"))?;
    let (index, incarnation) = if n >> 32 != 0 {
        (n as u32, Some((n >> 32) as u32))
    } else {
        (n as u32, None)
    };
    if let Some(name) = stack {
        let (name, a) = one(name)?;
        let d = collect::socket_detail(&name, &a, index)?;
        if incarnation.is_some_and(|i| i != d.incarnation) {
            return Err(format!(
                "no socket {id} in stack {name} (the slot was reused)"
            ));
        }
        return Ok(d);
    }
    let (ok, _) = collect::split(collect::targets(None)?);
    let mut found = vec![];
    for (name, a) in &ok {
        if let Ok(d) = collect::socket_detail(name, a, index) {
            if incarnation.is_none_or(|i| i == d.incarnation) {
                found.push(d);
            }
        }
    }
    match found.len() {
        0 => Err(match stack {
            Some(s) => format!("no socket {id} in stack {s}"),
            None => format!("no socket {id} in any stack"),
        }),
        1 => Ok(found.remove(0)),
        _ => {
            let names: Vec<&str> = found.iter().map(|d| d.stack.as_str()).collect();
            Err(format!(
                "socket {id} exists in stacks {}: say which with --stack NAME or NAME:{id}",
                names.join(", ")
            ))
        }
    }
}

impl Render for SocketDetail {
    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "stack {} socket {} ({}, handle {:#x}, incarnation {})",
            self.stack, self.id, self.proto, self.handle, self.incarnation
        );
        let kv = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<16} {v}");
        };
        kv(&mut s, "flags", self.flags.join(" "));
        kv(&mut s, "local", self.local.clone());
        kv(&mut s, "remote", self.remote.clone());
        kv(&mut s, "owner_pid", self.owner_pid.to_string());
        kv(&mut s, "fd_refs", self.fd_refs.to_string());
        kv(
            &mut s,
            "rcvbuf/sndbuf",
            format!("{}/{}", self.rcvbuf, self.sndbuf),
        );
        kv(
            &mut s,
            "so_error",
            match &self.so_error_text {
                Some(t) => format!("{} ({t})", self.so_error),
                None => "0".into(),
            },
        );
        kv(
            &mut s,
            "rx_queue",
            format!("{} bufs, {} bytes", self.rx_queue.bufs, self.rx_queue.bytes),
        );
        if let Some(t) = &self.tcp {
            let _ = writeln!(s, "tcp:");
            kv(&mut s, "state", t.state.clone());
            kv(&mut s, "flags", t.flags.join(" "));
            let q = |q: &collect::Queue| format!("{} bufs, {} bytes", q.bufs, q.bytes);
            kv(&mut s, "recv_queue", q(&t.recv_queue));
            kv(&mut s, "ooo_queue", q(&t.ooo_queue));
            kv(&mut s, "send_queue", q(&t.send_queue));
            kv(&mut s, "in_flight", t.in_flight.to_string());
            kv(
                &mut s,
                "rcvbuf/sndbuf",
                format!("{}/{}", t.rcvbuf, t.sndbuf),
            );
            kv(&mut s, "mss", t.mss.to_string());
            kv(&mut s, "snd_wnd", t.snd_wnd.to_string());
            kv(
                &mut s,
                "cwnd/ssthresh",
                format!("{}/{} ({})", t.cwnd, t.ssthresh, t.cc),
            );
            kv(
                &mut s,
                "rtt_us",
                format!("srtt {} rto {}", t.srtt_us, t.rto_us),
            );
            kv(
                &mut s,
                "retransmits",
                format!(
                    "{} (rto count {}, dupacks {}, ooo segments {})",
                    t.retransmits, t.rto_count, t.dupacks, t.ooo_segments
                ),
            );
            if t.state == "LISTEN" {
                kv(
                    &mut s,
                    "listen",
                    format!(
                        "accept queue {} syn queue {} backlog {}",
                        t.accept_queue, t.syn_queue, t.backlog
                    ),
                );
            }
            if let Some(l) = t.listener {
                kv(&mut s, "listener", l.to_string());
            }
            kv(
                &mut s,
                "keepalive",
                format!(
                    "idle {}s intvl {}s cnt {}; user timeout {} ms",
                    t.keepidle_s, t.keepintvl_s, t.keepcnt, t.user_timeout_ms
                ),
            );
        }
        if !self.timers.is_empty() {
            let _ = writeln!(s, "timers:");
            for t in &self.timers {
                let _ = writeln!(s, "  {:<16} due in {:.3} ms", t.kind, t.due_ms);
            }
        }
        let _ = writeln!(s, "counters:");
        counter_lines(&mut s, &self.counters);
        busy_lines(&mut s, &prefixed(&self.stack, &self.busy));
        s
    }
}
