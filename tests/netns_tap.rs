//! The stack against the Linux kernel as a real peer: the stack owns
//! 198.18.1.2 on a TAP device whose other end is moved into a network
//! namespace this test creates (and always removes). Needs root; without it
//! the tests print "skipped" and pass.
//!
//! The kernel-side programs are this test binary re-executed inside the
//! namespace (`kernel_peer_role`).

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::tap::TapNic;
use rbypass_nic::Nic;
use rbypass_stack::{clock, IfaceConfig, SockError, Stack, StackConfig};
use support::netns::{have_root_and_netns, NetNs};

const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const STACK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const ECHO_PORT: u16 = 7000;
const CLOSED_PORT: u16 = 9;
const ROLE: &str = "RBYPASS_TEST_KERNEL_ROLE";
const DATAGRAMS: u32 = 10_000;

fn payload(i: u32) -> Vec<u8> {
    let len = 1 + (i as usize * 7919) % 1472;
    (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// Runs inside the namespace with kernel sockets. Roles: `echo` (send
/// DATAGRAMS datagrams of sizes 1..1472 to the stack's echo socket and check
/// every echo byte-exact) and `closed` (expect ECONNREFUSED from a closed port).
#[test]
fn kernel_peer_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match role.as_str() {
        "echo" => {
            let to = SocketAddrV4::new(STACK_IP, ECHO_PORT);
            let mut buf = vec![0u8; 2048];
            let mut lost = 0;
            for i in 0..DATAGRAMS {
                let msg = payload(i);
                let mut tries = 0;
                loop {
                    sock.send_to(&msg, to).unwrap();
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            assert_eq!(from, std::net::SocketAddr::V4(to));
                            assert_eq!(
                                &buf[..n],
                                &msg[..],
                                "echo of datagram {i} ({} bytes) differs",
                                msg.len()
                            );
                            break;
                        }
                        Err(e) => {
                            lost += 1;
                            tries += 1;
                            assert!(tries < 5, "datagram {i}: no echo after 5 tries: {e}");
                        }
                    }
                }
            }
            println!("kernel peer: {DATAGRAMS} datagrams echoed byte-exact ({lost} retries)");
        }
        "closed" => {
            sock.connect(SocketAddrV4::new(STACK_IP, CLOSED_PORT))
                .unwrap();
            sock.send(b"anyone there?").unwrap();
            let mut buf = [0u8; 16];
            let e = sock.recv(&mut buf).expect_err("no answer expected");
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "kernel saw ICMP port unreachable: {e}"
            );
            println!("kernel peer: port {CLOSED_PORT} refused as expected");
        }
        other => panic!("unknown role {other}"),
    }
}

struct Setup {
    ns: NetNs,
    stack: Arc<Stack>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<u64>>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Creates the namespace and TAP, the stack, and a thread that drives the
/// stack and echoes every datagram its echo socket receives.
fn setup(tag: &str) -> Option<Setup> {
    if !have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return None;
    }
    let ns = NetNs::create(tag).expect("namespace");
    let tap = format!("rbt{tag}{}", std::process::id() % 1_000_000);
    let nic = TapNic::open(&tap).expect("tap");
    ns.move_link(&tap).expect("move tap");
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", &tap])
        .unwrap();
    ns.ip(&["link", "set", &tap, "up"]).unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let caps = nic.caps();
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/rbypass-nstest{tag}{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut stack = Stack::create_at(
        &path,
        "",
        &StackConfig::default(),
        IfaceConfig::new(caps.mac, STACK_IP, 24, None, caps.mtu),
    )
    .unwrap();
    stack.set_remove_on_drop(true);
    let stack = Arc::new(stack);
    let echo = {
        let mut c = stack.lock();
        let s = c.udp_open().unwrap();
        c.udp_bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ECHO_PORT))
            .unwrap();
        s
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stack, stop) = (stack.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut driver = Driver::new(stack, nic);
            let mut buf = vec![0u8; 2048];
            let mut echoed = 0;
            let end = Instant::now() + Duration::from_secs(120);
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
            echoed
        })
    };
    Some(Setup {
        ns,
        stack,
        stop,
        worker: Some(worker),
    })
}

fn run_role(s: &Setup, role: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            s.ns.name(),
            exe,
            "kernel_peer_role",
            "--exact",
            "--nocapture",
        ])
        .env(ROLE, role)
        .output()
        .expect("run kernel peer");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn kernel_pings_stack_100_of_100() {
    let Some(s) = setup("p") else { return };
    let out =
        s.ns.exec(&[
            "ping",
            "-c",
            "100",
            "-i",
            "0.01",
            "-W",
            "2",
            &STACK_IP.to_string(),
        ])
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        text.contains("100 packets transmitted, 100 received"),
        "ping: {text}"
    );
    let k = &s.stack.header().counters;
    assert!(k.icmp_echo_replies_sent.get() >= 100);
    assert!(
        k.arp_replies_sent.get() >= 1,
        "the kernel resolved us with ARP"
    );
}

#[test]
fn udp_10k_datagrams_byte_exact_both_ways_and_port_unreachable() {
    let Some(mut s) = setup("u") else { return };
    let out = run_role(&s, "echo");
    assert!(out.status.success(), "echo exchange failed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("echoed byte-exact"),
        "peer role really ran"
    );
    let out = run_role(&s, "closed");
    assert!(
        out.status.success(),
        "port unreachable not seen by the kernel"
    );
    s.stop.store(true, Ordering::Relaxed);
    let echoed = s.worker.take().unwrap().join().unwrap();
    assert!(echoed >= u64::from(DATAGRAMS), "stack echoed {echoed}");
    let k = &s.stack.header().counters;
    assert!(k.icmp_unreach_sent.get() >= 1);
    assert_eq!(
        k.rx_drop_udp_csum.get() + k.rx_drop_ip_csum.get(),
        0,
        "the kernel's checksums verify"
    );
    let c = s.stack.lock();
    c.check_consistency().unwrap();
}
