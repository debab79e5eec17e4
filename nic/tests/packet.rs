//! The `packet:` backend against the Linux kernel: two network namespaces
//! this test creates (and always removes), A (198.18.60.1 on `rbpk0`) and B
//! (198.18.60.2 on `rbpk1`), joined by a veth pair. The stack runs over an
//! AF_PACKET socket on `rbpk1` with B's address and MAC, beside B's kernel:
//! it serves a UDP echo that a kernel socket in A uses, while B's kernel
//! still serves a port the stack does not own. Nothing is configured in the
//! test's own namespace.
//!
//! Needs root and `ip`; without them the tests print "skipped" and pass.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{have_root_and_ip, ip_mac, Netns};
use rbypass_nic::driver::Driver;
use rbypass_nic::packet::{PacketError, PacketNic, PacketStats};
use rbypass_nic::Nic;
use rbypass_stack::{clock, IfaceConfig, SockError, Stack, StackConfig};

const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 2);
const ECHO_PORT: u16 = 7300;
const KERNEL_PORT: u16 = 7301;
const DATAGRAMS: u32 = 1000;

/// Datagram `i`: 1..=1472 bytes of a pattern of `i`.
fn payload(i: u32) -> Vec<u8> {
    let len = 1 + (i as usize * 7919) % 1472;
    (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// What the stack's thread reports when it stops.
#[derive(Debug)]
struct Report {
    echoed: u64,
    stats: PacketStats,
    describe: String,
}

#[test]
fn packet_udp_echo_beside_the_kernel() {
    if !have_root_and_ip() {
        eprintln!("packet test skipped: needs root and `ip`");
        return;
    }
    let pid = std::process::id();
    let a = Netns::create(format!("rbtpka{pid}"));
    let b = Netns::create(format!("rbtpkb{pid}"));
    a.ip(&[
        "link", "add", "rbpk0", "type", "veth", "peer", "name", "rbpk1", "netns", &b.0,
    ]);
    for (ns, dev, addr) in [(&a, "rbpk0", A_IP), (&b, "rbpk1", B_IP)] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6=1");
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }

    // In B: the device, a kernel socket holding the echo port (as the
    // preload library's shadow socket does, so B's kernel does not answer
    // the stack's datagrams with port unreachable; never read), and a kernel
    // server on a port the stack does not own.
    let (nic, _reserve, kernel_b) = b.run(|| {
        (
            PacketNic::open("rbpk1").expect("open packet:rbpk1"),
            UdpSocket::bind(SocketAddrV4::new(B_IP, ECHO_PORT)).unwrap(),
            UdpSocket::bind(SocketAddrV4::new(B_IP, KERNEL_PORT)).unwrap(),
        )
    });
    let client = a.run(|| UdpSocket::bind(SocketAddrV4::new(A_IP, 0)).unwrap());

    let caps = nic.caps();
    assert_eq!(
        caps.mac.0,
        ip_mac(b.name(), "rbpk1"),
        "the stack uses the MAC of rbpk1"
    );
    assert_eq!(caps.mtu, 1500);
    assert!(!caps.rx_checksum_verified && !caps.tx_checksum_offload);
    assert_eq!(nic.name(), "packet:rbpk1");
    assert!(nic.ifindex() > 0);

    let stack = Arc::new(
        Stack::create_private(
            &StackConfig::default(),
            IfaceConfig::new(caps.mac, B_IP, 24, None, caps.mtu),
        )
        .unwrap(),
    );
    let echo = {
        let mut c = stack.lock();
        let s = c.udp_open().unwrap();
        c.udp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ECHO_PORT))
            .unwrap();
        // Room for the whole burst below (one packet buffer per datagram).
        c.udp_set_rcvbuf(s, 4 << 20).unwrap();
        s
    };
    let mut driver = Driver::new(stack.clone(), nic);
    // Installs the flow filter before any traffic.
    driver.poll(clock::now_ns()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            let mut echoed = 0;
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                driver.poll(clock::now_ns()).unwrap();
                {
                    let mut c = driver.stack().lock();
                    loop {
                        match c.udp_recv_from(echo, &mut buf, false) {
                            Ok(m) => {
                                assert_eq!(m.copied, m.len, "no truncation");
                                c.udp_send_to(echo, &buf[..m.copied], m.from).unwrap();
                                echoed += 1;
                            }
                            Err(SockError::WouldBlock) => break,
                            Err(e) => panic!("echo socket: {e}"),
                        }
                    }
                }
                driver.poll(clock::now_ns()).unwrap();
                driver.wait(Duration::from_millis(2)).unwrap();
            }
            Report {
                echoed,
                stats: driver.nic().stats(),
                describe: driver.nic().describe(),
            }
        })
    };
    // Stops the worker even if an assertion below fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stopper = StopOnDrop(stop);

    // A's kernel against the stack's echo: every datagram back byte-exact.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    let to = SocketAddr::V4(SocketAddrV4::new(B_IP, ECHO_PORT));
    let mut buf = vec![0u8; 2048];
    let (mut retries, mut stale) = (0u32, 0u32);
    for i in 0..DATAGRAMS {
        let msg = payload(i);
        client.send_to(&msg, to).unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "datagram {i}: no echo within 10 s ({retries} retries)"
            );
            client
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            match client.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, to);
                    if buf[..n] == msg[..] {
                        break;
                    }
                    // A late echo of an earlier datagram sent twice.
                    stale += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    retries += 1;
                    client.send_to(&msg, to).unwrap();
                }
                Err(e) => panic!("datagram {i}: {e}"),
            }
        }
    }
    assert!(
        stale <= retries,
        "{stale} echoes matched no datagram sent ({retries} retries): corruption"
    );
    eprintln!(
        "packet: {DATAGRAMS} datagrams echoed byte-exact in {:?} ({retries} retries)",
        start.elapsed()
    );

    // A burst that wraps both rings while they hold many frames at once:
    // fewer datagrams than the RX ring and the veth backlog hold, so none
    // may be lost (A's receive buffer is raised to take all the echoes).
    let big: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    const BURST: u32 = 400;
    for i in 0..BURST {
        let mut msg = vec![0xa5u8; 100];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        client.send_to(&msg, to).unwrap();
    }
    let mut seen = vec![false; BURST as usize];
    let mut got = 0;
    let burst_deadline = Instant::now() + Duration::from_secs(5);
    while got < BURST {
        let left = burst_deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "burst: {got} of {BURST} echoes within 5 s");
        client.set_read_timeout(Some(left)).unwrap();
        match client.recv_from(&mut buf) {
            Ok((n, _)) if n == 100 && buf[4..100].iter().all(|&x| x == 0xa5) => {
                let i = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                assert!(
                    i < BURST as usize && !seen[i],
                    "burst echo {i} twice or unknown"
                );
                seen[i] = true;
                got += 1;
            }
            // A late duplicate from the ping-pong phase.
            Ok(_) => {}
            Err(e) => panic!("burst: {got} of {BURST} echoes: {e}"),
        }
    }

    // B's kernel still serves what the stack does not own.
    let note = b"for the kernel";
    client
        .send_to(note, SocketAddrV4::new(B_IP, KERNEL_PORT))
        .unwrap();
    kernel_b
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (n, from) = kernel_b
        .recv_from(&mut buf)
        .expect("B's kernel received the datagram for its own port");
    assert_eq!(&buf[..n], note);
    assert_eq!(from, client.local_addr().unwrap());
    // Give the stack a moment in which it would have seen it.
    std::thread::sleep(Duration::from_millis(50));

    drop(stopper);
    let report = worker.join().expect("stack thread");
    eprintln!("packet: {report:?}");
    let counters = &stack.header().counters;
    let total = u64::from(DATAGRAMS + BURST);
    assert!(report.echoed >= total, "{report:?}");
    assert!(report.describe.starts_with("packet:rbpk1"));
    assert!(report.stats.rx_frames >= total);
    assert!(report.stats.tx_frames >= total);
    assert_eq!(report.stats.rx_dropped, 0, "{report:?}");
    assert_eq!(report.stats.tx_dropped, 0, "{report:?}");
    assert!(!report.stats.filter_fallback);
    assert_eq!(
        report.stats.filter_keys, 1,
        "only the echo port is the stack's"
    );
    assert_eq!(
        counters.rx_udp_no_port.get(),
        0,
        "the filter kept port {KERNEL_PORT} from the stack"
    );
    assert_eq!(counters.icmp_unreach_sent.get(), 0);
    assert_eq!(counters.rx_drop_udp_rcvbuf.get(), 0);
    assert_eq!(counters.rx_drop_udp_csum.get(), 0, "checksums (PARTIAL_OK)");
    assert!(counters.udp_rx_datagrams.get() >= total);
    // A's ARP request for B_IP reached the stack (which answered it too,
    // with the same MAC as B's kernel, and learned A's MAC from it).
    assert!(
        counters.arp_replies_sent.get() + counters.arp_replies_received.get() >= 1,
        "the ARP part of the filter"
    );
}

#[test]
fn packet_refuses_non_ethernet() {
    if !have_root_and_ip() {
        eprintln!("packet test skipped: needs root and `ip`");
        return;
    }
    let ns = Netns::create(format!("rbtpkl{}", std::process::id()));
    ns.ip(&["link", "set", "lo", "up"]);
    match ns.run(|| PacketNic::open("lo")) {
        Err(e @ PacketError::NotEthernet(..)) => {
            assert!(e.to_string().contains("packet:lo"), "{e}")
        }
        r => panic!("expected NotEthernet, got {r:?}"),
    }
    assert!(matches!(
        ns.run(|| PacketNic::open("rbpk9")),
        Err(PacketError::NoInterface(_))
    ));
}
