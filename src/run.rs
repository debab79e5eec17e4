//! `rbypass run`: starts a program with its sockets served by rbypass. It
//! finds librbypass.so, prepends it to LD_PRELOAD, sets the RBYPASS_*
//! environment from the options and the profile (the environment wins), and
//! execs the program.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Settings the library understands, with what each does (for `-v` and for
/// warning about unknown ones).
pub const KNOWN_VARS: &[(&str, &str)] = &[
    (
        "RBYPASS_NAME",
        "stack name shared by processes (empty: a private stack per process)",
    ),
    (
        "RBYPASS_NIC",
        "NIC spec: loop (default), tap:NAME, xdp:IFACE, packet:IFACE",
    ),
    (
        "RBYPASS_NO_FAIL",
        "1 (default): a device that cannot be used leaves the app on the kernel; 0: exit 1",
    ),
    (
        "RBYPASS_XDP_MODE",
        "generic: attach the XDP program in generic (skb) mode even if the driver has native XDP",
    ),
    (
        "RBYPASS_IP",
        "the stack's address on a device NIC, a.b.c.d/len (tap: required; xdp/packet: the interface's)",
    ),
    ("RBYPASS_GATEWAY", "default gateway of a device NIC stack"),
    (
        "RBYPASS_SHARE_WITH",
        "users or groups a new named stack is shared with: uid:N,gid:N (N: a uid); others are refused",
    ),
    (
        "RBYPASS_KEEP_STACK",
        "1: a named stack stays after its last process exits (for stackdump; `stackdump gc` removes it)",
    ),
    (
        "RBYPASS_SPIN_USEC",
        "microseconds a blocking call spins before sleeping (-1: forever)",
    ),
    ("RBYPASS_LOG", "log filter (error, warn, info, debug)"),
    ("RBYPASS_FAULTS", "fault injection, e.g. drop=0.01,seed=7"),
    ("RBYPASS_PROFILE", "the profile the launcher applied"),
    ("RBYPASS_MAX_SOCKETS", "socket table size of a new stack"),
    ("RBYPASS_MAX_BUFS", "packet buffers of a new stack"),
    (
        "RBYPASS_TCP_CC",
        "TCP congestion control of a new stack: cubic (default) or reno",
    ),
    (
        "RBYPASS_TCP_SLOW_START_AFTER_IDLE",
        "1 (default): restart from the initial window after idle; 0: keep cwnd",
    ),
];

/// Arguments of `rbypass run`.
#[derive(clap::Args)]
pub struct Args {
    /// Share one stack between every process started with this name.
    #[arg(long)]
    name: Option<String>,
    /// NIC spec: loop, tap:NAME, xdp:IFACE, packet:IFACE.
    #[arg(long)]
    nic: Option<String>,
    /// The stack's address on a device NIC, a.b.c.d/len (tap: required;
    /// xdp/packet: defaults to the interface's own).
    #[arg(long)]
    ip: Option<String>,
    /// latency (spin in blocking calls), throughput, or safe (short spins).
    #[arg(long, default_value = "latency")]
    profile: String,
    /// Print the effective configuration first.
    #[arg(short, long)]
    verbose: bool,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    cmd: Vec<OsString>,
}

fn profile_vars(p: &str) -> Result<Vec<(&'static str, &'static str)>, String> {
    Ok(match p {
        "latency" => vec![("RBYPASS_SPIN_USEC", "-1")],
        "throughput" => vec![("RBYPASS_SPIN_USEC", "50")],
        "safe" => vec![("RBYPASS_SPIN_USEC", "0")],
        other => {
            return Err(format!(
                "unknown profile {other:?}: use latency, throughput or safe"
            ))
        }
    })
}

/// Where librbypass.so is: next to this binary, or in ../lib.
fn find_library() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the rbypass binary: {e}"))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for cand in [
        dir.join("librbypass.so"),
        dir.join("../lib/librbypass.so"),
        dir.join("../lib/rbypass/librbypass.so"),
    ] {
        if cand.is_file() {
            return cand.canonicalize().map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "librbypass.so not found next to {} or in ../lib: build it with `cargo build --release` (it is the preload crate) or install it beside the rbypass binary",
        exe.display()
    ))
}

/// Whether stack `name` exists, runs on device `spec`, and a live process
/// of it publishes the device's fds (so a new process can join it).
fn drives(name: &str, spec: &rbypass_nic::spec::NicSpec) -> bool {
    let path = rbypass_stack::arena::path_for_name(name);
    rbypass_stack::arena::Arena::open_readonly(&path).is_ok_and(|a| {
        a.snapshot().nic_desc().split_whitespace().next() == Some(spec.to_string().as_str())
            && a.header()
                .procs
                .snapshot()
                .iter()
                .any(|p| p.alive && !p.nic_fds.is_empty())
    })
}

/// Runs the program (does not return on success).
pub fn run(a: Args) -> Result<(), String> {
    let lib = find_library()?;
    let mut accelerate = true;
    let mut is_tap = false;
    if let Some(spec) = &a.nic {
        let parsed = spec
            .parse::<rbypass_nic::spec::NicSpec>()
            .map_err(|e| e.to_string())?;
        is_tap = matches!(parsed, rbypass_nic::spec::NicSpec::Tap(_));
        if parsed != rbypass_nic::spec::NicSpec::Loop {
            // Say what is wrong here, in one line, rather than in the app's
            // log: open the device once (privileges, name, driver, address).
            let name = a
                .name
                .clone()
                .or_else(|| std::env::var("RBYPASS_NAME").ok());
            let probe = match parsed.open() {
                Err(rbypass_nic::spec::SpecError::Xdp(rbypass_nic::xdp::XdpError::Busy(_)))
                    if name.as_deref().is_some_and(|n| drives(n, &parsed)) =>
                {
                    // The app joins the stack and its device (the library
                    // takes a member's fds to it).
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
                Ok(nic) => {
                    let addressed = a.ip.is_some()
                        || std::env::var_os("RBYPASS_IP").is_some()
                        || nic.iface().is_some();
                    if addressed || is_tap {
                        Ok(())
                    } else {
                        Err(format!(
                            "{}: the interface has no IPv4 address: give it one (`ip addr add A.B.C.D/LEN dev IFACE`) or set --ip",
                            nic.name()
                        ))
                    }
                }
            };
            if let Err(e) = probe {
                let no_fail = std::env::var("RBYPASS_NO_FAIL").map_or(true, |v| v.trim() != "0");
                if !no_fail {
                    return Err(format!("--nic {spec}: {e}"));
                }
                eprintln!(
                    "rbypass: warning: --nic {spec}: {e}; running without acceleration (RBYPASS_NO_FAIL=0 makes this an error)"
                );
                accelerate = false;
            }
        }
    }
    if let Some(n) = &a.name {
        rbypass_stack::arena::validate_name(n).map_err(|e| e.to_string())?;
        // Another user's stack that is not shared with us: say so here, in
        // one line, rather than in the app's log.
        let path = rbypass_stack::arena::path_for_name(n);
        if let Err(e @ rbypass_stack::ArenaError::NotShared { .. }) =
            rbypass_stack::arena::Arena::open_readonly(&path)
        {
            let no_fail = std::env::var("RBYPASS_NO_FAIL").map_or(true, |v| v.trim() != "0");
            if !no_fail {
                return Err(format!("--name {n}: {e}"));
            }
            eprintln!(
                "rbypass: warning: --name {n}: {e}; running without acceleration (RBYPASS_NO_FAIL=0 makes this an error)"
            );
            accelerate = false;
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in profile_vars(&a.profile)? {
        if std::env::var_os(k).is_none() {
            env.push((k.into(), v.into()));
        }
    }
    env.push(("RBYPASS_PROFILE".into(), a.profile.clone()));
    if let Some(n) = &a.name {
        env.push(("RBYPASS_NAME".into(), n.clone()));
    }
    if let Some(n) = &a.nic {
        env.push(("RBYPASS_NIC".into(), n.clone()));
    }
    if let Some(ip) = &a.ip {
        env.push(("RBYPASS_IP".into(), ip.clone()));
    }
    if is_tap && a.ip.is_none() && std::env::var_os("RBYPASS_IP").is_none() {
        return Err(format!(
            "--nic {} needs the stack's address: add --ip a.b.c.d/len (from the device's subnet, not the kernel's address on it)",
            a.nic.as_deref().unwrap_or_default()
        ));
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("RBYPASS_") && !KNOWN_VARS.iter().any(|(n, _)| *n == k) {
            eprintln!(
                "rbypass: warning: unknown setting {k} (known: {})",
                KNOWN_VARS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{} {old}", lib.display()),
        _ => lib.display().to_string(),
    };
    if a.verbose {
        eprintln!("rbypass run: LD_PRELOAD={preload}");
        for (k, desc) in KNOWN_VARS {
            let v = env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(k).ok());
            if let Some(v) = v {
                eprintln!("rbypass run: {k}={v}    # {desc}");
            }
        }
    }
    let (prog, args) = a
        .cmd
        .split_first()
        .ok_or("nothing to run: rbypass run [OPTIONS] -- PROGRAM [ARGS...]")?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args).envs(env);
    if accelerate {
        cmd.env("LD_PRELOAD", preload);
    }
    let err = cmd.exec();
    Err(format!("cannot run {}: {err}", prog.to_string_lossy()))
}
