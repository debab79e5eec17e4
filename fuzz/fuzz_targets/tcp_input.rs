//! Fuzzes TCP input on an established connection and a listener: the input
//! is a script of segments (flags, sequence and acknowledgment offsets near
//! the connection's own numbers, window, options, payload length), built
//! into valid frames so the fuzzer explores the state machine rather than
//! checksum failures. The application side reads, writes and closes as the
//! script says. After each step the stack's tables must be consistent.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use rbypass_stack::wire::checksum;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::wire::seq::SeqNum;
use rbypass_stack::wire::tcp::{flags as F, TcpOptions, TcpPacket, TcpRepr};
use rbypass_stack::{IfaceConfig, Stack, StackConfig};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const US: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn frame(seg: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + seg.len());
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[8, 0]);
    let total = (20 + seg.len()) as u16;
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&PEER.octets());
    ip.extend_from_slice(&US.octets());
    let c = checksum::finish(checksum::accumulate(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(seg);
    f
}

fuzz_target!(|data: &[u8]| {
    let path = std::path::PathBuf::from(format!("/dev/shm/rbypass-fuzztcp{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let iface = IfaceConfig::new(EthernetAddress(MAC), US, 24, None, 1500);
    let Ok(mut stack) = Stack::create_at(&path, "", &StackConfig { max_bufs: 256, max_sockets: 16, ..StackConfig::default() }, iface) else { return };
    stack.set_remove_on_drop(true);
    let mut c = stack.lock();
    let mut now = 1_000_000_000u64;
    // The peer's MAC, learnt from an ARP request.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&PEER_MAC);
    arp.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&PEER_MAC);
    arp.extend_from_slice(&PEER.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&US.octets());
    let inject = |c: &mut rbypass_stack::Core<'_>, f: &[u8], now: u64| {
        if let Ok(b) = c.pool.alloc() {
            c.pool.frame_mut(b, f.len()).copy_from_slice(f);
            c.receive(b, now);
        }
    };
    inject(&mut c, &arp, now);
    let l = c.tcp_open().unwrap();
    c.tcp_bind(l, SocketAddrV4::new(US, 80)).unwrap();
    c.tcp_listen(l, 2).unwrap();
    let cl = c.tcp_open().unwrap();
    c.tcp_connect(cl, SocketAddrV4::new(PEER, 443), now).unwrap();
    let client_port = c.tcp_info(cl).unwrap().local.port();
    // The stack's ISNs, learnt from what it sends.
    let mut their_seq = [0u32; 2];
    let mut peer_seq = [5000u32, 9000u32];
    let mut learn = |c: &mut rbypass_stack::Core<'_>, their: &mut [u32; 2]| {
        while let Some(b) = c.dequeue_tx() {
            let f = c.pool.frame(b);
            if f.len() > 54 && f[23] == 6 {
                if let Ok(p) = TcpPacket::new_checked(&f[34..]) {
                    let k = usize::from(p.src_port() == 80);
                    their[1 - k] = p.seq_number().0.wrapping_add(1);
                }
            }
            c.pool.put(b);
        }
    };
    learn(&mut c, &mut their_seq);
    let mut buf = [0u8; 4096];
    for step in data.chunks(8) {
        if step.len() < 8 {
            break;
        }
        let which = usize::from(step[0] & 1); // 0: our client's connection, 1: the listener's port
        let flags = step[1];
        let seq_off = i32::from(i8::from_ne_bytes([step[2]])) * 97;
        let ack_off = i32::from(i8::from_ne_bytes([step[3]])) * 97;
        let window = u16::from_be_bytes([step[4], step[5]]);
        let plen = usize::from(step[6]) * 7;
        let opts = step[7];
        let (sport, dport) = if which == 0 { (443, client_port) } else { (40000 + u16::from(step[0] >> 5), 80) };
        let payload = vec![step[6]; plen];
        let mut o = TcpOptions::default();
        if opts & 1 != 0 {
            o.mss = Some(536 + u16::from(opts));
        }
        if opts & 2 != 0 {
            o.window_scale = Some(opts >> 4);
        }
        o.sack_permitted = opts & 4 != 0;
        if opts & 8 != 0 {
            o.timestamp = Some((u32::from(opts) * 1000 + (now / 1_000_000) as u32, 0));
        }
        if opts & 16 != 0 {
            let s = their_seq[which];
            o.sack_blocks[0] = Some((SeqNum(s.wrapping_add(100)), SeqNum(s.wrapping_add(1600))));
        }
        let repr = TcpRepr {
            src_port: sport,
            dst_port: dport,
            seq: SeqNum(peer_seq[which].wrapping_add(seq_off as u32)),
            ack: (flags & F::ACK != 0).then_some(SeqNum(their_seq[which].wrapping_add(ack_off as u32))),
            flags,
            window,
            options: o,
            payload: &payload,
        };
        let mut seg = vec![0u8; repr.header_len() + payload.len()];
        let Ok(n) = repr.emit(&mut seg, PEER, US) else { continue };
        seg.truncate(n);
        if flags & F::SYN != 0 && seq_off == 0 {
            peer_seq[which] = peer_seq[which].wrapping_add(1);
        } else if seq_off == 0 {
            peer_seq[which] = peer_seq[which].wrapping_add(plen as u32 + u32::from(flags & F::FIN != 0));
        }
        inject(&mut c, &frame(&seg), now);
        learn(&mut c, &mut their_seq);
        // The application: accept, read, write, close by the step's top bits.
        now += u64::from(step[7] >> 5) * 50_000_000 + 1_000;
        c.poll(now);
        while let Ok((s, _)) = c.tcp_accept(l) {
            if step[5] & 1 == 0 {
                let _ = c.tcp_close(s, now);
            }
        }
        for info in stack.sockets() {
            if info.kind != rbypass_stack::socket::kind::TCP || info.id == l {
                continue;
            }
            let _ = c.tcp_recv(info.id, &mut buf, step[4] & 1 == 1, now);
            if step[4] & 2 != 0 {
                let _ = c.tcp_send(info.id, &buf[..usize::from(step[6])], now);
            }
            if step[4] & 4 != 0 && step[2] == 0x7f {
                let _ = c.tcp_close(info.id, now);
            }
        }
        learn(&mut c, &mut their_seq);
        if let Err(e) = c.check_consistency() {
            panic!("inconsistent: {e}");
        }
    }
});
