//! The mirrored control plane: a stack that shares an interface with the
//! kernel (AF_XDP, AF_PACKET) takes its address, MTU, MAC, gateway and
//! neighbours from the kernel's view of that interface, and follows the
//! kernel's changes while it runs.
//!
//! ARP stays the kernel's job: the kernel answers requests for the address
//! (it owns it too), and when the stack needs a neighbour it asks the kernel
//! to resolve it; the answer arrives as a neighbour event and goes into the
//! stack's ARP cache. The kernel and the stack so never disagree on a MAC.

use std::net::Ipv4Addr;

use rbypass_stack::wire::EthernetAddress;
use rbypass_stack::{Core, IfaceConfig};

use crate::netlink::{Event, IfaceSnapshot, Monitor, Netlink, NetlinkError, NUD_FAILED};

/// How often the kernel's change notifications are read (ns).
const POLL_INTERVAL_NS: u64 = 10_000_000;
/// While a neighbour resolution is outstanding, how often (ns).
const RESOLVING_INTERVAL_NS: u64 = 200_000;
/// Least time between two kernel resolutions of one neighbour (ns).
const RESOLVE_AGAIN_NS: u64 = 500_000_000;

/// The interface as the stack must see it, and the kernel's notifications.
pub struct ControlPlane {
    ifindex: u32,
    nl: Netlink,
    mon: Monitor,
    snapshot: IfaceSnapshot,
    next_poll: u64,
    events: Vec<Event>,
    /// Neighbours being resolved by the kernel for us, and when asked.
    resolving: [(Ipv4Addr, u64); 8],
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("ifindex", &self.ifindex)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Reads the interface `ifname` and subscribes to its changes.
    pub fn open(ifname: &str) -> Result<ControlPlane, NetlinkError> {
        // Subscribe first, so no change between the read and the
        // subscription is missed. Both sockets belong to the calling
        // thread's network namespace, and all later reads use them.
        let mon = Monitor::open()?;
        let mut nl = Netlink::open()?;
        let ifindex = nl.link_by_name(ifname)?.ifindex;
        let snapshot = read_view(&mut nl, ifindex)?;
        Ok(ControlPlane {
            ifindex,
            nl,
            mon,
            snapshot,
            next_poll: 0,
            events: Vec::with_capacity(64),
            resolving: [(Ipv4Addr::UNSPECIFIED, 0); 8],
        })
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The kernel's view, as last read.
    pub fn snapshot(&self) -> &IfaceSnapshot {
        &self.snapshot
    }

    /// The stack's interface configuration from the kernel's view, or None
    /// if the interface has no IPv4 address.
    pub fn iface_config(&self) -> Option<IfaceConfig> {
        let a = self.snapshot.addr?;
        Some(IfaceConfig::new(
            EthernetAddress(self.snapshot.link.mac),
            a.addr,
            a.prefix_len,
            self.snapshot.gateway,
            self.snapshot.link.mtu.min(u32::from(u16::MAX)) as u16,
        ))
    }

    /// Puts the kernel's neighbours into the stack's ARP cache.
    pub fn seed(&self, core: &mut Core<'_>, now: u64) {
        for n in &self.snapshot.neighbours {
            if let (true, Some(mac)) = (n.is_valid(), n.mac) {
                tracing::debug!("neighbour {} is {:02x?} (from the kernel)", n.addr, mac);
                core.arp_learn(n.addr, EthernetAddress(mac), now);
            }
        }
    }

    /// File descriptors to keep in a process that carries the stack on.
    pub fn fds(&self) -> [i32; 2] {
        [self.nl.fd(), self.mon.fd()]
    }

    /// Asks the kernel to resolve `ip` (the stack sent an ARP request for
    /// it); at most once per neighbour per [`RESOLVE_AGAIN_NS`]. If the
    /// kernel already knows the neighbour (its entry changes no state, so
    /// no event would come), the stack learns it at once.
    pub fn resolve(&mut self, core: &mut Core<'_>, ip: Ipv4Addr, now: u64) {
        let mut oldest = 0;
        for (i, &(a, at)) in self.resolving.iter().enumerate() {
            if a == ip && now.saturating_sub(at) < RESOLVE_AGAIN_NS {
                return;
            }
            if at < self.resolving[oldest].1 {
                oldest = i;
            }
        }
        self.resolving[oldest] = (ip, now);
        self.next_poll = self.next_poll.min(now + RESOLVING_INTERVAL_NS);
        if let Err(e) = self.nl.neigh_resolve(self.ifindex, ip) {
            tracing::debug!("asking the kernel to resolve {ip}: {e}");
        }
        match self.nl.neighbours(self.ifindex) {
            Ok(ns) => {
                if let Some(mac) = ns
                    .iter()
                    .find(|n| n.addr == ip && n.is_valid())
                    .and_then(|n| n.mac)
                {
                    tracing::debug!("neighbour {ip} is {mac:02x?} (the kernel knew it)");
                    core.arp_learn(ip, EthernetAddress(mac), now);
                }
            }
            Err(e) => tracing::debug!("reading the kernel's neighbours: {e}"),
        }
    }

    /// Looks at a frame the stack transmits: an ARP request means the stack
    /// needs a neighbour, which the kernel then resolves for both.
    pub fn watch_tx(&mut self, core: &mut Core<'_>, frame: &[u8], now: u64) {
        if let Some(target) = arp_request_target(frame) {
            self.resolve(core, target, now);
        }
    }

    fn resolving_any(&self, now: u64) -> bool {
        self.resolving
            .iter()
            .any(|&(a, at)| !a.is_unspecified() && now.saturating_sub(at) < RESOLVE_AGAIN_NS)
    }

    /// Applies the kernel's changes since the last call to the stack (no
    /// more often than every few ms: a syscall when due, nothing otherwise).
    pub fn poll(&mut self, core: &mut Core<'_>, now: u64) {
        if now < self.next_poll {
            return;
        }
        self.next_poll = now
            + if self.resolving_any(now) {
                RESOLVING_INTERVAL_NS
            } else {
                POLL_INTERVAL_NS
            };
        self.events.clear();
        if let Err(e) = self.mon.read_events(&mut self.events) {
            tracing::debug!("reading netlink events: {e}");
        }
        let mut reread = self.mon.take_overrun();
        let mut events = std::mem::take(&mut self.events);
        for ev in &events {
            match ev {
                Event::Link(l) if l.ifindex == self.ifindex => {
                    self.snapshot.link = l.clone();
                    self.apply_iface(core);
                }
                Event::AddrAdded(a) | Event::AddrRemoved(a) if a.ifindex == self.ifindex => {
                    reread = true;
                }
                Event::RouteAdded(_) | Event::RouteRemoved(_) => reread = true,
                Event::Neigh(n) if n.ifindex == self.ifindex => {
                    tracing::debug!("neighbour event: {n:?}");
                    match (n.is_valid(), n.mac) {
                        (true, Some(mac)) => core.arp_learn(n.addr, EthernetAddress(mac), now),
                        _ if n.state & NUD_FAILED != 0 => core.arp_forget(n.addr),
                        _ => {}
                    }
                }
                Event::NeighRemoved(n) if n.ifindex == self.ifindex => core.arp_forget(n.addr),
                _ => {}
            }
        }
        events.clear();
        self.events = events;
        if reread {
            self.reread(core, now);
        }
    }

    /// Reads the whole view again (after an address or route change, or a
    /// lost notification) and applies it.
    fn reread(&mut self, core: &mut Core<'_>, now: u64) {
        match read_view(&mut self.nl, self.ifindex) {
            Ok(s) => {
                self.snapshot = s;
                self.apply_iface(core);
                self.seed(core, now);
            }
            Err(e) => tracing::warn!(
                "re-reading interface {}: {e}; keeping the last view",
                self.snapshot.link.name
            ),
        }
    }

    fn apply_iface(&self, core: &mut Core<'_>) {
        let Some(new) = self.iface_config() else {
            tracing::warn!(
                "interface {} has no IPv4 address now; the stack keeps {}",
                self.snapshot.link.name,
                core.iface().ip()
            );
            return;
        };
        let old = core.iface();
        if new != old {
            tracing::info!(
                "interface {}: {}/{} mtu {} gateway {:?} (was {}/{} mtu {})",
                self.snapshot.link.name,
                new.ip(),
                new.prefix_len,
                new.mtu,
                new.gateway(),
                old.ip(),
                old.prefix_len,
                old.mtu
            );
            core.set_iface(new);
        }
    }
}

/// The address an outgoing ARP request asks for, if `frame` is one.
pub fn arp_request_target(frame: &[u8]) -> Option<Ipv4Addr> {
    (frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 1])
        .then(|| Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]))
}

/// The kernel's view of interface `ifindex`, through an open socket (so it
/// is that socket's namespace, whichever thread asks).
fn read_view(nl: &mut Netlink, ifindex: u32) -> Result<IfaceSnapshot, NetlinkError> {
    let link = nl.link_by_index(ifindex)?;
    let addr = nl.addrs(ifindex)?.into_iter().next();
    let gateway = nl
        .routes()?
        .into_iter()
        .find(|r| r.prefix_len == 0 && r.oif == ifindex && r.gateway.is_some())
        .and_then(|r| r.gateway);
    let neighbours = nl
        .neighbours(ifindex)?
        .into_iter()
        .filter(|n| n.is_valid())
        .collect();
    Ok(IfaceSnapshot {
        link,
        addr,
        gateway,
        neighbours,
    })
}
