//! Interop with Linux TCP over a TAP in a namespace, with the fault
//! injector between the stack and the TAP: a bulk transfer each way at once
//! (SHA-256 compared) under a clean link, 1% loss, 1% reordering with delay,
//! 0.5% duplication, 0.1% corruption, and all of these together; and 1,000
//! concurrent short connections, each exchanging a checked message.
//!
//! Needs root; skipped without. `RBYPASS_TEST_BULK_MIB` sets the transfer
//! size (256 MiB by default).

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::fault::{FaultConfig, FaultyNic};
use rbypass_nic::tap::TapNic;
use rbypass_nic::Nic;
use rbypass_stack::clock::{self, MS};
use rbypass_stack::{IfaceConfig, SockError, SocketId, Stack, StackConfig};
use sha2::{Digest, Sha256};
use support::netns::{have_root_and_netns, NetNs};

const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
const STACK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
const BULK_PORT: u16 = 7100;
const SHORT_PORT: u16 = 7101;
const ROLE: &str = "RBYPASS_TEST_TCPF_ROLE";
const SHORT_CONNS: usize = 1000;

fn bulk_bytes() -> usize {
    std::env::var("RBYPASS_TEST_BULK_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(256)
        << 20
}

/// Deterministic stream `dir` (0: kernel to stack, 1: stack to kernel).
fn fill(dir: u8, offset: usize, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let i = (offset + k) as u64;
        *b = ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8) ^ dir.wrapping_mul(0x5b);
    }
}

fn expected_sha(dir: u8, n: usize) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < n {
        let k = buf.len().min(n - off);
        fill(dir, off, &mut buf[..k]);
        h.update(&buf[..k]);
        off += k;
    }
    format!("{:x}", h.finalize())
}

/// Kernel-side programs, run inside the namespace.
#[test]
fn kernel_faults_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let n = bulk_bytes();
    match role.as_str() {
        "bulk" => {
            let s = TcpStream::connect_timeout(
                &SocketAddrV4::new(STACK_IP, BULK_PORT).into(),
                Duration::from_secs(10),
            )
            .expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut off = 0;
                while off < n {
                    let k = buf.len().min(n - off);
                    fill(0, off, &mut buf[..k]);
                    w.write_all(&buf[..k]).unwrap();
                    off += k;
                }
                w.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut r = s;
            let mut h = Sha256::new();
            let mut got = 0;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let k = r.read(&mut buf).expect("read");
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                got += k;
            }
            writer.join().unwrap();
            println!("kernel received {got} sha256 {:x}", h.finalize());
        }
        "short" => {
            let mut conns = Vec::with_capacity(SHORT_CONNS);
            for k in 0..SHORT_CONNS {
                let s = TcpStream::connect_timeout(
                    &SocketAddrV4::new(STACK_IP, SHORT_PORT).into(),
                    Duration::from_secs(10),
                )
                .unwrap_or_else(|e| panic!("connect {k}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                conns.push(s);
            }
            for (k, s) in conns.iter_mut().enumerate() {
                s.write_all(format!("hello {k:04}").as_bytes()).unwrap();
            }
            let mut ok = 0;
            for (k, s) in conns.iter_mut().enumerate() {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&buf),
                    format!("HELLO {k:04}"),
                    "connection {k}"
                );
                ok += 1;
            }
            println!("kernel: {ok} short connections checked");
        }
        other => panic!("unknown role {other}"),
    }
}

fn setup(tag: &str, max_sockets: u32) -> Option<(NetNs, Arc<Stack>, TapNic)> {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return None;
    }
    let ns = NetNs::create(tag).expect("namespace");
    let tap = format!("rbt{tag}{}", std::process::id() % 1_000_000);
    let nic = TapNic::open(&tap).expect("tap");
    ns.move_link(&tap).unwrap();
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", &tap])
        .unwrap();
    ns.ip(&["link", "set", &tap, "up"]).unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let caps = nic.caps();
    let path =
        std::path::PathBuf::from(format!("/dev/shm/rbypass-nstf{tag}{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let cfg = StackConfig {
        max_bufs: 32768,
        max_sockets,
        ..StackConfig::default()
    };
    let mut stack = Stack::create_at(
        &path,
        "",
        &cfg,
        IfaceConfig::new(caps.mac, STACK_IP, 24, None, caps.mtu),
    )
    .unwrap();
    stack.set_remove_on_drop(true);
    Some((ns, Arc::new(stack), nic))
}

fn spawn_role(ns: &NetNs, role: &str) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            exe.to_str().unwrap(),
            "kernel_faults_role",
            "--exact",
            "--nocapture",
        ])
        .env(ROLE, role)
        .env("RBYPASS_TEST_BULK_MIB", (bulk_bytes() >> 20).to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// One bulk run under `faults`: kernel and stack each send `n` bytes.
fn bulk(tag: &str, faults: FaultConfig) {
    let Some((ns, stack, nic)) = setup(tag, 64) else {
        return;
    };
    let n = bulk_bytes();
    let l = {
        let mut c = stack.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(STACK_IP, BULK_PORT))
            .unwrap();
        c.tcp_listen(l, 4).unwrap();
        l
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stack, stop) = (stack.clone(), stop.clone());
        std::thread::spawn(move || -> (usize, String, FaultConfig) {
            let mut d = Driver::new(stack.clone(), FaultyNic::new(nic, faults));
            let mut conn: Option<SocketId> = None;
            let (mut sent, mut got, mut closed) = (0usize, 0usize, false);
            let mut h = Sha256::new();
            let mut out = vec![0u8; 1 << 16];
            let mut inb = vec![0u8; 1 << 16];
            let end = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let now = clock::now_ns();
                d.poll(now).unwrap();
                {
                    let mut c = stack.lock();
                    if conn.is_none() {
                        conn = c.tcp_accept(l).ok().map(|x| x.0);
                    }
                    if let (Some(s), false) = (conn, closed) {
                        while sent < n {
                            let k = out.len().min(n - sent);
                            fill(1, sent, &mut out[..k]);
                            match c.tcp_send(s, &out[..k], now) {
                                Ok(m) => sent += m,
                                Err(SockError::WouldBlock) | Err(SockError::NoBuffers) => break,
                                Err(e) => panic!("send: {e}"),
                            }
                        }
                        loop {
                            match c.tcp_recv(s, &mut inb, false, now) {
                                Ok(0) => {
                                    if sent == n {
                                        c.tcp_close(s, now).unwrap();
                                        closed = true;
                                    }
                                    break;
                                }
                                Ok(k) => {
                                    h.update(&inb[..k]);
                                    got += k;
                                }
                                Err(SockError::WouldBlock) => break,
                                Err(e) => panic!("recv after {got}: {e}"),
                            }
                        }
                    }
                    if closed && c.sockets_in_use() <= 1 && !c.has_tx() {
                        break;
                    }
                }
                d.poll(clock::now_ns()).unwrap();
                d.wait(Duration::from_micros(200)).unwrap();
            }
            (got, format!("{:x}", h.finalize()), faults)
        })
    };
    let child = spawn_role(&ns, "bulk");
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (got, sha, _) = worker.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "[{tag}] {text}{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("panicked") || l.contains("assert"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let k = &stack.header().counters;
    eprintln!(
        "[{tag}] stack: retransmits {} fast {} ooo {} csum/hdr drops {}",
        k.tcp_retransmits.get(),
        k.tcp_fast_retransmits.get(),
        k.tcp_ooo_segments.get(),
        k.rx_drop_tcp.get() + k.rx_drop_ip_csum.get()
    );
    assert!(out.status.success(), "[{tag}] kernel side failed");
    assert_eq!(got, n, "[{tag}] stack received every byte");
    assert_eq!(
        sha,
        expected_sha(0, n),
        "[{tag}] stack's SHA-256 of what the kernel sent"
    );
    assert!(
        text.contains(&format!(
            "kernel received {n} sha256 {}",
            expected_sha(1, n)
        )),
        "[{tag}] kernel's SHA-256 of what the stack sent"
    );
}

fn f(drop: f64, reorder: f64, delay: f64, dup: f64, corrupt: f64, seed: u64) -> FaultConfig {
    FaultConfig {
        drop,
        duplicate: dup,
        reorder,
        corrupt,
        delay,
        delay_ns: MS,
        seed,
    }
}

#[test]
fn bulk_clean_link() {
    bulk("fa", f(0.0, 0.0, 0.0, 0.0, 0.0, 1));
}

#[test]
fn bulk_one_percent_loss() {
    bulk("fb", f(0.01, 0.0, 0.0, 0.0, 0.0, 2));
}

#[test]
fn bulk_one_percent_reordering_with_delay() {
    bulk("fc", f(0.0, 0.01, 0.01, 0.0, 0.0, 3));
}

#[test]
fn bulk_half_percent_duplication() {
    bulk("fd", f(0.0, 0.0, 0.0, 0.005, 0.0, 4));
}

#[test]
fn bulk_tenth_percent_corruption() {
    bulk("fe", f(0.0, 0.0, 0.0, 0.0, 0.001, 5));
}

#[test]
fn bulk_all_faults_at_once() {
    bulk("ff", f(0.01, 0.01, 0.01, 0.005, 0.001, 6));
}

#[test]
fn thousand_concurrent_short_connections() {
    let Some((ns, stack, nic)) = setup("fs", 4096) else {
        return;
    };
    let l = {
        let mut c = stack.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(STACK_IP, SHORT_PORT))
            .unwrap();
        c.tcp_listen(l, 4096).unwrap();
        l
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stack, stop) = (stack.clone(), stop.clone());
        std::thread::spawn(move || -> usize {
            let mut d = Driver::new(stack.clone(), nic);
            let mut conns: Vec<SocketId> = Vec::new();
            let mut answered = 0;
            let end = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let now = clock::now_ns();
                d.poll(now).unwrap();
                {
                    let mut c = stack.lock();
                    while let Ok((s, _)) = c.tcp_accept(l) {
                        conns.push(s);
                    }
                    conns.retain(|&s| match c.tcp_recv(s, &mut buf, false, now) {
                        Ok(10) => {
                            let reply = String::from_utf8_lossy(&buf[..10]).to_uppercase();
                            assert_eq!(c.tcp_send(s, reply.as_bytes(), now), Ok(10));
                            c.tcp_close(s, now).unwrap();
                            answered += 1;
                            false
                        }
                        Ok(n) => panic!("short read {n}"),
                        Err(SockError::WouldBlock) => true,
                        Err(e) => panic!("recv: {e}"),
                    });
                }
                d.poll(clock::now_ns()).unwrap();
                d.wait(Duration::from_micros(200)).unwrap();
            }
            answered
        })
    };
    let out = spawn_role(&ns, "short").wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let answered = worker.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.status.success(), "kernel side failed");
    assert!(text.contains(&format!("kernel: {SHORT_CONNS} short connections checked")));
    assert_eq!(answered, SHORT_CONNS);
}
