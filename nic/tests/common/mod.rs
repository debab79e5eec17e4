//! Helpers shared by the rbypass-nic integration tests that build network
//! namespaces with `ip` (each test crate includes this with `mod common;`).

// Each integration test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Whether we are root and have `ip` (else the namespace tests are skipped).
pub fn have_root_and_ip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    Command::new("ip")
        .args(["-V"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `ip ARGS`, returning its output or why it failed.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n NS ARGS`, which must succeed.
pub fn ipn(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all).unwrap()
}

/// Runs `f` on a thread inside namespace `ns` (setns changes only the
/// calling thread; sockets created there belong to the namespace for good,
/// whichever thread uses them later).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("open the namespace");
            // SAFETY: a plain system call on a descriptor open for its duration.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        });
        h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// The MAC `ip` shows for link `dev` of namespace `ns`.
pub fn ip_mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = ipn(ns, &["-o", "link", "show", dev]);
    let text = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in {out:?}"));
    let mut mac = [0; 6];
    for (b, hex) in mac.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(hex, 16).unwrap();
    }
    mac
}

/// A network namespace, deleted on drop (also when the test panics).
pub struct Netns(pub String);

impl Netns {
    /// Creates namespace `name` (replacing a leftover of that name).
    pub fn create(name: String) -> Netns {
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name]).unwrap();
        Netns(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        ipn(&self.0, args)
    }

    /// `ip netns exec NS sysctl -qw SETTING`, which must succeed.
    pub fn sysctl(&self, setting: &str) {
        ip(&["netns", "exec", &self.0, "sysctl", "-qw", setting]).unwrap();
    }

    /// Runs `f` on a thread inside this namespace (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.0, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}
