//! Ethernet II frame header: the outermost layer of every frame the NIC
//! hands us.

use core::fmt;
use core::str::FromStr;

use super::{read_u16, write_u16, Error, Result};

/// Length of an Ethernet II header (dst, src, ethertype); no VLAN tags.
pub const HEADER_LEN: usize = 14;

/// EtherType values the stack dispatches on.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
}

/// A 48-bit MAC address, used for frame addressing and ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The all-ones broadcast address, destination of ARP requests.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// Whether this is the broadcast address (accept, never use as source).
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set (multicast, which includes broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this addresses a single station (valid as a source address).
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for EthernetAddress {
    type Err = Error;

    /// Parse `aa:bb:cc:dd:ee:ff` (1 or 2 hex digits per octet), for
    /// configuration files and the command line.
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in out.iter_mut() {
            let part = parts.next().ok_or(Error::Malformed)?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::Malformed);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| Error::Malformed)?;
        }
        if parts.next().is_some() {
            return Err(Error::Malformed);
        }
        Ok(EthernetAddress(out))
    }
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

fn addr_at(buf: &[u8], range: core::ops::Range<usize>) -> EthernetAddress {
    let mut a = [0u8; 6];
    a.copy_from_slice(&buf[range]);
    EthernetAddress(a)
}

/// A read/write view of an Ethernet II frame in a buffer, so headers are
/// accessed in place without copying.
///
/// Accessors assume at least [`HEADER_LEN`] bytes; [`EthernetFrame::new_checked`]
/// guarantees that, [`EthernetFrame::new_unchecked`] leaves it to the caller.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap a buffer without validation, for frames the stack is building.
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wrap a received buffer, checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    /// Give back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> EthernetAddress {
        addr_at(self.buffer.as_ref(), field::DST)
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> EthernetAddress {
        addr_at(self.buffer.as_ref(), field::SRC)
    }

    /// EtherType, selecting the payload protocol (see [`ethertype`]).
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the header (may include trailing padding).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    /// Set the source MAC address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Set the EtherType.
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    /// Mutable access to everything after the header, to emit the payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Write an Ethernet header at the start of `buf` in one call, for the
/// transmit path.
pub fn emit_header(
    buf: &mut [u8],
    dst: EthernetAddress,
    src: EthernetAddress,
    ethertype: u16,
) -> Result<()> {
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
    hdr[field::DST].copy_from_slice(&dst.0);
    hdr[field::SRC].copy_from_slice(&src.0);
    write_u16(hdr, field::ETHERTYPE, ethertype);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real ARP request captured on a Linux eth0 (42 bytes, unpadded on TX).
    const ARP_FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00,
        0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x4d,
    ];

    #[test]
    fn parse_real_frame() {
        let f = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(
            f.src_addr(),
            EthernetAddress([0x02, 0xfc, 0x00, 0x00, 0x00, 0x01])
        );
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload(), &ARP_FRAME[14..]);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&ARP_FRAME[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let f = EthernetFrame::new_checked(&ARP_FRAME[..HEADER_LEN]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn emit_round_trip() {
        let mut buf = [0u8; 42];
        emit_header(
            &mut buf,
            EthernetAddress::BROADCAST,
            EthernetAddress([0x02, 0xfc, 0, 0, 0, 1]),
            ethertype::ARP,
        )
        .unwrap();
        buf[14..].copy_from_slice(&ARP_FRAME[14..]);
        assert_eq!(buf, ARP_FRAME);
        assert_eq!(
            emit_header(
                &mut buf[..13],
                EthernetAddress::BROADCAST,
                EthernetAddress::BROADCAST,
                0
            ),
            Err(Error::Truncated)
        );

        let mut f = EthernetFrame::new_unchecked([0u8; 20]);
        f.set_dst_addr(EthernetAddress([1, 2, 3, 4, 5, 6]));
        f.set_src_addr(EthernetAddress([7, 8, 9, 10, 11, 12]));
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut().copy_from_slice(&[0xaa; 6]);
        let raw = f.into_inner();
        assert_eq!(
            raw,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
                0xaa
            ]
        );
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(!EthernetAddress::BROADCAST.is_unicast());
        let mcast = EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast() && !mcast.is_unicast());
        let ucast = EthernetAddress([0x02, 0xfc, 0, 0, 0, 1]);
        assert!(ucast.is_unicast() && !ucast.is_multicast());
    }

    #[test]
    fn display_and_from_str() {
        let a = EthernetAddress([0x02, 0xfc, 0x0a, 0xb0, 0x00, 0xff]);
        assert_eq!(a.to_string(), "02:fc:0a:b0:00:ff");
        assert_eq!("02:fc:0a:b0:00:ff".parse::<EthernetAddress>(), Ok(a));
        assert_eq!("2:FC:a:B0:0:ff".parse::<EthernetAddress>(), Ok(a));
        for bad in [
            "",
            "02:fc:0a:b0:00",
            "02:fc:0a:b0:00:ff:00",
            "02:fc:0a:b0:00:",
            "02:fc:0a:b0:00:fff",
            "02:fc:0a:b0:00:+f",
            "02:fc:0a:b0:00:gg",
            "02-fc-0a-b0-00-ff",
        ] {
            assert_eq!(
                bad.parse::<EthernetAddress>(),
                Err(Error::Malformed),
                "{bad:?}"
            );
        }
    }
}
