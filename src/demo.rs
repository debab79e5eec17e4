//! `rbypass demo`: the stack on a TAP device whose other end lives in a new
//! network namespace, so the kernel there is a real peer. The kernel pings
//! the stack, then exchanges UDP datagrams with a stack echo socket, and the
//! stack's sockets and counters are shown. Needs root; uses only
//! 198.18.0.0/24 and removes the namespace on exit.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbypass_nic::driver::Driver;
use rbypass_nic::tap::TapNic;
use rbypass_nic::Nic;
use rbypass_stack::{clock, IfaceConfig, SockError, Stack, StackConfig};

/// Address of the kernel side (in the namespace).
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Address of the stack.
const STACK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// UDP echo port of the stack.
const ECHO_PORT: u16 = 7000;

/// Arguments of `rbypass demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Pings sent by the kernel.
    #[arg(long, default_value_t = 10)]
    pings: u32,
    /// UDP datagrams exchanged.
    #[arg(long, default_value_t = 1000)]
    datagrams: u32,
}

/// Arguments of the hidden peer command.
#[derive(clap::Args)]
pub struct PeerArgs {
    #[arg(long)]
    to: SocketAddrV4,
    #[arg(long)]
    count: u32,
}

/// A namespace removed on drop.
struct Namespace(String);

impl Namespace {
    fn create(name: &str) -> Result<Self, String> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name])?;
        Ok(Namespace(name.to_string()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (install iproute2 and iputils-ping)",
                args[0]
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the demo.
pub fn run(args: Args) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the demo creates a TAP device and a network namespace: run it as root (sudo)".into(),
        );
    }
    let pid = std::process::id();
    let ns = Namespace::create(&format!("rbtdemo{pid}"))?;
    let tap_name = format!("rbtd{}", pid % 100_000_000);
    let nic = TapNic::open(&tap_name).map_err(|e| e.to_string())?;
    sh(&["ip", "link", "set", &tap_name, "netns", &ns.0])?;
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        &format!("{KERNEL_IP}/24"),
        "dev",
        &tap_name,
    ])?;
    sh(&["ip", "-n", &ns.0, "link", "set", &tap_name, "up"])?;
    sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"])?;

    let caps = nic.caps();
    let iface = IfaceConfig::new(caps.mac, STACK_IP, 24, None, caps.mtu);
    let stack =
        Arc::new(Stack::create_private(&StackConfig::default(), iface).map_err(|e| e.to_string())?);
    println!(
        "rbypass demo: stack {} on {} ({}), kernel peer {KERNEL_IP} in namespace {}",
        STACK_IP,
        nic.name(),
        caps.mac,
        ns.0
    );

    let echo = {
        let mut c = stack.lock();
        let s = c.udp_open().map_err(|e| e.to_string())?;
        c.udp_bind(s, SocketAddrV4::new(STACK_IP, ECHO_PORT))
            .map_err(|e| e.to_string())?;
        s
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stack, stop) = (stack.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut driver = Driver::new(stack, nic);
            let mut buf = vec![0u8; 65536];
            let mut echoed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                driver.poll(clock::now_ns()).map_err(|e| e.to_string())?;
                let mut core = driver.stack().lock();
                loop {
                    match core.udp_recv_from(echo, &mut buf, false) {
                        Ok(m) => {
                            if core.udp_send_to(echo, &buf[..m.copied], m.from).is_ok() {
                                echoed += 1;
                            }
                        }
                        Err(SockError::WouldBlock) => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                drop(core);
                driver.poll(clock::now_ns()).map_err(|e| e.to_string())?;
                driver
                    .wait(Duration::from_millis(5))
                    .map_err(|e| e.to_string())?;
            }
            Ok(echoed)
        })
    };

    println!("\n== kernel pings the stack ==");
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ping",
            "-c",
            &args.pings.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            &STACK_IP.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run ping: {e} (install iputils-ping)"))?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));

    println!("\n== kernel UDP socket <-> stack UDP echo socket ==");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let peer = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&exe)
        .args([
            "demo-peer",
            "--to",
            &format!("{STACK_IP}:{ECHO_PORT}"),
            "--count",
            &args.datagrams.to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    print!("{}", String::from_utf8_lossy(&peer.stdout));
    eprint!("{}", String::from_utf8_lossy(&peer.stderr));

    println!("\n== rbypass stackdump netstat ==");
    stop.store(true, Ordering::Relaxed);
    let echoed = worker
        .join()
        .map_err(|_| "stack thread panicked".to_string())??;
    crate::stackdump::run_netstat_for(stack.arena());
    let h = stack.header();
    println!(
        "stack counters: rx_frames {} tx_frames {} arp_replies_sent {} icmp_echo_replies_sent {} udp_rx {} udp_tx {} (echoed {echoed})",
        h.counters.rx_frames.get(),
        h.counters.tx_frames.get(),
        h.counters.arp_replies_sent.get(),
        h.counters.icmp_echo_replies_sent.get(),
        h.counters.udp_rx_datagrams.get(),
        h.counters.udp_tx_datagrams.get(),
    );
    if !ping.status.success() || !peer.status.success() {
        return Err("demo failed: see above".into());
    }
    println!("\ndemo ok");
    Ok(())
}

/// The kernel side of the UDP exchange: sends datagrams of growing size and
/// checks each echo is byte-exact.
pub fn peer(a: PeerArgs) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    let (mut ok, mut lost) = (0u32, 0u32);
    let mut rtts = Vec::with_capacity(a.count as usize);
    for i in 0..a.count {
        let len = 1 + (i as usize * 37) % 1472;
        let msg: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
        let t = Instant::now();
        sock.send_to(&msg, a.to).map_err(|e| e.to_string())?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == std::net::SocketAddr::V4(a.to) && buf[..n] == msg[..] => {
                ok += 1;
                rtts.push(t.elapsed());
            }
            Ok(_) => return Err(format!("datagram {i}: echo differs")),
            Err(_) => lost += 1,
        }
    }
    rtts.sort();
    let p = |q: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{ok}/{} datagrams (1..1472 bytes) echoed byte-exact, {lost} lost, in {:.2?}; RTT p50 {:.1?} p99 {:.1?}",
        a.count,
        start.elapsed(),
        p(0.5),
        p(0.99)
    );
    if ok != a.count {
        return Err("some datagrams were not echoed".into());
    }
    Ok(())
}
