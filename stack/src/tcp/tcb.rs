//! The TCP control block: everything one connection knows, as plain data in
//! the arena's TCB table (same index as its socket slot).

use crate::pool::PktQueue;
use crate::tcp::cc::CcState;
use crate::tcp::rtt::RttEstimator;
use crate::tcp::sack::{RangeSet, SackScoreboard};
use crate::wire::seq::SeqNum;

/// RFC 9293 connection states (numbered as Linux's TCP_* for familiarity).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Closed = 0,
    Listen = 1,
    SynSent = 2,
    SynReceived = 3,
    Established = 4,
    FinWait1 = 5,
    FinWait2 = 6,
    CloseWait = 7,
    Closing = 8,
    LastAck = 9,
    TimeWait = 10,
}

impl TcpState {
    /// From the byte stored in the TCB.
    pub fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::Listen,
            2 => TcpState::SynSent,
            3 => TcpState::SynReceived,
            4 => TcpState::Established,
            5 => TcpState::FinWait1,
            6 => TcpState::FinWait2,
            7 => TcpState::CloseWait,
            8 => TcpState::Closing,
            9 => TcpState::LastAck,
            10 => TcpState::TimeWait,
            _ => TcpState::Closed,
        }
    }

    /// Name as `ss` prints it.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECV",
            TcpState::Established => "ESTAB",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
        }
    }

    /// Whether the connection has been synchronised (RFC 9293's "synchronized states").
    pub fn synchronized(self) -> bool {
        !matches!(
            self,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
        )
    }
}

/// TCB flags.
pub mod tflag {
    /// Timestamps negotiated.
    pub const TS: u32 = 1 << 0;
    /// SACK negotiated.
    pub const SACK: u32 = 1 << 1;
    /// Window scaling negotiated.
    pub const WSCALE: u32 = 1 << 2;
    /// TCP_NODELAY.
    pub const NODELAY: u32 = 1 << 3;
    /// TCP_CORK.
    pub const CORK: u32 = 1 << 4;
    /// SO_KEEPALIVE.
    pub const KEEPALIVE: u32 = 1 << 5;
    /// SO_LINGER with a zero timeout: close sends RST.
    pub const LINGER0: u32 = 1 << 6;
    /// The application closed or shut down writing: send FIN after the data.
    pub const FIN_PENDING: u32 = 1 << 7;
    /// Our FIN has been sent (it occupies sequence number `fin_seq`).
    pub const FIN_SENT: u32 = 1 << 8;
    /// The peer's FIN has been received.
    pub const FIN_RCVD: u32 = 1 << 9;
    /// The application no longer holds the socket (closed): free it when done.
    pub const ORPHAN: u32 = 1 << 10;
    /// An ACK is owed (delayed).
    pub const ACK_PENDING: u32 = 1 << 11;
    /// Send an ACK now.
    pub const ACK_NOW: u32 = 1 << 12;
    /// Shut down for reading.
    pub const RD_SHUT: u32 = 1 << 13;
    /// In fast recovery (NewReno or SACK).
    pub const RECOVERY: u32 = 1 << 14;
    /// The connection came from a listener and waits in its accept queue.
    pub const IN_ACCEPTQ: u32 = 1 << 15;
    /// Window probing is active (zero window).
    pub const PERSIST: u32 = 1 << 16;
    /// After an RTO: retransmitting everything from snd_una (go-back-N).
    pub const LOSS: u32 = 1 << 17;
    /// The RTO timer is armed as a tail loss probe timeout (RFC 8985 7).
    pub const TLP_ARMED: u32 = 1 << 18;
    /// A loss probe is out; no other until an ACK moves snd_una.
    pub const TLP_OUT: u32 = 1 << 19;
}

/// One connection (or listener).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tcb {
    pub state: u8,
    /// Our receive window scale (shift), and the peer's.
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    pub keepalive_probes_sent: u8,
    pub flags: u32,

    // Send sequence space.
    pub iss: SeqNum,
    pub snd_una: SeqNum,
    pub snd_nxt: SeqNum,
    /// Highest sequence sent plus one.
    pub snd_max: SeqNum,
    /// Peer's advertised window (already scaled).
    pub snd_wnd: u32,
    pub snd_wl1: SeqNum,
    pub snd_wl2: SeqNum,
    /// Largest window the peer ever offered (RFC 5961 ACK check).
    pub max_snd_wnd: u32,
    /// Sequence of our FIN (valid with FIN_SENT).
    pub fin_seq: SeqNum,
    /// Effective MSS for sending (peer's MSS, our MTU, minus options).
    pub mss: u32,
    /// MSS we advertised.
    pub our_mss: u32,

    /// Data written and not yet acknowledged: buffers of payload at HEADROOM.
    pub sndq: PktQueue,
    /// Bytes of the head buffer already acknowledged.
    pub sndq_head_off: u32,
    /// Bytes in sndq not yet acknowledged (snd_una .. end of data).
    pub snd_bytes: u32,
    pub sndbuf: u32,

    // Receive sequence space.
    pub irs: SeqNum,
    pub rcv_nxt: SeqNum,
    /// Right edge of the window we last advertised.
    pub rcv_adv: SeqNum,
    /// In-order data not yet read; payload bytes in rcvq.bytes.
    pub rcvq: PktQueue,
    /// Out-of-order segments, sorted by sequence.
    pub oooq: PktQueue,
    pub ooo_ranges: RangeSet<4>,
    /// The range holding the most recently received out-of-order segment (first SACK block).
    pub last_ooo: [u32; 2],
    pub rcvbuf: u32,
    /// Segments received since the last ACK we sent.
    pub segs_unacked: u32,
    /// Quick-ACK budget: ACK every segment at connection start.
    pub quickack: u32,

    // Timestamps (RFC 7323).
    pub ts_recent: u32,
    pub ts_offset: u32,
    pub ts_recent_age_ns: u64,

    // Round trip and congestion.
    pub rtt: RttEstimator,
    /// Karn timing without timestamps: the sequence being timed and when it was sent.
    pub rtt_seq: SeqNum,
    pub rtt_timing: u32,
    pub rtt_sent_ns: u64,
    pub cc: CcState,
    pub dupacks: u32,
    /// NewReno "recover" (RFC 6582) and SACK recovery point.
    pub recover: SeqNum,
    /// Highest retransmitted sequence (RFC 6675 HighRxt).
    pub high_rxt: SeqNum,
    pub scoreboard: SackScoreboard,
    /// Consecutive retransmission timeouts.
    pub rto_count: u32,

    // Keepalive and timeouts.
    pub keepidle_s: u32,
    pub keepintvl_s: u32,
    pub keepcnt: u32,
    pub user_timeout_ms: u32,
    pub last_rcv_ns: u64,
    pub last_snd_ns: u64,
    /// When data (not a bare ACK) was last sent (slow start after idle).
    pub last_data_snd_ns: u64,
    /// When the oldest unacknowledged data was first sent (user timeout).
    pub una_since_ns: u64,

    // Listener side.
    /// For a connection from a listener: the listener's socket index.
    pub listener: u32,
    /// Next connection in the listener's accept (or SYN) queue.
    pub acceptq_next: u32,
    /// Listener: accept queue of established children.
    pub acceptq_head: u32,
    pub acceptq_tail: u32,
    pub acceptq_len: u32,
    /// Listener: children still in SYN-RECEIVED.
    pub synq_len: u32,
    pub backlog: u32,

    // Counters for stackdump.
    pub retransmits: u32,
    pub dupacks_rcvd: u32,
    pub ooo_segs: u32,
    /// End of the last segment sent shorter than the MSS (Minshall's Nagle:
    /// another small segment waits only while this one is unacknowledged).
    pub snd_sml: SeqNum,
}

impl Tcb {
    /// A closed, empty control block.
    pub const CLOSED: Tcb = Tcb {
        state: TcpState::Closed as u8,
        rcv_wscale: 0,
        snd_wscale: 0,
        keepalive_probes_sent: 0,
        flags: 0,
        iss: SeqNum(0),
        snd_una: SeqNum(0),
        snd_nxt: SeqNum(0),
        snd_max: SeqNum(0),
        snd_wnd: 0,
        snd_wl1: SeqNum(0),
        snd_wl2: SeqNum(0),
        max_snd_wnd: 0,
        fin_seq: SeqNum(0),
        mss: 536,
        our_mss: 536,
        sndq: PktQueue::EMPTY,
        sndq_head_off: 0,
        snd_bytes: 0,
        sndbuf: 0,
        irs: SeqNum(0),
        rcv_nxt: SeqNum(0),
        rcv_adv: SeqNum(0),
        rcvq: PktQueue::EMPTY,
        oooq: PktQueue::EMPTY,
        ooo_ranges: RangeSet::EMPTY,
        last_ooo: [0; 2],
        rcvbuf: 0,
        segs_unacked: 0,
        quickack: 0,
        ts_recent: 0,
        ts_offset: 0,
        ts_recent_age_ns: 0,
        rtt: RttEstimator::INITIAL,
        rtt_seq: SeqNum(0),
        rtt_timing: 0,
        rtt_sent_ns: 0,
        cc: CcState::INITIAL,
        dupacks: 0,
        recover: SeqNum(0),
        high_rxt: SeqNum(0),
        scoreboard: SackScoreboard::EMPTY,
        rto_count: 0,
        keepidle_s: 7200,
        keepintvl_s: 75,
        keepcnt: 9,
        user_timeout_ms: 0,
        last_rcv_ns: 0,
        last_snd_ns: 0,
        last_data_snd_ns: 0,
        una_since_ns: 0,
        listener: u32::MAX,
        acceptq_next: u32::MAX,
        acceptq_head: u32::MAX,
        acceptq_tail: u32::MAX,
        acceptq_len: 0,
        synq_len: 0,
        backlog: 0,
        retransmits: 0,
        dupacks_rcvd: 0,
        ooo_segs: 0,
        snd_sml: SeqNum(0),
    };

    /// The state.
    pub fn state(&self) -> TcpState {
        TcpState::from_u8(self.state)
    }

    /// Whether a flag is set.
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Bytes sent and not yet acknowledged.
    pub fn flight_size(&self) -> u32 {
        (self.snd_max - self.snd_una) as u32
    }
}
