//! The stack over AF_XDP on a veth pair between two namespaces this test
//! creates (and always removes), against the Linux kernel as the peer:
//! a UDP and a TCP echo served by the stack in namespace B, used by kernel
//! sockets in namespace A, while the kernel of B keeps serving what the stack
//! does not own on the same address (a TCP server on another port, ping).
//! Run with native XDP on one and on two queues, with generic XDP, and over
//! the AF_PACKET backend (which must keep the stack's flows from the kernel
//! with its TC program, or the kernel would reset the stack's connections).
//!
//! Needs root; without it the tests print "skipped" and pass.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::packet::PacketNic;
use rbypass_nic::xdp::{XdpMode, XdpNic};
use rbypass_nic::Nic;
use rbypass_stack::{clock, SockError, SocketId, Stack, StackConfig};
use support::netns::have_root_and_netns;
use support::veth::{in_netns, TwoHosts};

const UDP_ECHO: u16 = 7400;
const TCP_ECHO: u16 = 7401;
const KERNEL_TCP: u16 = 7402;
const DATAGRAMS: u32 = 3000;
const TCP_BYTES: usize = 8 << 20;

/// What the stack's thread reports when it stops.
#[derive(Debug)]
struct Report {
    describe: String,
    rx_frames: u64,
    per_queue: Vec<u64>,
    udp_echoed: u64,
    tcp_echoed: u64,
}

struct StackHost {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<Report>>,
}

impl StackHost {
    fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.take().unwrap().join().expect("stack thread")
    }
}

impl Drop for StackHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Which device the stack uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Xdp(Option<XdpMode>),
    Packet,
}

/// One echo connection: bytes read and not yet written back.
struct Conn {
    id: SocketId,
    pending: Vec<u8>,
    peer_done: bool,
}

/// Starts the stack on `ifname` of namespace `ns` (its thread enters the
/// namespace, so the device and netlink sockets are that namespace's), with
/// a UDP echo and a TCP echo server.
fn start_stack(ns: &str, ifname: &str, backend: Backend) -> StackHost {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (ns, ifname, stop2) = (ns.to_string(), ifname.to_string(), stop.clone());
    let worker = std::thread::spawn(move || {
        in_netns(&ns, move || match backend {
            Backend::Xdp(mode) => match XdpNic::open_mode(&ifname, mode) {
                Ok(nic) => serve(nic, &stop2, ready_tx, |n| n.rx_frames_per_queue().to_vec()),
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    panic!("{e}");
                }
            },
            Backend::Packet => match PacketNic::open(&ifname) {
                Ok(nic) => serve(nic, &stop2, ready_tx, |n| vec![n.stats().rx_frames]),
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    panic!("{e}");
                }
            },
        })
        .expect("enter namespace")
    });
    match ready_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("stack did not start: {e}"),
        Err(e) => panic!("stack did not start: {e}"),
    }
    StackHost {
        stop,
        worker: Some(worker),
    }
}

fn serve<N: Nic>(
    mut nic: N,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
    per_queue: impl Fn(&N) -> Vec<u64>,
) -> Report {
    let iface = nic.iface().expect("the interface has an address");
    let stack = Arc::new(Stack::create_private(&StackConfig::default(), iface).unwrap());
    let (udp, listener) = {
        let mut c = stack.lock();
        nic.attach(&mut c).expect("attach");
        let u = c.udp_open().unwrap();
        c.udp_bind(u, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, UDP_ECHO))
            .unwrap();
        let l = c.tcp_open().unwrap();
        c.tcp_bind(l, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, TCP_ECHO))
            .unwrap();
        c.tcp_listen(l, 64).unwrap();
        (u, l)
    };
    let describe = nic.describe();
    let mut driver = Driver::new(stack.clone(), nic);
    driver.poll(clock::now_ns()).unwrap();
    let _ = ready.send(Ok(()));
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut udp_echoed, mut tcp_echoed) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(180);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let now = clock::now_ns();
        driver.poll(now).unwrap();
        {
            let mut c = driver.stack().lock();
            while let Ok(m) = c.udp_recv_from(udp, &mut buf, false) {
                let _ = c.udp_send_to(udp, &buf[..m.copied], m.from);
                udp_echoed += 1;
            }
            while let Ok((id, _)) = c.tcp_accept(listener) {
                conns.push(Conn {
                    id,
                    pending: Vec::new(),
                    peer_done: false,
                });
            }
            for k in conns.iter_mut() {
                if k.pending.len() < (1 << 20) && !k.peer_done {
                    match c.tcp_recv(k.id, &mut buf, false, now) {
                        Ok(0) => k.peer_done = true,
                        Ok(n) => k.pending.extend_from_slice(&buf[..n]),
                        Err(SockError::WouldBlock) => {}
                        Err(_) => k.peer_done = true,
                    }
                }
                if !k.pending.is_empty() {
                    match c.tcp_send(k.id, &k.pending, now) {
                        Ok(n) => {
                            k.pending.drain(..n);
                            tcp_echoed += n as u64;
                        }
                        Err(SockError::WouldBlock) => {}
                        Err(_) => {
                            k.pending.clear();
                            k.peer_done = true;
                        }
                    }
                }
            }
            conns.retain(|k| {
                if k.peer_done && k.pending.is_empty() {
                    let _ = c.tcp_close(k.id, now);
                    false
                } else {
                    true
                }
            });
        }
        if !driver.poll(clock::now_ns()).unwrap() {
            driver.wait(Duration::from_millis(1)).unwrap();
        }
    }
    let rx_frames = stack.header().counters.rx_frames.get();
    Report {
        describe,
        rx_frames,
        per_queue: per_queue(driver.nic()),
        udp_echoed,
        tcp_echoed,
    }
}

fn payload(i: u32) -> Vec<u8> {
    let len = 1 + (i as usize * 7919) % 1472;
    (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// Kernel UDP client in A: every datagram echoed byte-exact.
fn udp_client(to: SocketAddrV4, sock: UdpSocket) {
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..DATAGRAMS {
        let msg = payload(i);
        let mut tries = 0;
        loop {
            assert!(Instant::now() < deadline, "UDP echo took too long");
            sock.send_to(&msg, to).unwrap();
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if buf[..n] == msg[..] => break,
                Ok(_) => continue,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 5, "datagram {i}: no echo: {e}");
                }
            }
        }
    }
}

/// Kernel TCP client in A: TCP_BYTES echoed byte-exact, sent and read at once.
fn tcp_client(stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let data: Vec<u8> = (0..TCP_BYTES)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9) as u8 ^ (i >> 13) as u8)
        .collect();
    let mut w = stream.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        for chunk in sent.chunks(64 * 1024) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(TCP_BYTES);
    let mut r = stream;
    r.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), data.len(), "echoed length");
    assert!(got == data, "echoed bytes differ");
}

fn run_case(tag: &str, subnet: u8, queues: u32, backend: Backend) {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return;
    }
    let hosts = TwoHosts::create(tag, subnet, queues).expect("namespaces");
    let (a, b) = (hosts.a.name().to_string(), hosts.b.name().to_string());
    let stack_ip = hosts.ip_b;
    // The kernel of B on the same address, on a port the stack does not own.
    let kernel_listener = in_netns(&b, move || {
        TcpListener::bind(SocketAddrV4::new(stack_ip, KERNEL_TCP)).unwrap()
    })
    .unwrap();
    let kernel_server = std::thread::spawn(move || {
        kernel_listener.set_nonblocking(false).unwrap();
        let (mut s, _) = kernel_listener.accept().unwrap();
        s.write_all(b"kernel here").unwrap();
    });
    if backend != Backend::Xdp(None) {
        // Generic XDP passes a GSO super-frame whole, which no UMEM frame
        // holds, and a packet ring truncates it: the sender must segment
        // (the stack warns when it sees such frames).
        let off = hosts
            .a
            .exec(&["ethtool", "-K", &hosts.if_a, "tso", "off", "gso", "off"])
            .unwrap();
        assert!(off.status.success(), "ethtool: {off:?}");
    }
    let host = start_stack(&b, &hosts.if_b, backend);

    let udp = in_netns(&a, || UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    let start = Instant::now();
    udp_client(SocketAddrV4::new(stack_ip, UDP_ECHO), udp);
    let udp_time = start.elapsed();
    let streams: Vec<TcpStream> = in_netns(&a, move || {
        (0..4)
            .map(|_| {
                TcpStream::connect_timeout(
                    &SocketAddrV4::new(stack_ip, TCP_ECHO).into(),
                    Duration::from_secs(5),
                )
                .expect("connect to the stack")
            })
            .collect()
    })
    .unwrap();
    let start = Instant::now();
    let clients: Vec<_> = streams
        .into_iter()
        .map(|s| std::thread::spawn(move || tcp_client(s)))
        .collect();
    for c in clients {
        c.join().expect("TCP echo client");
    }
    let tcp_time = start.elapsed();

    // The host keeps its own traffic on the same address.
    let mut k = in_netns(&a, move || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(stack_ip, KERNEL_TCP).into(),
            Duration::from_secs(5),
        )
        .expect("connect to the kernel's server")
    })
    .unwrap();
    let mut hello = String::new();
    k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    k.read_to_string(&mut hello).unwrap();
    assert_eq!(hello, "kernel here");
    kernel_server.join().unwrap();
    let ping = hosts
        .a
        .exec(&[
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "-i",
            "0.2",
            &stack_ip.to_string(),
        ])
        .unwrap();
    assert!(
        ping.status.success(),
        "ping of the stack's address (answered by the kernel): {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let r = host.finish();
    eprintln!(
        "{tag}: {} | {DATAGRAMS} UDP echoes in {udp_time:?}, 4 x {} MiB TCP echoes in {tcp_time:?} | {r:?}",
        r.describe,
        TCP_BYTES >> 20
    );
    let prefix = match backend {
        Backend::Xdp(_) => "xdp:",
        Backend::Packet => "packet:",
    };
    assert!(r.describe.starts_with(prefix), "{}", r.describe);
    assert!(u64::from(DATAGRAMS) <= r.udp_echoed);
    assert!(r.tcp_echoed >= 4 * TCP_BYTES as u64);
    assert!(
        r.rx_frames >= u64::from(DATAGRAMS),
        "stack received {}",
        r.rx_frames
    );
    assert_eq!(r.per_queue.len(), queues as usize);
    match backend {
        Backend::Xdp(Some(XdpMode::Generic)) => {
            assert!(r.describe.contains("generic"), "{}", r.describe)
        }
        Backend::Xdp(_) => assert!(r.describe.contains("native"), "{}", r.describe),
        Backend::Packet => {}
    }
}

#[test]
fn xdp_native_one_queue() {
    run_case("xn", 70, 1, Backend::Xdp(None));
}

#[test]
fn xdp_native_two_queues() {
    run_case("xq", 71, 2, Backend::Xdp(None));
}

#[test]
fn xdp_generic_mode() {
    run_case("xg", 72, 1, Backend::Xdp(Some(XdpMode::Generic)));
}

#[test]
fn packet_backend() {
    run_case("xp", 73, 1, Backend::Packet);
}

/// The stack follows the kernel's view of its interface while it runs: the
/// address moves from .2 to .3 and the UDP echo answers at the new one,
/// from the new one.
#[test]
fn follows_an_address_change() {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return;
    }
    let hosts = TwoHosts::create("xc", 79, 1).expect("namespaces");
    let (a, b) = (hosts.a.name().to_string(), hosts.b.name().to_string());
    let host = start_stack(&b, &hosts.if_b, Backend::Xdp(None));
    let udp = in_netns(&a, || UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let echo = |to: Ipv4Addr| -> Option<SocketAddrV4> {
        let mut buf = [0u8; 64];
        udp.send_to(b"where", SocketAddrV4::new(to, UDP_ECHO))
            .ok()?;
        match udp.recv_from(&mut buf) {
            Ok((5, std::net::SocketAddr::V4(from))) if &buf[..5] == b"where" => Some(from),
            _ => None,
        }
    };
    let old = hosts.ip_b;
    let new = Ipv4Addr::new(198, 18, 79, 3);
    assert_eq!(
        echo(old).map(|f| *f.ip()),
        Some(old),
        "echo at the first address"
    );
    for args in [
        vec!["addr", "del", "198.18.79.2/24", "dev", &hosts.if_b],
        vec!["addr", "add", "198.18.79.3/24", "dev", &hosts.if_b],
    ] {
        let o = hosts.b.ip(&args).unwrap();
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let from = loop {
        if let Some(f) = echo(new) {
            break f;
        }
        assert!(Instant::now() < deadline, "no echo at the new address");
    };
    assert_eq!(*from.ip(), new, "the reply comes from the new address");
    let r = host.finish();
    assert!(r.udp_echoed >= 2, "{r:?}");
}
