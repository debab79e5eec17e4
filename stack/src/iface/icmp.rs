//! ICMPv4: answering echo requests, reporting unreachable ports and
//! protocols, and passing received errors to the sockets they concern.
//! Errors we send are rate limited like Linux's icmp_ratelimit.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::pool::BufId;
use crate::stack::Core;
use crate::wire::icmpv4::{self, Icmpv4Repr};
use crate::wire::{ethernet, ipv4};

/// ICMP errors that may be sent back to back.
pub const ICMP_BURST: u32 = 50;
/// One more ICMP error allowed per this many ns (1000 per second).
pub const ICMP_REFILL_NS: u64 = crate::clock::MS;
/// Most of the offending datagram quoted in an error (RFC 1812: keep the error within 576 bytes).
const MAX_QUOTE: usize = 576 - ipv4::HEADER_LEN - 8;

impl Core<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn icmp_input(
        &mut self,
        b: BufId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        l4: usize,
        len: usize,
        bcast: bool,
        _now: u64,
    ) {
        enum Action {
            Echo {
                ident: u16,
                seq: u16,
                data_off: usize,
                data_len: usize,
            },
            Unreachable {
                code: u8,
                local: SocketAddrV4,
                remote: SocketAddrV4,
            },
            Ignore,
        }
        let action = {
            let frame = self.pool.frame(b);
            let msg = &frame[l4..(l4 + len).min(frame.len())];
            match Icmpv4Repr::parse(msg, true) {
                Ok(Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) if !bcast => Action::Echo {
                    ident,
                    seq: seq_no,
                    data_off: l4 + (msg.len() - data.len()),
                    data_len: data.len(),
                },
                Ok(Icmpv4Repr::DstUnreachable { code, data }) => match icmpv4::embedded_v4(data) {
                    Ok((osrc, odst, proto, sport, dport)) if proto == ipv4::protocol::UDP => {
                        Action::Unreachable {
                            code,
                            local: SocketAddrV4::new(osrc, sport),
                            remote: SocketAddrV4::new(odst, dport),
                        }
                    }
                    _ => Action::Ignore,
                },
                Ok(_) => Action::Ignore,
                Err(_) => {
                    self.hdr.counters.rx_drop_icmp.inc();
                    Action::Ignore
                }
            }
        };
        match action {
            Action::Echo {
                ident,
                seq,
                data_off,
                data_len,
            } => self.send_echo_reply(b, src, dst, ident, seq, data_off, data_len),
            Action::Unreachable {
                code,
                local,
                remote,
            } => {
                self.hdr.counters.icmp_unreach_received.inc();
                let errno = match code {
                    icmpv4::unreachable::PORT | icmpv4::unreachable::PROTOCOL => libc::ECONNREFUSED,
                    icmpv4::unreachable::FRAG_NEEDED => libc::EMSGSIZE,
                    icmpv4::unreachable::NET => libc::ENETUNREACH,
                    _ => libc::EHOSTUNREACH,
                };
                self.udp_icmp_error(local, remote, errno);
            }
            Action::Ignore => {}
        }
        self.pool.put(b);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_echo_reply(
        &mut self,
        req: BufId,
        to: Ipv4Addr,
        from: Ipv4Addr,
        ident: u16,
        seq: u16,
        off: usize,
        len: usize,
    ) {
        let Ok(b) = self.pool.alloc() else {
            self.hdr.counters.drop_no_buffers.inc();
            return;
        };
        let l4_len = 8 + len;
        let start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
        if start + l4_len > crate::pool::MAX_FRAME {
            self.pool.put(b);
            return;
        }
        let mut tmp = [0u8; crate::pool::MAX_FRAME];
        tmp[..len].copy_from_slice(&self.pool.frame(req)[off..off + len]);
        let repr = Icmpv4Repr::EchoReply {
            ident,
            seq_no: seq,
            data: &tmp[..len],
        };
        let frame = self.pool.frame_mut(b, start + l4_len);
        if repr.emit(&mut frame[start..]).is_err() {
            self.pool.put(b);
            return;
        }
        // Reply from the address that was pinged (it may be any of 127/8 on loopback).
        if self
            .ip_output(b, from, to, ipv4::protocol::ICMP, l4_len)
            .is_ok()
        {
            self.hdr.counters.icmp_echo_replies_sent.inc();
        }
    }

    fn icmp_token(&mut self, now: u64) -> bool {
        let refill = now.saturating_sub(self.st.icmp_refill_ns) / ICMP_REFILL_NS;
        if refill > 0 {
            self.st.icmp_tokens =
                (self.st.icmp_tokens as u64 + refill).min(ICMP_BURST.into()) as u32;
            self.st.icmp_refill_ns = now;
        }
        if self.st.icmp_tokens == 0 {
            return false;
        }
        self.st.icmp_tokens -= 1;
        true
    }

    /// Sends an ICMP destination unreachable about the IPv4 packet in `orig`
    /// (which the caller keeps).
    pub(crate) fn send_icmp_unreachable(&mut self, orig: BufId, code: u8, now: u64) {
        let (src, dst, quote_off, quote_len) = {
            let m = self.pool.meta(orig);
            let frame = self.pool.frame(orig);
            let l3 = usize::from(m.l3_off);
            let Ok(p) = ipv4::Ipv4Packet::new_checked(&frame[l3..]) else {
                return;
            };
            (
                p.src_addr(),
                p.dst_addr(),
                l3,
                (p.total_len() as usize).min(MAX_QUOTE),
            )
        };
        // Never answer a broadcast/multicast/unspecified source.
        if src.is_unspecified()
            || src.is_broadcast()
            || src.is_multicast()
            || self.iface().is_broadcast(src)
        {
            return;
        }
        if !self.icmp_token(now) {
            return;
        }
        let Ok(b) = self.pool.alloc() else {
            self.hdr.counters.drop_no_buffers.inc();
            return;
        };
        let mut tmp = [0u8; MAX_QUOTE];
        tmp[..quote_len].copy_from_slice(&self.pool.frame(orig)[quote_off..quote_off + quote_len]);
        let repr = Icmpv4Repr::DstUnreachable {
            code,
            data: &tmp[..quote_len],
        };
        let start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
        let l4_len = 8 + quote_len;
        let frame = self.pool.frame_mut(b, start + l4_len);
        if repr.emit(&mut frame[start..]).is_err() {
            self.pool.put(b);
            return;
        }
        if self
            .ip_output(b, dst, src, ipv4::protocol::ICMP, l4_len)
            .is_ok()
        {
            self.hdr.counters.icmp_unreach_sent.inc();
        }
    }
}
