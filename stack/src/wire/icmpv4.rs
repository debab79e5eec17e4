//! ICMPv4 (RFC 792): echo request/reply and destination unreachable, the
//! messages a host must answer and understand.

use std::net::Ipv4Addr;

use super::{checksum, ipv4, read_u16, write_u16, Error, Result};

/// Length of the ICMP header (type, code, checksum, 4 bytes of rest).
pub const HEADER_LEN: usize = 8;

/// Message types.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
}

/// Destination-unreachable codes.
pub mod unreachable {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set.
    pub const FRAG_NEEDED: u8 = 4;
}

/// A view of an ICMP message; `new_checked` guarantees the header is in bounds.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer holding exactly one message (at least the 8-byte header).
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.b()[0]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.b()[1]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), 2)
    }

    /// Whether the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::finish(checksum::accumulate(self.b(), 0)) == 0
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.b(), 4)
    }

    /// Echo sequence number.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.b(), 6)
    }

    /// Everything after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.b()[HEADER_LEN..]
    }
}

/// The ICMP messages the stack handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// `data` is the offending datagram's IPv4 header and at least 8 bytes of it.
    DstUnreachable { code: u8, data: &'a [u8] },
    /// Anything else: counted and ignored.
    Other { msg_type: u8, code: u8 },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses one message (`buf` is exactly the ICMP message).
    pub fn parse(buf: &'a [u8], verify_checksum: bool) -> Result<Icmpv4Repr<'a>> {
        let p = Icmpv4Packet::new_checked(buf)?;
        if verify_checksum && !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        let data = &buf[HEADER_LEN..];
        Ok(match (p.msg_type(), p.code()) {
            (msg_type::ECHO_REQUEST, 0) => Icmpv4Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            (msg_type::ECHO_REPLY, 0) => Icmpv4Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            (msg_type::DST_UNREACHABLE, code) => {
                if data.len() < ipv4::HEADER_LEN + 8 {
                    return Err(Error::Truncated);
                }
                Icmpv4Repr::DstUnreachable { code, data }
            }
            (msg_type, code) => Icmpv4Repr::Other { msg_type, code },
        })
    }

    /// Bytes [`Icmpv4Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Icmpv4Repr::EchoRequest { data, .. }
                | Icmpv4Repr::EchoReply { data, .. }
                | Icmpv4Repr::DstUnreachable { data, .. } => data.len(),
                Icmpv4Repr::Other { .. } => 0,
            }
    }

    /// Writes the message with its checksum at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let len = self.buffer_len();
        let m = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let (t, code, rest, data): (u8, u8, [u8; 4], &[u8]) = match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (msg_type::ECHO_REQUEST, 0, echo_rest(ident, seq_no), data),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (msg_type::ECHO_REPLY, 0, echo_rest(ident, seq_no), data),
            Icmpv4Repr::DstUnreachable { code, data } => {
                (msg_type::DST_UNREACHABLE, code, [0; 4], data)
            }
            Icmpv4Repr::Other { msg_type, code } => (msg_type, code, [0; 4], &[]),
        };
        m[0] = t;
        m[1] = code;
        write_u16(m, 2, 0);
        m[4..8].copy_from_slice(&rest);
        m[HEADER_LEN..].copy_from_slice(data);
        let c = checksum::finish(checksum::accumulate(m, 0));
        write_u16(m, 2, c);
        Ok(())
    }
}

fn echo_rest(ident: u16, seq: u16) -> [u8; 4] {
    let (i, s) = (ident.to_be_bytes(), seq.to_be_bytes());
    [i[0], i[1], s[0], s[1]]
}

/// From the data of a destination unreachable: the original datagram's
/// source, destination, protocol, and the first two 16-bit words of its
/// transport header (source and destination ports for UDP and TCP), so the
/// error can be matched to a socket.
pub fn embedded_v4(data: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, u8, u16, u16)> {
    if data.len() < ipv4::HEADER_LEN {
        return Err(Error::Truncated);
    }
    if data[0] >> 4 != 4 {
        return Err(Error::Malformed);
    }
    let hl = usize::from(data[0] & 0x0f) * 4;
    if hl < ipv4::HEADER_LEN {
        return Err(Error::Malformed);
    }
    if data.len() < hl + 4 {
        return Err(Error::Truncated);
    }
    let src = Ipv4Addr::new(data[12], data[13], data[14], data[15]);
    let dst = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
    Ok((
        src,
        dst,
        data[9],
        read_u16(data, hl),
        read_u16(data, hl + 2),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PORT_UNREACHABLE};

    #[test]
    fn echo_request_parses_and_reply_matches_kernel() {
        let msg = &ICMP_ECHO_REQUEST[34..];
        let r = Icmpv4Repr::parse(msg, true).unwrap();
        let Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!((ident, seq_no, data.len()), (0x134c, 1, 16));
        let reply = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let mut buf = vec![0u8; reply.buffer_len()];
        reply.emit(&mut buf).unwrap();
        assert_eq!(
            &buf[..],
            &ICMP_ECHO_REPLY[34..],
            "same bytes as the kernel's reply"
        );
    }

    #[test]
    fn port_unreachable_embeds_original() {
        let msg = &ICMP_PORT_UNREACHABLE[34..];
        let r = Icmpv4Repr::parse(msg, true).unwrap();
        let Icmpv4Repr::DstUnreachable { code, data } = r else {
            panic!("{r:?}")
        };
        assert_eq!(code, unreachable::PORT);
        let (s, d, proto, sp, dp) = embedded_v4(data).unwrap();
        assert_eq!(
            (s, d, proto, sp, dp),
            (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 17, 40000, 40009)
        );
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf).unwrap();
        assert_eq!(&buf[..], msg);
    }

    #[test]
    fn checksum_and_truncation() {
        let mut msg = ICMP_ECHO_REQUEST[34..].to_vec();
        msg[9] ^= 1;
        assert_eq!(Icmpv4Repr::parse(&msg, true), Err(Error::Checksum));
        assert!(Icmpv4Repr::parse(&msg, false).is_ok());
        for n in 0..8 {
            assert_eq!(Icmpv4Repr::parse(&msg[..n], false), Err(Error::Truncated));
        }
        let un = &ICMP_PORT_UNREACHABLE[34..];
        for n in 8..un.len() - 5 {
            assert!(
                Icmpv4Repr::parse(&un[..n], false).is_err() || n >= 36,
                "length {n}"
            );
        }
        assert!(embedded_v4(&[0x45; 10]).is_err());
        assert!(embedded_v4(&[0x65; 28]).is_err());
        assert!(matches!(
            Icmpv4Repr::parse(&[13, 0, 0xf2, 0xff, 0, 0, 0, 0], true),
            Ok(Icmpv4Repr::Other {
                msg_type: 13,
                code: 0
            })
        ));
        assert_eq!(
            Icmpv4Repr::EchoReply {
                ident: 1,
                seq_no: 1,
                data: b"ab"
            }
            .emit(&mut [0u8; 9]),
            Err(Error::Truncated)
        );
    }
}
