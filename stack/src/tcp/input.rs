//! TCP segment arrival: demultiplexing, the listener, and RFC 9293's
//! "SEGMENT ARRIVES" processing with RFC 5961's defences (challenge ACKs),
//! PAWS (RFC 7323), SACK (RFC 2018/6675), fast retransmit and NewReno
//! recovery (RFC 5681/6582), delayed ACKs and the out-of-order queue.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::conn::{timer, OUR_WSCALE, QUICKACK_SEGS, TIME_WAIT_NS};
use crate::pool::{BufId, NIL};
use crate::socket::{flag, kind};
use crate::stack::Core;
use crate::tcp::cc::{CcState, CongestionControl};
use crate::tcp::tcb::{tflag, Tcb, TcpState};
use crate::wire::seq::SeqNum;
use crate::wire::tcp::{flags as tf, TcpPacket, TcpRepr};

/// Duplicate ACKs that trigger fast retransmit.
use crate::tcp::DUP_THRESH;
/// SYN cookie time slot (a cookie stays valid for one to two slots).
const COOKIE_SLOT_NS: u64 = 64 * crate::clock::SEC;
/// MSS values a SYN cookie can encode (Linux's table, plus two).
const COOKIE_MSS: [u16; 8] = [536, 1200, 1300, 1440, 1460, 4312, 8960, 9000];

/// What the parsed segment carries, copied out of the buffer.
#[derive(Debug, Clone, Copy)]
struct Seg {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: SeqNum,
    ack: Option<SeqNum>,
    flags: u8,
    window: u16,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_ok: bool,
    ts: Option<(u32, u32)>,
    sack: [Option<(SeqNum, SeqNum)>; 4],
    /// Payload offset from the frame start, and length.
    pay_off: usize,
    len: usize,
}

impl Seg {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
    /// Sequence space the segment occupies (SYN and FIN count one each).
    fn seg_len(&self) -> usize {
        self.len + usize::from(self.has(tf::SYN)) + usize::from(self.has(tf::FIN))
    }
}

impl Core<'_> {
    /// Takes a received TCP segment (IPv4 already checked).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tcp_input(
        &mut self,
        b: BufId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        l4: usize,
        len: usize,
        bcast: bool,
        now: u64,
    ) {
        let mode = self.pool.meta(b).rx_csum;
        let seg = {
            let frame = self.pool.frame(b);
            let end = (l4 + len).min(frame.len());
            match TcpPacket::new_checked(&frame[l4..end]) {
                Err(_) => None,
                Ok(p) => match TcpRepr::parse(&p, src, dst, false)
                    .ok()
                    .filter(|_| {
                        crate::iface::checksum_ok(
                            mode,
                            p.checksum(),
                            src,
                            dst,
                            crate::wire::ipv4::protocol::TCP,
                            (end - l4) as u16,
                            || p.verify_checksum(src, dst),
                        )
                    })
                    .ok_or(())
                {
                    Err(_) => None,
                    Ok(r) => Some(Seg {
                        src: SocketAddrV4::new(src, r.src_port),
                        dst: SocketAddrV4::new(dst, r.dst_port),
                        seq: r.seq,
                        ack: r.ack,
                        flags: r.flags,
                        window: r.window,
                        mss: r.options.mss,
                        wscale: r.options.window_scale,
                        sack_ok: r.options.sack_permitted,
                        ts: r.options.timestamp,
                        sack: r.options.sack_blocks,
                        pay_off: l4 + usize::from(p.header_len()),
                        len: r.payload.len(),
                    }),
                },
            }
        };
        let Some(seg) = seg else {
            self.hdr.counters.rx_drop_tcp.inc();
            self.pool.put(b);
            return;
        };
        if bcast || dst.is_multicast() || src.is_broadcast() || src.is_multicast() {
            self.hdr.counters.rx_drop_tcp.inc();
            self.pool.put(b);
            return;
        }
        self.hdr.counters.tcp_rx_segments.inc();
        {
            let m = self.pool.meta_mut(b);
            m.pay_off = seg.pay_off as u16;
            m.pay_len = seg.len as u16;
            m.seq = seg.seq.0;
            m.tcp_flags = seg.flags;
        }
        if let Some(i) = self.conn_lookup(seg.dst, seg.src) {
            if self.tcbs[i as usize].state() == TcpState::TimeWait
                && seg.has(tf::SYN)
                && !seg.has(tf::ACK)
                && self.tw_reusable(i, &seg)
            {
                // A new incarnation of the connection (RFC 6191 / Linux): end TIME_WAIT.
                // An orphan is freed; a socket whose app still holds it is closed.
                self.tcp_drop(i, 0);
            } else {
                self.tcp_segment(i, b, seg, now);
                return;
            }
        }
        if let Some(l) = self.listener_lookup(seg.dst) {
            self.tcp_listen_input(l, b, seg, now);
            return;
        }
        self.hdr.counters.tcp_no_socket.inc();
        self.tcp_reset_reply(&seg, now);
        self.pool.put(b);
    }

    /// RST in answer to a segment nobody wants (RFC 9293 3.10.7.1).
    fn tcp_reset_reply(&mut self, seg: &Seg, _now: u64) {
        if seg.has(tf::RST) {
            return;
        }
        let (seq, ack, flags) = match seg.ack {
            Some(a) => (a, None, tf::RST),
            None => (SeqNum(0), Some(seg.seq + seg.seg_len()), tf::RST | tf::ACK),
        };
        self.tcp_send_raw(seg.dst, seg.src, seq, ack, flags);
    }

    /// Sends a header-only segment not tied to a connection (RSTs, SYN cookies).
    pub(crate) fn tcp_send_raw(
        &mut self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        seq: SeqNum,
        ack: Option<SeqNum>,
        flags: u8,
    ) {
        let repr = TcpRepr {
            src_port: from.port(),
            dst_port: to.port(),
            seq,
            ack,
            flags,
            window: 0,
            options: Default::default(),
            payload: &[],
        };
        self.tcp_send_repr(from, to, &repr);
    }

    /// Sends a header-only segment described by `repr`.
    fn tcp_send_repr(&mut self, from: SocketAddrV4, to: SocketAddrV4, repr: &TcpRepr<'_>) {
        let flags = repr.flags;
        let Ok(b) = self.pool.alloc() else {
            self.hdr.counters.drop_no_buffers.inc();
            return;
        };
        let l4 = crate::wire::ethernet::HEADER_LEN + crate::wire::ipv4::HEADER_LEN;
        let hl = repr.header_len();
        let frame = self.pool.frame_mut(b, l4 + hl);
        if repr.emit(&mut frame[l4..], *from.ip(), *to.ip()).is_err() {
            self.pool.put(b);
            return;
        }
        if flags & tf::RST != 0 {
            self.hdr.counters.tcp_rst_sent.inc();
        }
        let _ = self.ip_output(
            b,
            *from.ip(),
            *to.ip(),
            crate::wire::ipv4::protocol::TCP,
            hl,
        );
    }

    fn tw_reusable(&self, i: u32, seg: &Seg) -> bool {
        let t = &self.tcbs[i as usize];
        match (t.has(tflag::TS), seg.ts) {
            (true, Some((tsval, _))) => (tsval.wrapping_sub(t.ts_recent) as i32) > 0,
            _ => seg.seq.gt(t.rcv_nxt),
        }
    }

    /// A segment for a listening socket: a SYN makes a child connection.
    fn tcp_listen_input(&mut self, l: u32, b: BufId, seg: Seg, now: u64) {
        self.pool.put(b);
        if seg.has(tf::RST) {
            return;
        }
        if seg.ack.is_some() {
            if !seg.has(tf::SYN) && !seg.has(tf::FIN) {
                if let Some(mss) = self.check_syn_cookie(&seg, now) {
                    self.syn_cookie_accept(l, seg, mss, now);
                    return;
                }
            }
            self.tcp_reset_reply(&seg, now);
            return;
        }
        if !seg.has(tf::SYN) {
            return;
        }
        let lt = self.tcbs[l as usize];
        if lt.acceptq_len >= lt.backlog {
            // Like Linux with a full accept queue: drop the SYN, the client retries.
            self.hdr.counters.tcp_listen_drops.inc();
            return;
        }
        if lt.synq_len >= lt.backlog {
            // SYN queue full (a flood?): answer with a SYN cookie and keep no state.
            self.send_syn_cookie(&seg, now);
            return;
        }
        let Ok(c) = self.alloc_slot(kind::TCP) else {
            self.hdr.counters.tcp_listen_drops.inc();
            return;
        };
        let iss = self.new_iss(seg.dst, seg.src, now);
        let our_mss = self.our_mss();
        let (rcvbuf, sndbuf, lflags) = (
            lt.rcvbuf,
            lt.sndbuf,
            lt.flags & (tflag::NODELAY | tflag::KEEPALIVE | tflag::LINGER0),
        );
        {
            // A child inherits SO_REUSEADDR from its listener, as in Linux
            // (it decides whether the child's port blocks a later bind).
            let reuse = self.sockets[l as usize].flags & flag::REUSEADDR;
            let sl = &mut self.sockets[c as usize];
            sl.begin_change();
            sl.local_ip = seg.dst.ip().octets();
            sl.local_port = seg.dst.port();
            sl.remote_ip = seg.src.ip().octets();
            sl.remote_port = seg.src.port();
            sl.flags |= flag::CONNECTED | reuse;
            sl.end_change();
        }
        self.conn_insert(c);
        let mut t = Tcb::CLOSED;
        t.rcvbuf = rcvbuf;
        t.sndbuf = sndbuf;
        t.flags = lflags;
        t.keepidle_s = lt.keepidle_s;
        t.keepintvl_s = lt.keepintvl_s;
        t.keepcnt = lt.keepcnt;
        t.iss = iss;
        t.snd_una = iss;
        t.snd_sml = iss;
        t.snd_nxt = iss + 1;
        t.snd_max = iss + 1;
        t.irs = seg.seq;
        t.rcv_nxt = seg.seq + 1;
        t.rcv_adv = t.rcv_nxt;
        t.our_mss = our_mss;
        t.listener = l;
        t.quickack = QUICKACK_SEGS;
        t.ts_offset = iss.0.rotate_left(13);
        Self::negotiate(&mut t, &seg);
        t.cc = CcState::new(self.cc_algo(), t.mss);
        t.last_rcv_ns = now;
        self.tcbs[c as usize] = t;
        self.tcbs[l as usize].synq_len += 1;
        self.set_state(c, TcpState::SynReceived);
        self.tcp_send_syn(c, now);
    }

    fn cookie_hash(&self, seg: &Seg, t: u32, peer_isn: SeqNum) -> u32 {
        let key = self.hdr.created_unix_ns
            ^ u64::from(self.hdr.creator_pid).rotate_left(29)
            ^ 0x5a5a_1234_dead_beef;
        let mut h = key;
        for v in [
            u32::from(*seg.src.ip()),
            u32::from(*seg.dst.ip()),
            u32::from(seg.src.port()) << 16 | u32::from(seg.dst.port()),
            t,
            peer_isn.0,
        ] {
            h = (h ^ u64::from(v))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(31);
        }
        (h >> 40) as u32 & 0x00ff_ffff
    }

    /// Answers a SYN with a SYN cookie (RFC 4987): the ISN encodes a time
    /// slot, the MSS (from a table) and a keyed hash of the connection, so
    /// the final ACK can rebuild the connection with no state kept meanwhile.
    /// Cookie connections get no window scaling, SACK or timestamps.
    fn send_syn_cookie(&mut self, seg: &Seg, now: u64) {
        let t = ((now / COOKIE_SLOT_NS) & 0x1f) as u32;
        let peer_mss = seg.mss.unwrap_or(536);
        let idx = COOKIE_MSS.iter().rposition(|&m| m <= peer_mss).unwrap_or(0) as u32;
        let cookie = t << 27 | idx << 24 | self.cookie_hash(seg, t, seg.seq);
        self.hdr.counters.tcp_syncookies_sent.inc();
        let mss = u32::from(COOKIE_MSS[idx as usize]).min(self.our_mss()) as u16;
        let repr = TcpRepr {
            src_port: seg.dst.port(),
            dst_port: seg.src.port(),
            seq: SeqNum(cookie),
            ack: Some(seg.seq + 1),
            flags: tf::SYN | tf::ACK,
            window: 65535,
            options: crate::wire::tcp::TcpOptions {
                mss: Some(mss),
                ..Default::default()
            },
            payload: &[],
        };
        self.tcp_send_repr(seg.dst, seg.src, &repr);
    }

    /// Checks the ACK of a cookie SYN-ACK; returns the MSS it encoded.
    fn check_syn_cookie(&mut self, seg: &Seg, now: u64) -> Option<u16> {
        let cookie = (seg.ack? - 1).0;
        let peer_isn = seg.seq - 1;
        let t = cookie >> 27;
        let cur = ((now / COOKIE_SLOT_NS) & 0x1f) as u32;
        // Valid for the current and the previous slot (one to two minutes).
        if t != cur && t != (cur + 31) & 0x1f {
            return None;
        }
        if cookie & 0x00ff_ffff != self.cookie_hash(seg, t, peer_isn) {
            return None;
        }
        self.hdr.counters.tcp_syncookies_ok.inc();
        Some(COOKIE_MSS[((cookie >> 24) & 7) as usize])
    }

    /// Builds an established connection from a valid cookie ACK.
    fn syn_cookie_accept(&mut self, l: u32, seg: Seg, mss: u16, now: u64) {
        let Ok(c) = self.alloc_slot(kind::TCP) else {
            self.hdr.counters.tcp_listen_drops.inc();
            return;
        };
        let lt = self.tcbs[l as usize];
        {
            // A child inherits SO_REUSEADDR from its listener, as in Linux
            // (it decides whether the child's port blocks a later bind).
            let reuse = self.sockets[l as usize].flags & flag::REUSEADDR;
            let sl = &mut self.sockets[c as usize];
            sl.begin_change();
            sl.local_ip = seg.dst.ip().octets();
            sl.local_port = seg.dst.port();
            sl.remote_ip = seg.src.ip().octets();
            sl.remote_port = seg.src.port();
            sl.flags |= flag::CONNECTED | reuse;
            sl.end_change();
        }
        self.conn_insert(c);
        let iss = seg.ack.unwrap_or(SeqNum(0)) - 1;
        let mut t = Tcb::CLOSED;
        t.rcvbuf = lt.rcvbuf;
        t.sndbuf = lt.sndbuf;
        t.flags = lt.flags & (tflag::NODELAY | tflag::KEEPALIVE | tflag::LINGER0);
        t.iss = iss;
        t.snd_una = iss + 1;
        t.snd_sml = iss + 1;
        t.snd_nxt = iss + 1;
        t.snd_max = iss + 1;
        t.irs = seg.seq - 1;
        t.rcv_nxt = seg.seq;
        t.rcv_adv = seg.seq + 65535;
        t.our_mss = self.our_mss();
        t.mss = u32::from(mss).min(t.our_mss);
        t.snd_wnd = u32::from(seg.window);
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = seg.seq;
        t.snd_wl2 = iss + 1;
        t.listener = l;
        t.quickack = QUICKACK_SEGS;
        t.cc = CcState::new(self.cc_algo(), t.mss);
        t.last_rcv_ns = now;
        self.tcbs[c as usize] = t;
        self.tcbs[l as usize].synq_len += 1;
        self.set_state(c, TcpState::SynReceived);
        self.tcp_established_from_synrcvd(c, now);
    }

    /// Applies the options of a SYN to a new connection.
    fn negotiate(t: &mut Tcb, seg: &Seg) {
        let peer_mss = u32::from(seg.mss.unwrap_or(536)).max(64);
        if let Some(ws) = seg.wscale {
            t.flags |= tflag::WSCALE;
            t.snd_wscale = ws.min(14);
            t.rcv_wscale = OUR_WSCALE;
        } else {
            t.snd_wscale = 0;
            t.rcv_wscale = 0;
        }
        if seg.sack_ok {
            t.flags |= tflag::SACK;
        }
        if let Some((tsval, _)) = seg.ts {
            t.flags |= tflag::TS;
            t.ts_recent = tsval;
        }
        let opt_overhead = if t.has(tflag::TS) { 12 } else { 0 };
        t.mss = peer_mss.min(t.our_mss).saturating_sub(opt_overhead).max(64);
        t.snd_wnd = u32::from(seg.window);
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = seg.seq;
    }

    fn tcp_challenge_ack(&mut self, i: u32, now: u64) {
        // Rate limited, as RFC 5961 asks (shared budget with ICMP errors).
        if self.st.icmp_tokens == 0 && now.saturating_sub(self.st.icmp_refill_ns) < crate::clock::MS
        {
            return;
        }
        self.hdr.counters.tcp_challenge_acks.inc();
        let seq = self.tcbs[i as usize].snd_nxt;
        self.tcp_send_ctl(i, seq, tf::ACK, now);
    }

    /// RFC 9293 3.10.7.3/3.10.7.4 for a connection in any state but LISTEN.
    fn tcp_segment(&mut self, i: u32, b: BufId, mut seg: Seg, now: u64) {
        let t = self.tcbs[i as usize];
        self.sockets[i as usize].counters.rx_packets.inc();
        if t.state() == TcpState::SynSent {
            self.pool.put(b);
            self.tcp_syn_sent(i, seg, now);
            return;
        }
        if t.state() == TcpState::Closed {
            self.pool.put(b);
            self.tcp_reset_reply(&seg, now);
            return;
        }
        // PAWS (RFC 7323 5.3).
        if t.has(tflag::TS) && !seg.has(tf::RST) {
            if let Some((tsval, _)) = seg.ts {
                if (tsval.wrapping_sub(t.ts_recent) as i32) < 0
                    && now.saturating_sub(t.ts_recent_age_ns) < 24 * 86_400 * crate::clock::SEC
                {
                    self.hdr.counters.tcp_paws_drops.inc();
                    self.pool.put(b);
                    self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                    self.tcp_output(i, now);
                    return;
                }
            }
        }
        // Sequence acceptability (RFC 9293 3.10.7.4, first check).
        let rcv_wnd = if t.rcv_adv.gt(t.rcv_nxt) {
            (t.rcv_adv - t.rcv_nxt) as u32
        } else {
            0
        };
        let seg_len = seg.seg_len();
        let wnd_end = t.rcv_nxt + (rcv_wnd as usize);
        let acceptable = match (seg_len, rcv_wnd) {
            (0, 0) => seg.seq == t.rcv_nxt,
            (0, _) => seg.seq.ge(t.rcv_nxt) && seg.seq.lt(wnd_end),
            (_, 0) => false,
            (_, _) => {
                let last = seg.seq + (seg_len - 1);
                (seg.seq.ge(t.rcv_nxt) && seg.seq.lt(wnd_end))
                    || (last.ge(t.rcv_nxt) && last.lt(wnd_end))
            }
        };
        // A zero window still takes in-order pure ACKs and window probes are ACKed.
        if !(acceptable || rcv_wnd == 0 && seg.seq == t.rcv_nxt) {
            self.pool.put(b);
            if !seg.has(tf::RST) {
                if t.state() == TcpState::TimeWait && seg.has(tf::FIN) {
                    self.arm_timer(i, timer::WAIT, now + TIME_WAIT_NS);
                }
                self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                self.tcp_output(i, now);
            }
            return;
        }
        // RST (RFC 5961 3.2).
        if seg.has(tf::RST) {
            self.pool.put(b);
            if seg.seq == t.rcv_nxt {
                self.hdr.counters.tcp_rst_received.inc();
                let errno = match t.state() {
                    TcpState::SynReceived if t.listener != NIL => 0,
                    TcpState::SynReceived => libc::ECONNREFUSED,
                    TcpState::CloseWait => libc::EPIPE,
                    TcpState::Closing | TcpState::LastAck | TcpState::TimeWait => 0,
                    _ => libc::ECONNRESET,
                };
                self.tcp_drop(i, errno);
            } else {
                self.tcp_challenge_ack(i, now);
            }
            return;
        }
        // SYN in a synchronised state (RFC 5961 4.2): challenge ACK.
        if seg.has(tf::SYN) {
            self.pool.put(b);
            if t.state() == TcpState::SynReceived && seg.seq == t.irs {
                // Retransmitted SYN: our SYN-ACK was lost.
                self.tcp_send_syn(i, now);
            } else {
                self.tcp_challenge_ack(i, now);
            }
            return;
        }
        let Some(ack) = seg.ack else {
            self.pool.put(b);
            return;
        };
        // Remember the peer's timestamp (RFC 7323 4.3).
        if let Some((tsval, _)) = seg.ts {
            let tm = &mut self.tcbs[i as usize];
            if tm.has(tflag::TS) && seg.seq.le(tm.rcv_adv) && !seg.seq.gt(tm.rcv_nxt) {
                tm.ts_recent = tsval;
                tm.ts_recent_age_ns = now;
            }
        }
        self.tcbs[i as usize].last_rcv_ns = now;
        self.tcbs[i as usize].keepalive_probes_sent = 0;
        if t.state() == TcpState::SynReceived {
            if ack.gt(t.snd_una) && ack.le(t.snd_max) {
                self.tcp_established_from_synrcvd(i, now);
            } else {
                self.pool.put(b);
                self.tcp_send_raw(seg.dst, seg.src, ack, None, tf::RST);
                return;
            }
        }
        // ACK processing (RFC 9293 + RFC 5961 5.2).
        let t = self.tcbs[i as usize];
        let lower = t.snd_una - (t.max_snd_wnd.max(1) as usize);
        if ack.gt(t.snd_max) || ack.lt(lower) {
            self.pool.put(b);
            self.tcp_challenge_ack(i, now);
            return;
        }
        self.tcp_ack(i, &seg, ack, now);
        if self.sockets[i as usize].kind != kind::TCP
            || self.tcbs[i as usize].state() == TcpState::Closed
        {
            self.pool.put(b);
            return;
        }
        // Segment text and FIN.
        let st = self.tcbs[i as usize].state();
        if seg.len > 0 || seg.has(tf::FIN) {
            if matches!(
                st,
                TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
            ) {
                if self.tcbs[i as usize].has(tflag::ORPHAN) && seg.len > 0 {
                    // Data for a closed socket: reset, as Linux does.
                    self.pool.put(b);
                    self.tcp_abort(i, now, 0);
                    return;
                }
                // Trim what we already have.
                let tm = self.tcbs[i as usize];
                if seg.seq.lt(tm.rcv_nxt) {
                    let dup = (tm.rcv_nxt - seg.seq).min(seg.len);
                    seg.seq = seg.seq + dup;
                    seg.len -= dup;
                    seg.pay_off += dup;
                    let m = self.pool.meta_mut(b);
                    m.pay_off += dup as u16;
                    m.pay_len -= dup as u16;
                    m.seq = seg.seq.0;
                    if dup > 0 && seg.len == 0 && !seg.has(tf::FIN) {
                        // A retransmission of data we have: ACK at once (it may be a probe).
                        self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                    }
                }
                self.tcp_data(i, b, seg, now);
            } else {
                if st == TcpState::TimeWait && seg.has(tf::FIN) {
                    self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                    self.arm_timer(i, timer::WAIT, now + TIME_WAIT_NS);
                }
                self.pool.put(b);
            }
        } else {
            self.pool.put(b);
        }
        if self.sockets[i as usize].kind == kind::TCP {
            self.tcp_output(i, now);
        }
    }

    fn tcp_established_from_synrcvd(&mut self, i: u32, now: u64) {
        self.set_state(i, TcpState::Established);
        self.hdr.counters.tcp_passive_opens.inc();
        let t = &mut self.tcbs[i as usize];
        t.rto_count = 0;
        t.rtt.reset_backoff();
        let l = t.listener;
        if t.has(tflag::KEEPALIVE) {
            let at = now + u64::from(t.keepidle_s) * crate::clock::SEC;
            self.arm_timer(i, timer::KEEPALIVE, at);
        }
        if l != NIL && (l as usize) < self.tcbs.len() {
            let lt = &mut self.tcbs[l as usize];
            lt.synq_len = lt.synq_len.saturating_sub(1);
            let tail = lt.acceptq_tail;
            lt.acceptq_tail = i;
            if tail == NIL {
                lt.acceptq_head = i;
            } else {
                self.tcbs[tail as usize].acceptq_next = i;
            }
            self.tcbs[l as usize].acceptq_len += 1;
            let c = &mut self.tcbs[i as usize];
            c.acceptq_next = NIL;
            c.flags |= tflag::IN_ACCEPTQ;
        }
    }

    /// SYN-SENT processing (RFC 9293 3.10.7.3).
    fn tcp_syn_sent(&mut self, i: u32, seg: Seg, now: u64) {
        let t = self.tcbs[i as usize];
        if let Some(ack) = seg.ack {
            if ack.le(t.iss) || ack.gt(t.snd_max) {
                if !seg.has(tf::RST) {
                    self.tcp_send_raw(seg.dst, seg.src, ack, None, tf::RST);
                }
                return;
            }
        }
        if seg.has(tf::RST) {
            if seg.ack.is_some() {
                self.hdr.counters.tcp_rst_received.inc();
                self.tcp_drop(i, libc::ECONNREFUSED);
            }
            return;
        }
        if !seg.has(tf::SYN) {
            return;
        }
        {
            let algo = self.cc_algo();
            let tm = &mut self.tcbs[i as usize];
            tm.irs = seg.seq;
            tm.rcv_nxt = seg.seq + 1;
            tm.rcv_adv = tm.rcv_nxt;
            let flags_keep = tm.flags;
            tm.flags = flags_keep & !(tflag::TS | tflag::SACK | tflag::WSCALE);
            Self::negotiate(tm, &seg);
            tm.cc = CcState::new(algo, tm.mss);
            tm.last_rcv_ns = now;
        }
        if let Some(ack) = seg.ack {
            let tm = &mut self.tcbs[i as usize];
            tm.snd_una = ack;
            tm.snd_wl2 = ack;
            if tm.rtt_timing == 0 && tm.rto_count == 0 {
                // The SYN was not retransmitted: time it (Karn).
                tm.rtt.sample(now.saturating_sub(tm.last_snd_ns));
            }
            tm.rto_count = 0;
            tm.rtt.reset_backoff();
            tm.flags |= tflag::ACK_NOW;
            self.cancel_timer(i, timer::RTO);
            self.set_state(i, TcpState::Established);
            self.hdr.counters.tcp_active_opens.inc();
            if self.tcbs[i as usize].has(tflag::KEEPALIVE) {
                let at = now + u64::from(self.tcbs[i as usize].keepidle_s) * crate::clock::SEC;
                self.arm_timer(i, timer::KEEPALIVE, at);
            }
            self.tcp_output(i, now);
        } else {
            // Simultaneous open.
            self.set_state(i, TcpState::SynReceived);
            self.tcp_send_syn(i, now);
        }
    }

    /// The ACK field of an acceptable segment.
    fn tcp_ack(&mut self, i: u32, seg: &Seg, ack: SeqNum, now: u64) {
        let t = self.tcbs[i as usize];
        let wnd = u32::from(seg.window) << t.snd_wscale;
        // SACK scoreboard.
        let mut new_sack = false;
        if t.has(tflag::SACK) && seg.sack.iter().any(Option::is_some) {
            let mut blocks = [(0u32, 0u32); 4];
            let mut n = 0;
            for (s, e) in seg.sack.iter().flatten() {
                blocks[n] = (s.0, e.0);
                n += 1;
            }
            let tm = &mut self.tcbs[i as usize];
            let before = tm.scoreboard;
            tm.scoreboard.update(ack.0, tm.snd_max.0, &blocks[..n]);
            new_sack = tm.scoreboard != before;
        }
        if ack.gt(t.snd_una) {
            self.tcp_new_ack(i, ack, now);
        } else if ack == t.snd_una
            && !seg.has(tf::FIN)
            && t.snd_una.lt(t.snd_max)
            // RFC 5681's duplicate (no data, same window), or RFC 6675's:
            // one that SACKs octets not SACKed before, whatever it carries
            // (a peer's window grows as it reads; its data carries ACKs).
            && ((seg.len == 0 && wnd == t.snd_wnd) || new_sack)
        {
            self.tcp_dupack(i, now);
        }
        // Window update (RFC 9293 3.10.7.4, SND.WL1/WL2 rule).
        let t = &mut self.tcbs[i as usize];
        if t.snd_wl1.lt(seg.seq) || (t.snd_wl1 == seg.seq && t.snd_wl2.le(ack)) {
            t.snd_wnd = wnd;
            t.snd_wl1 = seg.seq;
            t.snd_wl2 = ack;
            t.max_snd_wnd = t.max_snd_wnd.max(wnd);
        }
        // Our FIN acknowledged?
        let t = self.tcbs[i as usize];
        if t.has(tflag::FIN_SENT) && t.snd_una.gt(t.fin_seq) {
            match t.state() {
                TcpState::FinWait1 => {
                    self.set_state(i, TcpState::FinWait2);
                    if t.has(tflag::ORPHAN) {
                        self.arm_timer(i, timer::WAIT, now + super::conn::FIN_WAIT2_NS);
                    }
                }
                TcpState::Closing => self.enter_time_wait(i, now),
                TcpState::LastAck => {
                    self.tcp_drop(i, 0);
                }
                _ => {}
            }
        }
    }

    fn enter_time_wait(&mut self, i: u32, now: u64) {
        self.set_state(i, TcpState::TimeWait);
        self.cancel_timer(i, timer::RTO);
        self.cancel_timer(i, timer::KEEPALIVE);
        self.cancel_timer(i, timer::DELACK);
        self.arm_timer(i, timer::WAIT, now + TIME_WAIT_NS);
        let mut t = self.tcbs[i as usize];
        self.pool.purge(&mut t.oooq);
        let tm = &mut self.tcbs[i as usize];
        tm.oooq = t.oooq;
        tm.ooo_ranges = crate::tcp::sack::RangeSet::EMPTY;
    }

    /// New data acknowledged.
    fn tcp_new_ack(&mut self, i: u32, ack: SeqNum, now: u64) {
        let t = self.tcbs[i as usize];
        let fin_acked = t.has(tflag::FIN_SENT) && ack.gt(t.fin_seq);
        let data_acked = ((ack - t.snd_una) as u32 - u32::from(fin_acked)).min(t.snd_bytes);
        // Free acknowledged buffers.
        {
            let mut left = data_acked;
            let tm = &mut self.tcbs[i as usize];
            while left > 0 {
                let Some(b) = self.pool.peek(&tm.sndq) else {
                    break;
                };
                let blen = u32::from(self.pool.meta(b).len);
                let remaining = blen - tm.sndq_head_off;
                if left >= remaining {
                    left -= remaining;
                    if let Some(b) = self.pool.dequeue(&mut tm.sndq, blen) {
                        self.pool.put(b);
                    }
                    tm.sndq_head_off = 0;
                } else {
                    tm.sndq_head_off += left;
                    left = 0;
                }
            }
            tm.snd_bytes -= data_acked;
        }
        // RTT (Karn: only segments never retransmitted are timed).
        let rtt = if t.rtt_timing != 0 && ack.gt(t.rtt_seq) {
            let r = now.saturating_sub(t.rtt_sent_ns);
            Some(r)
        } else {
            None
        };
        let mss = t.mss;
        let tm = &mut self.tcbs[i as usize];
        if let Some(r) = rtt {
            tm.rtt.sample(r);
            tm.rtt_timing = 0;
        }
        tm.snd_una = ack;
        if tm.snd_nxt.lt(ack) {
            tm.snd_nxt = ack;
        }
        tm.rto_count = 0;
        tm.rtt.reset_backoff();
        tm.una_since_ns = now;
        tm.scoreboard.on_cumulative_ack(ack.0);
        if tm.has(tflag::RECOVERY) || tm.has(tflag::LOSS) {
            if ack.ge(tm.recover) {
                // Full acknowledgment: recovery is over (RFC 6582 3.2 step 3).
                tm.flags &= !(tflag::RECOVERY | tflag::LOSS);
                if !tm.has(tflag::LOSS) {
                    tm.cc.on_recovery_exit(mss);
                }
                tm.dupacks = 0;
            } else if tm.has(tflag::RECOVERY) {
                // Partial acknowledgment: retransmit the next hole at once.
                tm.dupacks = 0;
                let seq = tm.snd_una;
                let len = (tm.snd_max - seq)
                    .min(super::conn::payload_mss(tm) as usize)
                    .min(tm.snd_bytes as usize);
                if len > 0 {
                    self.tcp_emit(i, seq, tf::ACK, len, now);
                    let tm = &mut self.tcbs[i as usize];
                    tm.retransmits += 1;
                    tm.high_rxt = seq + len;
                    self.hdr.counters.tcp_retransmits.inc();
                }
            } else {
                tm.cc.on_ack(data_acked, rtt, now, mss);
            }
        } else {
            tm.dupacks = 0;
            tm.cc.on_ack(data_acked, rtt, now, mss);
        }
        // An ACK that moved snd_una answers any loss probe out.
        self.tcbs[i as usize].flags &= !(tflag::TLP_OUT | tflag::TLP_ARMED);
        self.cancel_timer(i, timer::RTO);
        self.tcp_arm_rto(i, now);
    }

    fn tcp_dupack(&mut self, i: u32, now: u64) {
        let tm = &mut self.tcbs[i as usize];
        tm.dupacks += 1;
        tm.dupacks_rcvd += 1;
        if tm.has(tflag::RECOVERY) || tm.has(tflag::LOSS) {
            if tm.has(tflag::SACK) {
                self.tcp_sack_recovery(i, now);
            }
            return;
        }
        let lost = if tm.has(tflag::SACK) {
            tm.dupacks >= DUP_THRESH || tm.scoreboard.is_lost(tm.snd_una.0, tm.mss, DUP_THRESH)
        } else {
            tm.dupacks >= DUP_THRESH
        };
        if !lost {
            return;
        }
        // Fast retransmit (RFC 5681 3.2, RFC 6582, RFC 6675).
        let (mss, flight) = (tm.mss, tm.flight_size());
        tm.cc.on_congestion_event(now, mss, flight);
        tm.flags |= tflag::RECOVERY;
        tm.recover = tm.snd_max;
        let seq = tm.snd_una;
        let len = (tm.snd_max - seq)
            .min(super::conn::payload_mss(tm) as usize)
            .min(tm.snd_bytes as usize);
        tm.high_rxt = seq + len;
        tm.rtt_timing = 0;
        self.hdr.counters.tcp_fast_retransmits.inc();
        if len > 0 {
            self.tcp_emit(i, seq, tf::ACK, len, now);
            self.tcbs[i as usize].retransmits += 1;
            self.hdr.counters.tcp_retransmits.inc();
        }
        if self.tcbs[i as usize].has(tflag::SACK) {
            self.tcp_sack_recovery(i, now);
        }
    }

    /// RFC 6675 loss recovery: while the pipe has room, retransmit what the
    /// scoreboard says is lost.
    fn tcp_sack_recovery(&mut self, i: u32, now: u64) {
        for _ in 0..64 {
            let t = self.tcbs[i as usize];
            let pipe = t
                .scoreboard
                .pipe(t.snd_una.0, t.snd_max.0, t.high_rxt.0, t.mss);
            if pipe.saturating_add(t.mss) > t.cc.cwnd() {
                return;
            }
            let Some((s, e)) = t
                .scoreboard
                .next_seg(t.snd_una.0, t.snd_max.0, t.high_rxt.0, t.mss)
            else {
                return;
            };
            let len = (SeqNum(e) - SeqNum(s)).min(super::conn::payload_mss(&t) as usize);
            if len == 0 || !self.tcp_emit(i, SeqNum(s), tf::ACK, len, now) {
                return;
            }
            let tm = &mut self.tcbs[i as usize];
            tm.high_rxt = SeqNum(s) + len;
            tm.retransmits += 1;
            self.hdr.counters.tcp_retransmits.inc();
        }
    }

    /// In-window data (already trimmed to start at or after rcv_nxt).
    fn tcp_data(&mut self, i: u32, b: BufId, seg: Seg, now: u64) {
        let t = self.tcbs[i as usize];
        let fin = seg.has(tf::FIN);
        if seg.seq == t.rcv_nxt {
            // In order.
            let mut consumed = false;
            if seg.len > 0 && !t.has(tflag::RD_SHUT) {
                let rcv_wnd = if t.rcv_adv.gt(t.rcv_nxt) {
                    t.rcv_adv - t.rcv_nxt
                } else {
                    0
                };
                let take = seg.len.min(rcv_wnd);
                if take < seg.len {
                    // Beyond our window (a zero-window probe, say): ACK at once.
                    self.pool.meta_mut(b).pay_len = take as u16;
                    self.tcbs[i as usize].flags |= tflag::ACK_NOW;
                }
                if take > 0 {
                    consumed = self.rcvq_append(i, b, take);
                }
                let tm = &mut self.tcbs[i as usize];
                tm.rcv_nxt = tm.rcv_nxt + take;
            } else if seg.len > 0 {
                let tm = &mut self.tcbs[i as usize];
                tm.rcv_nxt = tm.rcv_nxt + seg.len;
            }
            if !consumed {
                self.pool.put(b);
            }
            let had_ooo = !self.tcbs[i as usize].oooq.is_empty();
            let mut fin_now = fin && seg.seq + seg.len == self.tcbs[i as usize].rcv_nxt;
            if had_ooo {
                fin_now |= self.pull_ooo(i);
                self.tcbs[i as usize].flags |= tflag::ACK_NOW;
            }
            if fin_now {
                self.tcp_fin(i, now);
            }
            self.schedule_ack(i, seg.len);
        } else {
            // Out of order: keep it (sorted), ACK at once with SACK.
            self.tcbs[i as usize].ooo_segs += 1;
            self.hdr.counters.tcp_ooo_segments.inc();
            if seg.len == 0 || !self.ooo_insert(i, b, seg) {
                self.pool.put(b);
            }
            self.tcbs[i as usize].flags |= tflag::ACK_NOW;
        }
    }

    /// Appends in-order payload to the receive queue; small segments are
    /// copied into the tail buffer to bound memory. Returns whether `b` was kept.
    fn rcvq_append(&mut self, i: u32, b: BufId, len: usize) -> bool {
        let tail = self.tcbs[i as usize].rcvq.tail;
        if tail != NIL && len < 256 {
            if let Some((tb, _)) = self.pool.node(tail) {
                let m = self.pool.meta(tb);
                let end = usize::from(m.off) + usize::from(m.pay_off) + usize::from(m.pay_len);
                if end + len <= crate::pool::BUF_SIZE
                    && usize::from(m.pay_off) + usize::from(m.pay_len) == usize::from(m.len)
                {
                    let src_off =
                        usize::from(self.pool.meta(b).off) + usize::from(self.pool.meta(b).pay_off);
                    self.pool.copy_between(b, src_off, tb, end, len);
                    let mm = self.pool.meta_mut(tb);
                    mm.pay_len += len as u16;
                    mm.len += len as u16;
                    self.tcbs[i as usize].rcvq.bytes += len as u32;
                    self.sockets[i as usize].counters.rx_bytes.add(0);
                    return false;
                }
            }
        }
        let tm = &mut self.tcbs[i as usize];
        if self.pool.enqueue(&mut tm.rcvq, b, len as u32).is_err() {
            self.hdr.counters.drop_no_buffers.inc();
            return false;
        }
        true
    }

    /// Inserts an out-of-order segment, sorted by sequence.
    fn ooo_insert(&mut self, i: u32, b: BufId, seg: Seg) -> bool {
        let t = self.tcbs[i as usize];
        let end = seg.seq + seg.len;
        let rcv_wnd_end = t.rcv_adv;
        if !seg.seq.lt(rcv_wnd_end) {
            return false;
        }
        let mut prev = NIL;
        let mut cur = t.oooq.head;
        while cur != NIL {
            let Some((cb, next)) = self.pool.node(cur) else {
                break;
            };
            let cs = SeqNum(self.pool.meta(cb).seq);
            let ce = cs + usize::from(self.pool.meta(cb).pay_len);
            if cs.le(seg.seq) && ce.ge(end) {
                // Entirely duplicate.
                return false;
            }
            if cs.gt(seg.seq) {
                break;
            }
            prev = cur;
            cur = next;
        }
        let tm = &mut self.tcbs[i as usize];
        if self
            .pool
            .insert_after(&mut tm.oooq, prev, b, seg.len as u32)
            .is_err()
        {
            return false;
        }
        tm.ooo_ranges.insert(seg.seq.0, end.0);
        tm.last_ooo = [seg.seq.0, end.0];
        if seg.has(tf::FIN) {
            self.pool.meta_mut(b).tcp_flags |= tf::FIN;
        }
        true
    }

    /// Moves out-of-order segments that are now in order to the receive
    /// queue. Returns whether an in-order FIN was reached.
    fn pull_ooo(&mut self, i: u32) -> bool {
        let mut fin = false;
        loop {
            let t = self.tcbs[i as usize];
            let Some(b) = self.pool.peek(&t.oooq) else {
                break;
            };
            let (s, len, fl) = {
                let m = self.pool.meta(b);
                (SeqNum(m.seq), usize::from(m.pay_len), m.tcp_flags)
            };
            if s.gt(t.rcv_nxt) {
                break;
            }
            let tm = &mut self.tcbs[i as usize];
            let b = self.pool.dequeue(&mut tm.oooq, len as u32).unwrap_or(b);
            let end = s + len;
            if end.le(tm.rcv_nxt) {
                self.pool.put(b);
                if fl & tf::FIN != 0 && end == tm.rcv_nxt {
                    fin = true;
                }
                continue;
            }
            let dup = tm.rcv_nxt - s;
            {
                let m = self.pool.meta_mut(b);
                m.pay_off += dup as u16;
                m.pay_len -= dup as u16;
            }
            let take = len - dup;
            let kept = self.rcvq_append(i, b, take);
            if !kept {
                self.pool.put(b);
            }
            let tm = &mut self.tcbs[i as usize];
            tm.rcv_nxt = tm.rcv_nxt + take;
            if fl & tf::FIN != 0 {
                fin = true;
            }
        }
        let tm = &mut self.tcbs[i as usize];
        tm.ooo_ranges.remove_below(tm.rcv_nxt.0);
        if tm.ooo_ranges.is_empty() {
            tm.last_ooo = [0; 2];
        }
        fin
    }

    /// ACK policy for in-order data: every segment during quick-ACK, else
    /// every second full-sized segment or after the delayed-ACK timeout.
    fn schedule_ack(&mut self, i: u32, len: usize) {
        let tm = &mut self.tcbs[i as usize];
        if len == 0 {
            return;
        }
        tm.segs_unacked += 1;
        tm.flags |= tflag::ACK_PENDING;
        if tm.quickack > 0 {
            tm.quickack -= 1;
            tm.flags |= tflag::ACK_NOW;
        } else if tm.segs_unacked >= 2 {
            // RFC 5681 4.2 / RFC 1122: at least every second segment.
            tm.flags |= tflag::ACK_NOW;
        }
    }

    /// The peer's FIN, in order.
    fn tcp_fin(&mut self, i: u32, now: u64) {
        let tm = &mut self.tcbs[i as usize];
        if tm.has(tflag::FIN_RCVD) {
            return;
        }
        tm.rcv_nxt = tm.rcv_nxt + 1;
        tm.flags |= tflag::FIN_RCVD | tflag::ACK_NOW;
        match tm.state() {
            TcpState::SynReceived | TcpState::Established => self.set_state(i, TcpState::CloseWait),
            TcpState::FinWait1 => {
                if tm.snd_una.gt(tm.fin_seq) && tm.has(tflag::FIN_SENT) {
                    self.enter_time_wait(i, now);
                } else {
                    self.set_state(i, TcpState::Closing);
                }
            }
            TcpState::FinWait2 => self.enter_time_wait(i, now),
            _ => {}
        }
    }
}
