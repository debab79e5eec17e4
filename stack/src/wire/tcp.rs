//! TCP (RFC 9293): the segment header, its options (RFC 7323 window scale
//! and timestamps, RFC 2018 SACK) and the IPv4 pseudo-header checksum.

use std::net::Ipv4Addr;

use super::seq::SeqNum;
use super::{checksum, ipv4, read_u16, write_u16, Error, Result};

/// Length of the TCP header without options.
pub const HEADER_LEN: usize = 20;
/// Longest header: a data offset of 15 words.
pub const MAX_HEADER_LEN: usize = 60;
/// Largest segment (header, options and payload) that fits in one IPv4
/// packet without IP options.
pub const MAX_LEN: usize = 65_515;
/// Largest window shift (RFC 7323 section 2.3); larger received values are
/// clamped to this.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// Flag bits of byte 13 of the header; `u8` constants so flags combine with `|`.
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push buffered data to the application.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Option kinds and lengths as assigned by IANA.
mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WS: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMP: u8 = 8;

    pub const MSS_LEN: usize = 4;
    pub const WS_LEN: usize = 3;
    pub const SACK_PERM_LEN: usize = 2;
    pub const TIMESTAMP_LEN: usize = 10;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Read a big-endian `u32` at `at`; callers must have checked the length.
#[inline]
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Write a big-endian `u32` at `at`; callers must have checked the length.
#[inline]
fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Checksum over `segment` (checksum field included as stored) and the
/// pseudo-header; `None` when the segment cannot fit in an IPv4 packet.
fn segment_sum(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<u16> {
    let len = u16::try_from(segment.len()).ok()?;
    Some(checksum::finish(checksum::accumulate(
        segment,
        checksum::pseudo_header_v4(src, dst, ipv4::protocol::TCP, len),
    )))
}

/// A view of a TCP segment; `new_checked` guarantees the getters are in
/// bounds. The segment is the whole buffer (TCP has no length field), so the
/// caller must pass exactly the IPv4 payload as bounded by the total length.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checks (only for buffers the stack built).
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after checking that the fixed header fits and that
    /// the data offset is at least 5 words and within the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::DATA_OFFSET] >> 4) * 4;
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(TcpPacket { buffer })
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

    /// Sequence number of the first byte (or of the SYN).
    pub fn seq_number(&self) -> SeqNum {
        SeqNum(read_u32(self.b(), field::SEQ))
    }

    /// Acknowledgment number (meaningful only with the ACK flag).
    pub fn ack_number(&self) -> SeqNum {
        SeqNum(read_u32(self.b(), field::ACK))
    }

    /// Header length in bytes (data offset times 4), options included.
    pub fn header_len(&self) -> u8 {
        (self.b()[field::DATA_OFFSET] >> 4) * 4
    }

    /// All eight flag bits (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }

    /// FIN flag.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN flag.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST flag.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// PSH flag.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// ACK flag.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// URG flag.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// Window field (unscaled).
    pub fn window_len(&self) -> u16 {
        read_u16(self.b(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// Urgent pointer field.
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.b(), field::URGENT)
    }

    /// Raw option bytes between the fixed header and the payload (empty if
    /// the data offset does not fit the buffer).
    pub fn options(&self) -> &[u8] {
        let hl = usize::from(self.header_len());
        self.b().get(HEADER_LEN..hl).unwrap_or(&[])
    }

    /// Payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        let hl = usize::from(self.header_len());
        self.b().get(hl..).unwrap_or(&[])
    }

    /// Whether the checksum over the whole buffer and the pseudo-header
    /// verifies (a segment longer than 65535 bytes never does).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        segment_sum(self.b(), src, dst) == Some(0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, p: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, s: SeqNum) {
        write_u32(self.buffer.as_mut(), field::SEQ, s.0);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, s: SeqNum) {
        write_u32(self.buffer.as_mut(), field::ACK, s.0);
    }

    /// Sets the header length in bytes (rounded down to whole words); the
    /// low nibble of the byte (reserved bits) is kept.
    pub fn set_header_len(&mut self, len: u8) {
        let b = self.buffer.as_mut();
        b[field::DATA_OFFSET] = ((len / 4) << 4) | (b[field::DATA_OFFSET] & 0x0f);
    }

    /// Sets all eight flag bits.
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Sets the window field.
    pub fn set_window_len(&mut self, w: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, w);
    }

    /// Sets the checksum field as is.
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, u: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, u);
    }

    /// Option bytes, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..hl)
            .unwrap_or(&mut [])
    }

    /// Payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        self.buffer.as_mut().get_mut(hl..).unwrap_or(&mut [])
    }

    /// Computes and stores the checksum over the whole buffer. A buffer
    /// longer than 65535 bytes cannot be checksummed; its field is zeroed.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = segment_sum(self.b(), src, dst).unwrap_or(0);
        self.set_checksum(c);
    }
}

/// One option as found on the wire; lets callers inspect options the
/// summary in [`TcpOptions`] drops (unknown kinds, order, padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: end of the option list.
    EndOfList,
    /// Kind 1: padding.
    NoOperation,
    /// Kind 2: maximum segment size the sender can receive.
    MaxSegmentSize(u16),
    /// Kind 3: window shift, as sent (not clamped).
    WindowScale(u8),
    /// Kind 4: the sender accepts SACK blocks.
    SackPermitted,
    /// Kind 5: up to four `(left, right)` edges of received blocks.
    SackRange([Option<(SeqNum, SeqNum)>; 4]),
    /// Kind 8: timestamp value and echo reply.
    Timestamp {
        /// Sender's clock.
        tsval: u32,
        /// Echo of the peer's latest `tsval`.
        tsecr: u32,
    },
    /// Any other kind, with its data (after kind and length bytes).
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data.
        data: &'a [u8],
    },
}

/// Iterator over an option list; stops after `EndOfList` or at the first
/// malformed option (length 0 or 1, overrunning the list, or a wrong fixed
/// length for a known kind), as Linux does.
#[derive(Debug, Clone)]
pub struct TcpOptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptionIter<'a> {
    /// Iterates over raw option bytes (see [`TcpPacket::options`]).
    pub fn new(opts: &'a [u8]) -> Self {
        TcpOptionIter { rest: opts }
    }
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = TcpOption<'a>;

    fn next(&mut self) -> Option<TcpOption<'a>> {
        let rest = self.rest;
        // Unless an option is complete and valid, stop for good.
        self.rest = &[];
        let (&k, tail) = rest.split_first()?;
        match k {
            kind::END => return Some(TcpOption::EndOfList),
            kind::NOP => {
                self.rest = tail;
                return Some(TcpOption::NoOperation);
            }
            _ => {}
        }
        let len = usize::from(*tail.first()?);
        if len < 2 {
            return None;
        }
        let data = rest.get(2..len)?;
        let opt = match (k, len) {
            (kind::MSS, kind::MSS_LEN) => TcpOption::MaxSegmentSize(read_u16(data, 0)),
            (kind::WS, kind::WS_LEN) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERM, kind::SACK_PERM_LEN) => TcpOption::SackPermitted,
            (kind::SACK, _) if data.len() % 8 == 0 && (1..=4).contains(&(data.len() / 8)) => {
                let mut blocks = [None; 4];
                for (slot, c) in blocks.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some((SeqNum(read_u32(c, 0)), SeqNum(read_u32(c, 4))));
                }
                TcpOption::SackRange(blocks)
            }
            (kind::TIMESTAMP, kind::TIMESTAMP_LEN) => TcpOption::Timestamp {
                tsval: read_u32(data, 0),
                tsecr: read_u32(data, 4),
            },
            (kind::MSS | kind::WS | kind::SACK_PERM | kind::SACK | kind::TIMESTAMP, _) => {
                return None
            }
            _ => TcpOption::Unknown { kind: k, data },
        };
        self.rest = &rest[len..];
        Some(opt)
    }
}

/// The options this stack acts on, summarised from an option list so the
/// connection code never walks raw bytes.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size (sent on SYN only).
    pub mss: Option<u16>,
    /// Window shift, at most [`MAX_WINDOW_SCALE`] (sent on SYN only).
    pub window_scale: Option<u8>,
    /// SACK permitted (sent on SYN only).
    pub sack_permitted: bool,
    /// SACK blocks `(left, right)`, filled from the front (not sent on SYN).
    pub sack_blocks: [Option<(SeqNum, SeqNum)>; 4],
    /// Timestamps `(tsval, tsecr)`.
    pub timestamp: Option<(u32, u32)>,
}

impl TcpOptions {
    /// Number of SACK blocks present.
    pub fn sack_count(&self) -> usize {
        self.sack_blocks.iter().flatten().count()
    }
}

/// Summarises an option list; a malformed option stops parsing and keeps
/// what came before it, and a later duplicate replaces an earlier one.
pub fn parse_options(opts: &[u8]) -> TcpOptions {
    let mut o = TcpOptions::default();
    for opt in TcpOptionIter::new(opts) {
        match opt {
            TcpOption::MaxSegmentSize(m) => o.mss = Some(m),
            TcpOption::WindowScale(w) => o.window_scale = Some(w.min(MAX_WINDOW_SCALE)),
            TcpOption::SackPermitted => o.sack_permitted = true,
            TcpOption::SackRange(b) => o.sack_blocks = b,
            TcpOption::Timestamp { tsval, tsecr } => o.timestamp = Some((tsval, tsecr)),
            TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
        }
    }
    o
}

/// The fields of a TCP segment, with the options this stack understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number of the first byte (or of the SYN).
    pub seq: SeqNum,
    /// `Some` iff the ACK flag is set; on emit this alone decides the flag.
    pub ack: Option<SeqNum>,
    /// All flag bits as on the wire (ACK included when `ack` is `Some`).
    pub flags: u8,
    /// Window field (unscaled).
    pub window: u16,
    /// Options; on emit, MSS, window scale and SACK-permitted are written
    /// only with SYN, SACK blocks only without it.
    pub options: TcpOptions,
    /// Segment data.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Reads a checked segment; with `verify`, a bad checksum is an error.
    /// Options are parsed whatever the flags; the connection code decides
    /// which are meaningful (MSS and window scale only on SYN).
    pub fn parse(
        p: &TcpPacket<&'a [u8]>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify: bool,
    ) -> Result<TcpRepr<'a>> {
        if verify && !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        let buf: &'a [u8] = p.buffer;
        let hl = usize::from(p.header_len());
        let options = buf.get(HEADER_LEN..hl).ok_or(Error::Truncated)?;
        let payload = buf.get(hl..).ok_or(Error::Truncated)?;
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq_number(),
            ack: p.ack().then(|| p.ack_number()),
            flags: p.flags(),
            window: p.window_len(),
            options: parse_options(options),
            payload,
        })
    }

    fn is_syn(&self) -> bool {
        self.flags & flags::SYN != 0
    }

    /// SACK blocks that will be emitted: none on SYN, and at most 3 with a
    /// timestamp or 4 without (40 bytes of option space).
    fn sack_emit_count(&self) -> usize {
        if self.is_syn() {
            return 0;
        }
        let room = if self.options.timestamp.is_some() {
            3
        } else {
            4
        };
        self.options.sack_count().min(room)
    }

    /// Bytes of options `emit` writes (always a multiple of 4).
    fn options_len(&self) -> usize {
        let o = &self.options;
        let mut n = 0;
        if self.is_syn() {
            if o.mss.is_some() {
                n += 4;
            }
            if o.sack_permitted && o.timestamp.is_none() {
                n += 4;
            }
            if o.window_scale.is_some() {
                n += 4;
            }
        }
        if o.timestamp.is_some() {
            n += 12;
        }
        let sacks = self.sack_emit_count();
        if sacks > 0 {
            n += 4 + 8 * sacks;
        }
        n
    }

    /// Header length `emit` writes: 20 plus the options, padded to a
    /// multiple of 4 (at most 60).
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len().next_multiple_of(4)
    }

    /// Sequence space the segment consumes: payload plus one each for SYN
    /// and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags & flags::SYN != 0)
            + usize::from(self.flags & flags::FIN != 0)
    }

    /// Writes the options in Linux's order and alignment: on SYN, MSS, then
    /// `SACKOK TS` or `NOP NOP TS`, then `NOP NOP SACKOK` (without TS), then
    /// `NOP WS`; otherwise `NOP NOP TS` then `NOP NOP SACK`. `out` is exactly
    /// `options_len()` bytes long.
    fn emit_options(&self, out: &mut [u8]) {
        let o = &self.options;
        let syn = self.is_syn();
        let mut at = 0;
        if let (true, Some(mss)) = (syn, o.mss) {
            out[at..at + 2].copy_from_slice(&[kind::MSS, kind::MSS_LEN as u8]);
            write_u16(out, at + 2, mss);
            at += 4;
        }
        if let Some((tsval, tsecr)) = o.timestamp {
            let lead = if syn && o.sack_permitted {
                [kind::SACK_PERM, kind::SACK_PERM_LEN as u8]
            } else {
                [kind::NOP, kind::NOP]
            };
            out[at..at + 2].copy_from_slice(&lead);
            out[at + 2..at + 4].copy_from_slice(&[kind::TIMESTAMP, kind::TIMESTAMP_LEN as u8]);
            write_u32(out, at + 4, tsval);
            write_u32(out, at + 8, tsecr);
            at += 12;
        } else if syn && o.sack_permitted {
            out[at..at + 4].copy_from_slice(&[
                kind::NOP,
                kind::NOP,
                kind::SACK_PERM,
                kind::SACK_PERM_LEN as u8,
            ]);
            at += 4;
        }
        if let (true, Some(ws)) = (syn, o.window_scale) {
            out[at..at + 4].copy_from_slice(&[
                kind::NOP,
                kind::WS,
                kind::WS_LEN as u8,
                ws.min(MAX_WINDOW_SCALE),
            ]);
            at += 4;
        }
        let sacks = self.sack_emit_count();
        if sacks > 0 {
            out[at..at + 4].copy_from_slice(&[
                kind::NOP,
                kind::NOP,
                kind::SACK,
                (2 + 8 * sacks) as u8,
            ]);
            at += 4;
            for (l, r) in o.sack_blocks.iter().flatten().take(sacks) {
                write_u32(out, at, l.0);
                write_u32(out, at + 4, r.0);
                at += 8;
            }
        }
        debug_assert_eq!(at, out.len());
    }

    /// Writes header, options, payload and checksum into the start of
    /// `buf`; returns the segment length. `Truncated` if `buf` is too
    /// small, `Malformed` if the segment would not fit in an IPv4 packet.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize> {
        let hl = self.header_len();
        let total = hl + self.payload.len();
        if total > MAX_LEN {
            return Err(Error::Malformed);
        }
        let seg = buf.get_mut(..total).ok_or(Error::Truncated)?;
        let flags = (self.flags & !flags::ACK) | if self.ack.is_some() { flags::ACK } else { 0 };
        write_u16(seg, field::SRC_PORT, self.src_port);
        write_u16(seg, field::DST_PORT, self.dst_port);
        write_u32(seg, field::SEQ, self.seq.0);
        write_u32(seg, field::ACK, self.ack.unwrap_or_default().0);
        seg[field::DATA_OFFSET] = ((hl / 4) as u8) << 4;
        seg[field::FLAGS] = flags;
        write_u16(seg, field::WINDOW, self.window);
        write_u16(seg, field::CHECKSUM, 0);
        write_u16(seg, field::URGENT, 0);
        let ol = self.options_len();
        self.emit_options(&mut seg[HEADER_LEN..HEADER_LEN + ol]);
        // Padding: End of Option List (zeros); empty with Linux's layouts.
        seg[HEADER_LEN + ol..hl].fill(kind::END);
        seg[hl..].copy_from_slice(self.payload);
        TcpPacket::new_unchecked(seg).fill_checksum(src, dst);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const B: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    /// Straightforward RFC 793/1071 checksum, independent of `checksum.rs`:
    /// sums 16-bit words of the pseudo-header and the segment.
    fn reference_checksum(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.push(0);
        pseudo.push(6);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(seg);
        let mut sum: u64 = 0;
        for pair in pseudo.chunks(2) {
            sum += (u64::from(pair[0]) << 8) | pair.get(1).copied().map_or(0, u64::from);
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// A Linux SYN as captured: 40-byte header, MSS 1460, SACK permitted,
    /// timestamps, window scale 7; checksum from the reference implementation.
    fn linux_syn() -> Vec<u8> {
        let mut s = vec![
            0xa4, 0xc2, 0x00, 0x50, // ports 42178 -> 80
            0x3b, 0x9a, 0xca, 0x07, // seq 0x3b9aca07
            0x00, 0x00, 0x00, 0x00, // ack 0
            0xa0, 0x02, 0xfa, 0xf0, // offset 10, SYN, window 64240
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
            0x02, 0x04, 0x05, 0xb4, // MSS 1460
            0x04, 0x02, 0x08, 0x0a, // SACKOK, TS
            0x9a, 0x3e, 0x1f, 0x55, // tsval
            0x00, 0x00, 0x00, 0x00, // tsecr
            0x01, 0x03, 0x03, 0x07, // NOP, WS 7
        ];
        let c = reference_checksum(A, B, &s);
        s[16..18].copy_from_slice(&c.to_be_bytes());
        s
    }

    fn data_repr(payload: &[u8]) -> TcpRepr<'_> {
        TcpRepr {
            src_port: 5001,
            dst_port: 40123,
            seq: SeqNum(u32::MAX - 3),
            ack: Some(SeqNum(0x1234_5678)),
            flags: flags::ACK | flags::PSH,
            window: 502,
            options: TcpOptions {
                timestamp: Some((0xdead_beef, 0x0102_0304)),
                ..TcpOptions::default()
            },
            payload,
        }
    }

    fn round_trip(r: &TcpRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0xaau8; r.header_len() + r.payload.len() + 7];
        let n = r.emit(&mut buf, A, B).unwrap();
        assert_eq!(n, r.header_len() + r.payload.len());
        buf.truncate(n);
        assert_eq!(
            reference_checksum(A, B, &buf),
            0,
            "reference checksum verifies"
        );
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(usize::from(p.header_len()), r.header_len());
        assert_eq!(p.header_len() % 4, 0);
        let back = TcpRepr::parse(&p, A, B, true).unwrap();
        assert_eq!(&back, r);
        buf
    }

    #[test]
    fn parses_linux_syn() {
        let s = linux_syn();
        let p = TcpPacket::new_checked(&s[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (42178, 80));
        assert_eq!(p.seq_number(), SeqNum(0x3b9a_ca07));
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh() && !p.urg());
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options().len(), 20);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(A, B));
        assert!(!p.verify_checksum(A, Ipv4Addr::new(93, 184, 216, 35)));
        let r = TcpRepr::parse(&p, A, B, true).unwrap();
        assert_eq!(r.ack, None);
        assert_eq!(
            r.options,
            TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                sack_blocks: [None; 4],
                timestamp: Some((0x9a3e_1f55, 0)),
            }
        );
        let kinds: Vec<_> = TcpOptionIter::new(p.options()).collect();
        assert_eq!(
            kinds,
            vec![
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamp {
                    tsval: 0x9a3e_1f55,
                    tsecr: 0
                },
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
            ]
        );
        // Emitting the parsed repr reproduces Linux's bytes exactly,
        // checksum included.
        let mut out = [0u8; 40];
        assert_eq!(r.emit(&mut out, A, B), Ok(40));
        assert_eq!(&out[..], &s[..]);
        assert_eq!(
            TcpPacket::new_checked(&out[..]).unwrap().checksum(),
            p.checksum()
        );
    }

    #[test]
    fn round_trip_syn_and_syn_ack() {
        let mut syn = TcpRepr {
            src_port: 42178,
            dst_port: 80,
            seq: SeqNum(1),
            ack: None,
            flags: flags::SYN,
            window: 64240,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                sack_blocks: [None; 4],
                timestamp: Some((7, 0)),
            },
            payload: &[],
        };
        assert_eq!(syn.header_len(), 40);
        assert_eq!(syn.segment_len(), 1);
        round_trip(&syn);
        // SACK permitted without timestamps: NOP NOP SACKOK.
        syn.options.timestamp = None;
        let b = round_trip(&syn);
        assert_eq!(&b[20..32], &[2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7]);
        // Timestamps without SACK: NOP NOP TS.
        syn.options.timestamp = Some((1, 2));
        syn.options.sack_permitted = false;
        let b = round_trip(&syn);
        assert_eq!(&b[24..28], &[1, 1, 8, 10]);

        let syn_ack = TcpRepr {
            src_port: 80,
            dst_port: 42178,
            seq: SeqNum(u32::MAX),
            ack: Some(SeqNum(2)),
            flags: flags::SYN | flags::ACK,
            window: 65160,
            options: TcpOptions {
                mss: Some(1400),
                window_scale: Some(14),
                sack_permitted: true,
                sack_blocks: [None; 4],
                timestamp: Some((99, 7)),
            },
            payload: &[],
        };
        let b = round_trip(&syn_ack);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert!(p.syn() && p.ack());
        assert_eq!(p.ack_number(), SeqNum(2));
    }

    #[test]
    fn round_trip_data_ack_rst() {
        let payload: Vec<u8> = (0..=200u8).collect(); // odd length
        let r = data_repr(&payload);
        assert_eq!(r.header_len(), 32);
        assert_eq!(r.segment_len(), 201);
        let b = round_trip(&r);
        assert_eq!(&b[20..24], &[1, 1, 8, 10]);
        assert_eq!(&b[32..], &payload[..]);
        // Pure ACK without options.
        let mut ack = data_repr(&[]);
        ack.options = TcpOptions::default();
        ack.flags = flags::ACK;
        assert_eq!(round_trip(&ack).len(), 20);
        // RST without ACK.
        let rst = TcpRepr {
            ack: None,
            flags: flags::RST,
            ..ack
        };
        let b = round_trip(&rst);
        assert_eq!(b[13], flags::RST);
        assert_eq!(&b[8..12], &[0; 4]);
        // FIN consumes sequence space.
        let fin = TcpRepr {
            flags: flags::FIN | flags::ACK,
            ..ack
        };
        assert_eq!(fin.segment_len(), 1);
        round_trip(&fin);
    }

    #[test]
    fn ack_field_decides_the_ack_flag() {
        let mut r = data_repr(b"x");
        r.flags = flags::PSH; // ACK bit missing but ack is Some
        let mut buf = [0u8; 64];
        let n = r.emit(&mut buf, A, B).unwrap();
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.flags(), flags::PSH | flags::ACK);
        r.ack = None;
        r.flags = flags::ACK | flags::FIN; // ACK bit set but ack is None
        let n = r.emit(&mut buf, A, B).unwrap();
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.flags(), flags::FIN);
        assert_eq!(p.ack_number(), SeqNum(0));
    }

    #[test]
    fn sack_blocks_with_and_without_timestamps() {
        let blocks = [
            Some((SeqNum(u32::MAX - 100), SeqNum(50))),
            Some((SeqNum(1000), SeqNum(2000))),
            Some((SeqNum(3000), SeqNum(4000))),
            Some((SeqNum(5000), SeqNum(6000))),
        ];
        let mut r = data_repr(&[]);
        r.options.sack_blocks = [blocks[0], blocks[1], blocks[2], None];
        assert_eq!(r.header_len(), 60);
        let b = round_trip(&r);
        assert_eq!(&b[20..24], &[1, 1, 8, 10]);
        assert_eq!(&b[32..36], &[1, 1, 5, 26]);
        // Four blocks with timestamps: only three fit.
        r.options.sack_blocks = blocks;
        assert_eq!(r.header_len(), 60);
        let mut buf = [0u8; 60];
        assert_eq!(r.emit(&mut buf, A, B), Ok(60));
        let back = TcpRepr::parse(&TcpPacket::new_checked(&buf[..]).unwrap(), A, B, true).unwrap();
        assert_eq!(
            back.options.sack_blocks,
            [blocks[0], blocks[1], blocks[2], None]
        );
        // Four blocks without timestamps: all fit.
        r.options.timestamp = None;
        assert_eq!(r.header_len(), 56);
        let b = round_trip(&r);
        assert_eq!(&b[20..24], &[1, 1, 5, 34]);
        // No SACK blocks on SYN; MSS/WS/SACKOK not on non-SYN.
        let mut syn = r;
        syn.flags = flags::SYN;
        syn.ack = None;
        assert_eq!(syn.header_len(), 20);
        r.options.mss = Some(1);
        r.options.window_scale = Some(1);
        r.options.sack_permitted = true;
        assert_eq!(r.header_len(), 56);
    }

    #[test]
    fn emit_errors() {
        let payload = [7u8; 10];
        let r = data_repr(&payload);
        let need = r.header_len() + payload.len();
        for n in 0..need {
            assert_eq!(r.emit(&mut vec![0; n], A, B), Err(Error::Truncated), "{n}");
        }
        let big = vec![0u8; MAX_LEN];
        let r = data_repr(&big);
        assert_eq!(
            r.emit(&mut vec![0; MAX_LEN + 40], A, B),
            Err(Error::Malformed)
        );
        let ok = vec![0u8; MAX_LEN - 32];
        let r = data_repr(&ok);
        let mut buf = vec![0; MAX_LEN];
        assert_eq!(r.emit(&mut buf, A, B), Ok(MAX_LEN));
        assert!(TcpPacket::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(A, B));
    }

    #[test]
    fn truncations_are_errors() {
        let payload = b"some payload!";
        let mut r = data_repr(payload);
        r.options.sack_blocks[0] = Some((SeqNum(1), SeqNum(2)));
        let mut buf = [0u8; 100];
        let n = r.emit(&mut buf, A, B).unwrap();
        let seg = &buf[..n];
        for len in 0..n {
            let cut = &seg[..len];
            let checked = TcpPacket::new_checked(cut);
            if len < r.header_len() {
                assert!(checked.is_err(), "{len}");
            }
            let parsed = checked.and_then(|p| TcpRepr::parse(&p, A, B, true));
            assert!(parsed.is_err(), "{len}");
        }
        assert!(TcpPacket::new_checked(seg)
            .and_then(|p| TcpRepr::parse(&p, A, B, true))
            .is_ok());
    }

    #[test]
    fn header_checks() {
        let s = linux_syn();
        for off in 0..5u8 {
            let mut d = s.clone();
            d[12] = off << 4;
            assert_eq!(
                TcpPacket::new_checked(&d[..]).unwrap_err(),
                Error::Malformed,
                "{off}"
            );
        }
        let mut d = s.clone();
        d[12] = 11 << 4; // 44 bytes > 40
        assert_eq!(
            TcpPacket::new_checked(&d[..]).unwrap_err(),
            Error::Truncated
        );
        d[12] = 5 << 4; // options become payload
        let p = TcpPacket::new_checked(&d[..]).unwrap();
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 20);
    }

    #[test]
    fn bad_checksum_detected() {
        let mut s = linux_syn();
        s[17] ^= 1;
        let p = TcpPacket::new_checked(&s[..]).unwrap();
        assert!(!p.verify_checksum(A, B));
        assert_eq!(TcpRepr::parse(&p, A, B, true), Err(Error::Checksum));
        assert!(TcpRepr::parse(&p, A, B, false).is_ok());
        // A flipped payload bit too.
        let r = data_repr(b"abcd");
        let mut buf = [0u8; 40];
        let n = r.emit(&mut buf, A, B).unwrap();
        buf[n - 1] ^= 0x80;
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(TcpRepr::parse(&p, A, B, true), Err(Error::Checksum));
        // Setters then fill_checksum repair it.
        let mut p = TcpPacket::new_unchecked(&mut buf[..n]);
        p.set_window_len(1);
        p.set_seq_number(SeqNum(77));
        p.fill_checksum(A, B);
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert!(p.verify_checksum(A, B));
        assert_eq!((p.window_len(), p.seq_number()), (1, SeqNum(77)));
        assert_eq!(reference_checksum(A, B, &buf[..n]), 0);
    }

    #[test]
    fn malformed_options_keep_earlier_ones() {
        let mss = [2u8, 4, 0x05, 0xb4];
        let ts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let cases: [&[u8]; 7] = [
            &[0x22, 0, 0, 0],                // length 0
            &[0x22, 1, 0, 0],                // length 1
            &[0x22, 9, 0, 0],                // past the end
            &[2, 3, 5, 3, 3, 7],             // MSS with length 3
            &[3, 4, 7, 0],                   // WS with length 4
            &[5, 9, 0, 0, 0, 0, 0, 0, 0, 0], // SACK not a multiple of 8
            &[0x22],                         // kind without length
        ];
        for (i, bad) in cases.iter().enumerate() {
            let mut list = Vec::new();
            list.extend_from_slice(&mss);
            list.extend_from_slice(&ts);
            list.extend_from_slice(bad);
            // Anything after the bad option is ignored.
            list.extend_from_slice(&[1, 3, 3, 9]);
            let o = parse_options(&list);
            assert_eq!(o.mss, Some(1460), "{i}");
            assert_eq!(o.timestamp, Some((1, 2)), "{i}");
            assert_eq!(o.window_scale, None, "{i}");
            assert_eq!(TcpOptionIter::new(&list).count(), 4, "{i}");
        }
        // End of list stops parsing too; unknown kinds are skipped.
        let o = parse_options(&[0x1e, 4, 9, 9, 2, 4, 0, 100, 0, 3, 3, 7]);
        assert_eq!((o.mss, o.window_scale), (Some(100), None));
        let it: Vec<_> = TcpOptionIter::new(&[0x1e, 4, 9, 9, 0, 1]).collect();
        assert_eq!(
            it,
            vec![
                TcpOption::Unknown {
                    kind: 0x1e,
                    data: &[9, 9]
                },
                TcpOption::EndOfList
            ]
        );
    }

    #[test]
    fn window_scale_clamped_and_duplicates() {
        let o = parse_options(&[1, 3, 3, 200]);
        assert_eq!(o.window_scale, Some(14));
        let o = parse_options(&[3, 3, 14, 3, 3, 2]);
        assert_eq!(o.window_scale, Some(2));
        // One SACK option replaces an earlier one wholesale.
        let o = parse_options(&[
            5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 5, 10, 0, 0, 0, 9, 0, 0, 0, 10,
        ]);
        assert_eq!(
            o.sack_blocks,
            [Some((SeqNum(9), SeqNum(10))), None, None, None]
        );
        assert_eq!(o.sack_count(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 0x9e37_79b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let syn = linux_syn();
        for round in 0..20_000u32 {
            let len = (next() % 80) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len >= 20 {
                // Mostly plausible headers: mutate the SYN's options area.
                d.truncate(len.min(syn.len()));
                let n = d.len();
                d.copy_from_slice(&syn[..n]);
                let i = 20 + (next() as usize % 20);
                if let Some(b) = d.get_mut(i) {
                    *b = next() as u8;
                }
            }
            let _ = parse_options(&d);
            let _ = TcpOptionIter::new(&d).count();
            if let Ok(p) = TcpPacket::new_checked(&d[..]) {
                let _ = (p.options(), p.payload(), p.verify_checksum(A, B));
                if let Ok(r) = TcpRepr::parse(&p, A, B, false) {
                    let mut out = [0u8; 160];
                    let n = r.emit(&mut out, A, B).unwrap();
                    assert!(TcpPacket::new_checked(&out[..n])
                        .unwrap()
                        .verify_checksum(A, B));
                }
            }
        }
    }
}
