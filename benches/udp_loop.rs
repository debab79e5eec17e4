//! UDP send + receive of a 64-byte datagram between two sockets of one stack
//! over the in-arena loopback: ns per message, the stack's own cost with no
//! NIC and no system call; beside it, the kernel's UDP doing the same over
//! 127.0.0.1 in the same run.

use std::net::SocketAddrV4;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rbypass_nic::loopback::LoopbackNic;
use rbypass_nic::Nic;
use rbypass_stack::{IfaceConfig, Stack, StackConfig};

fn udp_loop(c: &mut Criterion) {
    let iface = IfaceConfig::loopback();
    let path = std::path::PathBuf::from(format!("/dev/shm/rbypass-bench{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut stack = Stack::create_at(&path, "", &StackConfig::default(), iface).expect("stack");
    stack.set_remove_on_drop(true);
    let mut nic = LoopbackNic::default();
    let (a, b, to) = {
        let mut core = stack.lock();
        let a = core.udp_open().unwrap();
        let b = core.udp_open().unwrap();
        core.udp_bind(a, SocketAddrV4::new(iface.ip(), 1111))
            .unwrap();
        let to = core
            .udp_bind(b, SocketAddrV4::new(iface.ip(), 2222))
            .unwrap();
        (a, b, to)
    };
    let msg = [0x5au8; 64];
    let mut buf = [0u8; 256];
    let mut g = c.benchmark_group("udp_loop");
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_recv_64B_one_lock", |bench| {
        let mut core = stack.lock();
        bench.iter(|| {
            core.udp_send_to(a, black_box(&msg), to).unwrap();
            core.poll(0);
            let m = core.udp_recv_from(b, &mut buf, false).unwrap();
            black_box(m.copied)
        })
    });
    g.bench_function("send_recv_64B_lock_per_call", |bench| {
        bench.iter(|| {
            stack.lock().udp_send_to(a, black_box(&msg), to).unwrap();
            {
                let mut core = stack.lock();
                while let Some(f) = core.dequeue_tx() {
                    let _ = nic.transmit(&mut core, &[f], 0);
                }
                core.poll(0);
            }
            let m = stack.lock().udp_recv_from(b, &mut buf, false).unwrap();
            black_box(m.copied)
        })
    });
    // The kernel doing the same job on this machine, for a same-run ratio.
    let ka = std::net::UdpSocket::bind("127.0.0.1:0").expect("kernel socket");
    let kb = std::net::UdpSocket::bind("127.0.0.1:0").expect("kernel socket");
    let kto = kb.local_addr().unwrap();
    g.bench_function("kernel_send_recv_64B", |bench| {
        bench.iter(|| {
            ka.send_to(black_box(&msg), kto).unwrap();
            let (n, _) = kb.recv_from(&mut buf).unwrap();
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, udp_loop);
criterion_main!(benches);
