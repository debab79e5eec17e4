//! `rbypass`: the command-line tool of the rbypass kernel-bypass stack.

mod demo;
mod run;
mod stackdump;

use clap::{Parser, Subcommand};

/// Kernel-bypass socket acceleration: a userspace TCP/UDP/IPv4 stack in shared memory.
#[derive(Parser)]
#[command(name = "rbypass", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a program with its sockets served by rbypass (LD_PRELOAD).
    Run(run::Args),
    /// Show the stacks on this machine, their sockets and counters.
    Stackdump(stackdump::Args),
    /// Demonstrate the stack on a TAP device in a network namespace: the kernel
    /// pings it and exchanges UDP with it (needs root).
    Demo(demo::Args),
    /// (internal) The kernel-side peer of the demo, run inside the namespace.
    #[command(hide = true)]
    DemoPeer(demo::PeerArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RBYPASS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Stackdump(a) => stackdump::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::DemoPeer(a) => demo::peer(a),
    };
    if let Err(e) = result {
        eprintln!("rbypass: {e}");
        std::process::exit(1);
    }
}
