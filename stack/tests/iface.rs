//! ARP, ICMP and IPv4 input driven frame by frame with a virtual clock.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use rbypass_stack::clock::{MS, SEC};
use rbypass_stack::wire::ethernet::EthernetAddress;

const ZERO_MAC: EthernetAddress = EthernetAddress([0; 6]);

#[test]
fn answers_arp_for_our_address_only() {
    let st = stack();
    let mut c = st.lock();
    let req = eth(
        EthernetAddress::BROADCAST,
        PEER_MAC,
        0x0806,
        &arp(1, PEER_MAC, PEER_IP, ZERO_MAC, OUR_IP),
    );
    inject(&mut c, &req, 0);
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(&r[0..6], &PEER_MAC.0);
    assert_eq!(&r[12..14], &[8, 6]);
    assert_eq!(&r[20..22], &[0, 2], "reply");
    assert_eq!(&r[22..28], &OUR_MAC.0);
    assert_eq!(&r[28..32], &OUR_IP.octets());
    assert_eq!(&r[32..38], &PEER_MAC.0);
    assert_eq!(&r[38..42], &PEER_IP.octets());
    assert!(r.len() >= 60, "padded to the Ethernet minimum");
    // The requester was learnt.
    assert!(c
        .arp_entries()
        .any(|(ip, mac, _)| ip == PEER_IP && mac == Some(PEER_MAC)));
    // A request for someone else is ignored and teaches nothing.
    let other = Ipv4Addr::new(198, 18, 0, 9);
    let req2 = eth(
        EthernetAddress::BROADCAST,
        EthernetAddress([2, 9, 9, 9, 9, 9]),
        0x0806,
        &arp(
            1,
            EthernetAddress([2, 9, 9, 9, 9, 9]),
            other,
            ZERO_MAC,
            PEER_IP,
        ),
    );
    inject(&mut c, &req2, 0);
    assert!(drain_tx(&mut c).is_empty());
    assert!(!c.arp_entries().any(|(ip, _, _)| ip == other));
    // Truncated ARP is dropped and counted.
    inject(&mut c, &req[..30], 0);
    assert!(c.header().counters.rx_drop_arp.get() >= 1);
}

#[test]
fn resolves_holds_and_flushes() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    for i in 0..3u8 {
        c.udp_send_to(s, &[i], SocketAddrV4::new(PEER_IP, 9))
            .unwrap();
    }
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 1, "one ARP request, datagrams held");
    assert_eq!(&out[0][0..6], &[0xff; 6]);
    assert_eq!(&out[0][20..22], &[0, 1]);
    assert_eq!(&out[0][38..42], &PEER_IP.octets());
    assert_eq!(
        c.arp_entries().find(|e| e.0 == PEER_IP).unwrap().2,
        3,
        "three pending"
    );
    let reply = eth(
        OUR_MAC,
        PEER_MAC,
        0x0806,
        &arp(2, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP),
    );
    inject(&mut c, &reply, 10 * MS);
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 3, "held datagrams sent in order");
    for (i, f) in out.iter().enumerate() {
        assert_eq!(&f[0..6], &PEER_MAC.0);
        assert_eq!(f[42], i as u8);
        verify_ip_frame(f);
    }
    c.check_consistency().unwrap();
}

#[test]
fn pending_queue_is_bounded_and_resolution_gives_up() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    let max = c.header().config.arp_pending_max as usize;
    for i in 0..max + 5 {
        c.udp_send_to(s, &[i as u8], SocketAddrV4::new(PEER_IP, 9))
            .unwrap();
    }
    assert_eq!(
        c.arp_entries().find(|e| e.0 == PEER_IP).unwrap().2 as usize,
        max
    );
    assert_eq!(c.header().counters.tx_drop_arp.get(), 5);
    assert_eq!(drain_tx(&mut c).len(), 1);
    // Retries every second: requests 2 and 3, then it gives up.
    let mut requests = 1;
    for t in 1..=5 {
        c.poll(t * SEC + 1);
        requests += drain_tx(&mut c).len();
    }
    assert_eq!(requests, 3, "three requests in all");
    assert!(c.arp_entries().next().is_none(), "entry removed");
    assert_eq!(c.header().counters.tx_drop_arp.get(), 5 + max as u64);
    c.check_consistency().unwrap();
    assert_eq!(c.free_buffers(), 256);
}

#[test]
fn entry_expires_and_is_refreshed_before() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let s = c.udp_open().unwrap();
    c.poll(55 * SEC);
    c.udp_send_to(s, b"x", SocketAddrV4::new(PEER_IP, 9))
        .unwrap();
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 2, "datagram sent at once plus a refresh request");
    assert!(out.iter().any(|f| f[12..14] == [8, 6]));
    c.poll(61 * SEC);
    assert!(
        c.arp_entries().next().is_none(),
        "unconfirmed entry expired"
    );
}

#[test]
fn answers_ping_with_same_data() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 7];
    icmp.extend((0..56u8).collect::<Vec<_>>());
    let cs =
        rbypass_stack::wire::checksum::finish(rbypass_stack::wire::checksum::accumulate(&icmp, 0));
    icmp[2..4].copy_from_slice(&cs.to_be_bytes());
    inject(
        &mut c,
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 1, &icmp)),
        0,
    );
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    verify_ip_frame(r);
    assert_eq!(&r[26..30], &OUR_IP.octets());
    assert_eq!(&r[30..34], &PEER_IP.octets());
    assert_eq!(r[34], 0, "echo reply");
    assert_eq!(&r[38..42], &[0x12, 0x34, 0, 7]);
    assert_eq!(&r[42..], &icmp[8..]);
    assert_eq!(c.header().counters.icmp_echo_replies_sent.get(), 1);
    // A ping to the broadcast address is ignored (icmp_echo_ignore_broadcasts).
    inject(
        &mut c,
        &eth(
            EthernetAddress::BROADCAST,
            PEER_MAC,
            0x0800,
            &ipv4(PEER_IP, Ipv4Addr::BROADCAST, 1, &icmp),
        ),
        0,
    );
    assert!(drain_tx(&mut c).is_empty());
    // A ping with a bad checksum is dropped.
    let mut bad = icmp.clone();
    bad[10] ^= 1;
    inject(
        &mut c,
        &eth(OUR_MAC, PEER_MAC, 0x0800, &ipv4(PEER_IP, OUR_IP, 1, &bad)),
        0,
    );
    assert!(drain_tx(&mut c).is_empty());
    assert_eq!(c.header().counters.rx_drop_icmp.get(), 1);
}

#[test]
fn port_unreachable_quotes_and_is_rate_limited() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let f = udp_frame(4321, 9, b"closed");
    inject(&mut c, &f, 0);
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    verify_ip_frame(r);
    assert_eq!((r[34], r[35]), (3, 3), "destination unreachable, port");
    assert_eq!(&r[42..], &f[14..], "quotes the whole small datagram");
    for _ in 0..100 {
        inject(&mut c, &f, 0);
    }
    let n = drain_tx(&mut c).len();
    assert_eq!(n, 49, "burst of 50 in all, then rate limited");
    inject(&mut c, &f, 10 * MS);
    assert_eq!(drain_tx(&mut c).len(), 1, "tokens refill with time");
}

#[test]
fn ipv4_input_checks() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000))
        .unwrap();
    let payload = udp(PEER_IP, OUR_IP, 1, 7000, b"opt", true);
    // Options are skipped.
    let with_opts = ipv4_with(PEER_IP, OUR_IP, 17, &payload, 0, &[1, 1, 1, 0]);
    inject(&mut c, &eth(OUR_MAC, PEER_MAC, 0x0800, &with_opts), 0);
    // Ethernet padding after the IP packet is ignored.
    let mut padded = udp_frame(1, 7000, b"p");
    padded.extend_from_slice(&[0xee; 20]);
    inject(&mut c, &padded, 0);
    // Fragments are dropped and counted.
    inject(
        &mut c,
        &eth(
            OUR_MAC,
            PEER_MAC,
            0x0800,
            &ipv4_with(PEER_IP, OUR_IP, 17, &payload, 0x2000, &[]),
        ),
        0,
    );
    inject(
        &mut c,
        &eth(
            OUR_MAC,
            PEER_MAC,
            0x0800,
            &ipv4_with(PEER_IP, OUR_IP, 17, &payload, 0x0010, &[]),
        ),
        0,
    );
    // Bad header checksum.
    let mut badsum = ipv4(PEER_IP, OUR_IP, 17, &payload);
    badsum[10] ^= 0xff;
    inject(&mut c, &eth(OUR_MAC, PEER_MAC, 0x0800, &badsum), 0);
    // Not our address, not our MAC, unknown ethertype, runt.
    inject(
        &mut c,
        &eth(
            OUR_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(PEER_IP, Ipv4Addr::new(198, 18, 0, 3), 17, &payload),
        ),
        0,
    );
    inject(
        &mut c,
        &eth(
            PEER_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(PEER_IP, OUR_IP, 17, &payload),
        ),
        0,
    );
    inject(&mut c, &eth(OUR_MAC, PEER_MAC, 0x86dd, &[0; 40]), 0);
    inject(&mut c, &[0u8; 10], 0);
    let k = &c.header().counters;
    assert_eq!(k.rx_drop_ip_frag.get(), 2);
    assert_eq!(k.rx_drop_ip_csum.get(), 1);
    assert_eq!(k.rx_drop_not_our_ip.get(), 1);
    assert_eq!(k.rx_drop_not_our_mac.get(), 1);
    assert_eq!(k.rx_drop_eth.get(), 2);
    let mut buf = [0u8; 8];
    let m = c.udp_recv_from(s, &mut buf, false).unwrap();
    assert_eq!(&buf[..m.copied], b"opt");
    let m = c.udp_recv_from(s, &mut buf, false).unwrap();
    assert_eq!((m.copied, m.len, buf[0]), (1, 1, b'p'));
    assert!(c.udp_recv_from(s, &mut buf, false).is_err());
    c.check_consistency().unwrap();
}
