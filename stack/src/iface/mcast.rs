//! Multicast groups the stack has joined (stack-wide view, for receive
//! filtering, IGMP and the device filter). Per-socket memberships live in
//! the socket slots ([`crate::socket::SockMcast`]).
//!
//! The stack is one IGMP host (RFC 3376, with the RFC 2236/1112
//! compatibility modes of its 7.2.1 in a simple form). Each group has a
//! reference count (sockets holding a membership) and its interface state:
//! the filter mode and sources merged over those sockets (RFC 3376 3.2).
//! A change of that state is reported at once and repeated once after a
//! random delay of up to a second (robustness 2); queries are answered
//! after a random delay within their Max Resp Time. Deadlines are kept
//! here and driven by [`Core::mcast_poll`]. With IGMP disabled (a kernel
//! sharing the device speaks it for the host) nothing is sent.

use std::net::Ipv4Addr;

use crate::clock::{MS, SEC};
use crate::pool::BufId;
use crate::socket::{filter_mode, kind, SockError};
use crate::stack::Core;
use crate::wire::ethernet::{self, EthernetAddress};
use crate::wire::igmp::{record_type, GroupRecord, IgmpRepr, QueryVersion, Records, Sources};
use crate::wire::ipv4;

/// Groups the stack can be a member of at once.
pub const MAX_GROUPS: usize = 128;
/// Sources kept in a group's merged interface state (an INCLUDE union over
/// many sockets is cut here; an EXCLUDE intersection never exceeds a
/// socket's own limit).
pub const MAX_GROUP_SOURCES: usize = 32;
/// All hosts (224.0.0.1): every host is a member; never reported.
pub const ALL_HOSTS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// All routers (224.0.0.2): where IGMPv2 leaves go.
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// All IGMPv3-capable routers (224.0.0.22): where v3 reports go.
pub const V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
/// Unsolicited Report Interval (RFC 3376 8.11): state-change reports are
/// repeated after a random delay up to this.
pub const UNSOLICITED_INTERVAL_NS: u64 = SEC;
/// Robustness Variable (RFC 3376 8.1): a state change is sent this many times.
pub const ROBUSTNESS: u8 = 2;
/// Older Version Querier Present Timeout (RFC 3376 8.12, defaults:
/// 2 x 125 s + 10 s): how long a v1/v2 query keeps the host in that mode.
pub const OLDER_QUERIER_TIMEOUT_NS: u64 = 260 * SEC;

/// The Ethernet address IPv4 multicast `group` is sent to (RFC 1112 6.4:
/// 01:00:5e and the group's low 23 bits).
pub fn group_mac(group: Ipv4Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// Whether `mac` is an IPv4 multicast Ethernet address (01:00:5e, low half).
pub fn is_ipv4_group_mac(mac: EthernetAddress) -> bool {
    mac.0[0] == 0x01 && mac.0[1] == 0x00 && mac.0[2] == 0x5e && mac.0[3] & 0x80 == 0
}

/// A filter mode and source list: a group's interface state. All zero is
/// INCLUDE {}: not a member.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterState {
    /// 1 for EXCLUDE, 0 for INCLUDE.
    pub exclude: u8,
    /// Sources in use, sorted.
    pub nsrc: u8,
    pub _pad: [u8; 2],
    pub sources: [[u8; 4]; MAX_GROUP_SOURCES],
}

impl FilterState {
    const NONE: FilterState = FilterState {
        exclude: 0,
        nsrc: 0,
        _pad: [0; 2],
        sources: [[0; 4]; MAX_GROUP_SOURCES],
    };

    fn new(exclude: bool, mut srcs: Vec<[u8; 4]>) -> FilterState {
        srcs.sort_unstable();
        srcs.dedup();
        srcs.truncate(MAX_GROUP_SOURCES);
        let mut f = FilterState {
            exclude: u8::from(exclude),
            nsrc: srcs.len() as u8,
            ..FilterState::NONE
        };
        f.sources[..srcs.len()].copy_from_slice(&srcs);
        f
    }

    /// Whether routers must forward the group here at all.
    pub fn is_member(&self) -> bool {
        self.exclude != 0 || self.nsrc != 0
    }

    /// The sources.
    pub fn sources(&self) -> &[[u8; 4]] {
        &self.sources[..usize::from(self.nsrc)]
    }

    /// Sources of `self` not in `other`.
    fn minus(&self, other: &FilterState) -> Vec<Ipv4Addr> {
        self.sources()
            .iter()
            .filter(|s| !other.sources().contains(s))
            .map(|s| Ipv4Addr::from(*s))
            .collect()
    }
}

/// One group of the stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GroupEntry {
    /// The group; 0.0.0.0 for a free entry.
    pub group: [u8; 4],
    /// Socket memberships of the group. An entry with none lives on until
    /// its leave has been repeated.
    pub refs: u32,
    /// Current interface state.
    pub state: FilterState,
    /// The state routers knew before the change being repeated.
    pub change_from: FilterState,
    /// When the state-change report is repeated next (0: not pending).
    pub change_at_ns: u64,
    /// When a query about this group is answered (0: not pending).
    pub query_at_ns: u64,
    /// Repetitions of the state-change report left.
    pub change_left: u8,
    /// Whether the change being repeated switched the filter mode.
    pub mode_changed: u8,
    pub _pad: [u8; 6],
}

impl GroupEntry {
    const FREE: GroupEntry = GroupEntry {
        group: [0; 4],
        refs: 0,
        state: FilterState::NONE,
        change_from: FilterState::NONE,
        change_at_ns: 0,
        query_at_ns: 0,
        change_left: 0,
        mode_changed: 0,
        _pad: [0; 6],
    };

    /// The group address.
    pub fn group(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.group)
    }
}

/// Groups joined by any socket of the stack, and the IGMP host state.
/// All zero is valid: no groups, IGMP enabled, IGMPv3 mode.
#[repr(C)]
pub struct GroupTable {
    /// Number of groups with at least one socket membership.
    pub len: u32,
    /// 1 when IGMP is off ([`Core::set_igmp_enabled`]).
    pub igmp_off: u8,
    pub _pad: [u8; 3],
    /// Random state for report delays (xorshift; seeded on first use).
    pub rng: u64,
    /// Earliest pending deadline below (0: none), so polling is O(1).
    pub next_at_ns: u64,
    /// When the answer to a v3 general query is due (0: not pending).
    pub general_at_ns: u64,
    /// Until when an IGMPv1 querier is considered present.
    pub v1_until_ns: u64,
    /// Until when an IGMPv2 querier is considered present.
    pub v2_until_ns: u64,
    pub groups: [GroupEntry; MAX_GROUPS],
}

/// Which protocol version the host speaks now (RFC 3376 7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compat {
    V1,
    V2,
    V3,
}

/// Records of a state change from `old` to `new` (RFC 3376 5.1's table).
fn change_records(old: &FilterState, new: &FilterState) -> Vec<(u8, Vec<Ipv4Addr>)> {
    let all = |f: &FilterState| f.sources().iter().map(|s| Ipv4Addr::from(*s)).collect();
    match (old.exclude != 0, new.exclude != 0) {
        (false, true) => vec![(record_type::CHANGE_TO_EXCLUDE, all(new))],
        (true, false) => vec![(record_type::CHANGE_TO_INCLUDE, all(new))],
        (false, false) => vec![
            (record_type::ALLOW_NEW_SOURCES, new.minus(old)),
            (record_type::BLOCK_OLD_SOURCES, old.minus(new)),
        ],
        (true, true) => vec![
            (record_type::ALLOW_NEW_SOURCES, old.minus(new)),
            (record_type::BLOCK_OLD_SOURCES, new.minus(old)),
        ],
    }
    .into_iter()
    .filter(|(t, s)| {
        !s.is_empty()
            || *t == record_type::CHANGE_TO_EXCLUDE
            || *t == record_type::CHANGE_TO_INCLUDE
    })
    .collect()
}

/// The current-state record of a group (answer to a query).
fn current_record(s: &FilterState) -> (u8, Vec<Ipv4Addr>) {
    let t = if s.exclude != 0 {
        record_type::MODE_IS_EXCLUDE
    } else {
        record_type::MODE_IS_INCLUDE
    };
    (t, s.sources().iter().map(|a| Ipv4Addr::from(*a)).collect())
}

impl Core<'_> {
    /// Whether the stack speaks IGMP itself. Off when the device's kernel
    /// already reports the groups for the host (AF_XDP, AF_PACKET: the
    /// app's shadow kernel socket joins too); on (the default) with the
    /// loop, TAP and VFIO devices.
    pub fn set_igmp_enabled(&mut self, on: bool) {
        let t = &mut self.st.mcast;
        t.igmp_off = u8::from(!on);
        if !on {
            t.general_at_ns = 0;
            for e in t.groups.iter_mut().filter(|e| e.group != [0; 4]) {
                e.query_at_ns = 0;
                e.change_at_ns = 0;
                e.change_left = 0;
                e.change_from = e.state;
                if e.refs == 0 {
                    *e = GroupEntry::FREE;
                }
            }
            self.mcast_rearm();
        }
    }

    /// Whether IGMP is on (see [`Core::set_igmp_enabled`]).
    pub fn igmp_enabled(&self) -> bool {
        self.st.mcast.igmp_off == 0
    }

    /// Calls `f` for every group a socket of the stack joined: what a
    /// device's multicast (MAC) filter must let in. Changes bump
    /// [`Core::binding_gen`].
    pub fn for_each_group(&self, mut f: impl FnMut(Ipv4Addr)) {
        for e in self.st.mcast.groups.iter().filter(|e| e.refs > 0) {
            f(e.group());
        }
    }

    fn group_index(&self, g: Ipv4Addr) -> Option<usize> {
        self.st
            .mcast
            .groups
            .iter()
            .position(|e| e.group == g.octets())
    }

    /// Whether a socket of the stack holds a membership of `g`.
    pub(crate) fn mcast_joined(&self, g: Ipv4Addr) -> bool {
        self.st.mcast.len > 0
            && self
                .group_index(g)
                .is_some_and(|i| self.st.mcast.groups[i].refs > 0)
    }

    /// Whether the stack takes in packets to multicast `g`: all-hosts, or
    /// a group a socket joined (O(groups)).
    pub(crate) fn mcast_accepts(&self, g: Ipv4Addr) -> bool {
        g == ALL_HOSTS || self.mcast_joined(g)
    }

    /// Counts one more socket membership of `g`; `NoBuffers` when the
    /// stack's group table is full.
    pub(crate) fn mcast_ref(&mut self, g: Ipv4Addr) -> Result<(), SockError> {
        let i = match self.group_index(g) {
            Some(i) => i,
            None => {
                let t = &mut self.st.mcast;
                let i = t
                    .groups
                    .iter()
                    .position(|e| e.group == [0; 4])
                    .ok_or(SockError::NoBuffers)?;
                t.groups[i] = GroupEntry {
                    group: g.octets(),
                    ..GroupEntry::FREE
                };
                i
            }
        };
        let e = &mut self.st.mcast.groups[i];
        e.refs += 1;
        if e.refs == 1 {
            self.st.mcast.len += 1;
            self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        }
        Ok(())
    }

    /// Counts one socket membership of `g` fewer.
    pub(crate) fn mcast_unref(&mut self, g: Ipv4Addr) {
        let Some(i) = self.group_index(g) else {
            return;
        };
        let e = &mut self.st.mcast.groups[i];
        if e.refs == 0 {
            return;
        }
        e.refs -= 1;
        if e.refs == 0 {
            e.query_at_ns = 0;
            self.st.mcast.len -= 1;
            self.st.binding_gen = self.st.binding_gen.wrapping_add(1);
        }
    }

    /// The interface state of `g` merged over every socket's membership
    /// (RFC 3376 3.2): EXCLUDE if any socket excludes, with the
    /// intersection of their lists less every included source; else
    /// INCLUDE the union.
    fn merged_state(&self, g: Ipv4Addr) -> FilterState {
        let mut ex: Option<Vec<[u8; 4]>> = None;
        let mut inc: Vec<[u8; 4]> = Vec::new();
        for sl in self.sockets.iter().filter(|s| s.kind == kind::UDP) {
            let Some(j) = sl.mcast.find(g) else { continue };
            let m = &sl.mcast.memberships[j];
            let srcs = &m.sources[..usize::from(m.nsrc)];
            if m.mode == filter_mode::EXCLUDE {
                ex = Some(match ex {
                    None => srcs.to_vec(),
                    Some(prev) => prev.into_iter().filter(|s| srcs.contains(s)).collect(),
                });
            } else {
                inc.extend_from_slice(srcs);
            }
        }
        match ex {
            Some(x) => FilterState::new(true, x.into_iter().filter(|s| !inc.contains(s)).collect()),
            None => FilterState::new(false, inc),
        }
    }

    fn compat(&self, now: u64) -> Compat {
        let t = &self.st.mcast;
        if t.v1_until_ns > now {
            Compat::V1
        } else if t.v2_until_ns > now {
            Compat::V2
        } else {
            Compat::V3
        }
    }

    /// A random delay in [0, max_ns].
    fn mcast_rand(&mut self, max_ns: u64) -> u64 {
        let t = &mut self.st.mcast;
        if t.rng == 0 {
            t.rng = (self.st.last_now_ns ^ 0x9e37_79b9_7f4a_7c15)
                .wrapping_add(u64::from(u32::from_be_bytes(self.st.published.iface.ip)))
                | 1;
        }
        let mut x = t.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t.rng = x;
        if max_ns == 0 {
            0
        } else {
            x % (max_ns + 1)
        }
    }

    /// Recomputes the earliest deadline.
    fn mcast_rearm(&mut self) {
        let t = &mut self.st.mcast;
        let mut next = t.general_at_ns;
        for e in t.groups.iter().filter(|e| e.group != [0; 4]) {
            for d in [e.change_at_ns, e.query_at_ns] {
                if d != 0 && (next == 0 || d < next) {
                    next = d;
                }
            }
        }
        t.next_at_ns = next;
    }

    /// Frees entry `i` once no socket holds it and nothing is pending.
    fn mcast_maybe_free(&mut self, i: usize) {
        let e = &mut self.st.mcast.groups[i];
        if e.refs == 0 && e.change_left == 0 {
            *e = GroupEntry::FREE;
        }
    }

    /// A socket's membership of `g` changed (join, leave, source filter):
    /// recomputes the group's interface state and tells routers about a
    /// change (RFC 3376 5.1; in v1/v2 mode a report on joining, a leave
    /// on leaving).
    pub(crate) fn mcast_changed(&mut self, g: Ipv4Addr) {
        let Some(i) = self.group_index(g) else {
            return;
        };
        let new = self.merged_state(g);
        let old = self.st.mcast.groups[i].state;
        self.st.mcast.groups[i].state = new;
        if old == new || !self.igmp_enabled() || g == ALL_HOSTS {
            let e = &mut self.st.mcast.groups[i];
            if e.change_left == 0 {
                e.change_from = new;
            }
            self.mcast_maybe_free(i);
            return;
        }
        let now = self.st.last_now_ns;
        let delay = self.mcast_rand(UNSOLICITED_INTERVAL_NS);
        let compat = self.compat(now);
        let e = &mut self.st.mcast.groups[i];
        if e.change_left == 0 {
            e.change_from = old;
            e.mode_changed = 0;
        }
        if old.exclude != new.exclude {
            e.mode_changed = 1;
        }
        e.change_left = ROBUSTNESS - 1;
        e.change_at_ns = (now + delay).max(1);
        if !new.is_member() {
            e.query_at_ns = 0;
        }
        match compat {
            Compat::V3 => {
                let recs = change_records(&old, &new);
                self.igmp_send_records(g, &recs, !new.is_member());
            }
            _ if old.is_member() == new.is_member() => {
                let e = &mut self.st.mcast.groups[i];
                e.change_left = 0;
                e.change_at_ns = 0;
            }
            _ if new.is_member() => self.igmp_send_v12_report(g, compat),
            _ => {
                if compat == Compat::V2 {
                    self.igmp_send(ALL_ROUTERS, &IgmpRepr::Leave { group: g });
                    self.hdr.counters.igmp_tx_leaves.inc();
                }
                let e = &mut self.st.mcast.groups[i];
                e.change_left = 0;
                e.change_at_ns = 0;
            }
        }
        self.mcast_maybe_free(i);
        self.mcast_rearm();
    }

    /// When [`Core::mcast_poll`] next has work (a repeated report, an
    /// answer to a query), if ever. `Core::next_deadline` takes it into
    /// account.
    pub fn mcast_deadline(&self) -> Option<u64> {
        let t = self.st.mcast.next_at_ns;
        (t != 0).then_some(t)
    }

    /// Sends the IGMP messages that are due at `now`: repeated state-change
    /// reports and answers to queries. Cheap when nothing is due; called
    /// from `Core::poll`.
    pub fn mcast_poll(&mut self, now: u64) {
        let t = self.st.mcast.next_at_ns;
        if t == 0 || t > now {
            return;
        }
        if now > self.st.last_now_ns {
            self.st.last_now_ns = now;
        }
        let compat = self.compat(now);
        let g = self.st.mcast.general_at_ns;
        if g != 0 && g <= now {
            self.st.mcast.general_at_ns = 0;
            self.igmp_answer_general(compat);
        }
        for i in 0..MAX_GROUPS {
            let e = self.st.mcast.groups[i];
            if e.group == [0; 4] {
                continue;
            }
            if e.query_at_ns != 0 && e.query_at_ns <= now {
                self.st.mcast.groups[i].query_at_ns = 0;
                if e.refs > 0 && e.state.is_member() {
                    match compat {
                        Compat::V3 => {
                            let rec = current_record(&e.state);
                            self.igmp_send_records(e.group(), &[rec], false);
                        }
                        _ => self.igmp_send_v12_report(e.group(), compat),
                    }
                }
            }
            if e.change_at_ns != 0 && e.change_at_ns <= now {
                self.igmp_repeat_change(i, compat, now);
            }
        }
        self.mcast_rearm();
    }

    /// Sends the next repetition of group `i`'s state-change report.
    fn igmp_repeat_change(&mut self, i: usize, compat: Compat, now: u64) {
        let e = self.st.mcast.groups[i];
        match compat {
            Compat::V3 => {
                let recs = if e.mode_changed != 0 {
                    change_records(
                        &FilterState {
                            exclude: 1 - e.state.exclude.min(1),
                            ..FilterState::NONE
                        },
                        &e.state,
                    )
                } else {
                    change_records(&e.change_from, &e.state)
                };
                self.igmp_send_records(e.group(), &recs, !e.state.is_member());
            }
            _ if e.state.is_member() => self.igmp_send_v12_report(e.group(), compat),
            _ => {}
        }
        let delay = self.mcast_rand(UNSOLICITED_INTERVAL_NS);
        let e = &mut self.st.mcast.groups[i];
        e.change_left = e.change_left.saturating_sub(1);
        if e.change_left == 0 {
            e.change_at_ns = 0;
            e.change_from = e.state;
            e.mode_changed = 0;
            self.mcast_maybe_free(i);
        } else {
            e.change_at_ns = (now + delay).max(1);
        }
    }

    /// Answers a v3 general query: the current state of every group, in
    /// as few reports as fit the MTU (v1/v2 mode: a report per group).
    fn igmp_answer_general(&mut self, compat: Compat) {
        let groups: Vec<(Ipv4Addr, FilterState)> = self
            .st
            .mcast
            .groups
            .iter()
            .filter(|e| e.refs > 0 && e.state.is_member() && e.group() != ALL_HOSTS)
            .map(|e| (e.group(), e.state))
            .collect();
        if compat != Compat::V3 {
            for (g, _) in groups {
                self.igmp_send_v12_report(g, compat);
            }
            return;
        }
        let recs: Vec<(Ipv4Addr, u8, Vec<Ipv4Addr>)> = groups
            .iter()
            .map(|(g, s)| {
                let (t, srcs) = current_record(s);
                (*g, t, srcs)
            })
            .collect();
        self.igmp_send_v3(&recs, false);
    }

    /// Sends records about one group in a v3 report.
    fn igmp_send_records(&mut self, g: Ipv4Addr, recs: &[(u8, Vec<Ipv4Addr>)], leave: bool) {
        let recs: Vec<_> = recs.iter().map(|(t, s)| (g, *t, s.clone())).collect();
        self.igmp_send_v3(&recs, leave);
    }

    /// Sends v3 reports holding `recs`, split over as many as the MTU needs.
    fn igmp_send_v3(&mut self, recs: &[(Ipv4Addr, u8, Vec<Ipv4Addr>)], leave: bool) {
        let room = usize::from(self.iface().mtu)
            .saturating_sub(ipv4::HEADER_LEN + ipv4::OPTION_ROUTER_ALERT.len())
            .min(crate::pool::MAX_FRAME - IGMP_OFF)
            .saturating_sub(crate::wire::igmp::HEADER_LEN);
        let mut start = 0;
        while start < recs.len() {
            let mut end = start;
            let mut used = 0;
            while end < recs.len() {
                let l = crate::wire::igmp::RECORD_LEN + 4 * recs[end].2.len();
                if used + l > room && end > start {
                    break;
                }
                used += l;
                end += 1;
            }
            let built: Vec<GroupRecord<'_>> = recs[start..end]
                .iter()
                .map(|(g, t, s)| GroupRecord {
                    record_type: *t,
                    group: *g,
                    sources: Sources::List(s),
                })
                .collect();
            let repr = IgmpRepr::ReportV3 {
                records: Records::List(&built),
            };
            if self.igmp_send(V3_ROUTERS, &repr) && leave {
                self.hdr.counters.igmp_tx_leaves.inc();
            }
            start = end;
        }
    }

    /// Sends a v1 or v2 report of `g` (to the group itself).
    fn igmp_send_v12_report(&mut self, g: Ipv4Addr, compat: Compat) {
        let repr = if compat == Compat::V1 {
            IgmpRepr::ReportV1 { group: g }
        } else {
            IgmpRepr::ReportV2 { group: g }
        };
        self.igmp_send(g, &repr);
    }

    /// Sends one IGMP message from the interface address: TTL 1, Router
    /// Alert, TOS 0xc0, as Linux does.
    fn igmp_send(&mut self, dst: Ipv4Addr, repr: &IgmpRepr<'_>) -> bool {
        let len = repr.buffer_len();
        if IGMP_OFF + len > crate::pool::MAX_FRAME {
            return false;
        }
        let Ok(b) = self.pool.alloc() else {
            self.hdr.counters.drop_no_buffers.inc();
            return false;
        };
        let frame = self.pool.frame_mut(b, IGMP_OFF + len);
        if repr.emit(&mut frame[IGMP_OFF..]).is_err() {
            self.pool.put(b);
            return false;
        }
        let src = self.iface().ip();
        let opts = super::ipv4::OutOpts {
            ttl: 1,
            tos: ipv4::TOS_INTERNETWORK_CONTROL,
            options: &ipv4::OPTION_ROUTER_ALERT,
        };
        let sent = self
            .ip_output_with(b, src, dst, ipv4::protocol::IGMP, len, opts)
            .is_ok();
        if sent {
            match repr {
                IgmpRepr::Leave { .. } => {}
                _ => self.hdr.counters.igmp_tx_reports.inc(),
            }
        }
        sent
    }

    /// Takes in an IGMP message (`dst` was accepted by [`Core::mcast_accepts`]
    /// or is ours). Consumes the reference.
    pub(crate) fn igmp_input(&mut self, b: BufId, l4: usize, len: usize, now: u64) {
        enum Msg {
            Query(QueryVersion, u32, Ipv4Addr),
            OtherReport(Ipv4Addr),
            Other,
        }
        let msg = {
            let frame = self.pool.frame(b);
            let m = &frame[l4..(l4 + len).min(frame.len())];
            match IgmpRepr::parse(m, true) {
                Ok(r @ IgmpRepr::Query { version, group, .. }) => {
                    Ok(Msg::Query(version, r.max_resp_ds(), group))
                }
                Ok(IgmpRepr::ReportV1 { group } | IgmpRepr::ReportV2 { group }) => {
                    Ok(Msg::OtherReport(group))
                }
                Ok(_) => Ok(Msg::Other),
                Err(_) => Err(()),
            }
        };
        self.pool.put(b);
        let c = &self.hdr.counters;
        match msg {
            Err(()) => c.rx_drop_igmp.inc(),
            Ok(Msg::Query(v, max_ds, group)) => {
                c.igmp_rx_queries.inc();
                if self.igmp_enabled() {
                    self.igmp_query(v, max_ds, group, now);
                }
            }
            Ok(Msg::OtherReport(group)) => {
                c.igmp_rx_reports.inc();
                // v1/v2 report suppression (RFC 2236 3): another member
                // answered for the group.
                if self.compat(now) != Compat::V3 {
                    if let Some(i) = self.group_index(group) {
                        self.st.mcast.groups[i].query_at_ns = 0;
                        self.mcast_rearm();
                    }
                }
            }
            Ok(Msg::Other) => c.igmp_rx_reports.inc(),
        }
    }

    /// A query arrived: note an older-version querier, and schedule answers.
    fn igmp_query(&mut self, v: QueryVersion, max_ds: u32, group: Ipv4Addr, now: u64) {
        match v {
            QueryVersion::V1 => self.st.mcast.v1_until_ns = now + OLDER_QUERIER_TIMEOUT_NS,
            QueryVersion::V2 => self.st.mcast.v2_until_ns = now + OLDER_QUERIER_TIMEOUT_NS,
            QueryVersion::V3 => {}
        }
        let max_ns = u64::from(max_ds.max(1)) * 100 * MS;
        let compat = self.compat(now);
        if group.is_unspecified() {
            if compat == Compat::V3 {
                // RFC 3376 5.2 (1): an earlier pending answer stands.
                let at = (now + self.mcast_rand(max_ns)).max(1);
                let t = &mut self.st.mcast;
                if t.general_at_ns == 0 || t.general_at_ns > at {
                    t.general_at_ns = at;
                }
            } else {
                for i in 0..MAX_GROUPS {
                    let e = self.st.mcast.groups[i];
                    if e.refs > 0 && e.state.is_member() && e.group() != ALL_HOSTS {
                        let at = (now + self.mcast_rand(max_ns)).max(1);
                        self.igmp_schedule_answer(i, at);
                    }
                }
            }
        } else if let Some(i) = self.group_index(group) {
            let e = self.st.mcast.groups[i];
            if e.refs > 0 && e.state.is_member() && group != ALL_HOSTS {
                let at = (now + self.mcast_rand(max_ns)).max(1);
                let general = self.st.mcast.general_at_ns;
                // RFC 3376 5.2 (1): a sooner general answer covers it.
                if general == 0 || general > at || compat != Compat::V3 {
                    self.igmp_schedule_answer(i, at);
                }
            }
        }
        self.mcast_rearm();
    }

    /// Answers about group `i` at `at`, unless an answer is due sooner.
    fn igmp_schedule_answer(&mut self, i: usize, at: u64) {
        let e = &mut self.st.mcast.groups[i];
        if e.query_at_ns == 0 || e.query_at_ns > at {
            e.query_at_ns = at;
        }
    }
}

/// Where an IGMP message starts in its frame (IPv4 header with Router Alert).
const IGMP_OFF: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + ipv4::OPTION_ROUTER_ALERT.len();

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(exclude: bool, s: &[&str]) -> FilterState {
        FilterState::new(
            exclude,
            s.iter()
                .map(|a| a.parse::<Ipv4Addr>().unwrap().octets())
                .collect(),
        )
    }

    #[test]
    fn group_macs() {
        assert_eq!(
            group_mac(Ipv4Addr::new(239, 129, 2, 3)).0,
            [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]
        );
        assert_eq!(
            group_mac(V3_ROUTERS).0,
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0x16]
        );
        assert!(is_ipv4_group_mac(group_mac(ALL_HOSTS)));
        assert!(!is_ipv4_group_mac(EthernetAddress([
            0x01, 0, 0x5e, 0x80, 0, 1
        ])));
        assert!(!is_ipv4_group_mac(EthernetAddress::BROADCAST));
    }

    #[test]
    fn rfc3376_change_table() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // Join ASM, leave ASM.
        assert_eq!(
            change_records(&FilterState::NONE, &fs(true, &[])),
            vec![(record_type::CHANGE_TO_EXCLUDE, vec![])]
        );
        assert_eq!(
            change_records(&fs(true, &[]), &FilterState::NONE),
            vec![(record_type::CHANGE_TO_INCLUDE, vec![])]
        );
        // INCLUDE(A) -> INCLUDE(B): ALLOW(B-A), BLOCK(A-B).
        assert_eq!(
            change_records(
                &fs(false, &["10.0.0.1", "10.0.0.2"]),
                &fs(false, &["10.0.0.2", "10.0.0.3"])
            ),
            vec![
                (record_type::ALLOW_NEW_SOURCES, vec![a("10.0.0.3")]),
                (record_type::BLOCK_OLD_SOURCES, vec![a("10.0.0.1")])
            ]
        );
        // EXCLUDE(A) -> EXCLUDE(B): ALLOW(A-B), BLOCK(B-A).
        assert_eq!(
            change_records(&fs(true, &["10.0.0.1"]), &fs(true, &["10.0.0.2"])),
            vec![
                (record_type::ALLOW_NEW_SOURCES, vec![a("10.0.0.1")]),
                (record_type::BLOCK_OLD_SOURCES, vec![a("10.0.0.2")])
            ]
        );
        assert_eq!(
            change_records(&fs(false, &["10.0.0.1"]), &fs(true, &["10.0.0.9"])),
            vec![(record_type::CHANGE_TO_EXCLUDE, vec![a("10.0.0.9")])]
        );
    }
}
