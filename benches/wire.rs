//! Wire parse/emit per frame: an Ethernet/IPv4/UDP frame with a 64-byte
//! payload, parsed with both checksums verified, and emitted with both
//! checksums computed.

use std::net::Ipv4Addr;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rbypass_stack::wire::ethernet::{self, EthernetAddress, EthernetFrame};
use rbypass_stack::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use rbypass_stack::wire::udp::{UdpPacket, UdpRepr};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PAYLOAD: [u8; 64] = [0xa5; 64];

fn emit(buf: &mut [u8]) -> usize {
    let l4 = 8 + PAYLOAD.len();
    let _ = ethernet::emit_header(
        buf,
        EthernetAddress([2, 0, 0, 0, 0, 2]),
        EthernetAddress([2, 0, 0, 0, 0, 1]),
        ethernet::ethertype::IPV4,
    );
    let ip = Ipv4Repr {
        src_addr: SRC,
        dst_addr: DST,
        protocol: ipv4::protocol::UDP,
        payload_len: l4,
        ttl: 64,
        dont_frag: true,
        ident: 0,
    };
    let _ = ip.emit(&mut buf[14..]);
    let udp = UdpRepr {
        src_port: 1111,
        dst_port: 2222,
        payload_len: PAYLOAD.len(),
    };
    let _ = udp.emit(&mut buf[34..], SRC, DST, &PAYLOAD);
    34 + l4
}

fn parse(frame: &[u8]) -> usize {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return 0;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return 0;
    };
    let Ok(ipr) = Ipv4Repr::parse(&ip, true) else {
        return 0;
    };
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
        return 0;
    };
    let Ok(r) = UdpRepr::parse(&udp, ipr.src_addr, ipr.dst_addr, true) else {
        return 0;
    };
    r.payload_len
}

fn wire(c: &mut Criterion) {
    let mut buf = [0u8; 256];
    let len = emit(&mut buf);
    assert_eq!(parse(&buf[..len]), 64);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_eth_ipv4_udp_64B", |b| {
        b.iter(|| parse(black_box(&buf[..len])))
    });
    let mut out = [0u8; 256];
    g.bench_function("emit_eth_ipv4_udp_64B", |b| {
        b.iter(|| emit(black_box(&mut out)))
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
