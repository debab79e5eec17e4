//! Helpers for driving a stack frame by frame with a virtual clock.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use rbypass_stack::wire::checksum;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::{Core, IfaceConfig, Stack, StackConfig};

pub const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
pub const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
pub const OUR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// A private stack in its own arena file, removed on drop.
pub fn stack_with(cfg: StackConfig) -> Stack {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/rbypass-test{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let iface = IfaceConfig::new(
        OUR_MAC,
        OUR_IP,
        24,
        Some(Ipv4Addr::new(198, 18, 0, 254)),
        1500,
    );
    let mut s = Stack::create_at(&path, "", &cfg, iface).expect("create stack");
    s.set_remove_on_drop(true);
    s
}

pub fn stack() -> Stack {
    stack_with(StackConfig {
        max_bufs: 256,
        max_sockets: 64,
        ..StackConfig::default()
    })
}

/// Puts raw bytes into a buffer and hands it to the stack.
pub fn inject(core: &mut Core<'_>, frame: &[u8], now: u64) {
    let b = core.pool.alloc().expect("buffer");
    core.pool.frame_mut(b, frame.len()).copy_from_slice(frame);
    core.receive(b, now);
}

/// Everything the stack wants to transmit, as bytes.
pub fn drain_tx(core: &mut Core<'_>) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(b) = core.dequeue_tx() {
        v.push(core.pool.frame(b).to_vec());
        core.pool.put(b);
    }
    v
}

pub fn eth(dst: EthernetAddress, src: EthernetAddress, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet built by hand (independently of the stack's emitters).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, proto, payload, 0x4000, &[])
}

pub fn ipv4_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload: &[u8],
    flags_frag: u16,
    options: &[u8],
) -> Vec<u8> {
    let hl = 20 + options.len();
    let total = (hl + payload.len()) as u16;
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&flags_frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    let c = checksum::finish(checksum::accumulate(&h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub fn udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    with_csum: bool,
) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    if with_csum {
        let mut c = checksum::finish(checksum::accumulate(
            &u,
            checksum::pseudo_header_v4(src, dst, 17, len),
        ));
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

/// A complete Ethernet/IPv4/UDP frame from the peer to us.
pub fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    eth(
        OUR_MAC,
        PEER_MAC,
        0x0800,
        &ipv4(
            PEER_IP,
            OUR_IP,
            17,
            &udp(PEER_IP, OUR_IP, sport, dport, payload, true),
        ),
    )
}

/// An ARP packet (request = 1, reply = 2).
pub fn arp(
    op: u16,
    sha: EthernetAddress,
    spa: Ipv4Addr,
    tha: EthernetAddress,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha.0);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha.0);
    a.extend_from_slice(&tpa.octets());
    a
}

/// Teaches the stack the peer's MAC with an ARP request from the peer.
pub fn learn_peer(core: &mut Core<'_>, now: u64) {
    let f = eth(
        EthernetAddress::BROADCAST,
        PEER_MAC,
        0x0806,
        &arp(1, PEER_MAC, PEER_IP, EthernetAddress([0; 6]), OUR_IP),
    );
    inject(core, &f, now);
    let out = drain_tx(core);
    assert_eq!(out.len(), 1, "one ARP reply");
}

/// Checks an IPv4 header checksum and a UDP/ICMP checksum of a frame we sent.
pub fn verify_ip_frame(f: &[u8]) {
    let hl = usize::from(f[14] & 0xf) * 4;
    assert_eq!(
        checksum::finish(checksum::accumulate(&f[14..14 + hl], 0)),
        0,
        "IPv4 header checksum"
    );
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = &f[14 + hl..14 + total];
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    match f[23] {
        17 => assert_eq!(
            checksum::finish(checksum::accumulate(
                l4,
                checksum::pseudo_header_v4(src, dst, 17, l4.len() as u16)
            )),
            0,
            "UDP checksum"
        ),
        1 => assert_eq!(
            checksum::finish(checksum::accumulate(l4, 0)),
            0,
            "ICMP checksum"
        ),
        _ => {}
    }
}

/// The Ethernet address of IPv4 multicast `group` (01:00:5e + low 23 bits),
/// computed independently of the stack.
pub fn mcast_mac(group: Ipv4Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// A UDP datagram from `src` (a host on the link with `src_mac`) to
/// multicast `group`, as a frame.
pub fn mcast_udp_frame(
    src_mac: EthernetAddress,
    src: Ipv4Addr,
    group: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    eth(
        mcast_mac(group),
        src_mac,
        0x0800,
        &ipv4(
            src,
            group,
            17,
            &udp(src, group, sport, dport, payload, true),
        ),
    )
}

/// An IGMP message with its checksum filled in (`msg` has a zero checksum).
pub fn igmp_msg(mut msg: Vec<u8>) -> Vec<u8> {
    msg[2] = 0;
    msg[3] = 0;
    let c = checksum::finish(checksum::accumulate(&msg, 0));
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    msg
}

/// An IGMP message from the peer (as a router) to `dst`, with Router Alert
/// and TTL 1 as routers send them.
pub fn igmp_frame(dst: Ipv4Addr, msg: &[u8]) -> Vec<u8> {
    let mut ip = ipv4_with(PEER_IP, dst, 2, msg, 0, &[0x94, 0x04, 0, 0]);
    ip[8] = 1;
    ip[10] = 0;
    ip[11] = 0;
    let c = checksum::finish(checksum::accumulate(&ip[..24], 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    eth(mcast_mac(dst), PEER_MAC, 0x0800, &ip)
}
