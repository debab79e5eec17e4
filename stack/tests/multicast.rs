//! Multicast, SO_REUSEADDR/SO_REUSEPORT and IGMP, driven frame by frame
//! with a virtual clock.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use rbypass_stack::wire::checksum;
use rbypass_stack::wire::ethernet::EthernetAddress;
use rbypass_stack::{Core, SockError, SocketId};

const G: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const G2: Ipv4Addr = Ipv4Addr::new(239, 9, 9, 9);
const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const S2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const S2_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 3]);
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Advances the clock: `poll`, and the multicast timers (a no-op once
/// `Core::poll` calls them itself).
fn tick(c: &mut Core<'_>, now: u64) {
    c.poll(now);
    c.mcast_poll(now);
}

/// A UDP socket with SO_REUSEADDR bound to `addr`.
fn shared_socket(c: &mut Core<'_>, addr: SocketAddrV4) -> SocketId {
    let s = c.udp_open().unwrap();
    c.udp_set_reuseaddr(s, true).unwrap();
    c.udp_bind(s, addr).unwrap();
    s
}

fn from_peer(group: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    mcast_udp_frame(PEER_MAC, PEER_IP, group, sport, dport, payload)
}

/// Every datagram queued on `s`, oldest first, with its sender.
fn recv_all(c: &mut Core<'_>, s: SocketId) -> Vec<(Vec<u8>, SocketAddrV4)> {
    let mut v = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(m) = c.udp_recv_from(s, &mut buf, false) {
        v.push((buf[..m.copied].to_vec(), m.from));
    }
    v
}

fn payloads(c: &mut Core<'_>, s: SocketId) -> Vec<Vec<u8>> {
    recv_all(c, s).into_iter().map(|(p, _)| p).collect()
}

/// IGMP frames among `frames`, checked for what every IGMP message we
/// send must be (TTL 1, Router Alert, TOS 0xc0, valid checksums, the group
/// MAC of the destination); returns (IP destination, IGMP message).
fn igmp_sent(frames: &[Vec<u8>]) -> Vec<(Ipv4Addr, Vec<u8>)> {
    frames
        .iter()
        .filter(|f| f.len() > 23 && f[12..14] == [8, 0] && f[23] == 2)
        .map(|f| {
            assert_eq!(f[14], 0x46, "IPv4 header of 24 bytes");
            assert_eq!(f[15], 0xc0, "TOS internetwork control");
            assert_eq!(f[22], 1, "TTL 1");
            assert_eq!(&f[34..38], &[0x94, 0x04, 0, 0], "Router Alert");
            assert_eq!(checksum::finish(checksum::accumulate(&f[14..38], 0)), 0);
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let msg = f[38..14 + total].to_vec();
            assert_eq!(
                checksum::finish(checksum::accumulate(&msg, 0)),
                0,
                "IGMP checksum"
            );
            let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
            assert_eq!(&f[0..6], &mcast_mac(dst).0, "group MAC of {dst}");
            assert_eq!(Ipv4Addr::new(f[26], f[27], f[28], f[29]), OUR_IP);
            (dst, msg)
        })
        .collect()
}

/// The (record type, group, sources) of a v3 report.
fn v3_records(msg: &[u8]) -> Vec<(u8, Ipv4Addr, Vec<Ipv4Addr>)> {
    assert_eq!(msg[0], 0x22, "IGMPv3 report");
    let n = usize::from(u16::from_be_bytes([msg[6], msg[7]]));
    let mut at = 8;
    let mut v = Vec::new();
    for _ in 0..n {
        let ns = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
        let g = Ipv4Addr::new(msg[at + 4], msg[at + 5], msg[at + 6], msg[at + 7]);
        let srcs = (0..ns)
            .map(|i| {
                let o = at + 8 + 4 * i;
                Ipv4Addr::new(msg[o], msg[o + 1], msg[o + 2], msg[o + 3])
            })
            .collect();
        v.push((msg[at], g, srcs));
        at += 8 + 4 * ns + 4 * usize::from(msg[at + 1]);
    }
    assert_eq!(at, msg.len(), "records fill the report");
    v
}

#[test]
fn group_datagram_reaches_every_member_in_order_sharing_one_buffer() {
    let st = stack();
    let mut c = st.lock();
    let socks: Vec<_> = (0..3)
        .map(|_| {
            let s = shared_socket(&mut c, sa(ANY, 5000));
            c.udp_join_group(s, G, ANY).unwrap();
            s
        })
        .collect();
    let other_port = shared_socket(&mut c, sa(ANY, 5001));
    drain_tx(&mut c);
    let free = c.free_buffers();
    for i in 0..3u8 {
        inject(&mut c, &from_peer(G, 1234, 5000, &[b'a' + i]), 0);
    }
    assert_eq!(
        c.free_buffers(),
        free - 3,
        "one buffer per datagram, shared by three sockets"
    );
    c.check_consistency().unwrap();
    for &s in &socks {
        let got = recv_all(&mut c, s);
        assert_eq!(
            got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(got.iter().all(|(_, f)| *f == sa(PEER_IP, 1234)));
    }
    assert!(payloads(&mut c, other_port).is_empty());
    assert_eq!(c.free_buffers(), free, "every buffer back once all read");
    assert!(drain_tx(&mut c).is_empty(), "no ICMP error for multicast");
    c.check_consistency().unwrap();
}

#[test]
fn other_groups_are_dropped_and_counted() {
    let st = stack();
    let mut c = st.lock();
    let s = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_join_group(s, G, ANY).unwrap();
    inject(&mut c, &from_peer(G2, 1, 5000, b"not ours"), 0);
    assert!(payloads(&mut c, s).is_empty());
    assert_eq!(c.header().counters.rx_drop_mcast_group.get(), 1);
    assert_eq!(c.header().counters.rx_drop_not_our_mac.get(), 0);
    inject(&mut c, &from_peer(G, 1, 5000, b"ours"), 0);
    assert_eq!(payloads(&mut c, s), [b"ours".to_vec()]);
    assert_eq!(c.header().counters.rx_drop_mcast_group.get(), 1);
}

#[test]
fn multicast_all_decides_for_sockets_without_a_membership() {
    let st = stack();
    let mut c = st.lock();
    let member = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_join_group(member, G, ANY).unwrap();
    let bystander = shared_socket(&mut c, sa(ANY, 5000));
    let strict = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_set_multicast_all(strict, false).unwrap();
    assert!(c.udp_multicast_opts(bystander).unwrap().all);
    assert!(!c.udp_multicast_opts(strict).unwrap().all);
    let specific = shared_socket(&mut c, sa(OUR_IP, 5000));
    let bound_group = shared_socket(&mut c, sa(G, 5000));
    let bound_other = shared_socket(&mut c, sa(G2, 5000));
    c.udp_set_multicast_all(bound_group, false).unwrap();
    c.udp_join_group(bound_group, G, ANY).unwrap();
    inject(&mut c, &from_peer(G, 9, 5000, b"x"), 0);
    assert_eq!(payloads(&mut c, member).len(), 1);
    assert_eq!(payloads(&mut c, bystander).len(), 1, "IP_MULTICAST_ALL on");
    assert!(payloads(&mut c, strict).is_empty(), "IP_MULTICAST_ALL off");
    assert!(
        payloads(&mut c, specific).is_empty(),
        "bound to the unicast address"
    );
    assert_eq!(payloads(&mut c, bound_group).len(), 1, "bound to the group");
    assert!(
        payloads(&mut c, bound_other).is_empty(),
        "bound to another group"
    );
}

#[test]
fn connected_sockets_get_multicast_only_from_their_peer() {
    let st = stack();
    let mut c = st.lock();
    learn_peer(&mut c, 0);
    let s = shared_socket(&mut c, sa(G, 5000));
    c.udp_join_group(s, G, ANY).unwrap();
    c.udp_connect(s, sa(PEER_IP, 1111)).unwrap();
    // As in Linux, connecting a wildcard socket fixes its local address to
    // the interface's: it no longer matches the group.
    let wild = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_join_group(wild, G, ANY).unwrap();
    c.udp_connect(wild, sa(PEER_IP, 1111)).unwrap();
    assert_eq!(c.udp_local_addr(wild).unwrap(), sa(OUR_IP, 5000));
    inject(&mut c, &from_peer(G, 1111, 5000, b"peer"), 0);
    inject(&mut c, &from_peer(G, 2222, 5000, b"other port"), 0);
    assert_eq!(payloads(&mut c, s), [b"peer".to_vec()]);
    assert!(payloads(&mut c, wild).is_empty());
}

#[test]
fn source_filters_include_and_exclude() {
    let st = stack();
    let mut c = st.lock();
    let ssm = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_join_source(ssm, G, PEER_IP, ANY).unwrap();
    let asm = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_join_group(asm, G, ANY).unwrap();
    c.udp_block_source(asm, G, PEER_IP, ANY).unwrap();
    inject(&mut c, &from_peer(G, 1, 5000, b"from peer"), 0);
    inject(
        &mut c,
        &mcast_udp_frame(S2_MAC, S2_IP, G, 1, 5000, b"from s2"),
        0,
    );
    assert_eq!(
        payloads(&mut c, ssm),
        [b"from peer".to_vec()],
        "INCLUDE {{peer}}"
    );
    assert_eq!(
        payloads(&mut c, asm),
        [b"from s2".to_vec()],
        "EXCLUDE {{peer}}"
    );

    // Mode errors, as Linux: a filter with sources keeps its mode.
    assert_eq!(
        c.udp_block_source(ssm, G, S2_IP, ANY),
        Err(SockError::Invalid)
    );
    assert_eq!(
        c.udp_join_source(asm, G, S2_IP, ANY),
        Err(SockError::Invalid)
    );
    assert_eq!(
        c.udp_join_source(ssm, G, PEER_IP, ANY),
        Err(SockError::AddrNotAvailable),
        "source already there"
    );
    assert_eq!(
        c.udp_leave_source(ssm, G, S2_IP, ANY),
        Err(SockError::AddrNotAvailable),
        "source not there"
    );
    let fresh = c.udp_open().unwrap();
    assert_eq!(
        c.udp_block_source(fresh, G, S2_IP, ANY),
        Err(SockError::Invalid),
        "no prior join"
    );

    // Unblocking lets the peer in again.
    c.udp_unblock_source(asm, G, PEER_IP, ANY).unwrap();
    inject(&mut c, &from_peer(G, 1, 5000, b"again"), 0);
    assert_eq!(payloads(&mut c, asm), [b"again".to_vec()]);
    assert_eq!(payloads(&mut c, ssm), [b"again".to_vec()]);

    // An ASM membership with no sources switches to INCLUDE on a source join.
    c.udp_join_source(asm, G, S2_IP, ANY).unwrap();
    inject(&mut c, &from_peer(G, 1, 5000, b"p"), 0);
    assert!(payloads(&mut c, asm).is_empty());

    // Dropping the last source leaves the group.
    c.udp_leave_source(ssm, G, PEER_IP, ANY).unwrap();
    assert!(c.udp_memberships(ssm).unwrap().is_empty());
    assert_eq!(
        c.udp_leave_group(ssm, G, ANY),
        Err(SockError::AddrNotAvailable)
    );

    // Ten sources per membership.
    let s = c.udp_open().unwrap();
    for i in 0..10 {
        c.udp_join_source(s, G2, Ipv4Addr::new(10, 0, 0, i), ANY)
            .unwrap();
    }
    assert_eq!(
        c.udp_join_source(s, G2, Ipv4Addr::new(10, 0, 0, 10), ANY),
        Err(SockError::NoBuffers)
    );
}

#[test]
fn join_and_leave_errors_and_limits() {
    let st = stack();
    let mut c = st.lock();
    let s = shared_socket(&mut c, sa(ANY, 5000));
    assert_eq!(
        c.udp_join_group(s, OUR_IP, ANY),
        Err(SockError::Invalid),
        "not multicast"
    );
    assert_eq!(SockError::Invalid.errno(), libc::EINVAL);
    assert_eq!(
        c.udp_join_group(s, G, Ipv4Addr::new(10, 1, 1, 1)),
        Err(SockError::NoDevice)
    );
    assert_eq!(
        c.udp_leave_group(s, G, ANY),
        Err(SockError::AddrNotAvailable)
    );
    assert_eq!(SockError::AddrNotAvailable.errno(), libc::EADDRNOTAVAIL);
    c.udp_join_group(s, G, ANY).unwrap();
    assert_eq!(
        c.udp_join_group(s, G, OUR_IP),
        Err(SockError::AddrInUse),
        "one interface: the same membership"
    );
    assert_eq!(SockError::AddrInUse.errno(), libc::EADDRINUSE);
    for i in 1..20u8 {
        c.udp_join_group(s, Ipv4Addr::new(239, 0, 0, i), OUR_IP)
            .unwrap();
    }
    assert_eq!(
        c.udp_join_group(s, Ipv4Addr::new(239, 0, 0, 99), ANY),
        Err(SockError::NoBuffers),
        "21st membership"
    );
    assert_eq!(SockError::NoBuffers.errno(), libc::ENOBUFS);
    // Leaving stops delivery.
    inject(&mut c, &from_peer(G, 1, 5000, b"in"), 0);
    c.udp_leave_group(s, G, ANY).unwrap();
    inject(&mut c, &from_peer(G, 1, 5000, b"out"), 0);
    assert_eq!(payloads(&mut c, s), [b"in".to_vec()]);
    assert_eq!(c.header().counters.rx_drop_mcast_group.get(), 1);
    c.udp_join_group(s, Ipv4Addr::new(239, 0, 0, 99), ANY)
        .expect("room again after a leave");
}

#[test]
fn group_set_and_binding_gen() {
    let st = stack();
    let mut c = st.lock();
    let a = c.udp_open().unwrap();
    let b = c.udp_open().unwrap();
    let groups = |c: &Core<'_>| {
        let mut v = Vec::new();
        c.for_each_group(|g| v.push(g));
        v.sort();
        v
    };
    let g0 = c.binding_gen();
    c.udp_join_group(a, G, ANY).unwrap();
    let g1 = c.binding_gen();
    assert_ne!(g0, g1, "a new group changes the set");
    c.udp_join_group(b, G, ANY).unwrap();
    assert_eq!(c.binding_gen(), g1, "a second member does not");
    c.udp_join_group(b, G2, ANY).unwrap();
    assert_eq!(groups(&c), [G, G2]);
    c.udp_close(b).unwrap();
    assert_eq!(groups(&c), [G], "close drops the socket's memberships");
    let g2 = c.binding_gen();
    c.udp_leave_group(a, G, ANY).unwrap();
    assert!(groups(&c).is_empty());
    assert_ne!(c.binding_gen(), g2);
}

#[test]
fn reuse_bind_rules() {
    let st = stack();
    let mut c = st.lock();
    let open = |c: &mut Core<'_>, addr: bool, port: bool| {
        let s = c.udp_open().unwrap();
        c.udp_set_reuseaddr(s, addr).unwrap();
        c.udp_set_reuseport(s, port).unwrap();
        s
    };
    let plain = open(&mut c, false, false);
    c.udp_bind(plain, sa(ANY, 7000)).unwrap();
    let both = open(&mut c, true, true);
    assert_eq!(
        c.udp_bind(both, sa(ANY, 7000)),
        Err(SockError::AddrInUse),
        "the first socket has neither"
    );
    c.udp_close(plain).unwrap();

    let a = open(&mut c, true, false);
    c.udp_bind(a, sa(ANY, 7000)).unwrap();
    let b = open(&mut c, true, false);
    c.udp_bind(b, sa(OUR_IP, 7000))
        .expect("both SO_REUSEADDR, overlapping addresses");
    let p = open(&mut c, false, true);
    assert_eq!(
        c.udp_bind(p, sa(ANY, 7000)),
        Err(SockError::AddrInUse),
        "SO_REUSEPORT against SO_REUSEADDR sockets"
    );
    let none = open(&mut c, false, false);
    assert_eq!(c.udp_bind(none, sa(ANY, 7000)), Err(SockError::AddrInUse));

    let p1 = open(&mut c, false, true);
    c.udp_bind(p1, sa(ANY, 7001)).unwrap();
    let p2 = open(&mut c, false, true);
    c.udp_bind(p2, sa(ANY, 7001)).expect("both SO_REUSEPORT");
    let r = open(&mut c, true, false);
    assert_eq!(
        c.udp_bind(r, sa(ANY, 7001)),
        Err(SockError::AddrInUse),
        "SO_REUSEADDR alone against SO_REUSEPORT sockets"
    );
    // Distinct specific addresses never clash.
    let x = open(&mut c, false, false);
    c.udp_bind(x, sa(OUR_IP, 7002)).unwrap();
    let y = open(&mut c, false, false);
    c.udp_bind(y, sa(G, 7002))
        .expect("a group address is another address");
}

#[test]
fn unicast_goes_to_the_most_recently_bound_of_equals() {
    let st = stack();
    let mut c = st.lock();
    let old = shared_socket(&mut c, sa(ANY, 7100));
    let new = shared_socket(&mut c, sa(ANY, 7100));
    inject(&mut c, &udp_frame(1, 7100, b"u"), 0);
    assert!(payloads(&mut c, old).is_empty());
    assert_eq!(payloads(&mut c, new), [b"u".to_vec()]);
    c.udp_close(new).unwrap();
    inject(&mut c, &udp_frame(1, 7100, b"v"), 0);
    assert_eq!(payloads(&mut c, old), [b"v".to_vec()]);
}

#[test]
fn reuseport_spreads_flows_and_keeps_each_on_one_socket() {
    let st = stack();
    let mut c = st.lock();
    let socks: Vec<_> = (0..4)
        .map(|_| {
            let s = c.udp_open().unwrap();
            c.udp_set_reuseport(s, true).unwrap();
            c.udp_bind(s, sa(ANY, 7200)).unwrap();
            s
        })
        .collect();
    let mut owner = Vec::new();
    for round in 0..3 {
        for sport in 40000..40032u16 {
            inject(&mut c, &udp_frame(sport, 7200, &sport.to_be_bytes()), 0);
        }
        let mut got = vec![usize::MAX; 32];
        for (k, &s) in socks.iter().enumerate() {
            for p in payloads(&mut c, s) {
                let sport = u16::from_be_bytes([p[0], p[1]]);
                got[usize::from(sport - 40000)] = k;
            }
        }
        assert!(
            got.iter().all(|&k| k != usize::MAX),
            "every datagram delivered once"
        );
        if round == 0 {
            owner = got;
        } else {
            assert_eq!(got, owner, "each flow stays on its socket");
        }
    }
    let used = (0..4).filter(|k| owner.contains(k)).count();
    assert!(
        used >= 3,
        "32 flows over 4 sockets used only {used}: {owner:?}"
    );
    // A group member bound to another address is a group of its own.
    let spec = c.udp_open().unwrap();
    c.udp_set_reuseport(spec, true).unwrap();
    c.udp_bind(spec, sa(OUR_IP, 7200)).unwrap();
    for sport in 40000..40008u16 {
        inject(&mut c, &udp_frame(sport, 7200, b"s"), 0);
    }
    assert_eq!(
        payloads(&mut c, spec).len(),
        8,
        "the specific address scores higher"
    );
}

#[test]
fn sent_multicast_goes_to_the_group_mac_and_loops_back_to_members() {
    let st = stack();
    let mut c = st.lock();
    let rx = shared_socket(&mut c, sa(ANY, 5000));
    c.udp_join_group(rx, G, ANY).unwrap();
    let tx = c.udp_open().unwrap();
    let opts = c.udp_multicast_opts(tx).unwrap();
    assert_eq!((opts.ttl, opts.loopback, opts.all), (1, true, true));
    assert_eq!(opts.interface, ANY);
    drain_tx(&mut c);
    let free = c.free_buffers();
    c.udp_send_to(tx, b"hello group", sa(G, 5000)).unwrap();
    let me = c.udp_local_addr(tx).unwrap();
    assert_eq!(c.free_buffers(), free - 1, "wire and loop share the buffer");
    // Delivered at once (no poll needed), from our own address.
    let got = recv_all(&mut c, rx);
    assert_eq!(got, [(b"hello group".to_vec(), sa(OUR_IP, me.port()))]);
    assert_eq!(c.header().counters.udp_mcast_looped.get(), 1);
    let out = drain_tx(&mut c);
    assert_eq!(out.len(), 1, "and it still goes to the NIC");
    let f = &out[0];
    assert_eq!(&f[0..6], &[0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]);
    assert_eq!(&f[6..12], &OUR_MAC.0);
    assert_eq!(f[22], 1, "IP_MULTICAST_TTL default 1");
    assert_eq!(&f[26..30], &OUR_IP.octets());
    assert_eq!(&f[30..34], &G.octets());
    verify_ip_frame(f);
    assert_eq!(c.free_buffers(), free);

    // The device handing our frame back (the loop NIC does) is no second copy.
    inject(&mut c, f, 0);
    assert!(payloads(&mut c, rx).is_empty());
    assert_eq!(c.header().counters.rx_mcast_own_echo.get(), 1);

    // TTL.
    c.udp_set_multicast_ttl(tx, 7).unwrap();
    c.udp_send_to(tx, b"ttl", sa(G, 5000)).unwrap();
    assert_eq!(drain_tx(&mut c)[0][22], 7);
    // TTL 0: loop only.
    c.udp_set_multicast_ttl(tx, 0).unwrap();
    c.udp_send_to(tx, b"host only", sa(G, 5000)).unwrap();
    assert!(drain_tx(&mut c).is_empty(), "TTL 0 never reaches the wire");
    assert_eq!(
        payloads(&mut c, rx),
        [b"ttl".to_vec(), b"host only".to_vec()]
    );
    c.udp_set_multicast_ttl(tx, 1).unwrap();

    // Loop off: wire only.
    c.udp_set_multicast_loop(tx, false).unwrap();
    assert!(!c.udp_multicast_opts(tx).unwrap().loopback);
    c.udp_send_to(tx, b"no loop", sa(G, 5000)).unwrap();
    assert_eq!(drain_tx(&mut c).len(), 1);
    assert!(payloads(&mut c, rx).is_empty());

    // A group nobody here joined: wire only.
    c.udp_set_multicast_loop(tx, true).unwrap();
    let rx2 = shared_socket(&mut c, sa(ANY, 5001));
    c.udp_send_to(tx, b"elsewhere", sa(G2, 5001)).unwrap();
    assert_eq!(drain_tx(&mut c).len(), 1);
    assert!(payloads(&mut c, rx2).is_empty());
    c.check_consistency().unwrap();
}

#[test]
fn multicast_if_sets_the_source_address() {
    let st = stack();
    let mut c = st.lock();
    let tx = c.udp_open().unwrap();
    assert_eq!(
        c.udp_set_multicast_if(tx, Ipv4Addr::new(10, 9, 9, 9)),
        Err(SockError::AddrNotAvailable)
    );
    c.udp_set_multicast_if(tx, OUR_IP).unwrap();
    assert_eq!(c.udp_multicast_opts(tx).unwrap().interface, OUR_IP);
    c.udp_send_to(tx, b"x", sa(G, 5000)).unwrap();
    let f = &drain_tx(&mut c)[0];
    assert_eq!(&f[26..30], &OUR_IP.octets());
    c.udp_set_multicast_if(tx, ANY).unwrap();
    assert_eq!(c.udp_multicast_opts(tx).unwrap().interface, ANY);
}

#[test]
fn igmp_report_on_join_repeated_once_then_leave_on_close() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_join_group(s, G, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(out.len(), 1, "one report at once");
    let (dst, msg) = &out[0];
    assert_eq!(*dst, Ipv4Addr::new(224, 0, 0, 22));
    assert_eq!(v3_records(msg), [(4, G, vec![])], "CHANGE_TO_EXCLUDE {{}}");
    assert_eq!(c.header().counters.igmp_tx_reports.get(), 1);
    let first = msg.clone();

    // A second member changes nothing.
    let s2 = c.udp_open().unwrap();
    c.udp_join_group(s2, G, ANY).unwrap();
    assert!(drain_tx(&mut c).is_empty());

    // The repeat comes within the unsolicited report interval (1 s), once.
    let due = c.mcast_deadline().expect("a repeat is scheduled");
    assert!(due <= SEC, "{due}");
    let mut repeats = Vec::new();
    let mut t = 0;
    while t <= 5 * SEC {
        tick(&mut c, t);
        repeats.extend(igmp_sent(&drain_tx(&mut c)));
        t += 10 * MS;
    }
    assert_eq!(repeats.len(), 1, "robustness 2: sent twice in all");
    assert_eq!(repeats[0].1, first);
    assert_eq!(c.mcast_deadline(), None);

    // Closing the sockets: the last one leaves (CHANGE_TO_INCLUDE {}).
    c.udp_close(s).unwrap();
    assert!(drain_tx(&mut c).is_empty(), "another member remains");
    c.udp_close(s2).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(out.len(), 1);
    assert_eq!(v3_records(&out[0].1), [(3, G, vec![])]);
    assert_eq!(c.header().counters.igmp_tx_leaves.get(), 1);
    let mut repeats = Vec::new();
    for i in 0..=300 {
        tick(&mut c, t + i * 10 * MS);
        repeats.extend(igmp_sent(&drain_tx(&mut c)));
    }
    assert_eq!(repeats.len(), 1, "the leave is repeated once too");
    assert_eq!(v3_records(&repeats[0].1), [(3, G, vec![])]);
}

#[test]
fn igmp_source_joins_report_allow_and_block() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_join_source(s, G, PEER_IP, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(
        v3_records(&out[0].1),
        [(5, G, vec![PEER_IP])],
        "ALLOW {{peer}}"
    );
    c.udp_join_source(s, G, S2_IP, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(v3_records(&out[0].1), [(5, G, vec![S2_IP])]);
    c.udp_leave_source(s, G, PEER_IP, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(
        v3_records(&out[0].1),
        [(6, G, vec![PEER_IP])],
        "BLOCK {{peer}}"
    );
    // An ASM member makes the group EXCLUDE {}.
    let asm = c.udp_open().unwrap();
    c.udp_join_group(asm, G, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(v3_records(&out[0].1), [(4, G, vec![])]);
}

#[test]
fn igmp_off_sends_nothing_and_all_hosts_is_never_reported() {
    let st = stack();
    let mut c = st.lock();
    assert!(c.igmp_enabled());
    let s = c.udp_open().unwrap();
    c.udp_join_group(s, Ipv4Addr::new(224, 0, 0, 1), ANY)
        .unwrap();
    assert!(drain_tx(&mut c).is_empty(), "all-hosts is not reported");
    c.set_igmp_enabled(false);
    c.udp_join_group(s, G, ANY).unwrap();
    c.udp_leave_group(s, G, ANY).unwrap();
    c.udp_join_group(s, G2, ANY).unwrap();
    for t in 0..50 {
        tick(&mut c, t * 100 * MS);
    }
    inject(
        &mut c,
        &igmp_frame(
            Ipv4Addr::new(224, 0, 0, 1),
            &igmp_msg(vec![0x11, 10, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0]),
        ),
        5 * SEC,
    );
    for t in 50..150 {
        tick(&mut c, t * 100 * MS);
    }
    assert!(drain_tx(&mut c).is_empty());
    assert_eq!(c.mcast_deadline(), None);
    // Delivery does not depend on IGMP.
    c.udp_bind(s, sa(ANY, 5000)).unwrap();
    inject(&mut c, &from_peer(G2, 1, 5000, b"still"), 0);
    assert_eq!(payloads(&mut c, s), [b"still".to_vec()]);
}

#[test]
fn igmpv3_queries_are_answered_within_max_resp_time() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_join_group(s, G, ANY).unwrap();
    c.udp_join_source(s, G2, S2_IP, ANY).unwrap();
    let mut t = 0;
    while t <= 2 * SEC {
        tick(&mut c, t);
        t += 10 * MS;
    }
    drain_tx(&mut c);
    // General query, Max Resp Time 1 s (code 10), to all-hosts.
    let q = igmp_msg(vec![0x11, 10, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0]);
    let start = t;
    inject(&mut c, &igmp_frame(Ipv4Addr::new(224, 0, 0, 1), &q), t);
    assert_eq!(c.header().counters.igmp_rx_queries.get(), 1);
    assert!(drain_tx(&mut c).is_empty(), "answered after a random delay");
    let mut answers = Vec::new();
    while t <= start + 3 * SEC {
        tick(&mut c, t);
        for a in igmp_sent(&drain_tx(&mut c)) {
            answers.push((t, a));
        }
        t += 10 * MS;
    }
    assert_eq!(answers.len(), 1, "one report for every group");
    assert!(answers[0].0 <= start + SEC + 10 * MS);
    let mut recs = v3_records(&answers[0].1 .1);
    recs.sort();
    assert_eq!(
        recs,
        [(1, G2, vec![S2_IP]), (2, G, vec![])],
        "MODE_IS_INCLUDE/EXCLUDE"
    );

    // A group-specific query, sent to the group.
    let mut q = igmp_msg(vec![0x11, 5, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0]);
    q[4..8].copy_from_slice(&G.octets());
    let q = igmp_msg(q);
    inject(&mut c, &igmp_frame(G, &q), t);
    let start = t;
    let mut answers = Vec::new();
    while t <= start + 2 * SEC {
        tick(&mut c, t);
        answers.extend(igmp_sent(&drain_tx(&mut c)));
        t += 10 * MS;
    }
    assert_eq!(answers.len(), 1);
    assert_eq!(v3_records(&answers[0].1), [(2, G, vec![])]);
    // A query for a group we are not in is not taken in.
    let mut q = q.clone();
    q[4..8].copy_from_slice(&Ipv4Addr::new(239, 7, 7, 7).octets());
    let q = igmp_msg(q);
    inject(&mut c, &igmp_frame(Ipv4Addr::new(239, 7, 7, 7), &q), t);
    assert_eq!(c.header().counters.igmp_rx_queries.get(), 2);
    // A corrupt query is counted and ignored.
    let mut bad = igmp_msg(vec![0x11, 10, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0]);
    bad[9] ^= 1;
    inject(&mut c, &igmp_frame(Ipv4Addr::new(224, 0, 0, 1), &bad), t);
    assert_eq!(c.header().counters.rx_drop_igmp.get(), 1);
    assert_eq!(c.mcast_deadline(), None);
}

#[test]
fn igmpv2_querier_switches_to_v2_reports_and_leaves() {
    let st = stack();
    let mut c = st.lock();
    let s = c.udp_open().unwrap();
    c.udp_join_group(s, G, ANY).unwrap();
    let mut t = 0;
    while t <= 2 * SEC {
        tick(&mut c, t);
        t += 10 * MS;
    }
    drain_tx(&mut c);
    // An 8-byte query with a Max Resp Time: IGMPv2.
    let q = igmp_msg(vec![0x11, 20, 0, 0, 0, 0, 0, 0]);
    inject(&mut c, &igmp_frame(Ipv4Addr::new(224, 0, 0, 1), &q), t);
    let start = t;
    let mut answers = Vec::new();
    while t <= start + 3 * SEC {
        tick(&mut c, t);
        answers.extend(igmp_sent(&drain_tx(&mut c)));
        t += 10 * MS;
    }
    assert_eq!(answers.len(), 1);
    let (dst, msg) = &answers[0];
    assert_eq!(*dst, G, "a v2 report goes to the group");
    assert_eq!(msg.len(), 8);
    assert_eq!(msg[0], 0x16);
    assert_eq!(&msg[4..8], &G.octets());
    // Another member's v2 report suppresses ours.
    inject(&mut c, &igmp_frame(Ipv4Addr::new(224, 0, 0, 1), &q), t);
    let mut other = igmp_msg(vec![0x16, 0, 0, 0, 0, 0, 0, 0]);
    other[4..8].copy_from_slice(&G.octets());
    let other = igmp_msg(other);
    inject(&mut c, &igmp_frame(G, &other), t);
    assert_eq!(c.header().counters.igmp_rx_reports.get(), 1);
    let start = t;
    while t <= start + 3 * SEC {
        tick(&mut c, t);
        assert!(
            drain_tx(&mut c).is_empty(),
            "suppressed by the other report"
        );
        t += 10 * MS;
    }
    // Leaving sends a v2 leave to all-routers.
    c.udp_leave_group(s, G, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Ipv4Addr::new(224, 0, 0, 2));
    assert_eq!(out[0].1[0], 0x17);
    assert_eq!(&out[0].1[4..8], &G.octets());
    // The v2 querier is forgotten after the Older Version Querier Present
    // Timeout: joins are v3 again.
    tick(&mut c, t + 261 * SEC);
    c.udp_join_group(s, G2, ANY).unwrap();
    let out = igmp_sent(&drain_tx(&mut c));
    assert_eq!(v3_records(&out[0].1), [(4, G2, vec![])]);
}

#[test]
fn the_loopback_stack_has_no_wire_so_sent_multicast_holds_no_buffer() {
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/rbypass-test{}-loopmc",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let cfg = rbypass_stack::StackConfig {
        max_bufs: 64,
        max_sockets: 16,
        ..rbypass_stack::StackConfig::default()
    };
    let mut st =
        rbypass_stack::Stack::create_at(&path, "", &cfg, rbypass_stack::IfaceConfig::loopback())
            .unwrap();
    st.set_remove_on_drop(true);
    let mut c = st.lock();
    let lo = Ipv4Addr::LOCALHOST;
    let rx = shared_socket(&mut c, sa(ANY, 7000));
    c.udp_join_group(rx, G, lo).unwrap();
    let tx = c.udp_open().unwrap();
    c.udp_set_multicast_if(tx, lo).unwrap();
    tick(&mut c, MS);
    let free = c.free_buffers();
    // Far more datagrams than the pool has buffers: each must come back.
    for i in 0..500u32 {
        c.udp_send_to(tx, &i.to_be_bytes(), sa(G, 7000)).unwrap();
        tick(&mut c, MS + u64::from(i));
        assert_eq!(payloads(&mut c, rx), vec![i.to_be_bytes().to_vec()]);
    }
    assert_eq!(c.free_buffers(), free, "no buffer left behind");
    assert!(
        !c.has_tx(),
        "nothing waits for a wire the stack does not have"
    );
}
