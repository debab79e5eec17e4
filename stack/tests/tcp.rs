//! TCP conformance, in the spirit of packetdrill: a scripted peer injects
//! segments, the test expects segments (fields checked), and a virtual clock
//! advances. The stack is 198.18.0.2, the scripted peer 198.18.0.1.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use rbypass_stack::clock::{MS, SEC};
use rbypass_stack::tcp::tcb::TcpState;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::wire::seq::SeqNum;
use rbypass_stack::wire::tcp::{flags as F, TcpOptions, TcpPacket, TcpRepr};
use rbypass_stack::{SockError, SocketId, Stack, StackConfig};

const PEER_PORT: u16 = 40000;
const PORT: u16 = 8080;
const PEER_ISN: u32 = 1_000_000;

/// A segment as the test sees it.
#[derive(Debug, Clone, Default)]
struct S {
    flags: u8,
    seq: u32,
    ack: u32,
    win: u16,
    mss: Option<u16>,
    ws: Option<u8>,
    sack_ok: bool,
    ts: Option<(u32, u32)>,
    sack: Vec<(u32, u32)>,
    data: Vec<u8>,
}

struct H {
    stack: Stack,
    now: u64,
}

impl H {
    fn new() -> H {
        H::with(StackConfig::default())
    }

    fn with(cfg: StackConfig) -> H {
        let stack = stack_with(StackConfig {
            max_bufs: 1024,
            max_sockets: 32,
            ..cfg
        });
        let h = H {
            stack,
            now: 1_000 * SEC,
        };
        {
            let mut c = h.stack.lock();
            c.poll(h.now);
            learn_peer(&mut c, h.now);
        }
        h
    }

    fn send(&mut self, s: S) {
        let mut opts = TcpOptions {
            mss: s.mss,
            window_scale: s.ws,
            sack_permitted: s.sack_ok,
            timestamp: s.ts,
            ..Default::default()
        };
        for (k, b) in s.sack.iter().enumerate().take(4) {
            opts.sack_blocks[k] = Some((SeqNum(b.0), SeqNum(b.1)));
        }
        let repr = TcpRepr {
            src_port: PEER_PORT,
            dst_port: PORT,
            seq: SeqNum(s.seq),
            ack: (s.flags & F::ACK != 0).then_some(SeqNum(s.ack)),
            flags: s.flags,
            window: s.win,
            options: opts,
            payload: &s.data,
        };
        let mut seg = vec![0u8; repr.header_len() + s.data.len()];
        let n = repr.emit(&mut seg, PEER_IP, OUR_IP).unwrap();
        seg.truncate(n);
        let frame = eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 6, &seg));
        let mut c = self.stack.lock();
        inject(&mut c, &frame, self.now);
    }

    /// Every segment the stack sent since the last call.
    fn out(&mut self) -> Vec<S> {
        let mut c = self.stack.lock();
        c.poll(self.now);
        drain_tx(&mut c)
            .into_iter()
            .filter(|f| f[12..14] == [8, 0] && f[23] == 6)
            .map(|f| {
                verify_ip_frame(&f);
                let hl = usize::from(f[14] & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                assert!(
                    total <= 1500,
                    "a {total}-byte IP packet exceeds the 1500 MTU"
                );
                let seg = &f[14 + hl..14 + total];
                let p = TcpPacket::new_checked(seg).unwrap();
                assert!(p.verify_checksum(OUR_IP, PEER_IP), "TCP checksum");
                let r = TcpRepr::parse(&p, OUR_IP, PEER_IP, true).unwrap();
                S {
                    flags: r.flags,
                    seq: r.seq.0,
                    ack: r.ack.map_or(0, |a| a.0),
                    win: r.window,
                    mss: r.options.mss,
                    ws: r.options.window_scale,
                    sack_ok: r.options.sack_permitted,
                    ts: r.options.timestamp,
                    sack: r
                        .options
                        .sack_blocks
                        .iter()
                        .flatten()
                        .map(|(a, b)| (a.0, b.0))
                        .collect(),
                    data: r.payload.to_vec(),
                }
            })
            .collect()
    }

    fn one(&mut self) -> S {
        let v = self.out();
        assert_eq!(v.len(), 1, "expected one segment, got {v:?}");
        v.into_iter().next().unwrap()
    }

    fn none(&mut self) {
        let v = self.out();
        assert!(v.is_empty(), "expected no segment, got {v:?}");
    }

    fn advance(&mut self, ns: u64) {
        self.now += ns;
        let mut c = self.stack.lock();
        c.poll(self.now);
    }

    fn listener(&mut self) -> SocketId {
        let mut c = self.stack.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        c.tcp_listen(l, 8).unwrap();
        l
    }

    /// Passive open with the given SYN options; returns (accepted socket, our ISN).
    fn passive(&mut self, ts: bool, sack: bool, ws: Option<u8>) -> (SocketId, u32) {
        let l = self.listener();
        self.send(S {
            flags: F::SYN,
            seq: PEER_ISN,
            win: 65535,
            mss: Some(1460),
            ws,
            sack_ok: sack,
            ts: ts.then_some((100, 0)),
            ..S::default()
        });
        let synack = self.one();
        assert_eq!(synack.flags, F::SYN | F::ACK);
        assert_eq!(synack.ack, PEER_ISN + 1);
        self.send(S {
            flags: F::ACK,
            seq: PEER_ISN + 1,
            ack: synack.seq + 1,
            win: 65535,
            ts: ts.then_some((101, synack.ts.map_or(0, |t| t.0))),
            ..S::default()
        });
        self.none();
        let (s, from) = self.stack.lock().tcp_accept(l).unwrap();
        assert_eq!(from, SocketAddrV4::new(PEER_IP, PEER_PORT));
        (s, synack.seq + 1)
    }

    fn state(&self, s: SocketId) -> TcpState {
        self.stack.lock().tcp_state(s).unwrap()
    }

    fn write(&mut self, s: SocketId, data: &[u8]) -> usize {
        let now = self.now;
        self.stack.lock().tcp_send(s, data, now).unwrap()
    }

    fn read(&mut self, s: SocketId) -> Vec<u8> {
        let now = self.now;
        let mut buf = vec![0u8; 1 << 20];
        match self.stack.lock().tcp_recv(s, &mut buf, false, now) {
            Ok(n) => buf[..n].to_vec(),
            Err(SockError::WouldBlock) => Vec::new(),
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn passive_open_negotiates_options() {
    let mut h = H::new();
    let l = h.listener();
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN,
        win: 29200,
        mss: Some(1400),
        ws: Some(7),
        sack_ok: true,
        ts: Some((4242, 0)),
        ..S::default()
    });
    let sa = h.one();
    assert_eq!(sa.flags, F::SYN | F::ACK);
    assert_eq!(sa.ack, PEER_ISN + 1);
    assert_eq!(sa.mss, Some(1460), "our MSS from the MTU");
    assert_eq!(sa.ws, Some(7));
    assert!(sa.sack_ok);
    assert_eq!(sa.ts.unwrap().1, 4242, "echoes the peer's TSval");
    assert_eq!(
        h.stack.lock().tcp_accept(l),
        Err(SockError::WouldBlock),
        "not before the handshake completes"
    );
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: sa.seq + 1,
        win: 229,
        ts: Some((4243, sa.ts.unwrap().0)),
        ..S::default()
    });
    let (s, _) = h.stack.lock().tcp_accept(l).unwrap();
    assert_eq!(h.state(s), TcpState::Established);
    let info = h.stack.lock().tcp_info(s).unwrap();
    assert_eq!(info.mss, 1400 - 12, "peer MSS less the timestamp option");
    assert_eq!(info.snd_wnd, 229 << 7, "peer window scaled");
}

#[test]
fn passive_open_without_options() {
    let mut h = H::new();
    let l = h.listener();
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN,
        win: 8192,
        ..S::default()
    });
    let sa = h.one();
    assert_eq!(sa.ws, None, "no window scale unless offered");
    assert!(!sa.sack_ok);
    assert_eq!(sa.ts, None);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: sa.seq + 1,
        win: 8192,
        ..S::default()
    });
    let (s, _) = h.stack.lock().tcp_accept(l).unwrap();
    assert_eq!(
        h.stack.lock().tcp_info(s).unwrap().mss,
        536,
        "RFC 9293 default MSS"
    );
}

#[test]
fn active_open_and_syn_retransmission() {
    let mut h = H::new();
    let now = h.now;
    let s = {
        let mut c = h.stack.lock();
        let s = c.tcp_open().unwrap();
        c.tcp_connect(s, SocketAddrV4::new(PEER_IP, PEER_PORT), now)
            .unwrap();
        s
    };
    let syn = h.one();
    assert_eq!(syn.flags, F::SYN);
    assert_eq!(syn.mss, Some(1460));
    assert!(syn.sack_ok && syn.ws == Some(7) && syn.ts.is_some());
    assert_eq!(h.state(s), TcpState::SynSent);
    h.advance(SEC - MS);
    h.none();
    h.advance(MS);
    let again = h.one();
    assert_eq!(
        (again.flags, again.seq),
        (F::SYN, syn.seq),
        "SYN retransmitted after 1 s"
    );
    h.advance(2 * SEC);
    assert_eq!(h.one().seq, syn.seq, "then after 2 s more (backoff)");
    // SYN-ACK completes it.
    let local_port = h.stack.lock().tcp_info(s).unwrap().local.port();
    let _ = local_port;
    // The scripted peer sends from PEER_PORT to our ephemeral port: rebuild by hand.
    let info = h.stack.lock().tcp_info(s).unwrap();
    let repr = TcpRepr {
        src_port: PEER_PORT,
        dst_port: info.local.port(),
        seq: SeqNum(PEER_ISN),
        ack: Some(SeqNum(syn.seq + 1)),
        flags: F::SYN | F::ACK,
        window: 65535,
        options: TcpOptions {
            mss: Some(1460),
            ..Default::default()
        },
        payload: &[],
    };
    let mut seg = vec![0u8; repr.header_len()];
    repr.emit(&mut seg, PEER_IP, OUR_IP).unwrap();
    inject(
        &mut h.stack.lock(),
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 6, &seg)),
        h.now,
    );
    let ack = h.one();
    assert_eq!(ack.flags, F::ACK);
    assert_eq!(ack.ack, PEER_ISN + 1);
    assert_eq!(ack.ts, None, "no timestamps: the peer did not echo them");
    assert_eq!(h.state(s), TcpState::Established);
}

#[test]
fn connect_refused_by_rst() {
    let mut h = H::new();
    let now = h.now;
    let s = {
        let mut c = h.stack.lock();
        let s = c.tcp_open().unwrap();
        c.tcp_connect(s, SocketAddrV4::new(PEER_IP, PEER_PORT), now)
            .unwrap();
        s
    };
    let syn = h.one();
    let info = h.stack.lock().tcp_info(s).unwrap();
    let repr = TcpRepr {
        src_port: PEER_PORT,
        dst_port: info.local.port(),
        seq: SeqNum(0),
        ack: Some(SeqNum(syn.seq + 1)),
        flags: F::RST | F::ACK,
        window: 0,
        options: TcpOptions::default(),
        payload: &[],
    };
    let mut seg = vec![0u8; repr.header_len()];
    repr.emit(&mut seg, PEER_IP, OUR_IP).unwrap();
    inject(
        &mut h.stack.lock(),
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 6, &seg)),
        h.now,
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        h.stack.lock().tcp_recv(s, &mut buf, false, now),
        Err(SockError::ConnRefused)
    );
    assert_eq!(h.state(s), TcpState::Closed);
}

#[test]
fn rst_for_closed_port_and_stray_ack() {
    let mut h = H::new();
    h.send(S {
        flags: F::SYN,
        seq: 5,
        win: 1000,
        ..S::default()
    });
    let r = h.one();
    assert_eq!(r.flags, F::RST | F::ACK);
    assert_eq!((r.seq, r.ack), (0, 6));
    h.send(S {
        flags: F::ACK,
        seq: 5,
        ack: 777,
        win: 1000,
        ..S::default()
    });
    let r = h.one();
    assert_eq!((r.flags, r.seq), (F::RST, 777));
    h.send(S {
        flags: F::RST,
        seq: 5,
        ..S::default()
    });
    h.none();
}

#[test]
fn in_order_data_is_received_and_acked() {
    let mut h = H::new();
    let (s, _iss) = h.passive(false, false, Some(7));
    let mut seq = PEER_ISN + 1;
    for k in 0..3u8 {
        let d = vec![k; 1000];
        h.send(S {
            flags: F::ACK | F::PSH,
            seq,
            ack: _iss,
            win: 1000,
            data: d,
            ..S::default()
        });
        seq += 1000;
        let a = h.one();
        assert_eq!(a.ack, seq, "quick ACK of every segment at the start");
    }
    let got = h.read(s);
    assert_eq!(got.len(), 3000);
    assert!(got[..1000].iter().all(|&b| b == 0) && got[2000..].iter().all(|&b| b == 2));
    assert!(h.read(s).is_empty());
}

#[test]
fn delayed_ack_after_quickack_budget() {
    let mut h = H::new();
    let (_s, iss) = h.passive(false, false, None);
    let mut seq = PEER_ISN + 1;
    for _ in 0..16 {
        h.send(S {
            flags: F::ACK,
            seq,
            ack: iss,
            win: 1000,
            data: vec![1; 100],
            ..S::default()
        });
        seq += 100;
        h.one();
    }
    // Quick-ACK budget spent: one small segment waits for the delayed-ACK timer...
    h.send(S {
        flags: F::ACK,
        seq,
        ack: iss,
        win: 1000,
        data: vec![1; 100],
        ..S::default()
    });
    seq += 100;
    h.none();
    h.advance(39 * MS);
    h.none();
    h.advance(MS);
    assert_eq!(h.one().ack, seq, "ACK after 40 ms");
    // ...and two segments are ACKed at once.
    h.send(S {
        flags: F::ACK,
        seq,
        ack: iss,
        win: 1000,
        data: vec![1; 100],
        ..S::default()
    });
    seq += 100;
    h.none();
    h.send(S {
        flags: F::ACK,
        seq,
        ack: iss,
        win: 1000,
        data: vec![1; 100],
        ..S::default()
    });
    seq += 100;
    assert_eq!(h.one().ack, seq, "every second segment");
}

#[test]
fn out_of_order_data_gets_sack_and_is_reassembled() {
    let mut h = H::new();
    let (s, iss) = h.passive(true, true, Some(7));
    let base = PEER_ISN + 1;
    h.send(S {
        flags: F::ACK,
        seq: base + 1000,
        ack: iss,
        win: 1000,
        ts: Some((200, 0)),
        data: vec![2; 1000],
        ..S::default()
    });
    let a = h.one();
    assert_eq!(a.ack, base, "duplicate ACK for the hole");
    assert_eq!(a.sack, vec![(base + 1000, base + 2000)]);
    h.send(S {
        flags: F::ACK,
        seq: base + 3000,
        ack: iss,
        win: 1000,
        ts: Some((201, 0)),
        data: vec![4; 1000],
        ..S::default()
    });
    let a = h.one();
    assert_eq!(
        a.sack[0],
        (base + 3000, base + 4000),
        "most recent block first"
    );
    assert_eq!(a.sack.len(), 2);
    h.send(S {
        flags: F::ACK,
        seq: base,
        ack: iss,
        win: 1000,
        ts: Some((202, 0)),
        data: vec![1; 1000],
        ..S::default()
    });
    let a = h.one();
    assert_eq!(a.ack, base + 2000);
    assert_eq!(a.sack, vec![(base + 3000, base + 4000)]);
    h.send(S {
        flags: F::ACK,
        seq: base + 2000,
        ack: iss,
        win: 1000,
        ts: Some((203, 0)),
        data: vec![3; 1000],
        ..S::default()
    });
    let a = h.one();
    assert_eq!(a.ack, base + 4000);
    assert!(a.sack.is_empty());
    let got = h.read(s);
    assert_eq!(got.len(), 4000);
    for k in 0..4 {
        assert!(
            got[k * 1000..(k + 1) * 1000]
                .iter()
                .all(|&b| b == k as u8 + 1),
            "block {k}"
        );
    }
}

/// Full data segments sent while out-of-order data is queued carry SACK
/// blocks beside timestamps; their payload shrinks so the packet still
/// fits the MTU (`out` checks every packet against it).
#[test]
fn segments_with_sack_blocks_fit_the_mtu() {
    let mut h = H::new();
    let (s, iss) = h.passive(true, true, Some(7));
    let base = PEER_ISN + 1;
    for k in 0..3u32 {
        h.send(S {
            flags: F::ACK,
            seq: base + 1000 + 2000 * k,
            ack: iss,
            win: 65535,
            ts: Some((200 + k, 0)),
            data: vec![7; 1000],
            ..S::default()
        });
        let a = h.one();
        assert_eq!(a.sack.len(), k as usize + 1);
    }
    assert_eq!(h.write(s, &[5u8; 8000]), 8000);
    let segs = h.out();
    assert!(segs.len() >= 6, "{} segments", segs.len());
    let mut sent = 0;
    for d in &segs {
        assert_eq!(d.sack.len(), 3, "SACK blocks ride on data");
        // 1448 of data beside timestamps, less the 28 bytes of 3 blocks.
        assert!(d.data.len() <= 1420, "{} bytes of data", d.data.len());
        sent += d.data.len();
    }
    assert_eq!(sent, 8000);
}

fn acked_setup(h: &mut H, mss_data: usize, n: usize) -> (SocketId, u32) {
    let (s, iss) = h.passive(false, false, Some(7));
    // One round trip for an RTT sample.
    h.write(s, &vec![9u8; mss_data]);
    let d = h.one();
    assert_eq!(d.data.len(), mss_data);
    h.advance(10 * MS);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + mss_data as u32,
        win: 65535,
        ..S::default()
    });
    let _ = n;
    (s, iss + mss_data as u32)
}

#[test]
fn retransmission_timeout_with_backoff() {
    let mut h = H::new();
    let (s, una) = acked_setup(&mut h, 100, 1);
    h.write(s, b"hello");
    let d = h.one();
    assert_eq!((d.seq, d.data.as_slice()), (una, &b"hello"[..]));
    let rto = h.stack.lock().tcp_info(s).unwrap().rto_us * 1000;
    assert!(
        (200 * MS..=260 * MS).contains(&rto),
        "RTO from one 10 ms sample is the 200 ms floor: {rto}"
    );
    h.advance(rto - MS);
    h.none();
    h.advance(MS);
    let r = h.one();
    assert_eq!(
        (r.seq, r.data.as_slice()),
        (una, &b"hello"[..]),
        "retransmitted"
    );
    h.advance(2 * rto - MS);
    h.none();
    h.advance(MS);
    assert_eq!(h.one().seq, una, "backed off to twice the RTO");
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una + 5,
        win: 65535,
        ..S::default()
    });
    h.advance(10 * SEC);
    h.none();
    assert!(h.stack.lock().tcp_info(s).unwrap().retransmits >= 2);
}

#[test]
fn nagle_holds_small_segments_unless_nodelay() {
    let mut h = H::new();
    let (s, una) = acked_setup(&mut h, 10, 1);
    h.write(s, b"a");
    assert_eq!(h.one().data, b"a");
    h.write(s, b"b");
    h.write(s, b"c");
    h.none();
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una + 1,
        win: 65535,
        ..S::default()
    });
    let d = h.one();
    assert_eq!(d.data, b"bc", "coalesced while waiting for the ACK");
    {
        let now = h.now;
        h.stack.lock().tcp_set_nodelay(s, true, now).unwrap();
    }
    h.write(s, b"d");
    assert_eq!(h.one().data, b"d", "NODELAY sends at once");
    h.write(s, b"e");
    assert_eq!(h.one().data, b"e");
}

#[test]
fn nagle_sends_the_tail_after_full_segments_at_once() {
    // Minshall's refinement, as Linux: full segments in flight do not hold
    // back the small tail of a write (a request of 2.5 MSS is not stalled
    // behind the peer's delayed ACK); a second small segment still waits.
    let mut h = H::new();
    let (s, _una) = acked_setup(&mut h, 100, 1);
    let mss = h.stack.lock().tcp_info(s).unwrap().mss as usize;
    h.write(s, &vec![1u8; 2 * mss + 80]);
    let segs = h.out();
    let lens: Vec<usize> = segs.iter().map(|x| x.data.len()).collect();
    assert_eq!(
        lens,
        vec![mss, mss, 80],
        "the tail leaves with the full segments"
    );
    h.write(s, b"x");
    h.none();
}

#[test]
fn fast_retransmit_on_three_dupacks() {
    let mut h = H::new();
    let (s, una) = acked_setup(&mut h, 100, 1);
    let mss = h.stack.lock().tcp_info(s).unwrap().mss as usize;
    let data = vec![7u8; 6 * mss];
    h.write(s, &data);
    let segs = h.out();
    assert!(
        segs.len() >= 5,
        "initial window allows 5 segments: {}",
        segs.len()
    );
    let mss = mss as u32;
    assert_eq!(segs[0].data.len() as u32, mss);
    for _ in 0..2 {
        h.send(S {
            flags: F::ACK,
            seq: PEER_ISN + 1,
            ack: una,
            win: 65535,
            ..S::default()
        });
        h.none();
    }
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una,
        win: 65535,
        ..S::default()
    });
    let r = h.out();
    assert!(
        !r.is_empty() && r[0].seq == una && r[0].data.len() as u32 == mss,
        "fast retransmit of the first segment: {r:?}"
    );
    let _ = s;
}

/// RFC 6675: with SACK, an ACK that SACKs new data counts as a duplicate
/// even when its window grew (the peer read meanwhile) or it carries data
/// (the peer is sending too): the first segment is retransmitted after three.
#[test]
fn sack_dupacks_count_with_a_changing_window_and_data() {
    let mut h = H::new();
    let (s, iss) = h.passive(true, true, Some(7));
    h.write(s, &vec![5u8; 10 * 1000]);
    let segs = h.out();
    let mss = segs[0].data.len() as u32;
    let seg = |k: u32| iss + k * mss;
    let base = PEER_ISN + 1;
    for k in 1..=3u32 {
        // A growing window, and from the second on, data of the peer's own.
        let data = if k > 1 {
            vec![k as u8; 100]
        } else {
            Vec::new()
        };
        let seq = base + if k > 2 { 100 } else { 0 };
        h.send(S {
            flags: F::ACK,
            seq,
            ack: iss,
            win: 1000 + k as u16 * 100,
            ts: Some((300 + k, 0)),
            sack: vec![(seg(1), seg(k + 1))],
            data,
            ..S::default()
        });
    }
    let r = h.out();
    assert!(
        r.iter()
            .any(|x| x.seq == seg(0) && x.data.len() as u32 == mss),
        "fast retransmit of the first segment: {r:?}"
    );
}

/// RFC 8985 7: with SACK and a round-trip sample, the last segment sent is
/// resent after two round trips without an ACK, long before the RTO; an
/// ACK then ends it (no timeout retransmission follows).
#[test]
fn tail_loss_probe_resends_the_last_segment() {
    let mut h = H::new();
    let (s, iss) = h.passive(true, true, Some(7));
    h.write(s, b"x");
    let d = h.one();
    assert_eq!(d.data, b"x");
    h.advance(10 * MS);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 1,
        win: 65535,
        ts: Some((300, d.ts.unwrap().0)),
        ..S::default()
    });
    h.none();
    h.write(s, &vec![6u8; 3000]);
    let segs = h.out();
    assert!(segs.len() >= 2, "{segs:?}");
    let last = segs.last().unwrap().clone();
    h.advance(15 * MS);
    h.none();
    h.advance(10 * MS);
    let probe = h.one();
    // The last full segment's worth of data, ending where sending ended.
    let end = last.seq + last.data.len() as u32;
    assert_eq!(probe.seq + probe.data.len() as u32, end, "ends at snd_max");
    assert_eq!(probe.data.len(), segs[0].data.len(), "one full segment");
    assert_eq!(h.stack.lock().header().counters.tcp_loss_probes.get(), 1);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 3001,
        win: 65535,
        ts: Some((301, probe.ts.unwrap().0)),
        ..S::default()
    });
    h.advance(1000 * MS);
    h.none();
}

#[test]
fn sack_recovery_of_several_holes() {
    let mut h = H::new();
    let (s, iss) = h.passive(true, true, Some(7));
    let data = vec![5u8; 10 * 1000];
    h.write(s, &data);
    let segs = h.out();
    let mss = segs[0].data.len() as u32;
    let una = iss;
    assert_eq!(segs[0].seq, una);
    // Segments 0 and 2 are lost; the peer SACKs 1, and 3..
    let seg = |k: u32| una + k * mss;
    let tsv = |k: u32| Some((300 + k, 0u32));
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una,
        win: 65535,
        ts: tsv(0),
        sack: vec![(seg(1), seg(2))],
        ..S::default()
    });
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una,
        win: 65535,
        ts: tsv(1),
        sack: vec![(seg(3), seg(4)), (seg(1), seg(2))],
        ..S::default()
    });
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una,
        win: 65535,
        ts: tsv(2),
        sack: vec![(seg(3), seg(5)), (seg(1), seg(2))],
        ..S::default()
    });
    let r = h.out();
    let rtx: Vec<u32> = r
        .iter()
        .filter(|x| !x.data.is_empty())
        .map(|x| x.seq)
        .collect();
    assert!(rtx.contains(&seg(0)), "first hole retransmitted: {rtx:?}");
    // Cumulative ACK up to the second hole: the second hole is retransmitted next.
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: seg(2),
        win: 65535,
        ts: tsv(3),
        sack: vec![(seg(3), seg(5))],
        ..S::default()
    });
    let r = h.out();
    assert!(
        r.iter().any(|x| x.seq == seg(2) && !x.data.is_empty()),
        "second hole retransmitted: {r:?}"
    );
    assert!(
        !r.iter().any(|x| x.seq == seg(1) || x.seq == seg(3)),
        "SACKed data is not resent: {r:?}"
    );
}

#[test]
fn zero_window_probe() {
    let mut h = H::new();
    let (s, una) = acked_setup(&mut h, 10, 1);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una,
        win: 0,
        ..S::default()
    });
    h.write(s, b"blocked");
    h.none();
    let rto = h.stack.lock().tcp_info(s).unwrap().rto_us * 1000;
    h.advance(rto);
    let p = h.one();
    assert_eq!((p.seq, p.data.len()), (una, 1), "one-byte window probe");
    // The window opens: the rest follows.
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una + 1,
        win: 1000,
        ..S::default()
    });
    let d = h.one();
    assert_eq!(d.data, b"locked");
}

#[test]
fn large_window_with_scaling() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, Some(7));
    // Window of 65535 << 7 (8 MB): cwnd, not the window, limits sending.
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss,
        win: 65535,
        ..S::default()
    });
    let data = vec![1u8; 200_000];
    h.write(s, &data);
    let n: usize = h.out().iter().map(|x| x.data.len()).sum();
    assert!(
        (10 * 1400..200_000).contains(&n),
        "initial window of 10 segments: {n}"
    );
    assert_eq!(h.stack.lock().tcp_info(s).unwrap().snd_wnd, 65535 << 7);
}

#[test]
fn active_close_through_time_wait() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    let now = h.now;
    h.stack.lock().tcp_close(s, now).unwrap();
    let fin = h.one();
    assert_eq!(fin.flags, F::FIN | F::ACK);
    assert_eq!(fin.seq, iss);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 1,
        win: 1000,
        ..S::default()
    });
    h.none();
    h.send(S {
        flags: F::FIN | F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 1,
        win: 1000,
        ..S::default()
    });
    let a = h.one();
    assert_eq!((a.flags, a.ack), (F::ACK, PEER_ISN + 2));
    assert_eq!(
        h.stack.lock().sockets_in_use(),
        2,
        "TIME_WAIT keeps the slot (and the listener)"
    );
    // A retransmitted FIN in TIME_WAIT is ACKed again.
    h.send(S {
        flags: F::FIN | F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 1,
        win: 1000,
        ..S::default()
    });
    assert_eq!(h.one().ack, PEER_ISN + 2);
    h.advance(61 * SEC);
    assert_eq!(
        h.stack.lock().sockets_in_use(),
        1,
        "only the listener remains"
    );
}

#[test]
fn passive_close_and_last_ack() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    h.send(S {
        flags: F::FIN | F::ACK,
        seq: PEER_ISN + 1,
        ack: iss,
        win: 1000,
        ..S::default()
    });
    assert_eq!(h.one().ack, PEER_ISN + 2);
    assert_eq!(h.state(s), TcpState::CloseWait);
    assert!(h.read(s).is_empty());
    let mut buf = [0u8; 4];
    let now = h.now;
    assert_eq!(
        h.stack.lock().tcp_recv(s, &mut buf, false, now),
        Ok(0),
        "EOF"
    );
    h.write(s, b"bye");
    assert_eq!(h.one().data, b"bye", "half-close: we can still send");
    h.stack.lock().tcp_close(s, now).unwrap();
    let fin = h.one();
    assert_eq!(fin.flags & F::FIN, F::FIN);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 2,
        ack: fin.seq + 1,
        win: 1000,
        ..S::default()
    });
    h.none();
    assert_eq!(h.stack.lock().sockets_in_use(), 1, "freed after LAST_ACK");
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    let now = h.now;
    h.stack
        .lock()
        .tcp_shutdown(s, rbypass_stack::tcp::conn::Shutdown::Write, now)
        .unwrap();
    let fin = h.one();
    assert_eq!(fin.flags, F::FIN | F::ACK);
    h.send(S {
        flags: F::FIN | F::ACK,
        seq: PEER_ISN + 1,
        ack: iss,
        win: 1000,
        ..S::default()
    });
    h.one();
    assert_eq!(h.state(s), TcpState::Closing);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 2,
        ack: iss + 1,
        win: 1000,
        ..S::default()
    });
    assert_eq!(h.state(s), TcpState::TimeWait);
}

#[test]
fn close_with_unread_data_or_linger0_resets() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss,
        win: 1000,
        data: b"unread".to_vec(),
        ..S::default()
    });
    h.one();
    let now = h.now;
    let free_before = h.stack.lock().free_buffers();
    h.stack.lock().tcp_close(s, now).unwrap();
    let r = h.one();
    assert_eq!(r.flags & F::RST, F::RST);
    let c = h.stack.lock();
    assert!(
        c.tcp_info(s).is_err(),
        "the reset connection is freed, not kept CLOSED with its unread data"
    );
    assert!(
        c.free_buffers() > free_before,
        "its unread data went back to the pool"
    );
}

#[test]
fn rst_in_window_but_not_exact_gets_challenge_ack() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    h.send(S {
        flags: F::RST,
        seq: PEER_ISN + 100,
        ..S::default()
    });
    let c = h.one();
    assert_eq!(
        (c.flags, c.seq, c.ack),
        (F::ACK, iss, PEER_ISN + 1),
        "challenge ACK"
    );
    assert_eq!(h.state(s), TcpState::Established);
    // Out of window: silently dropped? No: unacceptable segments get an ACK unless RST.
    h.send(S {
        flags: F::RST,
        seq: PEER_ISN + 10_000_000,
        ..S::default()
    });
    h.none();
    // Exact: reset.
    h.send(S {
        flags: F::RST,
        seq: PEER_ISN + 1,
        ..S::default()
    });
    h.none();
    let mut buf = [0u8; 4];
    let now = h.now;
    assert_eq!(
        h.stack.lock().tcp_recv(s, &mut buf, false, now),
        Err(SockError::ConnReset)
    );
}

#[test]
fn syn_in_established_gets_challenge_ack() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN + 500,
        win: 1000,
        ..S::default()
    });
    let c = h.one();
    assert_eq!((c.flags, c.ack), (F::ACK, PEER_ISN + 1));
    let _ = iss;
    assert_eq!(h.state(s), TcpState::Established);
}

#[test]
fn ack_for_unsent_data_gets_ack_and_is_ignored() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 50_000,
        win: 1000,
        data: b"x".to_vec(),
        ..S::default()
    });
    let c = h.one();
    assert_eq!(c.ack, PEER_ISN + 1, "data of that segment not taken");
    assert!(h.read(s).is_empty());
}

#[test]
fn time_wait_reuse_by_new_syn() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    let now = h.now;
    h.stack.lock().tcp_close(s, now).unwrap();
    h.one();
    h.send(S {
        flags: F::FIN | F::ACK,
        seq: PEER_ISN + 1,
        ack: iss + 1,
        win: 1000,
        ..S::default()
    });
    h.one();
    // A new SYN with a higher sequence number reuses the tuple at once.
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN + 100_000,
        win: 1000,
        ..S::default()
    });
    let sa = h.one();
    assert_eq!(sa.flags, F::SYN | F::ACK);
    assert_eq!(sa.ack, PEER_ISN + 100_001);
}

#[test]
fn keepalive_probes_then_gives_up() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    let now = h.now;
    h.stack
        .lock()
        .tcp_set_keepalive(s, true, 10, 2, 3, now)
        .unwrap();
    h.advance(10 * SEC);
    let p = h.one();
    assert_eq!(
        (p.flags, p.seq, p.data.len()),
        (F::ACK, iss - 1, 0),
        "probe below snd_una"
    );
    // Answered: the connection lives on, next probe after another idle period.
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: iss,
        win: 1000,
        ..S::default()
    });
    h.advance(2 * SEC);
    h.none();
    h.advance(8 * SEC);
    h.one();
    h.advance(2 * SEC);
    h.one();
    h.advance(2 * SEC);
    h.one();
    h.advance(2 * SEC);
    let r = h.one();
    assert_eq!(r.flags & F::RST, F::RST, "reset after 3 unanswered probes");
    let mut buf = [0u8; 1];
    let now = h.now;
    assert_eq!(
        h.stack.lock().tcp_recv(s, &mut buf, false, now),
        Err(SockError::TimedOut)
    );
}

#[test]
fn full_backlog_drops_syn() {
    let mut h = H::new();
    let l = {
        let mut c = h.stack.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        c.tcp_listen(l, 1).unwrap();
        l
    };
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN,
        win: 1000,
        ..S::default()
    });
    let sa = h.one();
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: sa.seq + 1,
        win: 1000,
        ..S::default()
    });
    assert_eq!(h.stack.lock().tcp_accept_pending(l).unwrap(), 1);
    // A second client while the accept queue is full: its SYN is dropped.
    let repr = TcpRepr {
        src_port: PEER_PORT + 1,
        dst_port: PORT,
        seq: SeqNum(7),
        ack: None,
        flags: F::SYN,
        window: 1000,
        options: TcpOptions::default(),
        payload: &[],
    };
    let mut seg = vec![0u8; repr.header_len()];
    repr.emit(&mut seg, PEER_IP, OUR_IP).unwrap();
    inject(
        &mut h.stack.lock(),
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 6, &seg)),
        h.now,
    );
    h.none();
    assert_eq!(h.stack.lock().header().counters.tcp_listen_drops.get(), 1);
}

#[test]
fn loopback_connection_transfers_bytes_exactly() {
    // Both ends in one stack over the loop ring: a client and a server.
    let st = stack_with(StackConfig {
        max_bufs: 4096,
        max_sockets: 16,
        ..StackConfig::default()
    });
    let mut now = 5 * SEC;
    let (l, cl) = {
        let mut c = st.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(OUR_IP, 9000)).unwrap();
        c.tcp_listen(l, 4).unwrap();
        let cl = c.tcp_open().unwrap();
        c.tcp_connect(cl, SocketAddrV4::new(OUR_IP, 9000), now)
            .unwrap();
        (l, cl)
    };
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut srv = None;
    let mut buf = vec![0u8; 65536];
    for _ in 0..200_000 {
        now += 20_000;
        let mut c = st.lock();
        c.poll(now);
        if srv.is_none() {
            srv = c.tcp_accept(l).ok().map(|x| x.0);
        }
        if sent < data.len() {
            if let Ok(n) = c.tcp_send(cl, &data[sent..(sent + 100_000).min(data.len())], now) {
                sent += n;
            }
        } else if sent == data.len() {
            c.tcp_close(cl, now).unwrap();
            sent += 1;
        }
        if let Some(s) = srv {
            loop {
                match c.tcp_recv(s, &mut buf, false, now) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(SockError::WouldBlock) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if got.len() == data.len() && c.tcp_state(s).unwrap() == TcpState::CloseWait {
                break;
            }
        }
        // Nothing leaves for the NIC: it is all loopback.
        assert!(!c.has_tx());
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "byte-exact");
    st.lock().check_consistency().unwrap();
}

fn syn_from(h: &mut H, port: u16, seq: u32, mss: u16) {
    let repr = TcpRepr {
        src_port: port,
        dst_port: PORT,
        seq: SeqNum(seq),
        ack: None,
        flags: F::SYN,
        window: 1000,
        options: TcpOptions {
            mss: Some(mss),
            window_scale: Some(7),
            sack_permitted: true,
            ..Default::default()
        },
        payload: &[],
    };
    let mut seg = vec![0u8; repr.header_len()];
    repr.emit(&mut seg, PEER_IP, OUR_IP).unwrap();
    inject(
        &mut h.stack.lock(),
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 6, &seg)),
        h.now,
    );
}

fn ack_from(h: &mut H, port: u16, seq: u32, ack: u32, data: &[u8]) {
    let repr = TcpRepr {
        src_port: port,
        dst_port: PORT,
        seq: SeqNum(seq),
        ack: Some(SeqNum(ack)),
        flags: F::ACK,
        window: 1000,
        options: TcpOptions::default(),
        payload: data,
    };
    let mut seg = vec![0u8; repr.header_len() + data.len()];
    repr.emit(&mut seg, PEER_IP, OUR_IP).unwrap();
    inject(
        &mut h.stack.lock(),
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 6, &seg)),
        h.now,
    );
}

#[test]
fn syn_cookies_when_the_syn_queue_overflows() {
    let mut h = H::new();
    let l = {
        let mut c = h.stack.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .unwrap();
        c.tcp_listen(l, 2).unwrap();
        l
    };
    // Two half-open connections fill the SYN queue.
    syn_from(&mut h, 50001, 100, 1460);
    syn_from(&mut h, 50002, 200, 1460);
    assert_eq!(h.out().len(), 2);
    // The third SYN gets a cookie: a SYN-ACK with only an MSS option, no state kept.
    syn_from(&mut h, 50003, 300, 1460);
    let sa = h.one();
    assert_eq!(sa.flags, F::SYN | F::ACK);
    assert_eq!(
        (sa.mss, sa.ws, sa.sack_ok, sa.ts),
        (Some(1460), None, false, None)
    );
    assert_eq!(
        h.stack.lock().sockets_in_use(),
        3,
        "listener and two half-open; none for the cookie"
    );
    // A forged ACK is refused with a reset.
    ack_from(&mut h, 50003, 301, sa.seq.wrapping_add(2), b"");
    assert_eq!(h.one().flags, F::RST);
    // The right ACK rebuilds the connection.
    ack_from(&mut h, 50003, 301, sa.seq.wrapping_add(1), b"");
    let (s, from) = h.stack.lock().tcp_accept(l).unwrap();
    assert_eq!(from.port(), 50003);
    assert_eq!(h.state(s), TcpState::Established);
    assert_eq!(h.stack.lock().tcp_info(s).unwrap().mss, 1460);
    assert_eq!(h.stack.lock().header().counters.tcp_syncookies_ok.get(), 1);
    // It carries data like any other connection.
    ack_from(&mut h, 50003, 301, sa.seq.wrapping_add(1), b"cookie data");
    assert_eq!(h.read(s), b"cookie data");
    assert_eq!(h.one().ack, 301 + 11, "and ACKs it");
    // An ACK for a cookie two slots old is refused.
    syn_from(&mut h, 50004, 400, 1300);
    let sa2 = h.one();
    assert_eq!(sa2.mss, Some(1300));
    h.advance(200 * SEC);
    // The peer's ARP entry expired meanwhile: the peer announces itself again.
    {
        let f = eth(
            EthernetAddress::BROADCAST,
            PEER_MAC,
            0x0806,
            &arp(1, PEER_MAC, PEER_IP, EthernetAddress([0; 6]), OUR_IP),
        );
        let mut c = h.stack.lock();
        inject(&mut c, &f, h.now);
        drain_tx(&mut c);
    }
    ack_from(&mut h, 50004, 401, sa2.seq.wrapping_add(1), b"");
    let v = h.out();
    assert!(
        v.iter().any(|x| x.flags == F::RST),
        "stale cookie refused: {v:?}"
    );
}

/// Moves an accepted connection into `st` by scripted steps; returns (socket, our next seq, peer next seq).
fn into_state(h: &mut H, st: TcpState) -> (SocketId, u32, u32) {
    let (s, iss) = h.passive(false, false, None);
    let now = h.now;
    let p = PEER_ISN + 1;
    match st {
        TcpState::Established => (s, iss, p),
        TcpState::FinWait1 => {
            h.stack
                .lock()
                .tcp_shutdown(s, rbypass_stack::tcp::conn::Shutdown::Write, now)
                .unwrap();
            h.one();
            (s, iss + 1, p)
        }
        TcpState::FinWait2 => {
            h.stack
                .lock()
                .tcp_shutdown(s, rbypass_stack::tcp::conn::Shutdown::Write, now)
                .unwrap();
            h.one();
            h.send(S {
                flags: F::ACK,
                seq: p,
                ack: iss + 1,
                win: 1000,
                ..S::default()
            });
            (s, iss + 1, p)
        }
        TcpState::CloseWait => {
            h.send(S {
                flags: F::FIN | F::ACK,
                seq: p,
                ack: iss,
                win: 1000,
                ..S::default()
            });
            h.one();
            (s, iss, p + 1)
        }
        TcpState::LastAck => {
            h.send(S {
                flags: F::FIN | F::ACK,
                seq: p,
                ack: iss,
                win: 1000,
                ..S::default()
            });
            h.one();
            h.stack
                .lock()
                .tcp_shutdown(s, rbypass_stack::tcp::conn::Shutdown::Write, now)
                .unwrap();
            h.one();
            (s, iss + 1, p + 1)
        }
        TcpState::Closing => {
            h.stack
                .lock()
                .tcp_shutdown(s, rbypass_stack::tcp::conn::Shutdown::Write, now)
                .unwrap();
            h.one();
            h.send(S {
                flags: F::FIN | F::ACK,
                seq: p,
                ack: iss,
                win: 1000,
                ..S::default()
            });
            h.one();
            (s, iss + 1, p + 1)
        }
        TcpState::TimeWait => {
            h.stack
                .lock()
                .tcp_shutdown(s, rbypass_stack::tcp::conn::Shutdown::Write, now)
                .unwrap();
            h.one();
            h.send(S {
                flags: F::FIN | F::ACK,
                seq: p,
                ack: iss + 1,
                win: 1000,
                ..S::default()
            });
            h.one();
            (s, iss + 1, p + 1)
        }
        other => panic!("not scripted: {other:?}"),
    }
}

#[test]
fn rst_in_each_synchronized_state() {
    use TcpState::*;
    for (st, err) in [
        (Established, Some(SockError::ConnReset)),
        (FinWait1, Some(SockError::ConnReset)),
        (FinWait2, Some(SockError::ConnReset)),
        (CloseWait, Some(SockError::BrokenPipe)),
        (Closing, None),
        (LastAck, None),
        (TimeWait, None),
    ] {
        let mut h = H::new();
        let (s, _, peer) = into_state(&mut h, st);
        assert_eq!(h.state(s), st, "scripted into {st:?}");
        h.send(S {
            flags: F::RST,
            seq: peer,
            ..S::default()
        });
        h.none();
        assert_eq!(h.state(s), Closed, "RST in {st:?} closes");
        let mut buf = [0u8; 4];
        let now = h.now;
        let r = h.stack.lock().tcp_recv(s, &mut buf, false, now);
        match err {
            Some(e) => assert_eq!(r, Err(e), "error reported after RST in {st:?}"),
            None => assert_eq!(r, Ok(0), "quiet end after RST in {st:?}"),
        }
    }
}

#[test]
fn rst_in_syn_received_frees_the_child_only() {
    let mut h = H::new();
    let l = h.listener();
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN,
        win: 1000,
        ..S::default()
    });
    let sa = h.one();
    assert_eq!(h.stack.lock().sockets_in_use(), 2);
    h.send(S {
        flags: F::RST,
        seq: PEER_ISN + 1,
        ..S::default()
    });
    h.none();
    assert_eq!(
        h.stack.lock().sockets_in_use(),
        1,
        "the half-open child is gone"
    );
    assert_eq!(h.stack.lock().tcp_accept(l), Err(SockError::WouldBlock));
    // The listener still works.
    h.send(S {
        flags: F::SYN,
        seq: PEER_ISN + 50,
        win: 1000,
        ..S::default()
    });
    assert_eq!(h.one().flags, F::SYN | F::ACK);
    let _ = sa;
}

#[test]
fn lost_ack_means_duplicate_data_acked_at_once_and_delivered_once() {
    let mut h = H::new();
    let (s, iss) = h.passive(false, false, None);
    let mut seq = PEER_ISN + 1;
    for _ in 0..20 {
        // Use up the quick-ACK budget so ACKs would normally be delayed.
        h.send(S {
            flags: F::ACK,
            seq,
            ack: iss,
            win: 1000,
            data: b"x".to_vec(),
            ..S::default()
        });
        seq += 1;
    }
    h.out();
    h.advance(100 * MS);
    h.out();
    assert_eq!(h.read(s).len(), 20);
    h.send(S {
        flags: F::ACK,
        seq,
        ack: iss,
        win: 1000,
        data: b"first".to_vec(),
        ..S::default()
    });
    // Our ACK is "lost": the test drops whatever was sent.
    h.out();
    h.advance(300 * MS);
    h.out();
    // The peer times out and retransmits: the duplicate is ACKed at once, not delayed.
    h.send(S {
        flags: F::ACK,
        seq,
        ack: iss,
        win: 1000,
        data: b"first".to_vec(),
        ..S::default()
    });
    let a = h.one();
    assert_eq!(a.ack, seq + 5);
    assert_eq!(h.read(s), b"first", "delivered once");
    assert!(h.read(s).is_empty());
}

#[test]
fn lost_data_is_retransmitted_until_acked_and_window_slides() {
    let mut h = H::new();
    let (s, una) = acked_setup(&mut h, 10, 1);
    let mss = h.stack.lock().tcp_info(s).unwrap().mss as usize;
    h.write(s, &vec![3u8; 3 * mss]);
    let segs = h.out();
    assert_eq!(segs.len(), 3);
    // Only the first two arrive; the peer ACKs them; the third is lost.
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una + 2 * mss as u32,
        win: 65535,
        ..S::default()
    });
    h.none();
    let rto = h.stack.lock().tcp_info(s).unwrap().rto_us * 1000;
    h.advance(rto);
    let r = h.one();
    assert_eq!(
        (r.seq, r.data.len()),
        (una + 2 * mss as u32, mss),
        "the lost segment, once"
    );
    h.send(S {
        flags: F::ACK,
        seq: PEER_ISN + 1,
        ack: una + 3 * mss as u32,
        win: 65535,
        ..S::default()
    });
    h.advance(10 * SEC);
    h.none();
    assert_eq!(h.stack.lock().tcp_tx_pending(s).unwrap(), 0);
}

/// Grows cwnd past `target` segments by acknowledging every segment in turn.
fn grow_cwnd(h: &mut H, s: SocketId, una: u32, target: u32) -> u32 {
    let mss = h.stack.lock().tcp_info(s).unwrap().mss;
    let mut una = una;
    for _ in 0..20 {
        if h.stack.lock().tcp_info(s).unwrap().cwnd >= target * mss {
            return una;
        }
        h.write(s, &vec![1u8; 40 * mss as usize]);
        loop {
            let segs = h.out();
            if segs.is_empty() {
                break;
            }
            h.advance(MS);
            for d in segs {
                una = d.seq + d.data.len() as u32;
                h.send(S {
                    flags: F::ACK,
                    seq: PEER_ISN + 1,
                    ack: una,
                    win: 65535,
                    ..S::default()
                });
            }
        }
    }
    panic!("cwnd did not grow");
}

#[test]
fn slow_start_after_idle_restarts_from_initial_window() {
    for (restart, expect_iw) in [(1u8, true), (0u8, false)] {
        let mut h = H::with(StackConfig {
            tcp_slow_start_after_idle: restart,
            ..StackConfig::default()
        });
        let (s, una) = acked_setup(&mut h, 1000, 1);
        grow_cwnd(&mut h, s, una, 30);
        let mss = h.stack.lock().tcp_info(s).unwrap().mss as usize;
        // Idle for well over the RTO, then a burst larger than the initial window.
        h.advance(2 * SEC);
        h.write(s, &vec![2u8; 30 * mss]);
        let burst = h.out().iter().filter(|d| !d.data.is_empty()).count();
        if expect_iw {
            assert_eq!(burst, 10, "restarted from the initial window");
        } else {
            assert!(burst >= 25, "kept the grown window: {burst} segments");
        }
    }
}

#[test]
fn congestion_control_is_configurable() {
    for (algo, name) in [(0u8, "reno"), (1u8, "cubic")] {
        let mut h = H::with(StackConfig {
            tcp_cc: algo,
            ..StackConfig::default()
        });
        let (s, _) = h.passive(false, false, None);
        assert_eq!(h.stack.lock().tcp_info(s).unwrap().cc, name);
    }
}

/// Polls a loop stack until `done` holds (bounded).
fn poll_until(st: &Stack, now: &mut u64, mut done: impl FnMut(&mut rbypass_stack::Core) -> bool) {
    for _ in 0..1000 {
        *now += MS;
        let mut c = st.lock();
        c.poll(*now);
        if done(&mut c) {
            return;
        }
    }
    panic!("condition not reached");
}

#[test]
fn port_sharing_follows_linux_bind_rules() {
    let st = stack_with(StackConfig {
        max_bufs: 512,
        max_sockets: 16,
        ..StackConfig::default()
    });
    let mut now = 5 * SEC;
    let srv = SocketAddrV4::new(OUR_IP, 9100);
    let (l, cl) = {
        let mut c = st.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, srv).unwrap();
        c.tcp_listen(l, 4).unwrap();
        let cl = c.tcp_open().unwrap();
        c.tcp_bind(cl, SocketAddrV4::new(OUR_IP, 9101)).unwrap();
        c.tcp_connect(cl, srv, now).unwrap();
        (l, cl)
    };
    let mut acc = None;
    poll_until(&st, &mut now, |c| {
        acc = c.tcp_accept(l).ok().map(|x| x.0);
        acc.is_some()
    });
    let acc = acc.unwrap();
    // The client closes first and ends in TIME_WAIT; the server end goes away.
    st.lock().tcp_close(cl, now).unwrap();
    poll_until(&st, &mut now, |c| {
        c.tcp_state(acc) == Ok(TcpState::CloseWait)
    });
    st.lock().tcp_close(acc, now).unwrap();
    poll_until(&st, &mut now, |c| c.sockets_in_use() == 2);

    let mut c = st.lock();
    // A port the kernel picked for connect may be shared with connections.
    let d = c.tcp_open().unwrap();
    assert_eq!(
        c.tcp_bind_for_connect(d, SocketAddrV4::new(OUR_IP, 9101)),
        Ok(SocketAddrV4::new(OUR_IP, 9101))
    );
    c.tcp_close(d, now).unwrap();
    // Without SO_REUSEADDR the TIME_WAIT connection holds its port...
    let a = c.tcp_open().unwrap();
    assert_eq!(
        c.tcp_bind(a, SocketAddrV4::new(OUR_IP, 9101)),
        Err(SockError::AddrInUse)
    );
    // ...with it, the port can be bound again.
    c.tcp_set_reuseaddr(a, true).unwrap();
    c.tcp_bind(a, SocketAddrV4::new(OUR_IP, 9101)).unwrap();
    // A listening port stays exclusive, SO_REUSEADDR or not.
    let b = c.tcp_open().unwrap();
    c.tcp_set_reuseaddr(b, true).unwrap();
    assert_eq!(c.tcp_bind(b, srv), Err(SockError::AddrInUse));
    // A port the kernel picked for connect is shared with connections
    // only, not with a socket bound there and not connected.
    assert_eq!(
        c.tcp_bind_for_connect(b, SocketAddrV4::new(OUR_IP, 9101)),
        Err(SockError::AddrInUse)
    );
    c.tcp_close(b, now).unwrap();
    // Connecting over the TIME_WAIT four-tuple recycles it (tcp_tw_reuse for loopback).
    c.tcp_connect(a, srv, now).unwrap();
    drop(c);
    let mut acc2 = None;
    poll_until(&st, &mut now, |c| {
        acc2 = c.tcp_accept(l).ok().map(|x| x.0);
        acc2.is_some()
    });
    assert_eq!(st.lock().tcp_state(a), Ok(TcpState::Established));
    st.lock().check_consistency().unwrap();
}
