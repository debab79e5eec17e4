//! UDP (RFC 768): the datagram header, with the IPv4 pseudo-header checksum.

use std::net::Ipv4Addr;

use super::{checksum, ipv4, read_u16, write_u16, Error, Result};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;
/// Largest payload of one UDP datagram over IPv4.
pub const MAX_PAYLOAD: usize = 65_507;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram; `new_checked` guarantees the getters are in bounds.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checks (only for buffers the stack built).
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after checking the length field against it. The buffer
    /// may be longer than the datagram.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(read_u16(b, field::LENGTH));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.b(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.b(), field::DST_PORT)
    }

    /// Length field (header and payload).
    pub fn len(&self) -> u16 {
        read_u16(self.b(), field::LENGTH)
    }

    /// Never true for a checked packet (the length includes the header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checksum field (0: the sender computed none).
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// Payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum verifies; a zero checksum ("none") is accepted.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = &self.b()[..usize::from(self.len())];
        let sum = checksum::accumulate(
            d,
            checksum::pseudo_header_v4(src, dst, ipv4::protocol::UDP, self.len()),
        );
        checksum::finish(sum) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    /// Computes and stores the checksum (a computed 0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.len();
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let d = &self.b()[..usize::from(len)];
        let mut c = checksum::finish(checksum::accumulate(
            d,
            checksum::pseudo_header_v4(src, dst, ipv4::protocol::UDP, len),
        ));
        if c == 0 {
            c = 0xffff;
        }
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads a checked datagram; with `verify`, a bad checksum is an error.
    pub fn parse<T: AsRef<[u8]>>(
        p: &UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify: bool,
    ) -> Result<UdpRepr> {
        if verify && !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.len()) - HEADER_LEN,
        })
    }

    /// Writes the header (checksum zero) at the start of `buf`.
    pub fn emit_header(&self, buf: &mut [u8]) -> Result<()> {
        if self.payload_len > MAX_PAYLOAD {
            return Err(Error::Malformed);
        }
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        write_u16(h, field::SRC_PORT, self.src_port);
        write_u16(h, field::DST_PORT, self.dst_port);
        write_u16(h, field::LENGTH, (HEADER_LEN + self.payload_len) as u16);
        write_u16(h, field::CHECKSUM, 0);
        Ok(())
    }

    /// Writes header, payload and checksum into `buf`.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Result<()> {
        if payload.len() != self.payload_len {
            return Err(Error::Malformed);
        }
        let total = HEADER_LEN + payload.len();
        if buf.len() < total {
            return Err(Error::Truncated);
        }
        self.emit_header(buf)?;
        buf[HEADER_LEN..total].copy_from_slice(payload);
        UdpPacket::new_unchecked(&mut buf[..total]).fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::{UDP_64, UDP_HELLO};

    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    #[test]
    fn parses_captured_datagram() {
        let p = UdpPacket::new_checked(&UDP_64[34..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (40000, 40001, 72, 0xe4d5)
        );
        assert!(p.verify_checksum(LO, LO));
        assert_eq!(p.payload(), &(0..64u8).collect::<Vec<_>>()[..]);
        let r = UdpRepr::parse(&p, LO, LO, true).unwrap();
        assert_eq!(r.payload_len, 64);
        // The pseudo-header matters: another destination fails.
        assert!(!p.verify_checksum(LO, Ipv4Addr::new(127, 0, 0, 2)));
    }

    #[test]
    fn emit_matches_capture() {
        let r = UdpRepr {
            src_port: 40000,
            dst_port: 40009,
            payload_len: 5,
        };
        let mut buf = [0u8; 13];
        r.emit(&mut buf, LO, LO, b"hello").unwrap();
        assert_eq!(&buf[..], &UDP_HELLO[34..]);
        assert_eq!(
            r.emit(&mut [0u8; 12], LO, LO, b"hello"),
            Err(Error::Truncated)
        );
        assert_eq!(r.emit(&mut buf, LO, LO, b"hell"), Err(Error::Malformed));
    }

    #[test]
    fn zero_checksum_accepted_bad_rejected() {
        let mut d = UDP_HELLO[34..].to_vec();
        d[6] = 0;
        d[7] = 0;
        assert!(UdpPacket::new_checked(&d[..])
            .unwrap()
            .verify_checksum(LO, LO));
        d[6] = 0x12;
        let p = UdpPacket::new_checked(&d[..]).unwrap();
        assert!(!p.verify_checksum(LO, LO));
        assert_eq!(UdpRepr::parse(&p, LO, LO, true), Err(Error::Checksum));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Search a payload whose checksum computes to zero.
        for x in 0..=u16::MAX {
            let payload = x.to_be_bytes();
            let r = UdpRepr {
                src_port: 1,
                dst_port: 2,
                payload_len: 2,
            };
            let mut buf = [0u8; 10];
            r.emit(&mut buf, LO, LO, &payload).unwrap();
            let p = UdpPacket::new_checked(&buf[..]).unwrap();
            assert_ne!(p.checksum(), 0);
            assert!(p.verify_checksum(LO, LO));
            if p.checksum() == 0xffff {
                return;
            }
        }
        panic!("no payload gave a zero checksum");
    }

    #[test]
    fn lengths_checked() {
        let d = &UDP_64[34..];
        for n in 0..d.len() {
            assert!(UdpPacket::new_checked(&d[..n]).is_err(), "length {n}");
        }
        let mut bad = d.to_vec();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
        let mut long = d.to_vec();
        long.extend_from_slice(&[0; 9]);
        assert_eq!(
            UdpPacket::new_checked(&long[..]).unwrap().payload().len(),
            64,
            "trailing bytes ignored"
        );
    }
}
