//! `rbypass stackdump`: reads every stack's arena read-only, without taking
//! its lock, and shows stacks, processes, sockets, counters, timers, packet
//! buffers, device filters and configuration, like onload_stackdump; `gc`
//! and `kill` remove the arena files of stacks whose processes are gone.
//!
//! Every subcommand collects plain structs ([`collect`]) and renders them
//! either as a table or, with `--json`, as one JSON document.

mod admin;
mod collect;
mod report;
mod watch;

use rbypass_stack::arena::Arena;

use report::Render;

/// Arguments of `rbypass stackdump`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    what: Option<What>,
}

/// `--stack NAME`.
#[derive(clap::Args, Clone, Default)]
struct StackFilter {
    /// Only this stack (name, or pidNNN for a private stack).
    #[arg(long)]
    stack: Option<String>,
}

#[derive(clap::Subcommand)]
enum What {
    /// List the stacks (the default): creator, live processes, sockets,
    /// buffers, lock, interface, NIC.
    #[command(alias = "list")]
    Stacks(StackFilter),
    /// Processes using stacks, from every stack's process table.
    Processes(StackFilter),
    /// List sockets like `ss -tuna`: UDP and TCP, with TCP state, queues, cwnd and RTT.
    Netstat(StackFilter),
    /// Every stack counter, with a short description.
    Stats(StackFilter),
    /// The counters as `stats` has them, in the older form scripts parse:
    /// `name value` lines without descriptions, and nothing (exit 0) for a
    /// stack that does not exist (yet).
    Counters(StackFilter),
    /// Everything about one stack.
    Lots {
        /// The stack.
        name: Option<String>,
        #[command(flatten)]
        filter: StackFilter,
    },
    /// Everything about one socket (ID: its slot index from `netstat`, or
    /// STACK:ID).
    Socket {
        id: String,
        #[command(flatten)]
        filter: StackFilter,
    },
    /// Pending timers (socket, kind, due in ms).
    Timers(StackFilter),
    /// Packet-buffer use: pool, TX and loop queues, buffers held per socket.
    Packets(StackFilter),
    /// Flows a device steers to the stack: (protocol, local address or *, port).
    Filters(StackFilter),
    /// The stack's configuration and interface.
    Config(StackFilter),
    /// Remove arena files of stacks with no live process (and stale temporary files).
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove one stack whose processes are all gone.
    Kill { name: String },
    /// Counter rates (per second), refreshed every interval.
    Watch {
        /// Milliseconds between refreshes.
        #[arg(long, default_value_t = 1000)]
        interval: u64,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        filter: StackFilter,
    },
}

fn emit<R: Render>(json: bool, r: &R) -> Result<(), String> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
        s.push('\n');
        s
    } else {
        r.table()
    };
    out(&text);
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) ends the output
/// quietly rather than with a panic.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<(), String> {
    let json = args.json;
    match args.what.unwrap_or(What::Stacks(StackFilter::default())) {
        What::Stacks(f) => emit(json, &report::stacks(f.stack.as_deref())?),
        What::Processes(f) => emit(json, &report::processes(f.stack.as_deref())?),
        What::Netstat(f) => emit(json, &report::netstat(f.stack.as_deref())?),
        What::Stats(f) => emit(json, &report::stats(f.stack.as_deref())?),
        What::Counters(f) => {
            let mut r = report::stats(f.stack.as_deref()).unwrap_or_default();
            r.descriptions = false;
            emit(json, &r)
        }
        What::Lots { name, filter } => {
            let name = name
                .or(filter.stack)
                .ok_or("lots needs a stack: rbypass stackdump lots NAME")?;
            emit(json, &report::lots(&name)?)
        }
        What::Socket { id, filter } => emit(json, &report::socket(&id, filter.stack.as_deref())?),
        What::Timers(f) => emit(json, &report::timers(f.stack.as_deref())?),
        What::Packets(f) => emit(json, &report::packets(f.stack.as_deref())?),
        What::Filters(f) => emit(json, &report::filters(f.stack.as_deref())?),
        What::Config(f) => emit(json, &report::config(f.stack.as_deref())?),
        What::Gc { dry_run } => emit(json, &admin::gc(dry_run)),
        What::Kill { name } => emit(json, &admin::kill(&name)?),
        What::Watch {
            interval,
            count,
            filter,
        } => watch::watch(json, interval, count, filter.stack.as_deref()),
    }
}

/// Prints the sockets of one arena (used by the demo).
pub fn run_netstat_for(a: &Arena) {
    let name = collect::name_from_path(a.path());
    let s = collect::sockets_of(&name, a);
    let r = report::NetstatReport {
        sockets: s.rows,
        busy: s.busy.iter().map(|b| format!("{name}: {b}")).collect(),
        unreadable: vec![],
    };
    out(&r.table());
}
