//! `rbypass stackdump`: reads every stack's arena read-only, without taking
//! its lock, and prints stacks, sockets and counters, like onload_stackdump.

use std::fmt::Write as _;
use std::path::PathBuf;

use rbypass_stack::arena::{self, Arena};
use rbypass_stack::socket::{flag, kind};
use rbypass_stack::stack::sockets_of;

/// Arguments of `rbypass stackdump`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Option<What>,
}

#[derive(clap::Subcommand)]
enum What {
    /// List the stacks (the default).
    List,
    /// List sockets like `ss -tuni`: UDP and TCP, with TCP state, queues, cwnd and RTT.
    Netstat {
        /// Only this stack (name, or pidNNN for a private stack).
        #[arg(long)]
        stack: Option<String>,
    },
    /// Stack-wide counters (traffic and drops by reason).
    Counters {
        /// Only this stack.
        #[arg(long)]
        stack: Option<String>,
    },
}

fn display_name(a: &Arena) -> String {
    let n = a.name();
    if n.is_empty() {
        format!("pid{}", a.header().creator_pid)
    } else {
        n
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Opens every arena (or the one named), reporting the ones that cannot be read.
fn arenas(only: Option<&str>) -> Vec<(PathBuf, Result<Arena, arena::ArenaError>)> {
    arena::list_arena_files()
        .into_iter()
        .map(|p| {
            let r = Arena::open_readonly(&p);
            (p, r)
        })
        .filter(|(p, r)| match (only, r) {
            (None, _) => true,
            (Some(n), Ok(a)) => display_name(a) == n,
            (Some(n), Err(_)) => p
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == format!("{}{n}", arena::FILE_PREFIX)),
        })
        .collect()
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let out = match args.what.unwrap_or(What::List) {
        What::List => list(),
        What::Netstat { stack } => netstat(stack.as_deref()),
        What::Counters { stack } => counters(stack.as_deref()),
    };
    print!("{out}");
    Ok(())
}

fn list() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>6} {:>8} {:>13} {:<9} {:<38} NIC",
        "STACK", "CREATOR", "ALIVE", "SOCKETS", "BUFS", "LOCK", "IFACE"
    );
    for (path, a) in arenas(None) {
        match a {
            Ok(a) => {
                let h = a.header();
                let p = a.snapshot();
                let lock = if h.lock.is_locked() {
                    format!("pid{}", h.lock.owner_pid())
                } else {
                    "free".into()
                };
                let _ = writeln!(
                    s,
                    "{:<20} {:>8} {:>6} {:>8} {:>13} {:<9} {:<38} {}",
                    display_name(&a),
                    h.creator_pid,
                    if alive(h.creator_pid) { "yes" } else { "no" },
                    p.sockets_in_use,
                    format!("{}/{}", p.bufs_in_use, h.config.max_bufs),
                    lock,
                    format!("{}/{} {}", p.iface.ip(), p.iface.prefix_len, p.iface.mac()),
                    p.nic_desc(),
                );
            }
            Err(e) => {
                let _ = writeln!(s, "{:<20} unreadable: {e}", path.display());
            }
        }
    }
    s
}

fn netstat_filtered(want: impl Fn(&str) -> bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<5} {:<10} {:>8} {:>8} {:<21} {:<21} {:>7} {:>8} {:>9} {:>6} {:>8}",
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
        "RX-DROP"
    );
    for (path, a) in arenas(None) {
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                if want(&name_from_path(&path)) {
                    let _ = writeln!(s, "{}: unreadable: {e}", path.display());
                }
                continue;
            }
        };
        let name = display_name(&a);
        if !want(&name) {
            continue;
        }
        for info in sockets_of(&a) {
            let peer = if info.flags & flag::CONNECTED != 0 {
                info.remote.to_string()
            } else {
                "*:*".into()
            };
            let local = if info.flags & flag::BOUND != 0 || info.kind == kind::TCP {
                info.local.to_string()
            } else {
                "*:*".into()
            };
            let c = rbypass_stack::stack::socket_counters_of(&a, info.id).unwrap_or_default();
            let get = |k: &str| {
                c.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| *v)
                    .unwrap_or(0)
            };
            let (proto, state, recvq, sendq, cwnd, rtt, retx) = match info.kind {
                kind::TCP => match rbypass_stack::stack::tcp_info_of(&a, info.id) {
                    Some(t) => (
                        "tcp",
                        t.state.name(),
                        t.rcv_queued,
                        t.snd_queued,
                        t.cwnd.to_string(),
                        t.srtt_us.to_string(),
                        t.retransmits.to_string(),
                    ),
                    None => continue,
                },
                kind::UDP => (
                    "udp",
                    "-",
                    info.rx_queued_bytes,
                    0,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ),
                _ => ("?", "-", 0, 0, "-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                s,
                "{:<16} {:<5} {:<10} {:>8} {:>8} {:<21} {:<21} {:>7} {:>8} {:>9} {:>6} {:>8}",
                name,
                proto,
                state,
                recvq,
                sendq,
                local,
                peer,
                info.owner_pid,
                cwnd,
                rtt,
                retx,
                get("rx_drop_rcvbuf") + get("rx_drop_nobuf"),
            );
        }
    }
    s
}

/// The stack name an arena file stands for (`/dev/shm/rbypass-NAME`).
fn name_from_path(path: &std::path::Path) -> String {
    let f = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    f.strip_prefix("rbypass-").unwrap_or(&f).to_owned()
}

/// Prints the sockets of one arena (used by the demo).
pub fn run_netstat_for(a: &Arena) {
    let name = display_name(a);
    print!("{}", netstat_filtered(|n| n == name));
}

fn netstat(only: Option<&str>) -> String {
    netstat_filtered(|n| only.is_none_or(|o| o == n))
}

fn counters(only: Option<&str>) -> String {
    let mut s = String::new();
    for (path, a) in arenas(only) {
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                let _ = writeln!(s, "{}: unreadable: {e}", path.display());
                continue;
            }
        };
        let _ = writeln!(s, "stack {}:", display_name(&a));
        for (k, v) in a.header().counters.iter() {
            let _ = writeln!(s, "  {k:<24} {v}");
        }
        let _ = writeln!(
            s,
            "  {:<24} {}",
            "lock_contended",
            a.header()
                .lock
                .contended
                .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    s
}
