//! Checks the veth topologies and the impairing forwarder of tests/support
//! with kernel sockets only: TCP echo over two namespaces, a 32 MiB TCP
//! transfer through a forwarder that drops, duplicates, reorders and
//! corrupts frames, and UDP through an unimpaired forwarder. Needs root;
//! skipped without.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::impair::{Forwarder, Impairment};
use support::netns::{have_root_and_netns, NetNs};
use support::veth::{in_netns, ThreeHosts, TwoHosts};

const ECHO_PORT: u16 = 20101;
const BULK_PORT: u16 = 20102;
const UDP_PORT: u16 = 20103;
const ECHO_BYTES: usize = 1 << 20;
const BULK_BYTES: usize = 32 << 20;

fn skip() -> bool {
    if have_root_and_netns() {
        return false;
    }
    eprintln!("skipped: needs root and network namespaces");
    true
}

/// Deterministic test data: byte `i` of the stream.
fn fill(buf: &mut [u8], offset: usize) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = (offset + k) as u64;
        let mut z = (i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        *b = (z >> (8 * (i % 8))) as u8;
    }
}

/// Checks `got` against the stream at `offset`, naming the first bad byte.
fn check(got: &[u8], offset: usize, what: &str) {
    let mut want = vec![0u8; got.len()];
    fill(&mut want, offset);
    if let Some(k) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!(
            "{what}: byte {} is {:#04x}, expected {:#04x}",
            offset + k,
            got[k],
            want[k]
        );
    }
}

/// Binds a listener in namespace `ns`, nonblocking so accepts can be bounded
/// in time.
fn listen_in(ns: &str, addr: SocketAddrV4) -> TcpListener {
    let l = in_netns(ns, move || TcpListener::bind(addr))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    l.set_nonblocking(true).unwrap();
    l
}

fn accept_within(l: &TcpListener, limit: Duration) -> TcpStream {
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection within {limit:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Connects from namespace `ns`.
fn connect_from(ns: &str, addr: SocketAddrV4, limit: Duration) -> TcpStream {
    in_netns(ns, move || TcpStream::connect_timeout(&addr.into(), limit))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Runs `f` on a thread and waits at most `limit` for it, so a stalled
/// transfer fails the test instead of hanging it.
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        // The thread panicked: pass its message on.
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {limit:?}"),
    }
}

/// TCP plus UDP checksum errors counted by the kernel of namespace `ns`.
fn csum_errors(ns: &NetNs) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]).expect("read snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0;
    for proto in ["Tcp:", "Udp:"] {
        let mut lines = text.lines().filter(|l| l.starts_with(proto));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            continue;
        };
        if let Some((_, v)) = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InCsumErrors")
        {
            total += v.parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// The namespaces are gone once their owner is dropped.
fn assert_deleted(names: &[String]) {
    for n in names {
        assert!(
            !std::path::Path::new("/var/run/netns").join(n).exists(),
            "namespace {n} survived its owner"
        );
    }
}

/// Sends `total` bytes of the test stream from namespace `from` to a
/// listener on `addr` and checks them on arrival; returns the bytes received.
fn transfer(from: &str, listener: TcpListener, addr: SocketAddrV4, total: usize) -> usize {
    let receiver = std::thread::spawn(move || {
        let mut s = accept_within(&listener, Duration::from_secs(15));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).expect("receiver read");
            if n == 0 {
                return got;
            }
            check(&buf[..n], got, "transfer");
            got += n;
        }
    });
    let mut s = connect_from(from, addr, Duration::from_secs(15));
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut chunk = vec![0u8; 256 << 10];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        fill(&mut chunk[..n], sent);
        s.write_all(&chunk[..n]).expect("sender write");
        sent += n;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    receiver.join().unwrap()
}

/// (a) Two namespaces joined by one (4-queue) veth pair: 1 MiB TCP echo.
#[test]
fn two_hosts_tcp_echo() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let net = TwoHosts::create("ie", 60, 4).expect("create two hosts");
    let names = vec![net.a.name().to_string(), net.b.name().to_string()];
    for (ns, ifname) in [(&net.a, &net.if_a), (&net.b, &net.if_b)] {
        let out = ns.ip(&["-d", "link", "show", "dev", ifname]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("numtxqueues 4 numrxqueues 4"),
            "{ifname}: {text}"
        );
    }
    let setup = t0.elapsed();
    let addr = SocketAddrV4::new(net.ip_b, ECHO_PORT);
    let listener = listen_in(net.b.name(), addr);
    let a = net.a.name().to_string();
    let (got, echoed) = bounded("1 MiB echo", Duration::from_secs(30), move || {
        let server = std::thread::spawn(move || {
            let mut s = accept_within(&listener, Duration::from_secs(10));
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut echoed = 0usize;
            loop {
                let n = s.read(&mut buf).expect("server read");
                if n == 0 {
                    return echoed;
                }
                s.write_all(&buf[..n]).expect("server write");
                echoed += n;
            }
        });
        let mut s = connect_from(&a, addr, Duration::from_secs(5));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut data = vec![0u8; ECHO_BYTES];
            fill(&mut data, 0);
            w.write_all(&data).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).expect("client read");
            if n == 0 {
                break;
            }
            check(&buf[..n], got, "echo");
            got += n;
        }
        writer.join().unwrap();
        (got, server.join().unwrap())
    });
    assert_eq!(got, ECHO_BYTES);
    assert_eq!(echoed, ECHO_BYTES);
    let run = t0.elapsed() - setup;
    drop(net);
    assert_deleted(&names);
    eprintln!(
        "two_hosts_tcp_echo: setup {setup:?}, 1 MiB echoed byte-exact in {run:?}, total with teardown {:?}",
        t0.elapsed()
    );
}

/// (b) 32 MiB of TCP A->B through a forwarder that loses, duplicates,
/// reorders and corrupts frames both ways.
#[test]
fn three_hosts_tcp_through_impairment() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let net = ThreeHosts::create("ib", 61).expect("create three hosts");
    let names = vec![
        net.a.name().to_string(),
        net.m.name().to_string(),
        net.b.name().to_string(),
    ];
    let imp = Impairment {
        loss: 0.01,
        duplicate: 0.005,
        reorder: 0.01,
        reorder_delay: Duration::from_millis(2),
        corrupt: 0.001,
        seed: 1,
    };
    let fwd = Forwarder::start(net.m.name(), &net.m_a, &net.m_b, imp).expect("start forwarder");
    let setup = t0.elapsed();
    let addr = SocketAddrV4::new(net.ip_b, BULK_PORT);
    let listener = listen_in(net.b.name(), addr);
    let a = net.a.name().to_string();
    let t1 = Instant::now();
    let got = bounded("32 MiB transfer", Duration::from_secs(60), move || {
        transfer(&a, listener, addr, BULK_BYTES)
    });
    let run = t1.elapsed();
    assert_eq!(got, BULK_BYTES);
    let stats = fwd.stop();
    let csum = csum_errors(&net.a) + csum_errors(&net.b);
    eprintln!(
        "three_hosts_tcp_through_impairment: setup {setup:?}, 32 MiB byte-exact in {run:?} \
         ({:.1} MB/s); {stats:?}; kernel checksum errors A+B: {csum}",
        BULK_BYTES as f64 / run.as_secs_f64() / 1e6
    );
    assert!(stats.forwarded > 20_000, "{stats:?}");
    assert!(stats.dropped > 0, "{stats:?}");
    assert!(stats.duplicated > 0, "{stats:?}");
    assert!(stats.reordered > 0, "{stats:?}");
    assert!(stats.corrupted > 0, "{stats:?}");
    // Corrupted frames are caught by the receivers' checksums (so the
    // forwarder's recomputed checksums are right and corruption detectable).
    assert!(csum > 0, "no checksum errors in A or B: {stats:?}");
    drop(net);
    assert_deleted(&names);
    eprintln!(
        "three_hosts_tcp_through_impairment: total with teardown {:?}",
        t0.elapsed()
    );
}

/// (c) UDP A->B through an unimpaired forwarder (the forwarder must fix the
/// offloaded checksum or B drops the datagram).
#[test]
fn three_hosts_udp_plain() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let net = ThreeHosts::create("iu", 62).expect("create three hosts");
    let names = vec![
        net.a.name().to_string(),
        net.m.name().to_string(),
        net.b.name().to_string(),
    ];
    let out = net.m.ip(&["-d", "link", "show", "dev", &net.m_a]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("numtxqueues 1 numrxqueues 1"), "{text}");
    let fwd = Forwarder::start(net.m.name(), &net.m_a, &net.m_b, Impairment::default())
        .expect("start forwarder");
    let to = SocketAddrV4::new(net.ip_b, UDP_PORT);
    let from = SocketAddrV4::new(net.ip_a, UDP_PORT);
    let rx = in_netns(net.b.name(), move || UdpSocket::bind(to))
        .unwrap()
        .expect("bind in B");
    let tx = in_netns(net.a.name(), move || UdpSocket::bind(from))
        .unwrap()
        .expect("bind in A");
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    let mut sends = 0;
    let (n, peer) = loop {
        assert!(Instant::now() < deadline, "no datagram arrived in 10 s");
        let msg = format!("rbypass impair udp {sends}");
        tx.send_to(msg.as_bytes(), to).expect("send");
        sends += 1;
        match rx.recv_from(&mut buf) {
            Ok(r) => break r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    };
    assert_eq!(peer, std::net::SocketAddr::V4(from));
    let text = std::str::from_utf8(&buf[..n]).expect("payload is text");
    assert!(text.starts_with("rbypass impair udp "), "{text:?}");
    let elapsed = t0.elapsed();
    let stats = fwd.stop();
    assert!(stats.forwarded >= 2, "{stats:?}"); // ARP request and reply, datagram
    assert_eq!(
        (
            stats.dropped,
            stats.duplicated,
            stats.reordered,
            stats.corrupted
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    drop(net);
    assert_deleted(&names);
    eprintln!(
        "three_hosts_udp_plain: {text:?} arrived after {sends} send(s), {elapsed:?} from start; {stats:?}"
    );
}
