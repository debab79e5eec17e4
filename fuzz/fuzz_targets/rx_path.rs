//! Fuzzes the whole receive path: arbitrary bytes arrive as a frame (the
//! first input byte picks whether the Ethernet header is made valid, so the
//! fuzzer reaches ARP, IPv4, ICMP and UDP quickly), the stack handles it,
//! polls its timers and answers; afterwards its tables must be consistent.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::{IfaceConfig, SocketId, Stack, StackConfig};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn stack() -> &'static (Stack, [SocketId; 2]) {
    static S: OnceLock<(Stack, [SocketId; 2])> = OnceLock::new();
    S.get_or_init(|| {
        let path = std::path::PathBuf::from(format!("/dev/shm/rbypass-fuzz{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let iface = IfaceConfig::new(EthernetAddress(MAC), Ipv4Addr::new(198, 18, 0, 2), 24, Some(Ipv4Addr::new(198, 18, 0, 1)), 1500);
        let mut s = Stack::create_at(&path, "", &StackConfig { max_bufs: 128, max_sockets: 16, ..StackConfig::default() }, iface).unwrap();
        s.set_remove_on_drop(false);
        let _ = std::fs::remove_file(&path); // the mapping stays valid
        let ids = {
            let mut c = s.lock();
            let u = c.udp_open().unwrap();
            c.udp_bind(u, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7)).unwrap();
            let v = c.udp_open().unwrap();
            c.udp_connect(v, SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 9)).unwrap();
            // TCP: a listener on port 80 and a connection being opened from port 80's peer.
            let l = c.tcp_open().unwrap();
            c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80)).unwrap();
            c.tcp_listen(l, 4).unwrap();
            let t = c.tcp_open().unwrap();
            c.tcp_connect(t, SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 443), 0).unwrap();
            [u, v]
        };
        (s, ids)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (s, ids) = stack();
    let mut c = s.lock();
    let mut frame = rest.to_vec();
    if mode & 1 == 1 && frame.len() >= 14 {
        frame[..6].copy_from_slice(if mode & 2 == 2 { &[0xff; 6] } else { &MAC });
        let et: u16 = if mode & 4 == 4 { 0x0806 } else { 0x0800 };
        frame[12..14].copy_from_slice(&et.to_be_bytes());
    }
    frame.truncate(rbypass_stack::pool::MAX_FRAME);
    let Ok(b) = c.pool.alloc() else { return };
    c.pool.frame_mut(b, frame.len()).copy_from_slice(&frame);
    let now = c.now() + u64::from(mode) * 1_000_000;
    c.receive(b, now);
    c.poll(now);
    while let Some(t) = c.dequeue_tx() {
        c.pool.put(t);
    }
    // Drain sockets so buffers come back.
    let mut buf = [0u8; 2048];
    for &id in ids {
        while c.udp_recv_from(id, &mut buf, false).is_ok() {}
    }
    // Accept and drain whatever TCP connections the input created, then
    // close them, so buffers come back and sockets do not run out.
    for info in s.sockets() {
        if info.kind == rbypass_stack::socket::kind::TCP {
            while matches!(c.tcp_recv(info.id, &mut buf, false, now), Ok(n) if n > 0) {}
        }
    }
    if c.sockets_in_use() > 12 {
        for info in s.sockets() {
            if info.kind == rbypass_stack::socket::kind::TCP && info.local.port() != 80 {
                let _ = c.tcp_close(info.id, now);
            }
        }
    }
    if let Err(e) = c.check_consistency() {
        panic!("inconsistent after input: {e}");
    }
});
