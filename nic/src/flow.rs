//! Flows the stack owns, as the kernel-side filters (XDP map, socket
//! filter, TC drop program) need them: a frame belongs to the stack when its
//! (protocol, destination address, destination port) matches a [`FlowKey`],
//! or the same with the address 0.0.0.0 (a socket bound to any address).

use std::io;
use std::net::Ipv4Addr;

use rbypass_stack::Core;

use crate::bpf::Map;

/// IP protocol numbers of the flows.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// One (protocol, local address, local port) the stack receives for.
///
/// `#[repr(C)]` and 8 bytes with the address and port in network byte order,
/// so it is the BPF hash map's key byte for byte.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Destination address, network order; 0.0.0.0 matches any address.
    pub addr: [u8; 4],
    /// Destination port, network order (0 for ARP).
    pub port_be: u16,
    /// [`proto`] number.
    pub proto: u8,
    pub _pad: u8,
}

impl FlowKey {
    /// A key for protocol `proto` to `addr:port`.
    pub fn new(proto: u8, addr: Ipv4Addr, port: u16) -> FlowKey {
        FlowKey {
            addr: addr.octets(),
            port_be: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The destination address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The destination port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }

    /// A key read back from the BPF map (None if it is not 8 bytes).
    pub fn from_bytes(b: &[u8]) -> Option<FlowKey> {
        let b: [u8; 8] = b.try_into().ok()?;
        Some(FlowKey {
            addr: [b[0], b[1], b[2], b[3]],
            port_be: u16::from_ne_bytes([b[4], b[5]]),
            proto: b[6],
            _pad: 0,
        })
    }

    /// The key's bytes, as the BPF map stores them.
    pub fn as_bytes(&self) -> [u8; 8] {
        let p = self.port_be.to_ne_bytes();
        [
            self.addr[0],
            self.addr[1],
            self.addr[2],
            self.addr[3],
            p[0],
            p[1],
            self.proto,
            0,
        ]
    }

    /// Whether a frame with these destination fields matches this key.
    pub fn matches(&self, proto: u8, dst: Ipv4Addr, port: u16) -> bool {
        self.proto == proto
            && self.port() == port
            && (self.addr == [0; 4] || self.addr == dst.octets())
    }
}

/// The stack's flows as a device last read them, so it re-reads them only
/// when they change (bind, connect, close: see `Core::binding_gen`).
#[derive(Debug, Default)]
pub struct FlowSet {
    gen: Option<u32>,
    keys: Vec<FlowKey>,
}

impl FlowSet {
    /// An empty set that has not read the stack yet.
    pub fn new() -> FlowSet {
        FlowSet::default()
    }

    /// Re-reads the stack's flows if they changed since the last call;
    /// returns whether they did (then [`FlowSet::keys`] is the new set,
    /// sorted and without duplicates).
    pub fn refresh(&mut self, core: &Core<'_>) -> bool {
        let gen = core.binding_gen();
        if self.gen == Some(gen) {
            return false;
        }
        self.gen = Some(gen);
        self.keys.clear();
        core.for_each_binding(|kind, local| {
            let proto = match kind {
                rbypass_stack::socket::kind::TCP => proto::TCP,
                rbypass_stack::socket::kind::UDP => proto::UDP,
                _ => return,
            };
            self.keys
                .push(FlowKey::new(proto, *local.ip(), local.port()));
        });
        self.keys.sort_unstable();
        self.keys.dedup();
        true
    }

    /// Forgets what was read, so the next [`FlowSet::refresh`] re-reads.
    pub fn invalidate(&mut self) {
        self.gen = None;
    }

    /// The flows, sorted.
    pub fn keys(&self) -> &[FlowKey] {
        &self.keys
    }
}

/// Makes the BPF hash `map` (which holds `installed`) hold `new` instead,
/// with one update or delete per difference; both lists are sorted. On an
/// error `installed` is what the map holds.
pub fn mirror(map: &Map, installed: &mut Vec<FlowKey>, new: &[FlowKey]) -> io::Result<()> {
    let old = std::mem::take(installed);
    let (mut i, mut j) = (0, 0);
    let result = loop {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                installed.push(*a);
                i += 1;
                j += 1;
            }
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                if let Err(e) = map.delete(&a.as_bytes()) {
                    installed.push(*a);
                    installed.extend_from_slice(&old[i + 1..]);
                    break Err(e);
                }
                i += 1;
            }
            (_, Some(b)) => {
                if let Err(e) = map.update(&b.as_bytes(), &1u32.to_ne_bytes()) {
                    installed.extend_from_slice(&old[i..]);
                    break Err(e);
                }
                installed.push(*b);
                j += 1;
            }
            _ => break Ok(()),
        }
    };
    installed.sort_unstable();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let k = FlowKey::new(17, Ipv4Addr::new(198, 18, 0, 1), 4242);
        assert_eq!(FlowKey::from_bytes(&k.as_bytes()), Some(k));
        assert_eq!(FlowKey::from_bytes(&[0; 7]), None);
    }

    #[test]
    fn layout_and_matching() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 8);
        let k = FlowKey::new(proto::TCP, Ipv4Addr::new(198, 18, 0, 2), 0x1234);
        assert_eq!(k.as_bytes(), [198, 18, 0, 2, 0x12, 0x34, 6, 0]);
        assert!(k.matches(proto::TCP, Ipv4Addr::new(198, 18, 0, 2), 0x1234));
        assert!(!k.matches(proto::UDP, Ipv4Addr::new(198, 18, 0, 2), 0x1234));
        let any = FlowKey::new(proto::UDP, Ipv4Addr::UNSPECIFIED, 53);
        assert!(any.matches(proto::UDP, Ipv4Addr::new(198, 18, 9, 9), 53));
    }
}
