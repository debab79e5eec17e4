//! IPv4 (RFC 791): the header every UDP/ICMP/TCP packet rides in.
//! Options are allowed on receive and skipped; the only one we send is
//! Router Alert, on IGMP (RFC 2113, RFC 3376 4).

use std::net::Ipv4Addr;

use super::{checksum, read_u16, write_u16, Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// Longest options part of a header (the header length field's limit).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Router Alert (RFC 2113), 4 bytes: routers look at IGMP messages that
/// are not addressed to them.
pub const OPTION_ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// Type of service of IGMP messages (precedence "internetwork control",
/// as Linux sends them).
pub const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// IP protocol numbers the stack knows.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IGMP.
    pub const IGMP: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet; `new_checked` guarantees every getter is in bounds.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checks (only for buffers the stack built).
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after checking version, header length and total length.
    /// The buffer may be longer than the packet (Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        let total = usize::from(read_u16(b, field::LENGTH));
        if total < hl {
            return Err(Error::Malformed);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// IP version (4 once checked).
    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> u8 {
        (self.b()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length (header and payload).
    pub fn total_len(&self) -> u16 {
        read_u16(self.b(), field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        read_u16(self.b(), field::IDENT)
    }

    /// Don't Fragment.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.b(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        read_u16(self.b(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.b(), field::FLG_OFF) & OFFSET_MASK) * 8
    }

    /// Whether this is a fragment of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Transport protocol number.
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(
            b[field::SRC],
            b[field::SRC + 1],
            b[field::SRC + 2],
            b[field::SRC + 3],
        )
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(
            b[field::DST],
            b[field::DST + 1],
            b[field::DST + 2],
            b[field::DST + 3],
        )
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let hl = usize::from(self.header_len());
        checksum::finish(checksum::accumulate(&self.b()[..hl], 0)) == 0
    }

    /// The payload: from the end of the header (options skipped) to total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[usize::from(self.header_len())..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the TTL.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.bm()[field::TTL] = ttl;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.bm()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.bm()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = usize::from(self.header_len());
        write_u16(self.bm(), field::CHECKSUM, 0);
        let c = checksum::finish(checksum::accumulate(&self.b()[..hl], 0));
        write_u16(self.bm(), field::CHECKSUM, c);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (
            usize::from(self.header_len()),
            usize::from(self.total_len()),
        );
        &mut self.bm()[hl..tl]
    }
}

/// The fields of an IPv4 header the stack reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: usize,
    pub ttl: u8,
    pub dont_frag: bool,
    pub ident: u16,
}

impl Ipv4Repr {
    /// Reads a checked packet; with `verify_checksum`, a bad header checksum is an error.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>, verify_checksum: bool) -> Result<Ipv4Repr> {
        if verify_checksum && !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - usize::from(p.header_len()),
            ttl: p.ttl(),
            dont_frag: p.dont_frag(),
            ident: p.ident(),
        })
    }

    /// Writes a 20-byte header with a correct checksum at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        self.emit_with(buf, 0, &[])
    }

    /// Writes a header with type of service `tos` and `options` (a multiple
    /// of 4 bytes, at most [`MAX_OPTIONS_LEN`]) after the fixed part, with a
    /// correct checksum, at the start of `buf`.
    pub fn emit_with(&self, buf: &mut [u8], tos: u8, options: &[u8]) -> Result<()> {
        if !options.len().is_multiple_of(4) || options.len() > MAX_OPTIONS_LEN {
            return Err(Error::Malformed);
        }
        let hl = HEADER_LEN + options.len();
        let total = hl + self.payload_len;
        let total = u16::try_from(total).map_err(|_| Error::Malformed)?;
        let h = buf.get_mut(..hl).ok_or(Error::Truncated)?;
        h[field::VER_IHL] = 0x40 | (hl / 4) as u8;
        h[1] = tos;
        write_u16(h, field::LENGTH, total);
        write_u16(h, field::IDENT, self.ident);
        write_u16(h, field::FLG_OFF, if self.dont_frag { FLAG_DF } else { 0 });
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        write_u16(h, field::CHECKSUM, 0);
        h[field::SRC..field::SRC + 4].copy_from_slice(&self.src_addr.octets());
        h[field::DST..field::DST + 4].copy_from_slice(&self.dst_addr.octets());
        h[HEADER_LEN..].copy_from_slice(options);
        let c = checksum::finish(checksum::accumulate(h, 0));
        write_u16(h, field::CHECKSUM, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::{UDP_64, UDP_HELLO, UDP_IP_OPTIONS};

    #[test]
    fn parses_captured_packet() {
        let p = Ipv4Packet::new_checked(&UDP_64[14..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 92);
        assert_eq!(p.ident(), 0x8a17);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.checksum(), 0xb277);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::LOCALHOST);
        assert_eq!(p.payload().len(), 72);
        let r = Ipv4Repr::parse(&p, true).unwrap();
        assert_eq!(r.payload_len, 72);
    }

    #[test]
    fn options_are_skipped() {
        let p = Ipv4Packet::new_checked(&UDP_IP_OPTIONS[14..]).unwrap();
        assert_eq!(p.header_len(), 28);
        assert!(p.verify_checksum());
        assert_eq!(&p.payload()[8..], b"options!");
    }

    #[test]
    fn padding_is_not_payload() {
        let mut padded = UDP_HELLO[14..].to_vec();
        padded.extend_from_slice(&[0xaa; 13]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 13);
        assert_eq!(&p.payload()[8..], b"hello");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let pkt = &UDP_64[14..];
        for n in 0..pkt.len() {
            assert!(Ipv4Packet::new_checked(&pkt[..n]).is_err(), "length {n}");
        }
    }

    #[test]
    fn malformed_headers() {
        let mut p = UDP_64[14..].to_vec();
        p[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]).unwrap_err(),
            Error::Malformed
        );
        p[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]).unwrap_err(),
            Error::Malformed
        );
        p[0] = 0x45;
        p[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]).unwrap_err(),
            Error::Malformed
        );
        p[0] = 0x4f;
        assert!(Ipv4Packet::new_checked(&p[..30]).is_err());
    }

    #[test]
    fn bad_checksum_detected() {
        let mut p = UDP_64[14..].to_vec();
        p[8] = 63;
        let pk = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(!pk.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&pk, true), Err(Error::Checksum));
        assert!(Ipv4Repr::parse(&pk, false).is_ok());
        let mut pk = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        pk.fill_checksum();
        assert!(pk.verify_checksum());
    }

    #[test]
    fn fragments_recognised() {
        let mut p = UDP_64[14..].to_vec();
        p[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().is_fragment());
        p[6..8].copy_from_slice(&0x0003u16.to_be_bytes());
        let pk = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(pk.is_fragment());
        assert_eq!(pk.frag_offset(), 24);
    }

    #[test]
    fn emit_matches_capture() {
        let orig = Ipv4Packet::new_checked(&UDP_64[14..]).unwrap();
        let r = Ipv4Repr::parse(&orig, true).unwrap();
        let mut buf = [0u8; 20];
        r.emit(&mut buf).unwrap();
        assert_eq!(
            &buf[..],
            &UDP_64[14..34],
            "byte-identical header, checksum included"
        );
        assert_eq!(r.emit(&mut [0u8; 19]), Err(Error::Truncated));
        let big = Ipv4Repr {
            payload_len: 65_516,
            ..r
        };
        assert_eq!(big.emit(&mut buf), Err(Error::Malformed));
    }

    /// The IPv4 header of an IGMPv3 report Linux sent (captured on a veth):
    /// TOS 0xc0, TTL 1, DF, ident 0, Router Alert.
    #[test]
    fn emit_with_router_alert_matches_linux() {
        let linux: [u8; 24] = [
            0x46, 0xc0, 0x00, 0x34, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0xf9, 0x89, 0x0a, 0x63,
            0x00, 0x01, 0xe0, 0x00, 0x00, 0x16, 0x94, 0x04, 0x00, 0x00,
        ];
        let r = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 99, 0, 1),
            dst_addr: Ipv4Addr::new(224, 0, 0, 22),
            protocol: protocol::IGMP,
            payload_len: 28,
            ttl: 1,
            dont_frag: true,
            ident: 0,
        };
        let mut buf = [0u8; 24];
        r.emit_with(&mut buf, TOS_INTERNETWORK_CONTROL, &OPTION_ROUTER_ALERT)
            .unwrap();
        assert_eq!(buf, linux);
        assert_eq!(
            r.emit_with(&mut buf, 0, &[1, 2, 3]),
            Err(Error::Malformed),
            "options are whole words"
        );
        assert_eq!(
            r.emit_with(&mut [0u8; 23], 0, &OPTION_ROUTER_ALERT),
            Err(Error::Truncated)
        );
    }
}
