//! UDP sockets driven frame by frame with a virtual clock.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use rbypass_stack::{SockError, StackConfig};

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

#[test]
fn bind_rules() {
    let st = stack();
    let mut c = st.lock();
    let a = c.udp_open().unwrap();
    let b = c.udp_open().unwrap();
    let d = c.udp_open().unwrap();
    assert_eq!(
        c.udp_bind(a, sa(Ipv4Addr::UNSPECIFIED, 5000)).unwrap(),
        sa(Ipv4Addr::UNSPECIFIED, 5000)
    );
    assert_eq!(
        c.udp_bind(b, sa(OUR_IP, 5000)),
        Err(SockError::AddrInUse),
        "specific vs wildcard"
    );
    assert_eq!(
        c.udp_bind(b, sa(Ipv4Addr::new(198, 18, 0, 77), 5001)),
        Err(SockError::AddrNotAvailable)
    );
    assert_eq!(
        c.udp_bind(a, sa(OUR_IP, 5002)),
        Err(SockError::Invalid),
        "already bound"
    );
    let eph = c.udp_bind(b, sa(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    assert!((32768..=60999).contains(&eph.port()));
    let eph2 = c.udp_bind(d, sa(OUR_IP, 0)).unwrap();
    assert_ne!(eph.port(), eph2.port());
    c.udp_close(a).unwrap();
    let e = c.udp_open().unwrap();
    c.udp_bind(e, sa(OUR_IP, 5000))
        .expect("port free again after close");
    assert_eq!(c.udp_close(a), Err(SockError::BadSocket), "double close");
}

#[test]
fn receive_with_source_peek_and_truncation() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_bind(s, sa(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        c.udp_recv_from(s, &mut buf, false),
        Err(SockError::WouldBlock)
    );
    inject(&mut c, &udp_frame(1234, 7000, b"hello world"), 0);
    assert!(c.udp_readable(s));
    assert_eq!(c.udp_rx_pending(s).unwrap(), (Some(11), 1));
    let m = c.udp_recv_from(s, &mut buf, true).unwrap();
    assert_eq!((m.copied, m.len, m.from), (11, 11, sa(PEER_IP, 1234)));
    let mut small = [0u8; 5];
    let m = c.udp_recv_from(s, &mut small, false).unwrap();
    assert_eq!((m.copied, m.len), (5, 11));
    assert_eq!(&small, b"hello");
    assert_eq!(
        c.udp_recv_from(s, &mut buf, false),
        Err(SockError::WouldBlock),
        "truncated datagram consumed"
    );
    assert_eq!(c.udp_counters(s).unwrap().rx_packets.get(), 1);
    c.check_consistency().unwrap();
    assert_eq!(c.free_buffers(), 256, "every buffer back in the pool");
}

#[test]
fn zero_checksum_accepted_bad_checksum_dropped() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_bind(s, sa(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    let nocsum = eth(
        OUR_MAC,
        PEER_MAC,
        0x0800,
        &ipv4(
            PEER_IP,
            OUR_IP,
            17,
            &udp(PEER_IP, OUR_IP, 1, 7000, b"x", false),
        ),
    );
    inject(&mut c, &nocsum, 0);
    let mut bad = udp_frame(1, 7000, b"yy");
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    inject(&mut c, &bad, 0);
    let mut buf = [0u8; 8];
    assert_eq!(c.udp_recv_from(s, &mut buf, false).unwrap().copied, 1);
    assert_eq!(
        c.udp_recv_from(s, &mut buf, false),
        Err(SockError::WouldBlock)
    );
    assert_eq!(c.header().counters.rx_drop_udp_csum.get(), 1);
}

/// A frame whose checksum holds only the pseudo-header sum (what a veth
/// peer with checksum offload sends) is accepted from a device that says
/// such frames are intact, and dropped from any other.
#[test]
fn pseudo_header_only_checksum_follows_the_frame_mode() {
    use rbypass_stack::pool::rx_csum;
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_bind(s, sa(Ipv4Addr::UNSPECIFIED, 7001)).unwrap();
    let mut u = udp(PEER_IP, OUR_IP, 1, 7001, b"abc", false);
    use rbypass_stack::wire::checksum;
    let partial = checksum::fold(checksum::pseudo_header_v4(PEER_IP, OUR_IP, 17, 11)).to_be_bytes();
    u[6..8].copy_from_slice(&partial);
    let frame = eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 17, &u));
    for (mode, delivered) in [(rx_csum::VERIFY, false), (rx_csum::PARTIAL_OK, true)] {
        let b = c.pool.alloc().expect("buffer");
        c.pool.frame_mut(b, frame.len()).copy_from_slice(&frame);
        c.pool.meta_mut(b).rx_csum = mode;
        c.receive(b, 0);
        let mut buf = [0u8; 8];
        let got = c.udp_recv_from(s, &mut buf, false).map(|m| m.copied);
        assert_eq!(got.is_ok(), delivered, "mode {mode}: {got:?}");
    }
    // A damaged full checksum is still caught in the partial mode.
    let mut bad = udp_frame(1, 7001, b"yy");
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let b = c.pool.alloc().expect("buffer");
    c.pool.frame_mut(b, bad.len()).copy_from_slice(&bad);
    c.pool.meta_mut(b).rx_csum = rx_csum::PARTIAL_OK;
    c.receive(b, 0);
    let mut buf = [0u8; 8];
    assert_eq!(
        c.udp_recv_from(s, &mut buf, false),
        Err(SockError::WouldBlock)
    );
}

#[test]
fn demux_prefers_connected_then_specific() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let wild = c.udp_open().unwrap();
    c.udp_bind(wild, sa(Ipv4Addr::UNSPECIFIED, 9000)).unwrap();
    let conn = c.udp_open().unwrap();
    // Two sockets on one port need distinct addresses: the second binds the
    // specific address... which conflicts with the wildcard. Use another port
    // for the connected one and check its filtering instead.
    c.udp_bind(conn, sa(OUR_IP, 9001)).unwrap();
    c.udp_connect(conn, sa(PEER_IP, 4444)).unwrap();
    inject(&mut c, &udp_frame(4444, 9001, b"from peer"), 0);
    inject(&mut c, &udp_frame(5555, 9001, b"from other port"), 0);
    inject(&mut c, &udp_frame(5555, 9000, b"to wildcard"), 0);
    let mut buf = [0u8; 32];
    let m = c.udp_recv_from(conn, &mut buf, false).unwrap();
    assert_eq!(&buf[..m.copied], b"from peer");
    assert_eq!(
        c.udp_recv_from(conn, &mut buf, false),
        Err(SockError::WouldBlock),
        "connected socket filters"
    );
    let m = c.udp_recv_from(wild, &mut buf, false).unwrap();
    assert_eq!(&buf[..m.copied], b"to wildcard");
    assert_eq!(c.udp_peer_addr(conn).unwrap(), sa(PEER_IP, 4444));
    assert_eq!(c.udp_peer_addr(wild), Err(SockError::NotConnected));
    // The unmatched datagram to 9001 got a port unreachable.
    assert_eq!(c.header().counters.rx_udp_no_port.get(), 1);
}

#[test]
fn send_to_builds_valid_frame() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let s = c.udp_open().unwrap();
    assert_eq!(c.udp_send_to(s, b"ping", sa(PEER_IP, 53)).unwrap(), 4);
    let local = c.udp_local_addr(s).unwrap();
    assert!(local.port() >= 32768, "auto-bound to an ephemeral port");
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(&f[0..6], &PEER_MAC.0);
    assert_eq!(&f[6..12], &OUR_MAC.0);
    assert_eq!(&f[12..14], &[8, 0]);
    assert_eq!(&f[26..30], &OUR_IP.octets());
    assert_eq!(&f[30..34], &PEER_IP.octets());
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), local.port());
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 53);
    assert_eq!(&f[42..], b"ping");
    verify_ip_frame(f);
}

#[test]
fn send_errors() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    assert_eq!(c.udp_send(s, b"x"), Err(SockError::NotConnected));
    assert_eq!(
        c.udp_send_to(s, &[0u8; 1473], sa(PEER_IP, 9)),
        Err(SockError::MessageTooLong)
    );
    assert_eq!(
        c.udp_send_to(s, b"x", sa(PEER_IP, 0)),
        Err(SockError::Invalid)
    );
    assert_eq!(
        c.udp_send_to(s, b"x", sa(Ipv4Addr::BROADCAST, 9)),
        Err(SockError::Access)
    );
    assert_eq!(
        c.udp_send_to(s, b"x", sa(Ipv4Addr::new(198, 18, 0, 255), 9)),
        Err(SockError::Access)
    );
    c.udp_set_broadcast(s, true).unwrap();
    c.udp_send_to(s, b"x", sa(Ipv4Addr::BROADCAST, 9)).unwrap();
    let out = drain_tx(&mut c);
    assert_eq!(&out[0][0..6], &[0xff; 6], "broadcast MAC");
    assert_eq!(
        c.udp_send_to(s, &[0u8; 1472], sa(PEER_IP, 9)),
        Ok(1472),
        "exactly the MTU"
    );
    assert_eq!(
        c.udp_send_to(s, b"x", sa(Ipv4Addr::new(203, 0, 113, 1), 9)),
        Ok(1),
        "via the gateway"
    );
    let mut st2 = stack();
    st2.set_remove_on_drop(true);
    let mut c2 = st2.lock();
    let mut iface = c2.iface();
    iface.gateway = [0; 4];
    c2.set_iface(iface);
    let s2 = c2.udp_open().unwrap();
    assert_eq!(
        c2.udp_send_to(s2, b"x", sa(Ipv4Addr::new(203, 0, 113, 1), 9)),
        Err(SockError::NetUnreachable)
    );
    assert_eq!(
        c2.udp_connect(s2, sa(Ipv4Addr::new(203, 0, 113, 1), 9)),
        Err(SockError::NetUnreachable)
    );
}

#[test]
fn rcvbuf_bounds_queue_and_counts_drops() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_bind(s, sa(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    c.udp_set_rcvbuf(s, 4 * 2048).unwrap();
    for i in 0..10u8 {
        inject(&mut c, &udp_frame(1, 7000, &[i]), 0);
    }
    assert_eq!(c.udp_rx_pending(s).unwrap().1, 4);
    assert_eq!(c.udp_counters(s).unwrap().rx_drop_rcvbuf.get(), 6);
    assert_eq!(c.header().counters.rx_drop_udp_rcvbuf.get(), 6);
    let mut buf = [0u8; 4];
    for i in 0..4u8 {
        c.udp_recv_from(s, &mut buf, false).unwrap();
        assert_eq!(buf[0], i, "FIFO order, oldest kept");
    }
    c.check_consistency().unwrap();
}

#[test]
fn buffer_exhaustion_is_clean() {
    let st = stack_with(StackConfig {
        max_bufs: 64,
        max_sockets: 8,
        rcvbuf_default: 1 << 30,
        ..StackConfig::default()
    });
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let s = c.udp_open().unwrap();
    c.udp_bind(s, sa(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    for _ in 0..64 {
        inject(&mut c, &udp_frame(1, 7000, b"fill"), 0);
    }
    assert_eq!(c.free_buffers(), 0);
    assert_eq!(
        c.udp_send_to(s, b"x", sa(PEER_IP, 1)),
        Err(SockError::NoBuffers)
    );
    assert!(c.pool.alloc().is_err());
    c.check_consistency().unwrap();
    let mut buf = [0u8; 8];
    let mut n = 0;
    while c.udp_recv_from(s, &mut buf, false).is_ok() {
        assert_eq!(&buf[..4], b"fill");
        n += 1;
    }
    assert_eq!(n, 64);
    assert_eq!(c.free_buffers(), 64);
    c.check_consistency().unwrap();
}

#[test]
fn two_sockets_talk_through_loopback() {
    let st = stack();
    let mut c = st.lock();
    let a = c.udp_open().unwrap();
    let b = c.udp_open().unwrap();
    c.udp_bind(a, sa(OUR_IP, 1111)).unwrap();
    c.udp_bind(b, sa(OUR_IP, 2222)).unwrap();
    c.udp_send_to(a, b"over the loop", sa(OUR_IP, 2222))
        .unwrap();
    assert!(drain_tx(&mut c).is_empty(), "nothing goes to the NIC");
    c.poll(1);
    let mut buf = [0u8; 32];
    let m = c.udp_recv_from(b, &mut buf, false).unwrap();
    assert_eq!(&buf[..m.copied], b"over the loop");
    assert_eq!(m.from, sa(OUR_IP, 1111));
}

#[test]
fn connected_socket_gets_port_unreachable() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let s = c.udp_open().unwrap();
    let local = c.udp_connect(s, sa(PEER_IP, 9999)).unwrap();
    c.udp_send(s, b"anyone?").unwrap();
    let sent = drain_tx(&mut c).remove(0);
    // The peer answers with ICMP port unreachable quoting our datagram.
    let quote = &sent[14..14 + 28];
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let cs =
        rbypass_stack::wire::checksum::finish(rbypass_stack::wire::checksum::accumulate(&icmp, 0));
    icmp[2..4].copy_from_slice(&cs.to_be_bytes());
    inject(
        &mut c,
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 1, &icmp)),
        0,
    );
    assert_eq!(c.header().counters.icmp_unreach_received.get(), 1);
    let mut buf = [0u8; 8];
    assert_eq!(
        c.udp_recv_from(s, &mut buf, false),
        Err(SockError::ConnRefused)
    );
    assert_eq!(
        c.udp_recv_from(s, &mut buf, false),
        Err(SockError::WouldBlock),
        "reported once"
    );
    assert_eq!(local.ip(), &OUR_IP);
}

#[test]
fn broadcast_reaches_every_wildcard_socket() {
    let st = stack();
    let mut c = st.lock();
    let a = c.udp_open().unwrap();
    c.udp_bind(a, sa(Ipv4Addr::UNSPECIFIED, 6000)).unwrap();
    let f = eth(
        rbypass_stack::wire::ethernet::EthernetAddress::BROADCAST,
        PEER_MAC,
        0x0800,
        &ipv4(
            PEER_IP,
            Ipv4Addr::BROADCAST,
            17,
            &udp(PEER_IP, Ipv4Addr::BROADCAST, 1, 6000, b"all", true),
        ),
    );
    inject(&mut c, &f, 0);
    let mut buf = [0u8; 8];
    assert_eq!(c.udp_recv_from(a, &mut buf, false).unwrap().copied, 3);
    // No port unreachable for broadcast.
    inject(&mut c, &f.clone(), 0);
    c.udp_close(a).unwrap();
    inject(&mut c, &f, 0);
    assert!(drain_tx(&mut c).is_empty());
    c.check_consistency().unwrap();
}
