//! TCP between two stacks over the memory pair while the fault injector
//! drops, duplicates, reorders, corrupts and delays frames in both
//! directions. Each side sends 2 MiB to the other at the same time and
//! checks every byte; then both close. A virtual clock drives everything, so
//! the run is deterministic and timeouts cost no real time.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use rbypass_nic::driver::Driver;
use rbypass_nic::fault::{FaultConfig, FaultyNic};
use rbypass_nic::pair::{pair, PairNic};
use rbypass_stack::clock::{MS, SEC};
use rbypass_stack::tcp::tcb::TcpState;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::{IfaceConfig, SockError, SocketId, Stack, StackConfig};

const BYTES: usize = 2 << 20;
const STEP_NS: u64 = 20_000;

fn pattern(side: u8, i: usize) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ side
}

fn stack(tag: &str, mac: EthernetAddress, ip: Ipv4Addr) -> Arc<Stack> {
    let p = std::path::PathBuf::from(format!("/dev/shm/rbypass-ptcp{tag}{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    let mut s = Stack::create_at(
        &p,
        "",
        &StackConfig {
            max_bufs: 8192,
            ..StackConfig::default()
        },
        IfaceConfig::new(mac, ip, 24, None, 1500),
    )
    .unwrap();
    s.set_remove_on_drop(true);
    Arc::new(s)
}

struct Side {
    d: Driver<FaultyNic<PairNic>>,
    id: u8,
    sock: Option<SocketId>,
    sent: usize,
    got: usize,
    closed: bool,
}

impl Side {
    fn step(&mut self, now: u64, listener: Option<SocketId>) {
        self.d.poll(now).unwrap();
        let stack = self.d.stack().clone();
        let mut c = stack.lock();
        if self.sock.is_none() {
            if let Some(l) = listener {
                self.sock = c.tcp_accept(l).ok().map(|x| x.0);
            }
        }
        let Some(s) = self.sock else { return };
        if self.closed {
            return;
        }
        if c.tcp_state(s).unwrap() == TcpState::SynSent {
            return;
        }
        let data: Vec<u8> = (self.sent..(self.sent + 65536).min(BYTES))
            .map(|i| pattern(self.id, i))
            .collect();
        if !data.is_empty() {
            match c.tcp_send(s, &data, now) {
                Ok(n) => self.sent += n,
                Err(SockError::WouldBlock) | Err(SockError::NoBuffers) => {}
                Err(e) => panic!("side {}: send: {e}", self.id),
            }
        }
        let mut buf = [0u8; 65536];
        loop {
            match c.tcp_recv(s, &mut buf, false, now) {
                Ok(0) => break,
                Ok(n) => {
                    for (k, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(
                            b,
                            pattern(1 - self.id, self.got + k),
                            "side {} byte {} differs",
                            self.id,
                            self.got + k
                        );
                    }
                    self.got += n;
                }
                Err(SockError::WouldBlock) => break,
                Err(e) => panic!("side {}: recv: {e} after {} bytes", self.id, self.got),
            }
        }
        if self.sent == BYTES && self.got == BYTES && !self.closed {
            c.tcp_close(s, now).unwrap();
            self.closed = true;
        }
    }
}

#[test]
fn tcp_both_ways_byte_exact_under_faults() {
    let (na, nb) = pair(
        EthernetAddress([2, 0, 0, 0, 1, 0xa]),
        EthernetAddress([2, 0, 0, 0, 1, 0xb]),
        1500,
    );
    let seed = std::env::var("RBYPASS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let faults = FaultConfig {
        drop: 0.02,
        duplicate: 0.01,
        reorder: 0.02,
        corrupt: 0.01,
        delay: 0.02,
        delay_ns: 2 * MS,
        seed,
    };
    let (ip_a, ip_b) = (Ipv4Addr::new(198, 18, 8, 1), Ipv4Addr::new(198, 18, 8, 2));
    let sa = stack("a", na.caps_mac(), ip_a);
    let sb = stack("b", nb.caps_mac(), ip_b);
    let mut now = 10 * SEC;
    let l = {
        let mut c = sb.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(ip_b, 5001)).unwrap();
        c.tcp_listen(l, 4).unwrap();
        l
    };
    let client = {
        let mut c = sa.lock();
        let s = c.tcp_open().unwrap();
        c.tcp_connect(s, SocketAddrV4::new(ip_b, 5001), now)
            .unwrap();
        s
    };
    let mut a = Side {
        d: Driver::new(sa.clone(), FaultyNic::new(na, faults)),
        id: 0,
        sock: Some(client),
        sent: 0,
        got: 0,
        closed: false,
    };
    let mut b = Side {
        d: Driver::new(
            sb.clone(),
            // Corruption on one side only, so a frame carries at most one bit
            // flip (two can cancel out in the Internet checksum).
            FaultyNic::new(
                nb,
                FaultConfig {
                    seed: 4,
                    corrupt: 0.0,
                    ..faults
                },
            ),
        ),
        id: 1,
        sock: None,
        sent: 0,
        got: 0,
        closed: false,
    };
    let mut steps = 0u64;
    let limit = 600 * SEC / STEP_NS;
    loop {
        now += STEP_NS;
        a.step(now, None);
        b.step(now, Some(l));
        steps += 1;
        let done = a.closed
            && b.closed
            && sa.lock().sockets_in_use() == 0
            && sb.lock().sockets_in_use() == 1;
        if done {
            break;
        }
        assert!(
            steps < limit,
            "stuck at {} virtual s: a sent {} got {}, b sent {} got {}; a {:?} b {:?}",
            (now - 10 * SEC) / SEC,
            a.sent,
            a.got,
            b.sent,
            b.got,
            a.sock.and_then(|s| sa.lock().tcp_info(s).ok()),
            b.sock.and_then(|s| sb.lock().tcp_info(s).ok())
        );
    }
    let (fa, fb) = (a.d.nic().tx_stats, b.d.nic().tx_stats);
    eprintln!(
        "done after {:.1} virtual s; faults a->b {fa:?}, b->a {fb:?}",
        (now - 10 * SEC) as f64 / 1e9
    );
    eprintln!(
        "retransmits a {} b {}",
        sa.header().counters.tcp_retransmits.get(),
        sb.header().counters.tcp_retransmits.get()
    );
    assert!(
        fa.dropped > 0
            && fa.corrupted > 0
            && fa.reordered > 0
            && fa.duplicated > 0
            && fa.delayed > 0
    );
    assert!(
        sa.header().counters.tcp_retransmits.get() + sb.header().counters.tcp_retransmits.get() > 0
    );
    for (s, d) in [(&sa, &mut a.d), (&sb, &mut b.d)] {
        let mut c = s.lock();
        d.nic_mut().release_held(&mut c);
        c.check_consistency().unwrap();
    }
}
