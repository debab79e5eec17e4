//! Counters kept in the arena, per stack and per socket, readable at any time
//! by another process (stackdump) without the stack lock.
//!
//! Each counter is one atomic u64. Writers hold the stack lock, so an
//! increment is a plain load and store (no locked instruction on the data path).

use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter.
#[repr(transparent)]
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Only called with the stack lock held, hence no atomic RMW.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets to zero.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

macro_rules! counter_set {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Default, Debug)]
        pub struct $name {
            $($(#[$fm])* pub $field: Counter,)*
        }

        impl $name {
            /// Every counter with its name, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($field), self.$field.get()),)*].into_iter()
            }

            /// Zeroes every counter.
            pub fn reset(&self) {
                $(self.$field.reset();)*
            }
        }
    };
}

counter_set! {
    /// Stack-wide counters: traffic, and every reason a frame was dropped.
    StackCounters {
        rx_frames,
        rx_bytes,
        tx_frames,
        tx_bytes,
        /// Frame shorter than an Ethernet header or of an unknown ethertype.
        rx_drop_eth,
        /// Frame for another MAC address.
        rx_drop_not_our_mac,
        /// Malformed ARP, or ARP not for us.
        rx_drop_arp,
        /// Bad IPv4 header (version, lengths).
        rx_drop_ip_hdr,
        /// Bad IPv4 header checksum.
        rx_drop_ip_csum,
        /// IPv4 fragment: rbypass does not reassemble; fragments are dropped and counted.
        rx_drop_ip_frag,
        /// IPv4 packet for another address.
        rx_drop_not_our_ip,
        /// IPv4 protocol the stack does not handle.
        rx_drop_ip_proto,
        /// Malformed or bad-checksum ICMP.
        rx_drop_icmp,
        /// Malformed UDP header.
        rx_drop_udp_hdr,
        /// Bad UDP checksum.
        rx_drop_udp_csum,
        /// UDP to a port with no socket (answered with ICMP port unreachable).
        rx_udp_no_port,
        /// UDP dropped because the socket's receive buffer was full.
        rx_drop_udp_rcvbuf,
        /// Dropped because packet buffers or queue nodes ran out.
        drop_no_buffers,
        /// Frame dropped while waiting for ARP (pending queue full or resolution failed).
        tx_drop_arp,
        /// No route to the destination.
        tx_drop_no_route,
        arp_requests_sent,
        arp_replies_sent,
        arp_replies_received,
        icmp_echo_replies_sent,
        icmp_unreach_sent,
        icmp_unreach_received,
        udp_rx_datagrams,
        udp_tx_datagrams,
        /// Malformed or bad-checksum TCP segment.
        rx_drop_tcp,
        tcp_rx_segments,
        /// Segment for no connection or listener (answered with RST).
        tcp_no_socket,
        tcp_rst_sent,
        tcp_rst_received,
        /// SYNs dropped because a listener's queues were full.
        tcp_listen_drops,
        tcp_challenge_acks,
        tcp_paws_drops,
        tcp_active_opens,
        tcp_passive_opens,
        tcp_retransmits,
        tcp_fast_retransmits,
        tcp_ooo_segments,
        tcp_window_probes,
        /// Tail loss probes sent (RFC 8985 7): the last segment resent
        /// after about two round trips without an ACK, before the RTO.
        tcp_loss_probes,
        tcp_syncookies_sent,
        tcp_syncookies_ok,
        /// IPv4 multicast to a group no socket of the stack joined.
        rx_drop_mcast_group,
        /// Our own multicast frame handed back by the device (the loop NIC
        /// does): local receivers got it when it was sent (IP_MULTICAST_LOOP).
        rx_mcast_own_echo,
        /// Multicast datagrams delivered to the stack's own sockets as they
        /// were sent (IP_MULTICAST_LOOP).
        udp_mcast_looped,
        /// Malformed or bad-checksum IGMP.
        rx_drop_igmp,
        /// IGMP queries received (any version).
        igmp_rx_queries,
        /// IGMP reports and leaves of other hosts received.
        igmp_rx_reports,
        /// IGMP reports sent (joins, changes and their repeats, answers to queries).
        igmp_tx_reports,
        /// IGMP leaves sent (v2 leaves, and v3 reports that leave a group).
        igmp_tx_leaves,
    }
}

counter_set! {
    /// Per-socket counters.
    SocketCounters {
        rx_packets,
        rx_bytes,
        tx_packets,
        tx_bytes,
        /// Datagrams dropped because the receive buffer was full.
        rx_drop_rcvbuf,
        /// Datagrams dropped for lack of packet buffers.
        rx_drop_nobuf,
        /// Sends that failed for lack of buffers or a route.
        tx_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_and_list() {
        let c = SocketCounters::default();
        c.rx_packets.inc();
        c.rx_bytes.add(100);
        let v: Vec<_> = c.iter().collect();
        assert_eq!(v[0], ("rx_packets", 1));
        assert_eq!(v[1], ("rx_bytes", 100));
        c.reset();
        assert_eq!(c.rx_bytes.get(), 0);
    }
}

/// One-line descriptions of the stack-wide counters, for stackdump (the one
/// place they are written). Also covers the figures stackdump shows beside
/// [`StackCounters`] (`lock_contended`, `lock_recovered`, `proc_attaches`,
/// `proc_reaped`).
/// A counter missing here is shown with an empty description; the test
/// below lists the ones that lack one.
pub const STACK_COUNTER_DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "rx_frames",
        "frames received from the device or the loopback",
    ),
    ("rx_bytes", "bytes of frames received"),
    ("tx_frames", "frames handed to the device"),
    ("tx_bytes", "bytes of frames handed to the device"),
    ("rx_drop_eth", "dropped: runt frame or unknown ethertype"),
    (
        "rx_drop_not_our_mac",
        "dropped: frame for another MAC address",
    ),
    ("rx_drop_arp", "dropped: malformed ARP, or ARP not for us"),
    (
        "rx_drop_ip_hdr",
        "dropped: bad IPv4 header (version, lengths)",
    ),
    ("rx_drop_ip_csum", "dropped: bad IPv4 header checksum"),
    (
        "rx_drop_ip_frag",
        "dropped: IPv4 fragment (not reassembled)",
    ),
    (
        "rx_drop_not_our_ip",
        "dropped: IPv4 packet for another address",
    ),
    (
        "rx_drop_ip_proto",
        "dropped: IPv4 protocol the stack does not handle",
    ),
    ("rx_drop_icmp", "dropped: malformed or bad-checksum ICMP"),
    ("rx_drop_udp_hdr", "dropped: malformed UDP header"),
    ("rx_drop_udp_csum", "dropped: bad UDP checksum"),
    (
        "rx_udp_no_port",
        "UDP to a port with no socket (ICMP port unreachable sent)",
    ),
    (
        "rx_drop_udp_rcvbuf",
        "dropped: UDP socket receive buffer full",
    ),
    (
        "drop_no_buffers",
        "dropped: packet buffers or queue nodes ran out",
    ),
    (
        "tx_drop_arp",
        "dropped while waiting for ARP (queue full or unresolved)",
    ),
    ("tx_drop_no_route", "dropped: no route to the destination"),
    ("arp_requests_sent", "ARP requests sent"),
    ("arp_replies_sent", "ARP replies sent"),
    ("arp_replies_received", "ARP replies received"),
    (
        "icmp_echo_replies_sent",
        "ICMP echo replies sent (ping answered)",
    ),
    ("icmp_unreach_sent", "ICMP destination unreachable sent"),
    (
        "icmp_unreach_received",
        "ICMP destination unreachable received",
    ),
    ("udp_rx_datagrams", "UDP datagrams delivered to sockets"),
    ("udp_tx_datagrams", "UDP datagrams sent"),
    (
        "rx_drop_tcp",
        "dropped: malformed or bad-checksum TCP segment",
    ),
    ("tcp_rx_segments", "TCP segments received"),
    (
        "tcp_no_socket",
        "TCP segment for no connection or listener (RST sent)",
    ),
    ("tcp_rst_sent", "TCP resets sent"),
    ("tcp_rst_received", "TCP resets received"),
    (
        "tcp_listen_drops",
        "SYNs dropped: a listener's queues were full",
    ),
    ("tcp_challenge_acks", "challenge ACKs sent (RFC 5961)"),
    ("tcp_paws_drops", "segments dropped by PAWS (old timestamp)"),
    ("tcp_active_opens", "connections opened by connect"),
    ("tcp_passive_opens", "connections accepted by listeners"),
    ("tcp_retransmits", "TCP segments retransmitted"),
    (
        "tcp_fast_retransmits",
        "fast retransmits (duplicate ACKs or SACK)",
    ),
    ("tcp_ooo_segments", "out-of-order TCP segments received"),
    ("tcp_window_probes", "zero-window probes sent"),
    ("tcp_loss_probes", "tail loss probes sent (RFC 8985)"),
    ("tcp_syncookies_sent", "SYN cookies sent"),
    ("tcp_syncookies_ok", "SYN cookies validated"),
    ("rx_drop_igmp", "dropped: malformed or bad-checksum IGMP"),
    ("igmp_rx_queries", "IGMP membership queries received"),
    ("igmp_rx_reports", "IGMP membership reports received"),
    ("igmp_tx_reports", "IGMP membership reports sent"),
    ("igmp_tx_leaves", "IGMP leave messages sent"),
    (
        "rx_drop_mcast_group",
        "dropped: IPv4 multicast to a group no socket joined",
    ),
    (
        "rx_mcast_own_echo",
        "dropped: own multicast handed back by the device",
    ),
    (
        "udp_mcast_looped",
        "multicast datagrams delivered locally as sent (IP_MULTICAST_LOOP)",
    ),
    (
        "lock_contended",
        "times a thread found the stack lock taken",
    ),
    (
        "lock_recovered",
        "times the lock was taken over from a holder that died",
    ),
    (
        "proc_attaches",
        "processes that joined the stack (fork children too)",
    ),
    (
        "proc_reaped",
        "process-table entries of dead processes cleared",
    ),
];

/// One-line descriptions of the per-socket counters ([`SocketCounters`]).
pub const SOCKET_COUNTER_DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "rx_packets",
        "datagrams or segments delivered to the socket",
    ),
    ("rx_bytes", "payload bytes delivered to the socket"),
    ("tx_packets", "datagrams or segments sent"),
    ("tx_bytes", "payload bytes sent"),
    ("rx_drop_rcvbuf", "dropped: receive buffer full"),
    ("rx_drop_nobuf", "dropped: no packet buffers"),
    ("tx_errors", "sends that failed (no buffers or no route)"),
];

/// The description of stack counter `name` ("" if it has none).
pub fn describe(name: &str) -> &'static str {
    STACK_COUNTER_DESCRIPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, d)| d)
}

/// The description of per-socket counter `name` ("" if it has none).
pub fn describe_socket(name: &str) -> &'static str {
    SOCKET_COUNTER_DESCRIPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, d)| d)
}

#[cfg(test)]
mod description_tests {
    use super::*;

    /// Lists every counter without a description: add one to the tables above.
    #[test]
    fn every_counter_has_a_description() {
        let missing: Vec<&str> = StackCounters::default()
            .iter()
            .map(|(n, _)| n)
            .filter(|n| describe(n).is_empty())
            .chain(
                SocketCounters::default()
                    .iter()
                    .map(|(n, _)| n)
                    .filter(|n| describe_socket(n).is_empty()),
            )
            .collect();
        assert!(
            missing.is_empty(),
            "counters without a description in stack/src/counters.rs: {missing:?}"
        );
    }
}
