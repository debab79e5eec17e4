//! The interface: addresses, ARP, IPv4 input and output, ICMP.

pub mod arp_cache;
mod icmp;
pub use icmp::ICMP_BURST;
pub(crate) mod ipv4;
pub mod mcast;
pub(crate) use ipv4::checksum_ok;

use std::net::Ipv4Addr;

use crate::wire::EthernetAddress;

/// Addresses and MTU of the stack's interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    pub mac: [u8; 6],
    /// IP MTU (bytes of IPv4 packet, not counting the Ethernet header).
    pub mtu: u16,
    pub ip: [u8; 4],
    /// Default gateway, 0.0.0.0 for none.
    pub gateway: [u8; 4],
    pub prefix_len: u8,
    pub _pad: [u8; 3],
}

impl IfaceConfig {
    /// A config from its parts.
    pub fn new(
        mac: EthernetAddress,
        ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        mtu: u16,
    ) -> Self {
        IfaceConfig {
            mac: mac.0,
            mtu,
            ip: ip.octets(),
            gateway: gateway.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
            prefix_len: prefix_len.min(32),
            _pad: [0; 3],
        }
    }

    /// The loopback interface of a stack on the `loop` NIC: 127.0.0.1/8.
    pub fn loopback() -> Self {
        Self::new(
            EthernetAddress([0x02, 0, 0, 0, 0, 1]),
            Ipv4Addr::LOCALHOST,
            8,
            None,
            1500,
        )
    }

    /// The interface address.
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip)
    }

    /// The interface MAC.
    pub fn mac(&self) -> EthernetAddress {
        EthernetAddress(self.mac)
    }

    /// The default gateway, if any.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        let g = Ipv4Addr::from(self.gateway);
        (!g.is_unspecified()).then_some(g)
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len.min(32)))
        }
    }

    /// Whether `a` is on the interface's subnet.
    pub fn on_link(&self, a: Ipv4Addr) -> bool {
        (u32::from(a) ^ u32::from(self.ip())) & self.mask() == 0
    }

    /// The subnet's directed broadcast address.
    pub fn subnet_broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip()) | !self.mask())
    }

    /// Whether `a` is a broadcast address for this interface.
    pub fn is_broadcast(&self, a: Ipv4Addr) -> bool {
        a.is_broadcast() || (self.prefix_len < 31 && a == self.subnet_broadcast())
    }

    /// Whether `a` is the stack's own address (including all of 127/8 on a loopback stack).
    pub fn is_local(&self, a: Ipv4Addr) -> bool {
        a == self.ip() || (self.ip().is_loopback() && a.is_loopback())
    }

    /// Largest UDP payload that fits in one unfragmented packet.
    pub fn max_udp_payload(&self) -> usize {
        usize::from(self.mtu).saturating_sub(28)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let c = IfaceConfig::new(
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(198, 18, 0, 2),
            24,
            None,
            1500,
        );
        assert!(c.on_link(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(!c.on_link(Ipv4Addr::new(198, 18, 1, 1)));
        assert_eq!(c.subnet_broadcast(), Ipv4Addr::new(198, 18, 0, 255));
        assert!(c.is_broadcast(Ipv4Addr::new(198, 18, 0, 255)));
        assert!(c.is_broadcast(Ipv4Addr::BROADCAST));
        assert!(!c.is_local(Ipv4Addr::LOCALHOST));
        assert!(IfaceConfig::loopback().is_local(Ipv4Addr::new(127, 0, 0, 9)));
        assert_eq!(c.max_udp_payload(), 1472);
    }
}
