//! ARP (RFC 826) for Ethernet/IPv4 only: resolves next-hop MAC addresses.

use std::net::Ipv4Addr;

use super::ethernet::{ethertype, EthernetAddress};
use super::{read_u16, write_u16, Error, Result};

/// Length of an Ethernet/IPv4 ARP packet (without Ethernet padding).
pub const PACKET_LEN: usize = 28;

/// Length of the fixed part before the addresses (htype..operation).
const FIXED_LEN: usize = 8;
const HTYPE_ETHERNET: u16 = 1;

/// ARP opcode; unknown values are kept so they can be counted and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Who has `target_protocol_addr`? (opcode 1)
    Request,
    /// `source_protocol_addr` is at `source_hardware_addr` (opcode 2).
    Reply,
    /// Any other opcode.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(value: ArpOperation) -> Self {
        match value {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

/// A parsed Ethernet/IPv4 ARP packet: what the neighbour cache consumes and
/// the ARP responder produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request, reply or other opcode.
    pub operation: ArpOperation,
    /// Sender MAC address.
    pub source_hardware_addr: EthernetAddress,
    /// Sender IPv4 address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target MAC address (all zeros in a request).
    pub target_hardware_addr: EthernetAddress,
    /// Target IPv4 address.
    pub target_protocol_addr: Ipv4Addr,
}

fn mac_at(buf: &[u8], at: usize) -> EthernetAddress {
    let mut a = [0u8; 6];
    a.copy_from_slice(&buf[at..at + 6]);
    EthernetAddress(a)
}

fn ip_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

impl ArpRepr {
    /// Parse the payload of an ARP Ethernet frame (trailing padding ignored).
    ///
    /// Non-Ethernet hardware or non-IPv4 protocol types are `Unsupported`;
    /// Ethernet/IPv4 with wrong address lengths is `Malformed`.
    pub fn parse(payload: &[u8]) -> Result<ArpRepr> {
        if payload.len() < FIXED_LEN {
            return Err(Error::Truncated);
        }
        if read_u16(payload, 0) != HTYPE_ETHERNET || read_u16(payload, 2) != ethertype::IPV4 {
            return Err(Error::Unsupported);
        }
        if payload[4] != 6 || payload[5] != 4 {
            return Err(Error::Malformed);
        }
        if payload.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        Ok(ArpRepr {
            operation: ArpOperation::from(read_u16(payload, 6)),
            source_hardware_addr: mac_at(payload, 8),
            source_protocol_addr: ip_at(payload, 14),
            target_hardware_addr: mac_at(payload, 18),
            target_protocol_addr: ip_at(payload, 24),
        })
    }

    /// Write this packet into the first [`PACKET_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let buf = buf.get_mut(..PACKET_LEN).ok_or(Error::Truncated)?;
        write_u16(buf, 0, HTYPE_ETHERNET);
        write_u16(buf, 2, ethertype::IPV4);
        buf[4] = 6;
        buf[5] = 4;
        write_u16(buf, 6, self.operation.into());
        buf[8..14].copy_from_slice(&self.source_hardware_addr.0);
        buf[14..18].copy_from_slice(&self.source_protocol_addr.octets());
        buf[18..24].copy_from_slice(&self.target_hardware_addr.0);
        buf[24..28].copy_from_slice(&self.target_protocol_addr.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payload of a real ARP request captured on Linux eth0:
    /// who-has 192.0.2.77 tell 192.0.2.2 (02:fc:00:00:00:01).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0xc0,
        0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x4d,
    ];

    fn request_repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress([0x02, 0xfc, 0, 0, 0, 1]),
            source_protocol_addr: Ipv4Addr::new(192, 0, 2, 2),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Addr::new(192, 0, 2, 77),
        }
    }

    #[test]
    fn parse_real_request() {
        assert_eq!(ArpRepr::parse(&REQUEST), Ok(request_repr()));
    }

    #[test]
    fn padding_ignored() {
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert_eq!(ArpRepr::parse(&padded), Ok(request_repr()));
    }

    #[test]
    fn emit_matches_capture_and_round_trips() {
        let mut buf = [0xaau8; 28];
        request_repr().emit(&mut buf).unwrap();
        assert_eq!(buf, REQUEST);

        let reply = ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress([0x02, 0, 0, 0, 0, 9]),
            source_protocol_addr: Ipv4Addr::new(192, 0, 2, 77),
            target_hardware_addr: EthernetAddress([0x02, 0xfc, 0, 0, 0, 1]),
            target_protocol_addr: Ipv4Addr::new(192, 0, 2, 2),
        };
        let mut buf = [0u8; 30];
        reply.emit(&mut buf).unwrap();
        assert_eq!(&buf[6..8], &[0, 2]);
        assert_eq!(ArpRepr::parse(&buf), Ok(reply));
        assert_eq!(reply.emit(&mut buf[..27]), Err(Error::Truncated));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..PACKET_LEN {
            assert_eq!(
                ArpRepr::parse(&REQUEST[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn unsupported_and_malformed() {
        let mut p = REQUEST;
        p[1] = 6; // htype 6 (IEEE 802)
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
        let mut p = REQUEST;
        p[2] = 0x86; // ptype 0x86dd (IPv6)
        p[3] = 0xdd;
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
        let mut p = REQUEST;
        p[4] = 8;
        assert_eq!(ArpRepr::parse(&p), Err(Error::Malformed));
        let mut p = REQUEST;
        p[5] = 16;
        assert_eq!(ArpRepr::parse(&p), Err(Error::Malformed));
    }

    #[test]
    fn unknown_operation_kept() {
        let mut p = REQUEST;
        p[6] = 0x12;
        p[7] = 0x34;
        let repr = ArpRepr::parse(&p).unwrap();
        assert_eq!(repr.operation, ArpOperation::Unknown(0x1234));
        let mut out = [0u8; 28];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, p);
    }
}
