//! TCP between sockets of one stack over the in-arena loopback: a 1 KiB
//! request/response round trip on an established connection (ns per round
//! trip), and bulk throughput with 1 and 4 connections. Beside each, the
//! kernel's TCP over 127.0.0.1 doing the same in the same run.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rbypass_stack::{Core, IfaceConfig, SockError, SocketId, Stack, StackConfig};

fn stack() -> Stack {
    let path = std::path::PathBuf::from(format!("/dev/shm/rbypass-benchtcp{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let cfg = StackConfig {
        max_bufs: 32768,
        max_sockets: 64,
        ..StackConfig::default()
    };
    let mut s = Stack::create_at(&path, "", &cfg, IfaceConfig::loopback()).expect("stack");
    s.set_remove_on_drop(true);
    s
}

/// Opens `n` established connections (client, server) to port 9000.
fn connect(c: &mut Core<'_>, n: usize, now: &mut u64) -> Vec<(SocketId, SocketId)> {
    let l = c.tcp_open().unwrap();
    c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000))
        .unwrap();
    c.tcp_listen(l, 64).unwrap();
    let clients: Vec<SocketId> = (0..n)
        .map(|_| {
            let s = c.tcp_open().unwrap();
            c.tcp_connect(s, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000), *now)
                .unwrap();
            c.tcp_set_nodelay(s, true, *now).unwrap();
            s
        })
        .collect();
    let mut servers = Vec::new();
    for _ in 0..100 {
        *now += 1000;
        c.poll(*now);
        while let Ok((s, _)) = c.tcp_accept(l) {
            c.tcp_set_nodelay(s, true, *now).unwrap();
            servers.push(s);
        }
    }
    assert_eq!(servers.len(), n);
    clients.into_iter().zip(servers).collect()
}

fn recv_exact(c: &mut Core<'_>, s: SocketId, buf: &mut [u8], now: &mut u64) {
    let mut got = 0;
    while got < buf.len() {
        match c.tcp_recv(s, &mut buf[got..], false, *now) {
            Ok(n) => got += n,
            Err(SockError::WouldBlock) => {
                *now += 100;
                c.poll(*now);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn tcp_rr(cr: &mut Criterion) {
    let st = stack();
    let mut now = 1_000_000_000;
    let mut c = st.lock();
    let (cl, sv) = connect(&mut c, 1, &mut now)[0];
    let req = [0x11u8; 1024];
    let mut buf = [0u8; 1024];
    let mut g = cr.benchmark_group("tcp_loop");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rr_1KiB_round_trip", |b| {
        b.iter(|| {
            c.tcp_send(cl, black_box(&req), now).unwrap();
            c.poll(now);
            recv_exact(&mut c, sv, &mut buf, &mut now);
            c.tcp_send(sv, &buf, now).unwrap();
            c.poll(now);
            recv_exact(&mut c, cl, &mut buf, &mut now);
            now += 1000;
            black_box(buf[0])
        })
    });
    drop(c);
    // The kernel doing the same over 127.0.0.1.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut kc = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut ks, _) = l.accept().unwrap();
    kc.set_nodelay(true).unwrap();
    ks.set_nodelay(true).unwrap();
    g.bench_function("kernel_rr_1KiB_round_trip", |b| {
        b.iter(|| {
            kc.write_all(&req).unwrap();
            ks.read_exact(&mut buf).unwrap();
            ks.write_all(&buf).unwrap();
            kc.read_exact(&mut buf).unwrap();
            black_box(buf[0])
        })
    });
    g.finish();
}

/// Moves `bytes` over each of `conns` connections; returns the elapsed time.
fn bulk_rbypass(conns: usize, bytes: usize) -> Duration {
    let st = stack();
    let mut now = 1_000_000_000;
    let mut c = st.lock();
    let pairs = connect(&mut c, conns, &mut now);
    let chunk = vec![0x5au8; 65536];
    let mut buf = vec![0u8; 65536];
    let mut sent = vec![0usize; conns];
    let mut got = vec![0usize; conns];
    let t = Instant::now();
    while got.iter().any(|&g| g < bytes) {
        for (k, &(cl, sv)) in pairs.iter().enumerate() {
            if sent[k] < bytes {
                if let Ok(n) = c.tcp_send(cl, &chunk[..chunk.len().min(bytes - sent[k])], now) {
                    sent[k] += n;
                }
            }
            while let Ok(n) = c.tcp_recv(sv, &mut buf, false, now) {
                if n == 0 {
                    break;
                }
                got[k] += n;
            }
        }
        now += 2000;
        c.poll(now);
    }
    t.elapsed()
}

fn bulk_kernel(conns: usize, bytes: usize) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = Instant::now();
    let readers: Vec<_> = (0..conns)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            std::thread::spawn(move || {
                let chunk = vec![0x5au8; 65536];
                let mut sent = 0;
                while sent < bytes {
                    let n = chunk.len().min(bytes - sent);
                    s.write_all(&chunk[..n]).unwrap();
                    sent += n;
                }
            })
        })
        .collect();
    let servers: Vec<_> = (0..conns)
        .map(|_| {
            let (mut s, _) = l.accept().unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut got = 0;
                while got < bytes {
                    got += s.read(&mut buf).unwrap();
                }
            })
        })
        .collect();
    for r in readers.into_iter().chain(servers) {
        r.join().unwrap();
    }
    t.elapsed()
}

fn tcp_bulk(cr: &mut Criterion) {
    const BYTES: usize = 64 << 20;
    let mut g = cr.benchmark_group("tcp_bulk");
    g.sample_size(10);
    for conns in [1usize, 4] {
        g.throughput(Throughput::Bytes((BYTES * conns) as u64));
        g.bench_function(format!("rbypass_{conns}_conn"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bulk_rbypass(conns, BYTES)).sum())
        });
        g.bench_function(format!("kernel_{conns}_conn"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bulk_kernel(conns, BYTES)).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, tcp_rr, tcp_bulk);
criterion_main!(benches);
