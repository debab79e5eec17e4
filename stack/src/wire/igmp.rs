//! IGMP (RFC 1112, 2236, 3376): how a host tells multicast routers which
//! groups (and, with version 3, which sources) it wants to receive.
//!
//! Version 1/2 messages are 8 bytes (type, max response time, checksum,
//! group). A version 3 query adds a source list; a version 3 report carries
//! group records. Parsing validates every length before reading and checks
//! the checksum over the whole message.

use std::net::Ipv4Addr;

use super::{checksum, read_u16, write_u16, Error, Result};

/// Length of a version 1/2 message (and of the fixed part of a v3 query).
pub const HEADER_LEN: usize = 8;
/// Fixed part of a version 3 query, before its sources.
pub const V3_QUERY_LEN: usize = 12;
/// Fixed part of a version 3 group record, before its sources.
pub const RECORD_LEN: usize = 8;

/// Message types.
pub mod msg_type {
    /// Membership query (every version; told apart by length and max response).
    pub const QUERY: u8 = 0x11;
    /// Version 1 membership report.
    pub const V1_REPORT: u8 = 0x12;
    /// Version 2 membership report.
    pub const V2_REPORT: u8 = 0x16;
    /// Version 2 leave group.
    pub const LEAVE: u8 = 0x17;
    /// Version 3 membership report.
    pub const V3_REPORT: u8 = 0x22;
}

/// Group record types of a version 3 report (RFC 3376 4.2.12).
pub mod record_type {
    /// Current state: INCLUDE these sources.
    pub const MODE_IS_INCLUDE: u8 = 1;
    /// Current state: EXCLUDE these sources.
    pub const MODE_IS_EXCLUDE: u8 = 2;
    /// Filter mode changed to INCLUDE these sources (with none: leave).
    pub const CHANGE_TO_INCLUDE: u8 = 3;
    /// Filter mode changed to EXCLUDE these sources (with none: join).
    pub const CHANGE_TO_EXCLUDE: u8 = 4;
    /// These sources are newly wanted.
    pub const ALLOW_NEW_SOURCES: u8 = 5;
    /// These sources are no longer wanted.
    pub const BLOCK_OLD_SOURCES: u8 = 6;
}

/// Decodes a v3 Max Resp Code or QQIC (RFC 3376 4.1.1, 4.1.7): values from
/// 128 up are a floating-point form (exponent 3 bits, mantissa 4 bits).
pub fn decode_code(code: u8) -> u32 {
    if code < 128 {
        u32::from(code)
    } else {
        let mant = u32::from(code & 0x0f);
        let exp = u32::from((code >> 4) & 0x07);
        (mant | 0x10) << (exp + 3)
    }
}

/// Encodes a value as a v3 Max Resp Code or QQIC (the largest code not
/// above `v`, saturating at the largest representable value).
pub fn encode_code(v: u32) -> u8 {
    if v < 128 {
        return v as u8;
    }
    for exp in (0..8u32).rev() {
        let mant = (v >> (exp + 3)).saturating_sub(0x10);
        if v >> (exp + 3) >= 0x10 {
            return 0x80 | (exp as u8) << 4 | mant.min(0x0f) as u8;
        }
    }
    0x7f
}

/// A list of IPv4 addresses: as received (raw bytes, a multiple of 4 long)
/// or as the stack holds them, so one type serves parse and emit.
#[derive(Debug, Clone, Copy)]
pub enum Sources<'a> {
    /// Network-order addresses back to back.
    Raw(&'a [u8]),
    /// Addresses.
    List(&'a [Ipv4Addr]),
}

impl<'a> Sources<'a> {
    /// Number of addresses.
    pub fn len(&self) -> usize {
        match self {
            Sources::Raw(b) => b.len() / 4,
            Sources::List(l) => l.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The addresses in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + 'a {
        let (raw, list): (&'a [u8], &'a [Ipv4Addr]) = match *self {
            Sources::Raw(b) => (b, &[]),
            Sources::List(l) => (&[], l),
        };
        raw.chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .chain(list.iter().copied())
    }

    fn emit(&self, buf: &mut [u8]) {
        for (c, a) in buf.chunks_exact_mut(4).zip(self.iter()) {
            c.copy_from_slice(&a.octets());
        }
    }
}

impl PartialEq for Sources<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Sources<'_> {}

/// One group record of a version 3 report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRecord<'a> {
    /// One of [`record_type`].
    pub record_type: u8,
    pub group: Ipv4Addr,
    pub sources: Sources<'a>,
}

impl GroupRecord<'_> {
    /// Bytes the record takes in a report (no auxiliary data is emitted).
    pub fn buffer_len(&self) -> usize {
        RECORD_LEN + 4 * self.sources.len()
    }
}

/// The group records of a version 3 report: as received (validated raw
/// bytes) or built by the stack.
#[derive(Debug, Clone, Copy)]
pub enum Records<'a> {
    /// `count` records back to back, lengths checked by [`IgmpRepr::parse`].
    Raw { count: usize, bytes: &'a [u8] },
    /// Records.
    List(&'a [GroupRecord<'a>]),
}

impl<'a> Records<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Records::Raw { count, .. } => *count,
            Records::List(l) => l.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records in order.
    pub fn iter(&self) -> impl Iterator<Item = GroupRecord<'a>> + 'a {
        let (mut raw, count, list): (&'a [u8], usize, &'a [GroupRecord<'a>]) = match *self {
            Records::Raw { count, bytes } => (bytes, count, &[]),
            Records::List(l) => (&[], 0, l),
        };
        let mut left = count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            // Lengths were validated when the report was parsed.
            let (rec, rest) = split_record(raw).ok()?;
            raw = rest;
            Some(rec)
        })
        .chain(list.iter().copied())
    }

    fn buffer_len(&self) -> usize {
        match self {
            Records::Raw { bytes, .. } => bytes.len(),
            Records::List(l) => l.iter().map(GroupRecord::buffer_len).sum(),
        }
    }
}

impl PartialEq for Records<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Records<'_> {}

/// Splits the first group record off `b` (auxiliary data skipped).
fn split_record(b: &[u8]) -> Result<(GroupRecord<'_>, &[u8])> {
    if b.len() < RECORD_LEN {
        return Err(Error::Truncated);
    }
    let aux = usize::from(b[1]) * 4;
    let n = usize::from(read_u16(b, 2));
    let len = RECORD_LEN + 4 * n + aux;
    if b.len() < len {
        return Err(Error::Truncated);
    }
    let rec = GroupRecord {
        record_type: b[0],
        group: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        sources: Sources::Raw(&b[RECORD_LEN..RECORD_LEN + 4 * n]),
    };
    Ok((rec, &b[len..]))
}

/// Which version of the protocol a query belongs to (RFC 3376 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryVersion {
    /// 8 bytes, max response 0.
    V1,
    /// 8 bytes, max response not 0.
    V2,
    /// 12 bytes or more.
    V3,
}

/// The IGMP messages a host sends and understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgmpRepr<'a> {
    /// A membership query; `group` 0.0.0.0 is a general query.
    Query {
        version: QueryVersion,
        /// Max Resp Code as sent (see [`IgmpRepr::max_resp_ds`]).
        max_resp_code: u8,
        group: Ipv4Addr,
        /// v3: S flag (suppress router-side processing).
        suppress: bool,
        /// v3: querier's robustness variable (0 in v1/v2).
        qrv: u8,
        /// v3: querier's query interval code (0 in v1/v2).
        qqic: u8,
        /// v3: sources of a group-and-source-specific query.
        sources: Sources<'a>,
    },
    /// Version 1 report.
    ReportV1 { group: Ipv4Addr },
    /// Version 2 report.
    ReportV2 { group: Ipv4Addr },
    /// Version 2 leave.
    Leave { group: Ipv4Addr },
    /// Version 3 report.
    ReportV3 { records: Records<'a> },
}

impl<'a> IgmpRepr<'a> {
    /// Parses one message (`buf` is exactly the IGMP message: the IP payload).
    pub fn parse(buf: &'a [u8], verify_checksum: bool) -> Result<IgmpRepr<'a>> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if verify_checksum && checksum::finish(checksum::accumulate(buf, 0)) != 0 {
            return Err(Error::Checksum);
        }
        let group = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
        Ok(match buf[0] {
            msg_type::QUERY if buf.len() == HEADER_LEN => IgmpRepr::Query {
                version: if buf[1] == 0 {
                    QueryVersion::V1
                } else {
                    QueryVersion::V2
                },
                max_resp_code: buf[1],
                group,
                suppress: false,
                qrv: 0,
                qqic: 0,
                sources: Sources::Raw(&[]),
            },
            msg_type::QUERY => {
                // RFC 3376 7.1: 9 to 11 bytes is no query at all.
                if buf.len() < V3_QUERY_LEN {
                    return Err(Error::Malformed);
                }
                let n = usize::from(read_u16(buf, 10));
                let end = V3_QUERY_LEN + 4 * n;
                if buf.len() < end {
                    return Err(Error::Truncated);
                }
                IgmpRepr::Query {
                    version: QueryVersion::V3,
                    max_resp_code: buf[1],
                    group,
                    suppress: buf[8] & 0x08 != 0,
                    qrv: buf[8] & 0x07,
                    qqic: buf[9],
                    sources: Sources::Raw(&buf[V3_QUERY_LEN..end]),
                }
            }
            msg_type::V1_REPORT => IgmpRepr::ReportV1 { group },
            msg_type::V2_REPORT => IgmpRepr::ReportV2 { group },
            msg_type::LEAVE => IgmpRepr::Leave { group },
            msg_type::V3_REPORT => {
                let count = usize::from(read_u16(buf, 6));
                let bytes = &buf[HEADER_LEN..];
                let mut rest = bytes;
                for _ in 0..count {
                    rest = split_record(rest)?.1;
                }
                let used = bytes.len() - rest.len();
                IgmpRepr::ReportV3 {
                    records: Records::Raw {
                        count,
                        bytes: &bytes[..used],
                    },
                }
            }
            _ => return Err(Error::Unsupported),
        })
    }

    /// Max response time in tenths of a second, as the query's version
    /// reads its code (a v1 query's 0 means 10 s, RFC 2236 4).
    pub fn max_resp_ds(&self) -> u32 {
        match *self {
            IgmpRepr::Query {
                version: QueryVersion::V1,
                ..
            } => 100,
            IgmpRepr::Query {
                version: QueryVersion::V2,
                max_resp_code,
                ..
            } => u32::from(max_resp_code),
            IgmpRepr::Query { max_resp_code, .. } => decode_code(max_resp_code),
            _ => 0,
        }
    }

    /// Bytes [`IgmpRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            IgmpRepr::Query {
                version: QueryVersion::V3,
                sources,
                ..
            } => V3_QUERY_LEN + 4 * sources.len(),
            IgmpRepr::ReportV3 { records } => HEADER_LEN + records.buffer_len(),
            _ => HEADER_LEN,
        }
    }

    /// Writes the message with its checksum at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let len = self.buffer_len();
        let m = buf.get_mut(..len).ok_or(Error::Truncated)?;
        m.fill(0);
        match *self {
            IgmpRepr::Query {
                version,
                max_resp_code,
                group,
                suppress,
                qrv,
                qqic,
                sources,
            } => {
                m[0] = msg_type::QUERY;
                m[1] = if version == QueryVersion::V1 {
                    0
                } else {
                    max_resp_code
                };
                m[4..8].copy_from_slice(&group.octets());
                if version == QueryVersion::V3 {
                    let n = u16::try_from(sources.len()).map_err(|_| Error::Malformed)?;
                    m[8] = u8::from(suppress) << 3 | (qrv & 0x07);
                    m[9] = qqic;
                    write_u16(m, 10, n);
                    sources.emit(&mut m[V3_QUERY_LEN..]);
                }
            }
            IgmpRepr::ReportV1 { group } => {
                m[0] = msg_type::V1_REPORT;
                m[4..8].copy_from_slice(&group.octets());
            }
            IgmpRepr::ReportV2 { group } => {
                m[0] = msg_type::V2_REPORT;
                m[4..8].copy_from_slice(&group.octets());
            }
            IgmpRepr::Leave { group } => {
                m[0] = msg_type::LEAVE;
                m[4..8].copy_from_slice(&group.octets());
            }
            IgmpRepr::ReportV3 { records } => {
                m[0] = msg_type::V3_REPORT;
                let n = u16::try_from(records.len()).map_err(|_| Error::Malformed)?;
                write_u16(m, 6, n);
                let mut at = HEADER_LEN;
                for r in records.iter() {
                    let ns = u16::try_from(r.sources.len()).map_err(|_| Error::Malformed)?;
                    let rl = r.buffer_len();
                    let rec = m.get_mut(at..at + rl).ok_or(Error::Malformed)?;
                    rec[0] = r.record_type;
                    rec[1] = 0;
                    write_u16(rec, 2, ns);
                    rec[4..8].copy_from_slice(&r.group.octets());
                    r.sources.emit(&mut rec[RECORD_LEN..]);
                    at += rl;
                }
            }
        }
        let c = checksum::finish(checksum::accumulate(m, 0));
        write_u16(m, 2, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.x joining 239.1.2.3 (ASM) and 232.1.1.1 from 10.99.0.5
    /// (SSM) on a veth: one v3 report with two records (captured).
    const LINUX_JOIN: [u8; 32] = [
        0x22, 0x00, 0xf0, 0x8c, 0x00, 0x00, 0x00, 0x02, 0x05, 0x00, 0x00, 0x01, 0xe8, 0x01, 0x01,
        0x01, 0x0a, 0x63, 0x00, 0x05, 0x04, 0x00, 0x00, 0x00, 0xef, 0x01, 0x02, 0x03,
        // The capture's record list ends here; 4 more bytes test that
        // trailing bytes are not taken as records.
        0xde, 0xad, 0xbe, 0xef,
    ];
    /// The same host closing the ASM socket: CHANGE_TO_INCLUDE {} (captured).
    const LINUX_LEAVE: [u8; 16] = [
        0x22, 0x00, 0xe9, 0xf9, 0x00, 0x00, 0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0xef, 0x01, 0x02,
        0x03,
    ];
    /// A v2 leave of 224.0.6.150 and a v2 report of 225.0.0.37.
    const V2_LEAVE: [u8; 8] = [0x17, 0x00, 0x02, 0x69, 0xe0, 0x00, 0x06, 0x96];
    const V2_REPORT: [u8; 8] = [0x16, 0x00, 0x08, 0xda, 0xe1, 0x00, 0x00, 0x25];

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rebuilds_captured_v3_report() {
        let msg = &LINUX_JOIN[..28];
        let r = IgmpRepr::parse(msg, true).unwrap();
        let IgmpRepr::ReportV3 { records } = r else {
            panic!("{r:?}")
        };
        let recs: Vec<_> = records.iter().collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].record_type, record_type::ALLOW_NEW_SOURCES);
        assert_eq!(recs[0].group, a("232.1.1.1"));
        assert_eq!(recs[0].sources.iter().collect::<Vec<_>>(), [a("10.99.0.5")]);
        assert_eq!(recs[1].record_type, record_type::CHANGE_TO_EXCLUDE);
        assert_eq!(recs[1].group, a("239.1.2.3"));
        assert!(recs[1].sources.is_empty());
        let srcs = [a("10.99.0.5")];
        let built = [
            GroupRecord {
                record_type: record_type::ALLOW_NEW_SOURCES,
                group: a("232.1.1.1"),
                sources: Sources::List(&srcs),
            },
            GroupRecord {
                record_type: record_type::CHANGE_TO_EXCLUDE,
                group: a("239.1.2.3"),
                sources: Sources::List(&[]),
            },
        ];
        let mine = IgmpRepr::ReportV3 {
            records: Records::List(&built),
        };
        assert_eq!(mine, r);
        assert_eq!(mine.buffer_len(), 28);
        let mut out = [0u8; 28];
        mine.emit(&mut out).unwrap();
        assert_eq!(out, msg, "byte-identical to Linux, checksum included");
        // Trailing bytes after the records are not records.
        let IgmpRepr::ReportV3 { records } = IgmpRepr::parse(&LINUX_JOIN, false).unwrap() else {
            panic!()
        };
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn captured_leave_and_v2_messages() {
        let r = IgmpRepr::parse(&LINUX_LEAVE, true).unwrap();
        let rec = GroupRecord {
            record_type: record_type::CHANGE_TO_INCLUDE,
            group: a("239.1.2.3"),
            sources: Sources::List(&[]),
        };
        let mine = IgmpRepr::ReportV3 {
            records: Records::List(std::slice::from_ref(&rec)),
        };
        assert_eq!(r, mine);
        let mut out = [0u8; 16];
        mine.emit(&mut out).unwrap();
        assert_eq!(out, LINUX_LEAVE);
        for (bytes, repr) in [
            (
                V2_LEAVE,
                IgmpRepr::Leave {
                    group: a("224.0.6.150"),
                },
            ),
            (
                V2_REPORT,
                IgmpRepr::ReportV2 {
                    group: a("225.0.0.37"),
                },
            ),
        ] {
            assert_eq!(IgmpRepr::parse(&bytes, true).unwrap(), repr);
            let mut out = [0u8; 8];
            repr.emit(&mut out).unwrap();
            assert_eq!(out, bytes);
        }
        let v1 = IgmpRepr::ReportV1 {
            group: a("239.0.0.1"),
        };
        let mut out = [0u8; 8];
        v1.emit(&mut out).unwrap();
        assert_eq!(out[0], msg_type::V1_REPORT);
        assert_eq!(IgmpRepr::parse(&out, true).unwrap(), v1);
    }

    #[test]
    fn query_versions_by_length_and_max_resp() {
        let mut q = [0x11, 0, 0, 0, 0, 0, 0, 0];
        let c = checksum::finish(checksum::accumulate(&q, 0));
        q[2..4].copy_from_slice(&c.to_be_bytes());
        let r = IgmpRepr::parse(&q, true).unwrap();
        assert!(matches!(
            r,
            IgmpRepr::Query {
                version: QueryVersion::V1,
                ..
            }
        ));
        assert_eq!(r.max_resp_ds(), 100, "v1: 10 s");
        let v2 = IgmpRepr::Query {
            version: QueryVersion::V2,
            max_resp_code: 100,
            group: a("239.1.2.3"),
            suppress: false,
            qrv: 0,
            qqic: 0,
            sources: Sources::Raw(&[]),
        };
        let mut b = [0u8; 8];
        v2.emit(&mut b).unwrap();
        assert_eq!(IgmpRepr::parse(&b, true).unwrap(), v2);
        let srcs = [a("10.0.0.1"), a("10.0.0.2")];
        let v3 = IgmpRepr::Query {
            version: QueryVersion::V3,
            max_resp_code: encode_code(200),
            group: a("232.1.1.1"),
            suppress: true,
            qrv: 2,
            qqic: 125,
            sources: Sources::List(&srcs),
        };
        let mut b = [0u8; 20];
        v3.emit(&mut b).unwrap();
        assert_eq!(b[8], 0x0a);
        let p = IgmpRepr::parse(&b, true).unwrap();
        assert_eq!(p, v3);
        assert_eq!(p.max_resp_ds(), 200);
        // 9-11 bytes is neither a v1/v2 nor a v3 query.
        assert_eq!(IgmpRepr::parse(&b[..10], false), Err(Error::Malformed));
        // A source count beyond the message.
        assert_eq!(IgmpRepr::parse(&b[..16], false), Err(Error::Truncated));
    }

    #[test]
    fn float_codes() {
        assert_eq!(decode_code(127), 127);
        assert_eq!(decode_code(0x80), 128);
        assert_eq!(decode_code(0xff), 31744);
        for v in [0, 1, 127, 128, 200, 992, 31744] {
            assert_eq!(decode_code(encode_code(v)), v, "{v}");
        }
        assert!(decode_code(encode_code(1001)) <= 1001);
        assert_eq!(encode_code(u32::MAX), 0xff);
    }

    #[test]
    fn bad_checksum_and_truncation() {
        let mut m = LINUX_LEAVE;
        m[15] ^= 1;
        assert_eq!(IgmpRepr::parse(&m, true), Err(Error::Checksum));
        for n in 0..LINUX_LEAVE.len() {
            if n == HEADER_LEN {
                continue; // 8 bytes of a v3 report with one record: truncated record
            }
            assert!(IgmpRepr::parse(&LINUX_LEAVE[..n], false).is_err(), "{n}");
        }
        assert_eq!(
            IgmpRepr::parse(&LINUX_LEAVE[..8], false),
            Err(Error::Truncated)
        );
        let mut small = [0u8; 15];
        let rec = GroupRecord {
            record_type: 3,
            group: a("239.1.2.3"),
            sources: Sources::List(&[]),
        };
        let r = IgmpRepr::ReportV3 {
            records: Records::List(std::slice::from_ref(&rec)),
        };
        assert_eq!(r.emit(&mut small), Err(Error::Truncated));
        assert_eq!(
            IgmpRepr::parse(&[0x99, 0, 0x66, 0xff, 0, 0, 0, 0], true),
            Err(Error::Unsupported)
        );
    }
}
