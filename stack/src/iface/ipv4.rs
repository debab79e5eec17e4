//! Frame input (Ethernet, ARP, IPv4 dispatch) and IPv4 output with ARP
//! resolution. Fragments are not reassembled: they are dropped and counted
//! (`rx_drop_ip_frag`); our users' traffic (market data, RPC) never fragments.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::arp_cache::{self, state, ArpEntry};
use crate::pool::{BufId, PktQueue};
use crate::socket::udp::Delivery;
use crate::socket::SockError;
use crate::stack::{Core, TIMER_ARP};
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::ethernet::{self, EthernetAddress, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::udp::UdpPacket;

/// Default TTL of packets we send (Linux's ip_default_ttl).
pub const DEFAULT_TTL: u8 = 64;

/// Where a packet goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextHop {
    /// One of our own addresses: through the loopback ring.
    Local,
    /// Link-layer broadcast.
    Broadcast,
    /// A neighbour to resolve with ARP.
    Neighbour(Ipv4Addr),
    /// An IPv4 multicast group: its Ethernet group address (RFC 1112 6.4).
    Multicast(Ipv4Addr),
}

/// How [`Core::ip_output_with`] builds the IPv4 header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutOpts<'a> {
    pub ttl: u8,
    pub tos: u8,
    /// Header options (whole words); the transport header follows them.
    pub options: &'a [u8],
}

impl Core<'_> {
    /// Takes in one received frame (the caller's reference passes to the stack).
    pub fn receive(&mut self, b: BufId, now: u64) {
        if now > self.st.last_now_ns {
            self.st.last_now_ns = now;
        }
        self.receive_frame(b, now);
        self.wake_sleepers();
    }

    fn receive_frame(&mut self, b: BufId, now: u64) {
        let c = &self.hdr.counters;
        c.rx_frames.inc();
        c.rx_bytes.add(u64::from(self.pool.meta(b).len));
        let iface = self.iface();
        let (dst, ethertype) = match EthernetFrame::new_checked(self.pool.frame(b)) {
            Ok(f) => (f.dst_addr(), f.ethertype()),
            Err(_) => {
                self.hdr.counters.rx_drop_eth.inc();
                self.pool.put(b);
                return;
            }
        };
        let group = super::mcast::is_ipv4_group_mac(dst);
        if dst != iface.mac() && !dst.is_broadcast() && !group {
            self.hdr.counters.rx_drop_not_our_mac.inc();
            self.pool.put(b);
            return;
        }
        if group && self.pool.frame(b)[6..12] == iface.mac().0 {
            // Our own multicast handed back by the device (the loop NIC
            // does): local receivers had it when it was sent.
            self.hdr.counters.rx_mcast_own_echo.inc();
            self.pool.put(b);
            return;
        }
        match ethertype {
            ethernet::ethertype::ARP => self.arp_input(b, now),
            ethernet::ethertype::IPV4 => self.ipv4_input(b, now),
            _ => {
                self.hdr.counters.rx_drop_eth.inc();
                self.pool.put(b);
            }
        }
    }

    fn arp_input(&mut self, b: BufId, now: u64) {
        let repr = ArpRepr::parse(&self.pool.frame(b)[ethernet::HEADER_LEN..]);
        self.pool.put(b);
        let Ok(repr) = repr else {
            self.hdr.counters.rx_drop_arp.inc();
            return;
        };
        let iface = self.iface();
        let sender = repr.source_protocol_addr;
        if repr.source_hardware_addr.is_multicast()
            || sender.is_unspecified()
            || sender == iface.ip()
        {
            // Probes, our own requests looped back, and nonsense.
            if sender != iface.ip() {
                self.hdr.counters.rx_drop_arp.inc();
            }
            return;
        }
        let for_us = repr.target_protocol_addr == iface.ip();
        // Update an existing entry from any ARP; create one only when the packet is for us.
        match arp_cache::find(self.arp, sender) {
            Some(i) => self.arp_confirm(i, repr.source_hardware_addr, now),
            None if for_us && iface.on_link(sender) => {
                if let Some(i) = arp_cache::slot_for(self.arp, sender) {
                    self.arp_evict(i);
                    self.arp[i] = ArpEntry {
                        ip: sender.octets(),
                        ..ArpEntry::FREE
                    };
                    self.arp_confirm(i, repr.source_hardware_addr, now);
                }
            }
            None => {}
        }
        if !for_us {
            return;
        }
        match repr.operation {
            ArpOperation::Request => {
                let reply = ArpRepr {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: iface.mac(),
                    source_protocol_addr: iface.ip(),
                    target_hardware_addr: repr.source_hardware_addr,
                    target_protocol_addr: sender,
                };
                if self.send_arp(&reply, repr.source_hardware_addr) {
                    self.hdr.counters.arp_replies_sent.inc();
                }
            }
            ArpOperation::Reply => self.hdr.counters.arp_replies_received.inc(),
            _ => self.hdr.counters.rx_drop_arp.inc(),
        }
    }

    /// Records a neighbour's MAC learnt elsewhere (the kernel's neighbour
    /// table, when the kernel resolves for a stack that shares its
    /// interface), and sends what waited for it. Off-link addresses are ignored.
    pub fn arp_learn(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now: u64) {
        if !self.iface().on_link(ip) || mac.is_multicast() {
            return;
        }
        let i = match arp_cache::find(self.arp, ip) {
            Some(i) => i,
            None => {
                let Some(i) = arp_cache::slot_for(self.arp, ip) else {
                    return;
                };
                self.arp_evict(i);
                self.arp[i] = ArpEntry {
                    ip: ip.octets(),
                    ..ArpEntry::FREE
                };
                i
            }
        };
        self.arp_confirm(i, mac, now);
    }

    /// Forgets a neighbour (the kernel dropped it); frames waiting for it are dropped.
    pub fn arp_forget(&mut self, ip: Ipv4Addr) {
        if let Some(i) = arp_cache::find(self.arp, ip) {
            if self.arp[i].state == state::REACHABLE {
                self.arp_evict(i);
            }
        }
    }

    /// Frees entry `i` (evicted for a new neighbour), dropping anything pending.
    fn arp_evict(&mut self, i: usize) {
        let mut q = self.arp[i].pending;
        self.hdr.counters.tx_drop_arp.add(u64::from(q.count));
        self.pool.purge(&mut q);
        self.timers.cancel(Core::arp_timer_id(i));
        self.arp[i] = ArpEntry::FREE;
    }

    /// Marks entry `i` resolved to `mac` and sends what waited for it.
    fn arp_confirm(&mut self, i: usize, mac: EthernetAddress, now: u64) {
        let e = &mut self.arp[i];
        e.mac = mac.0;
        e.state = state::REACHABLE;
        e.tries = 0;
        e.confirmed_ns = now;
        e.deadline_ns = now + arp_cache::REACHABLE_NS;
        let mut q = std::mem::replace(&mut e.pending, PktQueue::EMPTY);
        let deadline = e.deadline_ns;
        let _ = self
            .timers
            .arm(Core::arp_timer_id(i), deadline, TIMER_ARP, i as u32);
        while let Some(p) = self.pool.dequeue(&mut q, 0) {
            let len = usize::from(self.pool.meta(p).len);
            if let Ok(mut f) = EthernetFrame::new_checked(self.pool.frame_mut(p, len)) {
                f.set_dst_addr(mac);
            }
            self.queue_tx(p);
        }
    }

    /// An ARP timer fired: retry an unresolved neighbour, or expire an entry.
    pub(crate) fn arp_timer(&mut self, i: usize, now: u64) {
        let Some(e) = self.arp.get(i).copied() else {
            return;
        };
        match e.state {
            state::INCOMPLETE if e.tries < arp_cache::MAX_TRIES => {
                self.send_arp_request(e.ip());
                self.arp[i].tries += 1;
                self.arp_retry_later(i, now);
            }
            state::INCOMPLETE | state::REACHABLE => {
                tracing::debug!(neighbour = %e.ip(), "ARP entry expired or unresolved");
                self.arp_evict(i);
            }
            _ => {}
        }
    }

    /// Schedules the next request (or giving up) for unresolved entry `i`.
    fn arp_retry_later(&mut self, i: usize, now: u64) {
        let at = now + arp_cache::RETRY_NS;
        self.arp[i].deadline_ns = at;
        let _ = self
            .timers
            .arm(Core::arp_timer_id(i), at, TIMER_ARP, i as u32);
    }

    fn send_arp_request(&mut self, target: Ipv4Addr) {
        let iface = self.iface();
        let req = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: iface.mac(),
            source_protocol_addr: iface.ip(),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        if self.send_arp(&req, EthernetAddress::BROADCAST) {
            self.hdr.counters.arp_requests_sent.inc();
        }
    }

    fn send_arp(&mut self, repr: &ArpRepr, dst: EthernetAddress) -> bool {
        let Ok(b) = self.pool.alloc() else {
            self.hdr.counters.drop_no_buffers.inc();
            return false;
        };
        let mac = self.iface().mac();
        // Ethernet's minimum frame (60 bytes before the FCS); the tail is zero padding.
        let frame = self.pool.frame_mut(b, 60);
        frame.fill(0);
        let ok = ethernet::emit_header(frame, dst, mac, ethernet::ethertype::ARP).is_ok()
            && repr.emit(&mut frame[ethernet::HEADER_LEN..]).is_ok();
        if !ok {
            self.pool.put(b);
            return false;
        }
        self.queue_tx(b);
        true
    }

    fn ipv4_input(&mut self, b: BufId, now: u64) {
        let iface = self.iface();
        let l3 = ethernet::HEADER_LEN;
        let parsed = {
            let frame = self.pool.frame(b);
            match Ipv4Packet::new_checked(&frame[l3..]) {
                Err(_) => Err(&self.hdr.counters.rx_drop_ip_hdr),
                Ok(p) if !p.verify_checksum() => Err(&self.hdr.counters.rx_drop_ip_csum),
                Ok(p) if p.is_fragment() => Err(&self.hdr.counters.rx_drop_ip_frag),
                Ok(p) => Ok((
                    p.src_addr(),
                    p.dst_addr(),
                    p.protocol(),
                    p.header_len() as usize,
                    p.total_len() as usize,
                )),
            }
        };
        let (src, dst, proto, hlen, tlen) = match parsed {
            Ok(v) => v,
            Err(counter) => {
                counter.inc();
                self.pool.put(b);
                return;
            }
        };
        // Broadcast or multicast: delivered to every matching socket, never
        // answered with an ICMP error.
        let bcast = if dst.is_multicast() {
            if !self.mcast_accepts(dst) {
                self.hdr.counters.rx_drop_mcast_group.inc();
                self.pool.put(b);
                return;
            }
            true
        } else {
            iface.is_broadcast(dst)
        };
        if !iface.is_local(dst) && !bcast {
            self.hdr.counters.rx_drop_not_our_ip.inc();
            self.pool.put(b);
            return;
        }
        let l4 = l3 + hlen;
        {
            let m = self.pool.meta_mut(b);
            m.l3_off = l3 as u16;
            m.l4_off = l4 as u16;
        }
        match proto {
            ipv4::protocol::UDP => self.udp_input(b, src, dst, l4, tlen - hlen, bcast),
            ipv4::protocol::ICMP => self.icmp_input(b, src, dst, l4, tlen - hlen, bcast, now),
            ipv4::protocol::TCP => self.tcp_input(b, src, dst, l4, tlen - hlen, bcast, now),
            ipv4::protocol::IGMP => self.igmp_input(b, l4, tlen - hlen, now),
            _ => {
                self.hdr.counters.rx_drop_ip_proto.inc();
                if !bcast {
                    self.send_icmp_unreachable(b, crate::wire::icmpv4::unreachable::PROTOCOL, now);
                }
                self.pool.put(b);
            }
        }
    }

    fn udp_input(
        &mut self,
        b: BufId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        l4: usize,
        len: usize,
        bcast: bool,
    ) {
        let mode = self.pool.meta(b).rx_csum;
        let hdr = {
            let frame = self.pool.frame(b);
            let seg = &frame[l4..(l4 + len).min(frame.len())];
            match UdpPacket::new_checked(seg) {
                Err(_) => Err(&self.hdr.counters.rx_drop_udp_hdr),
                Ok(p)
                    if !checksum_ok(
                        mode,
                        p.checksum(),
                        src,
                        dst,
                        ipv4::protocol::UDP,
                        p.len(),
                        || p.verify_checksum(src, dst),
                    ) =>
                {
                    Err(&self.hdr.counters.rx_drop_udp_csum)
                }
                Ok(p) => Ok((p.src_port(), p.dst_port(), p.len() as usize)),
            }
        };
        let (sport, dport, ulen) = match hdr {
            Ok(v) => v,
            Err(counter) => {
                counter.inc();
                self.pool.put(b);
                return;
            }
        };
        {
            let m = self.pool.meta_mut(b);
            m.pay_off = (l4 + crate::wire::udp::HEADER_LEN) as u16;
            m.pay_len = (ulen - crate::wire::udp::HEADER_LEN) as u16;
        }
        let d = Delivery {
            src: SocketAddrV4::new(src, sport),
            dst: SocketAddrV4::new(dst, dport),
            multi: bcast,
        };
        self.pool.get(b);
        if self.udp_deliver(b, d) {
            self.pool.put(b);
            return;
        }
        self.hdr.counters.rx_udp_no_port.inc();
        if !bcast {
            let now = self.st.last_now_ns;
            self.send_icmp_unreachable(b, crate::wire::icmpv4::unreachable::PORT, now);
        }
        self.pool.put(b);
    }

    /// Chooses the next hop for `dst`, or fails if there is no route.
    pub(crate) fn route(&self, dst: Ipv4Addr) -> Result<NextHop, SockError> {
        let iface = self.iface();
        if iface.is_local(dst) {
            Ok(NextHop::Local)
        } else if dst.is_multicast() {
            Ok(NextHop::Multicast(dst))
        } else if iface.is_broadcast(dst) {
            Ok(NextHop::Broadcast)
        } else if iface.on_link(dst) {
            Ok(NextHop::Neighbour(dst))
        } else if let Some(gw) = iface.gateway() {
            Ok(NextHop::Neighbour(gw))
        } else {
            Err(SockError::NetUnreachable)
        }
    }

    /// The source address for packets to `dst`.
    pub(crate) fn source_for(&self, dst: Ipv4Addr) -> Ipv4Addr {
        let iface = self.iface();
        if dst.is_loopback() && iface.is_local(dst) {
            dst
        } else {
            iface.ip()
        }
    }

    /// Finishes and sends a packet whose transport header and payload are in
    /// place after room for Ethernet and IPv4 headers. Consumes the reference.
    pub(crate) fn ip_output(
        &mut self,
        b: BufId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        l4_len: usize,
    ) -> Result<(), SockError> {
        let opts = OutOpts {
            ttl: DEFAULT_TTL,
            tos: 0,
            options: &[],
        };
        self.ip_output_with(b, src, dst, protocol, l4_len, opts)
    }

    /// [`Core::ip_output`] with a TTL, type of service and header options
    /// (the transport header sits after them). A multicast packet with
    /// TTL 0 never leaves the host (as Linux's ip_mc_output).
    pub(crate) fn ip_output_with(
        &mut self,
        b: BufId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        l4_len: usize,
        opts: OutOpts<'_>,
    ) -> Result<(), SockError> {
        let hop = match self.route(dst) {
            Ok(h) => h,
            Err(e) => {
                self.hdr.counters.tx_drop_no_route.inc();
                self.pool.put(b);
                return Err(e);
            }
        };
        let iface = self.iface();
        let repr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol,
            payload_len: l4_len,
            ttl: opts.ttl,
            dont_frag: true,
            ident: 0,
        };
        let total = ethernet::HEADER_LEN + ipv4::HEADER_LEN + opts.options.len() + l4_len;
        let dst_mac = match hop {
            NextHop::Local => Some(iface.mac()),
            NextHop::Broadcast => Some(EthernetAddress::BROADCAST),
            NextHop::Multicast(g) => Some(super::mcast::group_mac(g)),
            NextHop::Neighbour(n) => self.resolve(n),
        };
        {
            let frame = self.pool.frame_mut(b, total);
            let _ = ethernet::emit_header(
                frame,
                dst_mac.unwrap_or(EthernetAddress([0; 6])),
                iface.mac(),
                ethernet::ethertype::IPV4,
            );
            let _ = repr.emit_with(&mut frame[ethernet::HEADER_LEN..], opts.tos, opts.options);
        }
        // A stack on 127.0.0.1 (the loop NIC) has no wire: what would go out
        // comes back in. Multicast was already delivered to the stack's
        // members when sent; broadcast goes round through the receive path.
        let no_wire = iface.ip().is_loopback();
        match (hop, dst_mac) {
            (NextHop::Local, _) => self.loop_push(b),
            (NextHop::Multicast(_), _) if opts.ttl == 0 || no_wire => self.pool.put(b),
            (NextHop::Broadcast, _) if no_wire => self.loop_push(b),
            (_, Some(_)) => self.queue_tx(b),
            (NextHop::Neighbour(n), None) => self.hold_for_arp(b, n),
            (NextHop::Broadcast | NextHop::Multicast(_), None) => self.pool.put(b),
        }
        Ok(())
    }

    /// The MAC of neighbour `n` if known; refreshes an entry near expiry.
    fn resolve(&mut self, n: Ipv4Addr) -> Option<EthernetAddress> {
        let i = arp_cache::find(self.arp, n)?;
        let e = self.arp[i];
        if e.state != state::REACHABLE {
            return None;
        }
        let now = self.st.last_now_ns;
        if now + arp_cache::REFRESH_WINDOW_NS >= e.deadline_ns && e.tries == 0 {
            // Ask again before the entry expires, so traffic never waits for ARP.
            self.arp[i].tries = 1;
            self.send_arp_request(n);
        }
        Some(EthernetAddress(e.mac))
    }

    /// Holds a frame until neighbour `n` resolves, starting resolution if needed.
    fn hold_for_arp(&mut self, b: BufId, n: Ipv4Addr) {
        let now = self.st.last_now_ns;
        let i = match arp_cache::find(self.arp, n) {
            Some(i) => i,
            None => match arp_cache::slot_for(self.arp, n) {
                Some(i) => {
                    self.arp_evict(i);
                    self.arp[i] = ArpEntry {
                        ip: n.octets(),
                        state: state::INCOMPLETE,
                        tries: 1,
                        ..ArpEntry::FREE
                    };
                    self.send_arp_request(n);
                    self.arp_retry_later(i, now);
                    i
                }
                None => {
                    self.hdr.counters.tx_drop_arp.inc();
                    self.pool.put(b);
                    return;
                }
            },
        };
        let max = self.hdr.config.arp_pending_max;
        let mut q = self.arp[i].pending;
        if q.count >= max {
            // Like Linux's unres_qlen: the oldest waiting frame makes room.
            if let Some(old) = self.pool.dequeue(&mut q, 0) {
                self.pool.put(old);
            }
            self.hdr.counters.tx_drop_arp.inc();
        }
        if self.pool.enqueue(&mut q, b, 0).is_err() {
            self.hdr.counters.drop_no_buffers.inc();
            self.pool.put(b);
        }
        self.arp[i].pending = q;
    }

    /// ARP cache contents, for stackdump and tests.
    pub fn arp_entries(
        &self,
    ) -> impl Iterator<Item = (Ipv4Addr, Option<EthernetAddress>, u32)> + '_ {
        self.arp.iter().filter(|e| e.state != state::FREE).map(|e| {
            let mac = (e.state == state::REACHABLE).then_some(EthernetAddress(e.mac));
            (e.ip(), mac, e.pending.count)
        })
    }
}

/// Whether a received TCP/UDP segment's checksum is acceptable in the
/// frame's mode ([`crate::pool::rx_csum`]); `verify` checks the full sum.
pub(crate) fn checksum_ok(
    mode: u8,
    field: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    length: u16,
    verify: impl FnOnce() -> bool,
) -> bool {
    use crate::pool::rx_csum;
    match mode {
        rx_csum::VERIFIED => true,
        rx_csum::PARTIAL_OK => {
            crate::wire::checksum::is_pseudo_only(field, src, dst, protocol, length) || verify()
        }
        _ => verify(),
    }
}
