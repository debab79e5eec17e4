//! Throw-away topologies of network namespaces joined by veth pairs.
//!
//! Tests that need two real hosts (the kernel on both ends, or rbypass on one
//! end over a packet socket) build them here. Every namespace is a
//! [`NetNs`](super::netns::NetNs) named `rbt{tag}{a,b,m}{pid}`, so it is
//! deleted on drop, also when a test panics; deleting a namespace deletes the
//! veth ends in it, and each pair goes with its first end. The veths are
//! created directly inside their namespaces (never in the caller's), so link
//! names only need to be unique per namespace and concurrent tests cannot
//! collide. IPv6 is disabled in every namespace and the only addresses are in
//! 198.18.0.0/15.

// Each integration test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::netns::NetNs;

/// Two namespaces A and B joined by one veth pair: A has `if_a` with
/// `ip_a`/24, B has `if_b` with `ip_b`/24; both up, lo up.
///
/// Fields drop in declaration order: the namespaces go first (taking the
/// veth pair with them); the rest are plain values.
#[derive(Debug)]
pub struct TwoHosts {
    pub a: NetNs,
    pub b: NetNs,
    pub if_a: String,
    pub if_b: String,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
}

impl TwoHosts {
    /// Creates namespaces `rbt{tag}a{pid}` and `rbt{tag}b{pid}` joined by the
    /// veth pair `rbt{tag}0` (in A, 198.18.`subnet`.1/24) and `rbt{tag}1` (in
    /// B, 198.18.`subnet`.2/24). Both ends get `queues` RX and TX queues,
    /// set explicitly: 1 means really one (the kernel's default for a veth
    /// would be one per possible CPU).
    ///
    /// `tag` must be 1 to 10 ASCII letters or digits and unique among the
    /// topologies alive at once in this process.
    pub fn create(tag: &str, subnet: u8, queues: u32) -> io::Result<TwoHosts> {
        check_tag(tag)?;
        if queues == 0 {
            return Err(invalid("veth queue count must be at least 1"));
        }
        let a = new_ns(&format!("{tag}a"))?;
        let b = new_ns(&format!("{tag}b"))?;
        let if_a = format!("rbt{tag}0");
        let if_b = format!("rbt{tag}1");
        let ip_a = Ipv4Addr::new(198, 18, subnet, 1);
        let ip_b = Ipv4Addr::new(198, 18, subnet, 2);
        add_veth(&a, &if_a, &b, &if_b, queues)?;
        configure(&a, &if_a, Some(ip_a))?;
        configure(&b, &if_b, Some(ip_b))?;
        Ok(TwoHosts {
            a,
            b,
            if_a,
            if_b,
            ip_a,
            ip_b,
        })
    }
}

/// A and B on one /24 but joined through a middle namespace M:
/// A(`if_a`) <-veth-> M(`m_a`) and M(`m_b`) <-veth-> B(`if_b`). M's two ends
/// have no address: a forwarder (see `support::impair`) bridges them at
/// layer 2; until one runs, A and B cannot reach each other.
///
/// Every end has a single RX and TX queue, and TSO, GSO and GRO are off on
/// all four so every frame M sees fits the 1500-byte MTU.
///
/// Fields drop in declaration order, deleting the namespaces (and with them
/// the veths). Drop a `Forwarder` running in M before this.
#[derive(Debug)]
pub struct ThreeHosts {
    pub a: NetNs,
    pub m: NetNs,
    pub b: NetNs,
    pub if_a: String,
    pub m_a: String,
    pub m_b: String,
    pub if_b: String,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
}

impl ThreeHosts {
    /// Creates namespaces `rbt{tag}a{pid}`, `rbt{tag}m{pid}`, `rbt{tag}b{pid}`
    /// with veths `rbt{tag}0` (A, 198.18.`subnet`.1/24) <-> `rbt{tag}ma` (M)
    /// and `rbt{tag}mb` (M) <-> `rbt{tag}1` (B, 198.18.`subnet`.2/24).
    ///
    /// `tag` must be 1 to 10 ASCII letters or digits and unique among the
    /// topologies alive at once in this process. Needs `ethtool`.
    pub fn create(tag: &str, subnet: u8) -> io::Result<ThreeHosts> {
        check_tag(tag)?;
        let ethtool = find_ethtool()?;
        let a = new_ns(&format!("{tag}a"))?;
        let m = new_ns(&format!("{tag}m"))?;
        let b = new_ns(&format!("{tag}b"))?;
        let if_a = format!("rbt{tag}0");
        let m_a = format!("rbt{tag}ma");
        let m_b = format!("rbt{tag}mb");
        let if_b = format!("rbt{tag}1");
        let ip_a = Ipv4Addr::new(198, 18, subnet, 1);
        let ip_b = Ipv4Addr::new(198, 18, subnet, 2);
        add_veth(&a, &if_a, &m, &m_a, 1)?;
        add_veth(&m, &m_b, &b, &if_b, 1)?;
        for (ns, ifname) in [(&a, &if_a), (&m, &m_a), (&m, &m_b), (&b, &if_b)] {
            offloads_off(&ethtool, ns, ifname)?;
        }
        configure(&a, &if_a, Some(ip_a))?;
        configure(&m, &m_a, None)?;
        configure(&m, &m_b, None)?;
        configure(&b, &if_b, Some(ip_b))?;
        Ok(ThreeHosts {
            a,
            m,
            b,
            if_a,
            m_a,
            m_b,
            if_b,
            ip_a,
            ip_b,
        })
    }
}

/// Runs `f` on a new thread that has entered namespace `ns` (a name under
/// /var/run/netns) and returns its result.
///
/// `setns(CLONE_NEWNET)` affects only the calling thread, so the caller stays
/// where it is; sockets `f` creates belong to `ns` for their whole life and
/// may be used from any thread afterwards. A panic in `f` is resumed in the
/// caller.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let path = Path::new("/var/run/netns").join(ns);
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    let ns = ns.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("in-netns-{ns}"))
        .spawn(move || -> io::Result<T> {
            // SAFETY: `file` is an open namespace file for the whole call;
            // setns only changes this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("setns into {ns:?}: {e}")));
            }
            drop(file);
            Ok(f())
        })?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Tags become part of namespace and link names: `rbt` + tag + 2 must fit the
/// 15-byte interface name limit.
fn check_tag(tag: &str) -> io::Result<()> {
    if tag.is_empty() || tag.len() > 10 || !tag.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(&format!(
            "topology tag {tag:?} must be 1 to 10 ASCII letters or digits"
        )));
    }
    Ok(())
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn new_ns(prefix: &str) -> io::Result<NetNs> {
    let ns = NetNs::create(prefix)?;
    ns.disable_ipv6()?;
    Ok(ns)
}

/// Creates the veth pair `name_a` (in `ns_a`) / `name_b` (in `ns_b`), each
/// end with `queues` RX and TX queues, without either end ever existing in
/// the caller's namespace.
fn add_veth(ns_a: &NetNs, name_a: &str, ns_b: &NetNs, name_b: &str, queues: u32) -> io::Result<()> {
    let q = queues.to_string();
    let qs = ["numtxqueues", &q, "numrxqueues", &q];
    let mut args: Vec<&str> = vec!["link", "add", name_a];
    args.extend(qs);
    args.extend(["type", "veth", "peer", "name", name_b]);
    args.extend(qs);
    args.extend(["netns", ns_b.name()]);
    ns_a.ip(&args)?;
    Ok(())
}

/// Brings `ifname` and lo up in `ns`, with `addr`/24 if given.
fn configure(ns: &NetNs, ifname: &str, addr: Option<Ipv4Addr>) -> io::Result<()> {
    if let Some(addr) = addr {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname])?;
    }
    ns.ip(&["link", "set", "dev", ifname, "up"])?;
    ns.ip(&["link", "set", "dev", "lo", "up"])?;
    Ok(())
}

fn offloads_off(ethtool: &Path, ns: &NetNs, ifname: &str) -> io::Result<()> {
    let eth = ethtool.to_str().expect("ethtool path is UTF-8");
    let out = ns.exec(&[eth, "-K", ifname, "tso", "off", "gso", "off", "gro", "off"])?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ethtool -K {ifname} tso off gso off gro off in {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn find_ethtool() -> io::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("ethtool"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "ethtool not found: install it (apt-get install -y ethtool); \
                 ThreeHosts needs it to turn off TSO/GSO/GRO on its veths",
            )
        })
}
