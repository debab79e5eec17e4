//! The kernel-side flow filter, as eBPF: the program that decides, for each
//! frame arriving on the interface, whether it belongs to the stack.
//!
//! A frame belongs to the stack when it is an unfragmented IPv4 TCP or UDP
//! packet whose (protocol, destination address, destination port) is in the
//! flow map, or whose (protocol, 0.0.0.0, port) is (a socket bound to any
//! address). The map is a BPF hash of [`FlowKey`] that the device updates as
//! the stack binds, connects and closes. Everything else, ARP and ICMP
//! included, is the kernel's: the host keeps its SSH, DNS, ping and every
//! port the stack does not own on the same interface.
//!
//! Two flavours share the parsing code:
//! - XDP: a match is redirected to the AF_XDP socket of the receive queue
//!   (falling back to the kernel if that queue has none); the rest passes.
//! - TC ingress (tcx), for the AF_PACKET backend: the packet socket has
//!   already seen the frame; a match is dropped so the kernel does not answer
//!   the stack's segments with resets; the rest goes on.

use std::io;

use crate::bpf::{helper, op, Asm, Insn, Map, Reg, Size};
use crate::flow::FlowKey;

/// Where the program runs, and what it does with a match.
#[derive(Debug, Clone, Copy)]
pub enum Flavour {
    /// Redirect matches to the XSKMAP (by receive queue).
    XdpRedirect { xsks: i32 },
    /// Drop matches at TC ingress.
    TcDrop,
}

/// `xdp_md` and `__sk_buff` field offsets.
mod ctx {
    pub const XDP_DATA: i16 = 0;
    pub const XDP_DATA_END: i16 = 4;
    pub const XDP_RX_QUEUE: i16 = 16;
    pub const SKB_DATA: i16 = 76;
    pub const SKB_DATA_END: i16 = 80;
}

/// Return codes.
mod ret {
    pub const XDP_PASS: i32 = 2;
    pub const TCX_NEXT: i32 = -1;
    pub const TCX_DROP: i32 = 2;
}

/// Entries the flow map holds (sockets with a port, over the whole stack).
pub const FLOW_MAP_ENTRIES: u32 = 65536;

/// Bytes of a flow map key (a [`FlowKey`]).
pub const FLOW_KEY_SIZE: u32 = std::mem::size_of::<FlowKey>() as u32;
/// Bytes of a flow map value (a u32, unused, 1).
pub const FLOW_VALUE_SIZE: u32 = 4;

/// Creates the flow map: [`FlowKey`] to a u32 (unused, 1).
pub fn flow_map() -> io::Result<Map> {
    Map::create(
        crate::bpf::map_type::HASH,
        FLOW_KEY_SIZE,
        FLOW_VALUE_SIZE,
        FLOW_MAP_ENTRIES,
        "rbypass_flows",
    )
}

/// Assembles the filter over `flows` (a map from [`flow_map`]).
pub fn program(flows: &Map, flavour: Flavour) -> io::Result<Vec<Insn>> {
    let (data, data_end, miss) = match flavour {
        Flavour::XdpRedirect { .. } => (ctx::XDP_DATA, ctx::XDP_DATA_END, ret::XDP_PASS),
        Flavour::TcDrop => (ctx::SKB_DATA, ctx::SKB_DATA_END, ret::TCX_NEXT),
    };
    let mut a = Asm::new();
    // r6 = ctx; r2 = data; r3 = data_end.
    a.mov(Reg::R6, Reg::R1)
        .load(Size::W, Reg::R2, Reg::R6, data)
        .load(Size::W, Reg::R3, Reg::R6, data_end)
        // Ethernet + minimal IPv4 header present?
        .mov(Reg::R4, Reg::R2)
        .add_imm(Reg::R4, 34)
        .jmp_reg(op::JGT, Reg::R4, Reg::R3, "miss")
        // EtherType IPv4 (0x0800, read little-endian).
        .load(Size::H, Reg::R5, Reg::R2, 12)
        .jmp_imm(op::JNE, Reg::R5, 0x0008, "miss")
        // Version 4; r5 = header length in bytes.
        .load(Size::B, Reg::R5, Reg::R2, 14)
        .mov(Reg::R4, Reg::R5)
        .rsh_imm(Reg::R4, 4)
        .jmp_imm(op::JNE, Reg::R4, 4, "miss")
        .and_imm(Reg::R5, 0x0f)
        .lsh_imm(Reg::R5, 2)
        .jmp_imm(op::JGT, Reg::R5, 60, "miss")
        // Fragments (offset or more-fragments set) are the kernel's to reassemble.
        .load(Size::H, Reg::R4, Reg::R2, 20)
        .jmp_imm(op::JSET, Reg::R4, 0xff3f, "miss")
        // r7 = protocol: TCP or UDP only.
        .load(Size::B, Reg::R7, Reg::R2, 23)
        .jmp_imm(op::JEQ, Reg::R7, 6, "l4")
        .jmp_imm(op::JNE, Reg::R7, 17, "miss")
        .label("l4")
        // r8 = destination address; r2 = transport header.
        .load(Size::W, Reg::R8, Reg::R2, 30)
        .add(Reg::R2, Reg::R5)
        .add_imm(Reg::R2, 14)
        .mov(Reg::R4, Reg::R2)
        .add_imm(Reg::R4, 4)
        .jmp_reg(op::JGT, Reg::R4, Reg::R3, "miss")
        // r9 = destination port (network order, as the key has it).
        .load(Size::H, Reg::R9, Reg::R2, 2)
        // The key on the stack at r10-8: addr, port, proto, pad.
        .store(Size::W, Reg::R10, -8, Reg::R8)
        .store(Size::H, Reg::R10, -4, Reg::R9)
        .store(Size::B, Reg::R10, -2, Reg::R7)
        .store_imm(Size::B, Reg::R10, -1, 0);
    // Exact address first, then any address.
    for attempt in 0..2 {
        if attempt == 1 {
            a.store_imm(Size::W, Reg::R10, -8, 0);
        }
        a.load_map_fd(Reg::R1, flows.fd())
            .mov(Reg::R2, Reg::R10)
            .add_imm(Reg::R2, -8)
            .call(helper::MAP_LOOKUP_ELEM)
            .jmp_imm(op::JNE, Reg::R0, 0, "hit");
    }
    a.label("miss").mov_imm(Reg::R0, miss).exit().label("hit");
    match flavour {
        Flavour::XdpRedirect { xsks } => {
            // bpf_redirect_map(xsks, rx_queue_index, XDP_PASS): a queue
            // without a socket falls back to the kernel.
            a.load_map_fd(Reg::R1, xsks)
                .load(Size::W, Reg::R2, Reg::R6, ctx::XDP_RX_QUEUE)
                .mov_imm(Reg::R3, ret::XDP_PASS)
                .call(helper::REDIRECT_MAP)
                .exit();
        }
        Flavour::TcDrop => {
            a.mov_imm(Reg::R0, ret::TCX_DROP).exit();
        }
    }
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_both_flavours() {
        // Only the assembly: loading needs privileges (the netns tests load it).
        let Ok(map) = flow_map() else {
            return;
        };
        let x = program(&map, Flavour::XdpRedirect { xsks: map.fd() }).unwrap();
        let t = program(&map, Flavour::TcDrop).unwrap();
        assert!(x.len() > t.len());
        assert_eq!(t.last().unwrap().code, op::JMP | op::EXIT);
    }

    /// An Ethernet + IPv4 (+ options) + TCP/UDP frame.
    fn frame(proto: u8, dst: [u8; 4], port: u16, ihl: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let hl = usize::from(ihl) * 4;
        let mut ip = vec![0u8; hl];
        ip[0] = 0x40 | ihl;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&dst);
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&port.to_be_bytes());
        let total = (hl + l4.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }

    #[test]
    fn tc_program_matches_exactly_the_flows() {
        use crate::bpf::{attach_type, prog_type, Program};
        use crate::flow::{proto, FlowKey};
        use std::net::Ipv4Addr;
        let Ok(map) = flow_map() else {
            eprintln!("skipped: no privilege to create BPF maps");
            return;
        };
        let me = Ipv4Addr::new(198, 18, 0, 2);
        for k in [
            FlowKey::new(proto::TCP, me, 5000),
            FlowKey::new(proto::UDP, Ipv4Addr::UNSPECIFIED, 6000),
        ] {
            map.update(&k.as_bytes(), &1u32.to_ne_bytes()).unwrap();
        }
        let insns = program(&map, Flavour::TcDrop).unwrap();
        let prog = Program::load(
            prog_type::SCHED_CLS,
            &insns,
            "rbypass_test",
            attach_type::TCX_INGRESS,
        )
        .unwrap();
        let (hit, miss) = (ret::TCX_DROP, ret::TCX_NEXT);
        let me = me.octets();
        let cases: &[(Vec<u8>, i32, &str)] = &[
            (frame(6, me, 5000, 5, 0), hit, "tcp exact"),
            (frame(6, me, 5000, 7, 0), hit, "tcp with options"),
            (
                frame(6, [198, 18, 0, 3], 5000, 5, 0),
                miss,
                "tcp other address",
            ),
            (frame(6, me, 5001, 5, 0), miss, "tcp other port"),
            (frame(17, me, 5000, 5, 0), miss, "udp on a tcp port"),
            (
                frame(17, [198, 18, 9, 9], 6000, 5, 0),
                hit,
                "udp any address",
            ),
            (frame(17, me, 6000, 5, 0x2000), miss, "first fragment"),
            (frame(17, me, 6000, 5, 0x0010), miss, "later fragment"),
            (frame(1, me, 6000, 5, 0), miss, "icmp"),
            (frame(6, me, 5000, 5, 0)[..36].to_vec(), miss, "truncated"),
        ];
        for (f, want, what) in cases {
            let mut f = f.clone();
            if f.len() < 60 && what != &"truncated" {
                f.resize(60, 0);
            }
            assert_eq!(prog.test_run(&f).unwrap(), *want, "{what}");
        }
        let mut arp = vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(prog.test_run(&arp).unwrap(), miss, "arp");

        // The XDP flavour passes the verifier; with no socket in the queue's
        // slot a match falls back to the kernel (XDP_PASS).
        let xsks = Map::create(crate::bpf::map_type::XSKMAP, 4, 4, 4, "rbypass_xsks").unwrap();
        let insns = program(&map, Flavour::XdpRedirect { xsks: xsks.fd() }).unwrap();
        let prog = Program::load(prog_type::XDP, &insns, "rbypass_test", attach_type::XDP).unwrap();
        let mut f = frame(6, me, 5000, 5, 0);
        f.resize(60, 0);
        assert_eq!(prog.test_run(&f).unwrap(), ret::XDP_PASS);
    }
}
