//! Our TCP against Linux's: the stack owns 198.18.2.2 on a TAP whose other
//! end is in a namespace this test creates (and always removes). The kernel
//! connects to a stack echo server, and a stack client sends to a kernel
//! server; every byte is checked. Needs root; skipped without.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::tap::TapNic;
use rbypass_nic::Nic;
use rbypass_stack::tcp::conn::Shutdown;
use rbypass_stack::tcp::tcb::TcpState;
use rbypass_stack::{clock, Core, IfaceConfig, SockError, Stack, StackConfig};
use support::netns::{have_root_and_netns, NetNs};

const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const STACK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const ECHO_PORT: u16 = 7001;
const KSERVER_PORT: u16 = 7002;
const ROLE: &str = "RBYPASS_TEST_TCP_ROLE";
const ECHO_BYTES: usize = 8 << 20;
const SEND_BYTES: usize = 16 << 20;

fn pattern(i: usize) -> u8 {
    (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Kernel-side roles, run inside the namespace.
#[test]
fn kernel_tcp_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "echo-client" => {
            let mut s = TcpStream::connect_timeout(
                &SocketAddrV4::new(STACK_IP, ECHO_PORT).into(),
                Duration::from_secs(5),
            )
            .expect("connect to the stack");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let data: Vec<u8> = (0..ECHO_BYTES).map(pattern).collect();
                for chunk in data.chunks(65536) {
                    w.write_all(chunk).unwrap();
                }
                w.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut got = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = s.read(&mut buf).expect("read echo");
                if n == 0 {
                    break;
                }
                for (k, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, pattern(got + k), "echo byte {} differs", got + k);
                }
                got += n;
            }
            writer.join().unwrap();
            assert_eq!(got, ECHO_BYTES);
            println!("kernel: {got} bytes echoed byte-exact");
        }
        "server" => {
            let l = TcpListener::bind(SocketAddrV4::new(KERNEL_IP, KSERVER_PORT)).unwrap();
            println!("listening");
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let (mut n_total, mut h) = (0usize, 0xcbf2_9ce4_8422_2325u64);
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h = fnv(&buf[..n], h);
                n_total += n;
            }
            s.write_all(format!("{n_total} {h:016x}").as_bytes())
                .unwrap();
            println!("kernel server: {n_total} bytes");
        }
        other => panic!("unknown role {other}"),
    }
}

struct Env {
    ns: NetNs,
    stack: Arc<Stack>,
}

fn setup(tag: &str) -> Option<(Env, TapNic)> {
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
        std::path::PathBuf::from(format!("/dev/shm/rbypass-nstcp{tag}{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut stack = Stack::create_at(
        &path,
        "",
        &StackConfig {
            max_bufs: 16384,
            ..StackConfig::default()
        },
        IfaceConfig::new(caps.mac, STACK_IP, 24, None, caps.mtu),
    )
    .unwrap();
    stack.set_remove_on_drop(true);
    Some((
        Env {
            ns,
            stack: Arc::new(stack),
        },
        nic,
    ))
}

/// Drives the stack in a thread, calling `app` after every poll until it returns true.
fn drive(
    stack: Arc<Stack>,
    nic: TapNic,
    stop: Arc<AtomicBool>,
    mut app: impl FnMut(&mut Core<'_>, u64) -> bool + Send + 'static,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut d = Driver::new(stack, nic);
        let end = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let now = clock::now_ns();
            d.poll(now).unwrap();
            let done = {
                let mut c = d.stack().lock();
                app(&mut c, now)
            };
            d.poll(clock::now_ns()).unwrap();
            if done {
                return true;
            }
            d.wait(Duration::from_millis(1)).unwrap();
        }
        false
    })
}

fn run_role(ns: &NetNs, role: &str) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            exe.to_str().unwrap(),
            "kernel_tcp_role",
            "--exact",
            "--nocapture",
        ])
        .env(ROLE, role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn kernel_client_to_stack_echo_server() {
    let Some((env, nic)) = setup("e") else { return };
    let (l, stop) = {
        let mut c = env.stack.lock();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ECHO_PORT))
            .unwrap();
        c.tcp_listen(l, 16).unwrap();
        (l, Arc::new(AtomicBool::new(false)))
    };
    let mut conn = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut closed = false;
    let worker = drive(env.stack.clone(), nic, stop.clone(), move |c, now| {
        if conn.is_none() {
            conn = c.tcp_accept(l).ok().map(|x| x.0);
        }
        let Some(s) = conn else { return false };
        if closed {
            return c.sockets_in_use() <= 1 && !c.has_tx();
        }
        // Echo: send what we hold, then read more while there is room.
        while !pending.is_empty() {
            match c.tcp_send(s, &pending, now) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(SockError::WouldBlock) | Err(SockError::NoBuffers) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        if pending.len() < (1 << 20) {
            match c.tcp_recv(s, &mut buf, false, now) {
                Ok(0) if pending.is_empty() && !closed => {
                    c.tcp_close(s, now).unwrap();
                    closed = true;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(SockError::WouldBlock) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        if let Ok(info) = c.tcp_info(s) {
            if now % 1_000_000_000 < 2_000_000 {
                eprintln!("stack: {info:?} pending {}", pending.len());
            }
        }
        false
    });
    let child = run_role(&env.ns, "echo-client");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    assert!(
        out.status.success() && text.contains("echoed byte-exact"),
        "kernel echo client failed"
    );
    let c = env.stack.lock();
    eprintln!("retransmits {}", c.header().counters.tcp_retransmits.get());
    assert_eq!(
        c.header().counters.rx_drop_tcp.get(),
        0,
        "Linux's segments all verified"
    );
}

#[test]
fn stack_client_to_kernel_server() {
    let Some((env, nic)) = setup("k") else { return };
    let mut child = run_role(&env.ns, "server");
    // Wait for the kernel server to listen.
    let mut line = [0u8; 10];
    let _ = child.stdout.as_mut().unwrap().read(&mut line);
    let stop = Arc::new(AtomicBool::new(false));
    let data: Vec<u8> = (0..SEND_BYTES).map(pattern).collect();
    let expect = format!("{SEND_BYTES} {:016x}", fnv(&data, 0xcbf2_9ce4_8422_2325));
    let result = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, r2) = {
        let mut c = env.stack.lock();
        let s = c.tcp_open().unwrap();
        c.tcp_connect(
            s,
            SocketAddrV4::new(KERNEL_IP, KSERVER_PORT),
            clock::now_ns(),
        )
        .unwrap();
        (s, result.clone())
    };
    let mut sent = 0;
    let mut shut = false;
    let worker = drive(env.stack.clone(), nic, stop.clone(), move |c, now| {
        let st = c.tcp_state(s).unwrap();
        if st == TcpState::SynSent {
            return false;
        }
        while sent < data.len() {
            match c.tcp_send(s, &data[sent..(sent + (1 << 18)).min(data.len())], now) {
                Ok(n) => sent += n,
                Err(SockError::WouldBlock) | Err(SockError::NoBuffers) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        if sent == data.len() && !shut {
            c.tcp_shutdown(s, Shutdown::Write, now).unwrap();
            shut = true;
        }
        let mut buf = [0u8; 128];
        match c.tcp_recv(s, &mut buf, false, now) {
            Ok(0) => {
                c.tcp_close(s, now).unwrap();
                return true;
            }
            Ok(n) => r2.lock().unwrap().extend_from_slice(&buf[..n]),
            Err(SockError::WouldBlock) => {}
            Err(e) => panic!("recv: {e}"),
        }
        false
    });
    let done = worker.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(done, "client finished");
    assert_eq!(
        String::from_utf8_lossy(&result.lock().unwrap()),
        expect,
        "the kernel received every byte"
    );
    assert!(out.status.success());
}
