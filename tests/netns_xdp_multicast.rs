//! A multicast stream from namespace A to 8 subscriber processes in B:
//! on one named stack over AF_XDP (the NIC delivers each datagram once and
//! every subscriber reads it from shared memory), split over two stacks
//! (AF_PACKET, which several stacks can share), and on the kernel for
//! comparison. Every subscriber must get every datagram, in order.
//!
//! Needs root and python3; without them the test prints "skipped" and passes.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::{have_root_and_netns, tool_available, KillOnDrop};
use support::stackdump::{counter, rbypass};
use support::veth::{in_netns, TwoHosts};

const SUBSCRIBER: &str = r#"
import socket, struct, sys
group, port, ifaddr, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(('0.0.0.0', port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton(group) + socket.inet_aton(ifaddr))
s.settimeout(15)
print('ready', flush=True)
expect = 0
while expect < count:
    d, a = s.recvfrom(2048)
    seq = struct.unpack('!I', d[:4])[0]
    if seq != expect or len(d) != 64:
        print('out of order: expected', expect, 'got', seq, len(d), flush=True)
        sys.exit(1)
    expect += 1
print('ok', expect, flush=True)
"#;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 18, 0, 7);
const PORT: u16 = 21210;
const DATAGRAMS: u32 = 5000;
const SUBSCRIBERS: usize = 8;

/// Removes the stacks' arena files when the test ends, whatever happened.
struct ArenaFiles(Vec<String>);

impl Drop for ArenaFiles {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_file(format!("/dev/shm/rbypass-{n}"));
        }
    }
}

struct Subscriber {
    proc: KillOnDrop,
    out: BufReader<ChildStdout>,
}

/// Starts a subscriber in namespace B, on `nic` and stack `stack` (None:
/// the kernel), and waits until it has joined.
fn subscribe(hosts: &TwoHosts, script: &str, on: Option<(&str, &str)>) -> Subscriber {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", hosts.b.name()]);
    if let Some((nic, stack)) = on {
        c.arg(rbypass())
            .args(["run", "--nic", nic, "--name", stack, "--"]);
    }
    c.args([
        "python3",
        script,
        &GROUP.to_string(),
        &PORT.to_string(),
        &hosts.ip_b.to_string(),
        &DATAGRAMS.to_string(),
    ])
    .env("RBYPASS_NO_FAIL", "0")
    .env("RBYPASS_KEEP_STACK", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child: Child = c.spawn().expect("start a subscriber");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready", "a subscriber did not start ({on:?})");
    Subscriber {
        proc: KillOnDrop::new(child),
        out,
    }
}

/// Sends the numbered stream from namespace A, paced (10 datagrams per
/// millisecond) so that no receive queue overflows on a busy machine.
fn send_stream(hosts: &TwoHosts) {
    let src = hosts.ip_a;
    in_netns(hosts.a.name(), move || {
        let s = UdpSocket::bind(SocketAddrV4::new(src, 0)).unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        let to = SocketAddrV4::new(GROUP, PORT);
        let mut msg = [0u8; 64];
        for seq in 0..DATAGRAMS {
            msg[..4].copy_from_slice(&seq.to_be_bytes());
            msg[4..].fill(seq as u8);
            s.send_to(&msg, to).unwrap();
            if seq % 10 == 9 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .unwrap();
}

/// Waits for every subscriber's verdict.
fn collect(subs: Vec<Subscriber>, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, mut s) in subs.into_iter().enumerate() {
        let mut line = String::new();
        s.out.read_line(&mut line).expect("read a verdict");
        assert_eq!(
            line.trim(),
            format!("ok {DATAGRAMS}"),
            "{case}: subscriber {i} did not get every datagram in order"
        );
        while s.proc.child().try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{case}: subscriber {i} hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn eight_subscribers_one_stack_two_stacks_and_the_kernel() {
    if !have_root_and_netns() || !tool_available("python3") {
        eprintln!("skipped: needs root, network namespaces and python3");
        return;
    }
    let hosts = TwoHosts::create("mc", 86, 1).expect("namespaces");
    // The sender's kernel routes the group out of its veth.
    hosts
        .a
        .ip(&["route", "add", "239.0.0.0/8", "dev", &hosts.if_a])
        .expect("multicast route");
    let pid = std::process::id();
    let one = format!("mcone{pid}");
    let (left, right) = (format!("mcleft{pid}"), format!("mcright{pid}"));
    let _arenas = ArenaFiles(vec![one.clone(), left.clone(), right.clone()]);
    let script = std::env::temp_dir().join(format!("rbypass-mcast-{pid}.py"));
    std::fs::write(&script, SUBSCRIBER).unwrap();
    let script = script.to_str().unwrap().to_string();
    let xdp = format!("xdp:{}", hosts.if_b);
    let packet = format!("packet:{}", hosts.if_b);

    // One shared stack over AF_XDP: one NIC delivery per datagram.
    let subs: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|_| subscribe(&hosts, &script, Some((&xdp, &one))))
        .collect();
    let rx_before = counter(&one, "rx_frames");
    let udp_before = counter(&one, "udp_rx_datagrams");
    send_stream(&hosts);
    collect(subs, "one stack");
    let rx = counter(&one, "rx_frames") - rx_before;
    let udp = counter(&one, "udp_rx_datagrams") - udp_before;
    assert!(
        (u64::from(DATAGRAMS)..u64::from(DATAGRAMS) + 50).contains(&rx),
        "one NIC receive per datagram expected: {rx} frames for {DATAGRAMS} datagrams"
    );
    assert_eq!(
        udp,
        u64::from(DATAGRAMS) * SUBSCRIBERS as u64,
        "every subscriber's socket got every datagram"
    );

    // Split over two stacks on AF_PACKET.
    let subs: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|i| {
            let stack = if i % 2 == 0 { &left } else { &right };
            subscribe(&hosts, &script, Some((&packet, stack)))
        })
        .collect();
    send_stream(&hosts);
    collect(subs, "two stacks");
    for s in [&left, &right] {
        assert_eq!(
            counter(s, "udp_rx_datagrams"),
            u64::from(DATAGRAMS) * (SUBSCRIBERS / 2) as u64,
            "stack {s}: its subscribers got every datagram"
        );
    }

    // The kernel, for comparison.
    let subs: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|_| subscribe(&hosts, &script, None))
        .collect();
    send_stream(&hosts);
    collect(subs, "kernel");
}
