//! Throw-away network namespaces for integration tests.
//!
//! Tests that exercise rbypass against the real Linux stack put the kernel
//! peer in its own namespace so nothing leaks onto the host network. Names are
//! always `rbt{prefix}{pid}` and the namespace is deleted on drop, including
//! when a test panics.

// Each integration test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace that is deleted when dropped.
///
/// Exists so tests get a private, automatically cleaned-up network to run the
/// kernel side of a conversation in.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace `rbt{prefix}{pid}`, deleting a stale one of the
    /// same name (left over from a crashed run with a recycled pid) first.
    pub fn create(prefix: &str) -> io::Result<NetNs> {
        let name = format!("rbt{prefix}{}", std::process::id());
        // A stale namespace may or may not exist; either way is fine.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(NetNs { name })
    }

    /// The namespace name, for passing to external tools.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip netns exec NAME args...` to completion and returns its output
    /// (whatever the exit status; inspect `Output::status`).
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        self.exec_command(args).stdin(Stdio::null()).output()
    }

    /// Starts `ip netns exec NAME args...` in the background with stdout and
    /// stderr piped, for long-running peers (ping, servers).
    pub fn spawn(&self, args: &[&str]) -> io::Result<Child> {
        self.exec_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }

    /// Runs `ip -n NAME args...`, failing with its stderr if it exits non-zero.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Moves interface `ifname` from the current namespace into this one.
    pub fn move_link(&self, ifname: &str) -> io::Result<()> {
        run_checked(Command::new("ip").args(["link", "set", ifname, "netns", &self.name]))?;
        Ok(())
    }

    /// Disables IPv6 in this namespace so bringing links up does not emit
    /// router solicitations, MLD reports or DAD probes; tests must only send
    /// to 198.18.0.0/15. Succeeds if the kernel has no IPv6 at all.
    pub fn disable_ipv6(&self) -> io::Result<()> {
        for knob in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
            let script = format!("[ ! -e {path} ] || echo 1 > {path}");
            let out = self.exec(&["sh", "-c", &script])?;
            check(
                &out,
                &format!("ip netns exec {} sh -c {script:?}", self.name),
            )?;
        }
        Ok(())
    }

    fn exec_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Best effort: there is nothing useful to do on failure during drop.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process that is killed and reaped when dropped, so a failing test
/// never leaves a background peer running.
#[derive(Debug)]
pub struct KillOnDrop {
    child: Option<Child>,
}

impl KillOnDrop {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop { child: Some(child) }
    }

    /// The child, to signal or wait for it.
    #[allow(dead_code)]
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until finish")
    }

    /// Kills the child (if still running) and returns its collected output.
    pub fn finish(mut self) -> io::Result<Output> {
        let mut child = self.child.take().expect("child present until finish");
        let _ = child.kill();
        child.wait_with_output()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether this process can create network namespaces (root, `ip` present,
/// `ip netns add` works). Tests call it first and skip with a clear message
/// when it returns false.
pub fn have_root_and_netns() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 || !tool_available("ip") {
        return false;
    }
    static PROBE: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "rbtprobe{}x{}",
        std::process::id(),
        PROBE.fetch_add(1, Ordering::Relaxed)
    );
    let added = Command::new("ip")
        .args(["netns", "add", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = Command::new("ip")
        .args(["netns", "del", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    added
}

/// Whether executable `name` is found on `PATH`, so tests can skip cleanly
/// when an external tool (ping, iperf, ...) is not installed.
pub fn tool_available(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

fn run_checked(cmd: &mut Command) -> io::Result<Output> {
    let desc = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output()?;
    check(&out, &desc)?;
    Ok(out)
}

fn check(out: &Output, desc: &str) -> io::Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
