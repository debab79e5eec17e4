//! Two stacks joined by the memory pair exchange UDP byte-exact, in both
//! directions, while the fault injector drops, duplicates, reorders, corrupts
//! and delays frames both ways. A small windowed ARQ on top of UDP makes
//! every message arrive; the checks are that every message arrives exactly
//! once and byte-exact, and that the faults really happened.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::fault::{FaultConfig, FaultyNic};
use rbypass_nic::pair::{pair, PairNic};
use rbypass_stack::clock::now_ns;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::{IfaceConfig, SockError, SocketId, Stack, StackConfig};

const MESSAGES: u32 = 1500;
const WINDOW: usize = 32;
const RTO: Duration = Duration::from_millis(4);
const PORT: u16 = 5555;

fn message(seq: u32) -> Vec<u8> {
    let len = 8 + (seq as usize * 131) % 1464;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.extend((8..len).map(|i| (i as u32).wrapping_mul(seq | 1).wrapping_add(seq) as u8));
    m
}

struct Peer {
    driver: Driver<FaultyNic<PairNic>>,
    sock: SocketId,
    to: SocketAddrV4,
    next_seq: u32,
    unacked: BTreeMap<u32, Instant>,
    acked: u32,
    received: Vec<bool>,
    received_count: u32,
    dup_deliveries: u32,
}

fn stack(path: &str, mac: EthernetAddress, ip: Ipv4Addr) -> Arc<Stack> {
    let p = std::path::PathBuf::from(format!("/dev/shm/rbypass-{path}{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    let mut s = Stack::create_at(
        &p,
        "",
        &StackConfig {
            max_bufs: 2048,
            ..StackConfig::default()
        },
        IfaceConfig::new(mac, ip, 24, None, 1500),
    )
    .unwrap();
    s.set_remove_on_drop(true);
    Arc::new(s)
}

impl Peer {
    fn new(stack: Arc<Stack>, nic: FaultyNic<PairNic>, me: Ipv4Addr, to: Ipv4Addr) -> Peer {
        let sock = {
            let mut c = stack.lock();
            let s = c.udp_open().unwrap();
            c.udp_bind(s, SocketAddrV4::new(me, PORT)).unwrap();
            c.udp_set_rcvbuf(s, 1 << 22).unwrap();
            s
        };
        Peer {
            driver: Driver::new(stack, nic),
            sock,
            to: SocketAddrV4::new(to, PORT),
            next_seq: 0,
            unacked: BTreeMap::new(),
            acked: 0,
            received: vec![false; MESSAGES as usize],
            received_count: 0,
            dup_deliveries: 0,
        }
    }

    fn done(&self) -> bool {
        self.acked == MESSAGES && self.received_count == MESSAGES
    }

    fn step(&mut self) {
        let now = Instant::now();
        self.driver.poll(now_ns()).unwrap();
        let stack = self.driver.stack().clone();
        let mut c = stack.lock();
        let mut buf = [0u8; 2048];
        loop {
            match c.udp_recv_from(self.sock, &mut buf, false) {
                Ok(m) => {
                    assert_eq!(m.from, self.to, "datagram from the peer's socket");
                    let d = &buf[..m.copied];
                    if d.len() == 5 && d[0] == b'A' {
                        let seq = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
                        if self.unacked.remove(&seq).is_some() {
                            self.acked += 1;
                        }
                    } else {
                        let seq = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                        assert!(seq < MESSAGES, "sequence number intact");
                        assert_eq!(d, &message(seq)[..], "message {seq} byte-exact");
                        if self.received[seq as usize] {
                            self.dup_deliveries += 1;
                        } else {
                            self.received[seq as usize] = true;
                            self.received_count += 1;
                        }
                        let mut ack = [b'A', 0, 0, 0, 0];
                        ack[1..].copy_from_slice(&seq.to_be_bytes());
                        let _ = c.udp_send_to(self.sock, &ack, self.to);
                    }
                }
                Err(SockError::WouldBlock) => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        let resend: Vec<u32> = self
            .unacked
            .iter()
            .filter(|(_, &t)| now.duration_since(t) > RTO)
            .map(|(&s, _)| s)
            .take(8)
            .collect();
        for seq in resend {
            if c.udp_send_to(self.sock, &message(seq), self.to).is_ok() {
                self.unacked.insert(seq, now);
            }
        }
        while self.unacked.len() < WINDOW && self.next_seq < MESSAGES {
            let seq = self.next_seq;
            match c.udp_send_to(self.sock, &message(seq), self.to) {
                Ok(_) | Err(SockError::NoBuffers) => {
                    self.unacked.insert(seq, now);
                    self.next_seq += 1;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        drop(c);
        self.driver.poll(now_ns()).unwrap();
    }
}

#[test]
fn udp_byte_exact_under_faults() {
    let (na, nb) = pair(
        EthernetAddress([2, 0, 0, 0, 0, 0xa]),
        EthernetAddress([2, 0, 0, 0, 0, 0xb]),
        1500,
    );
    let faults = FaultConfig {
        drop: 0.08,
        duplicate: 0.03,
        reorder: 0.05,
        corrupt: 0.03,
        delay: 0.03,
        delay_ns: 1_000_000,
        seed: 7,
    };
    let (ip_a, ip_b) = (Ipv4Addr::new(198, 18, 7, 1), Ipv4Addr::new(198, 18, 7, 2));
    let sa = stack("pairA", na.caps_mac(), ip_a);
    let sb = stack("pairB", nb.caps_mac(), ip_b);
    let mut a = Peer::new(sa.clone(), FaultyNic::new(na, faults), ip_a, ip_b);
    let mut b = Peer::new(
        sb.clone(),
        // Corruption on one side only: a frame then carries at most one bit
        // flip, which the 16-bit Internet checksum always detects (two flips
        // can cancel out, on a real network too).
        FaultyNic::new(
            nb,
            FaultConfig {
                seed: 11,
                corrupt: 0.0,
                ..faults
            },
        ),
        ip_b,
        ip_a,
    );
    let start = Instant::now();
    let mut rounds = 0u64;
    while !(a.done() && b.done()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: a acked {} got {}, b acked {} got {}",
            a.acked,
            a.received_count,
            b.acked,
            b.received_count
        );
        assert!(rounds < 50_000_000, "too many rounds");
        a.step();
        b.step();
        rounds += 1;
    }
    let na = a.driver.nic();
    assert!(
        na.rx_stats.corrupted > 0 && na.tx_stats.corrupted > 0,
        "corruption injected both ways"
    );
    for p in [&a, &b] {
        let n = p.driver.nic();
        let (rx, tx) = (n.rx_stats, n.tx_stats);
        assert!(
            rx.dropped + tx.dropped > 0,
            "faults injected: {rx:?} {tx:?}"
        );
        assert!(
            rx.duplicated + tx.duplicated > 0
                && rx.reordered + tx.reordered > 0
                && rx.delayed + tx.delayed > 0
        );
    }
    // Corrupted frames were caught by checksums (or address checks), never delivered.
    for s in [&sa, &sb] {
        let k = &s.header().counters;
        let caught = k.rx_drop_udp_csum.get()
            + k.rx_drop_ip_csum.get()
            + k.rx_drop_ip_hdr.get()
            + k.rx_drop_udp_hdr.get()
            + k.rx_drop_eth.get()
            + k.rx_drop_not_our_mac.get()
            + k.rx_drop_not_our_ip.get()
            + k.rx_drop_arp.get();
        assert!(caught > 0, "some corrupted frames were rejected");
    }
    eprintln!(
        "done in {:.2?}, {rounds} rounds; duplicates delivered a={} b={}; faults a rx {:?} tx {:?}",
        start.elapsed(),
        a.dup_deliveries,
        b.dup_deliveries,
        a.driver.nic().rx_stats,
        a.driver.nic().tx_stats
    );
    for p in [&mut a, &mut b] {
        let stack = p.driver.stack().clone();
        let mut c = stack.lock();
        p.driver.nic_mut().release_held(&mut c);
        c.check_consistency().unwrap();
    }
}
